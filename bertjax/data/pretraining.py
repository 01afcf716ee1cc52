"""Pretraining data, prepared once on the host: BERT's sentence pairs or GPT's token blocks.

`prepare` turns raw text into fixed-shape instances and writes them as memory-mappable numpy
shards; `PretrainingSource` reads them back one example at a time for the input pipeline. The
instance builder is picked by `instances` (`config.data.instances`):

  * "nsp_pairs" (BERT, masked LM + next-sentence prediction): `[CLS] A [SEP] B [SEP]`, below.
  * "lm_blocks" (GPT, causal LM, the nanoGPT way): each chunk's documents are tokenised whole,
    each followed by <|endoftext|>, concatenated and cut into blocks of `max_seq_len` tokens
    (the chunk's last block padded); the first token of every document is marked
    (`document_starts`) so that a source can restart attention per document.

Everything else (reading, splitting, chunking, workers, shards, resume) is shared. Masking is not done here: it is dynamic, on device, every step, so the original
`dupe_factor` (several differently masked copies of the corpus) is not needed.

Input text:
  * Documents are separated by blank lines (the original BERT format), or, with
    `documents_per_file=True`, each file is one document whose blank lines only end paragraphs.
    WikiExtractor `<doc ...>` ... `</doc>` lines always delimit documents (blank lines inside are
    paragraph breaks) and are removed.
  * Lines of a paragraph are joined (our corpora are line-wrapped) and the paragraph is cut into
    sentences by `split_sentences`.
  * Documents with a single sentence cannot form a pair A/B: they are skipped and counted.
  * Documents are cut into parts of at most `MAX_DOCUMENT_CHARS` characters and lines into pieces
    of at most `MAX_LINE_BYTES` bytes, so that one giant document or line cannot hold the memory.

Instances follow the algorithm of Google's original `create_pretraining_data.py`: per document a
target length (`max_seq_len - 3`, or with probability `short_seq_prob` a random shorter one) is
filled with whole sentences; the filled chunk is cut at a random sentence into A and B; half of
the time B is replaced by a span from another document (label 1) and the unused sentences are
given back; the longer segment loses tokens at a random end until the pair fits.

Streaming and parallelism: the main process reads files one line at a time, splits sentences,
assigns documents to the train or eval split, and groups each split's documents into chunks of
about `chunk_chars` characters. Worker processes tokenize a chunk and build its instances with a
random generator seeded by `(seed, chunk index)`, so the output depends on the seed and the
chunking only, not on the number or timing of workers. The "random document" for NSP is drawn
from the same chunk (a bounded pool of neighbouring documents of the same split, as the original
drew from all documents); a chunk holding a single document draws from another part of it.
Only a bounded number of chunks is in flight, and instances are written shard by shard, so memory
does not grow with the corpus.
"""

from __future__ import annotations

import bisect
import codecs
import dataclasses
import glob
import hashlib
import json
import logging
import math
import multiprocessing
import os
import pathlib
import random
import re
import shutil
from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np

from bertjax.data import entities as entities_lib
from bertjax.data import tokenizer as tokenizer_lib
from bertjax.files import atomic_write_text

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS = ("train", "eval")
FIELDS = ("input_ids", "token_type_ids", "lengths", "next_sentence_labels", "word_starts")
BLOCK_FIELDS = ("input_ids", "lengths", "document_starts")  # the shard fields of "lm_blocks"
INSTANCES = ("nsp_pairs", "lm_blocks")
MAX_LINE_BYTES = 1 << 20  # longer lines are read in pieces of this size
MAX_SENTENCE_CHARS = 10_000  # longer "sentences" are cut at whitespace before tokenization
MAX_DOCUMENT_CHARS = 1 << 18  # longer documents are cut into parts at a paragraph/line boundary
BINARY_PROBE_BYTES = 8192  # bytes inspected to detect binary files
NSP_RANDOM_DOCUMENT_TRIES = 10

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


# --------------------------------------------------------------------------------------------
# Instances (run in worker processes)
# --------------------------------------------------------------------------------------------

Instance = tuple[list[int], list[int], int]  # (tokens_a, tokens_b, next_sentence_label)


def create_instances(
    documents: Sequence[Sequence[Sequence[int]]],
    *,
    max_num_tokens: int,
    short_seq_prob: float,
    rng: random.Random,
) -> list[Instance]:
    """Builds NSP sentence-pair instances from tokenized documents.

    Args:
      documents: documents -> sentences -> token ids (no special tokens).
      max_num_tokens: Room for A and B together (max_seq_len - 3).
      short_seq_prob: Probability that a document uses a random shorter target length.
      rng: Source of all random choices.

    Returns:
      `(tokens_a, tokens_b, label)` with label 1 when B is a random span, 0 when B follows A.
    """
    instances = []
    for index in range(len(documents)):
        instances.extend(_document_instances(documents, index, max_num_tokens, short_seq_prob, rng))
    return instances


