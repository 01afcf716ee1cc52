"""`bertjax export-hf CKPT OUT`: a bertjax model directory -> a transformers BERT directory."""

from __future__ import annotations

import argparse
import sys

HELP = "Export a bertjax model (pretrained or fine-tuned) as a Hugging Face transformers BERT."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"{HELP} OUT receives config.json, model.safetensors, vocab.txt and "
        "tokenizer_config.json, loadable with transformers.BertForPreTraining.from_pretrained(OUT); "
        "a fine-tuned workdir (or its model/ folder) exports as BertForSequenceClassification, "
        "BertForTokenClassification or BertForQuestionAnswering with its label names. OUT is "
        "written atomically."
    )
    parser.add_argument(
        "ckpt",
        metavar="CKPT",
        help="bertjax model directory (from import-hf or pretrain), or a fine-tuned workdir",
    )
    parser.add_argument("out", metavar="OUT", help="transformers directory to create")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT if it exists and is not empty"
    )


def run(args: argparse.Namespace) -> int:
    from bertjax import storage
    from bertjax.interop import finetuned_dir, model_dir

    try:
        ckpt = storage.input_path(args.ckpt)
        workdir = finetuned_dir.finetuned_workdir(ckpt)
        with storage.output(args.out) as out:
            if workdir is None:
                model_dir.export_hf(ckpt, out, overwrite=args.overwrite)
            else:
                finetuned_dir.export_hf(workdir, out, overwrite=args.overwrite)
    except (ValueError, OSError) as e:
        print(f"bertjax export-hf: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0
