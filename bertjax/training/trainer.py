"""The one trainer: pretraining and fine-tuning are this loop with another objective or task.

`build(...)` compiles the steps for a model and an objective, and initialises the state (fresh,
from loaded weights, or restored from the workdir's latest checkpoint with the data position);
`train(trainer)` runs to `num_steps` with the progress bar, summed metrics per log window
(`metrics.jsonl`, TensorBoard), TFLOP/s and MFU, device prefetch, evaluation every
`train.eval_every` steps (the job's `evaluate` hook) and checkpoints every
`checkpoint.every_steps`. Every feature here serves every job.

Reliability, also for every job: steps with a non-finite loss or gradient are skipped inside the
step and the loop stops (`Diverged`) after `train.max_bad_steps` of them in a row, never saving
non-finite parameters; SIGTERM (and Ctrl-C, SIGINT: `Interrupted`) saves a checkpoint at the
current step and stops (`Preempted`); each evaluation logs one line, and a held-out loss rising
while the training loss falls is logged as overfitting (`run_log.OverfitWatch`);
an optional watchdog (`train.watchdog_seconds`) logs every thread's stack and exits when no step
completes. `check_config` runs every config check before any data work. The command returns
`TrainingStopped.exit_code` (the `EXIT_*` constants below).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import pathlib
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from bertjax import sharding, spec
from bertjax.data import pipeline
from bertjax.models import Model
from bertjax.models.registry import family_of
from bertjax.training import (
    checkpoints,
    distributed,
    early_stop,
    flops,
    goodput,
    profiling,
    run_log,
    two_phase,
)
from bertjax.training import workdir as workdir_lock
from bertjax.training.metric_writers import MetricWriter
from bertjax.training.optimizer import make_optimizer
from bertjax.training.step import CompiledSteps, TrainState, compile_steps

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


@dataclasses.dataclass
class Trainer:
    """Everything the loop and the job's evaluation need, built once by `build`."""

    config: ml_collections.ConfigDict
    workdir: pathlib.Path
    model_config: Any
    objective: Any
    model: Model
    steps: CompiledSteps
    state: TrainState
    num_steps: int
    train_iter: Any  # None when evaluating only
    manager: Any  # None when evaluating only
    writer: MetricWriter
    flops_per_step: float
    evaluate: Callable[[Trainer], dict[str, float]]  # the job's evaluation of trainer.state
    train_source: Any = None  # the training examples (None: evaluating only)
    eval_source: Any = None  # the job's evaluation data (held-out instances, task features)
    goodput: goodput.Goodput | None = None  # where the workdir's wall time went (training only)

    @property
    def global_batch_size(self) -> int:
        return int(self.config.train.global_batch_size)

    def gathered_params(self):
        """The parameters as full host arrays, in every process (for saving a model).

        Raises:
          Diverged: a parameter is not finite (such a model is never saved).
        """
        check_finite_params(self.state, "the model")
        return multihost_utils.process_allgather(self.state.params, tiled=True)

    def close(self) -> None:
        self.writer.close()
        if self.manager is not None:
            self.manager.close()
        workdir_lock.release(self.workdir)


def check_batch_size(config: ml_collections.ConfigDict, mesh) -> None:
    """Raises unless the global batch splits over the batch axes, the processes and the
    micro-batches; names the fields."""
    batch, accum = config.train.global_batch_size, config.train.grad_accum_steps
    shards = math.prod(mesh.shape[axis] for axis in sharding.BATCH_AXES)
    parts = math.lcm(shards, jax.process_count())
    if batch <= 0 or batch % parts:
        raise ValueError(
            f"config.train.global_batch_size={batch} must be a positive multiple of {parts}: it "
            f"is split over {shards} devices (config.mesh data x fsdp) and "
            f"{jax.process_count()} processes"
        )
    if accum < 1 or batch % accum:
        raise ValueError(
            f"config.train.global_batch_size={batch} must be divisible by "
            f"config.train.grad_accum_steps={accum}"
        )


