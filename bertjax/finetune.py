"""The fine-tuning job: a task from the config, the encoder from a checkpoint, a fresh head.

`finetune(config, workdir)` is what `bertjax finetune` runs. It reads and featurizes the task
(`finetune_data`), loads the encoder from `config.init_from` (a bertjax model directory or a
transformers BERT directory), trains with the sharded, jitted step below (resuming from the
workdir's latest checkpoint), and evaluates: `eval_metrics.json`, `predictions.tsv` (one row per
eval example) or `predictions.json` (QA: id -> answer), `metrics.jsonl` and TensorBoard events.
The fine-tuned model is saved to `workdir/model` with the task in `workdir/finetune.json`; with
`config.eval_only=True` and `config.init_from` such a workdir, only the evaluation runs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from bertjax import (
    checkpoint,
    convert,
    distributed,
    finetune_data,
    input_pipeline,
    sharding,
    task_metrics,
    train,
)
from bertjax.config import BertConfig, bert_config
from bertjax.heads import (
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from bertjax.metric_writers import MetricWriter
from bertjax.model import BertForPreTraining
from bertjax.optimizer import make_optimizer

log = logging.getLogger(__name__)

Array = jax.Array
Batch = Mapping[str, Array]

DATA_VAR = "BERTJAX_DATA"  # config paths may start with $BERTJAX_DATA
INPUT_FIELDS = ("input_ids", "token_type_ids", "attention_mask")
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
TASK_FILE = "finetune.json"  # task kind and label names of a fine-tuned workdir
MODEL_DIR = "model"


# ----------------------------------------------------------------------------- data


def data_root() -> pathlib.Path:
    """The shared data folder: $BERTJAX_DATA, else `../shared/data` beside the repository."""
    default = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
    return pathlib.Path(os.environ.get(DATA_VAR) or default)


def resolve_path(path: str) -> pathlib.Path:
    """Expands a leading `$BERTJAX_DATA` (at run time, so configs hold no absolute paths)."""
    prefix = "$" + DATA_VAR
    if path.startswith(prefix):
        return data_root() / path[len(prefix) :].lstrip("/")
    return pathlib.Path(path)


class ArraySource:
    """A random-access source over the device arrays of `Features` (for `make_iterator`)."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        self.arrays = dict(arrays)

    def __len__(self) -> int:
        return len(self.arrays["input_ids"])

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {k: v[index] for k, v in self.arrays.items()}


@dataclasses.dataclass
class Task:
    """A featurized task.

    Attributes:
      kind: one of `task_metrics.TASK_KINDS`.
      label_names: class or tag names in id order (empty for regression and QA).
      train: training features (None in eval-only mode).
      eval: evaluation features.
      eval_examples: the eval examples the features came from (TextExample, TaggedSentence or
        QAExample), one per prediction row.
    """

    kind: str
    label_names: list[str]
    train: finetune_data.Features | None
    eval: finetune_data.Features
    eval_examples: list

    @property
    def num_labels(self) -> int:
        return {"regression": 1, "qa": 2}.get(self.kind, len(self.label_names))


def _column(value: str) -> str | int | None:
    if value == "":
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def read_split(task_cfg: ml_collections.ConfigDict, split: str) -> list:
    """Reads the train or eval examples of `config.task`, cut to `max_{split}_examples`."""
    path = resolve_path(task_cfg[f"{split}_file"])
    if not path.is_file():
        raise FileNotFoundError(f"config.task.{split}_file: {path} does not exist")
    kind = task_cfg.kind
    if kind in ("classification", "regression"):
        examples = finetune_data.read_text_classification(
            path,
            format=task_cfg.format or None,
            text_a=_column(task_cfg.text_a),
            text_b=_column(task_cfg.text_b),
            label=_column(task_cfg.label),
            header=task_cfg.header,
        )
    elif kind == "tagging":
        examples = finetune_data.read_conll(
            path,
            token_column=task_cfg.token_column,
            tag_column=task_cfg.tag_column,
            scheme=task_cfg.scheme,
        )
    elif kind == "qa":
        examples = finetune_data.read_squad(
            path,
            split=split if task_cfg.split_by_article else None,
            eval_fraction=task_cfg.eval_fraction,
            seed=task_cfg.split_seed,
        )
    else:
        raise ValueError(
            f"config.task.kind={kind!r} is invalid: allowed values are {task_metrics.TASK_KINDS}"
        )
    limit = task_cfg[f"max_{split}_examples"]
    return examples[:limit] if limit > 0 else examples


