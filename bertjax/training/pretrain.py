"""The pretraining job: corpus -> vocab -> instances -> the trainer with the config's objective.

The family (`config.model.family`), objective (`config.objective`), tokenizer
(`config.data.tokenizer`) and instance builder (`config.data.instances`) are config choices:
BERT is wordpiece + nsp_pairs + mlm_nsp, GPT byte_bpe + lm_blocks + causal_lm.

`pretrain(config, workdir)` is what `bertjax pretrain` runs. Rerunning it on the same workdir
resumes from the latest complete checkpoint, including the data position.

With `config.init_from` (a bertjax model directory, a pretraining workdir or a transformers BERT
directory) pretraining continues from that model: its architecture, vocabulary and tokenizer
options (no vocabulary is trained), its backbone and the heads it has (the others start fresh;
the log says which). `config.data.extra_vocab` appends new tokens to its vocabulary
(`bertjax.interop.vocab_extension`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bertjax import files, objectives, spec
from bertjax.config import resolve_path
from bertjax.data import instances as instance_builders
from bertjax.data import tokenizer_kinds
from bertjax.data.corpus import BUILTIN_CORPUS, resolve_corpus
from bertjax.data.packing import PackedSource
from bertjax.data.prepare import prepare
from bertjax.data.shard_check import check_shards
from bertjax.data.shards import file_sha256, load_metadata
from bertjax.data.source import PretrainingSource
from bertjax.data.tokenizer import (
    load_tokenizer,
    read_options,
    read_vocab,
    resolve_options,
    special_token_ids,
    write_tokenizer_files,
)
from bertjax.interop import model_dir, vocab_extension
from bertjax.models import model_config
from bertjax.training import sharding, trainer
from bertjax.training.finetune import runtime_config

log = logging.getLogger(__name__)

__all__ = ["BUILTIN_CORPUS", "evaluate", "prepare_data", "pretrain", "setup"]


@dataclasses.dataclass
class InitModel:
    """The model pretraining continues from (`config.init_from`).

    Attributes:
      path: its directory.
      config: its architecture with this run's numerics (and an extended vocab_size).
      params: its backbone and heads (host arrays; scan layout of `config`).
      vocab: the vocabulary to prepare data with (workdir/tokenizer/vocab.txt).
      options: its tokenizer options.
      new_tokens: the tokens `config.data.extra_vocab` appended.
    """

    path: pathlib.Path
    config: Any
    params: dict
    vocab: pathlib.Path
    options: dict
    new_tokens: list


def load_init(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> InitModel:
    """Loads `config.init_from` and writes its (maybe extended) vocabulary and tokenizer files
    to `workdir/tokenizer/`."""
    if config.data.vocab:
        raise ValueError(
            f"config.init_from={config.init_from!r} brings its own vocabulary; leave "
            f"config.data.vocab={config.data.vocab!r} empty"
        )
    path = resolve_path(config.init_from)
    stored, params, _ = model_dir.load_partial(path)
    cfg = runtime_config(config, stored)
    stored, params = model_dir.relayout(stored, params, cfg.scan_layers)
    options = model_dir.tokenizer_options(path)
    vocab_tokens = read_vocab(path / model_dir.VOCAB_NAME)
    model_dir.check_vocab(path / model_dir.VOCAB_NAME, stored, f"{path}/config.json")
    out = workdir / "tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    vocab = out / model_dir.VOCAB_NAME
    new_tokens: list[str] = []
    if config.data.extra_vocab:
        old = load_tokenizer(path / model_dir.VOCAB_NAME, **resolve_options(options))
        new_tokens = vocab_extension.read_extra_tokens(
            resolve_path(config.data.extra_vocab), vocab_tokens, old
        )
        params, _ = vocab_extension.extend_params(jax.device_get(params), old, new_tokens)
        vocab.write_text("".join(t + "\n" for t in [*vocab_tokens, *new_tokens]), "utf-8")
        cfg = dataclasses.replace(cfg, vocab_size=len(vocab_tokens) + len(new_tokens))
        log.info("extended the vocabulary of %s by %d tokens", path, len(new_tokens))
    elif not vocab.is_file() or file_sha256(vocab) != file_sha256(path / model_dir.VOCAB_NAME):
        shutil.copyfile(path / model_dir.VOCAB_NAME, vocab)
    write_tokenizer_files(
        out, vocab, options, model_max_length=getattr(cfg, "max_position_embeddings", 512)
    )
    return InitModel(path, cfg, params, vocab, options, new_tokens)


def loaded_heads(init: InitModel, objective) -> dict:
    """The backbone and the heads of `init` that `objective` uses; logs which start fresh."""
    names = [name for name, _ in objective.heads]
    present = init.params.get("heads", {})
    loaded = {n: present[n] for n in names if n in present}
    fresh = [n for n in names if n not in present]
    (log.warning if fresh else log.info)(
        "continuing from %s: backbone loaded; heads %s loaded, %s start fresh",
        init.path,
        sorted(loaded) or "none",
        fresh or "none",
    )
    return {"backbone": init.params["backbone"], "heads": loaded}


def prepare_data(
    config: ml_collections.ConfigDict,
    workdir: pathlib.Path,
    vocab: pathlib.Path | None = None,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Finds or makes the vocabulary and the prepared instances. Returns (data_dir, vocab).

    `vocab`: a given vocabulary (continued pretraining) with its tokenizer options saved beside
    it; the data must have been prepared with it.
    """
    data_dir = resolve_path(config.data.dir) if config.data.dir else workdir / "data"
    if (data_dir / "metadata.json").exists():
        metadata = load_metadata(data_dir)
        if vocab is not None:
            if metadata.get("vocab_sha256") != file_sha256(vocab):
                raise ValueError(
                    f"{data_dir} was prepared with the vocabulary {metadata['vocab_file']}, not "
                    f"that of config.init_from={config.init_from!r} ({vocab}); prepare the "
                    "corpus again (set config.data.corpus and leave config.data.dir empty)"
                )
            return data_dir, vocab
        vocab = resolve_path(config.data.vocab or metadata["vocab_file"])
        return data_dir, vocab
    if jax.process_count() > 1:  # one preparation, readable by every process
        raise ValueError(
            f"config.data.dir={config.data.dir!r} holds no prepared data: with "
            f"{jax.process_count()} processes, prepare it once (`bertjax prepare`, or a "
            "one-process run) and set config.data.dir to a folder every process can read"
        )
    if config.data.dir:
        raise FileNotFoundError(
            f"config.data.dir={config.data.dir!r} has no metadata.json; run `bertjax prepare`"
        )
    _clear_interrupted(data_dir)
    files = resolve_corpus(config.data.corpus, workdir)
    lowercase = None if vocab is not None else config.data.lowercase  # None: vocab's options
    if vocab is None and config.data.vocab:
        vocab = resolve_path(config.data.vocab)
    elif vocab is None:
        vocab = train_tokenizer(config, files, workdir / "tokenizer")
    prepare(
        files,
        vocab,
        data_dir,
        max_seq_len=config.data.max_seq_len,
        short_seq_prob=config.data.short_seq_prob,
        eval_fraction=config.data.eval_fraction,
        seed=config.train.seed,
        documents_per_file=config.data.corpus == BUILTIN_CORPUS,
        lowercase=lowercase,
        instances=config.data.instances,
        entities=config.data.get("entities", ""),
        nsp=config.get("objective", "mlm_nsp") != "mlm",  # MLM only: single sentences kept
    )
    return data_dir, vocab


