"""Sequence classification and regression (SST-2, RTE, STS-B, KorNLI, ...): reader, featurizer,
loss, metrics and prediction writer.

Reads TSV (no quoting, as GLUE needs), CSV or JSONL with named or numbered columns; one segment
or a pair; classifies from the pooled state (`classifier` head) or, with one output, scores.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np
import scipy.stats
import tokenizers

from bertjax.data import entities
from bertjax.data.text import TextFile
from bertjax.models import head_spec
from bertjax.objectives.base import apply
from bertjax.tasks import formats
from bertjax.tasks.common import (
    Features,
    LabelTask,
    SpecialIds,
    TaskBase,
    check_label,
    check_tokenizer,
    empty_inputs,
    encode_ids,
    place_segments,
    same_shape,
)

_FORMATS = ("tsv", "csv", "jsonl")

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TextExample:
    """One sequence classification / regression example.

    Attributes:
        text_a: first segment.
        text_b: second segment for pair tasks, else None.
        label: raw label string (class name or float score as text); None for unlabelled sets.
        source: "path:line" of the row, used in error messages.
        entities: character spans of entities in text_a (the JSONL field "entities", read with
            config.task.entities="jsonl").
    """

    text_a: str
    text_b: str | None
    label: str | None
    source: str
    entities: tuple[tuple[int, int], ...] = ()


def read_text_classification(
    path: str | pathlib.Path,
    *,
    format: str | None = None,
    text_a: str | int,
    text_b: str | int | None = None,
    label: str | int | None = None,
    header: bool = True,
    delimiter: str | None = None,
    skip_rows: int = 0,
    label_optional: bool = False,
) -> list[TextExample]:
    """Reads a sentence (pair) classification or regression file.

    TSV is read without quoting (`csv.QUOTE_NONE`, as GLUE needs); CSV uses standard quoting; a
    leading byte-order mark is dropped.

    Args:
        path: the data file.
        format: "tsv", "csv" or "jsonl"; inferred from the file suffix when None.
        text_a: column of the first segment: a header name or a 0-based index (a key for JSONL).
        text_b: column of the second segment, or None for single-sentence tasks.
        label: label column, or None for unlabelled (test) files.
        header: whether the first row (after `skip_rows`) names the columns (TSV/CSV).
        delimiter: overrides the format's delimiter (TSV/CSV).
        skip_rows: lines to skip before the header or data (TSV/CSV).
        label_optional: a file without the label column (header name or JSONL key) is read as
            unlabelled instead of raising (prediction inputs).

    Returns:
        One `TextExample` per data row, in file order.

    Raises:
        ValueError: on an unknown format or column, or a row with the wrong number of columns;
            the message names the file and line.
    """
    path = pathlib.Path(path)
    format = format or path.suffix.lstrip(".").lower()
    if format not in _FORMATS:
        raise ValueError(f"{path}: format must be one of {_FORMATS}, got {format!r}")
    if format == "jsonl":
        return _read_jsonl(path, text_a, text_b, label, label_optional)
    return _read_delimited(
        path, format, text_a, text_b, label, header, delimiter, skip_rows, label_optional
    )


def _read_jsonl(path, text_a, text_b, label, label_optional=False) -> list[TextExample]:
    examples = []
    with TextFile(path, "a JSONL task file") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            source = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{source}: invalid JSON ({e})") from None
            values = []
            for j, key in enumerate((text_a, text_b, label)):
                if j == 2 and label_optional and key not in row:
                    key = None
                if key is not None and key not in row:
                    raise ValueError(f"{source}: missing key {key!r}; keys are {sorted(row)}")
                values.append(None if key is None else str(row[key]))
            spans = entities.spans_from_field(row.get("entities"), values[0], source)
            examples.append(TextExample(*values, source=source, entities=tuple(spans)))
    return examples


def _read_delimited(
    path, format, text_a, text_b, label, header, delimiter, skip_rows, label_optional=False
):
    if delimiter is None:
        delimiter = "\t" if format == "tsv" else ","
    quoting = csv.QUOTE_NONE if format == "tsv" else csv.QUOTE_MINIMAL
    examples = []
    with TextFile(path, f"a {format.upper()} task file") as f:
        for _ in range(skip_rows):
            f.readline()
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        names, n_columns = None, None
        if header:
            names = next(reader, None)
            if names is None:  # an empty file: no examples (`read_split` names the file)
                return examples
            n_columns = len(names)
            _warn_unnamed_header(path, names, (text_a, text_b, label), skip_rows)
            if label_optional and isinstance(label, str) and label not in names:
                label = None
        columns = [_column_index(c, names, path) for c in (text_a, text_b, label)]
        for row in reader:
            line_no = reader.line_num + skip_rows
            if not row:
                continue
            n_columns = n_columns or len(row)
            if len(row) != n_columns:
                raise ValueError(
                    f"{path}:{line_no}: expected {n_columns} columns, found {len(row)}"
                )
            if any(c is not None and c >= len(row) for c in columns):
                raise ValueError(f"{path}:{line_no}: row has only {len(row)} columns")
            values = [None if c is None else row[c] for c in columns]
            examples.append(TextExample(*values, source=f"{path}:{line_no}"))
    return examples


def _warn_unnamed_header(path, names, columns, skip_rows) -> None:
    """Says so when the first row is taken as a header although every column is given by index
    (a file without a header loses its first example this way)."""
    if names and all(c is None or isinstance(c, int) for c in columns):
        log.warning(
            "%s:%d: the first row %s is read as a header and skipped (config.task.header=True); "
            "if it is data, set config.task.header=False",
            path,
            skip_rows + 1,
            names,
        )


def _column_index(column, names, path) -> int | None:
    """A column given by header name or 0-based index, as an index."""
    if column is None or isinstance(column, int):
        return column
    if names is None:
        raise ValueError(f"{path}: column {column!r} given by name but header=False")
    if column not in names:
        raise ValueError(
            f"{path}: no column {column!r}; the header has {names} (a file without a header: "
            "set config.task.header=False and give the columns by index)"
        )
    return names.index(column)


def featurize_text_classification(
    examples: Sequence[TextExample],
    tokenizer: tokenizers.Tokenizer,
    *,
    max_len: int = 128,
    label_map: Mapping[str, int] | None = None,
    regression: bool = False,
    special: SpecialIds | None = None,
    spans: entities.SpanSource | None = None,
) -> Features:
    """Builds `[CLS] A [SEP] (B [SEP])` inputs with longest-first truncation.

    Longest-first removes pieces from the end of the longer segment (of B on ties) until the pair
    fits, as the original BERT does.

    Args:
        examples: the examples; all labelled or all unlabelled.
        tokenizer: a BERT WordPiece tokenizer.
        max_len: sequence length L of every feature.
        label_map: {label: id} for classification (see `build_label_map`).
        regression: labels are float scores instead of class names.
        special: special token ids; looked up in the tokenizer when None.
        spans: the entity span source (`config.task.entities`): its `[ENT]`/`[/ENT]` markers are
            written around the entities of A and B, and `entity_ids` is emitted.

    Returns:
        `Features` with arrays `input_ids`, `token_type_ids`, `attention_mask` (int32 [N, L]),
        with `spans` `entity_ids` (int32 [N, L], 1 from `[ENT]` to `[/ENT]`) and,
        for labelled examples, `labels` (int32 [N], or float32 [N] for regression); no meta;
        stats `num_examples` and `num_truncated`.
    """
    special = special or SpecialIds.from_tokenizer(tokenizer)
    check_tokenizer(tokenizer)
    pair = examples[0].text_b is not None if examples else False
    budget = max_len - (3 if pair else 2)
    if budget < 2:
        raise ValueError(f"max_len={max_len} leaves no room for text")
    texts_a, texts_b = [e.text_a for e in examples], [e.text_b or "" for e in examples]
    if spans is not None:
        markers = spans.marker_ids(tokenizer, "config.task.entities")
        texts_a = [spans.mark(t, e.entities) for t, e in zip(texts_a, examples, strict=True)]
        texts_b = [spans.mark(t) for t in texts_b]
    ids_a = encode_ids(tokenizer, texts_a)
    ids_b = encode_ids(tokenizer, texts_b) if pair else None
    arrays = empty_inputs(len(examples), max_len, special.pad)
    num_truncated = 0
    for i, a in enumerate(ids_a):
        b = ids_b[i] if pair else []
        n_a, n_b = _longest_first(len(a), len(b), budget)
        num_truncated += (n_a, n_b) != (len(a), len(b))
        place_segments(arrays, i, a[:n_a], b[:n_b] if pair else None, special)
    if spans is not None:
        arrays["entity_ids"] = entities.entity_ids(arrays["input_ids"], *markers)
    labels = _classification_labels(examples, label_map, regression)
    if labels is not None:
        arrays["labels"] = labels
    stats = {"num_examples": len(examples), "num_truncated": num_truncated}
    return Features(arrays, {}, stats)


def span_source(task_cfg) -> entities.SpanSource | None:
    """The entity span source `config.task.entities` names ("": none)."""
    spec = task_cfg.get("entities", "")
    return entities.SpanSource(spec, "config.task.entities") if spec else None


def _longest_first(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Lengths left after popping from the longer segment (B on ties) until both fit `budget`."""
    if len_a + len_b <= budget:
        return len_a, len_b
    shorter = min(len_a, len_b)
    if budget - shorter >= shorter:  # only the longer one is cut
        return (budget - len_b, len_b) if len_a > len_b else (len_a, budget - len_a)
    return (budget + 1) // 2, budget // 2  # both cut to halves; A keeps the odd piece


