"""Featurized examples through a compiled `predict_step`, in batches of one fixed shape.

Used by `bertjax predict` (`Predictor`) and by fine-tuning's evaluation, so predictions equal
evaluation's outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np

from bertjax import sharding
from bertjax.tasks.common import Features

UNUSED_OUTPUTS = ("sequence_output", "pooled_output")  # not fetched from the device


def predict_features(
    steps,
    params,
    features: Features,
    *,
    batch_size: int,
    input_fields: Sequence[str],
    process: tuple[int, int] = (0, 1),
    progress=None,
) -> dict[str, np.ndarray]:
    """Runs a jitted `predict_step` over `features` in batches of one fixed shape.

    Args:
      steps: the trainer's `CompiledSteps` or inference's `PredictSteps` (their mesh and
        predict step).
      params: the parameters, placed on the steps' shardings.
      features: the featurized examples.
      batch_size: the global batch (the last one is filled by repeating the last row).
      input_fields: the model family's input fields (the other arrays stay on the host).
      process: (this process's index, process count) over which each batch is split.
      progress: a tqdm-like bar to `update(rows)` after each batch, or None.

    Returns:
      {output name: float32 [N, ...]}, in feature order (sequence and pooled states dropped).
    """
    n = len(features)
    padded = math.ceil(n / batch_size) * batch_size
    index = np.minimum(np.arange(padded), n - 1)  # repeat the last row to fill the last batch
    local = batch_size // process[1]
    inputs = [k for k in features.arrays if k in input_fields]
    outputs = []
    for start in range(0, padded, batch_size):
        first = start + process[0] * local
        rows = index[first : first + local]
        local_batch = {k: features.arrays[k][rows] for k in inputs}
        out = steps.predict_step(params, sharding.global_batch(local_batch, steps.mesh))
        outputs.append(jax.device_get({k: v for k, v in out.items() if k not in UNUSED_OUTPUTS}))
        if progress is not None:
            progress.update(min(batch_size, n - start))
    return {k: np.concatenate([o[k] for o in outputs])[:n] for k in outputs[0]}
