"""Encoder inference side by side: bertjax's BERT encoder against transformers' `BertModel`.

The forward pass of the encoder and pooler only (no heads, no gradient, dropout off) on synthetic
batches, bf16 weights and compute on an accelerator, float32 on a CPU (`--dtype`). bertjax's
forward is jitted (compile time reported); the peer uses SDPA attention under
`torch.inference_mode`, `torch.compile` as in `torch_peer.py`. Each side runs in a fresh
process, alternating for `--rounds` rounds, and one table is printed:

  python benchmarks/inference.py --config configs/mini.py             # batch 128, seq 128
  python benchmarks/inference.py --config configs/base.py --batch 64 --seq 512 --side bertjax

TFLOP/s: the forward third of the MLM+NSP objective's `flops_per_sequence` with no MLM positions.
"""

from __future__ import annotations

import argparse
import statistics
import time
import types
from collections.abc import Sequence
from typing import Any

import numpy as np

from bertjax.interop import hf_bert as convert
from bertjax.models.bert import BERT, bert_model_config
from bertjax.objectives.mlm_nsp import MlmNsp
from bertjax.training import flops

try:
    from benchmarks import common
except ImportError:  # run as a script: this folder is on sys.path
    import common

SIDES = ("bertjax", "torch")
COLUMNS = (
    ("name", "side", 0),
    ("batch", "batch", 0),
    ("seq", "seq", 0),
    ("dtype", "dtype", 0),
    ("seq_per_s", "seq/s", 1),
    ("step_ms", "forward ms", 1),
    ("tflops_per_device", "TFLOP/s", 3),
    ("mfu_pct", "MFU %", 1),
    ("memory_mib", "memory MiB", 0),
    ("compile_s", "compile s", 1),
    ("ratio", "bertjax/torch", 2),
)


def forward_flops(cfg, seq: int) -> float:
    """Forward FLOPs of one sequence through encoder and pooler: a third of the pretraining
    objective's training FLOPs with no MLM positions (the NSP head's 4H included, as ever)."""
    return MlmNsp(mask_fn=None, max_predictions=0).flops_per_sequence(BERT, cfg, seq) / 3


def measure_bertjax(args, config, batch: dict[str, np.ndarray]) -> dict[str, Any]:
    import jax

    from bertjax.models import Model

    device = jax.devices()[0]
    cfg = bert_model_config(config.model)
    model = Model(BERT, cfg)  # the bare encoder: backbone (encoder and pooler), no heads
    inputs = {k: jax.device_put(batch[k]) for k in BERT.fields_for(cfg)}
    params = jax.jit(lambda rng: model.init(rng, inputs)["params"])(jax.random.key(args.seed))
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x))
    started = time.perf_counter()
    compiled = forward.lower(params, inputs).compile()
    compile_s = time.perf_counter() - started
    blocks = common.time_steps(
        lambda: compiled(params, inputs),
        args.warmup,
        args.steps,
        jax.block_until_ready,
        args.repeats,
    )
    stats = device.memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return {
        "platform": device.platform,
        "device": device.device_kind,
        "compile_s": compile_s,
        "peak_tflops": flops.peak_tflops(device, config.train.peak_tflops),
        "peak_memory_bytes": int(peak) if peak else common.rss_peak_bytes(),
        "memory_kind": "device peak" if peak else "process RSS peak",
        "blocks": blocks,
    }


