"""The one training loop: `train(trainer)` runs a built `Trainer` to `num_steps`.

The progress bar, summed metrics per log window (`metrics.jsonl`, TensorBoard), TFLOP/s and
MFU, device prefetch, evaluation every `train.eval_every` steps (the job's `evaluate` hook; one
log line each, overfitting reported by `run_log.OverfitWatch`), early stop
(`training.early_stop`), checkpoints every `checkpoint.every_steps`, the goodput record
(`training.goodput`) and the stops of `training.stops`. Every feature here serves every job.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from bertjax import sharding
from bertjax.training import checkpoints, early_stop, flops, profiling, run_log
from bertjax.training.stops import BadStepGuard, Preemption, Watchdog, check_finite_params

if TYPE_CHECKING:
    from bertjax.training.trainer import Trainer

log = logging.getLogger(__name__)


def train(trainer: Trainer, *, desc: str = "train") -> dict[str, float]:
    """Runs from the current step to `trainer.num_steps`; returns the last metrics.

    Log records go above the progress bar, which is closed before any exception leaves, so the
    reason a run stopped is the last line on the terminal.

    Raises:
      Diverged: `config.train.max_bad_steps` consecutive skipped (non-finite) steps.
      Preempted: SIGTERM (`Interrupted`: SIGINT); the current step was checkpointed first.
    """
    step = int(trainer.state.step)
    bar = tqdm(
        total=trainer.num_steps,
        initial=step,
        disable=jax.process_index() != 0,
        desc=desc,
        dynamic_ncols=True,
    )
    try:
        with logging_redirect_tqdm():
            return _loop(trainer, bar, step)
    finally:
        bar.close()


def _loop(trainer: Trainer, bar, step: int) -> dict[str, float]:
    config = trainer.config
    num_steps, log_every = trainer.num_steps, config.train.log_every
    guard = BadStepGuard(config.train.max_bad_steps, trainer.manager.latest_step)
    watch = run_log.OverfitWatch()
    stopper = early_stop.EarlyStop(config, trainer.workdir, step)
    if stopper.stopped:  # a rerun of a run that stopped early: nothing more to train
        log.info("stopped early at step %d (%s); evaluating only", step, stopper.stopped)
        evaluated = {f"eval_{k}": v for k, v in trainer.evaluate(trainer).items()}
        return {**evaluated, **stopper.summary()}
    window, last, started = [], {}, time.perf_counter()
    timeline = trainer.goodput
    train_step, batches = timeline.loop(
        trainer.steps.train_step, _prefetch(trainer, config.data.prefetch)
    )
    profiler = profiling.StepProfiler(config.train.profile_steps, trainer.workdir)
    with (
        Preemption(trainer.manager) as preemption,
        Watchdog(config.train.watchdog_seconds) as dog,
        profiler,
    ):
        while step < num_steps:
            profiler.before(step + 1)
            trainer.state, metrics = train_step(trainer.state, next(batches))
            step += 1
            profiler.after(step, trainer.state)
            dog.pet(step)
            window.append(metrics)
            guard.add(step, metrics["skipped_steps"])
            if step % log_every == 0 or step == num_steps:
                last = _log_window(trainer, window, started)
                trainer.writer.write(step, {**last, **timeline.record(step)})
                guard.check()
                bar.set_postfix(_postfix(last))
                bar.update(len(window))
                window, started = [], time.perf_counter()
            evaluated = _maybe_evaluate_and_save(trainer, step, guard)
            checkpoints.check_saves(trainer.manager)
            if evaluated:
                _report_eval(step, evaluated, last, watch)
                last.update(evaluated)
                evaluation = {k.removeprefix("eval_"): v for k, v in evaluated.items()}
                if stopper.update(step, evaluation, timeline.totals(step)["wall_seconds"]):
                    _stop_early(trainer, step, guard, window, started, stopper)
                    break
                started = time.perf_counter()
            dog.pet(step)
            if step < num_steps and preemption.reached(step):
                if window:  # the partial log window, so the record ends at the saved step
                    trainer.writer.write(step, _log_window(trainer, window, started))
                if trainer.manager.latest_step() != step:
                    _save(trainer, step, guard, None)
                checkpoints.wait_for_saves(trainer.manager)
                trainer.writer.write(step, timeline.record(step, end=True))
                raise preemption.stopped(step, trainer.manager.directory)
    return {**last, **stopper.summary(), **_finish(trainer, step)}


def _finish(trainer: Trainer, step: int) -> dict[str, float]:
    """Waits for the last checkpoint write; records and logs the goodput totals at `step`."""
    with trainer.goodput.timed("checkpoint_save"):
        checkpoints.wait_for_saves(trainer.manager)
    accounted = trainer.goodput.record(step, end=True)
    trainer.writer.write(step, accounted)
    log.info(trainer.goodput.summary_line(accounted))
    return accounted


def _stop_early(trainer: Trainer, step: int, guard, window: list, started: float, stopper) -> None:
    """Ends the run at `step` on the early-stop decision: the partial log window, the decision in
    metrics.jsonl and a checkpoint of `step` (so a rerun trains no further)."""
    if window:
        trainer.writer.write(step, _log_window(trainer, window, started))
    trainer.writer.write(step, stopper.summary())
    if trainer.manager.latest_step() != step:
        _save(trainer, step, guard, None)


def _report_eval(step: int, evaluated: dict, train_metrics: dict, watch) -> None:
    """One log line per evaluation; overfitting (see `run_log.OverfitWatch`) as a warning that
    the end summary repeats."""
    held_out = {k.removeprefix("eval_"): v for k, v in evaluated.items()}
    log.info("%s", run_log.eval_line(step, held_out))
    for message in watch.add(step, held_out, train_metrics):
        log.warning("%s", message, extra={"summary": True})


def _maybe_evaluate_and_save(trainer: Trainer, step: int, guard: BadStepGuard) -> dict:
    """Evaluates every `train.eval_every` steps and saves every `checkpoint.every_steps` (and at
    every evaluation when `checkpoint.best_metric` is tracked), both at the end."""
    config, final = trainer.config, step == trainer.num_steps
    eval_every, save_every = config.train.eval_every, config.checkpoint.every_steps
    evaluated = {}
    if (eval_every and step % eval_every == 0) or final:
        guard.check()
        with _timed(trainer, "eval"):
            evaluated = trainer.evaluate(trainer)
        trainer.writer.write(step, {f"eval_{k}": v for k, v in evaluated.items()})
    best = bool(config.checkpoint.best_metric) and bool(evaluated)
    if step % save_every == 0 or final or best:
        _save(trainer, step, guard, evaluated if best else None)
    return {f"eval_{k}": v for k, v in evaluated.items()}


def _save(trainer: Trainer, step: int, guard: BadStepGuard, metrics) -> None:
    """Checkpoints `step` unless it ends a run of skipped steps (the last good one stays)."""
    guard.check()
    if guard.run:
        log.warning("not saving step %d: it ends %d skipped (non-finite) steps", step, guard.run)
        return
    check_finite_params(trainer.state, f"the checkpoint of step {step}")
    name = trainer.config.checkpoint.best_metric
    if metrics is not None and name not in metrics:
        raise ValueError(
            f"config.checkpoint.best_metric={name!r} is not an evaluation metric of this job: "
            f"{sorted(metrics)}"
        )
    with _timed(trainer, "checkpoint_save"):
        checkpoints.save_train_state(
            trainer.manager, step, trainer.state, trainer.global_batch_size, metrics=metrics
        )


def _timed(trainer: Trainer, category: str):
    """Times a block into the trainer's goodput `category` (no-op when evaluating only)."""
    return trainer.goodput.timed(category) if trainer.goodput else contextlib.nullcontext()


