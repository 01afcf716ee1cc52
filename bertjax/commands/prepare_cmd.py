"""`bertjax prepare`: turn text files into MLM+NSP pretraining shards."""

from __future__ import annotations

import argparse
import json
import logging

from bertjax.data import pretraining


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="text files, folders (*.txt) or glob patterns")
    parser.add_argument("--vocab", required=True, help="WordPiece vocab.txt")
    parser.add_argument("--out", required=True, help="output folder (empty, or use --overwrite)")
    parser.add_argument("--max-seq-len", type=int, default=128, help="instance length L")
    parser.add_argument("--short-seq-prob", type=float, default=0.1, help="shorter-target rate")
    parser.add_argument("--eval-fraction", type=float, default=0.01, help="held-out documents")
    parser.add_argument("--seed", type=int, default=0, help="seed of all random choices")
    parser.add_argument("--num-workers", type=int, default=None, help="default: one per CPU")
    parser.add_argument(
        "--documents-per-file", action="store_true", help="each file is one document"
    )
    parser.add_argument("--shard-size", type=int, default=1 << 16, help="instances per shard")
    case = parser.add_mutually_exclusive_group()
    case.add_argument("--lowercase", dest="lowercase", action="store_true", default=None)
    case.add_argument("--cased", dest="lowercase", action="store_false")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier dataset")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    metadata = pretraining.prepare(
        args.files,
        args.vocab,
        args.out,
        max_seq_len=args.max_seq_len,
        short_seq_prob=args.short_seq_prob,
        eval_fraction=args.eval_fraction,
        seed=args.seed,
        num_workers=args.num_workers,
        documents_per_file=args.documents_per_file,
        shard_size=args.shard_size,
        lowercase=args.lowercase,
        overwrite=args.overwrite,
    )
    print(json.dumps({"splits": metadata["splits"], "statistics": metadata["statistics"]}))
    return 0