def _clear_interrupted(data_dir: pathlib.Path) -> None:
    """Removes the workdir's `data/` left by an interrupted preparation (SIGKILL, Ctrl-C, a full
    disk): `metadata.json` is written last, so a folder without it is incomplete; the same
    command redoes it."""
    if data_dir.is_dir() and any(data_dir.iterdir()):
        log.warning(
            "%s holds an interrupted preparation (no metadata.json, which is written last); "
            "preparing the data again",
            data_dir,
        )
        shutil.rmtree(data_dir)


def train_tokenizer(config: ml_collections.ConfigDict, files, out_dir: pathlib.Path):
    """Trains the `config.data.tokenizer` kind on the corpus; returns its vocabulary file."""
    return tokenizer_kinds.get(config.data.tokenizer).train(files, out_dir, config)


def check_config(config: ml_collections.ConfigDict, cfg) -> None:
    """The pretraining checks that need no data (with `trainer.check_config`, before any data
    work): raise naming the fields."""
    trainer.check_config(config)
    tokenizer_kinds.get(config.data.tokenizer)  # raises naming the field
    instance_builders.get(config.data.instances)
    limit = getattr(cfg, "max_position_embeddings", None)  # None: any length (recurrent)
    if limit is not None and config.data.max_seq_len > limit:
        raise ValueError(
            f"config.data.max_seq_len={config.data.max_seq_len} exceeds "
            f"config.model.max_position_embeddings={cfg.max_position_embeddings}"
        )
    if config.data.pack_sequences and getattr(cfg, "attention_impl", "xla") == "cudnn":
        raise ValueError(
            "config.data.pack_sequences=True needs block-diagonal attention, which "
            "config.model.attention_impl='cudnn' (key lengths only) does not do; use 'xla'"
        )
    if config.data.pack_sequences and not instance_builders.get(config.data.instances).PACKABLE:
        raise ValueError(
            "config.data.pack_sequences=True packs sentence pairs; "
            f"config.data.instances={config.data.instances!r} blocks are full already"
        )
    entities, entity_masking = config.data.get("entities", ""), config.data.get("entity_masking")
    if entities and getattr(cfg, "entity_vocab_size", 0) < 2:
        raise ValueError(
            f"config.data.entities={entities!r} feeds entity_ids to the model: set "
            "config.model.entity_vocab_size=2 (the BERT family's entity embedding)"
        )
    if entity_masking and not (entities and config.data.whole_word_masking):
        raise ValueError(
            "config.data.entity_masking=True masks each entity as one word: it needs "
            "config.data.entities and config.data.whole_word_masking=True"
        )
    if config.data.pack_sequences and config.data.max_pack_size < 1:
        raise ValueError(f"config.data.max_pack_size={config.data.max_pack_size} must be >= 1")


