"""Fine-tuning data: task readers, featurizers to fixed-length numpy arrays, QA post-processing.

Host-side and numpy-only (never imports jax). It covers the four task kinds of the BERT paper:

* sequence classification / regression (SST-2, RTE, STS-B): `read_text_classification`,
  `build_label_map`, `featurize_text_classification`;
* token classification (CoNLL-2003, WNUT-17): `read_conll`, `build_label_map`,
  `featurize_tagging`, `predictions_to_tags`;
* extractive QA (SQuAD v1.1): `read_squad`, `featurize_qa`, `postprocess_qa`.

Every featurizer returns a `Features`: `arrays` holds what the device sees (`input_ids`,
`token_type_ids`, `attention_mask`, all int32 [N, max_len], plus the labels), `meta` holds host-only
arrays indexed by the same feature axis (offsets, word maps, example indices), and `stats` holds
counts the caller may log (truncations, skipped answers). Slice `arrays` and `meta` with the same
indices to batch them.

The tokenizer is any `tokenizers.Tokenizer` with a BERT normalizer, pre-tokenizer and WordPiece
model (e.g. `bertjax.tokenizer.load_tokenizer`); it must have truncation and padding off, since
the featurizers place special tokens, truncate and pad themselves (they encode with
`add_special_tokens=False`, so a post-processor does not matter).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
import tokenizers

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of positions the token-classification loss must skip
_FORMATS = ("tsv", "csv", "jsonl")
_SCHEMES = ("IOB1", "IOB2")
_SPLITS = ("train", "eval")


# ----------------------------------------------------------------------------- data classes


@dataclasses.dataclass(frozen=True)
class TextExample:
    """One sequence classification / regression example.

    Attributes:
        text_a: first segment.
        text_b: second segment for pair tasks, else None.
        label: raw label string (class name or float score as text); None for unlabelled sets.
        source: "path:line" of the row, used in error messages.
    """

    text_a: str
    text_b: str | None
    label: str | None
    source: str


@dataclasses.dataclass(frozen=True)
class TaggedSentence:
    """One token classification sentence; tags are always IOB2.

    Attributes:
        tokens: the words of the sentence.
        tags: one tag per word.
        source: "path:line" of the sentence's first word.
    """

    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    source: str


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
        """Looks the special tokens up in the tokenizer's vocabulary; raises if one is missing."""
        ids = {}
        for name, token in (("cls", cls_token), ("sep", sep_token), ("pad", pad_token)):
            ids[name] = tokenizer.token_to_id(token)
            if ids[name] is None:
                raise ValueError(f"special token {token!r} is not in the tokenizer's vocabulary")
        return cls(**ids)


# ----------------------------------------------------------------------------- readers


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
        return _read_jsonl(path, text_a, text_b, label)
    return _read_delimited(path, format, text_a, text_b, label, header, delimiter, skip_rows)


def _read_jsonl(path, text_a, text_b, label) -> list[TextExample]:
    examples = []
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            source = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{source}: invalid JSON ({e})") from None
            values = []
            for key in (text_a, text_b, label):
                if key is not None and key not in row:
                    raise ValueError(f"{source}: missing key {key!r}; keys are {sorted(row)}")
                values.append(None if key is None else str(row[key]))
            examples.append(TextExample(*values, source=source))
    return examples


def _read_delimited(path, format, text_a, text_b, label, header, delimiter, skip_rows):
    if delimiter is None:
        delimiter = "\t" if format == "tsv" else ","
    quoting = csv.QUOTE_NONE if format == "tsv" else csv.QUOTE_MINIMAL
    examples = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        for _ in range(skip_rows):
            f.readline()
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        names, n_columns = None, None
        if header:
            names = next(reader, [])
            n_columns = len(names)
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


def _column_index(column, names, path) -> int | None:
    """A column given by header name or 0-based index, as an index."""
    if column is None or isinstance(column, int):
        return column
    if names is None:
        raise ValueError(f"{path}: column {column!r} given by name but header=False")
    if column not in names:
        raise ValueError(f"{path}: no column {column!r}; the header has {names}")
    return names.index(column)


