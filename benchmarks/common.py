"""Shared helpers of the throughput benchmarks: config, synthetic data, timing, memory, output.

Nothing here needs a corpus: batches are random ids over a synthetic vocabulary
(`bertjax.data.synthetic`, shared with the tests).
The benchmark scripts import this module as `common` (their own folder is on `sys.path` when run
as scripts) or as `benchmarks.common`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

from bertjax.data.synthetic import (  # noqa: F401 (the benchmarks' synthetic data)
    CLS,
    FIRST_ORDINARY,
    MASK,
    PAD,
    SEP,
    SPECIAL_TOKENS,
    UNK,
    WORD_START_RATE,
    synthetic_batch,
    synthetic_vocab,
    write_vocab,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "transformers")


# ----------------------------------------------------------------------------- config


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The flags every throughput script takes (plus `--config.group.field=value` overrides)."""
    parser.add_argument("--config", default=str(REPO / "configs" / "mini.py"), help="config file")
    parser.add_argument("--batch", type=int, default=32, help="sequences per step")
    parser.add_argument("--seq", type=int, default=128, help="sequence length")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="compute dtype; auto: bfloat16 on an accelerator, float32 on a CPU",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks; the median is kept")
    parser.add_argument("--peak_tflops", type=float, default=0.0, help="per-device peak for MFU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json_out", default="", help="also write the result here as JSON")


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None):
    """Parses known flags and collects `--config.*` overrides into `args.overrides`."""
    args, extra = parser.parse_known_args(argv)
    args.overrides = [item for item in extra if item.startswith("--config.")]
    unknown = [item for item in extra if not item.startswith("--config.")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def load_benchmark_config(args, accelerator: bool):
    """The config file with overrides, `--batch`, `--seq` and the resolved `--dtype` applied."""
    from bertjax.config import load_config

    config = load_config(args.config, args.overrides)
    config.train.global_batch_size = args.batch
    config.data.max_seq_len = args.seq
    if args.seq > config.model.max_position_embeddings:
        raise ValueError(
            f"--seq={args.seq} exceeds config.model.max_position_embeddings="
            f"{config.model.max_position_embeddings}"
        )
    config.model.dtype = resolve_dtype(args.dtype, accelerator)
    if getattr(args, "peak_tflops", 0.0):  # only the throughput scripts have the flag
        config.train.peak_tflops = args.peak_tflops
    return config


def resolve_dtype(dtype: str, accelerator: bool) -> str:
    if dtype == "auto":
        return "bfloat16" if accelerator else "float32"
    return dtype


# ----------------------------------------------------------------------------- data


# ----------------------------------------------------------------------------- timing


def time_steps(
    step: Callable[[], Any], n_warmup: int, n_timed: int, sync: Callable[[Any], Any], repeats=1
) -> list[float]:
    """Seconds per step of `repeats` blocks of `n_timed` steps, after `n_warmup` untimed steps.

    Each block is timed from a synchronised start to a synchronised end (`sync` blocks on the
    last step's outputs, e.g. `jax.block_until_ready` or `torch.cuda.synchronize`), so
    asynchronous dispatch overlaps steps as in a training loop and nothing is left running.
    """
    if n_timed < 1 or repeats < 1:
        raise ValueError(f"n_timed={n_timed} and repeats={repeats} must be >= 1")
    out = None
    for _ in range(n_warmup):
        out = step()
    sync(out)
    blocks = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n_timed):
            out = step()
        sync(out)
        blocks.append((time.perf_counter() - start) / n_timed)
    return blocks


def throughput(
    step_seconds: Sequence[float],
    *,
    batch: int,
    seq: int,
    flops_per_sequence: float,
    devices: int,
    peak_tflops: float | None,
) -> dict[str, Any]:
    """Step time (median of blocks), sequences/s, tokens/s, TFLOP/s per device and MFU."""
    step = statistics.median(step_seconds)
    tflops = batch * flops_per_sequence / step / devices / 1e12
    return {
        "step_ms": 1e3 * step,
        "step_ms_blocks": [1e3 * s for s in step_seconds],
        "seq_per_s": batch / step,
        "tokens_per_s": batch * seq / step,
        "tflops_per_device": tflops,
        "mfu": tflops / peak_tflops if peak_tflops else None,
    }


# ----------------------------------------------------------------------------- environment


def rss_peak_bytes() -> int:
    """Peak resident memory of this process (Linux reports kilobytes, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def cpu_name() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Versions, host, CPU and the load average (1, 5, 15 min) at the time of the call."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "versions": versions,
        "host": platform.node(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# ----------------------------------------------------------------------------- output


def write_json(path: str | pathlib.Path, result: dict[str, Any]) -> None:
    pathlib.Path(path).write_text(json.dumps(result, indent=2, default=str))


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, int]]) -> str:
    """A plain-text table; `columns` are (key, header, decimals)."""
    cells = [[header for _, header, _ in columns]]
    cells += [[fmt(row.get(key), digits) for key, _, digits in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = []
    for row in cells:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(padded))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_script(
    script: str,
    argv: Sequence[str],
    timeout: float | None = None,
    repo: str | pathlib.Path = REPO,
) -> dict[str, Any]:
    """Runs `benchmarks/<script>` in a fresh Python process and returns its JSON result.

    A process per measurement keeps the frameworks apart: each gets the whole device memory
    (JAX preallocates most of a GPU) and its own peak-memory figure. `repo` runs another
    checkout's script with that checkout's package (e.g. the commit before a change).
    """
    repo = pathlib.Path(repo)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "result.json"
        command = [sys.executable, str(repo / "benchmarks" / script), *argv, f"--json_out={out}"]
        done = subprocess.run(
            command, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-4000:]}"
            )
        return json.loads(out.read_text())


def side_argv(args: argparse.Namespace, batch: int, *, torch_flags: bool = True) -> list[str]:
    """Flags for one side's process, from the shared options (`add_common_args`) of a runner.

    `torch_flags` adds `--compile`/`--no-compile` and `--threads` where the runner set them.
    """
    argv = [
        f"--config={args.config}",
        f"--batch={batch}",
        f"--seq={args.seq}",
        f"--dtype={args.dtype}",
        f"--warmup={args.warmup}",
        f"--steps={args.steps}",
        f"--repeats={args.repeats}",
        f"--peak_tflops={args.peak_tflops}",
        f"--seed={args.seed}",
        *args.overrides,
    ]
    if torch_flags and args.compile is not None:
        argv.append("--compile" if args.compile else "--no-compile")
    if torch_flags and args.threads:
        argv.append(f"--threads={args.threads}")
    return argv
