"""`bertjax tokenizer`: train a vocabulary on text files.

With `--config` (plus `--config.GROUP.FIELD=VALUE` overrides) it trains what `bertjax pretrain`
would with that config, by the same code (`data.run_data.train_tokenizer`): the
`config.data.tokenizer` kind (WordPiece with `config.data.lowercase` and `config.data.pretokenizer`,
or byte-level BPE) of `config.model.vocab_size` tokens on `config.data.corpus`. Without
`--config`: a WordPiece vocabulary from files and the flags below.
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile

from bertjax.commands import add_strict_utf8
from bertjax.commands.prepare_cmd import refuse_legacy_flags
from bertjax.data import text, tokenizer

# flag -> its default: set without --config only
LEGACY = {
    "files": [],
    "vocab_size": 30522,
    "cased": False,
    "strip_accents": "auto",
    "no_chinese_chars": False,
    "pretokenizer": "whitespace",
    "min_frequency": 2,
    "limit_alphabet": 1000,
    "strict_utf8": False,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="pretraining config file (its tokenizer settings)")
    parser.add_argument("files", nargs="*", help="text files, folders (*.txt) or glob patterns")
    parser.add_argument("--out", required=True, help="folder for the vocabulary and its files")
    parser.add_argument("--vocab-size", type=int, default=30522, help="tokens, specials included")
    parser.add_argument(
        "--cased",
        action="store_true",
        help="keep case (default: lowercase, like bert-base-uncased)",
    )
    parser.add_argument(
        "--strip-accents",
        choices=("auto", "yes", "no"),
        default="auto",
        help="remove accents; auto follows lowercasing (use 'no' for Korean and similar scripts)",
    )
    parser.add_argument(
        "--no-chinese-chars", action="store_true", help="do not split CJK ideographs apart"
    )
    parser.add_argument(
        "--pretokenizer",
        choices=tokenizer.PRETOKENIZERS,
        default="whitespace",
        help="split words BERT's way, or into Korean morphemes first (needs bertjax[korean])",
    )
    parser.add_argument("--min-frequency", type=int, default=2, help="minimum merge count")
    parser.add_argument("--limit-alphabet", type=int, default=1000, help="initial characters kept")
    add_strict_utf8(parser)
    parser.epilog = (
        "Either --config CONFIG --out OUT [--config.GROUP.FIELD=VALUE ...], or FILES --out OUT "
        "[flags] (WordPiece)."
    )


def run(args: argparse.Namespace) -> int:
    if args.config is not None:
        vocab_path = run_config(args)
    elif not args.files:
        raise ValueError("give FILES to train on, or --config CONFIG (its config.data.corpus)")
    else:
        vocab_path = tokenizer.train_wordpiece(
            text.resolve_files(args.files),
            args.out,
            vocab_size=args.vocab_size,
            lowercase=not args.cased,
            strip_accents={"auto": None, "yes": True, "no": False}[args.strip_accents],
            handle_chinese_chars=not args.no_chinese_chars,
            min_frequency=args.min_frequency,
            limit_alphabet=args.limit_alphabet,
            pretokenizer=args.pretokenizer,
        )
    print(f"wrote {vocab_path} ({len(tokenizer.read_vocab(vocab_path))} tokens)")
    return 0


def run_config(args: argparse.Namespace) -> pathlib.Path:
    """The vocabulary `bertjax pretrain` would train with the config, written to `args.out`."""
    refuse_legacy_flags(
        args, LEGACY, "config.data.corpus, config.model.vocab_size, config.data.tokenizer, ..."
    )
    from bertjax.config import load_config
    from bertjax.data import tokenizer_kinds
    from bertjax.data.corpus import resolve_corpus
    from bertjax.data.run_data import train_tokenizer

    config = load_config(args.config, args.overrides)
    tokenizer_kinds.get(config.data.tokenizer)  # raises naming the field, before any data work
    if config.data.vocab or config.init_from:
        field = "config.data.vocab" if config.data.vocab else "config.init_from"
        raise ValueError(
            f"{field}={config.data.vocab or config.init_from!r}: no vocabulary is trained"
        )
    with tempfile.TemporaryDirectory() as corpus_dir:  # where the built-in corpus is written
        files = resolve_corpus(config.data.corpus, pathlib.Path(corpus_dir))
        return train_tokenizer(config, files, pathlib.Path(args.out))
