"""MLM + NSP sentence pairs (BERT): `[CLS] A [SEP] B [SEP]`, one instance per row.

Instances follow the algorithm of Google's original `create_pretraining_data.py`: per document a
target length (`max_seq_len - 3`, or with probability `short_seq_prob` a random shorter one) is
filled with whole sentences; the filled chunk is cut at a random sentence into A and B; half of
the time B is replaced by a span from another document (label 1) and the unused sentences are
given back; the longer segment loses tokens at a random end until the pair fits. Documents with a
single sentence cannot form a pair A/B: they are skipped and counted. The random generator of a
chunk is seeded by `(seed, chunk index)`; the "random document" is drawn from the same chunk (a
bounded pool of neighbouring documents of the same split, as the original drew from all
documents); a chunk holding a single document draws from another part of it.

With `config.data.entities`, `[ENT]`/`[/ENT]` are written around each entity span of every
sentence before tokenization, and examples carry `entity_ids`.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence

import numpy as np

from bertjax.data import entities as entities_lib
from bertjax.data import tokenizer as tokenizer_lib
from bertjax.data.instances.base import Worker
from bertjax.data.text import Statistics

FIELDS = ("input_ids", "token_type_ids", "lengths", "next_sentence_labels", "word_starts")
MIN_SENTENCES = 2  # NSP needs two
ENTITIES = True
PACKABLE = True
SPECIALS = ("pad", "cls", "sep", "mask")  # the special tokens it needs in the vocabulary
EXAMPLE_FIELDS = (
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "next_sentence_label",
    "word_starts",
)  # (+ entity_ids with entities)
NSP_RANDOM_DOCUMENT_TRIES = 10

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


def make_word_start_table(vocab: Sequence[str], special_ids: dict[str, int]) -> np.ndarray:
    """[vocab] bool: True for tokens that start a word (no "##" prefix, not a structural special)."""
    table = np.array([not t.startswith(tokenizer_lib.CONTINUATION_PREFIX) for t in vocab])
    for key in ("pad", "cls", "sep", "mask"):
        table[special_ids[key]] = False
    return table


def _tokenize_documents(
    documents: list[list[str]], max_num_tokens: int, stats: Statistics, worker: Worker
) -> list[list[list[int]]]:
    """Tokenizes each sentence (cut into pieces of at most `max_num_tokens`); drops documents
    left with fewer than two sentences (one when `worker.settings.nsp` is off: MLM only)."""
    flat = [sentence for document in documents for sentence in document]
    if worker.spans is not None:  # [ENT] ... [/ENT] around each entity, before WordPiece
        flat = [worker.spans.mark(sentence) for sentence in flat]
        stats.entity_spans += sum(s.count(entities_lib.ENT) for s in flat)
    encodings = worker.tokenizer.encode_batch(flat, add_special_tokens=False)
    out, k = [], 0
    for document in documents:
        sentences = []
        for encoding in encodings[k : k + len(document)]:
            ids = encoding.ids
            for start in range(0, len(ids), max_num_tokens):
                sentences.append(ids[start : start + max_num_tokens])
            stats.sentences_split_tokens += max(0, math.ceil(len(ids) / max_num_tokens) - 1)
        k += len(document)
        if len(sentences) < (2 if worker.settings.nsp else 1):
            stats.documents_skipped_after_tokenization += 1
        else:
            out.append(sentences)
    return out


def build(chunk_index: int, documents: list[list[str]], worker: Worker) -> tuple[dict, dict]:
    """One chunk's documents -> `FIELDS` arrays (see `pack_instances`) and counts."""
    settings = worker.settings
    stats = Statistics()
    max_num_tokens = settings.max_seq_len - 3
    tokenized = _tokenize_documents(documents, max_num_tokens, stats, worker)
    rng = random.Random(f"{settings.seed}:{chunk_index}")
    instances = create_instances(
        tokenized,
        max_num_tokens=max_num_tokens,
        short_seq_prob=settings.short_seq_prob,
        rng=rng,
    )
    if "word_starts" not in worker.cache:
        worker.cache["word_starts"] = make_word_start_table(worker.vocab, worker.special)
    arrays = pack_instances(
        instances,
        max_seq_len=settings.max_seq_len,
        special_ids=worker.special,
        word_start_table=worker.cache["word_starts"],
        ids_dtype=worker.ids_dtype,
    )
    changed = {k: v for k, v in dataclasses.asdict(stats).items() if v}
    return arrays, {"documents": len(tokenized), **changed}


def example(arrays, row: int, attention_mask: np.ndarray, source) -> dict[str, np.ndarray]:
    """`input_ids`, `token_type_ids`, `attention_mask` int32 [L], `next_sentence_label` int32 [],
    `word_starts` bool [L]; with entities also `entity_ids` int32 [L] (1 from `[ENT]` to
    `[/ENT]`), and with `source.entity_masking` each span is one word in `word_starts`."""
    word_starts = np.unpackbits(arrays["word_starts"][row], count=source.max_seq_len)
    item = {
        "input_ids": arrays["input_ids"][row].astype(np.int32),
        "token_type_ids": arrays["token_type_ids"][row].astype(np.int32),
        "attention_mask": attention_mask,
        "next_sentence_label": np.array(arrays["next_sentence_labels"][row], np.int32),
        "word_starts": word_starts.astype(bool),
    }
    if source.entity_marker_ids:
        ids, markers = item["input_ids"], source.entity_marker_ids
        item["entity_ids"] = entities_lib.entity_ids(ids, *markers)
        if source.entity_masking:
            starts = entities_lib.entity_word_starts(item["word_starts"], ids, *markers)
            item["word_starts"] = starts
    return item