def read_conll(
    path: str | pathlib.Path, *, token_column: int = 0, tag_column: int = -1, scheme: str = "IOB2"
) -> list[TaggedSentence]:
    """Reads a CoNLL-format token classification file (one token per line, blank between).

    Columns are split on tabs when the line has one, else on spaces. `-DOCSTART-` lines are
    skipped. Whitespace-only lines count as blank.

    Args:
        path: the data file.
        token_column: 0-based column of the word.
        tag_column: column of the tag (negative counts from the end).
        scheme: the file's tagging scheme, "IOB2" (kept) or "IOB1" (converted to IOB2).

    Returns:
        One `TaggedSentence` per sentence, tags in IOB2.

    Raises:
        ValueError: on an unknown scheme or a line with too few columns (naming file and line).
    """
    if scheme not in _SCHEMES:
        raise ValueError(f"scheme must be one of {_SCHEMES}, got {scheme!r}")
    sentences, tokens, tags, start = [], [], [], 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("-DOCSTART-"):
                if tokens:
                    sentences.append(_tagged_sentence(tokens, tags, scheme, f"{path}:{start}"))
                tokens, tags = [], []
                continue
            fields = line.split("\t") if "\t" in line else line.split(" ")
            needed = max(token_column, tag_column if tag_column >= 0 else -tag_column - 1) + 1
            if len(fields) < needed:
                raise ValueError(f"{path}:{line_no}: expected >= {needed} columns, got {fields}")
            if not tokens:
                start = line_no
            tokens.append(fields[token_column])
            tags.append(fields[tag_column])
    if tokens:
        sentences.append(_tagged_sentence(tokens, tags, scheme, f"{path}:{start}"))
    return sentences


def _tagged_sentence(tokens, tags, scheme, source) -> TaggedSentence:
    if scheme == "IOB1":
        tags = iob1_to_iob2(tags)
    return TaggedSentence(tuple(tokens), tuple(tags), source)


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """Converts IOB1 tags (B- only between touching same-type entities) to IOB2 (B- at every start).

    An `I-X` starts an entity, and becomes `B-X`, when the previous tag is not `B-X` or `I-X`.

    Args:
        tags: one sentence's tags.

    Returns:
        The IOB2 tags.
    """
    out, previous = [], "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag if tag[:2] in ("B-", "I-") else "O"
    return out


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
    with open(path, encoding="utf-8") as f:
        articles = json.load(f)["data"]
    if split is not None:
        eval_titles = _eval_articles([a["title"] for a in articles], eval_fraction, seed)
        articles = [a for a in articles if (a["title"] in eval_titles) == (split == "eval")]
    examples = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = tuple(Answer(a["text"], int(a["answer_start"])) for a in qa["answers"])
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


# ----------------------------------------------------------------------------- labels


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
                _check_label(value, label_map, example.source)
        return label_map
    seen = {value for example in examples for value in _labels_of(example)}
    if not seen:
        raise ValueError("no example has a label; pass `labels` explicitly")
    return {name: i for i, name in enumerate(sorted(seen))}


def _labels_of(example) -> tuple[str, ...]:
    if isinstance(example, TaggedSentence):
        return example.tags
    return () if example.label is None else (example.label,)


def _check_label(value: str, label_map: Mapping[str, int], source: str) -> int:
    if value not in label_map:
        raise ValueError(f"{source}: unknown label {value!r}; known labels: {list(label_map)}")
    return label_map[value]


# ----------------------------------------------------------------------------- classification


