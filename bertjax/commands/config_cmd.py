"""`bertjax config show`: the resolved config of a run, from a config file or a workdir."""

from __future__ import annotations

import argparse
import json


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

    print(json.dumps(spec.show_path(args.config, args.overrides), indent=2))
    return 0
