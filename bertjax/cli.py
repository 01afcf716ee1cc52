"""The `bertjax` command: parses arguments and dispatches to a subcommand module.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`;
the logic stays in importable functions that tests call directly.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pathlib
import sys

from bertjax import __version__, files, storage

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
    "translate": ("bertjax.commands.translate", "Translate with an encoder-decoder model."),
    "pretrain": (
        "bertjax.commands.pretrain_cmd",
        "Pretrain BERT (MLM + NSP) or GPT (causal LM) from a config; resumable.",
    ),
    "finetune": ("bertjax.commands.finetune_cmd", "Fine-tune BERT on a task; resumable."),
    "tokenizer": (
        "bertjax.commands.tokenizer_cmd",
        "Train a vocabulary (WordPiece, byte-level BPE) on text files.",
    ),
    "prepare": (
        "bertjax.commands.prepare_cmd",
        "Prepare pretraining shards from text (--config: as pretrain would).",
    ),
    "config": (
        "bertjax.commands.config_cmd",
        "Show the resolved config of a config file (with overrides) or of a workdir.",
    ),
    "launch": (
        "bertjax.commands.launch_cmd",
        "Run a command as N local processes of one multi-process job (CPU).",
    ),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with `only`, the arguments of that command alone are added
    (the other commands' modules are not imported, so start-up imports what the command needs)."""
    parser = argparse.ArgumentParser(
        prog="bertjax",
        description="BERT pretraining and fine-tuning in JAX/Flax.",
    )
    parser.add_argument("--version", action="version", version=f"bertjax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module)
        if only is None or name == only:
            importlib.import_module(module).add_arguments(sub_parser)
    return parser


def compile_cache_dir() -> pathlib.Path | None:
    """The persistent JAX compilation cache of the command line: $BERTJAX_COMPILE_CACHE, else
    $XDG_CACHE_HOME/bertjax/jax (default ~/.cache/bertjax/jax); None when set to "" or "off"."""
    value = os.environ.get("BERTJAX_COMPILE_CACHE")
    if value is None:
        base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
        return pathlib.Path(base) / "bertjax" / "jax"
    return None if value.strip().lower() in ("", "0", "off", "none") else pathlib.Path(value)


def enable_compile_cache() -> None:
    """Points JAX's persistent compilation cache at `compile_cache_dir()`, through JAX's own
    environment variables (read when jax is imported, so jax is not imported here), caching every
    compiled program: a second run of a command compiles nothing. A JAX_COMPILATION_CACHE_DIR
    set by the user wins."""
    path = compile_cache_dir()
    if path is None or "jax" in sys.modules:
        return
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(path))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def _utf8_policy(args: argparse.Namespace):
    """The invalid-UTF-8 policy of a command with `--strict-utf8` (`commands.add_strict_utf8`);
    a job with a config takes `config.data.strict_utf8` instead."""
    if not getattr(args, "strict_utf8", False):
        return contextlib.nullcontext()
    from bertjax.data.text import utf8_policy

    return utf8_policy(True)


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    command = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else "")
    args, extra = parser.parse_known_args(argv)
    # `--config.group.field=value` overrides are collected for commands that take a config.
    args.overrides = [item for item in extra if item.startswith("--config.")]
    unknown = [item for item in extra if not item.startswith("--config.")]
    if unknown or (args.overrides and not hasattr(args, "config")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or args.overrides)}")
    enable_compile_cache()
    try:
        with _utf8_policy(args):
            return int(importlib.import_module(args._module).run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        # Bad input (config field, file, line): one clear line, no traceback.
        print(f"bertjax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except storage.BucketError as err:  # one line naming the URL, after bounded retries
        print(f"bertjax {args.command}: stopped: {err}", file=sys.stderr)
        return storage.EXIT_UNREACHABLE
    except OSError as err:
        full = files.as_disk_full(err)  # one line saying what filled and where, no cascade
        if full is None:
            raise
        print(f"bertjax {args.command}: stopped: {full}", file=sys.stderr)
        return files.EXIT_DISK_FULL
    except RuntimeError as err:
        # Training stopped on purpose (bertjax.training.stops.TrainingStopped): divergence 3,
        # preemption 143 (SIGTERM, checkpoint saved: rerun to resume); the watchdog exits with 4.
        if not hasattr(err, "exit_code"):
            raise
        print(f"bertjax {args.command}: stopped: {err}", file=sys.stderr)
        return int(err.exit_code)
    except KeyboardInterrupt:
        # Ctrl-C outside a training loop (data preparation, compilation, inference); inside
        # one, the loop saves and stops with a resume hint (bertjax.training.stops.Preemption).
        print(f"\nbertjax {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