def _document_instances(documents, index, max_num_tokens, short_seq_prob, rng) -> list[Instance]:
    document = documents[index]
    target = max_num_tokens
    if rng.random() < short_seq_prob:
        target = rng.randint(2, max_num_tokens)
    instances: list[Instance] = []
    chunk: list[Sequence[int]] = []
    chunk_len, i = 0, 0
    while i < len(document):
        chunk.append(document[i])
        chunk_len += len(document[i])
        if i == len(document) - 1 or chunk_len >= target:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
            if len(chunk) == 1 or rng.random() < 0.5:
                label = 1
                tokens_b = _random_span(documents, index, target - len(tokens_a), rng)
                i -= len(chunk) - a_end  # the sentences after A were not used: give them back
            else:
                label = 0
                tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
            tokens_a, tokens_b = truncate_pair(tokens_a, tokens_b, max_num_tokens, rng)
            if tokens_a and tokens_b:
                instances.append((tokens_a, tokens_b, label))
            chunk, chunk_len = [], 0
        i += 1
    return instances


def _random_span(documents, index: int, target: int, rng: random.Random) -> list[int]:
    """Consecutive sentences from a random other document, from a random start, >= target."""
    other = index
    for _ in range(NSP_RANDOM_DOCUMENT_TRIES):
        other = rng.randrange(len(documents))
        if other != index:
            break
    document = documents[other]
    tokens: list[int] = []
    for sentence in document[rng.randrange(len(document)) :]:
        tokens.extend(sentence)
        if len(tokens) >= target:
            break
    return tokens


def truncate_pair(
    tokens_a: list[int], tokens_b: list[int], max_num_tokens: int, rng: random.Random
) -> tuple[list[int], list[int]]:
    """Drops tokens from the longer segment, at a random end each time, until the pair fits."""
    a0, a1, b0, b1 = 0, len(tokens_a), 0, len(tokens_b)
    while (a1 - a0) + (b1 - b0) > max_num_tokens:
        front = rng.random() < 0.5
        if a1 - a0 > b1 - b0:
            a0, a1 = (a0 + 1, a1) if front else (a0, a1 - 1)
        else:
            b0, b1 = (b0 + 1, b1) if front else (b0, b1 - 1)
    return tokens_a[a0:a1], tokens_b[b0:b1]


def pack_instances(
    instances: Sequence[Instance],
    *,
    max_seq_len: int,
    special_ids: dict[str, int],
    word_start_table: np.ndarray,
    ids_dtype: np.dtype,
) -> dict[str, np.ndarray]:
    """Lays instances out as `[CLS] A [SEP] B [SEP] [PAD]...` in fixed-shape arrays.

    Args:
      instances: From `create_instances`; A and B must fit in `max_seq_len - 3`.
      max_seq_len: L, the padded length.
      special_ids: From `tokenizer.special_token_ids`.
      word_start_table: [vocab] bool, True for ids that can start a word (not "##..." and not
        [PAD], [CLS], [SEP] or [MASK]).
      ids_dtype: Storage dtype of the ids.

    Returns:
      input_ids [N, L], token_type_ids [N, L] uint8, lengths [N] uint16,
      next_sentence_labels [N] uint8, word_starts [N, ceil(L / 8)] uint8 (bits packed along L).
    """
    n = len(instances)
    input_ids = np.full((n, max_seq_len), special_ids["pad"], dtype=ids_dtype)
    token_type_ids = np.zeros((n, max_seq_len), dtype=np.uint8)
    lengths = np.zeros(n, dtype=np.uint16)
    labels = np.zeros(n, dtype=np.uint8)
    cls, sep = special_ids["cls"], special_ids["sep"]
    for k, (tokens_a, tokens_b, label) in enumerate(instances):
        row = [cls, *tokens_a, sep, *tokens_b, sep]
        input_ids[k, : len(row)] = row
        token_type_ids[k, len(tokens_a) + 2 : len(row)] = 1
        lengths[k] = len(row)
        labels[k] = label
    real = np.arange(max_seq_len)[None, :] < lengths[:, None]
    word_starts = word_start_table[input_ids] & real
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "lengths": lengths,
        "next_sentence_labels": labels,
        "word_starts": np.packbits(word_starts, axis=1),
    }


def field_dtypes(vocab_size: int) -> dict[str, type]:
    """Storage dtype of each shard field; ids fit uint16 when the vocabulary does."""
    return {
        "input_ids": np.uint16 if vocab_size <= 1 << 16 else np.int32,
        "token_type_ids": np.uint8,
        "lengths": np.uint16,
        "next_sentence_labels": np.uint8,
        "word_starts": np.uint8,
    }


