"""The forward pass used for evaluation and prediction, jitted for a mesh.

Shared by the trainer's compiled steps (`bertjax.training.step`) and inference
(`bertjax.inference.runtime`), so predictions equal evaluation's outputs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bertjax import sharding


def predict_step(params: Any, batch: Mapping[str, jax.Array], *, model: nn.Module) -> dict:
    """Deterministic outputs (logits) of a batch of inputs."""
    return model.apply({"params": params}, batch, deterministic=True)


def jit_predict(
    model: nn.Module, param_shardings: Any, input_shardings: Mapping[str, Any], mesh: Mesh, rules
) -> Callable[[Any, Mapping[str, jax.Array]], dict]:
    """`predict_step` jitted for `mesh`: params and inputs on their shardings, outputs
    replicated, with the mesh and logical rules in effect."""
    jitted = jax.jit(
        functools.partial(predict_step, model=model),
        in_shardings=(param_shardings, dict(input_shardings)),
        out_shardings=NamedSharding(mesh, PartitionSpec()),
    )
    return sharding.in_mesh(jitted, mesh, rules)


@dataclasses.dataclass(frozen=True)
class PredictSteps:
    """A model's jitted `predict_step` and what it was compiled for (the predict part of the
    trainer's `CompiledSteps`).

    Attributes:
      predict_step: (params, global batch of input fields) -> {output name: array}.
      mesh: the device mesh.
      param_shardings: the parameters' NamedShardings.
      rules: the logical-axis rules it runs with.
    """

    predict_step: Callable[[Any, Mapping[str, jax.Array]], dict]
    mesh: Mesh
    param_shardings: Any
    rules: Any


def compile_predict(
    model: nn.Module, example: Mapping[str, Any], mesh: Mesh, rules
) -> PredictSteps:
    """Jits `predict_step` of `model` for `mesh`, parameter shardings from `jax.eval_shape` of
    the init through the logical `rules` (as the trainer's), batches split over the data axes.

    Args:
      example: one global batch of the model's input fields (numpy), [batch, length].
    """
    init = lambda rng: model.init(rng, dict(example))["params"]  # noqa: E731
    _, _, param_shardings = sharding.sharded_init(init, mesh, rules)
    inputs = {k: sharding.batch_sharding(mesh, len(v.shape)) for k, v in example.items()}
    step = jit_predict(model, param_shardings, inputs, mesh, rules)
    return PredictSteps(step, mesh, param_shardings, rules)
