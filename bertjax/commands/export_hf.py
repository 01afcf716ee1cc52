"""`bertjax export-hf CKPT OUT`: a bertjax model directory -> a transformers BERT directory."""

from __future__ import annotations

import argparse
import sys

HELP = "Export a bertjax model directory as a Hugging Face transformers BertForPreTraining."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"{HELP} OUT receives config.json, model.safetensors, vocab.txt and "
        "tokenizer_config.json, loadable with transformers.BertForPreTraining.from_pretrained(OUT); "
        "it is written atomically."
    )
    parser.add_argument("ckpt", metavar="CKPT", help="bertjax model directory (from import-hf)")
    parser.add_argument("out", metavar="OUT", help="transformers directory to create")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT if it exists and is not empty"
    )


def run(args: argparse.Namespace) -> int:
    from bertjax.checkpoint import export_hf

    try:
        export_hf(args.ckpt, args.out, overwrite=args.overwrite)
    except (ValueError, OSError) as e:
        print(f"bertjax export-hf: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0