def build_blocks(
    documents: Sequence[Sequence[int]], *, block_len: int, eos_id: int, ids_dtype: np.dtype
) -> dict[str, np.ndarray]:
    """Concatenates documents, each followed by `eos_id`, and cuts the stream into blocks.

    Args:
      documents: token ids of each document (no special tokens).
      block_len: L, tokens per block.
      eos_id: the <|endoftext|> id; it also pads the last block.
      ids_dtype: storage dtype of the ids.

    Returns:
      input_ids [N, L], lengths [N] uint16 (L except maybe the last block), document_starts
      [N, ceil(L / 8)] uint8 (bits packed along L: True at each document's first token).
    """
    stream = np.array([t for document in documents for t in (*document, eos_id)], np.int64)
    starts = np.zeros(stream.size, bool)
    starts[np.cumsum([0, *(len(d) + 1 for d in documents)][:-1], dtype=np.int64)] = True
    n = -(-stream.size // block_len)
    input_ids = np.full(n * block_len, eos_id, ids_dtype)
    input_ids[: stream.size] = stream
    padded_starts = np.zeros(n * block_len, bool)
    padded_starts[: stream.size] = starts
    lengths = np.full(n, block_len, np.uint16)
    if n:
        lengths[-1] = stream.size - (n - 1) * block_len
    return {
        "input_ids": input_ids.reshape(n, block_len),
        "lengths": lengths,
        "document_starts": np.packbits(padded_starts.reshape(n, block_len), axis=1),
    }


def make_word_start_table(vocab: Sequence[str], special_ids: dict[str, int]) -> np.ndarray:
    """[vocab] bool: True for tokens that start a word (no "##" prefix, not a structural special)."""
    table = np.array([not t.startswith(tokenizer_lib.CONTINUATION_PREFIX) for t in vocab])
    for key in ("pad", "cls", "sep", "mask"):
        table[special_ids[key]] = False
    return table


@dataclasses.dataclass(frozen=True)
class _Settings:
    vocab_path: str
    lowercase: bool | None
    max_seq_len: int
    short_seq_prob: float
    seed: int
    instances: str = "nsp_pairs"
    entities: str = ""  # span source of [ENT]/[/ENT] markers ("": none)


_worker: dict = {}


def _init_worker(settings: _Settings, single_threaded: bool) -> None:
    if single_threaded:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tok = tokenizer_lib.load_tokenizer(settings.vocab_path, lowercase=settings.lowercase)
    special = tokenizer_lib.special_token_ids(tok, settings.vocab_path)
    vocab = tokenizer_lib.read_vocab(settings.vocab_path)
    pairs = settings.instances == "nsp_pairs"
    _worker.update(
        settings=settings,
        tokenizer=tok,
        special=special,
        table=make_word_start_table(vocab, special) if pairs else None,
        ids_dtype=field_dtypes(len(vocab))["input_ids"],
        spans=entity_source(settings.entities, tok),
    )


def entity_source(spec: str, tok) -> entities_lib.SpanSource | None:
    """The span source of `config.data.entities` ("" none), its markers checked in `tok`."""
    if not spec:
        return None
    if spec == "jsonl":
        raise ValueError(
            "config.data.entities='jsonl' is for JSONL task files; a text corpus takes 'markup' "
            "(inline <text:TYPE>) or 'gazetteer:<file>'"
        )
    source = entities_lib.SpanSource(spec, "config.data.entities")
    source.marker_ids(tok, "config.data.entities")
    return source


def _tokenize_documents(
    documents: list[list[str]], max_num_tokens: int, stats: Statistics
) -> list[list[list[int]]]:
    flat = [sentence for document in documents for sentence in document]
    if _worker["spans"] is not None:  # [ENT] ... [/ENT] around each entity, before WordPiece
        flat = [_worker["spans"].mark(sentence) for sentence in flat]
        stats.entity_spans += sum(s.count(entities_lib.ENT) for s in flat)
    encodings = _worker["tokenizer"].encode_batch(flat, add_special_tokens=False)
    out, k = [], 0
    for document in documents:
        sentences = []
        for encoding in encodings[k : k + len(document)]:
            ids = encoding.ids
            for start in range(0, len(ids), max_num_tokens):
                sentences.append(ids[start : start + max_num_tokens])
            stats.sentences_split_tokens += max(0, math.ceil(len(ids) / max_num_tokens) - 1)
        k += len(document)
        if len(sentences) < 2:
            stats.documents_skipped_after_tokenization += 1
        else:
            out.append(sentences)
    return out


def _process_blocks(documents: list[list[str]]) -> tuple[dict, dict]:
    """The "lm_blocks" instances of one chunk: documents (sentences joined) -> blocks."""
    texts = [" ".join(document) for document in documents]
    encodings = _worker["tokenizer"].encode_batch(texts, add_special_tokens=False)
    tokenized = [e.ids for e in encodings if e.ids]
    arrays = build_blocks(
        tokenized,
        block_len=_worker["settings"].max_seq_len,
        eos_id=_worker["special"]["eos"],
        ids_dtype=_worker["ids_dtype"],
    )
    skipped = len(texts) - len(tokenized)
    stats = {"documents_skipped_after_tokenization": skipped} if skipped else {}
    return arrays, {"documents": len(tokenized), **stats}


def _process_chunk(task: tuple[int, str, list[list[str]]]) -> tuple[str, dict, dict]:
    chunk_index, split, documents = task
    settings: _Settings = _worker["settings"]
    if settings.instances == "lm_blocks":
        return split, *_process_blocks(documents)
    stats = Statistics()
    max_num_tokens = settings.max_seq_len - 3
    tokenized = _tokenize_documents(documents, max_num_tokens, stats)
    rng = random.Random(f"{settings.seed}:{chunk_index}")
    instances = create_instances(
        tokenized,
        max_num_tokens=max_num_tokens,
        short_seq_prob=settings.short_seq_prob,
        rng=rng,
    )
    arrays = pack_instances(
        instances,
        max_seq_len=settings.max_seq_len,
        special_ids=_worker["special"],
        word_start_table=_worker["table"],
        ids_dtype=_worker["ids_dtype"],
    )
    changed = {k: v for k, v in dataclasses.asdict(stats).items() if v}
    return split, arrays, {"documents": len(tokenized), **changed}


# --------------------------------------------------------------------------------------------
# Writing shards
# --------------------------------------------------------------------------------------------


class _ShardWriter:
    """Buffers instance arrays of one split and writes them as `.npy` shards of `shard_size`."""

    def __init__(self, directory: pathlib.Path, shard_size: int):
        self.directory = directory
        self.shard_size = shard_size
        self.buffer: list[dict[str, np.ndarray]] = []
        self.buffered = 0
        self.shards: list[int] = []
        self.tokens = 0
        self.random_next = 0
        self.fields = FIELDS
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(arrays["lengths"])
        if not n:
            return
        self.fields = tuple(arrays)
        self.tokens += int(arrays["lengths"].sum(dtype=np.int64))
        if "next_sentence_labels" in arrays:
            self.random_next += int(arrays["next_sentence_labels"].sum(dtype=np.int64))
        self.buffer.append(arrays)
        self.buffered += n
        while self.buffered >= self.shard_size:
            self._write(self.shard_size)

    def close(self) -> None:
        if self.buffered:
            self._write(self.buffered)

    def _write(self, n: int) -> None:
        merged = {f: np.concatenate([b[f] for b in self.buffer]) for f in self.fields}
        index = len(self.shards)
        for field in self.fields:
            np.save(self.directory / shard_filename(field, index), merged[field][:n])
        rest = {f: merged[f][n:] for f in self.fields}
        self.buffered -= n
        self.buffer = [rest] if self.buffered else []
        self.shards.append(n)


def shard_filename(field: str, index: int) -> str:
    return f"{field}-{index:05d}.npy"


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def is_eval_document(index: int, eval_fraction: float) -> bool:
    """Held-out choice for the `index`-th usable document: evenly spread, about `eval_fraction`
    of all, the second document (index 1) first so that two documents already give one."""
    if index < 1 or eval_fraction <= 0:
        return False
    return math.ceil(index * eval_fraction) > math.ceil((index - 1) * eval_fraction)


def _iter_chunks(
    files: Sequence[pathlib.Path],
    stats: Statistics,
    *,
    eval_fraction: float,
    documents_per_file: bool,
    chunk_chars: int,
    min_sentences: int = 2,
) -> Iterator[tuple[int, str, list[list[str]]]]:
    """Yields `(chunk_index, split, documents)`, each chunk about `chunk_chars` of one split;
    documents with fewer than `min_sentences` sentences are skipped (NSP needs two)."""
    buffers: dict[str, list] = {s: [] for s in SPLITS}
    sizes = dict.fromkeys(SPLITS, 0)
    chunk_index, usable = 0, 0
    for path in files:
        for document in iter_documents(path, stats, documents_per_file=documents_per_file):
            if not document:
                continue
            stats.documents += 1
            if len(document) < min_sentences:
                stats.documents_skipped_single_sentence += 1
                continue
            split = "eval" if is_eval_document(usable, eval_fraction) else "train"
            usable += 1
            buffers[split].append(document)
            sizes[split] += sum(map(len, document))
            if sizes[split] >= chunk_chars:
                yield chunk_index, split, buffers[split]
                chunk_index += 1
                buffers[split], sizes[split] = [], 0
    for split in SPLITS:
        if buffers[split]:
            yield chunk_index, split, buffers[split]
            chunk_index += 1


def _run_chunks(tasks, settings: _Settings, num_workers: int) -> Iterator[tuple[str, dict, dict]]:
    """Processes chunks in order, in `num_workers` processes (0: here), few chunks in flight."""
    if num_workers == 0:
        _init_worker(settings, single_threaded=False)
        yield from map(_process_chunk, tasks)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(num_workers, _init_worker, (settings, True)) as pool:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.apply_async(_process_chunk, (task,)))
            if len(pending) >= 2 * num_workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _check_arguments(max_seq_len, short_seq_prob, eval_fraction, shard_size, chunk_chars):
    if not 8 <= max_seq_len <= 65535:
        raise ValueError(f"max_seq_len must be in [8, 65535], got {max_seq_len}")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise ValueError(f"short_seq_prob must be in [0, 1], got {short_seq_prob}")
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    if chunk_chars < 1:
        raise ValueError(f"chunk_chars must be positive, got {chunk_chars}")


