"""The train state and the one set of pure, jitted steps every job runs.

`train_step(state, batch) -> (state, metrics)`: on-device `objective.prepare` (masking), forward and
backward over micro-batches, update. `eval_step(params, batch, rng) -> sums` and
`predict_step(params, batch) -> outputs`. `compile_steps` binds model, objective and optimizer with
`functools.partial` and jits them with explicit shardings from `jax.eval_shape` of the init, the
state donated. The objective (or fine-tuning task) decides the loss; nothing here knows BERT.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bertjax import sharding
from bertjax.models.predict import jit_predict

Array = jax.Array
Batch = Mapping[str, Array]


@flax.struct.dataclass
class TrainState:
    """Everything a step changes, plus the base PRNG key. A pytree; checkpointed whole."""

    step: Array  # int32 []
    params: Any
    opt_state: Any
    rng: Array  # uint32 [2], raw key data (folded with the step for corruption and dropout)


def init_train_state(
    rng: Array, model: nn.Module, tx: optax.GradientTransformation, example: Batch
) -> TrainState:
    """A fresh (boxed) train state. `sharding.sharded_init` creates it sharded."""
    init_rng, state_rng = jax.random.split(rng)
    params = model.init(init_rng, example)["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.key_data(state_rng),
    )


def _split_micro(batch: Batch, steps: int) -> Batch:
    return {k: v.reshape(steps, v.shape[0] // steps, *v.shape[1:]) for k, v in batch.items()}


def loss_from_sums(objective, sums: Mapping[str, Array], counts: Mapping[str, Array]) -> Array:
    """sum(weight * sums[term_loss] / counts[term_count]) over the objective's loss terms."""
    return sum(
        weight * sums[f"{term}_loss"] / jnp.maximum(counts[f"{term}_count"], 1.0)
        for term, weight in objective.loss_terms
    )


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    model: nn.Module,
    objective,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    grad_accum_steps: int = 1,
) -> tuple[TrainState, dict[str, Array]]:
    """One optimizer step: prepare on the device, forward/backward over micro-batches, update.

    With gradient accumulation each micro-batch is normalised by the global denominators
    (`objective.counts` of the whole prepared batch), so the gradient equals the full-batch one.
    A step whose loss or gradient norm is not finite keeps the parameters and optimizer state
    (the step counter still advances) and reports `skipped_steps=1`; the loop
    stops after `config.train.max_bad_steps` such steps in a row.
    """
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    prepare_rng, dropout_rng = jax.random.split(rng)
    prepared = objective.prepare(prepare_rng, batch)
    counts = objective.counts(prepared)

    def loss_fn(params, micro, micro_rng):
        sums = objective.sums(model, params, micro, micro_rng)
        return loss_from_sums(objective, sums, counts), sums

    grad_fn = jax.grad(loss_fn, has_aux=True)
    if grad_accum_steps == 1:
        grads, sums = grad_fn(state.params, prepared, dropout_rng)
    else:
        micro_batches = _split_micro(prepared, grad_accum_steps)

        def accumulate(carry, xs):
            index, micro = xs
            grads, sums = grad_fn(state.params, micro, jax.random.fold_in(dropout_rng, index))
            return jax.tree_util.tree_map(jnp.add, carry, (grads, sums)), None

        zeros = jax.eval_shape(
            grad_fn,
            state.params,
            jax.tree_util.tree_map(lambda x: x[0], micro_batches),
            dropout_rng,
        )
        zeros = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), zeros)
        (grads, sums), _ = jax.lax.scan(
            accumulate, zeros, (jnp.arange(grad_accum_steps), micro_batches)
        )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    # Divergence guard: a non-finite loss or gradient skips the update (the step still advances).
    finite = jnp.isfinite(loss_from_sums(objective, sums, counts)) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jnp.where(finite, new, old)
    params = jax.tree.map(keep, params, state.params)
    opt_state = jax.tree.map(keep, opt_state, state.opt_state)
    metrics = dict(sums)
    metrics["grad_norm"] = grad_norm
    metrics["skipped_steps"] = 1.0 - finite.astype(jnp.float32)
    metrics["learning_rate"] = schedule(state.step)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


