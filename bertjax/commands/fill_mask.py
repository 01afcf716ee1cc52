"""`bertjax fill-mask MODEL TEXT`: top-k predictions of the MLM head for each [MASK] in TEXT
(`bertjax.inference.fill_mask`)."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "Predict the tokens behind each [MASK] in a text with a model's masked-LM head."
MASK = "[MASK]"  # the mask token named in the help


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"{HELP} MODEL is a bertjax model directory or a transformers BERT directory; the text is "
        "tokenized with its vocab.txt (lowercasing as its tokenizer config says). For each [MASK] "
        "the top-k tokens are printed with their probabilities, as transformers' fill-mask "
        "pipeline reports them (score, token, token_str, sequence)."
    )
    parser.add_argument("model", metavar="MODEL", help="bertjax or transformers model directory")
    parser.add_argument("text", metavar="TEXT", help=f"text with at least one {MASK}")
    parser.add_argument("--top-k", type=int, default=5, help="predictions per mask (default 5)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON: a list of predictions for one mask, a list of such lists for several",
    )


def run(args: argparse.Namespace) -> int:
    from bertjax.inference.fill_mask import fill_mask_file

    try:
        results = fill_mask_file(args.model, args.text, top_k=args.top_k)
    except (ValueError, OSError, ImportError) as e:
        print(f"bertjax fill-mask: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
        return 0
    for i, predictions in enumerate(results, 1):
        print(f"{MASK} {i} of {len(results)}:")
        for p in predictions:
            print(f"  {p['score']:.4f}  {p['token_str']:<15}  {p['sequence']}")
    return 0
