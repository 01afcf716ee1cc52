"""The fine-tuning job: a task from the config, the backbone from a checkpoint, fresh heads, the
same trainer as pretraining.

`finetune(config, workdir)` is what `bertjax finetune` runs. It reads and featurizes the task
(`bertjax.tasks`), loads the backbone from `config.init_from` (a bertjax model directory, a
pretraining workdir or a transformers directory), trains (resuming from the workdir's latest
checkpoint), and evaluates: `eval_metrics.json`, `predictions.tsv` (one row per eval example) or
`predictions.json` (QA: id -> answer), `metrics.jsonl` and TensorBoard events. The fine-tuned
model is saved to `workdir/model` with the task in `workdir/finetune.json`; with
`config.eval_only=True` and `config.init_from` such a workdir, only the evaluation runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from bertjax import files, spec, tasks
from bertjax.config import resolve_path
from bertjax.data.tokenizer import load_tokenizer, read_options, resolve_options
from bertjax.interop import model_dir
from bertjax.models import model_config
from bertjax.models.registry import family_of
from bertjax.tasks.common import (
    Features,
    build_label_map,
    check_eval_labels,
    report_data_stats,
)
from bertjax.training import checkpoints, sharding, trainer

log = logging.getLogger(__name__)

# config.model fields that the run decides; every other architecture field comes from init_from.
RUNTIME_FIELDS = (
    "hidden_dropout",
    "attention_dropout",
    "dtype",
    "param_dtype",
    "attention_impl",
    "scan_layers",
    "remat_policy",
)
CHECKED_FIELDS = ("vocab_size", "hidden_size")  # must agree between config and init_from
TASK_FILE = "finetune.json"  # task kind, label names and task config of a fine-tuned workdir
MODEL_DIR = "model"


class ArraySource:
    """A random-access source over the device arrays of `Features` (for `make_iterator`)."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        self.arrays = dict(arrays)

    def __len__(self) -> int:
        return len(self.arrays["input_ids"])

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {k: v[index] for k, v in self.arrays.items()}


@dataclasses.dataclass
class TaskData:
    """A featurized task: the task object, training features (None in eval-only mode), the eval
    features, the eval examples they came from (one per prediction row), and the vocabulary
    and tokenizer options that made them (they go with the fine-tuned model)."""

    task: Any
    train: Features | None
    eval: Features
    eval_examples: list
    vocab: pathlib.Path
    tokenizer_options: dict

    @property
    def kind(self) -> str:
        return self.task.kind

    @property
    def label_names(self) -> list[str]:
        return list(self.task.label_names)


def read_split(task_cfg: ml_collections.ConfigDict, split: str) -> list:
    """Reads the train or eval examples of `config.task`, cut to `max_{split}_examples`."""
    module = tasks.task_module(task_cfg.kind)
    path = resolve_path(task_cfg[f"{split}_file"])
    if path.is_dir():
        raise ValueError(f"config.task.{split}_file: {path} is a folder, not a data file")
    if not path.is_file():
        raise FileNotFoundError(f"config.task.{split}_file: {path} does not exist")
    try:
        examples = module.read(task_cfg, path, split)
    except UnicodeDecodeError:
        raise files.invalid_utf8(path, f"config.task.{split}_file") from None
    if not examples:
        raise ValueError(
            f"config.task.{split}_file: {path} holds no examples (it is empty or only a header)"
        )
    limit = task_cfg[f"max_{split}_examples"]
    return examples[:limit] if limit > 0 else examples


def build_task(
    config: ml_collections.ConfigDict,
    tokenizer,
    vocab: pathlib.Path,
    tokenizer_options: Mapping[str, Any],
    *,
    label_names: Sequence[str] | None = None,
) -> TaskData:
    """Reads and featurizes the task of `config.task`.

    Args:
      config: the fine-tuning config.
      tokenizer: the WordPiece tokenizer of the init checkpoint (or of `config.data.vocab`).
      vocab, tokenizer_options: its vocabulary file and options.
      label_names: fixed label names (eval-only: those of the fine-tuned model); otherwise
        `config.task.labels`, or the sorted labels seen in the train and eval files.
    """
    task_cfg = config.task
    module = tasks.task_module(task_cfg.kind)
    eval_examples = read_split(task_cfg, "eval")
    if not module.labelled(eval_examples):
        what = (
            "answers" if task_cfg.kind == "qa" else f"labels (config.task.label={task_cfg.label!r})"
        )
        raise ValueError(
            f"config.task.eval_file={task_cfg.eval_file!r} has no {what}; evaluation needs them"
        )
    train_examples = [] if config.eval_only else read_split(task_cfg, "train")
    names: list[str] = []
    if task_cfg.kind in ("classification", "tagging"):
        fixed = label_names or list(task_cfg.labels) or None
        names = list(build_label_map(train_examples + eval_examples, fixed))
        if fixed is None and train_examples:
            names = list(build_label_map(train_examples))
            check_eval_labels(eval_examples, names, task_cfg.train_file)
    task = module.make_task(task_cfg, names)
    train_features = None
    if not config.eval_only:
        train_features = task.featurize(task_cfg, train_examples, tokenizer, training=True)
        report_data_stats("train", train_features.stats, task_cfg)
    eval_features = task.featurize(task_cfg, eval_examples, tokenizer, training=False)
    report_data_stats("eval", eval_features.stats, task_cfg)
    return TaskData(
        task, train_features, eval_features, eval_examples, vocab, dict(tokenizer_options)
    )


