"""Configuration: config-file loading and command-line overrides.

Config files in `configs/` are Python files with `get_config() -> ml_collections.ConfigDict`. The
`config.model` group becomes its family's frozen dataclass at the edge
(`bertjax.models.model_config`); modules never see a ConfigDict.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import ml_collections

from bertjax import storage

DATA_VAR = "BERTJAX_DATA"  # config paths may start with $BERTJAX_DATA
FAMILY_OVERRIDE = "--config.model.family="
SIZES = ("--config.model.hidden_size=", "--config.model.vocab_size=")  # kept by a family swap


def data_root() -> pathlib.Path:
    """The shared data folder: $BERTJAX_DATA, else `../shared/data` beside the repository."""
    default = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
    return pathlib.Path(os.environ.get(DATA_VAR) or default)


def resolve_path(path: str) -> pathlib.Path:
    """Expands a leading `$BERTJAX_DATA` (at run time, so configs hold no absolute paths); a
    `gs://` or `s3://` URL becomes this host's cached copy (`bertjax.storage.local_copy`)."""
    if storage.is_remote(path):
        return storage.local_copy(str(path))
    prefix = "$" + DATA_VAR
    if path.startswith(prefix):
        return data_root() / path[len(prefix) :].lstrip("/")
    return pathlib.Path(path)


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
    """Loads a config file and applies command-line overrides.

    `--config.model.family=NAME` is applied first: when it changes the file's family, the config
    takes that family's defaults (`bertjax.spec.swap_family`: the shared sizes and the explicit
    choices are kept) before the other overrides, which are explicit choices, apply.
    """
    config = load_config_file(path)
    family = [o for o in overrides if o.startswith(FAMILY_OVERRIDE)]
    source = config.get("model", {}).get("family", "bert")
    if family:  # the shared sizes first too: a family's defaults may follow them
        family = [o for o in overrides if o.startswith(SIZES)] + family
    apply_overrides(config, family)
    if family and config.model.family != source:
        from bertjax import spec  # imports the model registry: only when the family changes

        before = spec.flatten(config)
        config = spec.swap_family(config, source)
        for item in overrides:  # a field the new family lacks: name it, not "unknown field"
            key = item[len("--config.") :].split("=", 1)[0]
            if key in before and key not in spec.flatten(config):
                raise ValueError(
                    f"--config.{key}: config.model.family={config.model.family!r} has no "
                    f"such field (family {source!r} has)"
                )
    apply_overrides(config, [o for o in overrides if o not in family])
    return config
