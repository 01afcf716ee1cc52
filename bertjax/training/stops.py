"""How a run stops on purpose, for every job: divergence, preemption, Ctrl-C and the watchdog.

Steps with a non-finite loss or gradient are skipped inside the step; `BadStepGuard` stops the
loop (`Diverged`) after `train.max_bad_steps` of them in a row, and `check_finite_params` keeps
non-finite parameters from ever being saved. `Preemption` turns SIGTERM (and Ctrl-C, SIGINT:
`Interrupted`) into a checkpoint of the current step and a stop (`Preempted`). `Watchdog`
(`train.watchdog_seconds`) logs every thread's stack and exits when no step completes. The
command returns `TrainingStopped.exit_code` (the `EXIT_*` constants below).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable

import jax
import jax.numpy as jnp

from bertjax.training.step import TrainState

log = logging.getLogger(__name__)

EXIT_DIVERGED = 3  # config.train.max_bad_steps non-finite steps in a row; the last good checkpoint
EXIT_STUCK = 4  # the watchdog: no step completed for config.train.watchdog_seconds
EXIT_PREEMPTED = 143  # 128 + SIGTERM: a checkpoint of the current step was saved; rerun to resume
EXIT_INTERRUPTED = 130  # 128 + SIGINT (Ctrl-C): the same save and stop as SIGTERM


class TrainingStopped(RuntimeError):
    """The loop stopped on purpose; `exit_code` is the command's exit status."""

    exit_code = 1


class Diverged(TrainingStopped):
    """Too many consecutive steps with a non-finite loss or gradient (or non-finite parameters)."""

    exit_code = EXIT_DIVERGED


class Preempted(TrainingStopped):
    """SIGTERM: the current step was checkpointed and the loop stopped."""

    exit_code = EXIT_PREEMPTED


class Interrupted(Preempted):
    """SIGINT (Ctrl-C): the current step was checkpointed and the loop stopped."""

    exit_code = EXIT_INTERRUPTED


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]))


def check_finite_params(state: TrainState, what: str) -> None:
    """Raises `Diverged` naming the step when a parameter of `state` is NaN or infinite."""
    if not bool(_all_finite(state.params)):
        raise Diverged(f"{what}: the parameters at step {int(state.step)} are not finite")


class BadStepGuard:
    """Counts consecutive skipped steps from the per-step `skipped_steps` flags, fetched only
    where the loop syncs anyway (log windows, evaluations, checkpoints).

    Attributes:
      run: skipped steps in a row up to the last checked step.
    """

    def __init__(
        self, max_bad_steps: int, latest_checkpoint: Callable[[], int | None] | None = None
    ):
        self.max_bad_steps = int(max_bad_steps)
        self.latest_checkpoint = latest_checkpoint or (lambda: None)
        self.pending: list[tuple[int, jax.Array]] = []
        self.run = 0

    def add(self, step: int, skipped: jax.Array) -> None:
        self.pending.append((step, skipped))

    def check(self) -> None:
        """Fetches the pending flags; raises `Diverged` naming the step of the last allowed."""
        flags = jax.device_get([flag for _, flag in self.pending])
        for (step, _), flag in zip(self.pending, flags, strict=True):
            self.run = self.run + 1 if flag else 0
            if flag:
                log.warning("step %d: non-finite loss or gradient; update skipped", step)
            if self.max_bad_steps and self.run >= self.max_bad_steps:
                raise Diverged(
                    f"training diverged: steps {step - self.run + 1}..{step} ({self.run} in a "
                    f"row, config.train.max_bad_steps={self.max_bad_steps}) had a non-finite "
                    f"loss or gradient, stopped at step {step}; {self._kept()}: lower "
                    "config.optim.learning_rate and rerun"
                )
        self.pending = []

    def _kept(self) -> str:
        latest = self.latest_checkpoint()
        if latest is None:
            return "no checkpoint was saved before (the rerun starts from the beginning)"
        return f"the checkpoint of step {latest} holds the last good parameters"


class Preemption:
    """SIGTERM (a preemption notice) or SIGINT (Ctrl-C) to a stop at an agreed step.

    One process: a handler of both signals sets a flag, read after each step; a second SIGINT
    exits at once with `EXIT_INTERRUPTED`, saving nothing. Several processes: JAX's preemption
    service (started by `jax.distributed.initialize`) catches SIGTERM and
    `CheckpointManager.reached_preemption(step)` is True in every process at the same step.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, manager):
        self.manager, self.flag, self.previous = manager, None, {}

    def __enter__(self) -> Preemption:
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.flag == signal.SIGINT:
            print("\nsecond Ctrl-C: quitting now, without saving", file=sys.stderr, flush=True)
            os._exit(EXIT_INTERRUPTED)
        if signum == signal.SIGINT:
            print(
                "\nCtrl-C: saving a checkpoint of the current step, then stopping "
                "(Ctrl-C again quits at once, without saving)",
                file=sys.stderr,
                flush=True,
            )
        self.flag = signum

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            return self.manager.reached_preemption(step)
        return self.flag is not None

    def stopped(self, step: int, directory) -> Preempted:
        """The exception that ends the run at `step` (its checkpoint is in `directory`)."""
        interrupted = self.flag == signal.SIGINT
        name = "SIGINT (Ctrl-C)" if interrupted else "SIGTERM"
        return (Interrupted if interrupted else Preempted)(
            f"stopped by {name} at step {step}; its checkpoint is in {directory}: rerun the "
            "same command to resume"
        )

    def __exit__(self, *exc) -> None:
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)


class Watchdog:
    """When no step completes for `seconds` (0: off), logs the Python stack of every thread and
    exits the process with `EXIT_STUCK` (a stuck collective, reader or device never returns)."""

    def __init__(self, seconds: float):
        self.seconds, self.step, self.last = float(seconds), None, time.monotonic()
        self.stop = threading.Event()

    def __enter__(self) -> Watchdog:
        if self.seconds > 0:
            self.last = time.monotonic()
            threading.Thread(target=self._watch, name="bertjax-watchdog", daemon=True).start()
        return self

    def pet(self, step: int) -> None:
        self.step, self.last = step, time.monotonic()

    def _watch(self) -> None:
        while not self.stop.wait(min(1.0, self.seconds / 4)):
            if time.monotonic() - self.last > self.seconds:
                names = {t.ident: t.name for t in threading.enumerate()}
                stacks = "".join(
                    f"\nthread {names.get(ident, ident)}:\n" + "".join(traceback.format_stack(f))
                    for ident, f in sys._current_frames().items()
                )
                after = "the start" if self.step is None else f"step {self.step}"
                log.error(
                    "watchdog: no step completed for %.0f s (config.train.watchdog_seconds) "
                    "after %s; exiting with status %d. Stacks:%s",
                    self.seconds,
                    after,
                    EXIT_STUCK,
                    stacks,
                )
                logging.shutdown()
                os._exit(EXIT_STUCK)

    def __exit__(self, *exc) -> None:
        self.stop.set()
