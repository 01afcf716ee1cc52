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
(`bertjax.interop.vocab_extension`). Loading that model is `bertjax.interop.init_from`; finding or
making the data is `bertjax.data.run_data`.
"""

from __future__ import annotations

import json
import logging
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bertjax import files, objectives, sharding, spec
from bertjax.data import run_data
from bertjax.data.corpus import BUILTIN_CORPUS
from bertjax.data.run_data import open_sources
from bertjax.data.run_data import prepare_data as find_or_prepare
from bertjax.data.shard_check import check_shards
from bertjax.data.tokenizer import load_tokenizer, read_options, read_vocab, special_token_ids
from bertjax.interop import init_from, model_dir
from bertjax.models import model_config
from bertjax.training import loop, trainer

log = logging.getLogger(__name__)

__all__ = ["BUILTIN_CORPUS", "evaluate", "prepare_data", "pretrain", "setup"]


def prepare_data(
    config: ml_collections.ConfigDict, workdir: pathlib.Path, vocab: pathlib.Path | None = None
) -> tuple[pathlib.Path, pathlib.Path]:
    """The vocabulary and prepared instances of the run (`bertjax.data.run_data.prepare_data`),
    refused with more than one process unless prepared already. Returns (data_dir, vocab)."""
    return find_or_prepare(config, workdir, vocab, process_count=jax.process_count())


def setup(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> trainer.Trainer:
    """Builds data, model, objective and the trainer (with the initial or restored state), with
    the workdir claimed for this run (`training.workdir`)."""
    return trainer.start(config, workdir, _setup)


def _setup(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> trainer.Trainer:
    trainer.check_config(config)  # before any data work
    init = init_from.load_init(config, workdir) if config.init_from else None
    if init is not None:
        cfg = init.config
        run_data.check_config(config, cfg)
        data_dir, vocab = prepare_data(config, workdir, init.vocab)
        options = init.options
    else:
        _, cfg = model_config(config.model)
        run_data.check_config(config, cfg)  # before the vocabulary and the instances are made
        data_dir, vocab = prepare_data(config, workdir)
        computed = {}  # values computed from the data: into the frozen model config only
        if not config.data.vocab:  # a vocabulary trained here may be smaller than asked for
            computed["vocab_size"] = len(read_vocab(vocab))
        if "eos_token_id" in config.model:  # decoders: the tokenizer's <|endoftext|>
            computed["eos_token_id"] = special_token_ids(load_tokenizer(vocab), str(vocab))["eos"]
        _, cfg = model_config({**config.model.to_dict(), **computed})
        options = {**read_options(vocab.parent), "lowercase": config.data.lowercase}
    run_data.check_vocab_size(cfg, len(read_vocab(vocab)))
    train_source, eval_source = open_sources(config, data_dir, vocab)
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
        loaded=None if init is None else init_from.loaded_heads(init, objective),
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
    metrics = job.objective.summarize(jax.device_get(totals))
    host = getattr(job.objective, "host_metrics", None)  # e.g. BLEU of decoded translations
    return metrics | (host(job.model, params, job.eval_source) if host else {})


def pretrain(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, float]:
    """The whole job: set up (or resume), train, evaluate, save the final model to workdir/model.
    The trainer is closed on every exit path (`Trainer.close`)."""
    with setup(config, workdir) as job:
        if int(job.state.step) >= job.num_steps:
            log.info("already trained to step %d; evaluating only", int(job.state.step))
            last = {f"eval_{k}": v for k, v in evaluate(job).items()}
        else:
            last = loop.train(job, desc="pretrain")
        params = job.gathered_params()  # all processes take part
        if jax.process_index() == 0:
            vocab = model_dir.vocab_file(job.workdir)
            options = model_dir.tokenizer_options(job.workdir)
            model_dir.save_model(
                job.workdir / "model",
                params,
                job.model_config,
                vocab,
                options or None,
                overwrite=True,
            )
            files.atomic_write_text(job.workdir / "final_metrics.json", json.dumps(last, indent=2))
    return last
