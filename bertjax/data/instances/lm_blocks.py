"""Causal-LM token blocks (GPT, the nanoGPT way).

Each chunk's documents are tokenised whole (sentences joined), each followed by <|endoftext|>,
concatenated and cut into blocks of `max_seq_len` tokens (the chunk's last block padded); the
first token of every document is marked (`document_starts`) so that a source can restart
attention per document.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bertjax.data.instances.base import Worker

FIELDS = ("input_ids", "lengths", "document_starts")
MIN_SENTENCES = 1
ENTITIES = False
PACKABLE = False  # blocks are full already
SPECIALS = ("eos",)  # the special tokens it needs in the vocabulary
EXAMPLE_FIELDS = ("input_ids", "attention_mask")


def build(chunk_index: int, documents: list[list[str]], worker: Worker) -> tuple[dict, dict]:
    """One chunk's documents -> `FIELDS` arrays (see `build_blocks`) and counts."""
    del chunk_index  # no random choices
    texts = [" ".join(document) for document in documents]
    encodings = worker.tokenizer.encode_batch(texts, add_special_tokens=False)
    tokenized = [e.ids for e in encodings if e.ids]
    arrays = build_blocks(
        tokenized,
        block_len=worker.settings.max_seq_len,
        eos_id=worker.special["eos"],
        ids_dtype=worker.ids_dtype,
    )
    skipped = len(texts) - len(tokenized)
    stats = {"documents_skipped_after_tokenization": skipped} if skipped else {}
    return arrays, {"documents": len(tokenized), **stats}


def example(arrays, row: int, attention_mask: np.ndarray, source) -> dict[str, np.ndarray]:
    """`input_ids`, `attention_mask` int32 [L]; the mask is 1 for real tokens (0 for the padding
    of a chunk's last block) or, with `source.document_attention`, the segment number 1, 2, ...
    of each token's document within the block."""
    if source.document_attention:
        starts = np.unpackbits(arrays["document_starts"][row], count=source.max_seq_len)
        segments = np.cumsum(starts, dtype=np.int32) + (1 - int(starts[0]))
        attention_mask = attention_mask * segments
    return {
        "input_ids": arrays["input_ids"][row].astype(np.int32),
        "attention_mask": attention_mask,
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