def make_model(kind: str, cfg, num_labels: int = 0):
    """The fine-tuning model of a task kind: the backbone of `cfg`'s family and the task's head."""
    from bertjax.models import Model

    names = [str(i) for i in range(num_labels)]
    task = tasks.task_module(kind).make_task({"kind": kind}, names)
    return Model(family_of(cfg), cfg, task.heads)


def check_init_config(config: ml_collections.ConfigDict, init_cfg, path) -> None:
    """Raises naming both values when `init_from` disagrees with `config.model` (0: not checked,
    the checkpoint decides)."""
    for name in CHECKED_FIELDS:
        want, have = config.model[name], getattr(init_cfg, name)
        if want and want != have:
            raise ValueError(
                f"config.init_from={str(path)!r} has {name}={have} but "
                f"config.model.{name}={want}; set --config.model.{name}={have} or use a "
                "checkpoint that matches"
            )


def runtime_config(config: ml_collections.ConfigDict, init_cfg):
    """The checkpoint's architecture with this run's numerics (`RUNTIME_FIELDS` it has)."""
    fields = {f.name for f in dataclasses.fields(init_cfg)}
    return dataclasses.replace(
        init_cfg,
        **{k: config.model[k] for k in RUNTIME_FIELDS if k in fields and k in config.model},
    )


def check_vocab(tokenizer, cfg, path) -> None:
    """Raises when the checkpoint's vocabulary has ids beyond its word embedding's rows."""
    n = tokenizer.get_vocab_size()
    if n > cfg.vocab_size:
        raise ValueError(
            f"config.init_from={str(path)!r}: its vocabulary has {n} tokens but its word "
            f"embedding only {cfg.vocab_size} rows (vocab_size); the vocabulary does not belong "
            "to these weights"
        )


def check_max_len(config: ml_collections.ConfigDict, cfg) -> None:
    """Raises unless `config.task.max_len` fits the model's position embeddings (a family
    without them, e.g. the recurrent one, takes any length)."""
    limit = getattr(cfg, "max_position_embeddings", None)
    if limit is not None and config.task.max_len > limit:
        raise ValueError(
            f"config.task.max_len={config.task.max_len} exceeds the model's "
            f"max_position_embeddings={cfg.max_position_embeddings} (config.init_from)"
        )


def load_encoder(config: ml_collections.ConfigDict):
    """Loads the backbone of `config.init_from` and checks it against `config.model`.

    Returns:
      (model config, unboxed backbone parameters, tokenizer, the model directory).
    """
    if not config.init_from:
        raise ValueError("config.init_from is empty: set it to a bertjax or transformers model")
    path = resolve_path(config.init_from)
    if model_dir.detect_format(path) == "hf":
        init_cfg = model_dir.load_hf_config(path)
    else:
        init_cfg = model_dir.read_model_config(path)
    check_init_config(config, init_cfg, path)  # before any weights are read
    tokenizer = model_dir.load_model_tokenizer(path)
    check_vocab(tokenizer, init_cfg, path)
    cfg = runtime_config(config, init_cfg)
    check_max_len(config, cfg)
    stored, params = model_dir.load_params(path, with_heads=False)
    _, params = model_dir.relayout(stored, params, getattr(cfg, "scan_layers", False))
    return cfg, model_dir.encoder_params(cfg, params["backbone"]), tokenizer, path


def scratch_encoder(config: ml_collections.ConfigDict):
    """A model of `config.model` trained from scratch (`config.init_from` empty), tokenized with
    `config.data.vocab` and `config.data.lowercase`.

    Returns:
      (model config, tokenizer, vocabulary path, tokenizer options).
    """
    if not config.data.vocab:
        raise ValueError(
            "config.init_from is empty: set it to a bertjax or transformers model, or set "
            "config.data.vocab (a vocab.txt) to train config.model from scratch"
        )
    vocab = resolve_path(config.data.vocab)
    options = {**read_options(vocab.parent), "lowercase": config.data.lowercase}
    tokenizer = load_tokenizer(vocab, **resolve_options(options))
    fields = config.model.to_dict()
    size = tokenizer.get_vocab_size()
    if fields.get("vocab_size", 0) not in (0, size):
        raise ValueError(
            f"config.data.vocab={config.data.vocab!r} has {size} tokens but "
            f"config.model.vocab_size={fields['vocab_size']}; set it to {size} or 0"
        )
    fields["vocab_size"] = size
    _, cfg = model_config(fields)
    check_max_len(config, cfg)
    return cfg, tokenizer, vocab, options


