"""Where a fine-tuning task's examples come from: `config.task.{train,eval}_file`."""

from __future__ import annotations

import pathlib

from bertjax.config import resolve_path


def task_file(task_cfg, split: str) -> pathlib.Path:
    """The file of `config.task.{split}_file` (`$BERTJAX_DATA` expanded); raises naming the
    field when it does not exist."""
    path = resolve_path(task_cfg[f"{split}_file"])
    if path.is_dir():
        raise ValueError(f"config.task.{split}_file: {path} is a folder, not a data file")
    if not path.is_file():
        raise FileNotFoundError(f"config.task.{split}_file: {path} does not exist")
    return path