def _prepare_out_dir(out_dir: pathlib.Path, overwrite: bool) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"output folder {out_dir} is not empty (pass overwrite=True)")
        if not (out_dir / "metadata.json").is_file():
            raise FileExistsError(f"refusing to overwrite {out_dir}: it is not a prepared dataset")
        for split in SPLITS:
            shutil.rmtree(out_dir / split, ignore_errors=True)
        (out_dir / "metadata.json").unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare(
    files: Sequence[str | os.PathLike],
    vocab_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    max_seq_len: int = 128,
    short_seq_prob: float = 0.1,
    eval_fraction: float = 0.01,
    seed: int = 0,
    num_workers: int | None = None,
    documents_per_file: bool = False,
    shard_size: int = 1 << 16,
    lowercase: bool | None = None,
    chunk_chars: int = 1 << 20,
    overwrite: bool = False,
    instances: str = "nsp_pairs",
    entities: str = "",
) -> dict:
    """Prepares pretraining instances from text files into `out_dir`.

    Args:
      files: Text files, folders (their `*.txt`) or glob patterns.
      vocab_path: WordPiece `vocab.txt` (its `tokenizer_config.json`, if any, is honoured), or
        a byte-level BPE `vocab.json` (merges.txt beside it) for "lm_blocks".
      out_dir: Output folder; must be empty or a dataset prepared earlier with `overwrite`.
      max_seq_len: L, the padded instance length, specials included.
      short_seq_prob: Probability that a document uses a random shorter target length.
      eval_fraction: Fraction of documents held out for the `eval` split.
      seed: Seed of all random choices; the output is a function of the inputs and the seed.
      num_workers: Worker processes; None: one per CPU (none for files of at most `chunk_chars`
        bytes); 0: everything in this process.
      documents_per_file: Treat each file as one document (blank lines end paragraphs).
      shard_size: Instances per shard file.
      lowercase: Tokenizer option; None: from the vocabulary's config, else True.
      chunk_chars: Characters of text per unit of work (and per NSP random-document pool).
      overwrite: Replace an earlier prepared dataset in `out_dir`.
      instances: "nsp_pairs" (BERT) or "lm_blocks" (GPT); see the module docstring.
      entities: "markup" or "gazetteer:<file>": `[ENT]`/`[/ENT]` written around each entity
        span of every sentence before tokenization (entity-aware BERT; the vocabulary must hold
        the markers); `PretrainingSource` then adds `entity_ids`. "": none.

    Returns:
      The metadata, also written to `out_dir/metadata.json`.
    """
    _check_arguments(max_seq_len, short_seq_prob, eval_fraction, shard_size, chunk_chars)
    if instances not in INSTANCES:
        raise ValueError(f"config.data.instances={instances!r} is invalid: allowed {INSTANCES}")
    paths = resolve_files(files)
    vocab_path = pathlib.Path(vocab_path)
    tok = tokenizer_lib.load_tokenizer(vocab_path, lowercase=lowercase)
    special = tokenizer_lib.special_token_ids(tok, str(vocab_path))
    vocab_size = tok.get_vocab_size()
    if entities and instances != "nsp_pairs":
        raise ValueError(f"config.data.entities needs 'nsp_pairs' instances, not {instances!r}")
    markers = None
    if entity_source(entities, tok) is not None:
        markers = entities_lib.SpanSource.marker_ids(tok, "config.data.entities")
    out = pathlib.Path(out_dir)
    _prepare_out_dir(out, overwrite)
    if num_workers is None:  # a worker costs seconds to spawn: none for a single chunk of text
        one_chunk = sum(os.path.getsize(p) for p in paths) <= chunk_chars
        num_workers = 0 if one_chunk else _default_workers()
    settings = _Settings(
        str(vocab_path), lowercase, max_seq_len, short_seq_prob, seed, instances, entities
    )
    stats = Statistics()
    tasks = _iter_chunks(
        paths,
        stats,
        eval_fraction=eval_fraction,
        documents_per_file=documents_per_file,
        chunk_chars=chunk_chars,
        min_sentences=2 if instances == "nsp_pairs" else 1,
    )
    splits = _write_splits(_run_chunks(tasks, settings, num_workers), out, shard_size, stats)
    metadata = {
        "format_version": FORMAT_VERSION,
        "instances": instances,
        "vocab_file": str(vocab_path),
        "vocab_sha256": file_sha256(vocab_path),
        "vocab_size": vocab_size,
        "special_ids": special,
        "lowercase": lowercase,
        "max_seq_len": max_seq_len,
        "short_seq_prob": short_seq_prob,
        "eval_fraction": eval_fraction,
        "seed": seed,
        "documents_per_file": documents_per_file,
        "chunk_chars": chunk_chars,
        "dtypes": {f: np.dtype(d).name for f, d in field_dtypes(vocab_size).items()},
        "fields": list(FIELDS if instances == "nsp_pairs" else BLOCK_FIELDS),
        "word_starts_packed": True,
        "splits": splits,
        "source_files": [str(p) for p in paths],
        "entities": entities,
        "entity_marker_ids": list(markers) if markers else None,
        "statistics": dataclasses.asdict(stats),
    }
    atomic_write_text(out / "metadata.json", json.dumps(metadata, indent=2) + "\n")
    _log_summary(metadata)
    return metadata


