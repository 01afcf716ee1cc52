"""Every GPU measurement of the performance goals in one command, with the goals checked.

Cases, in groups sized for one 10-minute call of a lent machine:

  attention    cuDNN vs XLA vs the float32 reference, BERT-base seq 128 and BERT-large seq 512
  base         training step against the PyTorch peer, BERT-base seq 128 (goals: MFU, ratio)
  large128     the same for BERT-large seq 128 (goals: MFU, ratio, compile time), and bertjax
               alone with its layers under nn.scan (compile time)
  large512     BERT-large seq 512, per-device batch 32, remat (goals: it fits, MFU)
  masking      masking's share of the BERT-large seq 128 step
  inference    encoder forward, batch 128, seq 128, against the peer (base and large)
  cudnn        base and large seq 128 with attention dropout 0 and cuDNN flash attention, both
               sides (cuDNN's fused kernel has no dropout on the attention probabilities)

Each case runs in its own process (the frameworks never share a process or the GPU memory), with a
time limit; a case that fails is recorded with its error and the suite goes on. Results are
written to `--out` as suite.json (every figure) and suite.md (one table), printed at the end:

  python benchmarks/gpu_suite.py --out results              # every group
  python benchmarks/gpu_suite.py --groups base,large128     # some groups
  python benchmarks/gpu_suite.py --smoke --out /tmp/suite   # CPU: tiny sizes, checks the plumbing

How to run it on a lent machine (wheels, command) is in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

try:
    from benchmarks import common
except ImportError:  # run as a script: this folder is on sys.path
    import common

CONFIGS = common.REPO / "configs"
TIMING = ["--warmup=3", "--steps=10", "--repeats=3", "--rounds=1"]
NO_ATTENTION_DROPOUT = [
    "--config.model.attention_dropout=0.0",
    "--config.model.attention_impl=cudnn",
]


@dataclasses.dataclass(frozen=True)
class Goal:
    """A target figure: `value(result)` compared with `threshold` (`at_least` or at most)."""

    label: str
    value: Callable[[dict[str, Any]], float | None]
    threshold: float
    at_least: bool = True

    def check(self, result: dict[str, Any]) -> tuple[float | None, bool]:
        value = self.value(result)
        if value is None:
            return None, False
        return value, value >= self.threshold if self.at_least else value <= self.threshold


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    script: str
    argv: tuple[str, ...]
    goals: tuple[Goal, ...] = ()
    timeout_s: float = 540.0


def _bertjax(result):
    return result["rows"][0]


def _side_figure(key: str):
    return lambda result: _bertjax(result).get(key)


MFU = _side_figure("mfu_pct")
RATIO = _side_figure("ratio")
COMPILE = _side_figure("compile_s")


def _train(config: str, batch: int, seq: int, *extra: str) -> tuple[str, ...]:
    return (f"--config={CONFIGS / config}", f"--batch={batch}", f"--seq={seq}", *TIMING, *extra)


GROUPS: dict[str, list[Case]] = {
    "attention": [
        Case(
            "attention, base seq 128",
            "attention_check.py",
            (f"--config={CONFIGS / 'base.py'}", "--batch=16", "--seq=128"),
            (Goal("worst relative error <= 2e-2", lambda r: r["worst"], 2e-2, at_least=False),),
        ),
        Case(
            "attention, large seq 512",
            "attention_check.py",
            (f"--config={CONFIGS / 'large.py'}", "--batch=8", "--seq=512"),
            (Goal("worst relative error <= 2e-2", lambda r: r["worst"], 2e-2, at_least=False),),
        ),
    ],
    "base": [
        Case(
            "train base seq 128 batch 128",
            "compare.py",
            _train("base.py", 128, 128),
            (Goal("MFU >= 45%", MFU, 45.0), Goal("bertjax/torch >= 1.5", RATIO, 1.5)),
        ),
    ],
    "large128": [
        Case(
            "train large seq 128 batch 64",
            "compare.py",
            _train("large.py", 64, 128),
            (
                Goal("MFU >= 50%", MFU, 50.0),
                Goal("bertjax/torch >= 1.5", RATIO, 1.5),
                Goal("compile <= 60 s", COMPILE, 60.0, at_least=False),
            ),
        ),
        Case(
            "train large seq 128 batch 64, layers scanned (bertjax only)",
            "train_throughput.py",
            (
                f"--config={CONFIGS / 'large.py'}",
                "--batch=64",
                "--seq=128",
                *TIMING[:3],
                "--config.model.scan_layers=True",
            ),
            (
                Goal("MFU >= 50%", lambda r: r["mfu"] and 100 * r["mfu"], 50.0),
                Goal("compile <= 60 s", lambda r: r["compile_s"], 60.0, at_least=False),
            ),
        ),
    ],
    "large512": [
        Case(
            "train large seq 512 batch 32, remat dots",
            "compare.py",
            _train(
                "large.py",
                32,
                512,
                "--config.data.max_predictions=80",
                "--config.model.remat_policy=dots",
            ),
            (Goal("MFU >= 45%", MFU, 45.0), Goal("bertjax/torch >= 1.5", RATIO, 1.5)),
        ),
    ],
    "masking": [
        Case(
            "masking share, large seq 128 batch 64",
            "masking_cost.py",
            (f"--config={CONFIGS / 'large.py'}", "--batch=64", "--seq=128", "--iters=10"),
            (
                Goal(
                    "masking < 1% of the step",
                    lambda r: r["mask_alone_share_pct"],
                    1.0,
                    at_least=False,
                ),
            ),
        ),
    ],
    "inference": [
        Case(
            "inference base batch 128 seq 128",
            "inference.py",
            (f"--config={CONFIGS / 'base.py'}", "--batch=128", "--seq=128", *TIMING),
            (Goal("bertjax/torch >= 1.5", RATIO, 1.5),),
        ),
        Case(
            "inference base batch 128 seq 128, cuDNN",
            "inference.py",
            (
                f"--config={CONFIGS / 'base.py'}",
                "--batch=128",
                "--seq=128",
                *TIMING,
                *NO_ATTENTION_DROPOUT,
            ),
            (Goal("bertjax/torch >= 1.5", RATIO, 1.5),),
        ),
        Case(
            "inference large batch 128 seq 128",
            "inference.py",
            (f"--config={CONFIGS / 'large.py'}", "--batch=128", "--seq=128", *TIMING),
            (Goal("bertjax/torch >= 1.5", RATIO, 1.5),),
        ),
    ],
    "cudnn": [
        Case(
            "train base seq 128 batch 128, cuDNN, no attention dropout",
            "compare.py",
            _train("base.py", 128, 128, *NO_ATTENTION_DROPOUT),
            (Goal("MFU >= 45%", MFU, 45.0), Goal("bertjax/torch >= 1.5", RATIO, 1.5)),
        ),
        Case(
            "train large seq 128 batch 64, cuDNN, no attention dropout",
            "compare.py",
            _train("large.py", 64, 128, *NO_ATTENTION_DROPOUT),
            (Goal("MFU >= 50%", MFU, 50.0), Goal("bertjax/torch >= 1.5", RATIO, 1.5)),
        ),
    ],
}

# --smoke: tiny sizes for a CPU, so CI exercises every script and flag the suite passes.
SMOKE_FLAGS = {
    "--batch": "8",
    "--seq": "32",
    "--warmup": "1",
    "--steps": "1",
    "--repeats": "1",
    "--iters": "1",
}


SMOKE_DROPS = ("--config.model.attention_impl", "--config.data.max_predictions")
SMOKE_ADDS = {"compare.py": ("--in_process",)}  # both sides in the case's own process


def smoke_argv(argv: Sequence[str], script: str = "") -> list[str]:
    """The case's flags with a tiny config and sizes (no cuDNN on a CPU; default predictions)."""
    out = []
    for item in argv:
        flag = item.split("=", 1)[0]
        if flag == "--config":
            out.append(f"--config={CONFIGS / 'tiny.py'}")
        elif flag in SMOKE_FLAGS:
            out.append(f"{flag}={SMOKE_FLAGS[flag]}")
        elif flag not in SMOKE_DROPS:
            out.append(item)
    return out + list(SMOKE_ADDS.get(script, ()))


