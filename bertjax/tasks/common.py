"""What every fine-tuning task shares: `Features`, special ids, label maps, the device-side
protocol (`TaskBase`, `LabelTask`: the one train step's objective protocol, see
`bertjax.objectives.base`), and the host-side helpers the featurizers use.

The featurizers are numpy; the device side (`counts`, `sums`) runs inside the jitted step.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np

from bertjax.data.tokenizer import END_OF_TEXT
from bertjax.models import head_spec
from bertjax.objectives.base import apply, nll_and_hits

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of positions the token-classification loss must skip


@dataclasses.dataclass
class Features:
    """Featurized examples, all arrays sharing the leading feature axis N.

    Attributes:
        arrays: device inputs: `input_ids`, `token_type_ids`, `attention_mask` (int32
            [N, max_len]) and the labels of the task (`labels`, or `start_positions` /
            `end_positions` for QA).
        meta: host-only per-feature arrays needed to map predictions back to examples.
        stats: counts for the caller to log, e.g. how many examples were truncated.
    """

    arrays: dict[str, np.ndarray]
    meta: dict[str, np.ndarray]
    stats: dict[str, int]

    def __len__(self) -> int:
        return len(self.arrays["input_ids"])


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """Ids of the special tokens a BERT input needs."""

    cls: int
    sep: int
    pad: int

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer,
        *,
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
    ) -> SpecialIds:
        """Looks the special tokens up in the tokenizer's vocabulary; raises if one is missing.

        A byte-level BPE tokenizer (GPT) has none of them: its <|endoftext|> plays all three,
        so an input reads `<|endoftext|> a <|endoftext|> (b <|endoftext|>)` and a causal
        model's last real token (its `pooled_output`) has seen the whole input.
        """
        eos = tokenizer.token_to_id(END_OF_TEXT)
        if eos is not None and tokenizer.token_to_id(cls_token) is None:
            return cls(cls=eos, sep=eos, pad=eos)
        ids = {}
        for name, token in (("cls", cls_token), ("sep", sep_token), ("pad", pad_token)):
            ids[name] = tokenizer.token_to_id(token)
            if ids[name] is None:
                raise ValueError(f"special token {token!r} is not in the tokenizer's vocabulary")
        return cls(**ids)


def build_label_map(examples: Sequence, labels: Sequence[str] | None = None) -> dict[str, int]:
    """Maps label names to ids, from an explicit list or the sorted labels seen.

    Works on `TextExample`s (their `label`) and `TaggedSentence`s (their `tags`); unlabelled
    examples are ignored.

    Args:
        examples: the training examples.
        labels: the label names in id order; when given, every example label must be one.

    Returns:
        {label name: id}.

    Raises:
        ValueError: a label is not in `labels` (naming it, its file and line, and the known labels),
            or no example has a label.
    """
    if labels is not None:
        label_map = {name: i for i, name in enumerate(labels)}
        for example in examples:
            for value in _labels_of(example):
                check_label(value, label_map, example.source)
        return label_map
    seen = {value for example in examples for value in _labels_of(example)}
    if not seen:
        raise ValueError("no example has a label; pass `labels` explicitly")
    return {name: i for i, name in enumerate(sorted(seen))}


def check_eval_labels(eval_examples: Sequence, label_map: Mapping[str, int], train_file) -> None:
    """Raises naming the file, line and label of the first evaluation label that training never
    saw (it would become a class the head never learns, and F1/MCC would vanish)."""
    for example in eval_examples:
        for value in _labels_of(example):
            if value not in label_map:
                raise ValueError(
                    f"{example.source}: label {value!r} never occurs in the training file "
                    f"{train_file} (its labels: {list(label_map)}); fix the label, or list every "
                    "label in config.task.labels to evaluate it anyway"
                )


def _labels_of(example) -> tuple[str, ...]:
    if hasattr(example, "tags"):
        return tuple(example.tags)
    return () if example.label is None else (example.label,)


def check_label(value: str, label_map: Mapping[str, int], source: str) -> int:
    if value not in label_map:
        raise ValueError(f"{source}: unknown label {value!r}; known labels: {list(label_map)}")
    return label_map[value]


def place_segments(arrays, row: int, a: Sequence[int], b: Sequence[int] | None, special) -> None:
    """Writes `[CLS] a [SEP] (b [SEP])` into row `row` of the input arrays."""
    tokens = [special.cls, *a, special.sep]
    n_first = len(tokens)
    if b is not None:
        tokens += [*b, special.sep]
    arrays["input_ids"][row, : len(tokens)] = tokens
    arrays["token_type_ids"][row, n_first : len(tokens)] = 1
    arrays["attention_mask"][row, : len(tokens)] = 1


def check_tokenizer(tokenizer) -> None:
    if getattr(tokenizer, "truncation", None) or getattr(tokenizer, "padding", None):
        raise ValueError(
            "the tokenizer must have truncation and padding off (the featurizer does both)"
        )


def encode_ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]


def empty_inputs(n: int, max_len: int, pad_id: int) -> dict[str, np.ndarray]:
    return {
        "input_ids": np.full((n, max_len), pad_id, np.int32),
        "token_type_ids": np.zeros((n, max_len), np.int32),
        "attention_mask": np.zeros((n, max_len), np.int32),
    }


def same_shape(labels, predictions) -> tuple[np.ndarray, np.ndarray]:
    labels, predictions = np.asarray(labels).reshape(-1), np.asarray(predictions).reshape(-1)
    if labels.shape != predictions.shape:
        raise ValueError(f"{labels.size} labels but {predictions.size} predictions")
    return labels, predictions


# stats key -> what a non-zero count means; logged as warnings and kept in data_stats.json
DATA_WARNINGS = {
    "num_truncated": "examples cut to config.task.max_len={max_len}",
    "words_cut": "words cut by truncation (they get no prediction and count as 'O')",
    "tagged_words_cut": "of the cut words had an entity tag (lost to truncation)",
    "words_without_pieces": "words without any word piece (they predict 'O')",
    "answers_mismatched": "answers not found in their context (skipped in training)",
    "questions_truncated": "questions cut to config.task.max_query_length={max_query_length}",
}


def report_data_stats(split: str, stats: Mapping[str, int], task_cfg) -> None:
    """Logs the featurizer's counts, with a warning for each count of lost or cut data."""
    logger.info("%s features: %s", split, dict(stats))
    for key, message in DATA_WARNINGS.items():
        if stats.get(key):
            logger.warning("%s data: %d %s", split, stats[key], message.format(**task_cfg))


