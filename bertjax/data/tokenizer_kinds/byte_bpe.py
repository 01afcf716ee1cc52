"""Byte-level BPE (GPT-2's `vocab.json` + `merges.txt`): `config.data.tokenizer="byte_bpe"`."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from bertjax.data.tokenizer import BPE_VOCAB_NAME, END_OF_TEXT, MERGES_NAME, line_pieces

VOCAB_NAME = BPE_VOCAB_NAME
SPECIAL_TOKENS = {"eos": END_OF_TEXT, "pad": END_OF_TEXT}  # padding is masked out
MODEL = models.BPE


def train(files, out_dir: pathlib.Path, config) -> pathlib.Path:
    """`train_byte_bpe` with `config.model.vocab_size`."""
    return train_byte_bpe(files, out_dir, vocab_size=config.model.vocab_size)


def load(vocab_path, **options) -> tokenizers.Tokenizer:
    """`load_byte_bpe`; WordPiece's normalization options (`lowercase`, ...) do not apply to bytes
    and are ignored, as transformers' GPT-2 tokenizer does."""
    del options
    return load_byte_bpe(vocab_path)


def read_vocab(vocab_path) -> list[str]:
    """The tokens of `vocab.json` (token -> id) by id."""
    vocab = json.loads(pathlib.Path(vocab_path).read_text(encoding="utf-8"))
    tokens = sorted(vocab, key=vocab.get)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ValueError(f"vocabulary {vocab_path}: ids are not 0..{len(tokens) - 1}")
    return tokens


def files(vocab_path: pathlib.Path) -> list[pathlib.Path]:
    """`vocab.json` and `merges.txt`."""
    return [vocab_path, vocab_path.parent / MERGES_NAME]


def _byte_level(tokenizer: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
    # GPT-2: no normalizer, bytes mapped to printable characters and split by GPT-2's regex,
    # no prefix space, and no special tokens added on encoding.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([tokenizers.AddedToken(END_OF_TEXT, special=True)])
    return tokenizer


def load_byte_bpe(vocab_path: str | pathlib.Path) -> tokenizers.Tokenizer:
    """Loads a GPT-2 style byte-level BPE tokenizer from `vocab.json` and `merges.txt` beside it.

    Encodes as `transformers.GPT2TokenizerFast` does on the same files: no prefix space, no
    special tokens added, `<|endoftext|>` in the text kept whole.
    """
    vocab_path = pathlib.Path(vocab_path)
    merges = vocab_path.parent / MERGES_NAME
    if not merges.is_file():
        raise FileNotFoundError(f"byte-level BPE vocabulary {vocab_path} has no {merges} beside it")
    model = models.BPE.from_file(str(vocab_path), str(merges), fuse_unk=False)
    tokenizer = _byte_level(tokenizers.Tokenizer(model))
    if tokenizer.token_to_id(END_OF_TEXT) is None:
        raise ValueError(f"vocabulary {vocab_path} has no {END_OF_TEXT} token")
    return tokenizer


def train_byte_bpe(
    files: Sequence[str | pathlib.Path],
    out_dir: str | pathlib.Path,
    *,
    vocab_size: int = 50257,
    min_frequency: int = 2,
) -> pathlib.Path:
    """Trains a byte-level BPE tokenizer (GPT-2's kind) on text files.

    Ids: <|endoftext|> = 0, the 256 byte symbols, then the merges in the order they were learnt.
    Every byte string is encodable, so there is no unknown token.

    Args:
      files: UTF-8 text files.
      out_dir: Folder that receives `vocab.json` and `merges.txt` (created if missing).
      vocab_size: Size of the vocabulary, <|endoftext|> and the 256 bytes included.
      min_frequency: Minimum count for a merge.

    Returns:
      Path of the written `vocab.json`.
    """
    files = [str(f) for f in files]
    for f in files:
        if not pathlib.Path(f).is_file():
            raise FileNotFoundError(f"train_byte_bpe: training file {f} does not exist")
    if vocab_size <= 257:
        raise ValueError(
            f"vocab_size must exceed 257 (256 bytes + {END_OF_TEXT}), got {vocab_size}"
        )
    tokenizer = _byte_level(tokenizers.Tokenizer(models.BPE()))
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(line_pieces(files), trainer)
    out = pathlib.Path(out_dir)  # made once the text was read (a refused file leaves no folder)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.model.save(str(out))  # vocab.json, merges.txt
    return out / BPE_VOCAB_NAME
