"""`bertjax config show`: the resolved config of a run, from a config file or a workdir."""

from __future__ import annotations

import argparse
import json
import pathlib


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["show"], help="show: print the resolved config")
    parser.add_argument(
        "config",
        help="config file (e.g. configs/quickstart.py) or a workdir (its run_config.json)",
    )
    parser.epilog = (
        "Takes the same --config.GROUP.FIELD=VALUE overrides as pretrain and finetune, e.g. "
        "bertjax config show configs/quickstart.py --config.model.family=gpt"
    )


def run(args: argparse.Namespace) -> int:
    from bertjax import spec
    from bertjax.config import load_config

    if pathlib.Path(args.config).is_dir():
        if args.overrides:
            raise ValueError(f"{args.config} is a workdir: its config takes no --config overrides")
        resolved = spec.show_workdir(args.config)
    else:
        resolved = spec.show(load_config(args.config, args.overrides))
    print(json.dumps(resolved, indent=2))
    return 0
