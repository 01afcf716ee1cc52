"""Korean datasets and metrics: KLUE NER/NLI/STS, KorNLI/KorSTS, KorQuAD 1.0, table corpora.

The readers and metrics are registered by `config.task.format` ("klue-ner", "klue-nli",
"klue-sts") and `config.task.metric` ("klue", "korquad") in `bertjax.tasks.formats`, like any
other format; this module imports the task kinds' example classes, never the other way round.

Host-side and numpy-only (never imports jax). Readers return the example classes of
the task kinds (`bertjax.tasks.classification`, `bertjax.tasks.tagging`, `bertjax.tasks.qa`), so the existing featurizers take them unchanged:

* KLUE-NER (`read_klue_ner`): the file tags every character, spaces included. A sentence becomes a
  `KlueNerSentence` (a `TaggedSentence`) whose tokens are its non-space characters by default, so
  `featurize_tagging` labels one character per "word" and predictions map back to characters
  exactly (`to_char_tags`). Whitespace words (`unit="word"`, each word tagged by its first
  character) read the same file but lose most entities: Korean particles attach to nouns
  (`<경찰:OG>은` is one word), so mapping word tags back marks the particle as part of the entity.
  On the KLUE dev file even the gold word tags, mapped back, reach only 38% entity F1.
* KLUE-NER metrics as KLUE's baseline scores them (`klue_ner_metrics`): entity-level macro F1
  (seqeval strict IOB2: an entity starts at `B-X` and continues over `I-X`; per-type F1 averaged
  over the types in gold or prediction) and character-level macro F1 (per-label F1 averaged over
  all 13 labels, `O` included as in the baseline's code, a label absent from both sides scoring 1),
  both over non-space characters.
* KLUE-NLI / KLUE-STS (`read_klue_nli`, `read_klue_sts`): JSON lists; only dev splits exist, so
  `split` keeps one side of a seeded split by guid (`eval_guids`).
* KorNLI / KorSTS: `tasks.classification.read_text_classification` reads them correctly (TSV with header,
  no quoting), so there is no reader here.
* KorQuAD 1.0 (`korquad_em_f1`): the official script's normalisation and character-level F1.
* Corpora in tables (`iter_table_documents`): one document per CSV/JSONL row, shaped like
  `data.text.iter_documents` (a list of sentences).

Fractions are in [0, 1] except the KorQuAD scores, which are percentages like the official script.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import json
import logging
import pathlib
import re
import string
from collections.abc import Iterator, Mapping, Sequence

from bertjax.data.text import TextFile, split_sentences
from bertjax.tasks.classification import TextExample
from bertjax.tasks.qa import exact_match_f1, overlap_f1
from bertjax.tasks.tagging import TaggedSentence, conll_metrics

logger = logging.getLogger(__name__)

KLUE_NER_TYPES = ("DT", "LC", "OG", "PS", "QT", "TI")
KLUE_NER_LABELS = (*(f"{p}-{t}" for t in KLUE_NER_TYPES for p in "BI"), "O")  # 13 labels
KLUE_NLI_LABELS = ("entailment", "neutral", "contradiction")
_UNITS = ("char", "word")
_SPLITS = ("train", "eval")
_TABLE_FORMATS = ("csv", "jsonl")
_ENTITY_MARKUP = re.compile(r"<([^<>]*):([A-Z]{2})>")
_TAG = re.compile(r"O|[BI]-[A-Z]+")


# ----------------------------------------------------------------------------- KLUE-NER


@dataclasses.dataclass(frozen=True)
class KlueNerSentence(TaggedSentence):
    """A KLUE-NER sentence: model tokens with their tags, plus the character-level annotation.

    Attributes:
        tokens: the units the model sees: non-space characters ("char") or whitespace words.
        tags: one IOB2 tag per token: the tag of its first character.
        source: "path:line" of the sentence header (or first character).
        text: the sentence, spaces included.
        offsets: [start, end) character range of each token in `text`.
        guid: the KLUE id, e.g. "klue-ner-v1_dev_00000-wikitree".
        char_tags: one tag per character of `text`, as in the file.
    """

    guid: str = ""
    char_tags: tuple[str, ...] = ()

    def gold_char_tags(self) -> list[str]:
        """The tags KLUE scores: one per non-space character."""
        return [t for c, t in zip(self.text, self.char_tags, strict=True) if not c.isspace()]


def read_klue_ner(
    path: str | pathlib.Path,
    *,
    unit: str = "char",
    split: str | None = None,
    eval_fraction: float = 0.2,
    seed: int = 0,
) -> list[KlueNerSentence]:
    """Reads a KLUE-NER TSV file (one `CHAR\\tTAG` line per character, blank between sentences).

    Lines starting `##` are comments, except `## <guid>\\t<text with <entity:TYPE> markup>`, the
    sentence header; its text without markup must equal the sentence's characters.

    Args:
        path: the file, e.g. `klue-ner-v1.1/klue-ner-v1.1_dev.tsv`.
        unit: "char" (each non-space character is a token; exact) or "word" (whitespace words,
            each tagged by its first character; loses entities inside words, see the module doc).
        split: "train", "eval" or None (all); see `eval_guids`.
        eval_fraction: share of sentences in "eval".
        seed: changes which sentences go where.

    Returns:
        One `KlueNerSentence` per sentence, in file order.

    Raises:
        ValueError: on an unknown unit, a malformed line or a header that disagrees with the
            characters; the message names the file and line.
    """
    if unit not in _UNITS:
        raise ValueError(f"unit must be one of {_UNITS}, got {unit!r}")
    _check_split(split)
    sentences, block = [], _NerBlock(path)
    with TextFile(path, "a KLUE-NER file") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line:
                if block.chars or block.marked is not None:
                    sentences.append(block.finish(unit, line_no))
                block = _NerBlock(path)
            elif line.startswith("##"):
                block.header(line, line_no)
            else:
                block.add(line, line_no)
    if block.chars or block.marked is not None:
        sentences.append(block.finish(unit, line_no + 1))
    if split is None:
        return sentences
    held_out = eval_guids([s.guid for s in sentences], eval_fraction, seed)
    return [s for s in sentences if (s.guid in held_out) == (split == "eval")]


class _NerBlock:
    """The lines of one KLUE-NER sentence as they are read."""

    def __init__(self, path):
        self.path, self.guid, self.marked, self.start = path, None, None, None
        self.chars: list[str] = []
        self.tags: list[str] = []

    def header(self, line: str, line_no: int) -> None:
        guid, tab, marked = line[2:].partition("\t")  # the text may end in a space
        guid = guid.strip()
        if not tab or not re.fullmatch(r"\S+", guid):
            return  # a comment, e.g. "## 컬럼명 : CHAR\tNE_TAG"
        if self.chars or self.marked is not None:
            raise ValueError(
                f"{self.path}:{line_no}: a second sentence header without a blank line"
            )
        self.guid, self.marked, self.start = guid, marked, line_no

    def add(self, line: str, line_no: int) -> None:
        fields = line.split("\t")
        if len(fields) != 2 or len(fields[0]) != 1 or not _TAG.fullmatch(fields[1]):
            raise ValueError(
                f"{self.path}:{line_no}: expected one character, a tab and a tag (O, B-X or I-X), "
                f"got {line!r}"
            )
        self.start = self.start or line_no
        self.chars.append(fields[0])
        self.tags.append(fields[1])

    def finish(self, unit: str, end_line: int) -> KlueNerSentence:
        text, source = "".join(self.chars), f"{self.path}:{self.start}"
        if not text.strip():
            raise ValueError(f"{source}: the sentence ending before line {end_line} has no text")
        if self.marked is not None and _ENTITY_MARKUP.sub(r"\1", self.marked) != text:
            raise ValueError(f"{source}: the header text does not match the characters below it")
        if unit == "char":
            spans = [(i, i + 1) for i, c in enumerate(text) if not c.isspace()]
        else:
            spans = [m.span() for m in re.finditer(r"\S+", text)]
        tokens = tuple(text[s:e] for s, e in spans)
        tags = tuple(self.tags[s] for s, _ in spans)
        guid = self.guid if self.guid is not None else source
        return KlueNerSentence(
            tokens, tags, source, text, tuple(spans), guid=guid, char_tags=tuple(self.tags)
        )


def to_char_tags(sentence: KlueNerSentence, token_tags: Sequence[str]) -> list[str]:
    """Spreads one tag per token over the token's characters, for character-level scoring.

    A token tagged `B-X` or `I-X` gives its first character that tag and the others `I-X`; `O`
    gives `O` to all. For character tokens this is the identity.

    Args:
        sentence: the sentence the tags are for.
        token_tags: one tag per token (e.g. from `tasks.tagging.predictions_to_tags`).

    Returns:
        One tag per non-space character (as `KlueNerSentence.gold_char_tags`).
    """
    if len(token_tags) != len(sentence.tokens):
        raise ValueError(
            f"{sentence.source}: {len(token_tags)} tags for {len(sentence.tokens)} tokens"
        )
    out = []
    for token, tag in zip(sentence.tokens, token_tags, strict=True):
        inside = "O" if tag == "O" else "I-" + tag[2:]
        out.extend(tag if i == 0 else inside for i, c in enumerate(token) if not c.isspace())
    return out


def strict_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities of one IOB2 sequence as (type, first, last), seqeval's strict mode.

    An entity starts at `B-X` and extends over the following `I-X`; an `I-X` that does not
    continue an entity of type X (after `O`, or another type) belongs to no entity.
    """
    entities, current = [], None  # current: [type, first, last]
    for i, tag in enumerate(tags):
        prefix, kind = tag[:1], tag[2:]
        if current and prefix == "I" and kind == current[0]:
            current[2] = i
            continue
        if current:
            entities.append(tuple(current))
        current = [kind, i, i] if prefix == "B" else None
    if current:
        entities.append(tuple(current))
    return entities


