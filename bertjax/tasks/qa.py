"""Extractive QA (SQuAD v1.1, KorQuAD): reader, windowed featurizer, span loss, answer
post-processing, the official SQuAD v1.1 metric and the `predictions.json` writer.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import pathlib
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np
import tokenizers

from bertjax.data import entities
from bertjax.data.text import TextFile
from bertjax.models import head_spec
from bertjax.objectives.base import apply, nll_and_hits
from bertjax.tasks import formats
from bertjax.tasks.common import (
    Features,
    SpecialIds,
    TaskBase,
    check_tokenizer,
    empty_inputs,
    encode_ids,
    place_segments,
)

logger = logging.getLogger(__name__)

_SPLITS = ("train", "eval")


@dataclasses.dataclass(frozen=True)
class Answer:
    """A gold answer span: its text and its character offset in the context."""

    text: str
    start: int


@dataclasses.dataclass(frozen=True)
class QAExample:
    """One extractive QA question; `answers` keeps every gold answer (the first one trains)."""

    id: str
    title: str
    question: str
    context: str
    answers: tuple[Answer, ...]


def read_squad(
    path: str | pathlib.Path,
    *,
    split: str | None = None,
    eval_fraction: float = 0.2,
    seed: int = 0,
) -> list[QAExample]:
    """Reads a SQuAD v1.1 JSON file, optionally keeping one side of a split by article.

    The split is deterministic: articles are ordered by a SHA-256 of `seed` and their title,
    and the first `round(eval_fraction * n_articles)` (at least 1, at most n - 1) form "eval".
    No article has questions on both sides.

    Args:
        path: the JSON file.
        split: "train", "eval" or None (every article).
        eval_fraction: fraction of articles that go to "eval".
        seed: changes which articles go where.

    Returns:
        One `QAExample` per question, in file order, with every gold answer.
    """
    if split not in (*_SPLITS, None):
        raise ValueError(f"split must be one of {_SPLITS} or None, got {split!r}")
    with TextFile(path, "a SQuAD JSON file") as f:
        articles = json.loads(f.read())["data"]
    if split is not None:
        eval_titles = _eval_articles([a["title"] for a in articles], eval_fraction, seed)
        articles = [a for a in articles if (a["title"] in eval_titles) == (split == "eval")]
    examples = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = tuple(
                    Answer(a["text"], int(a["answer_start"])) for a in qa.get("answers", ())
                )
                examples.append(
                    QAExample(
                        qa["id"], article["title"], qa["question"], paragraph["context"], answers
                    )
                )
    return examples


def _eval_articles(titles: Sequence[str], eval_fraction: float, seed: int) -> set[str]:
    if len(titles) < 2:
        raise ValueError("splitting by article needs at least 2 articles")
    n_eval = min(max(round(eval_fraction * len(titles)), 1), len(titles) - 1)
    key = lambda title: hashlib.sha256(f"{seed}:{title}".encode()).hexdigest()
    return set(sorted(titles, key=key)[:n_eval])


def featurize_qa(
    examples: Sequence[QAExample],
    tokenizer: tokenizers.Tokenizer,
    *,
    max_len: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
    is_training: bool = False,
    special: SpecialIds | None = None,
    spans: entities.SpanSource | None = None,
) -> Features:
    """Builds `[CLS] question [SEP] context-window [SEP]` features, windows `doc_stride` apart.

    The question is cut to `max_query_length` pieces; the context is split into overlapping
    windows that fill the rest of `max_len`. Positions are of the first gold answer; when it is
    not wholly inside a window both are 0 ([CLS]). In training, an example whose first answer does
    not occur at its character offset (or covers no piece) is skipped, and the count is logged.

    Args:
        examples: the questions.
        tokenizer: a BERT WordPiece tokenizer.
        max_len: sequence length L.
        doc_stride: pieces between the starts of consecutive windows.
        max_query_length: most question pieces kept.
        is_training: skip examples with unusable answers (else keep them, positions 0).
        special: special token ids; looked up in the tokenizer when None.
        spans: a gazetteer span source (`config.task.entities`): `[ENT]`/`[/ENT]` are written
            around the names in each question and context, the context offsets still index the
            original context (the markers are not context), and `entity_ids` is emitted.

    Returns:
        `Features` with arrays `input_ids`, `token_type_ids`, `attention_mask` (int32 [N, L]),
        `start_positions`, `end_positions` (int32 [N]); meta `example_index` (int32 [N]) and
        `offsets` (int32 [N, L, 2]: character span in the context of each context piece,
        -1 elsewhere); stats `num_examples`, `num_features`, `answers_mismatched` (examples
        whose first answer is unusable; skipped in training), `answers_outside_window`
        (features whose window misses the answer) and `questions_truncated`.
    """
    special = special or SpecialIds.from_tokenizer(tokenizer)
    check_tokenizer(tokenizer)
    markers = None
    if spans is not None:
        if spans.gazetteer is None:
            raise ValueError(
                f"config.task.entities={spans.spec!r}: question answering takes entity spans "
                "from a gazetteer ('gazetteer:<file>'), matched in questions and contexts"
            )
        markers = spans.marker_ids(tokenizer, "config.task.entities")
    questions = encode_ids(tokenizer, [_mark(spans, e.question) for e in examples])
    contexts = _encode_contexts(tokenizer, examples, spans)
    if doc_stride < 1:
        raise ValueError(f"doc_stride must be >= 1, got {doc_stride}")
    rows, stats = [], dict.fromkeys(["answers_mismatched", "answers_outside_window"], 0)
    stats["num_examples"] = len(examples)
    stats["questions_truncated"] = sum(len(q) > max_query_length for q in questions)
    for index, example in enumerate(examples):
        ids, offsets = contexts[example.context]
        span = _answer_token_span(example, offsets)
        if span is None and example.answers:
            stats["answers_mismatched"] += 1
            if is_training:
                continue
        question = questions[index][:max_query_length]
        room = max_len - len(question) - 3
        if room < 1:
            raise ValueError(f"max_len={max_len} leaves no room for the context")
        for start, end in _windows(len(ids), room, doc_stride):
            positions = _window_positions(span, start, end, len(question) + 2)
            stats["answers_outside_window"] += positions == (0, 0) and span is not None
            rows.append((index, question, start, end, positions))
    if is_training and stats["answers_mismatched"]:
        logger.warning(
            "skipped %d of %d training examples whose answer text does not match the context "
            "at its offset",
            stats["answers_mismatched"],
            len(examples),
        )
    features = _assemble_qa(rows, contexts, examples, max_len, special)
    if markers is not None:
        features.arrays["entity_ids"] = entities.entity_ids(features.arrays["input_ids"], *markers)
    features.stats = {**stats, "num_features": len(features)}
    return features


def _mark(spans: entities.SpanSource | None, text: str) -> str:
    return text if spans is None else spans.mark(text)


def _encode_contexts(tokenizer, examples, spans=None) -> dict[str, tuple[list[int], np.ndarray]]:
    """{context: (piece ids, int32 [pieces, 2] char offsets)}; each distinct context once.

    With `spans` the context is encoded with its markers; the offsets are mapped back to the
    original context, (-1, -1) for the marker pieces.
    """
    unique = list(dict.fromkeys(e.context for e in examples))
    marked = [entities.insert_markers(t, spans.gazetteer.spans(t)) for t in unique] if spans else []
    texts = [m[0] for m in marked] if spans else unique
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    out = {}
    for i, (text, enc) in enumerate(zip(unique, encodings, strict=True)):
        offsets = np.array(enc.offsets, np.int32).reshape(-1, 2)
        if spans:
            offsets = _original_offsets(offsets, marked[i][1])
        out[text] = (enc.ids, offsets)
    return out


def _original_offsets(offsets: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Piece offsets in the marked text -> in the original text (`positions[i]`: where character
    i of the original is in the marked text); pieces that are no original text get (-1, -1)."""
    chars = positions[:-1]
    start = np.searchsorted(chars, offsets[:, 0])
    last = np.searchsorted(chars, np.maximum(offsets[:, 1] - 1, 0))
    found = start < len(chars)
    found[found] &= chars[start[found]] == offsets[found, 0]
    return np.where(found[:, None], np.stack([start, last + 1], 1), -1).astype(np.int32)