def check_config(config: ml_collections.ConfigDict, *, training: bool = True) -> None:
    """Every check of the job-independent fields, run before any data work; raises a
    ValueError naming `config.<group>.<field>`.

    Checks the mesh, the batch against the mesh, processes and accumulation, the optimizer
    (and the warmup against `train.num_steps` when that is set), the loop and checkpoint fields,
    and refuses float16 training (no loss scaling).
    """
    check_batch_size(config, sharding.make_mesh(config.mesh))
    train, ckpt = config.train, config.checkpoint
    make_optimizer(config.optim, train.num_steps if train.num_steps > 0 else 2**31 - 1)
    if config.optim.learning_rate < 0 or config.optim.warmup_steps < 0:
        raise ValueError(
            f"config.optim.learning_rate={config.optim.learning_rate} and "
            f"config.optim.warmup_steps={config.optim.warmup_steps} must be >= 0"
        )
    positive = {"train.log_every": train.log_every, "checkpoint.every_steps": ckpt.every_steps}
    positive["checkpoint.keep"] = ckpt.keep
    at_least_zero = {"train.num_steps": train.num_steps, "train.eval_every": train.eval_every}
    at_least_zero["train.max_bad_steps"] = train.max_bad_steps
    at_least_zero["train.watchdog_seconds"] = train.watchdog_seconds
    for name, value in {**positive, **at_least_zero}.items():
        if value < (1 if name in positive else 0):
            raise ValueError(f"config.{name}={value} must be >= {int(name in positive)}")
    if train.num_steps == 0 and train.num_epochs <= 0:
        raise ValueError("config.train.num_epochs must be > 0 when config.train.num_steps=0")
    early_stop.check_config(config)
    profiling.parse_steps(train.profile_steps)
    two_phase.check_config(config)
    if ckpt.best_mode not in ("max", "min"):
        raise ValueError(f"config.checkpoint.best_mode={ckpt.best_mode!r}: allowed 'max', 'min'")
    for name in ("dtype", "param_dtype"):
        if training and config.model[name] == "float16":
            raise ValueError(
                f"config.model.{name}='float16' cannot train: float16 needs loss scaling, which "
                f"bertjax does not do; use --config.model.{name}=bfloat16 (float32's range). "
                "float16 is fine for inference (evaluation, fill-mask)"
            )


def num_train_steps(config: ml_collections.ConfigDict, num_examples: int) -> int:
    """`config.train.num_steps` when > 0, else `num_epochs` passes over `num_examples`."""
    if config.train.num_steps > 0:
        return int(config.train.num_steps)
    per_epoch = num_examples // config.train.global_batch_size
    if per_epoch == 0:
        raise ValueError(
            f"{num_examples} training examples are fewer than "
            f"config.train.global_batch_size={config.train.global_batch_size}"
        )
    return max(1, math.ceil(config.train.num_epochs * per_epoch))