def check_vocab_size(cfg, vocab_size: int) -> None:
    """Raises unless the vocabulary fills `config.model.vocab_size` exactly."""
    if vocab_size != cfg.vocab_size:
        raise ValueError(
            f"the vocabulary has {vocab_size} tokens but config.model.vocab_size={cfg.vocab_size}"
        )


def _packed(source: PretrainingSource, max_pack_size: int) -> PackedSource:
    packed = PackedSource(source, max_pack_size)
    share = packed.real_tokens / (source.max_seq_len * len(source))
    log.info(
        "packing %s: %d instances into %d rows; real tokens %.1f%% of positions -> %.1f%%",
        source.split,
        len(source),
        len(packed),
        100 * share,
        100 * packed.real_tokens / (source.max_seq_len * len(packed)),
    )
    return packed


def _sources(config, data_dir: pathlib.Path, vocab: pathlib.Path):
    options = dict(
        vocab_path=vocab,
        document_attention=config.data.document_attention,
        entity_masking=bool(config.data.get("entity_masking")),
    )
    train_source = PretrainingSource(data_dir, "train", **options)
    eval_source = PretrainingSource(data_dir, "eval", **options)
    if train_source.entities != config.data.get("entities", ""):
        raise ValueError(
            f"config.data.entities={config.data.get('entities', '')!r} but {data_dir} was "
            f"prepared with entities={train_source.entities!r}; prepare the corpus again"
        )
    if train_source.instances != config.data.instances:
        raise ValueError(
            f"config.data.instances={config.data.instances!r} but {data_dir} holds "
            f"{train_source.instances!r} instances"
        )
    if train_source.max_seq_len != config.data.max_seq_len:
        raise ValueError(
            f"config.data.max_seq_len={config.data.max_seq_len} but {data_dir} was prepared at "
            f"length {train_source.max_seq_len}"
        )
    if config.data.pack_sequences:
        return tuple(_packed(s, config.data.max_pack_size) for s in (train_source, eval_source))
    return train_source, eval_source


