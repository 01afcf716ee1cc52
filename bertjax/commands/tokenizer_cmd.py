"""`bertjax tokenizer`: train a WordPiece vocabulary on text files."""

from __future__ import annotations

import argparse

from bertjax.data import pretraining, tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="text files, folders (*.txt) or glob patterns")
    parser.add_argument("--out", required=True, help="folder for vocab.txt and its config")
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


def run(args: argparse.Namespace) -> int:
    vocab_path = tokenizer.train_wordpiece(
        pretraining.resolve_files(args.files),
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
