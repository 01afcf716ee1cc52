"""A random-access source over in-memory arrays (featurized fine-tuning examples)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class ArraySource:
    """A random-access source over the arrays of `Features` (for `trainer.make_iterator`)."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        self.arrays = dict(arrays)

    def __len__(self) -> int:
        return len(self.arrays["input_ids"])

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {k: v[index] for k, v in self.arrays.items()}
