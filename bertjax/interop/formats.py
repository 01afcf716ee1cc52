"""The registry of model-directory formats: what `--model`, `init_from` and `load_pretrained`
accept, detected from the directory itself.

| format      | what it is                                          | written by                     |
|-------------|-----------------------------------------------------|--------------------------------|
| `hf`        | a transformers directory (`model_type` in config)   | `bertjax export-hf`            |
| `finetuned` | a fine-tuning workdir (`finetune.json`, `model/`)    | `bertjax finetune`             |
| `workdir`   | a training workdir (`config.json`, `checkpoints/`)  | the trainer                    |
| `legacy`    | a bertjax directory from before the model registry  | bertjax before the registry    |
| `bertjax`   | a bertjax model directory (`config.json`, `params/`) | `save_model`, `import-hf`      |

Each `ModelDirFormat` says how to recognise one (`detect`, given the directory and its
`config.json` document) and how to load it (`load(path, with_heads)` -> (config, params in the
layout of `config.scan_layers`)). Formats are tried in registry order; the first that detects
wins. A new format is one entry here (its reader and writer in their own module of `interop/`),
and `tests/interop/test_model_dir_formats.py` round-trips it.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax.interop import finetuned_dir, model_dir
from bertjax.models import Model
from bertjax.models.registry import family_of
from bertjax.training.checkpoints import latest_params

logger = logging.getLogger(__name__)

Params = dict[str, Any]
CONFIG_NAME = model_dir.MODEL_CONFIG_NAME


@dataclasses.dataclass(frozen=True)
class ModelDirFormat:
    """One kind of model directory.

    Attributes:
      name: the format's name (`detect_format`'s answer).
      detect: (directory, its config.json document or {}) -> whether it is of this format.
      load: (directory, with_heads) -> (frozen model config, unboxed params).
    """

    name: str
    detect: Callable[[pathlib.Path, dict], bool]
    load: Callable[[pathlib.Path, bool], tuple[Any, Params]]


def _is_bertjax(document: dict) -> bool:
    return document.get("format") == model_dir.MODEL_FORMAT


def _load_bertjax(path: pathlib.Path, with_heads: bool) -> tuple[Any, Params]:
    config, params = model_dir.load_model_dir(path)
    present = params.get("heads", {})
    missing = [name for name in model_dir.heads_with_params(config) if name not in present]
    if with_heads and missing:
        fresh = model_dir.init_fresh_heads(config)["heads"]
        params = {**params, "heads": {**present, **{name: fresh[name] for name in missing}}}
        logger.warning("%s has no %s heads; initialised fresh", path, missing)
    return config, params


def _load_hf(path: pathlib.Path, with_heads: bool) -> tuple[Any, Params]:
    config, params, _ = model_dir.load_hf_dir(path, with_heads=with_heads)
    return config, params


def _load_workdir(path: pathlib.Path, with_heads: bool) -> tuple[Any, Params]:
    return model_dir.read_model_config(path), latest_params(path / "checkpoints")


def _load_finetuned(path: pathlib.Path, with_heads: bool) -> tuple[Any, Params]:
    return finetuned_dir.load_finetuned_params(path)


def _is_workdir(path: pathlib.Path, document: dict) -> bool:
    has_checkpoints = (path / "checkpoints").is_dir()
    return _is_bertjax(document) and has_checkpoints and not (path / model_dir.PARAMS_DIR).exists()


# detection order: the first format whose `detect` accepts a directory is its format
FORMATS: dict[str, ModelDirFormat] = {
    f.name: f
    for f in (
        ModelDirFormat("hf", lambda path, doc: "model_type" in doc, _load_hf),
        ModelDirFormat(
            "finetuned", lambda path, doc: finetuned_dir.is_finetuned(path), _load_finetuned
        ),
        ModelDirFormat("workdir", _is_workdir, _load_workdir),
        # written before the registry: no "family" (BERT), params under `bert`, `mlm_head`, ...
        ModelDirFormat(
            "legacy", lambda path, doc: _is_bertjax(doc) and "family" not in doc, _load_bertjax
        ),
        ModelDirFormat("bertjax", lambda path, doc: _is_bertjax(doc), _load_bertjax),
    )
}


def detect_format(path: str | pathlib.Path) -> str:
    """The `FORMATS` name of a model directory (the first whose `detect` accepts it)."""
    path = pathlib.Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    has_config = (path / CONFIG_NAME).is_file()
    document = model_dir.read_json(path / CONFIG_NAME) if has_config else {}
    for fmt in FORMATS.values():
        if fmt.detect(path, document):
            return fmt.name
    if not has_config:
        raise FileNotFoundError(
            f"{path} has no {CONFIG_NAME}: not a bertjax model or transformers directory"
        )
    raise ValueError(
        f"{path / CONFIG_NAME} has neither format 'bertjax' nor a transformers model_type"
    )


def load_params(path: str | pathlib.Path, *, with_heads: bool = True) -> tuple[Any, Params]:
    """(config, params) of any registered model directory (detected); with `with_heads`,
    missing pretraining heads of a bertjax directory start fresh."""
    path = pathlib.Path(path)
    return FORMATS[detect_format(path)].load(path, with_heads)


def load_partial(path: str | pathlib.Path) -> tuple[Any, Params, list[str]]:
    """(config, params, head names) of a model directory, with only the heads it really holds
    (none initialised fresh)."""
    path = pathlib.Path(path)
    name = detect_format(path)
    if name != "hf":
        config, params = FORMATS[name].load(path, False)
        return config, params, sorted(params.get("heads", {}))
    config, params, initialised = model_dir.load_hf_dir(path, with_heads=True)
    fresh = {p.split("/")[1] for p in initialised if p.startswith("heads/")}
    heads = {k: v for k, v in params.get("heads", {}).items() if k not in fresh}
    return config, {**params, "heads": heads}, sorted(heads)


def load_config(path: str | pathlib.Path) -> Any:
    """The frozen model config of a model directory, without reading its weights."""
    path = pathlib.Path(path)
    name = detect_format(path)
    if name == "hf":
        return model_dir.load_hf_config(path)
    if name == "finetuned":
        return model_dir.read_model_config(path / finetuned_dir.MODEL_DIR)
    return model_dir.read_model_config(path)


def load_pretrained(
    path: str | pathlib.Path,
    *,
    dtype: str | None = None,
    with_heads: bool = True,
    scan_layers: bool | None = None,
) -> tuple[nn.Module, Params]:
    """Loads a bertjax model directory, training workdir or transformers directory.

    Args:
      path: The directory (format detected from its config.json).
      dtype: Compute dtype override ("float32", "bfloat16", "float16"); parameters keep their
        stored dtype (`config.param_dtype`).
      with_heads: With the family's pretraining heads (BERT: MLM and NSP, GPT: the tied LM
        head; heads the checkpoint lacks are initialised fresh, with a warning); False gives the
        bare backbone.
      scan_layers: Override the layer layout (None keeps the stored one).

    Returns:
      (model, params): `model.apply({"params": params}, {"input_ids": ..., "token_type_ids":
      ..., "attention_mask": ...})` returns `sequence_output` [batch, length, hidden],
      `pooled_output` [batch, hidden] and, with heads, `mlm_logits` and `nsp_logits` (BERT) or
      `lm_logits` (GPT).
    """
    config, params = load_params(path, with_heads=with_heads)
    family = family_of(config)
    heads = {n: t for n, t in params.get("heads", {}).items() if n in family.pretraining_heads}
    params = {"backbone": params["backbone"], **({"heads": heads} if with_heads and heads else {})}
    if scan_layers is not None:
        config, params = model_dir.relayout(config, params, scan_layers)
    if dtype is not None:
        config = dataclasses.replace(config, dtype=dtype)
    model = Model(family, config, model_dir.pretraining_heads(family) if with_heads else ())
    return model, jax.tree.map(jnp.asarray, params)
