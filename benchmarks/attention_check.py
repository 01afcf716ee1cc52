"""Do the attention implementations compute the same function? cuDNN and XLA against a reference.

Two levels, both on random inputs with right-padded rows of random lengths (as BERT batches are):

- op: `bertjax.models.layers.attention` with each implementation, output and the gradients of a
  random projection of it with respect to q, k and v, against
  `jax.nn.dot_product_attention(implementation="xla")` on float32 inputs;
- model: the BERT encoder (`Model(BERT, cfg)`) forward with each implementation and the same
  weights, against the float32 XLA model.

Only real (unpadded) query positions are compared: what a padded query attends to is never read.
Errors are relative, ||out - ref|| / ||ref|| (bf16 operands land near 1e-3 to 1e-2, float32 far
below 1e-3); the check fails (exit 1) above `--tolerance`. "cudnn" runs only on an NVIDIA GPU:

  python benchmarks/attention_check.py                          # CPU: xla vs the reference
  python benchmarks/attention_check.py --config configs/large.py --seq 512    # GPU: cudnn too
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bertjax.models import Model
from bertjax.models.bert import BERT, bert_model_config
from bertjax.models.layers import attention, segment_mask

try:
    from benchmarks import common
except ImportError:  # run as a script: this folder is on sys.path
    import common


def relative_error(out, ref, real) -> float:
    """||out - ref|| / ||ref|| over the real positions (`real`: bool [batch, length])."""
    out = np.asarray(out, np.float64)[real]
    ref = np.asarray(ref, np.float64)[real]
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def padding_mask(rs: np.random.Generator, batch: int, length: int) -> np.ndarray:
    """Right-padded rows: the first full, the others of random lengths in [1, length]."""
    lengths = np.concatenate([[length], rs.integers(1, length + 1, batch - 1)])
    return (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)


def op_errors(impl: str, dtype, shape, mask, seed: int) -> dict[str, float]:
    """Output and q/k/v-gradient errors of one implementation against jax's float32 one."""
    keys = jax.random.split(jax.random.key(seed), 4)
    q, k, v, cotangent = (jax.random.normal(key, shape, jnp.float32) for key in keys)
    mask = jnp.asarray(mask)

    def loss(q, k, v, implementation):
        if implementation == "reference":
            out = jax.nn.dot_product_attention(q, k, v, mask=segment_mask(mask))
        else:
            out = attention(q, k, v, mask, implementation=implementation)
        real = mask[:, :, None, None].astype(jnp.float32)
        return jnp.sum(out.astype(jnp.float32) * cotangent * real), out

    grads = jax.jit(
        jax.grad(loss, argnums=(0, 1, 2), has_aux=True), static_argnames=("implementation",)
    )
    with jax.default_matmul_precision("highest"):  # a true float32 reference, not TF32 on a GPU
        ref_grads, ref_out = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(
            q, k, v, implementation="reference"
        )
    cast = [x.astype(dtype) for x in (q, k, v)]
    got_grads, got_out = grads(*cast, implementation=impl)
    real = np.asarray(mask) > 0
    errors = {"out": relative_error(got_out, ref_out, real)}
    for name, got, ref in zip("qkv", got_grads, ref_grads, strict=True):
        # dq lives on query positions; dk, dv on key positions: both are the real ones.
        errors[f"d{name}"] = relative_error(got, ref, real)
    return errors


def model_error(config, impl: str, dtype: str, ids, types, mask) -> float:
    """Relative error of the encoder's sequence output with `impl` against the float32 XLA model."""
    base = bert_model_config(config.model)
    ref_cfg = dataclasses.replace(
        base, dtype="float32", attention_impl="xla", attention_dropout=0.0
    )
    cfg = dataclasses.replace(base, dtype=dtype, attention_impl=impl, attention_dropout=0.0)
    inputs = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    params = nn.meta.unbox(jax.jit(Model(BERT, ref_cfg).init)(jax.random.key(0), inputs))
    with jax.default_matmul_precision("highest"):
        ref = jax.jit(Model(BERT, ref_cfg).apply)(params, inputs)["sequence_output"]
    out = jax.jit(Model(BERT, cfg).apply)(params, inputs)["sequence_output"]
    return relative_error(out, ref, np.asarray(mask) > 0)


def available_impls() -> list[str]:
    return ["xla", "cudnn"] if jax.devices()[0].platform == "gpu" else ["xla"]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(common.REPO / "configs" / "base.py"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--tolerance", type=float, default=0.0, help="0: 2e-2 bf16, 1e-4 f32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json_out", default="")
    args = common.parse_args(parser, argv)
    device = jax.devices()[0]
    config = common.load_benchmark_config(args, accelerator=device.platform != "cpu")
    dtype = config.model.dtype
    tolerance = args.tolerance or (2e-2 if dtype == "bfloat16" else 1e-4)
    cfg = bert_model_config(config.model)
    rs = np.random.default_rng(args.seed)
    mask = padding_mask(rs, args.batch, args.seq)
    ids = np.where(mask > 0, rs.integers(5, cfg.vocab_size, mask.shape), 0).astype(np.int32)
    types = (np.arange(args.seq)[None, :] >= args.seq // 2).astype(np.int32) * mask
    shape = (args.batch, args.seq, cfg.num_heads, cfg.head_dim)
    result = {"device": device.device_kind, "dtype": dtype, "tolerance": tolerance, "impls": {}}
    result.update(common.environment())
    for impl in available_impls():
        errors = op_errors(impl, jnp.dtype(dtype), shape, mask, args.seed)
        errors["model"] = model_error(config, impl, dtype, ids, types, mask)
        result["impls"][impl] = errors
        print(
            f"attention {impl} {dtype} batch={args.batch} seq={args.seq} heads={cfg.num_heads} "
            f"head_dim={cfg.head_dim} on {device.device_kind}: "
            + " ".join(f"{k}={v:.2e}" for k, v in errors.items())
        )
    worst = max(max(errors.values()) for errors in result["impls"].values())
    result["worst"], result["passed"] = worst, bool(worst <= tolerance)
    print(
        f"worst relative error {worst:.2e} (tolerance {tolerance:.0e}): "
        f"{'passed' if result['passed'] else 'FAILED'}"
    )
    if args.json_out:
        common.write_json(args.json_out, result)
    if not result["passed"]:
        raise SystemExit(1)
    return result


if __name__ == "__main__":
    main()
