"""Training throughput of the PyTorch peer: `transformers.BertForPreTraining`, the same sizes.

The model is built from the bertjax config (same layers, widths, vocabulary, dropout) and run as
users ordinarily run it at its best: SDPA attention, bf16 autocast on a GPU (`--dtype`),
`torch.compile` (default on for CUDA, off for CPU; `--compile/--no-compile`), AdamW with BERT's
decay groups (fused on CUDA, foreach on CPU), global-norm clipping at `config.optim.grad_clip_norm`
and the linear warmup/decay schedule. MLM labels sit at ~`config.data.mask_rate` of the real
tokens (80% [MASK], 10% random, 10% kept), drawn on the host as a data collator does, outside the
timed step; the model projects every token through the vocabulary, as it does for its users.
Timed like `train_throughput.py` (`torch.cuda.synchronize` on a GPU):

  python benchmarks/torch_peer.py --config configs/mini.py --batch 32 --seq 128

TFLOP/s use the MLM+NSP objective's `flops_per_sequence` with the MLM head on every position
(P = seq), the work this model does; its seq/s compare directly with bertjax's.
"""

from __future__ import annotations

import argparse
import time
import types
from collections.abc import Sequence
from typing import Any

import numpy as np

from bertjax.interop import hf_bert as convert
from bertjax.models.bert import BERT, bert_model_config
from bertjax.objectives.mlm_nsp import MlmNsp
from bertjax.training import flops
from bertjax.training.optimizer import warmup_steps

try:
    from benchmarks import common
except ImportError:  # run as a script: this folder is on sys.path
    import common

NUM_BATCHES = 4  # distinct masked batches cycled through the timed steps


def hf_model(cfg, device: str):
    """`BertForPreTraining` with SDPA attention, sized as the bertjax model config `cfg`.

    Weights stay float32; bf16 runs under autocast (mixed precision, as bertjax's `dtype`).
    """
    import transformers

    hf_config = transformers.BertConfig(**convert.config_to_hf(cfg), attn_implementation="sdpa")
    return transformers.BertForPreTraining(hf_config).to(device).train()


def host_masked_batch(rs, batch: dict[str, np.ndarray], vocab_size: int, mask_rate: float):
    """A collator's MLM masking: labels at ~`mask_rate` of real tokens, -100 elsewhere."""
    ids = batch["input_ids"].copy()
    real = ids >= common.FIRST_ORDINARY
    chosen = real & (rs.random(ids.shape) < mask_rate)
    action = rs.random(ids.shape)
    random_ids = rs.integers(common.FIRST_ORDINARY, vocab_size, ids.shape)
    labels = np.where(chosen, ids, -100)
    ids = np.where(chosen & (action < 0.8), common.MASK, ids)
    ids = np.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, ids)
    return {
        "input_ids": ids,
        "token_type_ids": batch["token_type_ids"],
        "attention_mask": batch["attention_mask"],
        "labels": labels,
        "next_sentence_label": batch["next_sentence_label"],
    }


def adamw(model, *, lr, weight_decay, betas, eps, warmup_steps, num_steps, device="cpu"):
    """torch AdamW as BERT is trained: no weight decay on biases and LayerNorm, fused on CUDA
    (foreach elsewhere), under bertjax's schedule (linear warmup to `lr`, then linear decay to 0).

    Returns (optimizer, scheduler); the first parameter group is the decayed one.
    """
    import torch

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
    kind = {"fused": True} if device == "cuda" else {"foreach": True}
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        betas=betas,
        eps=eps,
        **kind,
    )

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return step / max(warmup_steps, 1)
        return max(0.0, (num_steps - step) / max(num_steps - warmup_steps, 1))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def make_optimizer(model, config, device: str):
    """`adamw` with the hyperparameters of `config.optim` over `config.train.num_steps` (the
    warmup as bertjax resolves it: `optim.warmup_steps` when > 0, else `warmup_fraction`)."""
    optim, num_steps = config.optim, config.train.num_steps
    return adamw(
        model,
        lr=optim.learning_rate,
        weight_decay=optim.weight_decay,
        betas=(optim.b1, optim.b2),
        eps=optim.eps,
        warmup_steps=warmup_steps(optim, num_steps),
        num_steps=num_steps,
        device=device,
    )


