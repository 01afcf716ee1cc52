"""Token classification (CoNLL-2003, WNUT-17, KLUE-NER, ...): reader, featurizer, loss, metrics
(entity-level, conlleval chunking) and prediction writer.

Each word is tagged from its first piece; the other pieces and special tokens are ignored by the
loss (`IGNORE_INDEX`). Tags are IOB2 (IOB1 files are converted on reading).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import tokenizers
from tokenizers import pre_tokenizers

from bertjax.data.text import TextFile
from bertjax.tasks import formats
from bertjax.tasks.common import (
    IGNORE_INDEX,
    Features,
    LabelTask,
    SpecialIds,
    check_label,
    check_tokenizer,
    empty_inputs,
    place_segments,
)

_SCHEMES = ("IOB1", "IOB2")


@dataclasses.dataclass(frozen=True)
class TaggedSentence:
    """One token classification sentence; tags are always IOB2.

    Attributes:
        tokens: the words of the sentence.
        tags: one tag per word; () for an unlabelled sentence.
        source: "path:line" of the sentence's first word.
        text: the text the words come from; None: the words joined by single spaces.
        offsets: (start, end) character span of each word in `text`; None: in the joined words.
    """

    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    source: str
    text: str | None = None
    offsets: tuple[tuple[int, int], ...] | None = None

    def spans(self) -> tuple[str, list[tuple[int, int]]]:
        """(text, character span of each word in it)."""
        if self.offsets is not None:
            return self.text, list(self.offsets)
        spans, start = [], 0
        for token in self.tokens:
            spans.append((start, start + len(token)))
            start += len(token) + 1
        return " ".join(self.tokens), spans


def sentence_from_text(text: str, source: str) -> TaggedSentence:
    """An unlabelled sentence of raw text, split into words as BERT's pre-tokenizer splits it
    (whitespace and punctuation), with the words' character offsets in `text`."""
    words = pre_tokenizers.BertPreTokenizer().pre_tokenize_str(text)
    return TaggedSentence(
        tuple(w for w, _ in words), (), source, text=text, offsets=tuple(o for _, o in words)
    )


def iter_text_sentences(path: str | pathlib.Path):
    """Unlabelled sentences of a plain text file, one per non-empty line, read lazily."""
    with TextFile(path, "a text input file") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield sentence_from_text(line, f"{path}:{line_no}")


def read_conll(
    path: str | pathlib.Path,
    *,
    token_column: int = 0,
    tag_column: int = -1,
    scheme: str = "IOB2",
    tags_optional: bool = False,
) -> list[TaggedSentence]:
    """Reads a CoNLL-format token classification file (one token per line, blank between).

    Columns are split on tabs when the line has one, else on spaces. `-DOCSTART-` lines are
    skipped. Whitespace-only lines count as blank.

    Args:
        path: the data file.
        token_column: 0-based column of the word.
        tag_column: column of the tag (negative counts from the end).
        scheme: the file's tagging scheme, "IOB2" (kept) or "IOB1" (converted to IOB2).
        tags_optional: a line with the word alone has no tag (prediction inputs); a sentence
            is then unlabelled (tags `()`) unless all its lines have a tag.

    Returns:
        One `TaggedSentence` per sentence, tags in IOB2.

    Raises:
        ValueError: on an unknown scheme or a line with too few columns (naming file and line).
    """
    if scheme not in _SCHEMES:
        raise ValueError(f"scheme must be one of {_SCHEMES}, got {scheme!r}")
    sentences, tokens, tags, start = [], [], [], 0
    with TextFile(path, "a CoNLL file") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("-DOCSTART-"):
                if tokens:
                    sentences.append(_tagged_sentence(tokens, tags, scheme, f"{path}:{start}"))
                tokens, tags = [], []
                continue
            fields = line.split("\t") if "\t" in line else line.split(" ")
            needed = max(token_column, tag_column if tag_column >= 0 else -tag_column - 1) + 1
            if tags_optional and len(fields) == 1 and token_column in (0, -1):
                if not tokens:
                    start = line_no
                tokens.append(fields[0])
                continue
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
    if len(tags) != len(tokens):  # some words without a tag (tags_optional): unlabelled
        tags = []
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
    check_tokenizer(tokenizer)
    encodings = tokenizer.encode_batch(
        [list(s.tokens) for s in sentences], is_pretokenized=True, add_special_tokens=False
    )
    n, budget = len(sentences), max_len - 2
    arrays = empty_inputs(n, max_len, special.pad)
    arrays["labels"] = np.full((n, max_len), IGNORE_INDEX, np.int32)
    word_index = np.full((n, max_len), -1, np.int32)
    stats = dict.fromkeys(
        ["num_truncated", "words_cut", "tagged_words_cut", "words_without_pieces"], 0
    )
    stats["num_sentences"] = n
    for i, (sentence, encoding) in enumerate(zip(sentences, encodings, strict=True)):
        tag_ids = [check_label(t, label_map, sentence.source) for t in sentence.tags]
        ids, words = encoding.ids[:budget], encoding.word_ids[:budget]
        place_segments(arrays, i, ids, None, special)
        previous = None
        for position, word in enumerate(words, start=1):  # position 0 is [CLS]
            if word != previous:
                word_index[i, position] = word
                if tag_ids:  # an unlabelled sentence keeps IGNORE_INDEX
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
    stats["tagged_words_cut"] += sum(sentence.tags[w] != "O" for w in cut if sentence.tags)
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


