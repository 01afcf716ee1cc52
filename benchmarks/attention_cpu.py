"""Attention on the CPU at inference shapes: which formulation of the padded, masked products runs
fastest? (issue 28: the attention products ran at 28-63 GFLOP/s against 180 for the FFN.)

Variants, each jitted on [batch, length, heads, head_dim] inputs with right-padded rows:

- fused: `jax.nn.dot_product_attention(implementation="xla")` with a boolean mask (bertjax's
  path before the heads-first change);
- einsum: the explicit products in bertjax's layout (bqhd), float32 softmax, `where` mask;
- heads-first: q, k, v transposed to [batch, heads, length, head_dim] first, then batched
  matmuls (`bertjax.models.layers.attention`, the path bertjax uses);
- heads-first-where: the same with the mask selected by `where` instead of added as a bias;
- bf16: the fused path on bfloat16 inputs (float32 out).

All variants alternate in each of `--rounds` rounds (the machine is shared); the median
milliseconds per call and GFLOP/s (4 * b * h * q * k * d) are printed, and each variant's
largest difference from the float32 fused output:

  python benchmarks/attention_cpu.py --batch 32 --heads 12 --head-dim 32 --lengths 32,64,128
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from bertjax.models.layers import attention, segment_mask


def einsum_attention(q, k, v, mask):
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits = jnp.where(segment_mask(mask), logits * q.shape[-1] ** -0.5, -1e10)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)


def fused_attention(q, k, v, mask):
    return jax.nn.dot_product_attention(q, k, v, mask=segment_mask(mask), implementation="xla")


def heads_first_where(q, k, v, mask):
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
    logits = jnp.where(segment_mask(mask), q @ k.transpose(0, 1, 3, 2) * q.shape[-1] ** -0.5, -1e10)
    return (jax.nn.softmax(logits, axis=-1) @ v).transpose(0, 2, 1, 3)


VARIANTS = {
    "fused": fused_attention,
    "einsum": einsum_attention,
    "heads-first": lambda q, k, v, m: attention(q, k, v, m, implementation="xla"),
    "heads-first-where": heads_first_where,
    "bf16": lambda q, k, v, m: fused_attention(
        *(x.astype(jnp.bfloat16) for x in (q, k, v)), m
    ).astype(jnp.float32),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--lengths", default="32,64,128")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| length | variant | ms/call | GFLOP/s | max abs diff vs fused f32 |")
    print("|---|---|---|---|---|")
    for length in map(int, args.lengths.split(",")):
        shape = (args.batch, length, args.heads, args.head_dim)
        q, k, v = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for _ in range(3))
        real = rng.integers(length // 4, length + 1, args.batch)
        mask = jnp.asarray(np.arange(length)[None] < real[:, None], jnp.int32)
        fns = {name: jax.jit(fn) for name, fn in VARIANTS.items()}
        ref = np.asarray(fns["fused"](q, k, v, mask))
        keep = np.asarray(mask, bool)
        diffs = {
            n: float(np.abs(np.asarray(f(q, k, v, mask)) - ref)[keep].max()) for n, f in fns.items()
        }
        times = {name: [] for name in fns}
        for _ in range(args.rounds):
            for name, fn in fns.items():
                started = time.perf_counter()
                for _ in range(args.calls):
                    out = fn(q, k, v, mask)
                out.block_until_ready()
                times[name].append((time.perf_counter() - started) / args.calls)
        flop = 4 * args.batch * args.heads * length * length * args.head_dim
        for name in fns:
            s = statistics.median(times[name])
            print(
                f"| {length} | {name} | {s * 1e3:.3f} | {flop / s / 1e9:.1f} | {diffs[name]:.1e} |"
            )


if __name__ == "__main__":
    main()
