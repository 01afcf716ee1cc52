"""Tokenizer kinds, picked by `config.data.tokenizer` to train and by the vocabulary file to load.

A kind is a module here plus a line in `KINDS`. It gives:
  VOCAB_NAME      the vocabulary file it writes; a vocabulary file whose suffix matches names the
                  kind (any other name is `DEFAULT`);
  SPECIAL_TOKENS  {key: token} of the special tokens `tokenizer.special_token_ids` reports;
  MODEL           the `tokenizers.models` class of its tokenizers;
  train(files, out_dir, config) -> vocab path
                  trains on text files with the pretraining config's settings (vocabulary size
                  from `config.model.vocab_size`; its own `config.data` options);
  load(vocab_path, **options) -> tokenizers.Tokenizer
  read_vocab(vocab_path) -> tokens by id
  files(vocab_path) -> the files that make up the tokenizer, to copy together.
"""

from __future__ import annotations

import importlib
import pathlib
from types import ModuleType

# config.data.tokenizer -> module
KINDS = {
    "wordpiece": "bertjax.data.tokenizer_kinds.wordpiece",  # BERT: vocab.txt (+ options)
    "byte_bpe": "bertjax.data.tokenizer_kinds.byte_bpe",  # GPT-2: vocab.json + merges.txt
    "sentencepiece": "bertjax.data.tokenizer_kinds.sentencepiece",  # Marian: source.spm + ...
}
DEFAULT = "wordpiece"  # the kind of a vocabulary file no kind's VOCAB_NAME suffix matches


def get(name: str) -> ModuleType:
    """The kind registered as `name`; a ValueError names config.data.tokenizer otherwise."""
    if name not in KINDS:
        raise ValueError(
            f"config.data.tokenizer={name!r} is invalid: allowed values are {tuple(KINDS)}"
        )
    return importlib.import_module(KINDS[name])


def kind_of(vocab_path: str | pathlib.Path) -> str:
    """The name of the kind a vocabulary file belongs to, by its suffix."""
    suffix = pathlib.Path(vocab_path).suffix
    for name in KINDS:
        if name != DEFAULT and pathlib.Path(get(name).VOCAB_NAME).suffix == suffix:
            return name
    return DEFAULT


def of_tokenizer(tokenizer) -> ModuleType:
    """The kind of a loaded `tokenizers.Tokenizer`, by its model class."""
    for name in KINDS:
        if isinstance(tokenizer.model, get(name).MODEL):
            return get(name)
    raise ValueError(f"a {type(tokenizer.model).__name__} tokenizer is of no registered kind")
