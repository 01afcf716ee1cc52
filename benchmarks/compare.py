"""bertjax against the PyTorch peer: training throughput, one table with the ratio.

Runs `train_throughput.py` and `torch_peer.py` with the same flags, each in a fresh process,
alternating for `--rounds` rounds (so slow drifts of a shared machine's load hit both sides),
and prints the medians over rounds with the load average before each measurement:

  python benchmarks/compare.py --config configs/mini.py --batch 32 --seq 128
  python benchmarks/compare.py --config configs/mini.py --sweep 8,16,32 --plot throughput.png

Every other flag (`--dtype`, `--steps`, `--config.model.remat_policy=dots`, ...) goes to both
sides; `--compile/--no-compile` and `--threads` only to the peer. `--in_process` measures both in this process
(quick smoke runs; memory is then the process's shared peak).
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Sequence
from typing import Any

try:
    from benchmarks import common, torch_peer, train_throughput
except ImportError:  # run as a script: this folder is on sys.path
    import common
    import torch_peer
    import train_throughput

SIDES = {"bertjax": "train_throughput.py", "torch": "torch_peer.py"}
COLUMNS = (
    ("name", "side", 0),
    ("batch", "batch", 0),
    ("seq", "seq", 0),
    ("dtype", "dtype", 0),
    ("seq_per_s", "seq/s", 1),
    ("step_ms", "step ms", 1),
    ("tflops_per_device", "TFLOP/s", 3),
    ("mfu_pct", "MFU %", 1),
    ("memory_mib", "memory MiB", 0),
    ("compile_s", "compile s", 1),
    ("ratio", "bertjax/torch", 2),
)


def measure_once(args: argparse.Namespace, batch: int, side: str) -> dict[str, Any]:
    """One measurement of one side: in a fresh process unless `--in_process`."""
    argv = common.side_argv(args, batch, torch_flags=side == "torch")
    if args.in_process:
        module = train_throughput if side == "bertjax" else torch_peer
        result = module.main(argv)
    else:
        result = common.run_script(SIDES[side], argv)
    print(f"  {side} batch={batch}: {result['seq_per_s']:.2f} seq/s, load {result['loadavg']}")
    return result


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The median over rounds of the timing figures; the rest from the first round."""
    row = dict(results[0])
    for key in ("step_ms", "seq_per_s", "tokens_per_s", "tflops_per_device", "compile_s"):
        row[key] = statistics.median(r[key] for r in results)
    row["rounds_seq_per_s"] = [r["seq_per_s"] for r in results]
    row["loadavg_rounds"] = [r["loadavg"] for r in results]
    mfus = [r["mfu"] for r in results if r["mfu"] is not None]
    row["mfu"] = statistics.median(mfus) if mfus else None
    row["mfu_pct"] = None if row["mfu"] is None else 100 * row["mfu"]
    row["memory_mib"] = max(r["peak_memory_bytes"] for r in results) / 2**20
    return row


def compare(args: argparse.Namespace, batch: int) -> list[dict[str, Any]]:
    """Both sides at one batch size, interleaved over rounds; [bertjax row, torch row]."""
    runs = {side: [] for side in SIDES}
    for _ in range(args.rounds):
        for side in SIDES:
            runs[side].append(measure_once(args, batch, side))
    rows = [combine(runs[side]) for side in SIDES]
    ratios = [a["seq_per_s"] / b["seq_per_s"] for a, b in zip(*runs.values(), strict=True)]
    rows[0]["ratio"] = statistics.median(ratios)
    rows[0]["ratio_rounds"] = ratios
    return rows


def plot(rows: list[dict[str, Any]], path: str, title: str) -> None:
    """Sequences/s against batch size for both sides (needs matplotlib)."""
    try:
        import matplotlib
    except ImportError as err:
        raise SystemExit(
            "--plot needs matplotlib: pip install matplotlib (or run without --plot)"
        ) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for side in SIDES:
        mine = sorted((r["batch"], r["seq_per_s"]) for r in rows if r["name"] == side)
        axes.plot(*zip(*mine, strict=True), marker="o", label=side)
    axes.set_xscale("log", base=2)
    axes.set_ylim(bottom=0)
    axes.set_xlabel("batch size (sequences)")
    axes.set_ylabel("training sequences / s")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser)
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurements per side")
    parser.add_argument(
        "--sweep", default="", help="comma-separated batch sizes (replaces --batch)"
    )
    parser.add_argument("--plot", default="", help="save seq/s vs batch size here (matplotlib)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--threads", type=int, default=0, help="the peer's torch threads")
    parser.add_argument("--in_process", action="store_true", help="no subprocesses (smoke runs)")
    return common.parse_args(parser, argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    batches = [int(b) for b in args.sweep.split(",")] if args.sweep else [args.batch]
    load_before = list(os.getloadavg())
    rows = []
    for batch in batches:
        rows += compare(args, batch)
    text = common.table(rows, COLUMNS)
    env = common.environment()
    print(text)
    print(
        f"device {rows[0]['device']} ({rows[0]['platform']}, {env['cpu']}), "
        f"load average before {load_before} after {env['loadavg']}; {env['versions']}"
    )
    result = {"rows": rows, "table": text, "load_before": load_before, **env}
    if args.plot:
        plot(
            rows, args.plot, f"{os.path.basename(args.config)} seq {args.seq}, {rows[0]['device']}"
        )
    if args.json_out:
        common.write_json(args.json_out, result)
    return result


if __name__ == "__main__":
    main()