def _load_finetuned(config: ml_collections.ConfigDict):
    """(model config, full params, label names, model dir) of a fine-tuned workdir (eval_only)."""
    root = resolve_path(config.init_from)
    task_file = root / TASK_FILE
    if not task_file.is_file():
        raise FileNotFoundError(
            f"config.eval_only needs config.init_from to be a fine-tuned workdir; {root} has no "
            f"{TASK_FILE}"
        )
    saved = json.loads(task_file.read_text())
    if saved["kind"] != config.task.kind:
        raise ValueError(
            f"{root} was fine-tuned for kind {saved['kind']!r} but config.task.kind="
            f"{config.task.kind!r}"
        )
    cfg, params = load_finetuned_params(root)
    check_init_config(config, cfg, root)
    scan = getattr(runtime_config(config, cfg), "scan_layers", False)  # recurrent: no stack
    cfg, params = model_dir.relayout(cfg, params, scan)
    cfg = runtime_config(config, cfg)
    check_max_len(config, cfg)
    return cfg, params, saved["label_names"], root / MODEL_DIR


def load_finetuned_params(root: pathlib.Path):
    """(config, params) of a fine-tuned workdir's model; heads of directories written before
    the registry get their task's head name (a tagger was saved as `classifier`)."""
    saved = json.loads((root / TASK_FILE).read_text())
    cfg, params = model_dir.load_model_dir(root / MODEL_DIR)
    heads = dict(params.get("heads", {}))
    if saved["kind"] == "tagging" and "classifier" in heads:
        heads["tagger"] = heads.pop("classifier")
    return cfg, {**params, "heads": heads}


