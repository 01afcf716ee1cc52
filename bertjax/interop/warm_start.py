"""A pretrained BERT as the encoder of a Transformer encoder-decoder with a fresh decoder (the
BERT2RND warm start of Rothe et al., 2020, "Leveraging pre-trained checkpoints for sequence
generation tasks").

A run sets `config.model.family="marian"`, `config.model.encoder="bert"`, the decoder's sizes
(`decoder_layers`, `decoder_intermediate_size`, ...) and `config.init_from` a BERT (a bertjax
model directory, pretraining workdir or transformers BERT directory). `load_init` takes the
encoder's architecture (vocabulary, width, depth, heads, positions, activation) from the BERT, its
parameters into `backbone/bert`, and its WordPiece tokenizer for both languages; the shared
decoder embedding, the decoder and the LM head start fresh. `init_from.load_init` calls `load` for
such a run, so the job itself is the ordinary `bertjax pretrain`.

`config.encoder_init="random"` builds the same model (the BERT's architecture and vocabulary, the
same fresh decoder for the same seed) with a random encoder: the from-scratch baseline.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import shutil

import jax
import ml_collections

from bertjax.config import resolve_path
from bertjax.data.tokenizer import load_tokenizer, special_token_ids, write_tokenizer_files
from bertjax.interop import formats, model_dir
from bertjax.models import model_config
from bertjax.models.bert import BertConfig

log = logging.getLogger(__name__)

# MarianConfig fields that come from the BERT (its encoder's architecture)
BERT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "hidden_act",
    "layer_norm_eps",
    "pad_token_id",
)


ENCODER_INITS = ("pretrained", "random")  # config.encoder_init: the BERT's weights, or fresh ones


def applies(config: ml_collections.ConfigDict) -> bool:
    """Whether `config` is a warm start: a marian model with a BERT encoder."""
    return config.model.get("family") == "marian" and config.model.get("encoder") == "bert"


def warm_config(config: ml_collections.ConfigDict, bert: BertConfig):
    """The `MarianConfig` of `config.model` with the encoder's architecture of `bert`."""
    if not isinstance(bert, BertConfig):
        raise ValueError(
            f"config.init_from={config.init_from!r} is a {type(bert).__name__} model; "
            "config.model.encoder='bert' starts from a BERT"
        )
    values = {**config.model.to_dict(), **{k: getattr(bert, k) for k in BERT_FIELDS}}
    return model_config(values)[1]


def warm_params(cfg, bert_params: dict, *, seed: int = 0) -> dict:
    """Fresh parameters of the marian model `cfg` (no heads) with `backbone/bert` replaced by the
    BERT backbone `bert_params` (host arrays, in the layout of `cfg.scan_layers`)."""
    fresh = model_dir.init_params(cfg, heads=(), seed=seed)["backbone"]
    expected = jax.tree.structure(fresh["bert"])
    if jax.tree.structure(bert_params) != expected:
        raise ValueError("the BERT's parameters do not fit config.model.encoder='bert'")
    return {"backbone": {**fresh, "bert": bert_params}}


def load(config: ml_collections.ConfigDict, workdir: pathlib.Path):
    """A warm start's (BERT directory, marian config, parameters (BERT encoder loaded, decoder
    fresh), vocabulary, tokenizer options), the BERT's tokenizer copied to `workdir/tokenizer/`
    (the fields of `init_from.InitModel`)."""
    if config.data.vocab or config.data.extra_vocab:
        raise ValueError(
            "config.model.encoder='bert' uses the BERT's vocabulary (config.init_from); leave "
            "config.data.vocab and config.data.extra_vocab empty"
        )
    encoder_init = config.get("encoder_init", "pretrained")
    if encoder_init not in ENCODER_INITS:
        raise ValueError(f"config.encoder_init={encoder_init!r}; expected one of {ENCODER_INITS}")
    path = resolve_path(config.init_from)
    stored, params = formats.load_params(path, with_heads=False)
    cfg = warm_config(config, stored)
    seed = config.train.get("seed", 0)
    if encoder_init == "random":  # the same model from scratch
        params = {"backbone": model_dir.init_params(cfg, heads=(), seed=seed)["backbone"]}
    else:
        scan = bool(config.model.get("scan_layers", False))  # this run's layout
        _, params = model_dir.relayout(stored, jax.device_get(params), scan)
        bert = model_dir.encoder_params(dataclasses.replace(stored, scan_layers=scan), params["backbone"])  # fmt: skip
        params = warm_params(cfg, bert, seed=seed)
    out = workdir / "tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    vocab = out / model_dir.VOCAB_NAME
    shutil.copyfile(model_dir.vocab_file(path), vocab)
    options = model_dir.tokenizer_options(path)
    write_tokenizer_files(out, vocab, options, model_max_length=cfg.max_position_embeddings)
    eos = special_token_ids(load_tokenizer(vocab), str(vocab))["eos"]  # [SEP]
    cfg = dataclasses.replace(cfg, eos_token_id=eos)
    log.info("warm start from %s: %s", path, backbone_description(config))
    return path, cfg, params, vocab, options


def backbone_description(config: ml_collections.ConfigDict) -> str:
    """What a warm start's backbone holds, as the run's log says it."""
    if config.get("encoder_init", "pretrained") == "random":
        return "encoder and decoder start fresh in the BERT's shape and vocabulary (encoder_init='random')"
    return "the BERT's encoder loaded, the decoder fresh"
