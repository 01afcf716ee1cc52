"""Peer check: bertjax and transformers pretraining from the same weights on the same batches.

Both sides start from one bertjax initialisation, exported with
`bertjax.interop.model_dir.export_hf` (`hf_bert.params_to_hf`) and loaded in
`transformers.BertForPreTraining`. The masked batches are drawn once on the host with bertjax's
masking (`objective.mask_fn(fold_in(key, step), batch)`) and the same arrays feed both sides.
Dropout is off, everything is float32, and the optimizers are the same: AdamW (b1 0.9, b2 0.999,
eps 1e-6 outside the square root, decoupled decay `lr * wd * param` on all but biases and LayerNorm
scales), linear warmup then linear decay, global-norm clipping at 1.0. The loss is the mean MLM loss
over the batch's real masked positions plus the mean NSP loss over the batch.

Prints a per-step table and the largest relative loss difference |l_jax - l_torch| / l_torch over
all steps; exits non-zero when it exceeds `--tolerance`:

  python benchmarks/peer_pretraining.py           # L2/H128/A2, seq 64, batch 16, 200 steps
  python benchmarks/peer_pretraining.py --steps 10 --batch 8 --seq 32
"""

from __future__ import annotations

import argparse
import math
import pathlib
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bertjax.config import load_config
from bertjax.data.corpus import BUILTIN_CORPUS
from bertjax.data.source import PretrainingSource
from bertjax.data.tokenizer import read_vocab
from bertjax.interop import model_dir
from bertjax.interop.model_dir import PRETRAINING_HEADS
from bertjax.models import Model
from bertjax.models.bert import BERT, bert_model_config
from bertjax.objectives import make_objective
from bertjax.training.optimizer import decay_mask, make_optimizer
from bertjax.training.pretrain import prepare_data

try:
    from benchmarks import torch_peer
except ImportError:  # run as a script: this folder is on sys.path
    import torch_peer

REPO = pathlib.Path(__file__).resolve().parents[1]
MASKED_FIELDS = (
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "next_sentence_label",
    "masked_positions",
    "masked_ids",
    "masked_weights",
)


def make_config(args: argparse.Namespace):
    """configs/tiny.py (or --config) with dropout off and the benchmark's sizes and schedule."""
    config = load_config(args.config)
    config.data.corpus = args.corpus
    config.model.vocab_size = args.vocab_size  # what the WordPiece trainer aims for
    config.model.hidden_dropout = 0.0
    config.model.attention_dropout = 0.0
    config.data.max_seq_len = args.seq
    config.data.max_predictions = max(1, round(0.15 * args.seq))
    config.optim.update(
        learning_rate=args.lr,
        warmup_steps=args.steps // 10 if args.warmup is None else args.warmup,
        grad_clip_norm=1.0,
    )
    config.train.update(global_batch_size=args.batch, num_steps=args.steps, seed=args.seed)
    return config


def masked_batches(config, objective, data_dir, vocab, steps: int) -> list[dict[str, np.ndarray]]:
    """`steps` batches masked by bertjax on the host: step s uses `fold_in(key, s)`."""
    source = PretrainingSource(data_dir, "train", vocab_path=vocab)
    batch_size = config.train.global_batch_size
    order = np.random.default_rng(config.train.seed).permutation(len(source))
    mask_fn = jax.jit(objective.mask_fn)
    key = jax.random.key(config.train.seed + 1)
    batches = []
    for step in range(steps):
        rows = [source[int(order[(step * batch_size + i) % len(order)])] for i in range(batch_size)]
        batch = {k: np.stack([row[k] for row in rows]) for k in rows[0]}
        masked = jax.device_get(mask_fn(jax.random.fold_in(key, step), batch))
        batches.append({k: np.asarray(masked[k]) for k in MASKED_FIELDS})
    return batches


def jax_losses(
    config, cfg, objective, params, batches
) -> tuple[list[dict[str, float]], list[float]]:
    """Trains with optax on pre-masked batches; the losses before each update, and the lrs."""
    model = Model(BERT, cfg, PRETRAINING_HEADS)
    tx, schedule = make_optimizer(config.optim, config.train.num_steps)

    @jax.jit
    def step(params, opt_state, batch):
        def loss_fn(params):
            sums = objective.sums(model, params, batch, None)
            mlm = sums["mlm_loss"] / jnp.maximum(sums["mlm_count"], 1.0)
            nsp = sums["nsp_loss"] / sums["nsp_count"]
            return mlm + nsp, {"mlm": mlm, "nsp": nsp}

        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss, **parts}

    params = jax.tree.map(jnp.asarray, params)
    opt_state = tx.init(params)
    out = []
    for batch in batches:
        params, opt_state, metrics = step(params, opt_state, batch)
        out.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    return out, [float(schedule(s)) for s in range(len(batches))]