def peak_memory(torch, device: str) -> tuple[int, str]:
    if device == "cuda":
        return int(torch.cuda.max_memory_allocated()), "device peak"
    return common.rss_peak_bytes(), "process RSS peak"


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Builds and times the peer's training step; returns the same figures as bertjax's."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = common.load_benchmark_config(args, accelerator=device == "cuda")
    cfg = bert_model_config(config.model)
    use_compile = device == "cuda" if args.compile is None else args.compile
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if device == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.cuda.reset_peak_memory_stats()
    model = hf_model(cfg, device)
    optimizer, scheduler = make_optimizer(model, config, device)
    forward = torch.compile(model) if use_compile else model
    rs = np.random.default_rng(args.seed)
    batches = []
    for _ in range(NUM_BATCHES):
        plain = common.synthetic_batch(
            rs, args.batch, args.seq, cfg.vocab_size, config.data.short_seq_prob
        )
        masked = host_masked_batch(rs, plain, cfg.vocab_size, config.data.mask_rate)
        batches.append({k: torch.from_numpy(v).long().to(device) for k, v in masked.items()})
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")
    clip = float(config.optim.grad_clip_norm)
    counter = iter(range(1 << 62))

    def step():
        batch = batches[next(counter) % NUM_BATCHES]
        with autocast:
            loss = forward(**batch).loss
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip, foreach=True)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    sync = (lambda _: torch.cuda.synchronize()) if device == "cuda" else (lambda _: None)
    started = time.perf_counter()
    sync(step())
    first_step_s = time.perf_counter() - started
    blocks = common.time_steps(step, args.warmup, args.steps, sync, args.repeats)
    per_sequence = MlmNsp(mask_fn=None, max_predictions=args.seq).flops_per_sequence(
        BERT, cfg, args.seq
    )
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = flops.peak_tflops(types.SimpleNamespace(device_kind=name), config.train.peak_tflops)
    memory, memory_kind = peak_memory(torch, device)
    result = {
        "name": "torch",
        "config": args.config,
        "overrides": args.overrides,
        "batch": args.batch,
        "seq": args.seq,
        "max_predictions": args.seq,
        "dtype": cfg.dtype,
        "attention_impl": "sdpa",
        "compile": use_compile,
        "platform": device,
        "device": name,
        "devices": 1,
        "compile_s": first_step_s,  # the first step: torch.compile compiles lazily
        "flops_per_sequence": per_sequence,
        **common.throughput(
            blocks,
            batch=args.batch,
            seq=args.seq,
            flops_per_sequence=per_sequence,
            devices=1,
            peak_tflops=peak,
        ),
        "peak_memory_bytes": memory,
        "memory_kind": memory_kind,
        "loss_finite": bool(np.isfinite(float(step()))),
        "threads": torch.get_num_threads(),
    }
    result.update(common.environment())
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser)
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the model (default: on for CUDA, off for CPU)",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)"
    )
    args = common.parse_args(parser, argv)
    result = measure(args)
    mfu = result["mfu"]
    print(
        f"torch {args.config} batch={args.batch} seq={args.seq} dtype={result['dtype']} "
        f"compile={result['compile']} threads={result['threads']} device={result['device']}: step {result['step_ms']:.1f} ms, "
        f"{result['seq_per_s']:.1f} seq/s, {result['tokens_per_s']:.0f} tok/s, "
        f"{result['tflops_per_device']:.3f} TFLOP/s, "
        f"MFU {'-' if mfu is None else f'{100 * mfu:.1f}%'}, "
        f"memory {result['peak_memory_bytes'] / 2**20:.0f} MiB ({result['memory_kind']}), "
        f"first step {result['compile_s']:.1f} s, load {result['loadavg']}"
    )
    if args.json_out:
        common.write_json(args.json_out, result)
    return result


if __name__ == "__main__":
    main()
