"""bertjax: BERT pretraining and fine-tuning in JAX/Flax, with model families behind one registry.

The model classes and `load_pretrained` are imported on first use, so that numpy-only modules
(data preparation, tokenizers) can be imported without importing jax.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "BertConfig": "bertjax.models.bert",
    "Model": "bertjax.models",
    "get_family": "bertjax.models",
    "model_config": "bertjax.models",
    "load_pretrained": "bertjax.interop.formats",
    "predictor": "bertjax.inference",
    "Embedder": "bertjax.inference",
    "generate": "bertjax.models.decoding",
    "generate_text": "bertjax.inference.generate",
}

if TYPE_CHECKING:
    from bertjax.inference import Embedder, predictor
    from bertjax.inference.generate import generate_text
    from bertjax.interop.formats import load_pretrained
    from bertjax.models import Model, get_family, model_config
    from bertjax.models.bert import BertConfig
    from bertjax.models.decoding import generate


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bertjax' has no attribute {name!r}")


__all__ = [
    "BertConfig",
    "Embedder",
    "Model",
    "__version__",
    "generate",
    "generate_text",
    "get_family",
    "load_pretrained",
    "model_config",
    "predictor",
]
