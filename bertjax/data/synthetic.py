"""Synthetic pretraining data for tests and benchmarks: no corpus needed.

Batches are random ids over a synthetic vocabulary of `vocab_size` tokens laid out as

    0 [PAD]   1 [UNK]   2 [CLS]   3 [SEP]   4 [MASK]   5 ... V-1 ordinary tokens

so every id from 5 up is a masking candidate (`bertjax.objectives.masking.random_candidates` of
that list). Numpy-only.
"""

from __future__ import annotations

import pathlib

import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, UNK, CLS, SEP, MASK = range(len(SPECIAL_TOKENS))
FIRST_ORDINARY = len(SPECIAL_TOKENS)
WORD_START_RATE = 0.8  # share of WordPiece pieces that begin a word in English text


def synthetic_vocab(vocab_size: int) -> list[str]:
    """Token i at index i: the five specials, then ordinary tokens `w5`, `w6`, ..."""
    if vocab_size <= FIRST_ORDINARY:
        raise ValueError(f"config.model.vocab_size={vocab_size} must exceed {FIRST_ORDINARY}")
    return [*SPECIAL_TOKENS, *(f"w{i}" for i in range(FIRST_ORDINARY, vocab_size))]


def write_vocab(vocab_size: int, directory: str | pathlib.Path) -> pathlib.Path:
    """Writes the synthetic vocabulary as `directory/vocab.txt` and returns its path."""
    path = pathlib.Path(directory) / "vocab.txt"
    path.write_text("\n".join(synthetic_vocab(vocab_size)) + "\n")
    return path


def synthetic_batch(
    rs: np.random.Generator, batch: int, length: int, vocab_size: int, short_seq_prob: float = 0.1
) -> dict[str, np.ndarray]:
    """`[CLS] A [SEP] B [SEP]` rows of random ordinary ids, padded to `length`.

    As in BERT's data generator, a row fills the whole length except with probability
    `short_seq_prob`, where its length is uniform in [8, length).

    Returns:
      int32 `input_ids`, `token_type_ids`, `attention_mask` [batch, length], bool `word_starts`
      [batch, length] and int32 `next_sentence_label` [batch] (half random).
    """
    if length < 8:
        raise ValueError(f"--seq={length} is too short for a synthetic [CLS] A [SEP] B [SEP] row")
    ids = np.full((batch, length), PAD, np.int32)
    types = np.zeros((batch, length), np.int32)
    for row in range(batch):
        n = length if rs.random() >= short_seq_prob else int(rs.integers(8, length))
        tokens = n - 3  # three specials
        a = int(rs.integers(1, tokens))
        ids[row, : a + 2] = [CLS, *rs.integers(FIRST_ORDINARY, vocab_size, a), SEP]
        ids[row, a + 2 : n] = [*rs.integers(FIRST_ORDINARY, vocab_size, tokens - a), SEP]
        types[row, a + 2 : n] = 1
    real = ids >= FIRST_ORDINARY
    return {
        "input_ids": ids,
        "token_type_ids": types,
        "attention_mask": (ids != PAD).astype(np.int32),
        "next_sentence_label": rs.integers(0, 2, batch).astype(np.int32),
        "word_starts": real & (rs.random(ids.shape) < WORD_START_RATE),
    }


def seq2seq_batch(
    rs: np.random.Generator, batch: int, source_len: int, target_len: int, vocab_size: int
) -> dict[str, np.ndarray]:
    """Random translation pairs in the seq2seq protocol's fields (`instances/parallel_pairs`):
    source and target of random ordinary ids and lengths, each ending with id 3 as `</s>`,
    right-padded with `PAD` (0, also the decoder's start id).

    Returns:
      int32 `input_ids`, `attention_mask` [batch, source_len], `decoder_input_ids`,
      `decoder_attention_mask` and `labels` (-100 after the target) [batch, target_len].
    """
    eos = SEP
    ids = np.full((batch, source_len), PAD, np.int32)
    decoder = np.full((batch, target_len), PAD, np.int32)
    labels = np.full((batch, target_len), -100, np.int32)
    for row in range(batch):
        n, m = int(rs.integers(2, source_len + 1)), int(rs.integers(2, target_len + 1))
        ids[row, :n] = [*rs.integers(FIRST_ORDINARY, vocab_size, n - 1), eos]
        labels[row, :m] = [*rs.integers(FIRST_ORDINARY, vocab_size, m - 1), eos]
        decoder[row, 1:m] = labels[row, : m - 1]
    return {
        "input_ids": ids,
        "attention_mask": (ids != PAD).astype(np.int32),
        "decoder_input_ids": decoder,
        "decoder_attention_mask": (labels >= 0).astype(np.int32),
        "labels": labels,
    }
