"""The fine-tuned bertjax model directory: a fine-tuning workdir's model and task, read and written.

A fine-tuned workdir holds, beside the training files:
  model/          a bertjax model directory (`bertjax.interop.model_dir`) whose params hold the
                  backbone and the task's head (`classifier`, `tagger` or `span`)
  finetune.json   {"kind": task kind, "label_names": [...], "task": {config.task}}: what
                  `bertjax predict` needs to featurize inputs as evaluation did

Workdirs written before the task config was saved (no "task") are completed with the defaults of
that time (`LEGACY_TASK_FIELDS`); a tagger saved before the model registry gets its head name
(`bertjax.interop.legacy`).
"""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax

from bertjax import files
from bertjax.interop import model_dir
from bertjax.interop.legacy import upgrade_task_heads
from bertjax.models.registry import family_of

logger = logging.getLogger(__name__)

TASK_FILE = "finetune.json"  # task kind, label names and task config of a fine-tuned workdir
MODEL_DIR = "model"
# Featurizer fields of workdirs whose finetune.json predates the saved task config: the
# defaults of configs/finetune/base.py then.
LEGACY_TASK_FIELDS = dict(
    max_len=128,
    doc_stride=128,
    max_query_length=64,
    max_answer_length=30,
    n_best=20,
    format="",
    text_a="sentence",
    text_b="",
    label="label",
    header=True,
    token_column=0,
    tag_column=-1,
    scheme="IOB2",
    split_by_article=False,
    eval_fraction=0.2,
    split_seed=0,
)


def save_finetuned(
    root: str | pathlib.Path,
    params: Mapping[str, Any],
    config: Any,
    vocab: str | pathlib.Path,
    options: Mapping[str, Any] | None,
    *,
    kind: str,
    label_names: Sequence[str],
    task: Mapping[str, Any],
) -> pathlib.Path:
    """Writes `root/model` (a bertjax model directory with the task head) and `finetune.json`.

    Args:
      root: the fine-tuning workdir.
      params: unboxed host params `{"backbone": ..., "heads": {<task head>: ...}}`.
      config: the model's frozen config.
      vocab, options: the tokenizer the task was featurized with.
      kind, label_names: the task kind and its label names (in head order).
      task: the task config (`config.task`), so prediction featurizes as evaluation did.
    """
    root = pathlib.Path(root)
    model_dir.save_model(root / MODEL_DIR, params, config, vocab, options or None, overwrite=True)
    document = {"kind": kind, "label_names": list(label_names), "task": dict(task)}
    files.atomic_write_text(root / TASK_FILE, json.dumps(document, indent=2) + "\n")
    return root


def read_task_file(root: str | pathlib.Path) -> dict[str, Any]:
    """The `finetune.json` of a fine-tuned workdir, its task config completed."""
    path = pathlib.Path(root) / TASK_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    for key in ("kind", "label_names"):
        if key not in saved:
            raise ValueError(f"{path} has no {key!r} field")
    if "task" not in saved:
        logger.warning(
            "%s was written before task configs were saved; featurizing with the defaults "
            "max_len=128, doc_stride=128 (re-save it with a newer bertjax to record them)",
            path,
        )
    saved["task"] = {**LEGACY_TASK_FIELDS, **saved.get("task", {}), "kind": saved["kind"]}
    return saved


def load_finetuned_params(root: str | pathlib.Path) -> tuple[Any, dict]:
    """(config, params) of a fine-tuned workdir's model, heads under today's names."""
    root = pathlib.Path(root)
    saved = json.loads((root / TASK_FILE).read_text())
    cfg, params = model_dir.load_model_dir(root / MODEL_DIR)
    return cfg, upgrade_task_heads(saved["kind"], params)


def is_finetuned(path: str | pathlib.Path) -> bool:
    """Whether `path` is a fine-tuned workdir (its `finetune.json` and `model/`)."""
    path = pathlib.Path(path)
    return (path / TASK_FILE).is_file() and (path / MODEL_DIR).is_dir()


def finetuned_workdir(path: str | pathlib.Path) -> pathlib.Path | None:
    """The fine-tuned workdir of `path` (the workdir itself or its `model/`), else None."""
    path = pathlib.Path(path)
    for root in (path, path.parent if path.name == MODEL_DIR else None):
        if root is not None and is_finetuned(root):
            return root
    return None


def export_hf(
    workdir: str | pathlib.Path, out_dir: str | pathlib.Path, *, overwrite: bool = False
) -> pathlib.Path:
    """Writes a fine-tuned workdir as a transformers directory of the matching head class.

    For BERT the result (`config.json` with the label names, `model.safetensors`, `vocab.txt`,
    `tokenizer_config.json`) loads with `transformers.BertForSequenceClassification`,
    `BertForTokenClassification` or `BertForQuestionAnswering` `.from_pretrained`. `out_dir` is
    written atomically; a non-empty one is refused unless `overwrite`.
    """
    workdir = pathlib.Path(workdir)
    saved = json.loads((workdir / TASK_FILE).read_text())
    cfg, params = load_finetuned_params(workdir)
    params = jax.device_get(params)
    hf = family_of(cfg).converter()
    vocab = model_dir.vocab_file(workdir / MODEL_DIR)
    options = model_dir.tokenizer_options(workdir / MODEL_DIR)
    with model_dir.atomic_dir(out_dir, overwrite=overwrite) as tmp:
        hf.write_hf_task_files(
            tmp, params, cfg, saved["kind"], saved["label_names"], vocab, options
        )
    return pathlib.Path(out_dir)
