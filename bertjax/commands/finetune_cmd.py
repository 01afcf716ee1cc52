"""`bertjax finetune`: fine-tune (or evaluate) BERT on a classification, tagging or QA task."""

from __future__ import annotations

import argparse
import json
import pathlib


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

    from bertjax.commands import setup_logging
    from bertjax.config import load_config
    from bertjax.training.finetune import finetune
    from bertjax.training.run_log import run_job

    setup_logging()
    config = load_config(args.config, args.overrides)
    workdir = args.workdir  # a folder or a gs:// or s3:// URL
    model = args.workdir if not config.eval_only else config.init_from
    return run_job(
        "finetune",
        finetune,
        config,
        workdir,
        lambda metrics: summary(
            workdir, model, config.task.kind, metrics, eval_only=config.eval_only
        ),
    )


def summary(
    workdir: str | pathlib.Path,
    model: str | pathlib.Path,
    kind: str,
    metrics: dict,
    *,
    eval_only=False,
) -> str:
    """What a finished fine-tuning run (in `workdir`, its model in the workdir `model`) made
    and what to do with it, in words; `eval_only`: what the evaluation of `model` found."""
    shown = ", ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in metrics.items())
    predictions = "predictions.json" if kind == "qa" else "predictions.tsv"
    if kind == "qa":
        example = '--question "Who wrote it?" --context "The book was written by Ann."'
    elif kind == "tagging":
        example = '--text "Angela Merkel visited Paris in May."'
    else:
        example = '--text "A charming and often affecting journey."'
    from bertjax import storage

    workdir, model = str(workdir).rstrip("/"), str(model).rstrip("/")
    task_file = storage.local_path(model) / "finetune.json"
    saved = json.loads(task_file.read_text()) if task_file.is_file() else {}
    labels = saved.get("label_names") if kind in ("classification", "tagging") else None
    return "\n".join(
        [
            f"{'Evaluation' if eval_only else 'Fine-tuning'} finished. Eval metrics: {shown}.",
            f"The model is in {model}/model ({kind}"
            + (f", labels {', '.join(labels)}" if labels else "")
            + f"); the eval file's predictions are in {workdir}/{predictions}.",
            "Predict with it:",
            f"  bertjax predict {model} {example}",
            f"  bertjax predict {model} --input FILE --out predictions.jsonl",
        ]
    )