def build(
    config: ml_collections.ConfigDict,
    workdir: pathlib.Path,
    *,
    model_config: Any,
    objective: Any,
    example: Mapping[str, np.ndarray],
    evaluate: Callable[[Trainer], dict[str, float]],
    train_source: Any = None,
    eval_source: Any = None,
    num_steps: int = 1,
    loaded: Any = None,
    seq_len: int | None = None,
) -> Trainer:
    """Compiles the steps and initialises, restores or (eval only) places the state.

    Args:
      config: the job's config (groups train, optim, mesh, checkpoint, data).
      workdir: the job's folder (checkpoints/, metrics.jsonl, tensorboard/).
      model_config: the family's frozen config.
      objective: the objective or task (see `bertjax.objectives.base`).
      example: one global batch (numpy), for shapes and shardings.
      evaluate: `(trainer) -> metrics`, the job's evaluation of `trainer.state`.
      train_source: the training examples (a random-access source); None evaluates only.
      eval_source: the job's evaluation data, kept on the trainer for `evaluate`.
      num_steps: optimizer steps of the run (the schedule decays to 0 there).
      loaded: a partial parameter tree (backbone, maybe heads) to start from instead of the
        fresh init; with `train_source=None`, the whole parameter tree to evaluate.
      seq_len: the length counted in the FLOPs (default: the example's).
    """
    mesh, rules = sharding.make_mesh(config.mesh), sharding.logical_rules(config.mesh)
    check_config(config, training=train_source is not None)
    tx, schedule = make_optimizer(config.optim, num_steps)
    model = Model(family_of(model_config), model_config, tuple(objective.heads))
    steps = compile_steps(
        model,
        objective,
        tx,
        schedule,
        example,
        mesh,
        rules,
        grad_accum_steps=config.train.grad_accum_steps,
    )
    train_iter = manager = timeline = None
    if train_source is None:
        params = sharding.host_to_global(loaded, steps.state_shardings.params)
        state = TrainState(jnp.zeros((), jnp.int32), params, None, jnp.zeros((2,), jnp.uint32))
    else:
        train_iter = make_iterator(train_source, config, seed=config.train.seed)
        manager = checkpoints.checkpoint_manager(workdir / "checkpoints", config.checkpoint)
        timeline = goodput.Goodput(workdir)
        state = _init_or_restore(config, workdir, steps, manager, train_iter, loaded, timeline)
    writer = MetricWriter(workdir)
    writer.truncate_after(int(state.step))
    length = seq_len or np.shape(example["input_ids"])[1]
    per_sequence = objective.flops_per_sequence(family_of(model_config), model_config, length)
    return Trainer(
        config=config,
        workdir=workdir,
        model_config=model_config,
        objective=objective,
        model=model,
        steps=steps,
        state=state,
        num_steps=num_steps,
        train_iter=train_iter,
        manager=manager,
        writer=writer,
        flops_per_step=config.train.global_batch_size * per_sequence,
        evaluate=evaluate,
        train_source=train_source,
        eval_source=eval_source,
        goodput=timeline,
    )


def make_iterator(source, config, *, seed, shuffle=True, num_epochs=None, global_batch=None):
    """This process's batches of `source` (see `data.pipeline.make_iterator`)."""
    return pipeline.make_iterator(
        source,
        global_batch_size=global_batch or config.train.global_batch_size,
        seed=seed,
        shuffle=shuffle,
        num_epochs=num_epochs,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        worker_count=config.data.worker_count,
    )


def _init_or_restore(
    config, workdir, steps: CompiledSteps, manager, train_iter, loaded, timeline
) -> TrainState:
    """The latest checkpoint of the workdir, else a phase-1 state (`two_phase`), else a fresh
    init (from `loaded` where given); the data iterator seeks to the state's position."""
    with timeline.timed("checkpoint_restore"):
        restored = checkpoints.restore_train_state(
            manager, steps.state_shardings, steps.abstract_state
        ) or two_phase.initial_state(config, workdir, steps)
    if restored is None:
        timeline.resumed(0)
        return steps.init_state(jax.random.key(config.train.seed), loaded)
    state, position = restored
    batches = position["examples_consumed"] // config.train.global_batch_size
    pipeline.seek(train_iter, batches - two_phase.start_step(workdir))
    timeline.resumed(int(position["step"]))
    return state


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


def start(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    build: Callable[[ml_collections.ConfigDict, pathlib.Path], Trainer],
) -> Trainer:
    """The start every job shares: the processes joined, the run spec checked against the
    workdir (`bertjax.spec`: refused before anything is written), the workdir claimed for this
    run (`training.workdir`), then `build(config, workdir)`; a failed build releases the claim
    and leaves no empty workdir behind."""
    distributed.initialize(config.distributed)  # before anything touches a device
    spec.begin(config, workdir)
    workdir = pathlib.Path(workdir)
    created = workdir_lock.open_workdir(workdir, jax.process_index())
    try:
        return build(config, workdir)
    except BaseException:
        workdir_lock.abandon(workdir, created)
        raise


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


def _prefetch(trainer: Trainer, size: int) -> Iterator[dict[str, jax.Array]]:
    """Global device batches, `size` ahead of the step (so host work overlaps device work)."""
    queue = []
    while True:
        while len(queue) <= size:
            queue.append(sharding.global_batch(next(trainer.train_iter), trainer.steps.mesh))
        yield queue.pop(0)
