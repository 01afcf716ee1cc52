"""`bertjax embed MODEL --input FILE --out FILE.npy`: one vector per line of text."""

from __future__ import annotations

import argparse
import sys

from bertjax.commands import add_strict_utf8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Embed texts with any encoder. MODEL is a bertjax model directory, a pretraining or "
        "fine-tuning workdir or a transformers BERT directory. Every line of --input is one "
        "text; --out receives a float32 [lines, hidden] .npy array, row i for line i. "
        "--pooling mean --normalize is sentence-transformers' recipe (all-MiniLM-L6-v2)."
    )
    parser.add_argument("model", metavar="MODEL", help="model directory or workdir")
    parser.add_argument("--input", required=True, help="text file, one text per line")
    parser.add_argument("--out", required=True, help="output .npy file")
    parser.add_argument("--pooling", choices=("cls", "mean", "pooler"), default="mean")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise each vector")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per step")
    parser.add_argument(
        "--max-len",
        type=int,
        default=0,
        help="tokens per text at most (0: a sentence-transformers directory's max_seq_length, "
        "else the model's limit)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_strict_utf8(parser)


def run(args: argparse.Namespace) -> int:
    from bertjax import storage
    from bertjax.commands import setup_logging
    from bertjax.inference import Embedder, embed_file

    setup_logging()
    model = Embedder(
        storage.input_path(args.model),
        pooling=args.pooling,
        normalize=args.normalize,
        batch_size=args.batch_size,
        max_len=args.max_len,
    )
    with storage.output(args.out) as out:
        shape = embed_file(
            model, storage.input_path(args.input), out, progress=not args.no_progress
        )
    print(f"wrote {shape[0]} x {shape[1]} float32 embeddings to {args.out}", file=sys.stderr)
    return 0