def summary(script: str, result: dict[str, Any]) -> str:
    """The case's headline figures, in words."""
    if script == "attention_check.py":
        return "; ".join(
            f"{impl}: out {e['out']:.1e}, dq {e['dq']:.1e}, model {e['model']:.1e}"
            for impl, e in result["impls"].items()
        )
    if script == "masking_cost.py":
        return (
            f"masking alone {result['mask_alone_ms']:.2f} ms of a "
            f"{result['step_with_masking_ms']:.1f} ms step ({result['mask_alone_share_pct']:.2f}%)"
        )
    if script == "train_throughput.py":
        mfu = "" if result["mfu"] is None else f", MFU {100 * result['mfu']:.1f}%"
        return (
            f"bertjax {result['seq_per_s']:.1f} seq/s{mfu}, "
            f"{result['peak_memory_bytes'] / 2**20:.0f} MiB, compile {result['compile_s']:.1f} s"
        )
    mine, peer = result["rows"]

    def side(row):
        mfu = "" if row.get("mfu_pct") is None else f", MFU {row['mfu_pct']:.1f}%"
        return f"{row['seq_per_s']:.1f} seq/s{mfu}, {row['memory_mib']:.0f} MiB"

    return (
        f"bertjax {side(mine)}, compile {mine['compile_s']:.1f} s; torch {side(peer)}; "
        f"ratio {mine['ratio']:.2f}"
    )


