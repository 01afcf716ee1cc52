"""`bertjax pretrain`: MLM + NSP pretraining from a config file, resumable."""

from __future__ import annotations

import argparse
import pathlib


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="config file, e.g. configs/tiny.py")
    parser.add_argument("--workdir", required=True, help="output folder; rerun to resume from it")
    parser.epilog = (
        "Override any config field with --config.GROUP.FIELD=VALUE, e.g. "
        "--config.train.num_steps=1000 --config.data.corpus='books/*.txt'."
    )


def run(args: argparse.Namespace) -> int:

    from bertjax.commands import setup_logging
    from bertjax.config import load_config
    from bertjax.training.pretrain import pretrain
    from bertjax.training.run_log import run_job

    setup_logging()
    config = load_config(args.config, args.overrides)
    workdir = args.workdir  # a folder or a gs:// or s3:// URL
    return run_job(
        "pretrain",
        pretrain,
        config,
        workdir,
        lambda metrics: summary(workdir, metrics),
    )


def summary(workdir: str | pathlib.Path, metrics: dict) -> str:
    """What a finished pretraining run made and what to do with it (its family's
    `next_steps`), in words."""
    from bertjax import storage
    from bertjax.interop.model_dir import read_model_config
    from bertjax.models.registry import family_of

    workdir = str(workdir).rstrip("/")
    model = f"{workdir}/model"
    shown = ", ".join(
        f"{k.removeprefix('eval_').replace('_', ' ')} {v:.4g}"
        for k, v in metrics.items()
        if k.startswith("eval_")
    )
    lines = [
        f"Pretraining finished. Held-out metrics: {shown or 'none'}.",
        f"The model is in {model} (metrics of every step: {workdir}/metrics.jsonl, "
        f"the run's log: {workdir}/log.txt).",
    ]
    for what, command in family_of(
        read_model_config(storage.local_path(workdir) / "model")
    ).next_steps:
        lines += [what, "  " + command.format(model=model, workdir=workdir)]
    return "\n".join(lines)
