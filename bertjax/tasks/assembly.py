"""A fine-tuning task put together: its examples read (`config.task`), its label names, the task
object of `config.task.kind` and the featurized splits; the model of a task kind.

Used by the fine-tuning job (`bertjax.training.finetune`); prediction featurizes with the same
task objects (`bertjax.inference.predictor`).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from bertjax import files, tasks
from bertjax.data.task_files import task_file
from bertjax.data.text import utf8_policy
from bertjax.models import Model
from bertjax.models.registry import family_of
from bertjax.tasks.common import Features, build_label_map, check_eval_labels, report_data_stats


@dataclasses.dataclass
class TaskData:
    """A featurized task: the task object, training features (None in eval-only mode), the eval
    features, the eval examples they came from (one per prediction row), and the vocabulary
    and tokenizer options that made them (they go with the fine-tuned model)."""

    task: Any
    train: Features | None
    eval: Features
    eval_examples: list
    vocab: pathlib.Path
    tokenizer_options: dict

    @property
    def kind(self) -> str:
        return self.task.kind

    @property
    def label_names(self) -> list[str]:
        return list(self.task.label_names)


def read_split(task_cfg: ml_collections.ConfigDict, split: str) -> list:
    """Reads the train or eval examples of `config.task`, cut to `max_{split}_examples`."""
    path = task_file(task_cfg, split)
    examples = tasks.task_module(task_cfg.kind).read(task_cfg, path, split)
    if not examples:
        raise ValueError(
            f"config.task.{split}_file: {path} holds no examples (it is empty or only a header)"
        )
    limit = task_cfg[f"max_{split}_examples"]
    return examples[:limit] if limit > 0 else examples


def build_task(
    config: ml_collections.ConfigDict,
    tokenizer,
    vocab: pathlib.Path,
    tokenizer_options: Mapping[str, Any],
    *,
    label_names: Sequence[str] | None = None,
) -> TaskData:
    """Reads and featurizes the task of `config.task` (`_build_task`), its files read under
    `config.data.strict_utf8` (`bertjax.data.text.utf8_policy`)."""
    with utf8_policy(config.data.get("strict_utf8", False)):
        return _build_task(config, tokenizer, vocab, tokenizer_options, label_names=label_names)


def _build_task(
    config: ml_collections.ConfigDict,
    tokenizer,
    vocab: pathlib.Path,
    tokenizer_options: Mapping[str, Any],
    *,
    label_names: Sequence[str] | None = None,
) -> TaskData:
    """Reads and featurizes the task of `config.task`.

    Args:
      config: the fine-tuning config.
      tokenizer: the WordPiece tokenizer of the init checkpoint (or of `config.data.vocab`).
      vocab, tokenizer_options: its vocabulary file and options.
      label_names: fixed label names (eval-only: those of the fine-tuned model); otherwise
        `config.task.labels`, or the sorted labels seen in the train and eval files.
    """
    task_cfg = config.task
    module = tasks.task_module(task_cfg.kind)
    eval_examples = read_split(task_cfg, "eval")
    if not module.labelled(eval_examples):
        what = (
            "answers" if task_cfg.kind == "qa" else f"labels (config.task.label={task_cfg.label!r})"
        )
        raise ValueError(
            f"config.task.eval_file={task_cfg.eval_file!r} has no {what}; evaluation needs them"
        )
    train_examples = [] if config.eval_only else read_split(task_cfg, "train")
    names: list[str] = []
    if task_cfg.kind in ("classification", "tagging"):
        fixed = label_names or list(task_cfg.labels) or None
        names = list(build_label_map(train_examples + eval_examples, fixed))
        if fixed is None and train_examples:
            names = list(build_label_map(train_examples))
            check_eval_labels(eval_examples, names, task_cfg.train_file)
    task = module.make_task(task_cfg, names)
    train_features = None
    if not config.eval_only:
        train_features = task.featurize(task_cfg, train_examples, tokenizer, training=True)
        report_data_stats("train", train_features.stats, task_cfg)
    eval_features = task.featurize(task_cfg, eval_examples, tokenizer, training=False)
    report_data_stats("eval", eval_features.stats, task_cfg)
    return TaskData(
        task, train_features, eval_features, eval_examples, vocab, dict(tokenizer_options)
    )


def make_model(kind: str, cfg, num_labels: int = 0):
    """The fine-tuning model of a task kind: the backbone of `cfg`'s family and the task's head."""
    names = [str(i) for i in range(num_labels)]
    task = tasks.task_module(kind).make_task({"kind": kind}, names)
    return Model(family_of(cfg), cfg, task.heads)


def write_data_stats(workdir: pathlib.Path, data: TaskData) -> None:
    """`data_stats.json`: the featurizers' counts (truncations, cut tags, skipped answers)."""
    stats = {"eval": data.eval.stats}
    if data.train is not None:
        stats["train"] = data.train.stats
    stats = {split: {k: int(v) for k, v in counts.items()} for split, counts in stats.items()}
    files.atomic_write_text(workdir / "data_stats.json", json.dumps(stats, indent=2) + "\n")