def klue_ner_metrics(
    true_tags: Sequence[Sequence[str]],
    pred_tags: Sequence[Sequence[str]],
    labels: Sequence[str] = KLUE_NER_LABELS,
) -> dict[str, float]:
    """KLUE-NER scores of character tag sequences (one list per sentence, non-space characters).

    Args:
        true_tags: gold tags per sentence (`KlueNerSentence.gold_char_tags`).
        pred_tags: predicted tags per sentence (`to_char_tags`), same lengths.
        labels: the labels averaged by the character-level macro F1.

    Returns:
        {"entity_macro_f1", "entity_micro_f1", "char_macro_f1"}, each in [0, 1].
    """
    if len(true_tags) != len(pred_tags):
        raise ValueError(f"{len(true_tags)} gold sentences but {len(pred_tags)} predicted")
    counts = collections.Counter()  # (type, "true" | "pred" | "correct")
    char = collections.Counter()  # (label, "true" | "pred" | "correct")
    for i, (gold, guess) in enumerate(zip(true_tags, pred_tags, strict=True)):
        if len(gold) != len(guess):
            raise ValueError(f"sentence {i}: {len(gold)} gold tags but {len(guess)} predicted")
        gold_entities, guess_entities = set(strict_entities(gold)), set(strict_entities(guess))
        counts.update((e[0], "true") for e in gold_entities)
        counts.update((e[0], "pred") for e in guess_entities)
        counts.update((e[0], "correct") for e in gold_entities & guess_entities)
        char.update((g, "true") for g in gold)
        char.update((p, "pred") for p in guess)
        char.update((g, "correct") for g, p in zip(gold, guess, strict=True) if g == p)
    types = sorted({kind for kind, _ in counts})
    per_type = [_f1(counts, kind, empty=0.0) for kind in types]
    total = {key: sum(counts[(k, key)] for k in types) for key in ("true", "pred", "correct")}
    return {
        "entity_macro_f1": sum(per_type) / len(per_type) if per_type else 0.0,
        "entity_micro_f1": _f1({("all", k): v for k, v in total.items()}, "all", empty=0.0),
        "char_macro_f1": sum(_f1(char, label, empty=1.0) for label in labels) / len(labels),
    }


