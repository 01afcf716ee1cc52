"""Metric output: JSON lines (`metrics.jsonl`) and TensorBoard event files, from process 0 only.

Each record is appended in one fsynced write and the file is rewritten atomically
(`bertjax.files`), so a crash or a full disk leaves at most a torn last line, which the next run
drops with a warning. TensorBoard events are written in the calling thread with tensorboardX's
`EventsWriter` (one event a record, flushed): no writer thread and no exit hook, so a full disk
is a `files.DiskFull` naming the folder at the write that met it, never a traceback at exit."""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Mapping

import jax
import numpy as np

from bertjax import files


class MetricWriter:
    """Writes scalar metrics per step to `workdir/metrics.jsonl` and TensorBoard events
    (`workdir/tensorboard/events.out.tfevents.*`).

    Other processes than 0 get a writer that writes nothing, so callers need no checks.
    """

    def __init__(self, workdir: str | pathlib.Path, *, filename: str = "metrics.jsonl"):
        self.enabled = jax.process_index() == 0
        self.path = pathlib.Path(workdir) / filename
        self.tensorboard = pathlib.Path(workdir) / "tensorboard"
        self._events = None
        if self.enabled:
            from tensorboardX.event_file_writer import EventsWriter

            self.tensorboard.mkdir(parents=True, exist_ok=True)
            with self._tensorboard_errors():
                self._events = EventsWriter(str(self.tensorboard / "events"))

    def truncate_after(self, step: int) -> None:
        """Drops lines of steps after `step` (left by a run that died after its last checkpoint)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in files.read_jsonl(self.path) if r["step"] <= step]
        files.atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        """Appends one record `{"step": step, **metrics}` and its float scalars to TensorBoard.

        Raises:
          files.DiskFull: the disk is full (naming the file or folder).
          RuntimeError: the writer was closed.
        """
        if not self.enabled:
            return
        if self._events is None:
            raise RuntimeError(f"the metric writer of {self.path.parent} is closed")
        record = {"step": int(step), **{k: _scalar(v) for k, v in metrics.items()}}
        files.append_line(self.path, json.dumps(record))
        from tensorboardX.proto import event_pb2, summary_pb2
        from tensorboardX.summary import scalar

        values = [scalar(k, v).value[0] for k, v in record.items() if isinstance(v, float)]
        event = event_pb2.Event(
            wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)
        )
        with self._tensorboard_errors():
            self._events.write_event(event)
            self._events.flush()

    def close(self) -> None:
        """Flushes and closes the event file; a second call does nothing.

        Raises:
          files.DiskFull: the last flush met a full disk (the records before it are on disk).
        """
        events, self._events = self._events, None
        if events is not None:
            with self._tensorboard_errors():
                events.close()

    def _tensorboard_errors(self):
        return files.named_errors("TensorBoard events", self.tensorboard)


def _scalar(value):
    if isinstance(value, (str, bool, int)):
        return value
    return float(np.asarray(value))