def featurize_text_classification(
    examples: Sequence[TextExample],
    tokenizer: tokenizers.Tokenizer,
    *,
    max_len: int = 128,
    label_map: Mapping[str, int] | None = None,
    regression: bool = False,
    special: SpecialIds | None = None,
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

    Returns:
        `Features` with arrays `input_ids`, `token_type_ids`, `attention_mask` (int32 [N, L]) and,
        for labelled examples, `labels` (int32 [N], or float32 [N] for regression); no meta;
        stats `num_examples` and `num_truncated`.
    """
    special = special or SpecialIds.from_tokenizer(tokenizer)
    _check_tokenizer(tokenizer)
    pair = examples[0].text_b is not None if examples else False
    budget = max_len - (3 if pair else 2)
    if budget < 2:
        raise ValueError(f"max_len={max_len} leaves no room for text")
    ids_a = _encode_ids(tokenizer, [e.text_a for e in examples])
    ids_b = _encode_ids(tokenizer, [e.text_b or "" for e in examples]) if pair else None
    arrays = _empty_inputs(len(examples), max_len, special.pad)
    num_truncated = 0
    for i, a in enumerate(ids_a):
        b = ids_b[i] if pair else []
        n_a, n_b = _longest_first(len(a), len(b), budget)
        num_truncated += (n_a, n_b) != (len(a), len(b))
        _place_segments(arrays, i, a[:n_a], b[:n_b] if pair else None, special)
    labels = _classification_labels(examples, label_map, regression)
    if labels is not None:
        arrays["labels"] = labels
    stats = {"num_examples": len(examples), "num_truncated": num_truncated}
    return Features(arrays, {}, stats)


def _longest_first(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Lengths left after popping from the longer segment (B on ties) until both fit `budget`."""
    if len_a + len_b <= budget:
        return len_a, len_b
    shorter = min(len_a, len_b)
    if budget - shorter >= shorter:  # only the longer one is cut
        return (budget - len_b, len_b) if len_a > len_b else (len_a, budget - len_a)
    return (budget + 1) // 2, budget // 2  # both cut to halves; A keeps the odd piece


def _place_segments(arrays, row: int, a: Sequence[int], b: Sequence[int] | None, special) -> None:
    """Writes `[CLS] a [SEP] (b [SEP])` into row `row` of the input arrays."""
    tokens = [special.cls, *a, special.sep]
    n_first = len(tokens)
    if b is not None:
        tokens += [*b, special.sep]
    arrays["input_ids"][row, : len(tokens)] = tokens
    arrays["token_type_ids"][row, n_first : len(tokens)] = 1
    arrays["attention_mask"][row, : len(tokens)] = 1


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
    return np.array([_check_label(e.label, label_map, e.source) for e in examples], np.int32)


def _parse_float(value: str, source: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{source}: regression label {value!r} is not a number") from None


# ----------------------------------------------------------------------------- tagging


def featurize_tagging(
    sentences: Sequence[TaggedSentence],
    tokenizer: tokenizers.Tokenizer,
    *,
    max_len: int = 128,
    label_map: Mapping[str, int],
    special: SpecialIds | None = None,
) -> Features:
    """Builds `[CLS] pieces [SEP]` inputs labelled on the first piece of each word.

    Later pieces of a word, the special tokens and padding get `IGNORE_INDEX` (-100). A sentence
    longer than `max_len - 2` pieces is truncated; its cut words have no label and predict "O"
    (see `predictions_to_tags`). A word the normalizer erases (e.g. a lone zero-width space) has
    no piece and is handled like a cut word.

    Args:
        sentences: the sentences (IOB2 tags).
        tokenizer: a BERT WordPiece tokenizer.
        max_len: sequence length L.
        label_map: {tag: id} (see `build_label_map`).
        special: special token ids; looked up in the tokenizer when None.

    Returns:
        `Features` with arrays `input_ids`, `token_type_ids`, `attention_mask`, `labels` (int32
        [N, L]); meta `word_index` (int32 [N, L]: the word whose first piece sits at each position,
        else -1) and `num_words` (int32 [N]); stats `num_sentences`, `num_truncated` (sentences),
        `words_cut`, `tagged_words_cut` (cut words whose tag is not "O") and `words_without_pieces`.
    """
    special = special or SpecialIds.from_tokenizer(tokenizer)
    _check_tokenizer(tokenizer)
    encodings = tokenizer.encode_batch(
        [list(s.tokens) for s in sentences], is_pretokenized=True, add_special_tokens=False
    )
    n, budget = len(sentences), max_len - 2
    arrays = _empty_inputs(n, max_len, special.pad)
    arrays["labels"] = np.full((n, max_len), IGNORE_INDEX, np.int32)
    word_index = np.full((n, max_len), -1, np.int32)
    stats = dict.fromkeys(
        ["num_truncated", "words_cut", "tagged_words_cut", "words_without_pieces"], 0
    )
    stats["num_sentences"] = n
    for i, (sentence, encoding) in enumerate(zip(sentences, encodings, strict=True)):
        tag_ids = [_check_label(t, label_map, sentence.source) for t in sentence.tags]
        ids, words = encoding.ids[:budget], encoding.word_ids[:budget]
        _place_segments(arrays, i, ids, None, special)
        previous = None
        for position, word in enumerate(words, start=1):  # position 0 is [CLS]
            if word != previous:
                word_index[i, position] = word
                arrays["labels"][i, position] = tag_ids[word]
            previous = word
        _count_unlabelled_words(sentence, set(words), set(encoding.word_ids), stats)
    num_words = np.array([len(s.tokens) for s in sentences], np.int32).reshape(n)
    return Features(arrays, {"word_index": word_index, "num_words": num_words}, stats)


def _count_unlabelled_words(sentence, kept: set, all_words: set, stats: dict) -> None:
    """Adds a sentence's cut words and words without pieces to `stats`."""
    cut = all_words - kept
    stats["num_truncated"] += bool(cut)
    stats["words_cut"] += len(cut)
    stats["tagged_words_cut"] += sum(sentence.tags[w] != "O" for w in cut)
    stats["words_without_pieces"] += len(sentence.tokens) - len(all_words)


def predictions_to_tags(
    predictions: np.ndarray, features: Features, label_names: Sequence[str]
) -> tuple[list[list[str]], int]:
    """Turns per-position predicted tag ids back into one tag per word.

    Args:
        predictions: int [N, L] predicted tag ids (argmax of the logits).
        features: the `featurize_tagging` output the predictions are for.
        label_names: tag names in id order.

    Returns:
        (tags per sentence, each of its `num_words` words; number of words without a prediction,
        cut by truncation or without pieces, which get "O").
    """
    word_index, num_words = features.meta["word_index"], features.meta["num_words"]
    tags, missing = [], 0
    for i in range(len(word_index)):
        sentence = ["O"] * int(num_words[i])
        positions = np.flatnonzero(word_index[i] >= 0)
        for position in positions:
            sentence[word_index[i, position]] = label_names[predictions[i, position]]
        missing += len(sentence) - len(positions)
        tags.append(sentence)
    return tags, missing


# ----------------------------------------------------------------------------- extractive QA


def featurize_qa(
    examples: Sequence[QAExample],
    tokenizer: tokenizers.Tokenizer,
    *,
    max_len: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
    is_training: bool = False,
    special: SpecialIds | None = None,
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

    Returns:
        `Features` with arrays `input_ids`, `token_type_ids`, `attention_mask` (int32 [N, L]),
        `start_positions`, `end_positions` (int32 [N]); meta `example_index` (int32 [N]) and
        `offsets` (int32 [N, L, 2]: character span in the context of each context piece,
        -1 elsewhere); stats `num_examples`, `num_features`, `answers_mismatched` (examples
        whose first answer is unusable; skipped in training), `answers_outside_window`
        (features whose window misses the answer) and `questions_truncated`.
    """
    special = special or SpecialIds.from_tokenizer(tokenizer)
    _check_tokenizer(tokenizer)
    questions = _encode_ids(tokenizer, [e.question for e in examples])
    contexts = _encode_contexts(tokenizer, examples)
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
    features.stats = {**stats, "num_features": len(features)}
    return features


def _encode_contexts(tokenizer, examples) -> dict[str, tuple[list[int], np.ndarray]]:
    """{context: (piece ids, int32 [pieces, 2] char offsets)}; each distinct context once."""
    unique = list(dict.fromkeys(e.context for e in examples))
    encodings = tokenizer.encode_batch(unique, add_special_tokens=False)
    return {
        text: (enc.ids, np.array(enc.offsets, np.int32).reshape(-1, 2))
        for text, enc in zip(unique, encodings, strict=True)
    }


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
    arrays = _empty_inputs(n, max_len, special.pad)
    offsets = np.full((n, max_len, 2), -1, np.int32)
    example_index = np.zeros(n, np.int32)
    positions = np.zeros((n, 2), np.int32)
    for row, (index, question, start, end, answer) in enumerate(rows):
        ids, char_offsets = contexts[examples[index].context]
        _place_segments(arrays, row, question, ids[start:end], special)
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
    predictions = {}
    for index, example in enumerate(examples):
        _, start_char, end_char = best.get(index, (0.0, 0, 0))
        predictions[example.id] = example.context[start_char:end_char]
    return predictions


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


# ----------------------------------------------------------------------------- shared helpers


def _check_tokenizer(tokenizer) -> None:
    if getattr(tokenizer, "truncation", None) or getattr(tokenizer, "padding", None):
        raise ValueError(
            "the tokenizer must have truncation and padding off (the featurizer does both)"
        )


def _encode_ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]


def _empty_inputs(n: int, max_len: int, pad_id: int) -> dict[str, np.ndarray]:
    return {
        "input_ids": np.full((n, max_len), pad_id, np.int32),
        "token_type_ids": np.zeros((n, max_len), np.int32),
        "attention_mask": np.zeros((n, max_len), np.int32),
    }
