"""Entity spans and entity markers for entity-aware BERT (`config.model.entity_vocab_size=2`).

Host-side and numpy-only. A span source gives character spans `(start, end)` (end exclusive) of
the entities in a text; `insert_markers` writes `[ENT]` and `[/ENT]` around each span, and the
tokenizer keeps the markers whole (they are special tokens of the vocabulary). From the token ids
alone `entity_ids` marks every token of `[ENT] ... [/ENT]`, **markers included**, with 1, and
`entity_word_starts` makes each entity one word for whole-word masking (ERNIE-style entity
masking). So classification, QA and pretraining share one path: spans -> marked text -> ids.

Span sources (`config.task.entities` / `config.data.entities`):
  * "markup": inline `<text:TYPE>` as in KLUE-NER (`parse_markup` strips it).
  * "jsonl": a field `"entities": [[start, end], ...]` of character offsets (`spans_from_field`).
  * "gazetteer:<file>" (the path may start $BERTJAX_DATA): a list of names, one a line (e.g. the
    titles of the corpus documents, `read_gazetteer`), matched in the text longest first
    (`Gazetteer.spans`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

from bertjax.config import resolve_path
from bertjax.data.text import TextFile

ENT, END_ENT = "[ENT]", "[/ENT]"
ENTITY_MARKERS = (ENT, END_ENT)
SOURCES = ("markup", "jsonl", "gazetteer:<file>")

Span = tuple[int, int]
_MARKUP = re.compile(r"<([^<>:]+):([A-Za-z_]+)>")
_TITLE = re.compile(r'<doc\b[^>]*\btitle="([^"]*)"')


def check_source(source: str, field: str) -> str:
    """Validates a span source; raises naming `field` (e.g. "config.task.entities")."""
    if source in ("markup", "jsonl") or (source.startswith("gazetteer:") and len(source) > 10):
        return source
    raise ValueError(f"{field}={source!r} is invalid: allowed values are {SOURCES} (or '' for off)")


def parse_markup(text: str) -> tuple[str, list[Span]]:
    """Strips inline `<text:TYPE>` markup.

    Args:
      text: e.g. "<이순신:PS>은 <조선:LC>의 장군이다".

    Returns:
      The plain text ("이순신은 조선의 장군이다") and the character spans of the entities in it
      ([(0, 3), (5, 7)]).
    """
    plain, spans, last = [], [], 0
    length = 0
    for match in _MARKUP.finditer(text):
        before = text[last : match.start()]
        plain.append(before)
        length += len(before)
        spans.append((length, length + len(match.group(1))))
        plain.append(match.group(1))
        length += len(match.group(1))
        last = match.end()
    plain.append(text[last:])
    return "".join(plain), spans


def spans_from_field(value, text: str, source: str) -> list[Span]:
    """Checks a JSONL `entities` value ([[start, end], ...], character offsets, end exclusive).

    Raises:
      ValueError: naming `source` ("path:line") when a span is malformed, out of the text or
        overlaps another.
    """
    spans = []
    for item in value or ():
        if not (isinstance(item, (list, tuple)) and len(item) == 2):
            raise ValueError(f"{source}: entity span {item!r} is not [start, end]")
        start, end = int(item[0]), int(item[1])
        if not 0 <= start < end <= len(text):
            raise ValueError(f"{source}: entity span {item!r} is outside the text of {len(text)}")
        spans.append((start, end))
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise ValueError(f"{source}: entity spans overlap: {spans}")
    return spans


def read_gazetteer(path: str | os.PathLike) -> list[str]:
    """Names, one a line; a WikiExtractor file (`<doc ... title="...">`) gives its titles."""
    with TextFile(path, "a gazetteer") as f:
        text = f.read()
    titles = _TITLE.findall(text)
    names = titles if titles else text.splitlines()
    return sorted({n.strip() for n in names if n.strip()})


class Gazetteer:
    """Finds names in text, longest match first, left to right, never overlapping.

    Args:
      names: the entity names (e.g. `read_gazetteer(path)`).
    """

    def __init__(self, names: Sequence[str]):
        self.names = set(names)
        self.lengths = sorted({len(n) for n in self.names}, reverse=True)

    def spans(self, text: str) -> list[Span]:
        """Character spans of the names in `text` (a match at each position takes the longest
        name; matching resumes after it)."""
        spans, i = [], 0
        while i < len(text):
            for n in self.lengths:
                if i + n <= len(text) and text[i : i + n] in self.names:
                    spans.append((i, i + n))
                    i += n
                    break
            else:
                i += 1
        return spans


def insert_markers(text: str, spans: Sequence[Span]) -> tuple[str, np.ndarray]:
    """Writes `[ENT] ` and ` [/ENT]` around each span.

    Args:
      text: the plain text.
      spans: sorted, non-overlapping character spans.

    Returns:
      The marked text and int64 [len(text) + 1] new offsets: position i of `text` is at
      `offsets[i]` in the marked text (for moving answer offsets, QA).
    """
    shift = np.zeros(len(text) + 1, np.int64)
    parts, last = [], 0
    for start, end in spans:
        parts += [text[last:start], f"{ENT} ", text[start:end], f" {END_ENT}"]
        shift[start:] += len(ENT) + 1
        shift[end:] += len(END_ENT) + 1
        last = end
    parts.append(text[last:])
    return "".join(parts), np.arange(len(text) + 1) + shift


def entity_ids(input_ids: np.ndarray, ent_id: int, end_id: int) -> np.ndarray:
    """1 on every token of `[ENT] ... [/ENT]` (markers included), else 0.

    A span cut by truncation counts from its `[ENT]` to the end of the row.

    Args:
      input_ids: int [..., length].
      ent_id, end_id: ids of `[ENT]` and `[/ENT]`.

    Returns:
      int32 [..., length].
    """
    ids = np.asarray(input_ids)
    marker = np.where(ids == ent_id, 1, np.where(ids == end_id, 2, 0))
    index = np.where(marker > 0, np.arange(ids.shape[-1]), -1)
    last = np.maximum.accumulate(index, axis=-1)  # position of the latest marker, -1 if none
    latest = np.take_along_axis(marker, np.maximum(last, 0), axis=-1) * (last >= 0)
    return ((latest == 1) | (ids == end_id)).astype(np.int32)


def entity_word_starts(
    word_starts: np.ndarray, input_ids: np.ndarray, ent_id: int, end_id: int
) -> np.ndarray:
    """Makes each entity one word for whole-word masking (`config.data.entity_masking`).

    The pieces between `[ENT]` and `[/ENT]` form one word (only the first starts it); the markers
    stay words of their own.

    Args:
      word_starts: bool [..., length] (see `instances.nsp_pairs.make_word_start_table`).
      input_ids: int [..., length].
      ent_id, end_id: ids of the markers.

    Returns:
      bool [..., length].
    """
    ids = np.asarray(input_ids)
    inside = (entity_ids(ids, ent_id, end_id) == 1) & (ids != ent_id) & (ids != end_id)
    previous = np.pad(ids[..., :-1], [(0, 0)] * (ids.ndim - 1) + [(1, 0)], constant_values=-1)
    first_inside = inside & (previous == ent_id)
    return np.where(inside, first_inside, np.asarray(word_starts, bool))


class SpanSource:
    """A configured span source that marks texts (`config.task.entities`, `config.data.entities`).

    Args:
      spec: "markup", "jsonl" or "gazetteer:<file>".
      field: the config field named in errors.
    """

    def __init__(self, spec: str, field: str):
        self.spec = check_source(spec, field)
        self.gazetteer = None
        if spec.startswith("gazetteer:"):
            path = resolve_path(spec.removeprefix("gazetteer:"))
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{field}={spec!r}: gazetteer file {path} does not exist")
            self.gazetteer = Gazetteer(read_gazetteer(path))

    def mark(self, text: str, spans: Sequence[Span] | None = None) -> str:
        """The text with `[ENT]`/`[/ENT]` around its entities (markup stripped; `spans`: the
        JSONL field's spans of `text`)."""
        if self.spec == "markup":
            text, spans = parse_markup(text)
        elif self.gazetteer is not None:
            spans = self.gazetteer.spans(text)
        return insert_markers(text, spans or ())[0]

    @staticmethod
    def marker_ids(tokenizer, field: str) -> tuple[int, int]:
        """Ids of `[ENT]` and `[/ENT]`; raises naming `field` when the vocabulary lacks them."""
        ids = tuple(tokenizer.token_to_id(t) for t in ENTITY_MARKERS)
        if None in ids:
            raise ValueError(
                f"{field} needs {ENTITY_MARKERS} in the vocabulary: train it with "
                "config.model.entity_vocab_size > 0 or append them with config.data.extra_vocab"
            )
        return ids
