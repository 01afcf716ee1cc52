"""The training step of two checkouts side by side: a change's before and after, one table.

Runs `train_throughput.py` of this checkout and of `--before` (another checkout, e.g. a
`git worktree` of the commit before the change) with the same flags, each in a fresh process with
its own package, alternating for `--rounds` rounds so a shared machine's load drifts hit both,
and prints the medians and the after/before ratio:

  git worktree add /tmp/before <commit>
  python benchmarks/versions.py --before /tmp/before --config configs/mini.py --batch 32 --rounds 4
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Sequence

try:
    from benchmarks import common
except ImportError:  # run as a script: this folder is on sys.path
    import common

COLUMNS = (
    ("name", "checkout", 0),
    ("step_ms", "step ms (median)", 1),
    ("step_ms_min", "min", 1),
    ("step_ms_max", "max", 1),
    ("seq_per_s", "seq/s", 1),
)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser)
    parser.add_argument("--before", required=True, help="the other checkout's root")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per side")
    args = common.parse_args(parser, argv)
    side = common.side_argv(args, args.batch, torch_flags=False)
    sides = {"before": args.before, "after": common.REPO}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for round_index in range(args.rounds):
        for name, repo in sides.items():
            result = common.run_script("train_throughput.py", side, repo=repo)
            times[name].append(result["step_ms"])
            load = os.getloadavg()[0]
            print(f"round {round_index}: {name} {result['step_ms']:.1f} ms (load {load:.1f})")
    rows = [
        {
            "name": name,
            "step_ms": statistics.median(values),
            "step_ms_min": min(values),
            "step_ms_max": max(values),
            "seq_per_s": 1000.0 * args.batch / statistics.median(values),
        }
        for name, values in times.items()
    ]
    print(common.table(rows, COLUMNS))
    ratio = rows[1]["step_ms"] / rows[0]["step_ms"]
    print(f"after / before step time: {ratio:.3f}")
    return rows


if __name__ == "__main__":
    main()
