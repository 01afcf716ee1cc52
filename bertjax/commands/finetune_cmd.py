"""`bertjax finetune`: fine-tune (or evaluate) BERT on a classification, tagging or QA task."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, help="task config, e.g. configs/finetune/sst2.py"
    )
    parser.add_argument("--workdir", required=True, help="output folder; rerun to resume from it")
    parser.epilog = (
        "Override any config field with --config.GROUP.FIELD=VALUE, e.g. "
        "--config.init_from=runs/base/model --config.train.num_epochs=2; "
        "--config.eval_only=True with --config.init_from=A_FINETUNED_WORKDIR only evaluates."
    )


def run(args: argparse.Namespace) -> int:
    import jax

    from bertjax.commands import setup_logging
    from bertjax.config import load_config
    from bertjax.training.finetune import finetune

    setup_logging()
    config = load_config(args.config, args.overrides)
    metrics = finetune(config, args.workdir)
    if jax.process_index() == 0:  # one summary per job, not one per process
        print(json.dumps(metrics, indent=2))
    return 0
