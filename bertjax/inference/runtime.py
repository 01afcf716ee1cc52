"""The device side shared by prediction and embedding: the model's predict step (the one the
trainer evaluates with, `bertjax.models.predict`) compiled on the local devices, and parameters
placed on their shardings."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from bertjax import sharding
from bertjax.models import Model
from bertjax.models.predict import PredictSteps, compile_predict
from bertjax.models.registry import family_of

# Inference is data parallel over the local devices: the batch is split, the weights replicated
# (every other logical axis maps to no mesh axis).
MESH = {"data": -1, "fsdp": 1, "tensor": 1}
RULES = (("act_batch", "data"),)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """A model's compiled steps on the local devices and its placed parameters.

    Attributes:
      model: the `Model` (backbone and heads).
      steps: the compiled `PredictSteps` (its `predict_step`, mesh and parameter shardings).
      params: the parameters on `steps.param_shardings`.
      batch_size: the global batch, a multiple of the local device count.
    """

    model: Model
    steps: PredictSteps
    params: Any
    batch_size: int

    @property
    def input_fields(self) -> tuple[str, ...]:
        return self.model.family.fields_for(self.model.config)


def build_runtime(
    model_config: Any, heads: Sequence, params: Any, *, batch_size: int, seq_len: int
) -> Runtime:
    """Compiles the predict step of `Model(family, model_config, heads)` and places `params`.

    Args:
      model_config: the family's frozen config.
      heads: the `head_spec`s whose parameters `params` holds.
      params: unboxed host parameters `{"backbone": ..., "heads": {...}}`.
      batch_size: wanted batch; rounded up to a multiple of the local device count.
      seq_len: the length of the example batch the shardings are derived from.
    """
    devices = jax.local_devices()
    batch_size = -(-max(batch_size, 1) // len(devices)) * len(devices)
    mesh = sharding.make_mesh(MESH, devices)
    model = Model(family_of(model_config), model_config, tuple(heads))
    fields = model.family.fields_for(model_config)
    example = {name: np.ones((batch_size, seq_len), np.int32) for name in fields}
    steps = compile_predict(model, example, mesh, RULES)
    placed = sharding.host_to_global(jax.device_get(params), steps.param_shardings)
    return Runtime(model, steps, placed, batch_size)