def measure_torch(args, config, batch: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = bert_model_config(config.model)
    use_compile = device == "cuda" if args.compile is None else args.compile
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    hf_config = transformers.BertConfig(**convert.config_to_hf(cfg), attn_implementation="sdpa")
    dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
    model = transformers.BertModel(hf_config).to(device=device, dtype=dtype).eval()
    forward = torch.compile(model) if use_compile else model
    inputs = {
        k: torch.from_numpy(batch[k]).long().to(device)
        for k in ("input_ids", "token_type_ids", "attention_mask")
    }
    sync = (lambda _: torch.cuda.synchronize()) if device == "cuda" else (lambda _: None)

    def step():
        with torch.inference_mode():
            return forward(**inputs).pooler_output

    started = time.perf_counter()
    sync(step())
    compile_s = time.perf_counter() - started
    blocks = common.time_steps(step, args.warmup, args.steps, sync, args.repeats)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return {
        "platform": device,
        "device": name,
        "compile": use_compile,
        "threads": torch.get_num_threads(),
        "compile_s": compile_s,  # the first call: torch.compile compiles lazily
        "peak_tflops": flops.peak_tflops(
            types.SimpleNamespace(device_kind=name), config.train.peak_tflops
        ),
        "peak_memory_bytes": (
            int(torch.cuda.max_memory_allocated()) if device == "cuda" else common.rss_peak_bytes()
        ),
        "memory_kind": "device peak" if device == "cuda" else "process RSS peak",
        "blocks": blocks,
    }


def accelerator_present(side: str) -> bool:
    if side == "bertjax":
        import jax

        return jax.devices()[0].platform != "cpu"
    import torch

    return torch.cuda.is_available()


def measure(args: argparse.Namespace, side: str) -> dict[str, Any]:
    """One side's forward timing and figures."""
    config = common.load_benchmark_config(args, accelerator=accelerator_present(side))
    if config.model.dtype == "bfloat16":
        config.model.param_dtype = "bfloat16"  # inference keeps bf16 weights
    cfg = bert_model_config(config.model)
    rs = np.random.default_rng(args.seed)
    batch = common.synthetic_batch(rs, args.batch, args.seq, cfg.vocab_size)
    run = measure_bertjax if side == "bertjax" else measure_torch
    out = run(args, config, batch)
    per_sequence = forward_flops(cfg, args.seq)
    result = {
        "name": side,
        "config": args.config,
        "overrides": args.overrides,
        "batch": args.batch,
        "seq": args.seq,
        "dtype": cfg.dtype,
        "flops_per_sequence": per_sequence,
        **{k: v for k, v in out.items() if k not in ("blocks", "peak_tflops")},
        **common.throughput(
            out["blocks"],
            batch=args.batch,
            seq=args.seq,
            flops_per_sequence=per_sequence,
            devices=1,
            peak_tflops=out["peak_tflops"],
        ),
    }
    result["mfu_pct"] = None if result["mfu"] is None else 100 * result["mfu"]
    result["memory_mib"] = result["peak_memory_bytes"] / 2**20
    result.update(common.environment())
    return result


def side_by_side(args: argparse.Namespace, argv: Sequence[str]) -> list[dict[str, Any]]:
    """Both sides alternating over rounds; medians per side and the seq/s ratio."""
    runs = {side: [] for side in SIDES}
    for _ in range(args.rounds):
        for side in SIDES:
            if args.in_process:
                result = measure(args, side)
            else:
                result = common.run_script("inference.py", [*argv, f"--side={side}"])
            print(f"  {side}: {result['seq_per_s']:.2f} seq/s, load {result['loadavg']}")
            runs[side].append(result)
    rows = []
    for side in SIDES:
        row = dict(runs[side][0])
        for key in ("step_ms", "seq_per_s", "tokens_per_s", "tflops_per_device", "compile_s"):
            row[key] = statistics.median(r[key] for r in runs[side])
        row["rounds_seq_per_s"] = [r["seq_per_s"] for r in runs[side]]
        row["memory_mib"] = max(r["memory_mib"] for r in runs[side])
        mfus = [r["mfu_pct"] for r in runs[side] if r["mfu_pct"] is not None]
        row["mfu_pct"] = statistics.median(mfus) if mfus else None
        rows.append(row)
    ratios = [a["seq_per_s"] / b["seq_per_s"] for a, b in zip(*runs.values(), strict=True)]
    rows[0]["ratio"] = statistics.median(ratios)
    rows[0]["ratio_rounds"] = ratios
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser)
    parser.set_defaults(batch=128)
    parser.add_argument("--side", default="both", choices=("both", *SIDES))
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurements per side")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--in_process", action="store_true", help="no subprocesses (smoke runs)")
    args = common.parse_args(parser, argv)
    if args.side != "both":
        result = measure(args, args.side)
        if args.json_out:
            common.write_json(args.json_out, result)
        return result
    rows = side_by_side(args, common.side_argv(args, args.batch))
    text = common.table(rows, COLUMNS)
    env = common.environment()
    print(text)
    print(
        f"device {rows[0]['device']} ({rows[0]['platform']}, {env['cpu']}), "
        f"load average {env['loadavg']}; {env['versions']}"
    )
    result = {"rows": rows, "table": text, **env}
    if args.json_out:
        common.write_json(args.json_out, result)
    return result


if __name__ == "__main__":
    main()
