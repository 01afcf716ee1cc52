"""WordPiece (BERT's `vocab.txt` with its options): `config.data.tokenizer="wordpiece"`.

The implementation is `bertjax.data.tokenizer` (`train_wordpiece`, `load_wordpiece`), whose
options file carries the normalization and the pre-tokenizer (`pretokenizer="morpheme"`: Korean
morphemes first) with the vocabulary.
"""

from __future__ import annotations

import pathlib

from tokenizers import models

from bertjax.data import tokenizer as tokenizer_lib

VOCAB_NAME = tokenizer_lib.VOCAB_NAME
# [SEP] also ends a sequence (`eos`): a BERT's vocabulary on both sides of a translation pair
SPECIAL_TOKENS = {**tokenizer_lib.SPECIAL_TOKENS, "eos": tokenizer_lib.SPECIAL_TOKENS["sep"]}
MODEL = models.WordPiece
load = tokenizer_lib.load_wordpiece
read_vocab = tokenizer_lib.read_wordpiece_vocab
files = tokenizer_lib.wordpiece_files


def train(files, out_dir: pathlib.Path, config) -> pathlib.Path:
    """`train_wordpiece` with `config.model.vocab_size`, `config.data.lowercase` and
    `config.data.pretokenizer`; `[ENT]`/`[/ENT]` reserved when `config.model.entity_vocab_size`."""
    return tokenizer_lib.train_wordpiece(
        files,
        out_dir,
        vocab_size=config.model.vocab_size,
        lowercase=config.data.lowercase,
        pretokenizer=config.data.pretokenizer,
        entity_markers=config.model.get("entity_vocab_size", 0) > 0,
    )