def _classification_labels(examples, label_map, regression) -> np.ndarray | None:
    labelled = [e.label is not None for e in examples]
    if not any(labelled):
        return None
    if not all(labelled):
        missing = examples[labelled.index(False)]
        raise ValueError(f"{missing.source}: no label, but other examples have one")
    if regression:
        return np.array([_parse_float(e.label, e.source) for e in examples], np.float32)
    if label_map is None:
        raise ValueError("labelled classification examples need a label_map (build_label_map)")
    return np.array([check_label(e.label, label_map, e.source) for e in examples], np.int32)


def _parse_float(value: str, source: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{source}: regression label {value!r} is not a number") from None


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Fraction of predictions equal to the labels.

    Args:
        labels: int [N] gold class ids.
        predictions: int [N] predicted class ids.
    """
    labels, predictions = same_shape(labels, predictions)
    return float(np.mean(labels == predictions)) if labels.size else 0.0


def binary_f1(labels: np.ndarray, predictions: np.ndarray) -> float:
    """F1 of the positive class 1: 2 tp / (2 tp + fp + fn); 0 when there is no positive at all.

    Args:
        labels: int [N] gold labels in {0, 1}.
        predictions: int [N] predicted labels in {0, 1}.
    """
    labels, predictions = same_shape(labels, predictions)
    tp = np.sum((predictions == 1) & (labels == 1))
    wrong = np.sum((predictions == 1) != (labels == 1))  # fp + fn
    return float(2 * tp / (2 * tp + wrong)) if tp + wrong else 0.0


def matthews_corrcoef(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Matthews correlation coefficient, multi-class (Gorodkin's R_K); 0 when undefined.

    With the confusion matrix C, s = N samples, c = correct, t_k = true count of class k and
    p_k = predicted count: (c s - sum p_k t_k) / sqrt((s^2 - sum p_k^2) (s^2 - sum t_k^2)).
    For two classes this is (tp tn - fp fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)).

    Args:
        labels: int [N] gold class ids.
        predictions: int [N] predicted class ids.
    """
    labels, predictions = same_shape(labels, predictions)
    classes, inverse = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    true_ids, pred_ids = inverse[: len(labels)], inverse[len(labels) :]
    t = np.bincount(true_ids, minlength=len(classes)).astype(np.float64)
    p = np.bincount(pred_ids, minlength=len(classes)).astype(np.float64)
    s, c = float(len(labels)), float(np.sum(true_ids == pred_ids))
    denominator = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - p @ t) / denominator) if denominator > 0 else 0.0


