"""The `bertjax` command: parses arguments and dispatches to a subcommand module.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`;
the logic stays in importable functions that tests call directly.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bertjax import files

# name -> (module, one-line help). Modules are imported lazily so `bertjax --help` stays fast.
COMMANDS: dict[str, tuple[str, str]] = {
    "import-hf": (
        "bertjax.commands.import_hf",
        "Convert a transformers BERT directory to bertjax.",
    ),
    "export-hf": ("bertjax.commands.export_hf", "Export a bertjax model as a transformers BERT."),
    "fill-mask": ("bertjax.commands.fill_mask", "Predict the tokens behind [MASK] in a text."),
    "predict": (
        "bertjax.commands.predict_cmd",
        "Predict with a fine-tuned model (file or --text).",
    ),
    "embed": ("bertjax.commands.embed_cmd", "Embed lines of text with any encoder (.npy)."),
    "generate": ("bertjax.commands.generate", "Continue a text with a GPT model."),
    "pretrain": (
        "bertjax.commands.pretrain_cmd",
        "Pretrain BERT (MLM + NSP) or GPT (causal LM) from a config; resumable.",
    ),
    "finetune": ("bertjax.commands.finetune_cmd", "Fine-tune BERT on a task; resumable."),
    "tokenizer": ("bertjax.commands.tokenizer_cmd", "Train a WordPiece vocabulary on text files."),
    "prepare": ("bertjax.commands.prepare_cmd", "Prepare MLM+NSP pretraining shards from text."),
    "launch": (
        "bertjax.commands.launch_cmd",
        "Run a command as N local processes of one multi-process job (CPU).",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertjax",
        description="BERT pretraining and fine-tuning in JAX/Flax.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `--config.group.field=value` overrides are collected for commands that take a config.
    args.overrides = [item for item in extra if item.startswith("--config.")]
    unknown = [item for item in extra if not item.startswith("--config.")]
    if unknown or (args.overrides and not hasattr(args, "config")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or args.overrides)}")
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        # Bad input (config field, file, line): one clear line, no traceback.
        print(f"bertjax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        full = files.as_disk_full(err)  # one line saying what filled and where, no cascade
        if full is None:
            raise
        print(f"bertjax {args.command}: stopped: {full}", file=sys.stderr)
        return files.EXIT_DISK_FULL
    except RuntimeError as err:
        # Training stopped on purpose (bertjax.training.trainer.TrainingStopped): divergence 3,
        # preemption 143 (SIGTERM, checkpoint saved: rerun to resume); the watchdog exits with 4.
        if not hasattr(err, "exit_code"):
            raise
        print(f"bertjax {args.command}: stopped: {err}", file=sys.stderr)
        return int(err.exit_code)


if __name__ == "__main__":
    sys.exit(main())
