"""Profiler traces of chosen training steps (`config.train.profile_steps`).

`"A:B"` traces steps A through B (the step numbers of metrics.jsonl; `"A"`: step A alone) with
`jax.profiler` into `workdir/tensorboard/plugins/profile/<time>/<host>.xplane.pb`, where
TensorBoard's profile plugin (`tensorboard-plugin-profile`, or XProf) reads it: open
`tensorboard --logdir WORKDIR/tensorboard` and the PROFILE tab. Pick steps after the first (which
compiles). Every process traces its own devices. The trace waits for the last traced step to
finish, the one host sync it adds.
"""

from __future__ import annotations

import logging
import pathlib

import jax

log = logging.getLogger(__name__)


def parse_steps(spec: str) -> tuple[int, int] | None:
    """`"A:B"` or `"A"` -> (A, B) with 1 <= A <= B; "" -> None.

    Raises:
      ValueError: naming `config.train.profile_steps`.
    """
    if not spec:
        return None
    parts = spec.split(":")
    try:
        first, last = int(parts[0]), int(parts[-1])
    except ValueError:
        first = last = 0
    if len(parts) > 2 or not 1 <= first <= last:
        raise ValueError(
            f"config.train.profile_steps={spec!r}: expected 'A:B' (steps A to B, 1 <= A <= B) "
            "or 'A', e.g. '5:7'"
        )
    return first, last


class StepProfiler:
    """Starts a trace before the first chosen step and stops it after the last one."""

    def __init__(self, spec: str, workdir: pathlib.Path):
        self.steps = parse_steps(spec)
        self.logdir = pathlib.Path(workdir) / "tensorboard"
        self.active = False

    def before(self, step: int) -> None:
        """Called before dispatching step `step` (the state then has step - 1)."""
        if self.steps is not None and step == self.steps[0]:
            jax.profiler.start_trace(str(self.logdir))
            self.active = True

    def after(self, step: int, state) -> None:
        """Called after dispatching step `step`; the trace ends when its results are ready."""
        if self.active and step >= self.steps[1]:
            jax.block_until_ready(state)
            self.stop()

    def __enter__(self) -> StepProfiler:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()  # a run that ended (or failed) inside the traced steps

    def stop(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
            log.info("profile of steps %d..%d written to %s", *self.steps, self.logdir)
