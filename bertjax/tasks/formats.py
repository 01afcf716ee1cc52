"""Registries of task file formats (`config.task.format`) and metrics (`config.task.metric`),
per task kind.

A format names a reader `read(task_cfg, path, split) -> examples` (split "train", "eval" or
"predict"); a metric names `metrics(predictions, references) -> {name: value}`. Entries are
"module:function" strings imported on first use, so a task kind never imports the modules that
register formats for it (the Korean datasets, `bertjax.tasks.korean`, read into the task kinds'
example classes). A new format or metric is a function plus a line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

_TABLE = "bertjax.tasks.classification:read_table"  # "" infers tsv/csv/jsonl from the suffix
_CLASSIFICATION_FORMATS = {
    "": _TABLE,
    "tsv": _TABLE,
    "csv": _TABLE,
    "jsonl": _TABLE,
    "klue-nli": "bertjax.tasks.korean:read_klue_nli_task",
    "klue-sts": "bertjax.tasks.korean:read_klue_sts_task",
}
# task kind -> config.task.format -> reader
READERS: dict[str, dict[str, str]] = {
    "classification": _CLASSIFICATION_FORMATS,
    "regression": _CLASSIFICATION_FORMATS,
    "tagging": {
        "": "bertjax.tasks.tagging:read_conll_task",
        "conll": "bertjax.tasks.tagging:read_conll_task",
        "klue-ner": "bertjax.tasks.korean:read_klue_ner_task",
    },
    "qa": {"": "bertjax.tasks.qa:read_squad_task", "squad": "bertjax.tasks.qa:read_squad_task"},
}
# task kind -> config.task.metric -> metrics (the first is the default)
METRICS: dict[str, dict[str, str]] = {
    "tagging": {
        "conll": "bertjax.tasks.tagging:conll_metrics",
        "klue": "bertjax.tasks.korean:klue_ner_task_metrics",
    },
    "qa": {
        "squad": "bertjax.tasks.qa:squad_em_f1",
        "korquad": "bertjax.tasks.korean:korquad_em_f1",
    },
}


def _load(target: str) -> Callable:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _lookup(registry: dict[str, dict[str, str]], kind: str, name: str, field: str) -> str:
    choices = registry.get(kind, {})
    if name not in choices:
        allowed = sorted(n for n in choices if n)
        raise ValueError(
            f"config.task.{field}={name!r} is invalid for {kind}: allowed values are {allowed}"
        )
    return choices[name]


def reader(kind: str, fmt: str) -> Callable:
    """The reader of `config.task.format=fmt` for task `kind`; raises naming the field."""
    return _load(_lookup(READERS, kind, fmt or "", "format"))


def metric_name(kind: str, name: str | None) -> str:
    """`config.task.metric` checked for task `kind` (empty: the kind's default)."""
    name = name or next(iter(METRICS[kind]))
    _lookup(METRICS, kind, name, "metric")
    return name


def metrics(kind: str, name: str) -> Callable:
    """The metrics function of `config.task.metric=name` for task `kind`."""
    return _load(_lookup(METRICS, kind, name, "metric"))
