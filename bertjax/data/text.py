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

Every text file bertjax reads (corpora, tokenizer training files, fine-tuning and prediction
inputs, gazetteers) is opened with `TextFile`, under one policy for invalid UTF-8: repaired by
default (each invalid byte sequence becomes U+FFFD, the repaired lines are counted and reported
per file), or refused with file, line and column inside `utf8_policy(strict=True)`, which the
jobs enter from `config.data.strict_utf8` and the commands without a config from
`--strict-utf8`.
"""

from __future__ import annotations

import codecs
import contextlib
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


# --------------------------------------------------------------------------------------------
# Invalid UTF-8: one policy for every text reader
# --------------------------------------------------------------------------------------------

_strict_utf8 = [False]  # process-wide: readers may run in other threads (tokenizers' trainer)
STRICT_HINT = "config.data.strict_utf8, or --strict-utf8 for commands without a config"


@contextlib.contextmanager
def utf8_policy(strict: bool) -> Iterator[None]:
    """Text files opened inside the block refuse invalid UTF-8 (`strict`) or repair it."""
    before, _strict_utf8[0] = _strict_utf8[0], bool(strict)
    try:
        yield
    finally:
        _strict_utf8[0] = before


class TextFile:
    """A UTF-8 text file read line by line under the policy of `utf8_policy` (taken at open).

    Repair (the default): each invalid byte sequence becomes U+FFFD; the lines so repaired are
    counted (`repaired_lines`, the first at `first_repair` = (line, byte column)) and, when the
    file closes, one warning names the file and the count (`report`; it is repeated under a
    job's end summary). Strict: the first invalid sequence is a ValueError naming
    `file:line:column` and `what` the file is. A leading BOM is dropped and a line ends in "\n"
    (a Windows "\r\n" too). Use as `with TextFile(path, what) as f: for line in f: ...`.
    """

    def __init__(self, path: str | os.PathLike, what: str = "a text file", *, report=True):
        self.path, self.what, self.report = pathlib.Path(path), what, report
        self.strict = _strict_utf8[0]
        self.repaired_lines, self.first_repair, self.line = 0, None, 0
        self._file, self._lines = None, None

    def __enter__(self) -> TextFile:
        self._file = open(self.path, "rb")  # noqa: SIM115 - closed by __exit__
        self._lines = self._whole_lines()
        return self

    def __exit__(self, exc_type, *_) -> None:
        self._file.close()
        if exc_type is None and self.report and self.repaired_lines:
            line, column = self.first_repair
            logger.warning(
                "%s: %d lines held invalid UTF-8, repaired as U+FFFD (the first at line %d, "
                "column %d); to refuse such files instead, set %s",
                self.path,
                self.repaired_lines,
                line,
                column,
                STRICT_HINT,
                extra={"summary": True},
            )

    def __iter__(self) -> Iterator[str]:
        return self._lines

    def readline(self) -> str:
        return next(self._lines, "")

    def read(self) -> str:
        return "".join(self._lines)

    def pieces(self, max_bytes: int = -1) -> Iterator[tuple[str, bool]]:
        """Yields `(text, continues)` for each line, in pieces of at most `max_bytes` bytes (-1:
        whole lines); `continues` is True for a piece that goes on an unfinished line."""
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        continues, offset = False, 0  # offset: bytes of this line before the piece
        while raw := self._file.readline(max_bytes):
            if not continues:
                self.line, offset = self.line + 1, 0
            ends = raw.endswith(b"\n")
            last = not ends and (max_bytes < 0 or len(raw) < max_bytes)  # the end of the file
            text = self._decode(decoder, raw, offset, final=last)
            if self.line == 1 and not continues:
                text = text.removeprefix("\ufeff")
            if ends and text.endswith("\r\n"):
                text = text[:-2] + "\n"
            yield text, continues
            continues, offset = not ends, offset + len(raw)
        if tail := self._decode(decoder, b"", offset, final=True):
            yield tail, continues

    def _whole_lines(self) -> Iterator[str]:
        """The lines, decoded a line at a time (a line never ends inside a UTF-8 sequence)."""
        for number, raw in enumerate(self._file, 1):
            self.line = number
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                self._invalid(err.start + 1)
                text = raw.decode("utf-8", errors="replace")
            if self.line == 1:
                text = text.removeprefix("\ufeff")
            yield text[:-2] + "\n" if text.endswith("\r\n") else text

    def _decode(self, decoder, raw: bytes, offset: int, *, final: bool) -> str:
        try:
            return decoder.decode(raw, final)
        except UnicodeDecodeError as err:  # the decoder still holds the bytes pending before
            self._invalid(offset + err.start - len(decoder.getstate()[0]) + 1)
            decoder.errors = "replace"
            try:
                return decoder.decode(raw, final)
            finally:
                decoder.errors = "strict"

    def _invalid(self, column: int) -> None:
        """Invalid UTF-8 at `column` of the current line: refused (strict) or counted."""
        if self.strict:
            raise ValueError(
                f"{self.path}:{self.line}:{column}: invalid UTF-8 in {self.what}; re-encode the "
                f"file as UTF-8, or leave strict UTF-8 off ({STRICT_HINT}) to repair it as U+FFFD"
            )
        self.repaired_lines += 1
        self.first_repair = self.first_repair or (self.line, column)


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
    """Yields `(text, continues)` for each line piece of a text file (`TextFile`, its line end
    removed), never longer than `MAX_LINE_BYTES`; `continues` is True when the piece is cut
    from a longer line. Repaired lines are counted in `lines_repaired_utf8`."""
    cut = False
    with TextFile(path, "a corpus file") as f:
        for text, continues in f.pieces(MAX_LINE_BYTES):
            stats.lines += not continues
            stats.lines_cut_long += continues and not cut  # the second piece of a line
            cut = continues
            yield text.rstrip("\r\n"), continues
    stats.lines_repaired_utf8 += f.repaired_lines


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