def featurize(task_cfg, examples, tokenizer, label_map, *, training: bool):
    """`Features` of examples for the task kind (see `finetune_data`)."""
    kind, max_len = task_cfg.kind, task_cfg.max_len
    if kind in ("classification", "regression"):
        return finetune_data.featurize_text_classification(
            examples,
            tokenizer,
            max_len=max_len,
            label_map=label_map,
            regression=kind == "regression",
        )
    if kind == "tagging":
        return finetune_data.featurize_tagging(
            examples, tokenizer, max_len=max_len, label_map=label_map
        )
    return finetune_data.featurize_qa(
        examples,
        tokenizer,
        max_len=max_len,
        doc_stride=task_cfg.doc_stride,
        max_query_length=task_cfg.max_query_length,
        is_training=training,
    )


def check_eval_labelled(task_cfg: ml_collections.ConfigDict, examples: Sequence) -> None:
    """Raises when no eval example has a label (or, QA, an answer): metrics need them.

    CoNLL files always carry a tag column, and a delimited file without the label column already
    fails in the reader, so this catches `config.task.label=""` and SQuAD files without answers.
    """
    kind = task_cfg.kind
    if kind in ("classification", "regression"):
        labelled = any(e.label is not None for e in examples)
        what = f"labels (config.task.label={task_cfg.label!r})"
    elif kind == "qa":
        labelled = any(e.answers for e in examples)
        what = "answers"
    else:
        return
    if not labelled:
        raise ValueError(
            f"config.task.eval_file={task_cfg.eval_file!r} has no {what}; evaluation needs them "
            "(predicting unlabelled files is not supported)"
        )


# stats key -> what a non-zero count means; logged as warnings and kept in data_stats.json
DATA_WARNINGS = {
    "num_truncated": "examples cut to config.task.max_len={max_len}",
    "words_cut": "words cut by truncation (they get no prediction and count as 'O')",
    "tagged_words_cut": "of the cut words had an entity tag (lost to truncation)",
    "words_without_pieces": "words without any word piece (they predict 'O')",
    "answers_mismatched": "answers not found in their context (skipped in training)",
    "questions_truncated": "questions cut to config.task.max_query_length={max_query_length}",
}


def report_data_stats(split: str, stats: Mapping[str, int], task_cfg) -> None:
    """Logs the featurizer's counts, with a warning for each count of lost or cut data."""
    log.info("%s features: %s", split, dict(stats))
    for key, message in DATA_WARNINGS.items():
        if stats.get(key):
            text = message.format(**task_cfg)
            log.warning("%s data: %d %s", split, stats[key], text)


def build_task(
    config: ml_collections.ConfigDict, tokenizer, *, label_names: Sequence[str] | None = None
) -> Task:
    """Reads and featurizes the task of `config.task`.

    Args:
      config: the fine-tuning config.
      tokenizer: the WordPiece tokenizer of the init checkpoint.
      label_names: fixed label names (eval-only: those of the fine-tuned model); otherwise
        `config.task.labels`, or the sorted labels seen in the train and eval files.

    Returns:
      The `Task`; no training features when `config.eval_only`.
    """
    task_cfg = config.task
    kind = task_cfg.kind
    eval_examples = read_split(task_cfg, "eval")
    check_eval_labelled(task_cfg, eval_examples)
    train_examples = [] if config.eval_only else read_split(task_cfg, "train")
    label_map = None
    if kind in ("classification", "tagging"):
        names = label_names or list(task_cfg.labels) or None
        label_map = finetune_data.build_label_map(train_examples + eval_examples, names)
    train_features = None
    if not config.eval_only:
        train_features = featurize(task_cfg, train_examples, tokenizer, label_map, training=True)
        report_data_stats("train", train_features.stats, task_cfg)
    eval_features = featurize(task_cfg, eval_examples, tokenizer, label_map, training=False)
    report_data_stats("eval", eval_features.stats, task_cfg)
    return Task(kind, list(label_map or []), train_features, eval_features, eval_examples)


