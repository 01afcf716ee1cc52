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
    import jax

    from bertjax.commands import setup_logging
    from bertjax.config import load_config
    from bertjax.training.pretrain import pretrain

    setup_logging()
    config = load_config(args.config, args.overrides)
    metrics = pretrain(config, args.workdir)
    if jax.process_index() == 0:  # one summary per job, not one per process
        print(summary(pathlib.Path(args.workdir), metrics))
    return 0


def summary(workdir: pathlib.Path, metrics: dict) -> str:
    """What a finished pretraining run made and what to do with it, in words."""
    model = workdir / "model"
    shown = ", ".join(
        f"{k.removeprefix('eval_').replace('_', ' ')} {v:.4g}"
        for k, v in metrics.items()
        if k.startswith("eval_")
    )
    return "\n".join(
        [
            f"Pretraining finished. Held-out metrics: {shown or 'none'}.",
            f"The model is in {model} (metrics of every step: {workdir / 'metrics.jsonl'}).",
            "Try its masked-LM head:",
            f'  bertjax fill-mask {model} "The capital of France is [MASK]."',
            "Fine-tune it, e.g. on SST-2:",
            f"  bertjax finetune --config configs/finetune/sst2.py --workdir {workdir}-sst2 "
            f"--config.init_from={model}",
        ]
    )
