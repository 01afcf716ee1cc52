"""Fine-tuning metrics for the four BERT task kinds; host-side and numpy-only (never imports jax).

* classification: `accuracy`, `binary_f1`, `matthews_corrcoef`;
* regression: `pearson_spearman`;
* tagging: `entity_scores` (entity-level precision / recall / F1 with conlleval chunking, as
  seqeval's default mode) and `token_accuracy`;
* extractive QA: `squad_em_f1` (the official SQuAD v1.1 normalisation, in percent).

`compute_metrics(task_kind, references=..., predictions=...)` dispatches on the task kind.
Fractions are in [0, 1] except the SQuAD scores, which are percentages like the official script.
"""

from __future__ import annotations

import collections
import logging
import re
import string
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.stats

logger = logging.getLogger(__name__)

TASK_KINDS = ("classification", "regression", "tagging", "qa")


# ----------------------------------------------------------------------------- classification


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Fraction of predictions equal to the labels.

    Args:
        labels: int [N] gold class ids.
        predictions: int [N] predicted class ids.
    """
    labels, predictions = _same_shape(labels, predictions)
    return float(np.mean(labels == predictions)) if labels.size else 0.0


def binary_f1(labels: np.ndarray, predictions: np.ndarray) -> float:
    """F1 of the positive class 1: 2 tp / (2 tp + fp + fn); 0 when there is no positive at all.

    Args:
        labels: int [N] gold labels in {0, 1}.
        predictions: int [N] predicted labels in {0, 1}.
    """
    labels, predictions = _same_shape(labels, predictions)
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
    labels, predictions = _same_shape(labels, predictions)
    classes, inverse = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    true_ids, pred_ids = inverse[: len(labels)], inverse[len(labels) :]
    t = np.bincount(true_ids, minlength=len(classes)).astype(np.float64)
    p = np.bincount(pred_ids, minlength=len(classes)).astype(np.float64)
    s, c = float(len(labels)), float(np.sum(true_ids == pred_ids))
    denominator = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - p @ t) / denominator) if denominator > 0 else 0.0


# ----------------------------------------------------------------------------- regression


def pearson_spearman(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlations of predicted and gold scores.

    Args:
        labels: float [N] gold scores.
        predictions: float [N] predicted scores.

    Returns:
        {"pearson": r, "spearman": rho}.
    """
    labels, predictions = _same_shape(labels, predictions)
    return {
        "pearson": float(scipy.stats.pearsonr(predictions, labels)[0]),
        "spearman": float(scipy.stats.spearmanr(predictions, labels)[0]),
    }


# ----------------------------------------------------------------------------- tagging


