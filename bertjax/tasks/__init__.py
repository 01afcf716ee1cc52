"""Fine-tuning tasks behind one registry keyed by `config.task.kind`.

Each task module gives `read(task_cfg, path, split)` (split "train", "eval" or "predict": labels
optional), `from_input(value, index)` (an unlabelled example of a raw input), `labelled(examples)`
and `make_task(task_cfg, label_names)` (`task_cfg`: `config.task` or a mapping with `kind`); the task object is the train step's objective (device side:
`heads`, `counts`, `sums`; see `bertjax.objectives.base`) plus the host side (`featurize`,
`outputs_to_predictions`, `metrics`, `write_predictions`, `records`). A new task kind is one
module plus a
line here.
"""

from __future__ import annotations

import importlib

# config.task.kind -> module
TASKS = {
    "classification": "bertjax.tasks.classification",
    "regression": "bertjax.tasks.classification",
    "tagging": "bertjax.tasks.tagging",
    "qa": "bertjax.tasks.qa",
}
TASK_KINDS = tuple(TASKS)


def task_module(kind: str):
    """The module of a task kind; raises naming `config.task.kind` and the choices."""
    if kind not in TASKS:
        raise ValueError(f"config.task.kind={kind!r} is invalid: allowed values are {TASK_KINDS}")
    return importlib.import_module(TASKS[kind])


def compute_metrics(kind: str, *, references, predictions, num_labels: int | None = None):
    """The standard metrics of a task kind (see each task's `metrics`).

    `num_labels` (classification) decides whether F1 and MCC are added; None: binary when every
    label and prediction is 0 or 1.
    """
    import numpy as np

    if kind == "classification" and num_labels is None:
        values = set(np.unique(references).tolist()) | set(np.unique(predictions).tolist())
        num_labels = 2 if values <= {0, 1} else max(values) + 1
    names = [str(i) for i in range(num_labels or 0)]
    task = task_module(kind).make_task({"kind": kind}, names)
    return task.metrics(predictions, references)