# ----------------------------------------------------------------------------- model


def make_model(kind: str, cfg: BertConfig, num_labels: int) -> nn.Module:
    """The fine-tuning model of a task kind."""
    if kind in ("classification", "regression"):
        return BertForSequenceClassification(cfg, num_labels)
    if kind == "tagging":
        return BertForTokenClassification(cfg, num_labels)
    if kind == "qa":
        return BertForQuestionAnswering(cfg)
    raise ValueError(
        f"config.task.kind={kind!r} is invalid: allowed values are {task_metrics.TASK_KINDS}"
    )


def check_init_config(config: ml_collections.ConfigDict, init_cfg: BertConfig, path) -> None:
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


def model_config(config: ml_collections.ConfigDict, init_cfg: BertConfig) -> BertConfig:
    """The checkpoint's architecture with this run's numerics (`RUNTIME_FIELDS`)."""
    return dataclasses.replace(init_cfg, **{k: config.model[k] for k in RUNTIME_FIELDS})


def load_encoder(config: ml_collections.ConfigDict) -> tuple[BertConfig, Any, Any, pathlib.Path]:
    """Loads the encoder of `config.init_from` and checks it against `config.model`.

    Returns:
      (model config, unboxed `bert` parameters, tokenizer, the model directory).
    """
    if not config.init_from:
        raise ValueError("config.init_from is empty: set it to a bertjax or transformers model")
    path = resolve_path(config.init_from)
    kind = checkpoint._detect_format(path)
    if kind == "bertjax":
        init_cfg = bert_config(json.loads((path / "config.json").read_text())["model"])
    else:
        init_cfg = convert.config_from_hf(convert.read_hf_config(path))
    check_init_config(config, init_cfg, path)  # before any weights are read
    tokenizer = checkpoint.load_model_tokenizer(path)
    check_vocab(tokenizer, init_cfg, path)
    cfg = model_config(config, init_cfg)
    _, params = checkpoint.load_pretrained(path, with_heads=False, scan_layers=cfg.scan_layers)
    return cfg, params["bert"], tokenizer, path


def check_vocab(tokenizer, cfg: BertConfig, path) -> None:
    """Raises when the checkpoint's vocabulary has ids beyond its word embedding's rows."""
    n = tokenizer.get_vocab_size()
    if n > cfg.vocab_size:
        raise ValueError(
            f"config.init_from={str(path)!r}: its vocabulary has {n} tokens but its word "
            f"embedding only {cfg.vocab_size} rows (vocab_size); the vocabulary does not belong "
            "to these weights"
        )


def _tokenizer_options(model_dir: pathlib.Path) -> dict[str, Any] | None:
    if checkpoint._detect_format(model_dir) == "hf":
        return convert.hf_tokenizer_options(model_dir)
    path = model_dir / checkpoint.TOKENIZER_CONFIG_NAME
    return json.loads(path.read_text()) if path.is_file() else None


# ----------------------------------------------------------------------------- steps