def setup(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> trainer.Trainer:
    """Loads the init checkpoint (checked first), builds the task, the trainer and its state,
    with the workdir claimed for this run (`training.workdir`)."""
    return trainer.start(config, workdir, _setup)


def _setup(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> trainer.Trainer:
    trainer.check_config(config, training=not config.eval_only)  # before any data work
    label_names = loaded = None
    if config.eval_only:
        cfg, loaded, label_names, source_dir = _load_finetuned(config)
        tokenizer = model_dir.load_model_tokenizer(source_dir)
        check_vocab(tokenizer, cfg, source_dir)
    elif config.init_from:
        cfg, backbone, tokenizer, source_dir = load_encoder(config)
        loaded = {"backbone": backbone}
    else:
        cfg, tokenizer, vocab, options = scratch_encoder(config)
    if config.eval_only or config.init_from:
        vocab = model_dir.vocab_file(source_dir)  # vocab.txt, or a BPE vocab.json
        options = model_dir.tokenizer_options(source_dir)
    data = build_task(config, tokenizer, vocab, options, label_names=label_names)
    workdir.mkdir(parents=True, exist_ok=True)
    spec.record(config, cfg, workdir, write=jax.process_index() == 0)
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


def write_data_stats(workdir: pathlib.Path, data: TaskData) -> None:
    """`data_stats.json`: the featurizers' counts (truncations, cut tags, skipped answers)."""
    if jax.process_index() != 0:
        return
    stats = {"eval": data.eval.stats}
    if data.train is not None:
        stats["train"] = data.train.stats
    stats = {split: {k: int(v) for k, v in counts.items()} for split, counts in stats.items()}
    files.atomic_write_text(workdir / "data_stats.json", json.dumps(stats, indent=2) + "\n")


def predict(job: trainer.Trainer, features: Features) -> dict[str, np.ndarray]:
    """Outputs of every feature, in order: {name: float32 [N, ...]}."""
    return predict_features(
        job.steps,
        job.state.params,
        features,
        batch_size=job.global_batch_size,
        input_fields=family_of(job.model_config).input_fields,
        process=(jax.process_index(), jax.process_count()),
    )


def predict_features(
    steps,
    params,
    features: Features,
    *,
    batch_size: int,
    input_fields: Sequence[str],
    process: tuple[int, int] = (0, 1),
    progress=None,
) -> dict[str, np.ndarray]:
    """Runs the trainer's jitted `predict_step` over `features` in batches of one fixed shape.

    Args:
      steps: the `CompiledSteps` (their mesh and predict step).
      params: the parameters, placed on the steps' shardings.
      features: the featurized examples.
      batch_size: the global batch (the last one is filled by repeating the last row).
      input_fields: the model family's input fields (the other arrays stay on the host).
      process: (this process's index, process count) over which each batch is split.
      progress: a tqdm-like bar to `update(rows)` after each batch, or None.

    Returns:
      {output name: float32 [N, ...]}, in feature order (sequence and pooled states dropped).
    """
    n = len(features)
    padded = math.ceil(n / batch_size) * batch_size
    index = np.minimum(np.arange(padded), n - 1)  # repeat the last row to fill the last batch
    local = batch_size // process[1]
    inputs = [k for k in features.arrays if k in input_fields]
    outputs = []
    for start in range(0, padded, batch_size):
        first = start + process[0] * local
        rows = index[first : first + local]
        local_batch = {k: features.arrays[k][rows] for k in inputs}
        out = steps.predict_step(params, sharding.global_batch(local_batch, steps.mesh))
        outputs.append(jax.device_get({k: v for k, v in out.items() if k not in UNUSED_OUTPUTS}))
        if progress is not None:
            progress.update(min(batch_size, n - start))
    return {k: np.concatenate([o[k] for o in outputs])[:n] for k in outputs[0]}


UNUSED_OUTPUTS = ("sequence_output", "pooled_output")  # not fetched from the device


def evaluate(job: trainer.Trainer) -> dict[str, float]:
    """Task metrics on the eval split; writes `eval_metrics.json` and the predictions."""
    data: TaskData = job.eval_source
    outputs = predict(job, data.eval)
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
    """Writes `workdir/model` (a bertjax model directory with the head) and `finetune.json`."""
    params = job.gathered_params()  # all processes take part
    if jax.process_index() != 0:
        return
    data: TaskData = job.eval_source
    vocab, options = data.vocab, data.tokenizer_options
    model_dir.save_model(
        job.workdir / MODEL_DIR, params, job.model_config, vocab, options or None, overwrite=True
    )
    # the task config travels with the model: `bertjax predict` featurizes as evaluation did
    document = {
        "kind": data.kind,
        "label_names": data.label_names,
        "task": job.config.task.to_dict(),
    }
    files.atomic_write_text(job.workdir / TASK_FILE, json.dumps(document, indent=2) + "\n")


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
    """The whole job: set up (or resume), train, save, evaluate. Returns the eval metrics."""
    job = setup(config, workdir)
    if config.eval_only or int(job.state.step) >= job.num_steps:
        if not config.eval_only:
            save_finetuned(job)
        metrics = evaluate(job)
        job.writer.write(int(job.state.step), {f"eval_{k}": v for k, v in metrics.items()})
    else:  # the loop evaluates (and records it) at its last step
        last = trainer.train(job, desc="finetune")
        save_finetuned(job)
        metrics = {k[len("eval_") :]: v for k, v in last.items() if k.startswith("eval_")}
    if not config.eval_only and config.checkpoint.best_metric:
        record_best(job)
    job.close()
    return metrics


def finetuned_workdir(path: str | pathlib.Path) -> pathlib.Path | None:
    """The fine-tuned workdir of `path` (the workdir itself or its `model/`), else None."""
    path = pathlib.Path(path)
    for root in (path, path.parent if path.name == MODEL_DIR else None):
        if root is not None and (root / TASK_FILE).is_file() and (root / MODEL_DIR).is_dir():
            return root
    return None


def export_hf(
    workdir: str | pathlib.Path, out_dir: str | pathlib.Path, *, overwrite: bool = False
) -> pathlib.Path:
    """Writes a fine-tuned workdir as a transformers directory of the matching head class.

    For BERT the result (`config.json` with the label names, `model.safetensors`, `vocab.txt`,
    `tokenizer_config.json`) loads with `transformers.BertForSequenceClassification`,
    `BertForTokenClassification` or `BertForQuestionAnswering` `.from_pretrained`. `out_dir` is
    written atomically; a non-empty one is refused unless `overwrite`.
    """
    workdir = pathlib.Path(workdir)
    saved = json.loads((workdir / TASK_FILE).read_text())
    cfg, params = load_finetuned_params(workdir)
    params = jax.device_get(params)
    hf = family_of(cfg).converter()
    vocab = model_dir.vocab_file(workdir / MODEL_DIR)
    options = model_dir.tokenizer_options(workdir / MODEL_DIR)
    with model_dir.atomic_dir(out_dir, overwrite=overwrite) as tmp:
        hf.write_hf_task_files(
            tmp, params, cfg, saved["kind"], saved["label_names"], vocab, options
        )
    return pathlib.Path(out_dir)
