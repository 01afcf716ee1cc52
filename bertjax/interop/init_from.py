"""The model a run starts from: `config.init_from` (a model directory of any registered format,
`bertjax.interop.formats`) checked against `config.model`, or `config.model` from scratch.

Fine-tuning loads the backbone (`load_encoder`), a fine-tuned workdir for evaluation
(`load_finetuned`) or builds a fresh model (`scratch_encoder`); continued pretraining loads the
backbone and the heads it has (`load_init`, `loaded_heads`), with `config.data.extra_vocab`
appended to its vocabulary (`bertjax.interop.vocab_extension`). The stored architecture is kept;
this run's numerics (`RUNTIME_FIELDS`) are applied to it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import shutil
from typing import Any

import jax
import ml_collections

from bertjax.config import resolve_path
from bertjax.data.shards import file_sha256
from bertjax.data.tokenizer import (
    load_tokenizer,
    read_options,
    read_vocab,
    resolve_options,
    tokenizer_files,
    tokenizer_kind,
    write_tokenizer_files,
)
from bertjax.interop import finetuned_dir, formats, model_dir, vocab_extension, warm_start
from bertjax.models import model_config

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
    if formats.detect_format(path) == "hf":
        init_cfg = model_dir.load_hf_config(path)
    else:
        init_cfg = model_dir.read_model_config(path)
    check_init_config(config, init_cfg, path)  # before any weights are read
    tokenizer = model_dir.load_model_tokenizer(path)
    check_vocab(tokenizer, init_cfg, path)
    cfg = runtime_config(config, init_cfg)
    check_max_len(config, cfg)
    stored, params = formats.load_params(path, with_heads=False)
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


def load_finetuned(config: ml_collections.ConfigDict):
    """(model config, full params, label names, model dir) of a fine-tuned workdir (eval_only)."""
    root = resolve_path(config.init_from)
    task_file = root / finetuned_dir.TASK_FILE
    if not task_file.is_file():
        raise FileNotFoundError(
            f"config.eval_only needs config.init_from to be a fine-tuned workdir; {root} has no "
            f"{finetuned_dir.TASK_FILE}"
        )
    saved = json.loads(task_file.read_text())
    if saved["kind"] != config.task.kind:
        raise ValueError(
            f"{root} was fine-tuned for kind {saved['kind']!r} but config.task.kind="
            f"{config.task.kind!r}"
        )
    cfg, params = finetuned_dir.load_finetuned_params(root)
    check_init_config(config, cfg, root)
    scan = getattr(runtime_config(config, cfg), "scan_layers", False)  # recurrent: no stack
    cfg, params = model_dir.relayout(cfg, params, scan)
    cfg = runtime_config(config, cfg)
    check_max_len(config, cfg)
    return cfg, params, saved["label_names"], root / finetuned_dir.MODEL_DIR


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
      backbone: how its backbone was made, for the log line.
    """

    path: pathlib.Path
    config: Any
    params: dict
    vocab: pathlib.Path
    options: dict
    new_tokens: list
    backbone: str = "backbone loaded"


def load_init(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> InitModel:
    """Loads `config.init_from` and writes its (maybe extended) vocabulary and tokenizer files
    to `workdir/tokenizer/`."""
    if warm_start.applies(config):  # a BERT as the encoder of a fresh encoder-decoder
        path, cfg, params, vocab, options = warm_start.load(config, workdir)
        made = warm_start.backbone_description(config)
        return InitModel(path, cfg, params, vocab, options, new_tokens=[], backbone=made)
    if config.data.vocab:
        raise ValueError(
            f"config.init_from={config.init_from!r} brings its own vocabulary; leave "
            f"config.data.vocab={config.data.vocab!r} empty"
        )
    path = resolve_path(config.init_from)
    stored, params, _ = formats.load_partial(path)
    cfg = runtime_config(config, stored)
    stored, params = model_dir.relayout(stored, params, cfg.scan_layers)
    options = model_dir.tokenizer_options(path)
    if tokenizer_kind(model_dir.vocab_file(path)) != "wordpiece":  # BPE, SentencePiece (Marian)
        return InitModel(path, cfg, params, _copy_tokenizer(config, path, workdir), options, [])
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


def _copy_tokenizer(config, path: pathlib.Path, workdir: pathlib.Path) -> pathlib.Path:
    """The tokenizer files of a byte-level BPE or SentencePiece model directory, copied as they
    are to `workdir/tokenizer/`; returns the vocabulary file there."""
    source = model_dir.vocab_file(path)
    if config.data.extra_vocab:
        raise ValueError(
            f"config.data.extra_vocab extends WordPiece vocabularies; config.init_from={str(path)!r} "
            f"has {source.name}"
        )
    out = workdir / "tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    for file in tokenizer_files(source):
        shutil.copyfile(file, out / file.name)
    return out / source.name


def loaded_heads(init: InitModel, objective) -> dict:
    """The backbone and the heads of `init` that `objective` uses; logs which start fresh."""
    names = [name for name, _ in objective.heads]
    present = init.params.get("heads", {})
    loaded = {n: present[n] for n in names if n in present}
    fresh = [n for n in names if n not in present]
    (log.warning if fresh else log.info)(
        "continuing from %s: %s; heads %s loaded, %s start fresh",
        init.path,
        init.backbone,
        sorted(loaded) or "none",
        fresh or "none",
    )
    return {"backbone": init.params["backbone"], "heads": loaded}