def _write_splits(results, out: pathlib.Path, shard_size: int, stats: Statistics) -> dict:
    """Writes chunk results to shards of their split; returns the per-split summaries."""
    writers = {split: _ShardWriter(out / split, shard_size) for split in SPLITS}
    documents = dict.fromkeys(SPLITS, 0)
    for split, arrays, chunk_stats in results:
        writers[split].add(arrays)
        documents[split] += chunk_stats.pop("documents")
        stats.add(chunk_stats)
    for writer in writers.values():
        writer.close()
    return {split: _split_summary(writers[split], documents[split]) for split in SPLITS}


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _split_summary(writer: _ShardWriter, documents: int) -> dict:
    return {
        "num_examples": sum(writer.shards),
        "num_documents": documents,
        "num_tokens": writer.tokens,
        "num_random_next": writer.random_next,
        "shards": writer.shards,
    }


def _log_summary(metadata: dict) -> None:
    stats = metadata["statistics"]
    for split, summary in metadata["splits"].items():
        logger.info(
            "%s: %d instances from %d documents, %d tokens",
            split,
            summary["num_examples"],
            summary["num_documents"],
            summary["num_tokens"],
        )
    for key, message in DATA_NOTES.items():
        if stats.get(key):
            logger.warning(message.format(n=stats[key], **metadata))


