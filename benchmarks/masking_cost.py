"""Cost of dynamic MLM masking inside the jitted pretraining step.

Times a jitted forward + backward of the BERT pretraining model (the MLM+NSP objective's `sums`,
dropout on) twice: once masking the batch inside the jit with the real masking function
(`objective.mask_fn` of `bertjax.objectives.make_objective` over the synthetic vocabulary of
`benchmarks/common.py`), once fed
the same batch masked beforehand; masking alone is timed too. The variants run interleaved (median
of `--iters` after one warm-up, `block_until_ready`). Prints one result line:

  python benchmarks/masking_cost.py                      # configs/mini.py, batch 32, seq 128
  python benchmarks/masking_cost.py --config.data.whole_word_masking=True
  python benchmarks/masking_cost.py --config configs/large.py --batch 64 --seq 512 \
      --config.data.max_predictions=76 --config.model.remat_policy=dots    # bf16 on a GPU
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bertjax.models import Model
from bertjax.models.bert import BERT, bert_model_config
from bertjax.objectives import make_objective

try:
    from benchmarks import common
except ImportError:  # run as a script: this folder is on sys.path
    import common


def pretraining_loss(params, batch, rng, model, objective):
    """Mean MLM cross-entropy over masked positions plus mean NSP cross-entropy."""
    sums = objective.sums(model, params, batch, rng)
    return (
        sums["mlm_loss"] / jnp.maximum(sums["mlm_count"], 1.0)
        + sums["nsp_loss"] / sums["nsp_count"]
    )


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


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(common.REPO / "configs" / "mini.py"))
    parser.add_argument("--batch", type=int, default=32, help="sequences per step")
    parser.add_argument("--seq", type=int, default=128, help="sequence length")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--iters", type=int, default=10, help="interleaved timed calls of each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json_out", default="", help="also write the result here as JSON")
    args = common.parse_args(parser, argv)
    device = jax.devices()[0]
    config = common.load_benchmark_config(args, accelerator=device.platform != "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        objective = make_objective(config, common.write_vocab(config.model.vocab_size, tmp))
    model = Model(BERT, bert_model_config(config.model), tuple(objective.heads))
    mask = objective.mask_fn
    rs = np.random.default_rng(args.seed)
    batch = jax.device_put(
        common.synthetic_batch(
            rs, args.batch, args.seq, config.model.vocab_size, config.data.short_seq_prob
        )
    )
    mask_rng, dropout_rng = jax.random.split(jax.random.key(args.seed))
    premasked = jax.jit(mask)(mask_rng, batch)
    fields = (*BERT.fields_for(model.config), "masked_positions")
    init = lambda r: model.init(r, {k: premasked[k] for k in fields})
    params = nn.meta.unbox(jax.jit(init)(jax.random.key(args.seed))["params"])
    grad = jax.grad(functools.partial(pretraining_loss, model=model, objective=objective))

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
    result = {
        "step_with_masking_ms": step * 1e3,
        "step_premasked_ms": pre * 1e3,
        "masking_share_pct": 100 * (step - pre) / step,
        "paired_diff_share_pct": 100 * paired / step,
        "mask_alone_ms": alone * 1e3,
        "mask_alone_share_pct": 100 * alone / step,
    }
    print(
        f"masking_cost config={args.config} {' '.join(args.overrides)} batch={args.batch} "
        f"seq={args.seq} dtype={config.model.dtype} device={device.device_kind} "
        f"iters={args.iters} " + " ".join(f"{k}={v:.3f}" for k, v in result.items())
    )
    if args.json_out:
        common.write_json(
            args.json_out, {**result, "device": device.device_kind, **common.environment()}
        )
    return result


if __name__ == "__main__":
    main()
