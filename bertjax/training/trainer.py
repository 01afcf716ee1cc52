"""The one trainer: pretraining and fine-tuning are this loop with another objective or task.

`build(...)` compiles the steps for a model and an objective, and initialises the state (fresh,
from loaded weights, or restored from the workdir's latest checkpoint with the data position);
`train(trainer)` runs to `num_steps` with the progress bar, summed metrics per log window
(`metrics.jsonl`, TensorBoard), TFLOP/s and MFU, device prefetch, evaluation every
`train.eval_every` steps (the job's `evaluate` hook) and checkpoints every
`checkpoint.every_steps`. Every feature here serves every job.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import pathlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from bertjax.data import pipeline
from bertjax.models import Model
from bertjax.models.registry import family_of
from bertjax.training import checkpoints, flops, sharding
from bertjax.training.metric_writers import MetricWriter
from bertjax.training.optimizer import make_optimizer
from bertjax.training.step import CompiledSteps, TrainState, compile_steps

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

    @property
    def global_batch_size(self) -> int:
        return int(self.config.train.global_batch_size)

    def gathered_params(self):
        """The parameters as full host arrays, in every process (for saving a model)."""
        return multihost_utils.process_allgather(self.state.params, tiled=True)

    def close(self) -> None:
        self.writer.close()
        if self.manager is not None:
            self.manager.close()


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
    check_batch_size(config, mesh)
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
    train_iter = manager = None
    if train_source is None:
        params = sharding.host_to_global(loaded, steps.state_shardings.params)
        state = TrainState(jnp.zeros((), jnp.int32), params, None, jnp.zeros((2,), jnp.uint32))
    else:
        train_iter = make_iterator(train_source, config, seed=config.train.seed)
        manager = checkpoints.checkpoint_manager(workdir / "checkpoints", config.checkpoint)
        state = _init_or_restore(config, steps, manager, train_iter, loaded)
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


def _init_or_restore(config, steps: CompiledSteps, manager, train_iter, loaded) -> TrainState:
    restored = checkpoints.restore_train_state(manager, steps.state_shardings, steps.abstract_state)
    if restored is None:
        return steps.init_state(jax.random.key(config.train.seed), loaded)
    state, position = restored
    pipeline.seek(train_iter, position["examples_consumed"] // config.train.global_batch_size)
    return state


def _log_window(trainer: Trainer, window: list, seconds: float) -> dict[str, float]:
    """Fetches the summed metrics of the last steps (the one host sync per window)."""
    steps = len(window)
    sums = jax.device_get(
        functools.reduce(lambda a, b: jax.tree_util.tree_map(jnp.add, a, b), window)
    )
    out = trainer.objective.summarize(sums)
    out["learning_rate"] = float(window[-1]["learning_rate"])
    out["grad_norm"] = float(sums["grad_norm"]) / steps
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


def train(trainer: Trainer, *, desc: str = "train") -> dict[str, float]:
    """Runs from the current step to `trainer.num_steps`; returns the last metrics."""
    config = trainer.config
    num_steps, log_every = trainer.num_steps, config.train.log_every
    eval_every, save_every = config.train.eval_every, config.checkpoint.every_steps
    step = int(trainer.state.step)
    bar = tqdm(
        total=num_steps,
        initial=step,
        disable=jax.process_index() != 0,
        desc=desc,
        dynamic_ncols=True,
    )
    window, last, started = [], {}, time.perf_counter()
    batches = _prefetch(trainer, config.data.prefetch)
    while step < num_steps:
        trainer.state, metrics = trainer.steps.train_step(trainer.state, next(batches))
        step += 1
        window.append(metrics)
        if step % log_every == 0 or step == num_steps:
            last = _log_window(trainer, window, time.perf_counter() - started)
            trainer.writer.write(step, last)
            bar.set_postfix(_postfix(last))
            bar.update(len(window))
            window, started = [], time.perf_counter()
        if (eval_every and step % eval_every == 0) or step == num_steps:
            eval_metrics = {f"eval_{k}": v for k, v in trainer.evaluate(trainer).items()}
            trainer.writer.write(step, eval_metrics)
            last.update(eval_metrics)
            started = time.perf_counter()
        if step % save_every == 0 or step == num_steps:
            checkpoints.save_train_state(
                trainer.manager, step, trainer.state, trainer.global_batch_size
            )
    bar.close()
    trainer.manager.wait_until_finished()
    return last


def _prefetch(trainer: Trainer, size: int) -> Iterator[dict[str, jax.Array]]:
    """Global device batches, `size` ahead of the step (so host work overlaps device work)."""
    queue = []
    while True:
        while len(queue) <= size:
            queue.append(sharding.global_batch(next(trainer.train_iter), trainer.steps.mesh))
        yield queue.pop(0)