@dataclasses.dataclass(frozen=True, eq=False)
class TaskBase:
    """The device side every task shares: no corruption, one loss term `task`.

    A subclass sets `kind` and `heads` and implements `sums` (device), and on the host
    `featurize(task_cfg, examples, tokenizer, training)`, `outputs_to_predictions(...)`,
    `metrics(predictions, references)`, `write_predictions(...)` and `records(task_cfg,
    examples, features, outputs)` (one JSON-able dict per example, for `bertjax predict`).
    """

    kind: ClassVar[str] = ""
    label_names: tuple[str, ...] = ()
    loss_terms: ClassVar[tuple] = (("task", 1.0),)
    reports_accuracy: ClassVar[bool] = False

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def prepare(self, rng, batch):
        return batch

    def counts(self, batch) -> dict[str, Any]:
        return {"task_count": self.count(batch)}

    def count(self, batch):
        """Examples in the batch (a subclass counts labelled tokens instead)."""
        return jnp.asarray(batch["input_ids"].shape[0], jnp.float32)

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
        count = max(float(sums["task_count"]), 1.0)
        out = {"loss": float(sums["task_loss"]) / count}
        if self.reports_accuracy:
            out["accuracy"] = float(sums["task_correct"]) / count
        return out

    def flops_per_sequence(self, family, config, seq_len: int) -> float:
        """3 x the backbone's forward pass (the head is negligible against it)."""
        return 3.0 * family.forward_flops(config, seq_len)


def label_sums(logits, labels) -> dict[str, Any]:
    """Summed cross-entropy, top-1 hits and count of the labels that are not `IGNORE_INDEX`
    (classes [B] or tags [B, L]), for `TaskBase.sums`."""
    weights = (labels != IGNORE_INDEX).astype(jnp.float32)
    nll, hit = nll_and_hits(logits, jnp.where(weights > 0, labels, 0))
    return {
        "task_loss": jnp.sum(nll * weights),
        "task_correct": jnp.sum(hit * weights),
        "task_count": jnp.sum(weights),
    }


@dataclasses.dataclass(frozen=True, eq=False)
class LabelTask(TaskBase):
    """A task with one cross-entropy over `label_names` from head `head` (classes [B] or tags
    [B, L]); positions labelled `IGNORE_INDEX` are left out of the loss and the count."""

    head: ClassVar[str] = ""
    reports_accuracy: ClassVar[bool] = True

    @property
    def heads(self):
        return (head_spec(self.head, num_labels=self.num_labels),)

    def count(self, batch):
        return jnp.sum((batch["labels"] != IGNORE_INDEX).astype(jnp.float32))

    def sums(self, model, params, batch, dropout_rng) -> dict[str, Any]:
        out = apply(model, params, batch, dropout_rng, only=(self.head,))
        return label_sums(out["logits"], batch["labels"])