def _f1(counts: Mapping, key: str, *, empty: float) -> float:
    """2 tp / (2 tp + fp + fn) of `key` in {(key, "true"/"pred"/"correct"): n}; `empty` if 0/0."""
    denominator = counts.get((key, "true"), 0) + counts.get((key, "pred"), 0)
    return 2 * counts.get((key, "correct"), 0) / denominator if denominator else empty


# ----------------------------------------------------------------------------- KLUE-NLI / STS


def read_klue_nli(
    path: str | pathlib.Path,
    *,
    split: str | None = None,
    eval_fraction: float = 0.2,
    seed: int = 0,
) -> list[TextExample]:
    """Reads KLUE-NLI JSON: text_a = premise, text_b = hypothesis, label = `gold_label`.

    Args:
        path: e.g. `klue-nli-v1.1/klue-nli-v1.1_dev.json`.
        split: "train", "eval" or None (all); see `eval_guids`.
        eval_fraction: share of examples in "eval".
        seed: changes which examples go where.

    Returns:
        `TextExample`s in file order; `source` is "path:guid".
    """
    return _read_klue_pairs(
        path,
        ("premise", "hypothesis", "gold_label"),
        lambda r: r["gold_label"],
        split,
        eval_fraction,
        seed,
    )


def read_klue_sts(
    path: str | pathlib.Path,
    *,
    split: str | None = None,
    eval_fraction: float = 0.2,
    seed: int = 0,
) -> list[TextExample]:
    """Reads KLUE-STS JSON: sentence1/sentence2 and the score `labels.real-label` (0..5) as text.

    Arguments and result as `read_klue_nli` (labels parse as floats).
    """

    def score(row) -> str:
        if not isinstance(row["labels"], dict) or "real-label" not in row["labels"]:
            raise ValueError(f"{path}:{row['guid']}: `labels` has no 'real-label'")
        return repr(float(row["labels"]["real-label"]))

    return _read_klue_pairs(
        path, ("sentence1", "sentence2", "labels"), score, split, eval_fraction, seed
    )