def task_losses(
    params: Any, model: nn.Module, kind: str, batch: Batch, dropout_rng: Array | None
) -> dict[str, Array]:
    """Forward pass and summed losses of one batch.

    Args:
      batch: `input_ids`, `token_type_ids`, `attention_mask` [B, L] and the labels: `labels`
        [B] (int classes or float scores) or [B, L] (tags, -100 ignored), or `start_positions`
        and `end_positions` [B] (QA).
      dropout_rng: None for a deterministic pass.

    Returns:
      Sums `loss` (cross-entropy, squared error, or mean of start and end cross-entropy),
      `correct` (top-1 hits; 0 for regression and QA) and `count` (examples, or labelled tokens).
    """
    out = model.apply(
        {"params": params},
        *(batch[k] for k in INPUT_FIELDS),
        deterministic=dropout_rng is None,
        rngs=None if dropout_rng is None else {"dropout": dropout_rng},
    )
    if kind == "qa":
        nll = sum(
            train.nll_and_hits(out[f"{end}_logits"], batch[f"{end}_positions"])[0]
            for end in ("start", "end")
        )
        count = jnp.asarray(nll.shape[0], jnp.float32)
        return {"loss": jnp.sum(nll) / 2, "correct": jnp.zeros(()), "count": count}
    logits, labels = out["logits"], batch["labels"]
    if kind == "regression":
        error = jnp.square(logits[:, 0] - labels)
        count = jnp.asarray(labels.shape[0], jnp.float32)
        return {"loss": jnp.sum(error), "correct": jnp.zeros(()), "count": count}
    weights = (labels != finetune_data.IGNORE_INDEX).astype(jnp.float32)  # [B] or [B, L]
    safe = jnp.where(weights > 0, labels, 0)
    nll, hit = train.nll_and_hits(logits, safe)
    return {
        "loss": jnp.sum(nll * weights),
        "correct": jnp.sum(hit * weights),
        "count": jnp.sum(weights),
    }


def train_step(
    state: train.TrainState,
    batch: Batch,
    *,
    model: nn.Module,
    kind: str,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
) -> tuple[train.TrainState, dict[str, Array]]:
    """One optimizer step on the mean loss of the batch (dropout folded from the step)."""
    dropout_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def loss_fn(params):
        sums = task_losses(params, model, kind, batch, dropout_rng)
        return sums["loss"] / jnp.maximum(sums["count"], 1.0), sums

    grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**sums, "grad_norm": optax.tree.norm(grads), "learning_rate": schedule(state.step)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def predict_step(params: Any, batch: Batch, *, model: nn.Module) -> dict[str, Array]:
    """Deterministic logits of a batch of inputs."""
    return model.apply({"params": params}, *(batch[k] for k in INPUT_FIELDS), deterministic=True)


def init_state(rng: Array, bert_params: Any, *, model, tx, example) -> train.TrainState:
    """A fresh train state (fresh head) whose encoder parameters are `bert_params`."""
    state = nn.meta.unbox(train.init_train_state(rng, model, tx, example))
    fresh = state.params["bert"]
    bert = jax.tree.map(lambda x, ref: jnp.asarray(x, ref.dtype), bert_params, fresh)
    # Adam's moments start at zero whatever the parameters, so the optimizer state stays valid.
    return state.replace(params={**state.params, "bert": bert})


@dataclasses.dataclass(frozen=True)
class FinetuneSteps:
    """The jitted steps and the shardings they were compiled for."""

    train_step: Callable[[train.TrainState, Batch], tuple[train.TrainState, dict[str, Array]]]
    predict: Callable[[Any, Batch], dict[str, Array]]
    init_state: Callable[[Array, Any], train.TrainState]
    abstract_state: Any
    state_shardings: Any
    mesh: Mesh