def run_case(case: Case, smoke: bool, done: dict | None = None) -> dict[str, Any]:
    """Runs one case; `done` ({(script, argv): result}) shares a run between cases whose
    flags are the same (the smoke sizes make some of them so)."""
    argv = smoke_argv(case.argv, case.script) if smoke else list(case.argv)
    started = time.perf_counter()
    record: dict[str, Any] = {"case": case.name, "script": case.script, "argv": argv}
    key, done = (case.script, tuple(argv)), {} if done is None else done
    try:
        if key not in done:
            done[key] = common.run_script(case.script, argv, timeout=case.timeout_s)
        result = done[key]
    except Exception as err:  # a failed case is a result too: recorded, and the suite goes on
        record.update(status="failed", error=str(err)[-2000:])
        print(f"FAILED {case.name}: {str(err)[-600:]}")
        return record
    record.update(status="ok", result=result, summary=summary(case.script, result))
    record["goals"] = [
        {"goal": g.label, "value": value, "met": met}
        for g in case.goals
        for value, met in [g.check(result)]
    ]
    record["seconds"] = time.perf_counter() - started
    print(f"{case.name}: {record['summary']} ({record['seconds']:.0f} s)")
    return record


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "?"


def goal_text(goal: dict[str, Any]) -> str:
    value = "-" if goal["value"] is None else f"{goal['value']:.3g}"
    return f"{goal['goal']}: {value}, {'met' if goal['met'] else 'NOT met'}"


def markdown(records: Sequence[dict[str, Any]], env: dict[str, Any]) -> str:
    lines = [
        f"Device: {env.get('device', '?')}; {env.get('versions', {})}",
        "",
        "| case | figures | goals |",
        "|---|---|---|",
    ]
    for rec in records:
        if rec["status"] != "ok":
            lines.append(f"| {rec['case']} | failed: {last_line(rec['error'])} | |")
            continue
        goals = "; ".join(goal_text(g) for g in rec["goals"])
        lines.append(f"| {rec['case']} | {rec['summary']} | {goals} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--groups", default=",".join(GROUPS), help=f"comma-separated: {list(GROUPS)}"
    )
    parser.add_argument("--out", default="", help="folder for suite.json and suite.md")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (a CPU plumbing check)")
    args = parser.parse_args(argv)
    names = [name for name in args.groups.split(",") if name]
    unknown = sorted(set(names) - set(GROUPS))
    if unknown:
        parser.error(f"--groups: unknown {unknown}; known: {list(GROUPS)}")
    done: dict = {}
    records = [run_case(case, args.smoke, done) for name in names for case in GROUPS[name]]
    env = next((r["result"] for r in records if r["status"] == "ok"), {})
    env = {
        "device": env.get("device") or env.get("rows", [{}])[0].get("device"),
        "versions": env.get("versions", {}),
    }
    text = markdown(records, env)
    print(text)
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "suite.json").write_text(
            json.dumps({"env": env, "cases": records}, indent=1, default=str)
        )
        (out / "suite.md").write_text(text + "\n")
    return records


if __name__ == "__main__":
    main()
