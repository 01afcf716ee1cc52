"""What a training command tells its user: the workdir's text log, the end summary, the notes
repeated there, and the held-out evaluation lines with the overfitting check.

`run_job(command, job, config, workdir, summary)` (the workdir a folder or a bucket URL) wraps `bertjax pretrain` and `bertjax finetune`:
every log record of the run (and the end summary, or the reason it stopped) is appended, with
its time, to `WORKDIR/log.txt` (kept across reruns, beside `metrics.jsonl`); records logged with
`extra={"summary": True}` (overfitting) are repeated under the end summary. A workdir the run
created and failed in before any work (holding only this log) is removed by the job's start
(`training.workdir.abandon`), for the command line and the Python API alike.
"""

from __future__ import annotations

import logging
import math
import pathlib
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax

from bertjax import storage
from bertjax.training import distributed
from bertjax.training import workdir as workdir_lock
from bertjax.training.workdir import LOG_NAME

log = logging.getLogger(__name__)


class WorkdirLog(logging.Handler):
    """Appends every record, with its UTC time, to `workdir/log.txt`; records arriving before
    the workdir exists are kept and written with the first record after it does."""

    def __init__(self, workdir: pathlib.Path):
        super().__init__(logging.INFO)
        self.path = workdir / LOG_NAME
        self.pending: list[str] = []
        self.notes: list[str] = []  # messages of records marked summary=True
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.formatter.converter = time.gmtime

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "summary", False):
            self.notes.append(record.getMessage())
        self.write(self.format(record))

    def write(self, text: str) -> None:
        """Appends `text` (one or more lines) once the workdir exists; keeps it until then, and
        while the disk is full (a record of orbax's writer thread must not raise there)."""
        self.pending.append(text)
        if not self.path.parent.is_dir():
            return
        try:
            with self.path.open("a", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in self.pending))
        except OSError:  # the run itself meets the full disk and says so in one line
            return
        self.pending = []

    def echo(self, text: str, *, file=None) -> None:
        """Prints `text` (stdout by default) and appends it to the log with the time."""
        print(text, file=file or sys.stdout, flush=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        self.write("\n".join(f"{stamp} {line}" for line in text.splitlines()))


def run_job(
    command: str,
    job: Callable[[Any, pathlib.Path], Mapping[str, float]],
    config: Any,
    workdir: str | pathlib.Path,
    summary: Callable[[Mapping[str, float]], str],
) -> int:
    """Runs `job(config, workdir)` with the workdir's log attached; prints `summary(metrics)`
    (on the primary process) with the notes below it. A run stopped on purpose
    (`TrainingStopped`) prints its reason as the last line, records it in the log and returns
    its exit status; other errors propagate (the CLI reports them). A `gs://` or `s3://` workdir
    runs in its local staging folder, mirrored to the bucket (`training.workdir.staged`)."""
    index, count = 0, 1
    if storage.is_remote(workdir):  # the mirror needs to know which process writes the bucket
        distributed.initialize(config.distributed)
        index, count = jax.process_index(), jax.process_count()
    with workdir_lock.staged(workdir, index, count) as local:
        return _run_job(command, job, config, local, summary)


def _run_job(command, job, config, workdir: pathlib.Path, summary) -> int:
    url = storage.staged_url(workdir)  # a bucket workdir's URL, named in place of its staging
    handler = WorkdirLog(workdir)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        metrics = job(config, workdir)
        if jax.process_index() == 0:  # one summary per job (asked after the job: the
            # processes join inside it, and nothing may touch a device before)
            text = summary(metrics)
            if handler.notes:
                text += "\nNotes:\n" + "\n".join(f"  {note}" for note in handler.notes)
            handler.echo(text)
        return 0
    except RuntimeError as err:
        if not hasattr(err, "exit_code"):  # not a TrainingStopped
            raise
        message = str(err) if url is None else str(err).replace(str(workdir), url)
        handler.echo(f"bertjax {command}: stopped: {message}", file=sys.stderr)
        return int(err.exit_code)
    except Exception as err:
        handler.write(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} error: {err}")
        raise
    finally:
        root.removeHandler(handler)


def eval_line(step: int, metrics: Mapping[str, float]) -> str:
    """One terminal line for one evaluation: `eval step 200: loss 1.23, mlm accuracy 0.45`."""
    shown = ", ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in metrics.items())
    return f"eval step {step}: {shown}"


class OverfitWatch:
    """Reports a held-out loss that rose over `rises` consecutive evaluations while the matching
    training loss (the same name, else `loss`) fell over them.

    Attributes:
      history: (step, held-out metrics, training metrics) of each evaluation.
    """

    def __init__(self, rises: int = 2):
        self.rises = rises
        self.history: list[tuple[int, Mapping[str, float], Mapping[str, float]]] = []
        self.reported: set[str] = set()

    def add(self, step: int, held_out: Mapping[str, float], train: Mapping[str, float]) -> list:
        """Records one evaluation; returns the new overfitting messages (each loss once)."""
        self.history.append((step, dict(held_out), dict(train)))
        recent = self.history[-(self.rises + 1) :]
        if len(recent) <= self.rises:
            return []
        messages = []
        for name in held_out:
            train_name = name if name in train else "loss"
            if not name.endswith("loss") or name in self.reported or train_name not in train:
                continue
            held = [h.get(name, math.nan) for _, h, _ in recent]
            trained = [t.get(train_name, math.nan) for _, _, t in recent]
            if _rising(held) and _rising([-x for x in trained]):
                self.reported.add(name)
                messages.append(
                    f"overfitting: held-out {name} rose "
                    + " -> ".join(f"{x:.3g}" for x in held)
                    + f" over steps {recent[0][0]}..{recent[-1][0]} while the training "
                    f"{train_name} fell " + " -> ".join(f"{x:.3g}" for x in trained)
                )
        return messages


def _rising(values: list[float]) -> bool:
    return all(b > a for a, b in zip(values, values[1:], strict=False))