def _answer_token_span(example: QAExample, offsets: np.ndarray) -> tuple[int, int] | None:
    """Context-piece span (first, last) of the first answer; None if it is absent or unusable."""
    if not example.answers:
        return None
    answer = example.answers[0]
    end_char = answer.start + len(answer.text)
    if example.context[answer.start : end_char] != answer.text:
        return None
    inside = np.flatnonzero((offsets[:, 1] > answer.start) & (offsets[:, 0] < end_char))
    return (int(inside[0]), int(inside[-1])) if len(inside) else None


def _windows(n_pieces: int, room: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) piece ranges of the context windows; the last one reaches the end."""
    windows, start = [], 0
    while True:
        end = min(start + room, n_pieces)
        windows.append((start, end))
        if end == n_pieces:
            return windows
        start += min(stride, end - start)


def _window_positions(span, start: int, end: int, shift: int) -> tuple[int, int]:
    """Answer positions within the feature, or (0, 0) when not wholly inside [start, end)."""
    if span is None or span[0] < start or span[1] >= end:
        return 0, 0
    return span[0] - start + shift, span[1] - start + shift


def _assemble_qa(rows, contexts, examples, max_len, special) -> Features:
    n = len(rows)
    arrays = empty_inputs(n, max_len, special.pad)
    offsets = np.full((n, max_len, 2), -1, np.int32)
    example_index = np.zeros(n, np.int32)
    positions = np.zeros((n, 2), np.int32)
    for row, (index, question, start, end, answer) in enumerate(rows):
        ids, char_offsets = contexts[examples[index].context]
        place_segments(arrays, row, question, ids[start:end], special)
        first = len(question) + 2
        offsets[row, first : first + end - start] = char_offsets[start:end]
        example_index[row], positions[row] = index, answer
    arrays["start_positions"], arrays["end_positions"] = positions[:, 0], positions[:, 1]
    meta = {"example_index": example_index, "offsets": offsets}
    return Features(arrays, meta, {})


def postprocess_qa(
    examples: Sequence[QAExample],
    features: Features,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """Picks each question's best answer span over all its windows and maps it back to text.

    In each window the `n_best` highest start and end logits are paired; a pair counts when both
    are context pieces, start <= end and it spans at most `max_answer_length` pieces. The best
    pair by start + end logit over the example's windows becomes the original context slice.

    Args:
        examples: the questions the features were built from.
        features: the `featurize_qa` output.
        start_logits: float [N, L] start scores of every feature.
        end_logits: float [N, L] end scores.
        n_best: candidates per end kept in each window.
        max_answer_length: longest answer, in pieces.

    Returns:
        {question id: answer text}; "" for a question without any valid span.
    """
    spans = best_spans(
        examples,
        features,
        start_logits,
        end_logits,
        n_best=n_best,
        max_answer_length=max_answer_length,
    )
    return {example.id: span["answer"] for example, span in zip(examples, spans, strict=True)}


def best_spans(
    examples: Sequence[QAExample],
    features: Features,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> list[dict[str, Any]]:
    """The best answer span of each question (see `postprocess_qa`), with its offsets.

    Returns:
        One `{"answer", "start", "end", "score"}` per example, in order: the answer text, its
        character span `[start, end)` in the context and its start + end logit; a question
        without any valid span gets `""`, 0, 0 and score None.
    """
    offsets, example_index = features.meta["offsets"], features.meta["example_index"]
    best: dict[int, tuple[float, int, int]] = {}
    for row in range(len(example_index)):
        candidate = _best_span(
            start_logits[row], end_logits[row], offsets[row, :, 0] >= 0, n_best, max_answer_length
        )
        index = int(example_index[row])
        if candidate and (index not in best or candidate[0] > best[index][0]):
            s, e = candidate[1], candidate[2]
            best[index] = (candidate[0], int(offsets[row, s, 0]), int(offsets[row, e, 1]))
    spans = []
    for index, example in enumerate(examples):
        score, start_char, end_char = best.get(index, (None, 0, 0))
        answer = example.context[start_char:end_char]
        spans.append({"answer": answer, "start": start_char, "end": end_char, "score": score})
    return spans


def _best_span(start_logits, end_logits, is_context, n_best, max_answer_length):
    """(score, start, end) of the best valid span among the top candidates, or None."""
    starts = np.argsort(start_logits)[::-1][:n_best]
    ends = np.argsort(end_logits)[::-1][:n_best]
    s, e = np.meshgrid(starts, ends, indexing="ij")  # [n_best, n_best]
    valid = is_context[s] & is_context[e] & (e >= s) & (e - s + 1 <= max_answer_length)
    if not valid.any():
        return None
    scores = np.where(valid, start_logits[s] + end_logits[e], -np.inf)
    k = np.unravel_index(np.argmax(scores), scores.shape)
    return float(scores[k]), int(s[k]), int(e[k])


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lowercase, drop punctuation, the articles a/an/the, extra spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


_PUNCTUATION = frozenset(string.punctuation)


def overlap_f1(predicted: Sequence[str], gold: Sequence[str]) -> float:
    """F1 of the multiset overlap of two unit sequences (words, characters), in [0, 1]."""
    common = sum((collections.Counter(predicted) & collections.Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def answer_f1(prediction: str, ground_truth: str) -> float:
    """Bag-of-words F1 of two normalized answers, in [0, 1]."""
    return overlap_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def exact_match_f1(
    predictions: Mapping[str, str], examples: Sequence, *, normalize, answer_f1
) -> dict[str, float]:
    """Exact match of `normalize`d answers and `answer_f1`, each the max over the ground truths,
    averaged over the questions, in percent. A question without a prediction scores 0 (and is
    logged, as the official scripts print it)."""
    exact = f1 = 0.0
    missing = 0
    for example in examples:
        if example.id not in predictions:
            missing += 1
            continue
        prediction, truths = predictions[example.id], [a.text for a in example.answers]
        exact += max(float(normalize(prediction) == normalize(t)) for t in truths)
        f1 += max(answer_f1(prediction, t) for t in truths)
    if missing:
        logger.warning("%d of %d questions have no prediction and score 0", missing, len(examples))
    n = max(len(examples), 1)
    return {"exact_match": 100.0 * exact / n, "f1": 100.0 * f1 / n}


def squad_em_f1(predictions: Mapping[str, str], examples: Sequence) -> dict[str, float]:
    """Exact match and F1 as the official SQuAD v1.1 script: max over ground truths, in percent.

    Args:
        predictions: {question id: predicted answer text}.
        examples: the questions: objects with `id` and `answers`, each answer having `text`
            (e.g. `QAExample`).

    Returns:
        {"exact_match": %, "f1": %}.
    """
    return exact_match_f1(predictions, examples, normalize=normalize_answer, answer_f1=answer_f1)


def read(task_cfg, path: pathlib.Path, split: str) -> list[QAExample]:
    """The questions of a `config.task` file, read by its `config.task.format`."""
    return formats.reader("qa", task_cfg.get("format", ""))(task_cfg, path, split)


def read_squad_task(task_cfg, path: pathlib.Path, split: str) -> list[QAExample]:
    """The questions of a SQuAD file (one side of a by-article split if configured;
    `split="predict"` reads every question, answers optional)."""
    by_article = task_cfg.split_by_article and split != "predict"
    return read_squad(
        path,
        split=split if by_article else None,
        eval_fraction=task_cfg.eval_fraction,
        seed=task_cfg.split_seed,
    )


def from_input(value: Mapping[str, str] | Sequence[str], index: int) -> QAExample:
    """The question of a raw input: a `(question, context)` pair or a dict with `question`,
    `context` and optionally `id` (default: the input's index)."""
    if isinstance(value, Mapping):
        missing = [k for k in ("question", "context") if k not in value]
        if missing:
            raise ValueError(f"input {index}: QA input has no {missing}")
        question, context, qid = value["question"], value["context"], value.get("id", str(index))
    elif not isinstance(value, str) and len(value) == 2:
        (question, context), qid = value, str(index)
    else:
        raise ValueError(f"input {index}: expected a (question, context) pair for QA")
    return QAExample(str(qid), "", question, context, ())


def labelled(examples: Sequence[QAExample]) -> bool:
    return any(e.answers for e in examples)


@dataclasses.dataclass(frozen=True, eq=False)
class QuestionAnswering(TaskBase):
    """Mean of the start and end cross-entropies; exact match and F1 of the best spans."""

    kind: ClassVar[str] = "qa"
    metric: str = "squad"  # `bertjax.tasks.formats.METRICS["qa"]`

    @property
    def num_labels(self) -> int:
        return 2

    @property
    def heads(self):
        return (head_spec("span"),)

    def sums(self, model, params, batch, dropout_rng) -> dict[str, Any]:
        out = apply(model, params, batch, dropout_rng, only=("span",))
        nll = sum(
            nll_and_hits(out[f"{end}_logits"], batch[f"{end}_positions"])[0]
            for end in ("start", "end")
        )
        count = jnp.asarray(nll.shape[0], jnp.float32)
        return {"task_loss": jnp.sum(nll) / 2, "task_count": count}

    def featurize(self, task_cfg, examples, tokenizer, *, training: bool) -> Features:
        spec = task_cfg.get("entities", "")
        return featurize_qa(
            examples,
            tokenizer,
            max_len=task_cfg.max_len,
            doc_stride=task_cfg.doc_stride,
            max_query_length=task_cfg.max_query_length,
            is_training=training,
            spans=entities.SpanSource(spec, "config.task.entities") if spec else None,
        )

    def outputs_to_predictions(self, task_cfg, examples, features, outputs):
        """({question id: answer text}, the examples)."""
        predictions = postprocess_qa(
            examples,
            features,
            outputs["start_logits"],
            outputs["end_logits"],
            n_best=task_cfg.n_best,
            max_answer_length=task_cfg.max_answer_length,
        )
        return predictions, examples

    def records(self, task_cfg, examples, features, outputs) -> list[dict[str, Any]]:
        """One `{"id", "answer", "start", "end", "score"}` per question (see `best_spans`)."""
        spans = best_spans(
            examples,
            features,
            outputs["start_logits"],
            outputs["end_logits"],
            n_best=task_cfg.n_best,
            max_answer_length=task_cfg.max_answer_length,
        )
        return [{"id": e.id, **span} for e, span in zip(examples, spans, strict=True)]

    def metrics(self, predictions, references) -> dict[str, float]:
        return formats.metrics("qa", self.metric)(predictions, references)

    def write_predictions(self, out_dir, examples, predictions, references) -> pathlib.Path:
        path = pathlib.Path(out_dir) / "predictions.json"
        path.write_text(json.dumps(predictions, indent=2, ensure_ascii=False) + "\n")
        return path


def make_task(task_cfg: Mapping, label_names: Sequence[str]) -> QuestionAnswering:
    return QuestionAnswering(metric=formats.metric_name("qa", task_cfg.get("metric")))
