"""Early stop: end training when an evaluation metric reaches a target or stops improving.

`config.train.early_stop` names a metric of the job's evaluation (`mlm_accuracy` for BERT
pretraining, `accuracy` or `f1` for a task), a `target` (MLPerf stops BERT at masked-LM accuracy
0.720), the `mode` ("max": higher is better) and a `patience` (stop after that many evaluations
without a new best; 0: never). The history of evaluations lives in `workdir/early_stop.json`, so a
resumed run keeps counting where the checkpoint it resumes from left off (evaluations after that
checkpoint are dropped), and rerunning a run that stopped early trains no further.
"""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Mapping

import jax
import ml_collections

log = logging.getLogger(__name__)

FILENAME = "early_stop.json"
MODES = ("max", "min")


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises a ValueError naming the `config.train.early_stop` field that is invalid."""
    early = config.train.early_stop
    if early.mode not in MODES:
        raise ValueError(f"config.train.early_stop.mode={early.mode!r}: allowed {MODES}")
    if early.patience < 0:
        raise ValueError(f"config.train.early_stop.patience={early.patience} must be >= 0")
    if not early.metric and (early.target is not None or early.patience):
        raise ValueError(
            "config.train.early_stop.target and .patience need config.train.early_stop.metric "
            "(a key of the job's evaluation, e.g. mlm_accuracy)"
        )
    if early.metric and early.target is None and not early.patience:
        raise ValueError(
            f"config.train.early_stop.metric={early.metric!r} needs a target "
            "(config.train.early_stop.target) or a patience (config.train.early_stop.patience)"
        )


class EarlyStop:
    """The early-stop decision after each evaluation, with its history in the workdir.

    Attributes:
      history: `{"step", "value", "seconds"}` per evaluation so far (all runs of the workdir).
      stopped: the reason the run stopped ("" while it runs on).
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: pathlib.Path, step: int):
        early = config.train.early_stop
        self.metric, self.target, self.mode = early.metric, early.target, early.mode
        self.patience = int(early.patience)
        self.path = pathlib.Path(workdir) / FILENAME
        saved = json.loads(self.path.read_text()) if self.metric and self.path.exists() else {}
        # evaluations after the restored checkpoint were made by a run that died: redone
        self.history = [e for e in saved.get("history", []) if e["step"] <= step]
        self.stopped = saved.get("stopped", "") if saved.get("stopped_step") == step else ""

    @property
    def enabled(self) -> bool:
        return bool(self.metric)

    def _better(self, value: float, than: float) -> bool:
        return value > than if self.mode == "max" else value < than

    def _reaches(self, value: float) -> bool:
        return self.target is not None and not self._better(self.target, value)

    def update(self, step: int, metrics: Mapping[str, float], seconds: float) -> bool:
        """Records the evaluation of `step` (made `seconds` into the run); True: stop here.

        Raises:
          ValueError: the metric is not one of the evaluation's (naming the config field).
        """
        if not self.enabled:
            return False
        if self.metric not in metrics:
            raise ValueError(
                f"config.train.early_stop.metric={self.metric!r} is not an evaluation metric "
                f"of this job: {sorted(metrics)}"
            )
        value = float(metrics[self.metric])
        self.history.append({"step": int(step), "value": value, "seconds": float(seconds)})
        if self._reaches(value):
            self.stopped = f"{self.metric}={value:.4f} reached the target {self.target}"
        elif self.patience and self.evaluations_since_best() >= self.patience:
            self.stopped = (
                f"{self.metric} did not improve for {self.patience} evaluations "
                "(config.train.early_stop.patience)"
            )
        self._write(step)
        if self.stopped:
            log.info("early stop at step %d: %s", step, self.stopped)
        return bool(self.stopped)

    def evaluations_since_best(self) -> int:
        """Evaluations after the best one so far (0: the last one is the best)."""
        best = 0
        for index, entry in enumerate(self.history):
            if self._better(entry["value"], self.history[best]["value"]):
                best = index
        return len(self.history) - 1 - best

    def summary(self) -> dict[str, float | int | str]:
        """The final metrics' early-stop fields: when the target was first reached (step and
        seconds of the run's accounted time), and where and why the run stopped early."""
        if not self.enabled:
            return {}
        out: dict[str, float | int | str] = {}
        reached = next((e for e in self.history if self._reaches(e["value"])), None)
        if reached is not None:
            out["target_reached_step"] = reached["step"]
            out["target_reached_seconds"] = reached["seconds"]
        if self.stopped:
            out["early_stop_step"] = self.history[-1]["step"]
            out["early_stop_reason"] = self.stopped
        return out

    def _write(self, step: int) -> None:
        if jax.process_index() != 0:
            return
        saved = {"metric": self.metric, "history": self.history, "stopped": self.stopped}
        saved["stopped_step"] = step if self.stopped else None
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(saved, indent=1))
        tmp.replace(self.path)