def read(task_cfg, path: pathlib.Path, split: str) -> list[TaggedSentence]:
    """The sentences of a `config.task` file; for `split="predict"` tags are optional, and a
    `.txt` file holds one raw sentence per line (split into words by BERT's pre-tokenizer)."""
    if split == "predict" and path.suffix.lower() == ".txt":
        return iter_text_sentences(path)  # lazily: a long file streams
    return formats.reader("tagging", task_cfg.format)(task_cfg, path, split)


def read_conll_task(task_cfg, path: pathlib.Path, split: str) -> list[TaggedSentence]:
    """A CoNLL file of `config.task` (`token_column`, `tag_column`, `scheme`)."""
    return read_conll(
        path,
        token_column=task_cfg.token_column,
        tag_column=task_cfg.tag_column,
        scheme=task_cfg.scheme,
        tags_optional=split == "predict",
    )


def from_input(value: str | Sequence[str], index: int) -> TaggedSentence:
    """The unlabelled sentence of a raw input: a text (split into words with their offsets) or
    a list of words."""
    if isinstance(value, str):
        return sentence_from_text(value, f"input {index}")
    return TaggedSentence(tuple(value), (), f"input {index}")


def labelled(examples: Sequence[TaggedSentence]) -> bool:
    return True  # a CoNLL file always has its tag column (the reader checks)


@dataclasses.dataclass(frozen=True, eq=False)
class Tagging(LabelTask):
    """Cross-entropy per labelled token; entity precision/recall/F1 and token accuracy."""

    kind: ClassVar[str] = "tagging"
    head: ClassVar[str] = "tagger"
    metric: str = "conll"  # `bertjax.tasks.formats.METRICS["tagging"]`

    def featurize(self, task_cfg, examples, tokenizer, *, training: bool) -> Features:
        label_map = {name: i for i, name in enumerate(self.label_names)}
        return featurize_tagging(examples, tokenizer, max_len=task_cfg.max_len, label_map=label_map)

    def outputs_to_predictions(self, task_cfg, examples, features, outputs):
        """(predicted tags per sentence, gold tags per sentence)."""
        ids = np.argmax(outputs["logits"], axis=-1)
        tags, _ = predictions_to_tags(ids, features, list(self.label_names))
        return tags, [list(s.tags) for s in examples]

    def records(self, task_cfg, examples, features, outputs) -> list[dict[str, Any]]:
        """One `{"tokens", "tags", "entities"}` per sentence; each entity has its `type`,
        `text` and character `start`/`end` in the sentence's text (see `TaggedSentence.spans`)."""
        tags, _ = self.outputs_to_predictions(task_cfg, examples, features, outputs)
        out = []
        for sentence, sentence_tags in zip(examples, tags, strict=True):
            text, spans = sentence.spans()
            entities = []
            for kind, first, last in tag_chunks(sentence_tags):
                start, end = spans[first][0], spans[last][1]
                entities.append({"type": kind, "text": text[start:end], "start": start, "end": end})
            out.append(
                {"tokens": list(sentence.tokens), "tags": sentence_tags, "entities": entities}
            )
        return out

    def metrics(self, predictions, references) -> dict[str, float]:
        return formats.metrics("tagging", self.metric)(predictions, references)

    def write_predictions(self, out_dir, examples, predictions, references) -> pathlib.Path:
        rows = [
            f"{i}\t{' '.join(e.tokens)}\t{' '.join(p)}\t{' '.join(r)}"
            for i, (e, p, r) in enumerate(zip(examples, predictions, references, strict=True))
        ]
        path = pathlib.Path(out_dir) / "predictions.tsv"
        text = "\n".join(["index\ttokens\tprediction\tlabel", *rows]) + "\n"
        path.write_text(text, encoding="utf-8")
        return path


def make_task(task_cfg: Mapping, label_names: Sequence[str]) -> Tagging:
    return Tagging(
        tuple(label_names), metric=formats.metric_name("tagging", task_cfg.get("metric"))
    )


def conll_metrics(predictions, references) -> dict[str, float]:
    """Entity precision/recall/F1 (`entity_scores`) and token accuracy."""
    return {
        **entity_scores(references, predictions),
        "accuracy": token_accuracy(references, predictions),
    }