def _read_klue_pairs(path, keys, label_of, split, eval_fraction, seed) -> list[TextExample]:
    """Sentence pairs of a KLUE JSON list: `keys` = (text_a, text_b, label field)."""
    rows = _read_json_list(path, ("guid", *keys))
    examples = [  # every row is checked, whichever side of the split it falls on
        (r["guid"], TextExample(r[keys[0]], r[keys[1]], label_of(r), f"{path}:{r['guid']}"))
        for r in rows
    ]
    kept = {r["guid"] for r in _split_rows(rows, split, eval_fraction, seed)}
    return [example for guid, example in examples if guid in kept]


def _read_json_list(path, keys: Sequence[str]) -> list[dict]:
    """The rows of a JSON list of objects, each checked for `keys`."""
    with TextFile(path, "a KLUE JSON file") as f:
        try:
            rows = json.loads(f.read())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of examples, got {type(rows).__name__}")
    for index, row in enumerate(rows):
        missing = [k for k in keys if not isinstance(row, dict) or k not in row]
        if missing:
            raise ValueError(f"{path}: example {index} lacks {missing}")
    return rows


def _split_rows(rows: list[dict], split, eval_fraction, seed) -> list[dict]:
    _check_split(split)
    if split is None:
        return rows
    held_out = eval_guids([r["guid"] for r in rows], eval_fraction, seed)
    return [r for r in rows if (r["guid"] in held_out) == (split == "eval")]


def _check_split(split) -> None:
    if split not in (*_SPLITS, None):
        raise ValueError(f"split must be one of {_SPLITS} or None, got {split!r}")


def split_args(task_cfg, split: str) -> dict:
    """The `split`, `eval_fraction`, `seed` arguments of a KLUE reader for `config.task`: one
    side of the seeded split by guid when `config.task.split_by_guid` (KLUE shares only dev
    files), else the whole file."""
    side = split if task_cfg.split_by_guid and split in ("train", "eval") else None
    return {"split": side, "eval_fraction": task_cfg.eval_fraction, "seed": task_cfg.split_seed}


def eval_guids(guids: Sequence[str], eval_fraction: float = 0.2, seed: int = 0) -> set[str]:
    """The ids of a reproducible eval split: the first `round(eval_fraction * n)` by hash.

    Ids are ordered by SHA-256 of "seed:guid", so the split depends only on the ids, the fraction
    and the seed (not on file order or paths); at least 1 and at most n - 1 ids are held out.

    Raises:
        ValueError: fewer than 2 ids, or duplicate ids.
    """
    if len(guids) < 2:
        raise ValueError("a train/eval split needs at least 2 examples")
    if len(set(guids)) != len(guids):
        raise ValueError("the example ids are not unique, so they cannot define a split")
    n_eval = min(max(round(eval_fraction * len(guids)), 1), len(guids) - 1)
    key = lambda guid: hashlib.sha256(f"{seed}:{guid}".encode()).hexdigest()
    return set(sorted(guids, key=key)[:n_eval])


# ----------------------------------------------------------------------------- KorQuAD 1.0


_KORQUAD_SPACED = "'\"《》<>〈〉()‘’"  # replaced by spaces before punctuation is dropped
_PUNCTUATION = frozenset(string.punctuation)