def compile_steps(
    model: nn.Module,
    kind: str,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    example: Mapping[str, np.ndarray],
    mesh: Mesh,
    rules,
) -> FinetuneSteps:
    """Jits init, train and predict with explicit shardings from `jax.eval_shape` of the init.

    Args:
      example: one global training batch (numpy), for the batch shardings and the init shapes.
    """
    inputs = {k: example[k] for k in INPUT_FIELDS}
    abstract = jax.eval_shape(
        functools.partial(train.init_train_state, model=model, tx=tx, example=inputs),
        jax.random.key(0),
    )
    shardings = sharding.mesh_shardings(abstract, mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_shardings = {k: sharding.batch_sharding(mesh, np.ndim(v)) for k, v in example.items()}
    step = functools.partial(train_step, model=model, kind=kind, tx=tx, schedule=schedule)
    init = functools.partial(init_state, model=model, tx=tx, example=inputs)
    predict = functools.partial(predict_step, model=model)
    jit_init = jax.jit(init, in_shardings=(None, shardings.params["bert"]), out_shardings=shardings)
    jit_predict = jax.jit(
        predict,
        in_shardings=(shardings.params, {k: batch_shardings[k] for k in INPUT_FIELDS}),
        out_shardings=replicated,
    )

    return FinetuneSteps(
        train_step=sharding.jit_train_step(step, shardings, batch_shardings, mesh, rules),
        predict=sharding.in_mesh(jit_predict, mesh, rules),
        init_state=sharding.in_mesh(jit_init, mesh, rules),
        abstract_state=nn.meta.unbox(abstract),
        state_shardings=shardings,
        mesh=mesh,
    )


# ----------------------------------------------------------------------------- the job


@dataclasses.dataclass
class Job:
    """Everything the loop and the evaluation need, built once by `setup`."""

    config: ml_collections.ConfigDict
    workdir: pathlib.Path
    model_config: BertConfig
    model_dir: pathlib.Path  # where the tokenizer and vocabulary come from
    task: Task
    steps: FinetuneSteps
    state: train.TrainState
    num_steps: int
    batch_size: int
    train_iter: Any
    manager: Any
    writer: MetricWriter


def num_train_steps(config: ml_collections.ConfigDict, num_features: int) -> int:
    """`config.train.num_steps`, or `num_epochs` passes over the training features."""
    if config.train.num_steps > 0:
        return config.train.num_steps
    per_epoch = num_features // config.train.batch_size
    if per_epoch == 0:
        raise ValueError(
            f"{num_features} training features are fewer than "
            f"config.train.batch_size={config.train.batch_size}"
        )
    return max(1, math.ceil(config.train.num_epochs * per_epoch))


def _optimizer(config: ml_collections.ConfigDict, num_steps: int):
    optim = dict(config.optim.to_dict())
    optim["warmup_steps"] = int(round(optim.pop("warmup_fraction") * num_steps))
    return make_optimizer(optim, num_steps)


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
    cfg, params = checkpoint.load_model_dir(root / MODEL_DIR)
    check_init_config(config, cfg, root)
    return cfg, params, saved["label_names"], root / MODEL_DIR


def setup(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> Job:
    """Loads the init checkpoint (checked first), builds the task, compiles, inits or restores."""
    distributed.initialize(config.distributed)  # before anything touches a device
    workdir = pathlib.Path(workdir)
    mesh, rules = sharding.make_mesh(config.mesh), sharding.logical_rules(config.mesh)
    batch_size = config.train.batch_size
    check_batch_size(batch_size, mesh)
    if config.eval_only:
        cfg, params, label_names, model_dir = _load_finetuned(config)
        tokenizer = checkpoint.load_model_tokenizer(model_dir)
        check_vocab(tokenizer, cfg, model_dir)
    else:
        cfg, params, tokenizer, model_dir = load_encoder(config)
        label_names = None
    task = build_task(config, tokenizer, label_names=label_names)
    workdir.mkdir(parents=True, exist_ok=True)
    write_data_stats(workdir, task)
    features = task.eval if config.eval_only else task.train
    num_steps = 1 if config.eval_only else num_train_steps(config, len(features))
    tx, schedule = _optimizer(config, num_steps)
    example = {k: np.repeat(v[:1], batch_size, 0) for k, v in features.arrays.items()}
    model = make_model(task.kind, cfg, task.num_labels)
    steps = compile_steps(model, task.kind, tx, schedule, example, mesh, rules)
    train_iter, manager = None, None
    if config.eval_only:
        state = train.TrainState(
            step=jnp.zeros((), jnp.int32),
            params=sharding.host_to_global(params, steps.state_shardings.params),
            opt_state=None,
            rng=jnp.zeros((2,), jnp.uint32),
        )
    else:
        train_iter = input_pipeline.make_iterator(
            ArraySource(task.train.arrays),
            global_batch_size=batch_size,
            seed=config.train.seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        manager = checkpoint.train_checkpoint_manager(workdir / "checkpoints", config.checkpoint)
        state = _init_or_restore(config, steps, manager, train_iter, params)
    writer = MetricWriter(workdir)
    writer.truncate_after(int(state.step))
    return Job(
        config=config,
        workdir=workdir,
        model_config=cfg,
        model_dir=model_dir,
        task=task,
        steps=steps,
        state=state,
        num_steps=num_steps,
        batch_size=batch_size,
        train_iter=train_iter,
        manager=manager,
        writer=writer,
    )


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Raises unless the global batch splits evenly over the batch axes and the processes."""
    shards = math.prod(mesh.shape[axis] for axis in sharding.BATCH_AXES)
    parts = math.lcm(shards, jax.process_count())
    if batch_size <= 0 or batch_size % parts:
        raise ValueError(
            f"config.train.batch_size={batch_size} (the global batch) must be a positive multiple "
            f"of {parts}: it is split over {shards} devices (config.mesh data x fsdp) and "
            f"{jax.process_count()} processes"
        )


def write_data_stats(workdir: pathlib.Path, task: Task) -> None:
    """`data_stats.json`: the featurizers' counts (truncations, cut tags, skipped answers)."""
    if jax.process_index() != 0:
        return
    stats = {"eval": task.eval.stats}
    if task.train is not None:
        stats["train"] = task.train.stats
    stats = {split: {k: int(v) for k, v in counts.items()} for split, counts in stats.items()}
    text = json.dumps(stats, indent=2) + "\n"
    (workdir / "data_stats.json").write_text(text)


def _init_or_restore(config, steps: FinetuneSteps, manager, train_iter, bert_params):
    restored = checkpoint.restore_train_state(manager, steps.state_shardings, steps.abstract_state)
    if restored is None:
        bert = sharding.host_to_global(bert_params, steps.state_shardings.params["bert"])
        return steps.init_state(jax.random.key(config.train.seed), bert)
    state, position = restored
    input_pipeline.seek(train_iter, position["examples_consumed"] // config.train.batch_size)
    return state


def train_loop(job: Job) -> None:
    """Trains from the current step to `job.num_steps`, logging and checkpointing."""
    config = job.config
    step = int(job.state.step)
    log_every, save_every = config.train.log_every, config.checkpoint.every_steps
    eval_every = config.train.eval_every
    bar = tqdm(total=job.num_steps, initial=step, disable=jax.process_index() != 0, desc="finetune")
    window = []
    while step < job.num_steps:
        batch = sharding.global_batch(next(job.train_iter), job.steps.mesh)
        job.state, metrics = job.steps.train_step(job.state, batch)
        step += 1
        window.append(metrics)
        if step % log_every == 0 or step == job.num_steps:
            sums = jax.device_get(jax.tree.map(lambda *xs: sum(xs), *window))
            count = max(float(sums["count"]), 1.0)
            record = {
                "train_loss": float(sums["loss"]) / count,
                "learning_rate": float(window[-1]["learning_rate"]),
                "grad_norm": float(sums["grad_norm"]) / len(window),
            }
            if job.task.kind in ("classification", "tagging"):
                record["train_accuracy"] = float(sums["correct"]) / count
            job.writer.write(step, record)
            bar.set_postfix(loss=f"{record['train_loss']:.4f}")
            bar.update(len(window))
            window = []
        if eval_every and step % eval_every == 0 and step < job.num_steps:
            job.writer.write(step, {f"eval_{k}": v for k, v in evaluate(job).items()})
        if step % save_every == 0 or step == job.num_steps:
            checkpoint.save_train_state(job.manager, step, job.state, job.batch_size)
    bar.close()
    job.manager.wait_until_finished()


# ----------------------------------------------------------------------------- evaluation


def predict(job: Job, features: finetune_data.Features) -> dict[str, np.ndarray]:
    """Logits of every feature, in order: {name: float32 [N, ...]}."""
    n = len(features)
    batch = job.batch_size
    padded = math.ceil(n / batch) * batch
    index = np.minimum(np.arange(padded), n - 1)  # repeat the last row to fill the last batch
    local = batch // jax.process_count()
    outputs = []
    for start in range(0, padded, batch):
        rows = index[
            start + jax.process_index() * local : start + (jax.process_index() + 1) * local
        ]
        local_batch = {k: features.arrays[k][rows] for k in INPUT_FIELDS}
        out = job.steps.predict(
            job.state.params, sharding.global_batch(local_batch, job.steps.mesh)
        )
        outputs.append(jax.device_get(out))
    return {k: np.concatenate([o[k] for o in outputs])[:n] for k in outputs[0]}


def predictions_and_references(task: Task, logits: Mapping[str, np.ndarray], config):
    """(predictions, references) in the form `task_metrics.compute_metrics` takes."""
    features = task.eval
    if task.kind == "qa":
        predictions = finetune_data.postprocess_qa(
            task.eval_examples,
            features,
            logits["start_logits"],
            logits["end_logits"],
            n_best=config.task.n_best,
            max_answer_length=config.task.max_answer_length,
        )
        return predictions, task.eval_examples
    if task.kind == "regression":
        return logits["logits"][:, 0], features.arrays["labels"]
    ids = np.argmax(logits["logits"], axis=-1)
    if task.kind == "classification":
        return ids, features.arrays["labels"]
    tags, _ = finetune_data.predictions_to_tags(ids, features, task.label_names)
    return tags, [list(s.tags) for s in task.eval_examples]


def write_predictions(path_dir: pathlib.Path, task: Task, predictions, references) -> pathlib.Path:
    """`predictions.json` (QA: id -> answer) or `predictions.tsv` (one row per eval example)."""
    if task.kind == "qa":
        path = path_dir / "predictions.json"
        path.write_text(json.dumps(predictions, indent=2, ensure_ascii=False) + "\n")
        return path
    names = task.label_names
    if task.kind == "tagging":
        header = "index\ttokens\tprediction\tlabel"
        rows = [
            f"{i}\t{' '.join(e.tokens)}\t{' '.join(p)}\t{' '.join(r)}"
            for i, (e, p, r) in enumerate(
                zip(task.eval_examples, predictions, references, strict=True)
            )
        ]
    elif task.kind == "classification":
        header = "index\tprediction\tlabel"
        rows = [
            f"{i}\t{names[p]}\t{names[r]}"
            for i, (p, r) in enumerate(zip(predictions, references, strict=True))
        ]
    else:
        header = "index\tprediction\tlabel"
        rows = [
            f"{i}\t{p:.6f}\t{r:.6f}"
            for i, (p, r) in enumerate(zip(predictions, references, strict=True))
        ]
    path = path_dir / "predictions.tsv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def evaluate(job: Job, *, write: bool = False) -> dict[str, float]:
    """Task metrics on the eval split; with `write`, also `eval_metrics.json` and predictions."""
    logits = predict(job, job.task.eval)
    predictions, references = predictions_and_references(job.task, logits, job.config)
    num_labels = job.task.num_labels if job.task.kind == "classification" else None
    metrics = task_metrics.compute_metrics(
        job.task.kind, references=references, predictions=predictions, num_labels=num_labels
    )
    if write and jax.process_index() == 0:
        write_predictions(job.workdir, job.task, predictions, references)
        text = json.dumps(metrics, indent=2) + "\n"
        (job.workdir / "eval_metrics.json").write_text(text)
    return metrics


def save_finetuned(job: Job) -> None:
    """Writes `workdir/model` (a bertjax model directory with the head) and `finetune.json`."""
    params = multihost_utils.process_allgather(job.state.params, tiled=True)  # all processes
    if jax.process_index() != 0:
        return
    vocab = job.model_dir / checkpoint.VOCAB_NAME
    options = _tokenizer_options(job.model_dir)
    checkpoint.save_model(
        job.workdir / MODEL_DIR, params, job.model_config, vocab, options, overwrite=True
    )
    document = {"kind": job.task.kind, "label_names": job.task.label_names}
    (job.workdir / TASK_FILE).write_text(json.dumps(document, indent=2) + "\n")


def finetune(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, float]:
    """The whole job: set up (or resume), train, save, evaluate. Returns the eval metrics."""
    job = setup(config, workdir)
    if not config.eval_only:
        train_loop(job)
        save_finetuned(job)
        job.manager.close()
    metrics = evaluate(job, write=True)
    job.writer.write(int(job.state.step), {f"eval_{k}": v for k, v in metrics.items()})
    job.writer.close()
    return metrics


# ----------------------------------------------------------------------------- export


# task kind -> (transformers architecture, head parameter name, shared by both libraries)
HF_HEADS = {
    "classification": ("BertForSequenceClassification", "classifier"),
    "regression": ("BertForSequenceClassification", "classifier"),
    "tagging": ("BertForTokenClassification", "classifier"),
    "qa": ("BertForQuestionAnswering", "qa_outputs"),
}


def _hf_task_config(cfg: BertConfig, kind: str, label_names: Sequence[str]) -> dict[str, Any]:
    hf = convert.config_to_hf(cfg)
    hf["architectures"] = [HF_HEADS[kind][0]]
    if kind == "regression":
        hf.update(id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0}, problem_type="regression")
    elif kind in ("classification", "tagging"):
        hf["id2label"] = {str(i): name for i, name in enumerate(label_names)}
        hf["label2id"] = {name: i for i, name in enumerate(label_names)}
        if kind == "classification":
            hf["problem_type"] = "single_label_classification"
    return hf


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

    The result (`config.json` with the label names, `model.safetensors`, `vocab.txt`,
    `tokenizer_config.json`) loads with `transformers.BertForSequenceClassification`,
    `BertForTokenClassification` or `BertForQuestionAnswering` `.from_pretrained`. `out_dir` is
    written atomically; a non-empty one is refused unless `overwrite`.
    """
    workdir = pathlib.Path(workdir)
    saved = json.loads((workdir / TASK_FILE).read_text())
    cfg, params = checkpoint.load_model_dir(workdir / MODEL_DIR)
    params = jax.device_get(params)
    with checkpoint._atomic_dir(out_dir, overwrite=overwrite) as tmp:
        _write_hf_task_model(tmp, workdir, saved, cfg, params)
    return pathlib.Path(out_dir)


def _write_hf_task_model(out_dir: pathlib.Path, workdir, saved, cfg: BertConfig, params) -> None:
    from safetensors.numpy import save_file

    # The converter maps BertForPreTraining trees: give it placeholder pretraining heads, then
    # keep the encoder and pooler entries and add the task head.
    ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    abstract = jax.eval_shape(BertForPreTraining(cfg).init, jax.random.key(0), ids, ids, ids)
    heads = {
        name: jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), nn.meta.unbox(tree))
        for name, tree in abstract["params"].items()
        if name in checkpoint.HEADS
    }
    vocab = workdir / MODEL_DIR / checkpoint.VOCAB_NAME
    options = _tokenizer_options(workdir / MODEL_DIR)
    convert.write_hf_files(out_dir, {"bert": params["bert"], **heads}, cfg, vocab, options)
    state = convert.params_to_hf({"bert": params["bert"], **heads}, cfg)
    state = {k: v for k, v in state.items() if not k.startswith("cls.")}
    head = HF_HEADS[saved["kind"]][1]
    state[f"{head}.weight"] = np.ascontiguousarray(np.asarray(params[head]["kernel"]).T)
    state[f"{head}.bias"] = np.asarray(params[head]["bias"])
    save_file(state, out_dir / convert.SAFETENSORS_NAME, metadata={"format": "pt"})
    hf = _hf_task_config(cfg, saved["kind"], saved["label_names"])
    (out_dir / convert.CONFIG_NAME).write_text(json.dumps(hf, indent=2) + "\n")
