"""bertjax: BERT pretraining and fine-tuning in JAX/Flax.

The model classes and `load_pretrained` are imported on first use, so that numpy-only modules
(data preparation, tokenizers) can be imported without importing jax.
"""

import importlib
from typing import TYPE_CHECKING

from bertjax.config import BertConfig

__version__ = "0.1.0"

_LAZY = {
    "BertForPreTraining": "bertjax.model",
    "BertModel": "bertjax.model",
    "load_pretrained": "bertjax.checkpoint",
}

if TYPE_CHECKING:
    from bertjax.checkpoint import load_pretrained
    from bertjax.model import BertForPreTraining, BertModel


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bertjax' has no attribute {name!r}")


__all__ = ["BertConfig", "BertForPreTraining", "BertModel", "load_pretrained", "__version__"]