# Statistics field -> what a non-zero count means, in words (logged after preparation)
DATA_NOTES = {
    "files_empty": "{n} input files were empty and were skipped",
    "files_skipped_binary": "{n} input files look binary (not text) and were skipped",
    "lines_repaired_utf8": "{n} invalid UTF-8 byte sequences were replaced with U+FFFD",
    "lines_cut_long": f"{{n}} lines longer than {MAX_LINE_BYTES} bytes were read in pieces",
    "sentences_cut_long": (
        f"{{n}} cuts were made in sentences longer than {MAX_SENTENCE_CHARS} characters"
    ),
    "sentences_split_tokens": (
        "{n} times a sentence had more tokens than fit in one instance (max_seq_len="
        "{max_seq_len}) and was split into several; nothing was lost"
    ),
    "documents_cut_long": (
        f"{{n}} documents longer than {MAX_DOCUMENT_CHARS} characters were cut into parts"
    ),
    "documents_skipped_single_sentence": (
        "{n} documents with a single sentence were skipped (next-sentence prediction needs two)"
    ),
    "documents_skipped_after_tokenization": (
        "{n} documents had fewer than two non-empty sentences after tokenization and were skipped"
    ),
}


# --------------------------------------------------------------------------------------------
# Reading prepared data
# --------------------------------------------------------------------------------------------