def entity_scores(
    true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Entity-level micro precision, recall and F1, as conlleval and seqeval's default mode.

    An entity counts as correct when its type, first and last word all match. Chunks are read
    with conlleval's rules, so IOB1, IOB2 and IOBES tags all work, and an `I-X` after `O` or
    another type opens a new entity. Entities never cross sentences.

    Args:
        true_tags: gold tags, one list per sentence.
        pred_tags: predicted tags, same lengths.

    Returns:
        {"precision", "recall", "f1"}, each in [0, 1] (0 where undefined).
    """
    if len(true_tags) != len(pred_tags):
        raise ValueError(f"{len(true_tags)} gold sentences but {len(pred_tags)} predicted")
    n_true = n_pred = n_correct = 0
    for i, (gold, guess) in enumerate(zip(true_tags, pred_tags, strict=True)):
        if len(gold) != len(guess):
            raise ValueError(f"sentence {i}: {len(gold)} gold tags but {len(guess)} predicted")
        gold_chunks, guess_chunks = set(tag_chunks(gold)), set(tag_chunks(guess))
        n_true, n_pred = n_true + len(gold_chunks), n_pred + len(guess_chunks)
        n_correct += len(gold_chunks & guess_chunks)
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_f1(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> float:
    """Entity-level micro F1 (see `entity_scores`)."""
    return entity_scores(true_tags, pred_tags)["f1"]


def tag_chunks(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities of one sentence as (type, first word, last word), by conlleval's chunk rules.

    Args:
        tags: tags such as "B-PER", "I-PER", "E-PER", "S-PER" or "O".

    Returns:
        The entities in order.
    """
    chunks, start, previous = [], None, ("O", "")
    for i, tag in enumerate([*tags, "O"]):  # the trailing "O" closes an open entity
        current = _split_tag(tag)
        if start is not None and _chunk_ends(previous, current):
            chunks.append((previous[1], start, i - 1))
            start = None
        if _chunk_starts(previous, current):
            start = i
        previous = current
    return chunks


def _split_tag(tag: str) -> tuple[str, str]:
    """("B", "PER") for "B-PER"; ("O", "") for "O"; a tag without prefix is an "I-" of that type."""
    if tag == "O":
        return "O", ""
    prefix, dash, kind = tag.partition("-")
    return (prefix, kind) if dash else ("I", tag)


def _chunk_ends(previous: tuple[str, str], current: tuple[str, str]) -> bool:
    (p, p_type), (c, c_type) = previous, current
    if p in ("E", "S") or (p in ("B", "I") and c in ("B", "S", "O")):
        return True
    return p != "O" and p_type != c_type


def _chunk_starts(previous: tuple[str, str], current: tuple[str, str]) -> bool:
    (p, p_type), (c, c_type) = previous, current
    if c in ("B", "S") or (p in ("E", "S", "O") and c in ("E", "I")):
        return True
    return c != "O" and p_type != c_type


def token_accuracy(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> float:
    """Fraction of words whose predicted tag equals the gold tag."""
    gold = [t for sentence in true_tags for t in sentence]
    guess = [t for sentence in pred_tags for t in sentence]
    if len(gold) != len(guess):
        raise ValueError(f"{len(gold)} gold tags but {len(guess)} predicted")
    return sum(g == p for g, p in zip(gold, guess, strict=True)) / len(gold) if gold else 0.0


# ----------------------------------------------------------------------------- extractive QA


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lowercase, drop punctuation, the articles a/an/the, extra spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


_PUNCTUATION = frozenset(string.punctuation)


def answer_f1(prediction: str, ground_truth: str) -> float:
    """Bag-of-words F1 of two normalized answers, in [0, 1]."""
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    common = sum((collections.Counter(predicted) & collections.Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_em_f1(predictions: Mapping[str, str], examples: Sequence) -> dict[str, float]:
    """Exact match and F1 as the official SQuAD v1.1 script: max over ground truths, in percent.

    A question without a prediction scores 0 (and is logged, as the official script prints it).

    Args:
        predictions: {question id: predicted answer text}.
        examples: the questions: objects with `id` and `answers`, each answer having `text`
            (e.g. `finetune_data.QAExample`).

    Returns:
        {"exact_match": %, "f1": %}.
    """
    exact = f1 = 0.0
    missing = 0
    for example in examples:
        if example.id not in predictions:
            missing += 1
            continue
        prediction, truths = predictions[example.id], [a.text for a in example.answers]
        exact += max(float(normalize_answer(prediction) == normalize_answer(t)) for t in truths)
        f1 += max(answer_f1(prediction, t) for t in truths)
    if missing:
        logger.warning("%d of %d questions have no prediction and score 0", missing, len(examples))
    n = max(len(examples), 1)
    return {"exact_match": 100.0 * exact / n, "f1": 100.0 * f1 / n}


# ----------------------------------------------------------------------------- dispatch


def compute_metrics(
    task_kind: str, *, references, predictions, num_labels: int | None = None
) -> dict[str, float]:
    """The standard metrics of a task kind.

    Args:
        task_kind: one of `TASK_KINDS`.
        references: gold class ids [N] (classification), scores [N] (regression), tag lists per
            sentence (tagging) or the `QAExample`s (qa).
        predictions: predicted class ids, scores, tag lists, or {question id: answer text}.
        num_labels: number of classes (classification); when None, the task counts as binary
            if every label and prediction is 0 or 1.

    Returns:
        classification: accuracy, plus f1 and mcc when binary; regression: pearson, spearman;
        tagging: precision, recall, f1, accuracy; qa: exact_match, f1 (percent).
    """
    if task_kind == "classification":
        metrics = {"accuracy": accuracy(references, predictions)}
        values = set(np.unique(references).tolist()) | set(np.unique(predictions).tolist())
        if (num_labels == 2) if num_labels is not None else values <= {0, 1}:
            metrics["f1"] = binary_f1(references, predictions)
            metrics["mcc"] = matthews_corrcoef(references, predictions)
        return metrics
    if task_kind == "regression":
        return pearson_spearman(references, predictions)
    if task_kind == "tagging":
        return {
            **entity_scores(references, predictions),
            "accuracy": token_accuracy(references, predictions),
        }
    if task_kind == "qa":
        return squad_em_f1(predictions, references)
    raise ValueError(f"task_kind must be one of {TASK_KINDS}, got {task_kind!r}")


def _same_shape(labels, predictions) -> tuple[np.ndarray, np.ndarray]:
    labels, predictions = np.asarray(labels).reshape(-1), np.asarray(predictions).reshape(-1)
    if labels.shape != predictions.shape:
        raise ValueError(f"{labels.size} labels but {predictions.size} predictions")
    return labels, predictions