def torch_losses(config, hf_dir, batches) -> tuple[list[dict[str, float]], list[float], int]:
    """Trains transformers' BertForPreTraining on the same batches; losses before each update."""
    import torch
    import torch.nn.functional as F
    from transformers import BertForPreTraining as HfBertForPreTraining

    torch.manual_seed(0)
    model = HfBertForPreTraining.from_pretrained(hf_dir, dtype=torch.float32)
    model.train()  # dropout probabilities are 0 in the exported config
    optimizer, scheduler = torch_peer.make_optimizer(model, config, "cpu")
    decayed = sum(p.numel() for p in optimizer.param_groups[0]["params"])
    out, lrs = [], []
    for batch in batches:
        t = {k: torch.from_numpy(np.array(v)) for k, v in batch.items()}
        logits = model(
            input_ids=t["input_ids"].long(),
            token_type_ids=t["token_type_ids"].long(),
            attention_mask=t["attention_mask"].long(),
        )
        scores = logits.prediction_logits  # [B, L, V]
        positions = t["masked_positions"].long()[..., None].expand(-1, -1, scores.shape[-1])
        gathered = scores.gather(1, positions)  # [B, P, V]
        nll = F.cross_entropy(
            gathered.flatten(0, 1), t["masked_ids"].long().flatten(), reduction="none"
        )
        weights = t["masked_weights"].flatten()
        mlm = (nll * weights).sum() / weights.sum().clamp(min=1.0)
        nsp = F.cross_entropy(logits.seq_relationship_logits, t["next_sentence_label"].long())
        loss = mlm + nsp
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip_norm)
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        out.append({"loss": loss.item(), "mlm": mlm.item(), "nsp": nsp.item()})
    return out, lrs, decayed


def decayed_size(params) -> int:
    """Parameters that get weight decay under bertjax's mask."""
    mask = decay_mask(params)
    sizes = jax.tree.map(lambda p, m: int(np.size(p)) if m else 0, params, mask)
    return sum(jax.tree.leaves(sizes))


def max_rel_diff(jx, th, key: str) -> float:
    """max over steps of |jax - torch| / |torch| for one loss."""
    return max(abs(a[key] - b[key]) / abs(b[key]) for a, b in zip(jx, th, strict=True))


def report(jx, th, log_every: int) -> float:
    """Prints the per-step table; returns the max relative difference of the total loss."""
    print(f"{'step':>5} {'jax loss':>10} {'torch loss':>10} {'jax mlm':>9} {'torch mlm':>9} "
          f"{'jax nsp':>8} {'torch nsp':>9} {'rel diff':>9}")  # fmt: skip
    for step, (a, b) in enumerate(zip(jx, th, strict=True)):
        rel = abs(a["loss"] - b["loss"]) / abs(b["loss"])
        if step % log_every == 0 or step == len(jx) - 1:
            print(
                f"{step:>5} {a['loss']:>10.5f} {b['loss']:>10.5f} {a['mlm']:>9.5f} "
                f"{b['mlm']:>9.5f} {a['nsp']:>8.5f} {b['nsp']:>9.5f} {rel:>9.2e}"
            )
    return max_rel_diff(jx, th, "loss")


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "tiny.py"))
    parser.add_argument("--corpus", default=BUILTIN_CORPUS, help="config.data.corpus")
    parser.add_argument("--vocab_size", type=int, default=8192, help="WordPiece target size")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=None, help="default: steps // 10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log_every", type=int, default=20)
    parser.add_argument("--tolerance", type=float, default=0.01, help="max relative difference")
    parser.add_argument("--workdir", default="", help="default: a temporary folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    config = make_config(args)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(args.workdir or tmp)
        data_dir, vocab = prepare_data(config, workdir)
        config.model.vocab_size = len(read_vocab(vocab))
        cfg = bert_model_config(config.model)
        objective = make_objective(config, vocab)
        params = model_dir.init_params(cfg, heads=PRETRAINING_HEADS, seed=args.seed)
        model_dir.save_model(workdir / "model", params, cfg, vocab, overwrite=True)
        hf_dir = model_dir.export_hf(workdir / "model", workdir / "hf", overwrite=True)
        batches = masked_batches(config, objective, data_dir, vocab, args.steps)
        jx, jax_lrs = jax_losses(config, cfg, objective, params, batches)
        th, torch_lrs, torch_decayed = torch_losses(config, hf_dir, batches)
    worst = report(jx, th, args.log_every)
    lr_gap = max(abs(a - b) for a, b in zip(jax_lrs, torch_lrs, strict=True))
    result = {
        "steps": args.steps,
        "vocab_size": cfg.vocab_size,
        "max_rel_diff": worst,
        "max_rel_diff_mlm": max_rel_diff(jx, th, "mlm"),
        "max_rel_diff_nsp": max_rel_diff(jx, th, "nsp"),
        "first_loss": (jx[0]["loss"], th[0]["loss"]),
        "last_loss": (jx[-1]["loss"], th[-1]["loss"]),
        "max_lr_gap": lr_gap,
        "decayed_params": (decayed_size(params), torch_decayed),
        "wall_seconds": time.perf_counter() - started,
    }
    print(
        f"{args.steps} steps, batch {args.batch}, seq {args.seq}, vocab {cfg.vocab_size}: max "
        f"relative loss difference {worst:.2e} (mlm {result['max_rel_diff_mlm']:.2e}, nsp "
        f"{result['max_rel_diff_nsp']:.2e}); lr gap {lr_gap:.1e}; decayed parameters jax/torch "
        f"{result['decayed_params'][0]}/{result['decayed_params'][1]}; "
        f"wall {result['wall_seconds']:.0f} s"
    )
    if not math.isfinite(worst) or worst > args.tolerance:
        raise SystemExit(f"peer check failed: max relative difference {worst} > {args.tolerance}")
    if result["decayed_params"][0] != result["decayed_params"][1]:
        raise SystemExit(f"weight-decay sets differ: {result['decayed_params']}")
    return result


if __name__ == "__main__":
    main()
