"""Training throughput of bertjax: the real jitted pretraining step on synthetic batches.

Builds the step with `bertjax.training.step.compile_steps` and the real MLM+NSP objective
(`bertjax.objectives.make_objective`, its masking function) bound to a synthetic vocabulary of
`config.model.vocab_size` ids, so masking, forward, backward and the optimizer update are all
timed, inside one jit, on every device `config.mesh` covers. Compilation (`lower().compile()`) is
timed on its own; the timed blocks start after `--warmup` steps and end on
`jax.block_until_ready`. Prints one line and, with `--json_out`, writes every figure:

  python benchmarks/train_throughput.py --config configs/mini.py --batch 32 --seq 128
  python benchmarks/train_throughput.py --config configs/base.py --batch 64 --seq 512 \
      --config.data.max_predictions=76 --config.model.remat_policy=dots --dtype bfloat16

TFLOP/s and MFU use the objective's `flops_per_sequence` and `bertjax.training.flops` (MFU only
where the device's peak is known or `--peak_tflops` is given).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from bertjax import sharding
from bertjax.models import Model, model_config
from bertjax.objectives import make_objective
from bertjax.training import flops
from bertjax.training.optimizer import make_optimizer
from bertjax.training.step import CompiledSteps, compile_steps

try:
    from benchmarks import common
except ImportError:  # run as a script: this folder is on sys.path
    import common


def build(config, vocab_path, local=None):
    """(model config, compiled steps, one global batch, objective) for `config`; the batch is
    `local` (this process's rows) or synthetic sentence pairs."""
    family, cfg = model_config(config.model)
    mesh = sharding.make_mesh(config.mesh)
    rules = sharding.logical_rules(config.mesh)
    rs = np.random.default_rng(config.train.seed)
    if local is None:
        local = common.synthetic_batch(
            rs,
            config.train.global_batch_size // jax.process_count(),
            config.data.max_seq_len,
            cfg.vocab_size,
            config.data.short_seq_prob,
        )
    tx, schedule = make_optimizer(config.optim, config.train.num_steps)
    objective = make_objective(config, vocab_path)
    steps = compile_steps(
        Model(family, cfg, tuple(objective.heads)),
        objective,
        tx,
        schedule,
        local,
        mesh,
        rules,
        grad_accum_steps=config.train.grad_accum_steps,
    )
    return cfg, steps, sharding.global_batch(local, mesh), objective


def step_callable(config, local: dict[str, np.ndarray]) -> Callable[[], None]:
    """The jitted train step of `config` on the batch `local` (its objective bound to a synthetic
    vocabulary), compiled and run once (compile + first step printed), as a no-argument callable
    that takes one more step and waits for it: what a side-by-side timing calls."""
    with tempfile.TemporaryDirectory() as tmp:
        vocab = common.write_vocab(config.model.vocab_size, tmp)
        _, steps, batch, _ = build(config, vocab, local)
    state = [steps.init_state(jax.random.key(config.train.seed))]

    def run():
        state[0], metrics = steps.train_step(state[0], batch)
        jax.block_until_ready(metrics)

    start = time.perf_counter()
    run()
    print(f"bertjax compile + first step: {time.perf_counter() - start:.1f} s")
    return run


def compile_train_step(steps: CompiledSteps, state, batch):
    """AOT-compiles the jitted train step (the function `compile_steps` wraps in its mesh)."""
    with jax.set_mesh(steps.mesh), nn.logical_axis_rules(steps.rules):
        return steps.train_step.__wrapped__.lower(state, batch).compile()


def device_peak_bytes() -> int | None:
    """Largest peak-bytes-in-use over the local devices, where the backend reports it."""
    peaks = []
    for device in jax.local_devices():
        stats = device.memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
    return max(peaks) if peaks else None


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Compiles and times the step; returns the figures (see the module docstring)."""
    device = jax.devices()[0]
    config = common.load_benchmark_config(args, accelerator=device.platform != "cpu")
    config.train.seed = args.seed
    with tempfile.TemporaryDirectory() as tmp:
        vocab_path = common.write_vocab(config.model.vocab_size, tmp)
        cfg, steps, batch, objective = build(config, vocab_path)
    state = steps.init_state(jax.random.key(config.train.seed))
    started = time.perf_counter()
    compiled = compile_train_step(steps, state, batch)
    compile_s = time.perf_counter() - started

    def step():
        nonlocal state
        state, metrics = compiled(state, batch)
        return state, metrics

    blocks = common.time_steps(step, args.warmup, args.steps, jax.block_until_ready, args.repeats)
    family, _ = model_config(config.model)
    per_sequence = objective.flops_per_sequence(family, cfg, config.data.max_seq_len)
    result = {
        "name": "bertjax",
        "config": args.config,
        "overrides": args.overrides,
        "batch": args.batch,
        "seq": args.seq,
        "max_predictions": config.data.max_predictions,
        "dtype": cfg.dtype,
        "attention_impl": cfg.attention_impl,
        "scan_layers": cfg.scan_layers,
        "remat_policy": cfg.remat_policy,
        "platform": device.platform,
        "device": device.device_kind,
        "devices": jax.device_count(),
        "compile_s": compile_s,
        "flops_per_sequence": per_sequence,
        **common.throughput(
            blocks,
            batch=args.batch,
            seq=args.seq,
            flops_per_sequence=per_sequence,
            devices=jax.device_count(),
            peak_tflops=flops.peak_tflops(device, config.train.peak_tflops),
        ),
    }
    device_peak = device_peak_bytes()
    result["peak_memory_bytes"] = device_peak or common.rss_peak_bytes()
    result["memory_kind"] = "device peak" if device_peak else "process RSS peak"
    result["loss_finite"] = bool(np.isfinite(float(jax.device_get(step()[1]["mlm_loss"]))))
    result["objective"] = config.get("objective", "mlm_nsp")
    result.update(common.environment())
    return result


def summary_line(result: dict[str, Any]) -> str:
    mfu = result["mfu"]
    return (
        f"{result['name']} {result['config']} batch={result['batch']} seq={result['seq']} "
        f"dtype={result['dtype']} device={result['device']} x{result['devices']}: "
        f"step {result['step_ms']:.1f} ms, {result['seq_per_s']:.1f} seq/s, "
        f"{result['tokens_per_s']:.0f} tok/s, {result['tflops_per_device']:.3f} TFLOP/s/device, "
        f"MFU {'-' if mfu is None else f'{100 * mfu:.1f}%'}, "
        f"memory {result['peak_memory_bytes'] / 2**20:.0f} MiB ({result['memory_kind']}), "
        f"compile {result['compile_s']:.1f} s, load {result['loadavg']}"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser)
    args = common.parse_args(parser, argv)
    result = measure(args)
    print(summary_line(result))
    if args.json_out:
        common.write_json(args.json_out, result)
    return result


if __name__ == "__main__":
    main()
