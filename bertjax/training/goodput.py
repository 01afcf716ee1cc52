"""Goodput: where the wall time of a training workdir went, over every run (restart) of it.

Each run's wall time, from the process start to the end of its training loop, is split into
`CATEGORIES` (seconds):

- startup: process start (or the end of the previous job's loop in the same process) to the
  first step, less checkpoint restore (imports, distributed
  initialisation, data preparation, tokenizer, model init);
- compile: the first train-step call of a run (tracing and XLA compilation; it returns before the
  step runs on the device);
- data_wait: the loop waiting for its next batch (host input pipeline and host-to-device copy);
- train: the rest of the loop, the training steps that are kept;
- eval: evaluations (their first call compiles the eval step);
- checkpoint_save: the blocking part of saves (async writes overlap training) and the final wait;
- checkpoint_restore: reading the checkpoint a run resumes from;
- lost: training steps a later run trained again (the steps after the last checkpoint of a run
  that died), at the mean step time of the runs before.

`goodput = train / wall`, the share of wall time that became kept training progress. The totals
live in `workdir/goodput.json`, rewritten at every log window (after the loop's own host sync:
no sync is added), so a run killed with SIGKILL counts up to its last log window. Timing is the
host clock around host calls; the device work of asynchronously dispatched steps lands in the
category of the host call that waits for it (usually train, at the log window's fetch).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import time
from collections.abc import Callable, Iterator

import jax

from bertjax import files

log = logging.getLogger(__name__)

FILENAME = "goodput.json"
CATEGORIES = (
    "startup",
    "compile",
    "data_wait",
    "train",
    "eval",
    "checkpoint_save",
    "checkpoint_restore",
    "lost",
)
MEASURED = ("compile", "data_wait", "eval", "checkpoint_save", "checkpoint_restore")


def process_start_time() -> float:
    """The Unix time this process started (Linux: /proc; elsewhere: when this module loaded)."""
    try:
        ticks = int(pathlib.Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in pathlib.Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


_IMPORTED = time.time()
_ENDED = [0.0]  # when the last training loop of this process ended (a second job in one process)


class Goodput:
    """This run's timeline plus the totals of the workdir's earlier runs."""

    def __init__(self, workdir: pathlib.Path):
        self.path = pathlib.Path(workdir) / FILENAME
        self.started = max(process_start_time(), _ENDED[0])
        saved = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.before = {c: float(saved.get("seconds", {}).get(c, 0.0)) for c in CATEGORIES}
        self.runs = int(saved.get("runs", 0)) + 1
        self.max_step = int(saved.get("max_step", 0))
        self.steps_before = int(saved.get("steps_trained", 0))
        self.lost_steps = int(saved.get("lost_steps", 0))
        self.seconds = dict.fromkeys(MEASURED, 0.0)
        self.first_step = self.loop_started = None

    @contextlib.contextmanager
    def timed(self, category: str) -> Iterator[None]:
        """Adds the time of the block to `category` (one of `MEASURED`)."""
        start = time.time()
        try:
            yield
        finally:
            self.seconds[category] += time.time() - start

    def resumed(self, step: int) -> None:
        """The run starts at `step`: steps of earlier runs past it were lost (trained again)."""
        self.first_step = step
        lost = max(0, self.max_step - step)
        if lost and self.steps_before:
            seconds = lost * self.before["train"] / self.steps_before
            self.before["train"] -= seconds
            self.before["lost"] += seconds
            self.lost_steps += lost
            log.info("%d steps after the checkpoint of step %d are trained again", lost, step)

    def loop(self, train_step: Callable, batches: Iterator) -> tuple[Callable, Iterator]:
        """Starts the loop's clock; returns the step (its first call timed as compile) and the
        batches (their wait timed as data_wait)."""
        self.loop_started = time.time()
        calls = 0

        def step(*args):
            nonlocal calls
            calls += 1
            if calls > 1:
                return train_step(*args)
            with self.timed("compile"):
                return train_step(*args)

        def timed_batches():
            while True:
                with self.timed("data_wait"):
                    batch = next(batches)
                yield batch

        return step, timed_batches()

    def totals(self, step: int) -> dict[str, float]:
        """The workdir's totals with this run up to now (at `step`): `CATEGORIES` seconds, wall
        seconds, goodput, runs, steps trained and lost."""
        now = time.time()
        run = {c: self.seconds.get(c, 0.0) for c in CATEGORIES}
        loop_start = self.loop_started or now
        run["startup"] = loop_start - self.started - run["checkpoint_restore"]
        in_loop = sum(run[c] for c in ("compile", "data_wait", "eval", "checkpoint_save"))
        run["train"] = max(0.0, now - loop_start - in_loop)
        seconds = {c: self.before[c] + run[c] for c in CATEGORIES}
        wall = sum(seconds.values())
        self.max_step = max(self.max_step, step)
        return {
            "seconds": seconds,
            "wall_seconds": wall,
            "goodput": seconds["train"] / wall if wall > 0 else 0.0,
            "runs": self.runs,
            "steps_trained": self.steps_before + step - (self.first_step or 0),
            "lost_steps": self.lost_steps,
            "max_step": self.max_step,
        }

    def record(self, step: int, *, end: bool = False) -> dict[str, float]:
        """Saves the totals at `step` to the workdir; returns them flat for metrics.jsonl.
        `end`: the run's loop is over (a later job in this process starts its clock here)."""
        totals = self.totals(step)
        if end:
            _ENDED[0] = time.time()
        if jax.process_index() == 0:
            files.atomic_write_text(self.path, json.dumps(totals, indent=1))
        flat = {f"goodput_{c}_seconds": v for c, v in totals["seconds"].items()}
        flat.update({f"goodput_{k}": totals[k] for k in ("wall_seconds", "runs", "lost_steps")})
        flat["goodput"] = totals["goodput"]
        return flat

    def summary_line(self, flat: dict[str, float]) -> str:
        """One line for the log: goodput and the seconds per category."""
        parts = ", ".join(
            f"{c} {flat[f'goodput_{c}_seconds']:.1f}"
            for c in CATEGORIES
            if flat[f"goodput_{c}_seconds"] > 0.05
        )
        return (
            f"goodput {100 * flat['goodput']:.1f}% of {flat['goodput_wall_seconds']:.1f} s over "
            f"{flat['goodput_runs']} run(s), {flat['goodput_lost_steps']} steps trained again "
            f"(seconds: {parts})"
        )
