"""Reading transformers model directories: `config.json` and the weights (safetensors, sharded
safetensors or `pytorch_model.bin`), for every family's converter."""

from __future__ import annotations

import json
import pathlib
import pickle
from typing import Any

import numpy as np

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
TORCH_NAME = "pytorch_model.bin"


def np_dtype(name: str) -> np.dtype:
    """numpy dtype of a config dtype name ("bfloat16" comes from ml_dtypes, as in jax)."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def read_hf_config(hf_dir: str | pathlib.Path) -> dict[str, Any]:
    """Reads `config.json` of a transformers model directory (no checks beyond valid JSON)."""
    path = pathlib.Path(hf_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{hf_dir} has no {CONFIG_NAME}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def read_hf_weights(hf_dir: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Reads the weights of a transformers model directory as numpy arrays.

    Tries `model.safetensors`, then a sharded `model.safetensors.index.json`, then
    `pytorch_model.bin` (loaded with `torch.load(weights_only=True)`, so no pickled code runs).
    """
    from safetensors.numpy import load_file

    hf_dir = pathlib.Path(hf_dir)
    if (hf_dir / SAFETENSORS_NAME).is_file():
        return load_file(hf_dir / SAFETENSORS_NAME)
    if (hf_dir / SAFETENSORS_INDEX_NAME).is_file():
        index = json.loads((hf_dir / SAFETENSORS_INDEX_NAME).read_text(encoding="utf-8"))
        state = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(load_file(hf_dir / shard))
        return state
    if (hf_dir / TORCH_NAME).is_file():
        return _read_torch(hf_dir / TORCH_NAME)
    present = sorted(p.name for p in hf_dir.iterdir()) if hf_dir.is_dir() else []
    raise FileNotFoundError(
        f"{hf_dir} has no weights: expected {SAFETENSORS_NAME}, {SAFETENSORS_INDEX_NAME} or "
        f"{TORCH_NAME}; found {present}"
    )


def _read_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"reading {path} needs torch: install the interop extra "
            "(pip install 'bertjax[interop]') or provide model.safetensors instead"
        ) from e
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        raise ValueError(
            f"{path}: refused to load: this pickle holds more than plain tensors (objects that "
            "could run code when unpickled). Convert it to safetensors where you trust it, e.g. "
            "transformers' `save_pretrained(out, safe_serialization=True)`, and use "
            "model.safetensors"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path} cannot be read ({type(err).__name__}: {err})") from None
    out = {}
    for key, tensor in state.items():
        if tensor.dtype == torch.bfloat16:
            out[key] = tensor.float().numpy().astype(np_dtype("bfloat16"))
        else:
            out[key] = tensor.numpy()
    return out
