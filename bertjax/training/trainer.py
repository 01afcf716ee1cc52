"""The one trainer: pretraining and fine-tuning are the same `Trainer` with another objective or
task.

`start(config, workdir, build)` is the start every job shares (processes joined, run spec
checked, workdir claimed); `build(...)` compiles the steps for a model and an objective, and
initialises the state (fresh, from loaded weights, or restored from the workdir's latest
checkpoint with the data position); `loop.train(trainer)` runs it (see `training.loop`, and
`training.stops` for divergence, preemption and the watchdog). `check_config` runs every
job-independent config check before any data work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from bertjax import sharding, spec
from bertjax.data import pipeline
from bertjax.models import Model
from bertjax.models.registry import family_of
from bertjax.training import (
    checkpoints,
    distributed,
    early_stop,
    goodput,
    profiling,
    two_phase,
)
from bertjax.training import workdir as workdir_lock
from bertjax.training.metric_writers import MetricWriter
from bertjax.training.optimizer import make_optimizer
from bertjax.training.step import CompiledSteps, TrainState, compile_steps
from bertjax.training.stops import check_finite_params

log = logging.getLogger(__name__)


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

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failing=exc is not None)

    def close(self, *, failing: bool = False) -> None:
        """Closes the metric writer, the checkpoint manager (after its save in flight) and the
        data iterator's reader threads and releases the workdir, each even when another fails,
        so nothing is left for the interpreter's exit (an unflushed event file, orbax writer
        threads, a held lock). Jobs run a trainer in a `with` block, which closes it on every
        exit path.

        Args:
          failing: the run is stopping on another error, which stays the command's one line:
            errors met here (a full disk, the failed save in flight) go to log.txt only.
        """
        with contextlib.ExitStack() as stack:  # the last callback runs first
            stack.callback(workdir_lock.release, self.workdir)
            if hasattr(self.train_iter, "close"):  # grain's prefetch threads
                stack.callback(self.train_iter.close)
            if self.manager is not None:
                stack.callback(checkpoints.close, self.manager, failing=failing)
            stack.callback(self._close_writer, failing)

    def _close_writer(self, failing: bool) -> None:
        try:
            self.writer.close()
        except OSError as err:
            if not failing:
                raise
            log.warning("while stopping: %s", err, extra={"log_only": True})


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
