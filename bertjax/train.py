"""Train state and the pure, jitted pretraining steps (masking on the device, MLM + NSP loss).

`train_step(state, batch) -> (state, metrics)` and `eval_step(params, batch, rng) -> metrics` are
pure functions; `compile_steps` binds model, optimizer and masking with `functools.partial` and jits
them with explicit shardings and a donated state. Metrics leave a step as sums with their
denominators (`*_count`), so they add up over steps, micro-batches and devices.
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

Array = jax.Array
Batch = Mapping[str, Array]


@flax.struct.dataclass
class TrainState:
    """Everything a step changes, plus the base PRNG key. A pytree; checkpointed whole."""

    step: Array  # int32 []
    params: Any
    opt_state: Any
    rng: Array  # uint32 [2], raw key data (folded with the step for masking and dropout)


def init_train_state(
    rng: Array, model: nn.Module, tx: optax.GradientTransformation, example: Batch
):
    """A fresh (boxed) train state. `sharding.sharded_init` creates it sharded."""
    init_rng, state_rng = jax.random.split(rng)
    params = model.init(
        init_rng, example["input_ids"], example["token_type_ids"], example["attention_mask"]
    )["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.key_data(state_rng),
    )


def nll_and_hits(logits: Array, labels: Array) -> tuple[Array, Array]:
    """Cross-entropy and top-1 hits (float 0/1) of integer `labels` under `logits` [..., C].

    Both come from one pass over the classes: the label's logit (a gather) against the
    log-sum-exp and the row maximum. A hit is the label's logit reaching the maximum, which is
    `argmax == label` except on exact ties, without argmax's second (index-carrying) reduction;
    over the MLM head's 30k-word vocabulary that pass is a visible part of the step on a CPU.
    """
    label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    nll = jax.nn.logsumexp(logits, axis=-1) - label_logit
    hits = (label_logit >= jnp.max(logits, axis=-1)).astype(jnp.float32)
    return nll, hits


def nsp_example_weights(batch: Batch) -> Array:
    """1.0 per NSP example: one per row, or `nsp_weights` [B, K] for packed rows (one per
    instance, 0.0 in empty slots)."""
    if "nsp_weights" in batch:
        return batch["nsp_weights"]
    return jnp.ones(batch["next_sentence_label"].shape, jnp.float32)


def pretraining_losses(
    params: Any, model: nn.Module, batch: Batch, dropout_rng: Array | None
) -> dict[str, Array]:
    """Forward pass and the summed MLM/NSP losses and accuracy counts of one (micro-)batch.

    Args:
      batch: a masked batch (see `masking.mask_batch`): `input_ids`, `token_type_ids`,
        `attention_mask` [B, L]; `masked_positions`, `masked_ids`, `masked_weights` [B, P];
        `next_sentence_label` [B], or for packed rows (`pretraining_data.PackedSource`)
        `next_sentence_label`, `nsp_positions` and `nsp_weights` [B, K].
      dropout_rng: None for a deterministic (evaluation) pass.

    Returns:
      Sums over the batch: mlm_loss, mlm_correct, mlm_count, nsp_loss, nsp_correct, nsp_count.
    """
    out = model.apply(
        {"params": params},
        batch["input_ids"],
        batch["token_type_ids"],
        batch["attention_mask"],
        masked_positions=batch["masked_positions"],
        nsp_positions=batch.get("nsp_positions"),
        deterministic=dropout_rng is None,
        rngs=None if dropout_rng is None else {"dropout": dropout_rng},
    )
    weights = batch["masked_weights"]  # [B, P]
    mlm_logits = out["mlm_logits"]  # [B, P, V] float32
    mlm_nll, mlm_hit = nll_and_hits(mlm_logits, batch["masked_ids"])
    nsp_logits = out["nsp_logits"]  # [B, 2], or [B, K, 2] for packed rows
    nsp_nll, nsp_hit = nll_and_hits(nsp_logits, batch["next_sentence_label"].astype(jnp.int32))
    nsp_weights = nsp_example_weights(batch)
    return {
        "mlm_loss": jnp.sum(mlm_nll * weights),
        "mlm_correct": jnp.sum(mlm_hit * weights),
        "mlm_count": jnp.sum(weights),
        "nsp_loss": jnp.sum(nsp_nll * nsp_weights),
        "nsp_correct": jnp.sum(nsp_hit * nsp_weights),
        "nsp_count": jnp.sum(nsp_weights),
    }


def _split_micro(batch: Batch, steps: int) -> Batch:
    return {k: v.reshape(steps, v.shape[0] // steps, *v.shape[1:]) for k, v in batch.items()}


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    mask_fn: Callable[[Array, Batch], Batch],
    grad_accum_steps: int = 1,
) -> tuple[TrainState, dict[str, Array]]:
    """One optimizer step: mask on the device, forward/backward over micro-batches, update.

    The loss is mean MLM loss over all masked positions of the global batch plus mean NSP loss;
    with gradient accumulation each micro-batch is normalised by the global denominators, so the
    gradient equals the full-batch gradient exactly.
    """
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    mask_rng, dropout_rng = jax.random.split(rng)
    masked = mask_fn(mask_rng, batch)
    mlm_total = jnp.maximum(jnp.sum(masked["masked_weights"]), 1.0)
    nsp_total = jnp.maximum(jnp.sum(nsp_example_weights(masked)), 1.0)

    def loss_fn(params, micro, micro_rng):
        sums = pretraining_losses(params, model, micro, micro_rng)
        return sums["mlm_loss"] / mlm_total + sums["nsp_loss"] / nsp_total, sums

    grad_fn = jax.grad(loss_fn, has_aux=True)
    if grad_accum_steps == 1:
        grads, sums = grad_fn(state.params, masked, dropout_rng)
    else:
        micro_batches = _split_micro(masked, grad_accum_steps)

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
    metrics = dict(sums)
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["learning_rate"] = schedule(state.step)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


def eval_step(
    params: Any, batch: Batch, rng: Array, *, model: nn.Module, mask_fn
) -> dict[str, Array]:
    """Held-out MLM/NSP sums for one batch, with masking drawn from `rng` (fixed per eval batch)."""
    return pretraining_losses(params, model, mask_fn(rng, batch), None)


def summarize(sums: Mapping[str, float]) -> dict[str, float]:
    """Turns summed step metrics (host floats) into means and accuracies."""
    sums = {k: float(v) for k, v in sums.items()}
    mlm_count, nsp_count = max(sums["mlm_count"], 1.0), max(sums["nsp_count"], 1.0)
    out = {
        "mlm_loss": sums["mlm_loss"] / mlm_count,
        "mlm_accuracy": sums["mlm_correct"] / mlm_count,
        "nsp_loss": sums["nsp_loss"] / nsp_count,
        "nsp_accuracy": sums["nsp_correct"] / nsp_count,
    }
    out["loss"] = out["mlm_loss"] + out["nsp_loss"]
    return out


@dataclasses.dataclass(frozen=True)
class CompiledSteps:
    """The jitted steps and the shardings they were compiled for."""

    train_step: Callable[[TrainState, Batch], tuple[TrainState, dict[str, Array]]]
    eval_step: Callable[[Any, Batch, Array], dict[str, Array]]
    init_state: Callable[[Array], TrainState]
    abstract_state: Any  # unboxed ShapeDtypeStructs of the state
    state_shardings: Any
    mesh: Mesh
    rules: Any


def compile_steps(
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    mask_fn: Callable[[Array, Batch], Batch],
    example: Mapping[str, np.ndarray],
    mesh: Mesh,
    rules,
    *,
    grad_accum_steps: int = 1,
) -> CompiledSteps:
    """Jits init, train and eval steps with explicit shardings (state donated to the step).

    Shardings of the state come from `jax.eval_shape` of the init through the logical rules, so
    parameters and optimizer state are created already sharded.
    """
    init_fn = functools.partial(init_train_state, model=model, tx=tx, example=example)
    jit_init, abstract_state, state_shardings = sharding.sharded_init(init_fn, mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_shardings = {k: sharding.batch_sharding(mesh, np.ndim(v)) for k, v in example.items()}
    step = functools.partial(
        train_step,
        model=model,
        tx=tx,
        schedule=schedule,
        mask_fn=mask_fn,
        grad_accum_steps=grad_accum_steps,
    )
    evaluate = functools.partial(eval_step, model=model, mask_fn=mask_fn)

    jit_eval = jax.jit(
        evaluate,
        in_shardings=(state_shardings.params, batch_shardings, replicated),
        out_shardings=replicated,
    )
    return CompiledSteps(
        train_step=sharding.jit_train_step(step, state_shardings, batch_shardings, mesh, rules),
        eval_step=sharding.in_mesh(jit_eval, mesh, rules),
        init_state=jit_init,
        abstract_state=abstract_state,
        state_shardings=state_shardings,
        mesh=mesh,
        rules=rules,
    )