def eval_step(params: Any, batch: Batch, rng: Array, *, model: nn.Module, objective) -> dict:
    """Held-out sums of one batch, corruption drawn from `rng` (fixed per eval batch)."""
    return objective.sums(model, params, objective.prepare(rng, batch), None)


def merge_loaded(state: TrainState, loaded: Any) -> TrainState:
    """`state` with the parameters of `loaded` (a partial tree: backbone, some heads) in place of
    the fresh ones, cast to their dtypes. Adam's moments start at zero whatever the parameters,
    so the optimizer state stays valid."""

    def merge(fresh, new, path):
        if isinstance(fresh, Mapping):
            return {k: merge(v, new[k], f"{path}/{k}") if k in new else v for k, v in fresh.items()}
        if fresh.shape != new.shape:
            raise ValueError(
                f"loaded parameter {path.lstrip('/')} has shape {new.shape}, the model "
                f"{fresh.shape}: the checkpoint does not fit config.model"
            )
        return jnp.asarray(new, fresh.dtype)

    return state.replace(params=merge(state.params, loaded, ""))


@dataclasses.dataclass(frozen=True)
class CompiledSteps:
    """The jitted steps and the shardings they were compiled for."""

    train_step: Callable[[TrainState, Batch], tuple[TrainState, dict[str, Array]]]
    eval_step: Callable[[Any, Batch, Array], dict[str, Array]]
    predict_step: Callable[[Any, Batch], dict[str, Array]]
    init_state: Callable[..., TrainState]  # (rng, loaded=None) -> TrainState
    abstract_state: Any  # unboxed ShapeDtypeStructs of the state
    state_shardings: Any
    mesh: Mesh
    rules: Any


def compile_steps(
    model: nn.Module,
    objective,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    example: Mapping[str, np.ndarray],
    mesh: Mesh,
    rules,
    *,
    grad_accum_steps: int = 1,
) -> CompiledSteps:
    """Jits init, train, eval and predict with explicit shardings (state donated to the step).

    Shardings of the state come from `jax.eval_shape` of the init through the logical rules, so
    parameters and optimizer state are created already sharded.

    Args:
      example: one global batch (numpy), for the batch shardings and the init shapes.
    """
    init_fn = functools.partial(init_train_state, model=model, tx=tx, example=example)
    jit_init, abstract_state, state_shardings = sharding.sharded_init(init_fn, mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_shardings = {k: sharding.batch_sharding(mesh, np.ndim(v)) for k, v in example.items()}
    step = functools.partial(
        train_step,
        model=model,
        objective=objective,
        tx=tx,
        schedule=schedule,
        grad_accum_steps=grad_accum_steps,
    )
    jit_eval = jax.jit(
        functools.partial(eval_step, model=model, objective=objective),
        in_shardings=(state_shardings.params, batch_shardings, replicated),
        out_shardings=replicated,
    )
    input_shardings = {k: s for k, s in batch_shardings.items() if k in model.family.input_fields}
    jit_pred = jit_predict(model, state_shardings.params, input_shardings, mesh, rules)

    def init_state(rng: Array, loaded: Any = None) -> TrainState:
        state = jit_init(rng)
        if loaded is None:
            return state
        shardings = _subtree(state_shardings.params, loaded)
        loaded = sharding.host_to_global(loaded, shardings)
        merge = jax.jit(merge_loaded, out_shardings=state_shardings, donate_argnums=(0,))
        return sharding.in_mesh(merge, mesh, rules)(state, loaded)

    return CompiledSteps(
        train_step=sharding.jit_train_step(step, state_shardings, batch_shardings, mesh, rules),
        eval_step=sharding.in_mesh(jit_eval, mesh, rules),
        predict_step=jit_pred,
        init_state=init_state,
        abstract_state=abstract_state,
        state_shardings=state_shardings,
        mesh=mesh,
        rules=rules,
    )


def _subtree(full: Any, part: Any) -> Any:
    """The entries of `full` at the keys of the partial tree `part` (raises naming a bad key)."""
    if not isinstance(part, Mapping):
        return full
    out = {}
    for key, value in part.items():
        if key not in full:
            raise ValueError(f"loaded parameters have {key!r}, which this model does not")
        out[key] = _subtree(full[key], value)
    return out
