"""Metric output: JSON lines (`metrics.jsonl`) and TensorBoard event files, from process 0 only.

Each record is appended in one fsynced write and the file is rewritten atomically
(`bertjax.files`), so a crash or a full disk leaves at most a torn last line, which the next run
drops with a warning."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping

import jax
import numpy as np

from bertjax import files


class MetricWriter:
    """Writes scalar metrics per step to `workdir/metrics.jsonl` and TensorBoard events.

    Other processes than 0 get a writer that writes nothing, so callers need no checks.
    """

    def __init__(self, workdir: str | pathlib.Path, *, filename: str = "metrics.jsonl"):
        self.enabled = jax.process_index() == 0
        self.path = pathlib.Path(workdir) / filename
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drops lines of steps after `step` (left by a run that died after its last checkpoint)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in files.read_jsonl(self.path) if r["step"] <= step]
        files.atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        """Appends one record `{"step": step, **metrics}` and the same scalars to TensorBoard."""
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _scalar(v) for k, v in metrics.items()}}
        files.append_line(self.path, json.dumps(record))
        for name, value in record.items():
            if name != "step" and isinstance(value, float):
                self._tb.add_scalar(name, value, int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()


def _scalar(value):
    if isinstance(value, (str, bool, int)):
        return value
    return float(np.asarray(value))
