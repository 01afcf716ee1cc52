"""Reading pretraining text: files -> documents -> sentences, streamed with bounded memory.

  * Documents are separated by blank lines (the original BERT format), or, with
    `documents_per_file=True`, each file is one document whose blank lines only end paragraphs.
    WikiExtractor `<doc ...>` ... `</doc>` lines always delimit documents (blank lines inside are
    paragraph breaks) and are removed.
  * Lines of a paragraph are joined (our corpora are line-wrapped) and the paragraph is cut into
    sentences by `split_sentences`.
  * Documents are cut into parts of at most `MAX_DOCUMENT_CHARS` characters and lines into pieces
    of at most `MAX_LINE_BYTES` bytes, so that one giant document or line cannot hold the memory.

What was read, repaired, cut or skipped is counted in `Statistics` (stored in the metadata).
"""

from __future__ import annotations

import codecs
import dataclasses
import glob
import logging
import os
import pathlib
import re
from collections.abc import Iterator, Sequence

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 1 << 20  # longer lines are read in pieces of this size
MAX_SENTENCE_CHARS = 10_000  # longer "sentences" are cut at whitespace before tokenization
MAX_DOCUMENT_CHARS = 1 << 18  # longer documents are cut into parts at a paragraph/line boundary
BINARY_PROBE_BYTES = 8192  # bytes inspected to detect binary files
# --------------------------------------------------------------------------------------------
# Sentence splitting
# --------------------------------------------------------------------------------------------

# A boundary is sentence-final punctuation, optional closing quotes/brackets, then whitespace and
# an opening quote/bracket or the next word; CJK full stops need no whitespace after them.
_BOUNDARY = re.compile(r"""[.!?]+["'”’)\]]*\s+(?=["'“‘(\[]*\w)|[。！？]+[」』”’)]*\s*""")
_OPENERS = "\"'“‘([ "
_ABBREVIATION = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|Gen|Capt|Col|vs|etc|No)|\b\w)$")
_LOOKBACK = 6


