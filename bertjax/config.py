"""Configuration: the frozen `BertConfig`, config-file loading, command-line overrides, validation.

Config files in `configs/` are Python files with `get_config() -> ml_collections.ConfigDict`. The
`config.model` group becomes one frozen `BertConfig` here, at the edge; modules never see a ConfigDict.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import ml_collections

ATTENTION_IMPLS = ("xla", "cudnn")
HIDDEN_ACTS = ("gelu", "gelu_tanh")
REMAT_POLICIES = ("none", "full", "dots")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture and numerics of a BERT encoder. Field names follow `config.model`."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"  # "gelu" (exact, erf) as in BERT, or "gelu_tanh"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"  # storage dtype
    attention_impl: str = "xla"  # "xla" anywhere, "cudnn" flash attention on NVIDIA GPUs
    scan_layers: bool = False  # stack layers with nn.scan (faster compile for deep models)
    remat_policy: str = "none"  # "none", "full" (recompute each layer) or "dots" (save matmuls)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def __post_init__(self):
        validate_model(self)


def _fail(field: str, value: Any, allowed: str) -> None:
    raise ValueError(f"config.model.{field}={value!r} is invalid: {allowed}")


def validate_model(cfg: BertConfig) -> None:
    """Checks a model config; raises ValueError naming the field and the allowed values."""
    for name in (
        "vocab_size",
        "hidden_size",
        "num_layers",
        "num_heads",
        "intermediate_size",
        "max_position_embeddings",
        "type_vocab_size",
    ):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value <= 0:
            _fail(name, value, "must be a positive integer")
    if cfg.hidden_size % cfg.num_heads:
        _fail(
            "hidden_size",
            cfg.hidden_size,
            f"must be divisible by config.model.num_heads={cfg.num_heads}",
        )
    for name in ("hidden_dropout", "attention_dropout"):
        value = getattr(cfg, name)
        if not 0.0 <= value < 1.0:
            _fail(name, value, "must be in [0, 1)")
    if cfg.attention_impl not in ATTENTION_IMPLS:
        _fail("attention_impl", cfg.attention_impl, f"allowed values are {ATTENTION_IMPLS}")
    if cfg.attention_impl == "cudnn" and cfg.attention_dropout > 0:
        _fail(
            "attention_dropout",
            cfg.attention_dropout,
            "cuDNN flash attention has no dropout on the attention probabilities; "
            "set config.model.attention_dropout=0.0 or config.model.attention_impl='xla'",
        )
    if cfg.attention_impl == "cudnn" and cfg.dtype not in ("bfloat16", "float16"):
        _fail(
            "dtype",
            cfg.dtype,
            "cuDNN flash attention computes in bfloat16 or float16; "
            "set config.model.dtype='bfloat16' or config.model.attention_impl='xla'",
        )
    if cfg.hidden_act not in HIDDEN_ACTS:
        _fail("hidden_act", cfg.hidden_act, f"allowed values are {HIDDEN_ACTS}")
    if cfg.remat_policy not in REMAT_POLICIES:
        _fail("remat_policy", cfg.remat_policy, f"allowed values are {REMAT_POLICIES}")
    for name in ("dtype", "param_dtype"):
        if getattr(cfg, name) not in DTYPES:
            _fail(name, getattr(cfg, name), f"allowed values are {DTYPES}")
    if not 0 <= cfg.pad_token_id < cfg.vocab_size:
        _fail("pad_token_id", cfg.pad_token_id, f"must be in [0, vocab_size={cfg.vocab_size})")


def bert_config(model: ml_collections.ConfigDict | dict) -> BertConfig:
    """Builds the frozen `BertConfig` from the `config.model` group, rejecting unknown fields."""
    values = dict(model.to_dict() if hasattr(model, "to_dict") else model)
    known = {f.name for f in dataclasses.fields(BertConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"config.model has unknown fields {unknown}; known fields: {sorted(known)}"
        )
    return BertConfig(**values)


def load_config_file(path: str | pathlib.Path) -> ml_collections.ConfigDict:
    """Loads `get_config()` from a Python config file such as `configs/base.py`.

    The folder above the nearest enclosing `configs/` is put on `sys.path`, so variants can
    `from configs import base` or `from configs.finetune import base`.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    resolved = path.resolve()
    folders = [p for p in resolved.parents if p.name == "configs"]
    root = str(folders[0].parent if folders else resolved.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(f"_bertjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path} defines no get_config()")
    return module.get_config()


def _parse_value(text: str, current: Any, field: str) -> Any:
    if isinstance(current, str) or current is None:
        if current is None:
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return text
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as err:
        raise ValueError(
            f"--config.{field}={text!r}: cannot parse as {type(current).__name__}"
        ) from err
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"--config.{field}={text!r}: expected True or False")
        return value
    if isinstance(current, float) and isinstance(value, int):
        return float(value)
    if isinstance(current, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(current)(value)
    if type(value) is not type(current):
        raise ValueError(
            f"--config.{field}={text!r}: expected {type(current).__name__}, got {type(value).__name__}"
        )
    return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """Applies `--config.a.b=value` overrides in place; unknown fields are errors."""
    for item in overrides:
        if not item.startswith("--config.") or "=" not in item:
            raise ValueError(f"override {item!r} must look like --config.group.field=value")
        key, text = item[len("--config.") :].split("=", 1)
        *parents, leaf = key.split(".")
        node = config
        for i, part in enumerate(parents):
            if part not in node:
                raise ValueError(
                    f"--config.{key}: unknown field config.{'.'.join(parents[: i + 1])}"
                )
            node = node[part]
        if leaf not in node:
            known = ", ".join(sorted(node.keys()))
            raise ValueError(f"--config.{key}: unknown field; known fields here: {known}")
        with node.ignore_type():
            node[leaf] = _parse_value(text, node[leaf], key)


def load_config(
    path: str | pathlib.Path, overrides: Sequence[str] = ()
) -> ml_collections.ConfigDict:
    """Loads a config file and applies command-line overrides."""
    config = load_config_file(path)
    apply_overrides(config, overrides)
    return config