def setup(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> trainer.Trainer:
    """Builds data, model, objective and the trainer (with the initial or restored state), with
    the workdir claimed for this run (`training.workdir`)."""
    return trainer.start(config, workdir, _setup)


def _setup(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> trainer.Trainer:
    init = load_init(config, workdir) if config.init_from else None
    if init is not None:
        cfg = init.config
        check_config(config, cfg)
        data_dir, vocab = prepare_data(config, workdir, init.vocab)
        options = init.options
    else:
        _, cfg = model_config(config.model)
        check_config(config, cfg)  # before the vocabulary and the instances are made
        data_dir, vocab = prepare_data(config, workdir)
        computed = {}  # values computed from the data: into the frozen model config only
        if not config.data.vocab:  # a vocabulary trained here may be smaller than asked for
            computed["vocab_size"] = len(read_vocab(vocab))
        if "eos_token_id" in config.model:  # decoders: the tokenizer's <|endoftext|>
            computed["eos_token_id"] = special_token_ids(load_tokenizer(vocab), str(vocab))["eos"]
        _, cfg = model_config({**config.model.to_dict(), **computed})
        options = {**read_options(vocab.parent), "lowercase": config.data.lowercase}
    check_vocab_size(cfg, len(read_vocab(vocab)))
    train_source, eval_source = _sources(config, data_dir, vocab)
    for source in (train_source, eval_source):
        check_shards(getattr(source, "source", source), cfg.vocab_size)
    if len(train_source) == 0:
        raise ValueError(
            f"{data_dir} holds no training instances: the corpus config.data.corpus="
            f"{config.data.corpus!r} is empty or too short (no document of two sentences)"
        )
    eval_batch_size(config, len(eval_source))  # the final evaluation must not fail after training
    spec.record(config, cfg, workdir, write=jax.process_index() == 0)
    if jax.process_index() == 0:
        model_dir.write_model_files(workdir, cfg, vocab, options)
    example = {k: np.asarray(v)[None] for k, v in train_source[0].items()}
    example = {k: np.repeat(v, config.train.global_batch_size, 0) for k, v in example.items()}
    objective = objectives.make_objective(config, vocab)
    return trainer.build(
        config,
        workdir,
        model_config=cfg,
        objective=objective,
        example=example,
        evaluate=evaluate,
        train_source=train_source,
        eval_source=eval_source,
        num_steps=trainer.num_train_steps(config, len(train_source)),
        loaded=None if init is None else loaded_heads(init, objective),
    )


def eval_batch_size(config: ml_collections.ConfigDict, num_instances: int) -> int:
    """The held-out batch: the training batch or the whole eval split, in whole device rows.

    Raises:
      ValueError: the eval split has fewer instances than there are devices.
    """
    batch_size = min(config.train.global_batch_size, num_instances)
    batch_size -= batch_size % jax.device_count()
    if batch_size == 0:
        raise ValueError(
            f"the eval split has {num_instances} instances, fewer than the "
            f"{jax.device_count()} devices; raise config.data.eval_fraction"
        )
    return batch_size


def evaluate(job: trainer.Trainer, params=None) -> dict[str, float]:
    """The objective's held-out metrics (MLM loss/accuracy and NSP accuracy, or next-token loss,
    accuracy and perplexity) with fixed corruption per eval batch, over
    `config.train.eval_batches` batches."""
    config = job.config
    params = job.state.params if params is None else params
    batch_size = eval_batch_size(config, len(job.eval_source))
    iterator = trainer.make_iterator(
        job.eval_source, config, seed=0, shuffle=False, num_epochs=1, global_batch=batch_size
    )
    eval_rng = jax.random.key(config.train.seed + 1)
    totals = None
    for index, local in zip(range(config.train.eval_batches), iterator, strict=False):
        batch = sharding.global_batch(local, job.steps.mesh)
        sums = job.steps.eval_step(params, batch, jax.random.fold_in(eval_rng, index))
        totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
    return job.objective.summarize(jax.device_get(totals))


def pretrain(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, float]:
    """The whole job: set up (or resume), train, evaluate, save the final model to workdir/model."""
    job = setup(config, workdir)
    if int(job.state.step) >= job.num_steps:
        log.info("already trained to step %d; evaluating only", int(job.state.step))
        last = {f"eval_{k}": v for k, v in evaluate(job).items()}
    else:
        last = trainer.train(job, desc="pretrain")
    params = job.gathered_params()  # all processes take part
    if jax.process_index() == 0:
        vocab = model_dir.vocab_file(job.workdir)
        options = model_dir.tokenizer_options(job.workdir)
        model_dir.save_model(
            job.workdir / "model", params, job.model_config, vocab, options or None, overwrite=True
        )
        files.atomic_write_text(job.workdir / "final_metrics.json", json.dumps(last, indent=2))
    job.close()
    return last
