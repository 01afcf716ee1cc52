"""Cost of dynamic MLM masking inside the jitted pretraining step.

Times a jitted forward + backward step of `BertForPreTraining` (gathered MLM loss + NSP loss, plain
`jax.grad`, dropout on) twice: once masking the batch inside the jit with `bertjax.masking.mask_batch`,
once fed the same batch masked beforehand. The two steps are timed interleaved (median of `--iters`
after warm-up, `block_until_ready`); masking alone is timed too. Prints one result line:

  python benchmarks/masking_cost.py                      # configs/mini.py, batch 32, seq 128
  python benchmarks/masking_cost.py --whole_word_masking --config configs/tiny.py
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bertjax import masking
from bertjax.config import bert_config, load_config
from bertjax.model import BertForPreTraining

PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103  # the BERT uncased vocabulary layout


def synthetic_vocab(vocab_size: int) -> list[str]:
    """A token list laid out like BERT's vocab.txt: specials and [unusedN] below 999."""
    tokens = [f"[unused{i}]" for i in range(999)] + [f"w{i}" for i in range(999, vocab_size)]
    for token_id, name in ((PAD, "[PAD]"), (UNK, "[UNK]"), (CLS, "[CLS]"), (SEP, "[SEP]")):
        tokens[token_id] = name
    tokens[MASK] = "[MASK]"
    return tokens


def synthetic_batch(rs, batch_size: int, length: int, vocab_size: int) -> dict[str, np.ndarray]:
    """[CLS] A [SEP] B [SEP] rows, 90% full length as in pretraining, the rest shorter."""
    ids = np.full((batch_size, length), PAD, np.int32)
    types = np.zeros((batch_size, length), np.int32)
    for row in range(batch_size):
        n = length - 3 if rs.random() < 0.9 else int(rs.integers(8, length - 3))
        a = int(rs.integers(1, n))
        ids[row, : a + 2] = [CLS, *rs.integers(999, vocab_size, a), SEP]
        ids[row, a + 2 : n + 3] = [*rs.integers(999, vocab_size, n - a), SEP]
        types[row, a + 2 : n + 3] = 1
    real = (ids != PAD) & (ids != CLS) & (ids != SEP)
    return {
        "input_ids": ids,
        "token_type_ids": types,
        "attention_mask": (ids != PAD).astype(np.int32),
        "word_starts": real & (rs.random(ids.shape) < 0.8),
        "next_sentence_label": rs.integers(0, 2, batch_size).astype(np.int32),
    }


def pretraining_loss(params, batch, rng, model):
    """Mean MLM cross-entropy over masked positions plus mean NSP cross-entropy."""
    out = model.apply(
        {"params": params},
        batch["input_ids"],
        batch["token_type_ids"],
        batch["attention_mask"],
        masked_positions=batch["masked_positions"],
        deterministic=False,
        rngs={"dropout": rng},
    )
    mlm = optax.softmax_cross_entropy_with_integer_labels(out["mlm_logits"], batch["masked_ids"])
    weights = batch["masked_weights"]
    mlm = (mlm * weights).sum() / jnp.maximum(weights.sum(), 1.0)
    nsp = optax.softmax_cross_entropy_with_integer_labels(
        out["nsp_logits"], batch["next_sentence_label"]
    )
    return mlm + nsp.mean()


def time_calls(fns: dict, iters: int) -> dict[str, list[float]]:
    """Seconds per call of each zero-argument fn, timed interleaved after one warm-up."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/mini.py")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--whole_word_masking", action="store_true")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    model = BertForPreTraining(bert_config(config.model))
    mask = functools.partial(
        masking.mask_batch,
        candidate_ids=jnp.asarray(
            masking.random_candidates(synthetic_vocab(model.config.vocab_size))
        ),
        mask_id=MASK,
        cls_id=CLS,
        sep_id=SEP,
        pad_id=PAD,
        max_predictions=config.data.max_predictions,
        mask_rate=config.data.mask_rate,
        whole_word_masking=args.whole_word_masking,
    )
    rs = np.random.default_rng(0)
    batch = jax.device_put(
        synthetic_batch(rs, args.batch_size, args.seq_len, model.config.vocab_size)
    )
    rng = jax.random.key(0)
    mask_rng, dropout_rng = jax.random.split(rng)
    premasked = jax.jit(mask)(mask_rng, batch)
    fields = [premasked[k] for k in ("input_ids", "token_type_ids", "attention_mask")]
    init = lambda r: model.init(r, *fields, masked_positions=premasked["masked_positions"])
    params = nn.meta.unbox(jax.jit(init)(rng)["params"])
    grad = jax.grad(functools.partial(pretraining_loss, model=model))

    step_premasked = jax.jit(lambda p, b, r: grad(p, b, r))
    step_masking = jax.jit(lambda p, b, m, r: grad(p, mask(m, b), r))
    mask_only = jax.jit(mask)
    times = time_calls(
        {
            "premasked": lambda: step_premasked(params, premasked, dropout_rng),
            "masking": lambda: step_masking(params, batch, mask_rng, dropout_rng),
            "mask_only": lambda: mask_only(mask_rng, batch),
        },
        args.iters,
    )
    step, pre, alone = (statistics.median(times[k]) for k in ("masking", "premasked", "mask_only"))
    # Interleaved runs: the median of paired differences cancels slow drifts in machine load.
    paired = statistics.median(
        a - b for a, b in zip(times["masking"], times["premasked"], strict=True)
    )
    print(
        f"masking_cost config={args.config} batch={args.batch_size} seq={args.seq_len} "
        f"wwm={args.whole_word_masking} device={jax.devices()[0].platform} iters={args.iters} "
        f"step_with_masking_ms={step * 1e3:.2f} step_premasked_ms={pre * 1e3:.2f} "
        f"masking_share={100 * (step - pre) / step:.2f}% "
        f"paired_diff_share={100 * paired / step:.2f}% "
        f"mask_alone_ms={alone * 1e3:.3f} mask_alone_share={100 * alone / step:.2f}%"
    )


if __name__ == "__main__":
    main()