def load_metadata(directory: str | os.PathLike) -> dict:
    """Reads and checks `metadata.json` of a prepared dataset."""
    path = pathlib.Path(directory) / "metadata.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} is not a prepared dataset")
    metadata = json.loads(path.read_text(encoding="utf-8"))
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {metadata.get('format_version')} is not {FORMAT_VERSION}; "
            "prepare the data again"
        )
    return metadata


class PretrainingSource:
    """Random access to prepared instances of one split, memory-mapped shard by shard.

    Each item of "nsp_pairs" data is a dict: `input_ids`, `token_type_ids`, `attention_mask`
    int32 [L], `next_sentence_label` int32 [] and `word_starts` bool [L]. Each item of
    "lm_blocks" data: `input_ids`, `attention_mask` int32 [L]; the mask is 1 for real tokens (0
    for the padding of a chunk's last block) or, with `document_attention`, the segment number
    1, 2, ... of each token's document within the block.

    Args:
      directory: Output folder of `prepare`.
      split: "train" or "eval".
      vocab_path: When given, its sha256 must match the one the data was prepared with.
      document_attention: "lm_blocks" only: number the documents in `attention_mask`.
      entity_masking: data prepared with entities: each `[ENT] ... [/ENT]` span is one word
        for whole-word masking (`entities.entity_word_starts`).

    Data prepared with `entities` also gives `entity_ids` int32 [L] (1 from `[ENT]` to `[/ENT]`).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        split: str = "train",
        *,
        vocab_path: str | os.PathLike | None = None,
        document_attention: bool = False,
        entity_masking: bool = False,
    ):
        self.directory = pathlib.Path(directory)
        self.metadata = load_metadata(directory)
        splits = self.metadata["splits"]
        if split not in splits:
            raise ValueError(f"split {split!r} not in {directory}; available: {sorted(splits)}")
        if vocab_path is not None:
            digest = file_sha256(vocab_path)
            if digest != self.metadata["vocab_sha256"]:
                raise ValueError(
                    f"vocabulary mismatch: {vocab_path} (sha256 {digest[:12]}...) is not the "
                    f"vocabulary {self.metadata['vocab_file']} (sha256 "
                    f"{self.metadata['vocab_sha256'][:12]}...) that {directory} was prepared with"
                )
        self.split = split
        self.instances = self.metadata.get("instances", "nsp_pairs")
        self.fields = tuple(self.metadata.get("fields", FIELDS))
        self.document_attention = document_attention
        self.max_seq_len = self.metadata["max_seq_len"]
        self.entities = self.metadata.get("entities", "")
        self.entity_marker_ids = self.metadata.get("entity_marker_ids")
        if entity_masking and not self.entities:
            raise ValueError(
                f"config.data.entity_masking=True but {directory} was prepared without entity "
                "spans (set config.data.entities and prepare it again)"
            )
        self.entity_masking = entity_masking
        self._offsets = np.cumsum([0, *splits[split]["shards"]]).tolist()
        self._shards: list[dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return self._offsets[-1]

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} {self.split} examples")
        shard = bisect.bisect_right(self._offsets, index) - 1
        row = index - self._offsets[shard]
        arrays = self._open()[shard]
        length = int(arrays["lengths"][row])
        attention_mask = np.zeros(self.max_seq_len, np.int32)
        attention_mask[:length] = 1
        if self.instances == "lm_blocks":
            return self._block(arrays, row, attention_mask)
        word_starts = np.unpackbits(arrays["word_starts"][row], count=self.max_seq_len)
        item = {
            "input_ids": arrays["input_ids"][row].astype(np.int32),
            "token_type_ids": arrays["token_type_ids"][row].astype(np.int32),
            "attention_mask": attention_mask,
            "next_sentence_label": np.array(arrays["next_sentence_labels"][row], np.int32),
            "word_starts": word_starts.astype(bool),
        }
        if self.entity_marker_ids:
            ids, markers = item["input_ids"], self.entity_marker_ids
            item["entity_ids"] = entities_lib.entity_ids(ids, *markers)
            if self.entity_masking:
                starts = entities_lib.entity_word_starts(item["word_starts"], ids, *markers)
                item["word_starts"] = starts
        return item

    def _block(self, arrays, row: int, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        if self.document_attention:
            starts = np.unpackbits(arrays["document_starts"][row], count=self.max_seq_len)
            segments = np.cumsum(starts, dtype=np.int32) + (1 - int(starts[0]))
            attention_mask = attention_mask * segments
        return {
            "input_ids": arrays["input_ids"][row].astype(np.int32),
            "attention_mask": attention_mask,
        }

    def lengths(self) -> np.ndarray:
        """Real tokens of every instance, int64 [len(self)]."""
        return np.concatenate([shard["lengths"] for shard in self._open()]).astype(np.int64)

    def __repr__(self) -> str:
        return f"PretrainingSource({str(self.directory)!r}, {self.split!r}, n={len(self)})"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_shards"] = None  # memory maps are reopened in the receiving process
        return state

    def _open(self) -> list[dict[str, np.ndarray]]:
        if self._shards is None:
            folder = self.directory / self.split
            self._shards = [
                {f: np.load(folder / shard_filename(f, i), mmap_mode="r") for f in self.fields}
                for i in range(len(self._offsets) - 1)
            ]
        return self._shards


# ----------------------------------------------------------------------------- packing


def pack_plan(lengths: Sequence[int], capacity: int, max_per_row: int) -> np.ndarray:
    """Groups instances into rows of at most `capacity` tokens and `max_per_row` instances.

    Best-fit decreasing: instances are placed longest first, each into the open row whose free
    space fits it most tightly (a new row when none does). Deterministic in `lengths`.

    Returns:
      int64 [rows, max_per_row]: the instance indices of each row in placement order, -1 padding.
      Every index appears exactly once.
    """
    lengths = np.asarray(lengths, np.int64)
    if max_per_row < 1:
        raise ValueError(f"config.data.max_pack_size={max_per_row} must be >= 1")
    if lengths.size and (lengths.min() < 1 or lengths.max() > capacity):
        raise ValueError(f"instance lengths must be in [1, {capacity}]")
    rows: list[list[int]] = []
    open_by_space: dict[int, list[int]] = {}  # free tokens -> open rows with that much room
    spaces: list[int] = []  # sorted keys of open_by_space
    for index in np.argsort(-lengths, kind="stable"):
        need = int(lengths[index])
        at = bisect.bisect_left(spaces, need)
        if at < len(spaces):
            space = spaces[at]
            row = open_by_space[space].pop()
            if not open_by_space[space]:
                del open_by_space[space]
                spaces.pop(at)
        else:
            space, row = capacity, len(rows)
            rows.append([])
        rows[row].append(int(index))
        left = space - need
        if left > 0 and len(rows[row]) < max_per_row:
            if left not in open_by_space:
                open_by_space[left] = []
                bisect.insort(spaces, left)
            open_by_space[left].append(row)
    plan = np.full((len(rows), max_per_row), -1, np.int64)
    for r, members in enumerate(rows):
        plan[r, : len(members)] = members
    return plan


class PackedSource:
    """Rows of several prepared instances each, without cross-contamination (Krell et al. 2021).

    The instances of `source` are grouped by `pack_plan` into rows of the same length. In a row,
    `attention_mask` holds the segment of each token (1, 2, ... per instance, 0 for padding), which
    the model turns into block-diagonal attention and per-instance positions; NSP comes from each
    instance's [CLS]:

      `input_ids`, `token_type_ids`, `attention_mask` int32 [L], `word_starts` bool [L],
      `next_sentence_label` int32 [K], `nsp_positions` int32 [K] (where each [CLS] is),
      `nsp_weights` float32 [K] (1 for an instance, 0 for an empty slot); K = `max_per_row`.
    """

    def __init__(self, source: PretrainingSource, max_per_row: int):
        self.source = source
        self.max_per_row = max_per_row
        self.max_seq_len = source.max_seq_len
        lengths = source.lengths()
        self.plan = pack_plan(lengths, self.max_seq_len, max_per_row)
        self.real_tokens = int(lengths.sum())

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        length, k = self.max_seq_len, self.max_per_row
        out = {
            "input_ids": np.zeros(length, np.int32),
            "token_type_ids": np.zeros(length, np.int32),
            "attention_mask": np.zeros(length, np.int32),
            "word_starts": np.zeros(length, bool),
            "next_sentence_label": np.zeros(k, np.int32),
            "nsp_positions": np.zeros(k, np.int32),
            "nsp_weights": np.zeros(k, np.float32),
        }
        fields = ["input_ids", "token_type_ids", "word_starts"]
        if self.source.entity_marker_ids:
            out["entity_ids"] = np.zeros(length, np.int32)
            fields.append("entity_ids")
        start = 0
        for slot, member in enumerate(self.plan[int(index)]):
            if member < 0:
                break
            item = self.source[int(member)]
            n = int(item["attention_mask"].sum())
            for field in fields:
                out[field][start : start + n] = item[field][:n]
            out["attention_mask"][start : start + n] = slot + 1
            out["next_sentence_label"][slot] = item["next_sentence_label"]
            out["nsp_positions"][slot] = start
            out["nsp_weights"][slot] = 1.0
            start += n
        return out

    def __repr__(self) -> str:
        return f"PackedSource({self.source!r}, rows={len(self)}, max_per_row={self.max_per_row})"
