"""The pretraining job: corpus -> vocab -> instances -> sharded MLM+NSP training with resume.

`pretrain(config, workdir)` is what `bertjax pretrain` runs. Rerunning it on the same workdir
resumes from the latest complete checkpoint, including the data position.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from bertjax import checkpoint, distributed, flops, input_pipeline, masking, sharding, train
from bertjax.config import BertConfig, bert_config
from bertjax.metric_writers import MetricWriter
from bertjax.model import BertForPreTraining
from bertjax.optimizer import make_optimizer
from bertjax.pretraining_data import PackedSource, PretrainingSource, load_metadata, prepare
from bertjax.tokenizer import load_tokenizer, read_vocab, special_token_ids, train_wordpiece

log = logging.getLogger(__name__)

BUILTIN_CORPUS = "builtin:python-docs"  # Python's reference documentation (pydoc_data)


def write_builtin_corpus(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Writes the Python reference documentation that ships with CPython, one topic per file."""
    from pydoc_data.topics import topics

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in sorted(topics.items()):
        path = out_dir / f"{name}.txt"
        path.write_text(text)
        paths.append(path)
    return paths


def _corpus_files(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> list[str]:
    spec = config.data.corpus
    if not spec:
        raise ValueError(
            "no training data: set config.data.corpus (text files or globs, comma-separated, or "
            f"{BUILTIN_CORPUS!r}) or config.data.dir (a folder made by `bertjax prepare`)"
        )
    if spec == BUILTIN_CORPUS:
        return [str(p) for p in write_builtin_corpus(workdir / "corpus")]
    return [part.strip() for part in spec.split(",") if part.strip()]


def prepare_data(
    config: ml_collections.ConfigDict, workdir: pathlib.Path
) -> tuple[pathlib.Path, pathlib.Path]:
    """Finds or makes the vocabulary and the prepared instances. Returns (data_dir, vocab)."""
    data_dir = pathlib.Path(config.data.dir) if config.data.dir else workdir / "data"
    if (data_dir / "metadata.json").exists():
        vocab = pathlib.Path(config.data.vocab or load_metadata(data_dir)["vocab_file"])
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
    files = _corpus_files(config, workdir)
    if config.data.vocab:
        vocab = pathlib.Path(config.data.vocab)
    else:
        vocab = train_wordpiece(
            files,
            workdir / "tokenizer",
            vocab_size=config.model.vocab_size,
            lowercase=config.data.lowercase,
        )
    prepare(
        files,
        vocab,
        data_dir,
        max_seq_len=config.data.max_seq_len,
        short_seq_prob=config.data.short_seq_prob,
        eval_fraction=config.data.eval_fraction,
        seed=config.train.seed,
        documents_per_file=config.data.corpus == BUILTIN_CORPUS,
        lowercase=config.data.lowercase,
    )
    return data_dir, vocab


def check_config(config: ml_collections.ConfigDict, cfg: BertConfig, vocab_size: int) -> None:
    """Cross-field checks that need the data: raise naming the fields."""
    if vocab_size != cfg.vocab_size:
        raise ValueError(
            f"the vocabulary has {vocab_size} tokens but config.model.vocab_size={cfg.vocab_size}"
        )
    if config.data.max_seq_len > cfg.max_position_embeddings:
        raise ValueError(
            f"config.data.max_seq_len={config.data.max_seq_len} exceeds "
            f"config.model.max_position_embeddings={cfg.max_position_embeddings}"
        )
    if config.data.pack_sequences and cfg.attention_impl == "cudnn":
        raise ValueError(
            "config.data.pack_sequences=True needs block-diagonal attention, which "
            "config.model.attention_impl='cudnn' (key lengths only) does not do; use 'xla'"
        )
    if config.data.pack_sequences and config.data.max_pack_size < 1:
        raise ValueError(f"config.data.max_pack_size={config.data.max_pack_size} must be >= 1")
    accum, batch = config.train.grad_accum_steps, config.train.global_batch_size
    if accum < 1 or batch % accum:
        raise ValueError(
            f"config.train.global_batch_size={batch} must be divisible by "
            f"config.train.grad_accum_steps={accum}"
        )


def make_mask_fn(config: ml_collections.ConfigDict, vocab_path: pathlib.Path):
    """The on-device masking function with the vocabulary's ids bound."""
    tokens = read_vocab(vocab_path)
    ids = special_token_ids(load_tokenizer(vocab_path), str(vocab_path))
    candidates = jnp.asarray(masking.random_candidates(tokens))
    return functools.partial(
        masking.mask_batch,
        candidate_ids=candidates,
        mask_id=ids["mask"],
        cls_id=ids["cls"],
        sep_id=ids["sep"],
        pad_id=ids["pad"],
        max_predictions=config.data.max_predictions,
        mask_rate=config.data.mask_rate,
        whole_word_masking=config.data.whole_word_masking,
    )


@dataclasses.dataclass
class Job:
    """Everything the training loop needs, built once by `setup`."""

    config: ml_collections.ConfigDict
    workdir: pathlib.Path
    model_config: BertConfig
    vocab: pathlib.Path
    steps: train.CompiledSteps
    state: train.TrainState
    train_source: PretrainingSource | PackedSource
    train_iter: Any
    eval_source: PretrainingSource | PackedSource
    manager: Any
    writer: MetricWriter
    flops_per_step: float


def _data_iterator(source, config, *, seed, shuffle=True, num_epochs=None, global_batch=None):
    return input_pipeline.make_iterator(
        source,
        global_batch_size=global_batch or config.train.global_batch_size,
        seed=seed,
        shuffle=shuffle,
        num_epochs=num_epochs,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        worker_count=config.data.worker_count,
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


def setup(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> Job:
    """Builds data, mesh, model, jitted steps, and the initial or restored state."""
    distributed.initialize(config.distributed)  # before anything touches a device
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = bert_config(config.model)
    mesh = sharding.make_mesh(config.mesh)
    rules = sharding.logical_rules(config.mesh)
    data_dir, vocab = prepare_data(config, workdir)
    if not config.data.vocab:  # a vocabulary trained here may be smaller than asked for
        config.model.vocab_size = len(read_vocab(vocab))
        cfg = bert_config(config.model)
    check_config(config, cfg, len(read_vocab(vocab)))
    train_source = PretrainingSource(data_dir, "train", vocab_path=vocab)
    eval_source = PretrainingSource(data_dir, "eval", vocab_path=vocab)
    if train_source.max_seq_len != config.data.max_seq_len:
        raise ValueError(
            f"config.data.max_seq_len={config.data.max_seq_len} but {data_dir} was prepared at "
            f"length {train_source.max_seq_len}"
        )
    if config.data.pack_sequences:
        train_source, eval_source = (
            _packed(source, config.data.max_pack_size) for source in (train_source, eval_source)
        )
    if jax.process_index() == 0:
        checkpoint.write_model_files(workdir, cfg, vocab)
    tx, schedule = make_optimizer(config.optim, config.train.num_steps)
    example = {k: np.asarray(v)[None] for k, v in train_source[0].items()}
    example = {k: np.repeat(v, config.train.global_batch_size, 0) for k, v in example.items()}
    steps = train.compile_steps(
        BertForPreTraining(cfg),
        tx,
        schedule,
        make_mask_fn(config, vocab),
        example,
        mesh,
        rules,
        grad_accum_steps=config.train.grad_accum_steps,
    )
    train_iter = _data_iterator(train_source, config, seed=config.train.seed)
    manager = checkpoint.train_checkpoint_manager(workdir / "checkpoints", config.checkpoint)
    restored = checkpoint.restore_train_state(manager, steps.state_shardings, steps.abstract_state)
    if restored is None:
        state = steps.init_state(jax.random.key(config.train.seed))
    else:
        state, position = restored
        input_pipeline.seek(
            train_iter, position["examples_consumed"] // config.train.global_batch_size
        )
    writer = MetricWriter(workdir)
    writer.truncate_after(int(state.step))
    flops_per_step = config.train.global_batch_size * flops.training_flops_per_sequence(
        cfg, config.data.max_seq_len, config.data.max_predictions
    )
    return Job(
        config,
        workdir,
        cfg,
        vocab,
        steps,
        state,
        train_source,
        train_iter,
        eval_source,
        manager,
        writer,
        flops_per_step,
    )


def evaluate(job: Job, params) -> dict[str, float]:
    """MLM loss/accuracy and NSP accuracy on the held-out split, with fixed masks."""
    config = job.config
    batch_size = min(config.train.global_batch_size, len(job.eval_source))
    batch_size -= batch_size % jax.device_count()
    if batch_size == 0:
        raise ValueError(
            f"the eval split has {len(job.eval_source)} instances, fewer than the "
            f"{jax.device_count()} devices; raise config.data.eval_fraction"
        )
    iterator = _data_iterator(
        job.eval_source, config, seed=0, shuffle=False, num_epochs=1, global_batch=batch_size
    )
    eval_rng = jax.random.key(config.train.seed + 1)
    totals = None
    for index, local in zip(range(config.train.eval_batches), iterator, strict=False):
        batch = sharding.global_batch(local, job.steps.mesh)
        sums = job.steps.eval_step(params, batch, jax.random.fold_in(eval_rng, index))
        totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
    summary = train.summarize(jax.device_get(totals))
    return {f"eval_{k}": v for k, v in summary.items()}


def _log_window(job: Job, window: list, steps: int, seconds: float) -> dict[str, float]:
    """Fetches the summed metrics of the last `steps` steps (the one host sync per window)."""
    sums = jax.device_get(
        functools.reduce(lambda a, b: jax.tree_util.tree_map(jnp.add, a, b), window)
    )
    out = train.summarize(sums)
    out["learning_rate"] = float(window[-1]["learning_rate"])
    out["grad_norm"] = float(sums["grad_norm"]) / steps
    out["seq_per_sec"] = steps * job.config.train.global_batch_size / seconds
    out["tflops_per_device"] = steps * job.flops_per_step / seconds / jax.device_count() / 1e12
    peak = flops.peak_tflops(override=job.config.train.peak_tflops)
    if peak:
        out["mfu"] = out["tflops_per_device"] / peak
    return out


def train_loop(job: Job) -> dict[str, float]:
    """Runs from the current step to `config.train.num_steps`; returns the last metrics."""
    config = job.config
    num_steps, log_every = config.train.num_steps, config.train.log_every
    eval_every, save_every = config.train.eval_every, config.checkpoint.every_steps
    step = int(job.state.step)
    bar = tqdm(
        total=num_steps,
        initial=step,
        disable=jax.process_index() != 0,
        desc="pretrain",
        dynamic_ncols=True,
    )
    window, last, started = [], {}, time.perf_counter()
    batches = _prefetch(job, config.data.prefetch)
    while step < num_steps:
        job.state, metrics = job.steps.train_step(job.state, next(batches))
        step += 1
        window.append(metrics)
        if step % log_every == 0 or step == num_steps:
            last = _log_window(job, window, len(window), time.perf_counter() - started)
            job.writer.write(step, last)
            bar.set_postfix(
                loss=f"{last['loss']:.3f}",
                mlm_acc=f"{last['mlm_accuracy']:.3f}",
                nsp_acc=f"{last['nsp_accuracy']:.3f}",
                seq_s=f"{last['seq_per_sec']:.0f}",
            )
            bar.update(len(window))
            window, started = [], time.perf_counter()
        if (eval_every and step % eval_every == 0) or step == num_steps:
            eval_metrics = evaluate(job, job.state.params)
            job.writer.write(step, eval_metrics)
            last.update(eval_metrics)
            started = time.perf_counter()
        if step % save_every == 0 or step == num_steps:
            checkpoint.save_train_state(
                job.manager, step, job.state, config.train.global_batch_size
            )
    bar.close()
    job.manager.wait_until_finished()
    return last


def _prefetch(job: Job, size: int) -> Iterator[dict[str, jax.Array]]:
    """Global device batches, `size` ahead of the step (so host work overlaps device work)."""
    queue = []
    while True:
        while len(queue) <= size:
            queue.append(sharding.global_batch(next(job.train_iter), job.steps.mesh))
        yield queue.pop(0)


def pretrain(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, float]:
    """The whole job: set up (or resume), train, evaluate, save the final model to workdir/model."""
    job = setup(config, workdir)
    if int(job.state.step) >= config.train.num_steps:
        log.info("already trained to step %d; evaluating only", int(job.state.step))
        last = evaluate(job, job.state.params)
    else:
        last = train_loop(job)
    params = multihost_utils.process_allgather(job.state.params, tiled=True)  # all processes
    if jax.process_index() == 0:
        checkpoint.save_model(
            job.workdir / "model",
            params,
            job.model_config,
            job.vocab,
            overwrite=True,
        )
        (job.workdir / "final_metrics.json").write_text(json.dumps(last, indent=2))
    job.writer.close()
    job.manager.close()
    return last