def split_sentences(text: str) -> list[str]:
    """Splits a paragraph into sentences with a small rule set.

    A sentence ends at `.`, `!` or `?` (plus closing quotes or brackets) followed by whitespace,
    unless the next word starts with a lowercase letter or the full stop follows a common
    abbreviation (Mr., Dr., St., ...) or a single letter (initials such as "J. R. R."). CJK full
    stops `。！？` always end a sentence. Good enough for segment A/B boundaries; not a linguistic
    sentence splitter.

    Args:
      text: One paragraph, lines already joined.

    Returns:
      The non-empty sentences, stripped, in order.
    """
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(text):
        punct = match.group()
        if punct[0] in ".!?":
            following = text[match.end() :].lstrip(_OPENERS)[:1]
            if following.islower():
                continue
            if punct.rstrip().rstrip("\"'”’)]") == "." and _ABBREVIATION.search(
                text[max(start, match.start() - _LOOKBACK) : match.start()]
            ):
                continue
        sentence = text[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def cap_sentence(sentence: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Cuts a sentence longer than `max_chars` into pieces, at whitespace when there is some."""
    pieces = []
    while len(sentence) > max_chars:
        cut = sentence.rfind(" ", max_chars // 2, max_chars)
        cut = max_chars if cut < 0 else cut
        pieces.append(sentence[:cut])
        sentence = sentence[cut:].lstrip()
    if sentence:
        pieces.append(sentence)
    return pieces


# --------------------------------------------------------------------------------------------
# Reading documents
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Statistics:
    """What was read, repaired, cut or skipped; stored in the metadata."""

    files: int = 0
    files_empty: int = 0
    files_skipped_binary: int = 0
    lines: int = 0
    lines_repaired_utf8: int = 0
    lines_cut_long: int = 0
    sentences_cut_long: int = 0
    sentences_split_tokens: int = 0
    documents: int = 0
    documents_cut_long: int = 0
    documents_skipped_single_sentence: int = 0
    documents_skipped_after_tokenization: int = 0
    entity_spans: int = 0  # [ENT] ... [/ENT] spans written (config.data.entities)
    rows_skipped_bad: int = 0  # parallel data: rows without both texts (data.parallel)
    pairs_truncated: int = 0  # parallel data: pairs cut to data.max_seq_len / max_target_len

    def add(self, other: dict[str, int]) -> None:
        for key, value in other.items():
            setattr(self, key, getattr(self, key) + value)


_replaced_bytes = [0]


def _count_and_replace(error: UnicodeDecodeError) -> tuple[str, int]:
    _replaced_bytes[0] += 1
    return "\ufffd", error.end


codecs.register_error("bertjax_count_replace", _count_and_replace)


def resolve_files(patterns: Sequence[str | os.PathLike]) -> list[pathlib.Path]:
    """Expands files, folders (their `*.txt` files) and glob patterns into a sorted file list.

    Raises:
      FileNotFoundError: A pattern matches nothing.
    """
    files = []
    for pattern in patterns:
        pattern = str(pattern)
        if os.path.isdir(pattern):
            matches = sorted(glob.glob(os.path.join(pattern, "*.txt")))
        else:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            matches = [m for m in matches if os.path.isfile(m)]
        if not matches:
            raise FileNotFoundError(f"input {pattern!r} matches no file")
        files.extend(pathlib.Path(m) for m in matches)
    return files


def looks_binary(head: bytes) -> bool:
    """True when a file's first bytes hold a NUL byte or mostly control characters."""
    if b"\0" in head:
        return True
    if not head:
        return False
    control = sum(1 for byte in head if byte < 32 and byte not in b"\t\n\r\f\v\b\x1b")
    return control / len(head) > 0.3


def iter_lines(path: pathlib.Path, stats: Statistics) -> Iterator[tuple[str, bool]]:
    """Yields `(text, continues)` for each line piece of a UTF-8 file, never longer than
    `MAX_LINE_BYTES`; `continues` is True when the piece is cut from a longer line.

    Invalid UTF-8 is replaced by U+FFFD and the line counted in `lines_repaired_utf8`.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="bertjax_count_replace")
    continues = False
    with open(path, "rb") as f:
        while True:
            raw = f.readline(MAX_LINE_BYTES)
            if not raw:
                break
            before = _replaced_bytes[0]
            text = decoder.decode(raw)
            if _replaced_bytes[0] != before:
                stats.lines_repaired_utf8 += 1
            cut = not raw.endswith(b"\n")
            if cut and len(raw) == MAX_LINE_BYTES and not continues:
                stats.lines_cut_long += 1
            if not continues:
                stats.lines += 1
            yield text.rstrip("\r\n"), continues
            continues = cut and len(raw) == MAX_LINE_BYTES
    tail = decoder.decode(b"", final=True)
    if tail:
        stats.lines_repaired_utf8 += 1
        yield tail, continues


class _DocumentBuilder:
    """Accumulates paragraphs (lists of line pieces) into a document of sentences."""

    def __init__(self, stats: Statistics):
        self.stats = stats
        self.sentences: list[str] = []
        self.lines: list[str] = []
        self.chars = 0

    def add_line(self, text: str, continues: bool) -> bool:
        """Adds a line piece; True when the document reached its size cap."""
        if continues and self.lines:
            self.lines[-1] += text
        else:
            self.lines.append(text.strip())
        self.chars += len(text)
        return self.chars >= MAX_DOCUMENT_CHARS

    def end_paragraph(self) -> None:
        if not self.lines:
            return
        paragraph = " ".join(line for line in self.lines if line)
        self.lines = []
        for sentence in split_sentences(paragraph):
            pieces = cap_sentence(sentence)
            self.stats.sentences_cut_long += len(pieces) - 1
            self.sentences.extend(pieces)

    def take(self) -> list[str]:
        self.end_paragraph()
        sentences, self.sentences, self.chars = self.sentences, [], 0
        return sentences


def iter_documents(
    path: pathlib.Path, stats: Statistics, *, documents_per_file: bool = False
) -> Iterator[list[str]]:
    """Yields the documents of one text file as lists of sentences (see the module docstring).

    Binary files are skipped with a warning; empty documents are dropped silently (they hold no
    text); the counts go to `stats`.
    """
    with open(path, "rb") as f:
        head = f.read(BINARY_PROBE_BYTES)
    stats.files += 1
    if looks_binary(head):
        stats.files_skipped_binary += 1
        logger.warning("skipping %s: it looks like a binary file, not text", path)
        return
    if not head.strip():
        stats.files_empty += 1
        logger.warning("%s holds no text", path)
        return
    builder, in_doc_tag = _DocumentBuilder(stats), False
    for text, continues in iter_lines(path, stats):
        stripped = text.strip() if not continues else text
        if not continues and stripped.startswith("<doc ") and stripped.endswith(">"):
            yield builder.take()
            in_doc_tag = True
        elif not continues and stripped == "</doc>":
            yield builder.take()
        elif not continues and not stripped:
            if in_doc_tag or documents_per_file:
                builder.end_paragraph()
            else:
                yield builder.take()
        elif builder.add_line(text, continues):
            stats.documents_cut_long += 1
            yield builder.take()
    yield builder.take()
