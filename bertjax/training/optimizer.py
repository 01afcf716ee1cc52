"""The optimizer: BERT's AdamW (or LAMB) with linear warmup, linear decay and global-norm clipping."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import optax

OPTIMIZERS = ("adamw", "lamb")
# Leaves that get no weight decay, as in BERT: biases and LayerNorm parameters.
NO_DECAY_LEAVES = ("bias", "output_bias", "scale")


def warmup_steps(optim: Mapping[str, Any], num_steps: int) -> int:
    """`optim.warmup_steps` when > 0, else `optim.warmup_fraction` of `num_steps` (as
    transformers' warmup_steps / warmup_ratio)."""
    if optim["warmup_steps"] > 0:
        return int(optim["warmup_steps"])
    fraction = float(optim.get("warmup_fraction", 0.0))
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"config.optim.warmup_fraction={fraction} must be in [0, 1]")
    return int(round(fraction * num_steps))


def learning_rate_schedule(optim: Mapping[str, Any], num_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `optim.learning_rate` over `warmup_steps(optim, num_steps)`, then
    linear decay to 0 at `num_steps`."""
    peak, warmup = float(optim["learning_rate"]), warmup_steps(optim, num_steps)
    if warmup > num_steps:
        raise ValueError(
            f"config.optim.warmup_steps={warmup} exceeds config.train.num_steps={num_steps}"
        )
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak, warmup),
            optax.linear_schedule(peak, 0.0, max(num_steps - warmup, 1)),
        ],
        boundaries=[warmup],
    )


def decay_mask(params: Any) -> Any:
    """True where weight decay applies: every leaf except biases and LayerNorm parameters."""

    def decays(path, _):
        names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
        return names[-1] not in NO_DECAY_LEAVES

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(
    optim: Mapping[str, Any], num_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Builds the optimizer from `config.optim`.

    Returns:
      (the optax transformation, the learning-rate schedule for logging).
    """
    name = optim["optimizer"]
    if name not in OPTIMIZERS:
        raise ValueError(
            f"config.optim.optimizer={name!r} is invalid: allowed values are {OPTIMIZERS}"
        )
    schedule = learning_rate_schedule(optim, num_steps)
    kwargs = dict(
        b1=optim["b1"],
        b2=optim["b2"],
        eps=optim["eps"],
        weight_decay=optim["weight_decay"],
        mask=decay_mask,
    )
    update = optax.adamw(schedule, **kwargs) if name == "adamw" else optax.lamb(schedule, **kwargs)
    clip = float(optim["grad_clip_norm"])
    if clip < 0:
        raise ValueError(f"config.optim.grad_clip_norm={clip} must be >= 0 (0 disables clipping)")
    chain = [optax.clip_by_global_norm(clip)] if clip > 0 else []
    return optax.chain(*chain, update), schedule