def korquad_normalize(text: str) -> str:
    """KorQuAD 1.0 normalisation: quotes/brackets to spaces, lowercase, drop ASCII punctuation,
    collapse whitespace. Unlike SQuAD, no English articles are removed."""
    text = "".join(" " if ch in _KORQUAD_SPACED else ch for ch in text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    return " ".join(text.split())


def korquad_answer_f1(prediction: str, ground_truth: str) -> float:
    """F1 over the characters of two normalized answers (whitespace excluded), in [0, 1]."""
    chars = lambda text: [c for c in korquad_normalize(text) if c != " "]
    return overlap_f1(chars(prediction), chars(ground_truth))


def korquad_em_f1(predictions: Mapping[str, str], examples: Sequence) -> dict[str, float]:
    """Exact match and character F1 as the official KorQuAD 1.0 script, in percent.

    The conventions of `tasks.qa.squad_em_f1` (the max over gold answers; a question without a
    prediction scores 0). Exact match compares the normalized strings, spaces included; F1 counts
    characters, spaces excluded.

    Args:
        predictions: {question id: predicted answer text}.
        examples: objects with `id` and `answers` (each with `text`), e.g. `QAExample`.

    Returns:
        {"exact_match": %, "f1": %}.
    """
    return exact_match_f1(
        predictions, examples, normalize=korquad_normalize, answer_f1=korquad_answer_f1
    )


# ----------------------------------------------------------------------------- table corpora


def iter_table_documents(
    path: str | pathlib.Path, text_column: str, format: str | None = None
) -> Iterator[list[str]]:
    """Yields one document per row of a CSV (with header) or JSONL file, as a list of sentences.

    The cell's lines are paragraphs; each is cut by `data.text.split_sentences`, so a
    document has the shape `data.text.iter_documents` yields. Rows whose cell is blank are
    skipped (logged), as empty documents are there.

    Args:
        path: the file.
        text_column: the header name (CSV) or key (JSONL) of the text.
        format: "csv" or "jsonl"; inferred from the suffix when None.

    Raises:
        ValueError: unknown format, missing column, a row with the wrong number of fields, or
            a value that is not text; the message names the file, row (1-based, header
            excluded), line and column.
    """
    path = pathlib.Path(path)
    format = format or path.suffix.lstrip(".").lower()
    if format not in _TABLE_FORMATS:
        raise ValueError(f"{path}: format must be one of {_TABLE_FORMATS}, got {format!r}")
    rows = _csv_cells(path, text_column) if format == "csv" else _jsonl_cells(path, text_column)
    blank = 0
    for text in rows:
        paragraphs = [line.strip() for line in text.splitlines() if line.strip()]
        sentences = [s for p in paragraphs for s in split_sentences(p)]
        if sentences:
            yield sentences
        else:
            blank += 1
    if blank:
        logger.warning("%s: skipped %d rows whose %r is blank", path, blank, text_column)


def _csv_cells(path: pathlib.Path, column: str) -> Iterator[str]:
    with TextFile(path, "a CSV corpus file") as f:
        reader = csv.reader(f)
        try:
            names = next(reader, [])
            if column not in names:
                raise ValueError(f"{path}: no column {column!r}; the header has {names}")
            index = names.index(column)
            for row_no, row in enumerate(reader, start=1):
                if len(row) != len(names):
                    raise ValueError(
                        f"{path}: row {row_no} (ending on line {reader.line_num}) has "
                        f"{len(row)} fields, the header {len(names)}"
                    )
                yield row[index]
        except csv.Error as e:
            raise ValueError(f"{path}: line {reader.line_num}: {e}") from None


def _jsonl_cells(path: pathlib.Path, column: str) -> Iterator[str]:
    with TextFile(path, "a JSONL corpus file") as f:
        row_no = 0
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            row_no += 1
            where = f"{path}: row {row_no} (line {line_no})"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e})") from None
            if not isinstance(row, dict) or column not in row:
                raise ValueError(f"{where}: no key {column!r}")
            if not isinstance(row[column], str):
                raise ValueError(f"{where}: {column!r} is {type(row[column]).__name__}, not text")
            yield row[column]


# ----------------------------------------------------------------------------- registered


def read_klue_ner_task(task_cfg, path: pathlib.Path, split: str) -> list[KlueNerSentence]:
    """`config.task.format="klue-ner"`: `read_klue_ner` with the task's unit and split."""
    return read_klue_ner(path, **split_args(task_cfg, split))


def read_klue_nli_task(task_cfg, path: pathlib.Path, split: str) -> list[TextExample]:
    """`config.task.format="klue-nli"`: `read_klue_nli` with the task's split."""
    return read_klue_nli(path, **split_args(task_cfg, split))


def read_klue_sts_task(task_cfg, path: pathlib.Path, split: str) -> list[TextExample]:
    """`config.task.format="klue-sts"`: `read_klue_sts` with the task's split."""
    return read_klue_sts(path, **split_args(task_cfg, split))


def klue_ner_task_metrics(predictions, references) -> dict[str, float]:
    """`config.task.metric="klue"`: the CoNLL entity scores and token accuracy plus KLUE's
    entity and character macro F1 (`klue_ner_metrics`; characters are the tokens)."""
    return {**conll_metrics(predictions, references), **klue_ner_metrics(references, predictions)}