def pearson_spearman(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlations of predicted and gold scores.

    Args:
        labels: float [N] gold scores.
        predictions: float [N] predicted scores.

    Returns:
        {"pearson": r, "spearman": rho}.
    """
    labels, predictions = same_shape(labels, predictions)
    return {
        "pearson": float(scipy.stats.pearsonr(predictions, labels)[0]),
        "spearman": float(scipy.stats.spearmanr(predictions, labels)[0]),
    }


def _column(value: str) -> str | int | None:
    if value == "":
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def read(task_cfg, path: pathlib.Path, split: str) -> list[TextExample]:
    """The examples of a `config.task` file; for `split="predict"` the label column may be
    absent, and a `.txt` file holds one text per line (a tab separates a pair)."""
    if split == "predict" and path.suffix.lower() == ".txt":
        return iter_text_lines(path)  # lazily: a long file streams
    return formats.reader(task_cfg.kind, task_cfg.format)(task_cfg, path, split)


def read_table(task_cfg, path: pathlib.Path, split: str) -> list[TextExample]:
    """A TSV, CSV or JSONL file of `config.task` (columns `text_a`, `text_b`, `label`)."""
    return read_text_classification(
        path,
        format=task_cfg.format or None,
        text_a=_column(task_cfg.text_a),
        text_b=_column(task_cfg.text_b),
        label=_column(task_cfg.label),
        header=task_cfg.header,
        label_optional=split == "predict",
    )


def iter_text_lines(path: str | pathlib.Path):
    """Unlabelled examples of a plain text file, one per non-empty line, read lazily; a tab
    splits a line into a pair (text_a, text_b)."""
    with TextFile(path, "a text input file") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield text_example(line, source=f"{path}:{line_no}")


def text_example(text: str, text_b: str | None = None, *, source: str) -> TextExample:
    """An unlabelled example of a text; without `text_b`, a tab in `text` splits a pair."""
    if text_b is None and "\t" in text:
        text, text_b = text.split("\t", 1)
    return TextExample(text, text_b, None, source)


def from_input(value: str | Sequence[str], index: int) -> TextExample:
    """The unlabelled example of a raw input: a text (a tab splits a pair) or a pair."""
    if isinstance(value, str):
        return text_example(value, source=f"input {index}")
    if len(value) != 2:
        raise ValueError(f"input {index}: expected a text or a (text_a, text_b) pair")
    return text_example(value[0], value[1], source=f"input {index}")


def labelled(examples: Sequence[TextExample]) -> bool:
    return any(e.label is not None for e in examples)


@dataclasses.dataclass(frozen=True, eq=False)
class Classification(LabelTask):
    """Cross-entropy over `label_names` from the pooled state; accuracy (F1 and MCC if binary)."""

    kind: ClassVar[str] = "classification"
    head: ClassVar[str] = "classifier"

    def featurize(self, task_cfg, examples, tokenizer, *, training: bool) -> Features:
        label_map = {name: i for i, name in enumerate(self.label_names)}
        return featurize_text_classification(
            examples,
            tokenizer,
            max_len=task_cfg.max_len,
            label_map=label_map,
            spans=span_source(task_cfg),
        )

    def outputs_to_predictions(self, task_cfg, examples, features, outputs):
        """(predicted class ids [N], gold ids [N] or None for unlabelled examples)."""
        return np.argmax(outputs["logits"], axis=-1), features.arrays.get("labels")

    def records(self, task_cfg, examples, features, outputs) -> list[dict[str, Any]]:
        """One `{"label", "probabilities": {name: p}}` per example."""
        ids, _ = self.outputs_to_predictions(task_cfg, examples, features, outputs)
        logits = np.asarray(outputs["logits"], np.float64)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        names = self.label_names
        return [
            {"label": names[i], "probabilities": dict(zip(names, map(float, p), strict=True))}
            for i, p in zip(ids, probs, strict=True)
        ]

    def metrics(self, predictions, references) -> dict[str, float]:
        metrics = {"accuracy": accuracy(references, predictions)}
        if self.num_labels == 2:
            metrics["f1"] = binary_f1(references, predictions)
            metrics["mcc"] = matthews_corrcoef(references, predictions)
        return metrics

    def write_predictions(self, out_dir, examples, predictions, references) -> pathlib.Path:
        names = self.label_names
        rows = [
            f"{i}\t{names[p]}\t{names[r]}"
            for i, (p, r) in enumerate(zip(predictions, references, strict=True))
        ]
        return _write_tsv(out_dir, "index\tprediction\tlabel", rows)


@dataclasses.dataclass(frozen=True, eq=False)
class Regression(TaskBase):
    """Squared error of one score from the pooled state; Pearson and Spearman correlation."""

    kind: ClassVar[str] = "regression"

    @property
    def num_labels(self) -> int:
        return 1

    @property
    def heads(self):
        return (head_spec("classifier", num_labels=1),)

    def sums(self, model, params, batch, dropout_rng) -> dict[str, Any]:
        out = apply(model, params, batch, dropout_rng, only=("classifier",))
        error = jnp.square(out["logits"][:, 0] - batch["labels"])
        count = jnp.asarray(error.shape[0], jnp.float32)
        return {"task_loss": jnp.sum(error), "task_count": count}

    def featurize(self, task_cfg, examples, tokenizer, *, training: bool) -> Features:
        return featurize_text_classification(
            examples,
            tokenizer,
            max_len=task_cfg.max_len,
            regression=True,
            spans=span_source(task_cfg),
        )

    def outputs_to_predictions(self, task_cfg, examples, features, outputs):
        """(predicted scores [N], gold scores [N] or None for unlabelled examples)."""
        return outputs["logits"][:, 0], features.arrays.get("labels")

    def records(self, task_cfg, examples, features, outputs) -> list[dict[str, Any]]:
        """One `{"score"}` per example."""
        scores, _ = self.outputs_to_predictions(task_cfg, examples, features, outputs)
        return [{"score": float(s)} for s in scores]

    def metrics(self, predictions, references) -> dict[str, float]:
        return pearson_spearman(references, predictions)

    def write_predictions(self, out_dir, examples, predictions, references) -> pathlib.Path:
        rows = [
            f"{i}\t{p:.6f}\t{r:.6f}"
            for i, (p, r) in enumerate(zip(predictions, references, strict=True))
        ]
        return _write_tsv(out_dir, "index\tprediction\tlabel", rows)


def _write_tsv(out_dir, header: str, rows: list[str]) -> pathlib.Path:
    path = pathlib.Path(out_dir) / "predictions.tsv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def make_task(task_cfg: Mapping, label_names: Sequence[str]) -> TaskBase:
    if task_cfg["kind"] == "regression":
        return Regression()
    return Classification(tuple(label_names))
