"""`bertjax import-hf HF_DIR OUT`: a transformers BERT directory -> a bertjax model directory."""

from __future__ import annotations

import argparse
import logging
import sys

HELP = "Convert a Hugging Face transformers BERT directory into a bertjax model directory."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"{HELP} HF_DIR needs config.json (model_type 'bert'), model.safetensors or "
        "pytorch_model.bin, and vocab.txt. OUT receives config.json, vocab.txt, "
        "tokenizer_config.json and params/ (orbax); it is written atomically. Heads the "
        "checkpoint lacks (e.g. MLM/NSP of an encoder-only model) are initialised fresh and listed."
    )
    parser.add_argument("hf_dir", metavar="HF_DIR", help="transformers model directory")
    parser.add_argument("out", metavar="OUT", help="bertjax model directory to create")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT if it exists and is not empty"
    )
    parser.add_argument(
        "--scan-layers",
        action="store_true",
        help="store the layers stacked for nn.scan (config.model.scan_layers=True)",
    )


def run(args: argparse.Namespace) -> int:
    from bertjax import storage
    from bertjax.interop.model_dir import import_hf

    converters = logging.getLogger("bertjax.interop")  # their warning would list them again
    level = converters.level
    converters.setLevel(logging.ERROR)
    try:
        with storage.output(args.out) as out:
            initialised = import_hf(
                storage.input_path(args.hf_dir),
                out,
                overwrite=args.overwrite,
                scan_layers=args.scan_layers,
            )
    except (ValueError, OSError, ImportError) as e:
        print(f"bertjax import-hf: error: {e}", file=sys.stderr)
        return 2
    finally:
        converters.setLevel(level)
    print(f"wrote {args.out}")
    heads = sorted({p.split("/")[1] for p in initialised if p.startswith("heads/")})
    if heads:
        print(
            f"WARNING: {args.hf_dir} has no {', '.join(heads)} head(s): they were initialised "
            f"fresh and are untrained (recorded in {args.out}/config.json); "
            + (
                "fill-mask refuses this model until its masked-LM head is trained"
                if "mlm" in heads
                else "train them before use"
            )
        )
    if initialised:
        print(f"initialised fresh (not in {args.hf_dir}): {len(initialised)} parameter(s)")
        for path in initialised:
            print(f"  {path}")
    return 0
