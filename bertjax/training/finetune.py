"""The fine-tuning job: a task from the config, the backbone from a checkpoint, fresh heads, the
same trainer as pretraining.

`finetune(config, workdir)` is what `bertjax finetune` runs. It reads and featurizes the task
(`bertjax.tasks.assembly`), loads the backbone from `config.init_from` (any model-directory
format, `bertjax.interop.init_from`), trains (resuming from the workdir's latest
checkpoint), and evaluates: `eval_metrics.json`, `predictions.tsv` (one row per eval example) or
`predictions.json` (QA: id -> answer), `metrics.jsonl` and TensorBoard events. The fine-tuned
model is saved to `workdir/model` with the task in `workdir/finetune.json`
(`bertjax.interop.finetuned_dir`); with
`config.eval_only=True` and `config.init_from` such a workdir, only the evaluation runs.
"""

from __future__ import annotations

import json
import pathlib

import jax
import ml_collections
import numpy as np

from bertjax import files, spec
from bertjax.data.arrays import ArraySource
from bertjax.inference.batches import predict_features
from bertjax.interop import finetuned_dir, init_from, model_dir
from bertjax.models.registry import family_of
from bertjax.tasks.assembly import TaskData, build_task, write_data_stats
from bertjax.training import checkpoints, loop, trainer


def setup(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> trainer.Trainer:
    """Loads the init checkpoint (checked first), builds the task, the trainer and its state,
    with the workdir claimed for this run (`training.workdir`)."""
    return trainer.start(config, workdir, _setup)


def _setup(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> trainer.Trainer:
    trainer.check_config(config, training=not config.eval_only)  # before any data work
    label_names = loaded = None
    if config.eval_only:
        cfg, loaded, label_names, source_dir = init_from.load_finetuned(config)
        tokenizer = model_dir.load_model_tokenizer(source_dir)
        init_from.check_vocab(tokenizer, cfg, source_dir)
    elif config.init_from:
        cfg, backbone, tokenizer, source_dir = init_from.load_encoder(config)
        loaded = {"backbone": backbone}
    else:
        cfg, tokenizer, vocab, options = init_from.scratch_encoder(config)
    if config.eval_only or config.init_from:
        vocab = model_dir.vocab_file(source_dir)  # vocab.txt, or a BPE vocab.json
        options = model_dir.tokenizer_options(source_dir)
    data = build_task(config, tokenizer, vocab, options, label_names=label_names)
    workdir.mkdir(parents=True, exist_ok=True)
    spec.record(config, cfg, workdir, write=jax.process_index() == 0)
    if jax.process_index() == 0:
        write_data_stats(workdir, data)
    features = data.eval if config.eval_only else data.train
    batch = config.train.global_batch_size
    example = {k: np.repeat(v[:1], batch, 0) for k, v in features.arrays.items()}
    return trainer.build(
        config,
        workdir,
        model_config=cfg,
        objective=data.task,
        example=example,
        evaluate=evaluate,
        train_source=None if config.eval_only else ArraySource(data.train.arrays),
        eval_source=data,
        num_steps=1 if config.eval_only else trainer.num_train_steps(config, len(features)),
        loaded=loaded,
    )


def evaluate(job: trainer.Trainer) -> dict[str, float]:
    """Task metrics on the eval split; writes `eval_metrics.json` and the predictions."""
    data: TaskData = job.eval_source
    outputs = predict_features(
        job.steps,
        job.state.params,
        data.eval,
        batch_size=job.global_batch_size,
        input_fields=family_of(job.model_config).input_fields,
        process=(jax.process_index(), jax.process_count()),
    )
    predictions, references = data.task.outputs_to_predictions(
        job.config.task, data.eval_examples, data.eval, outputs
    )
    metrics = data.task.metrics(predictions, references)
    if jax.process_index() == 0:
        data.task.write_predictions(job.workdir, data.eval_examples, predictions, references)
        text = json.dumps(metrics, indent=2) + "\n"
        files.atomic_write_text(job.workdir / "eval_metrics.json", text)
    return metrics


def save_finetuned(job: trainer.Trainer) -> None:
    """Writes the fine-tuned model directory (`bertjax.interop.finetuned_dir`) to the workdir."""
    params = job.gathered_params()  # all processes take part
    if jax.process_index() != 0:
        return
    data: TaskData = job.eval_source
    finetuned_dir.save_finetuned(
        job.workdir,
        params,
        job.model_config,
        data.vocab,
        data.tokenizer_options,
        kind=data.kind,
        label_names=data.label_names,
        task=job.config.task.to_dict(),
    )


def record_best(job: trainer.Trainer) -> None:
    """Adds `"best": {"step", "checkpoint", <metrics>}` (the checkpoint kept for
    `config.checkpoint.best_metric`) to `eval_metrics.json`."""
    best = checkpoints.best_checkpoint(job.manager)
    if jax.process_index() != 0 or best is None:
        return
    path = job.workdir / "eval_metrics.json"
    document = {**json.loads(path.read_text()), "best": best}
    files.atomic_write_text(path, json.dumps(document, indent=2) + "\n")


def finetune(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, float]:
    """The whole job: set up (or resume), train, save, evaluate. Returns the eval metrics.
    The trainer is closed on every exit path (`Trainer.close`)."""
    with setup(config, workdir) as job:
        if config.eval_only or int(job.state.step) >= job.num_steps:
            if not config.eval_only:
                save_finetuned(job)
            metrics = evaluate(job)
            job.writer.write(int(job.state.step), {f"eval_{k}": v for k, v in metrics.items()})
        else:  # the loop evaluates (and records it) at its last step
            last = loop.train(job, desc="finetune")
            save_finetuned(job)
            metrics = {k[len("eval_") :]: v for k, v in last.items() if k.startswith("eval_")}
        if not config.eval_only and config.checkpoint.best_metric:
            record_best(job)
    return metrics