def _log_window(trainer: Trainer, window: list, started: float) -> dict[str, float]:
    """Fetches the summed metrics of the last steps (the one host sync per window); the window's
    time runs from `started` to the end of that sync (steps are dispatched asynchronously)."""
    steps = len(window)
    sums = jax.device_get(
        functools.reduce(lambda a, b: jax.tree_util.tree_map(jnp.add, a, b), window)
    )
    seconds = time.perf_counter() - started
    out = trainer.objective.summarize(sums)
    out["learning_rate"] = float(window[-1]["learning_rate"])
    out["grad_norm"] = float(sums["grad_norm"]) / steps
    out["skipped_steps"] = float(sums["skipped_steps"])
    out["seq_per_sec"] = steps * trainer.global_batch_size / seconds
    tflops = steps * trainer.flops_per_step / seconds / jax.device_count() / 1e12
    out["tflops_per_device"] = tflops
    peak = flops.peak_tflops(override=trainer.config.train.peak_tflops)
    if peak:
        out["mfu"] = tflops / peak
    return out


def _postfix(metrics: Mapping[str, float]) -> dict[str, str]:
    shown = {"loss": f"{metrics['loss']:.3f}"}
    for key, value in metrics.items():
        if key.endswith("accuracy") and len(shown) < 4:
            shown[key.replace("accuracy", "acc")] = f"{value:.3f}"
    shown["seq_s"] = f"{metrics['seq_per_sec']:.0f}"
    return shown


def _prefetch(trainer: Trainer, size: int) -> Iterator[dict[str, jax.Array]]:
    """Global device batches, `size` ahead of the step (so host work overlaps device work)."""
    queue = []
    while True:
        while len(queue) <= size:
            queue.append(sharding.global_batch(next(trainer.train_iter), trainer.steps.mesh))
        yield queue.pop(0)
