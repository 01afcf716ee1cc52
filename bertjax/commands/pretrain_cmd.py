"""`bertjax pretrain`: MLM + NSP pretraining from a config file, resumable."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="config file, e.g. configs/tiny.py")
    parser.add_argument("--workdir", required=True, help="output folder; rerun to resume from it")
    parser.epilog = (
        "Override any config field with --config.GROUP.FIELD=VALUE, e.g. "
        "--config.train.num_steps=1000 --config.data.corpus='books/*.txt'."
    )


def run(args: argparse.Namespace) -> int:
    import jax

    from bertjax.commands import setup_logging
    from bertjax.config import load_config
    from bertjax.training.pretrain import pretrain

    setup_logging()
    config = load_config(args.config, args.overrides)
    metrics = pretrain(config, args.workdir)
    if jax.process_index() == 0:  # one summary per job, not one per process
        print(json.dumps(metrics, indent=2))
    return 0
