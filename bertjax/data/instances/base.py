"""What an instance builder is: chunk of documents -> fixed-shape shard arrays -> examples.

An instance builder is a module (registered in `instances.BUILDERS`) with:
  FIELDS          the shard fields it writes, each an array with one row per instance;
  MIN_SENTENCES   documents with fewer sentences are skipped before tokenization;
  ENTITIES        whether it writes `[ENT]`/`[/ENT]` spans (`config.data.entities`);
  PACKABLE        whether `PackedSource` may put several of its instances in one row;
  SPECIALS        the `tokenizer.special_token_ids` keys it needs (a tokenizer kind without
                  them is refused before any data work);
  EXAMPLE_FIELDS  the keys of its examples (each objective's EXAMPLE_FIELDS among them);
  build(chunk_index, documents, worker) -> (arrays, stats)
                  in a worker process: one chunk's documents (lists of sentences) -> shard
                  arrays {field: [N, ...]} and counts for `text.Statistics` plus "documents";
                  deterministic in (settings.seed, chunk_index) and the documents;
  example(arrays, row, attention_mask, source) -> {name: array}
                  one training example from a shard row, for `PretrainingSource`;
                  `attention_mask` int32 [L] is 1 on the row's `lengths` real tokens.
and optionally
  read_documents(paths, stats, options) -> documents
                  its own reader of the corpus files in place of text documents (parallel
                  pairs: tables or aligned files; `options` is `config.data.reader`).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Settings:
    """The preparation settings a worker process needs (picklable)."""

    vocab_path: str
    lowercase: bool | None
    max_seq_len: int
    short_seq_prob: float
    seed: int
    instances: str = "nsp_pairs"
    entities: str = ""  # span source of [ENT]/[/ENT] markers ("": none)
    nsp: bool = True  # False (MLM only): single-sentence documents are kept
    max_target_len: int = 0  # builders with targets (parallel_pairs): target tokens, </s> included


@dataclasses.dataclass
class Worker:
    """What one worker process holds while it builds instances.

    Attributes:
      settings: the preparation settings.
      tokenizer: the loaded `tokenizers.Tokenizer`.
      special: `tokenizer.special_token_ids` of it.
      vocab: its tokens, by id.
      ids_dtype: storage dtype of the ids (`shards.field_dtypes`).
      spans: the `entities.SpanSource` of `settings.entities`, or None.
      cache: what a builder computes once per worker (e.g. lookup tables).
    """

    settings: Settings
    tokenizer: object
    special: dict[str, int]
    vocab: list[str]
    ids_dtype: np.dtype
    spans: object | None = None
    cache: dict = dataclasses.field(default_factory=dict)
