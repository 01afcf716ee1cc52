"""Checkpoint conversion between Hugging Face `transformers` `MarianMTModel` and the bertjax
Marian family.

HF state dicts are numpy arrays keyed like `model.encoder.layers.0.self_attn.q_proj.weight`.
torch `Linear` weights are [out, in]; bertjax attention kernels are [hidden, heads, head_dim]
(query, key, value) and [heads, head_dim, hidden] (output). The word embedding
`model.shared.weight` is the encoder's, the decoder's and the LM head's (their keys, when a
checkpoint holds them, are the same tensor); the sinusoidal position tables are computed, not
stored. Marian's tokenizer files (`source.spm`, `target.spm`, `vocab.json`,
`tokenizer_config.json`) are copied as they are.

Dropout-only fields (`activation_dropout`, layerdrop) do not change outputs and are not kept.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np

from bertjax.interop.hf_files import (  # noqa: F401  (read_hf_*: this converter's readers)
    CONFIG_NAME,
    SAFETENSORS_NAME,
    np_dtype,
    read_hf_config,
    read_hf_weights,
)
from bertjax.models.layers import stack_layer_params, unstack_layer_params
from bertjax.models.marian import MarianConfig

Params = dict[str, Any]

MODEL_TYPES = ("marian",)  # transformers model_type values this converter reads
PRETRAINING_HEADS = ("lm",)
STACK_PATHS = (("backbone", "encoder"), ("backbone", "decoder"))
# Marian's tokenizer files, as MarianTokenizer reads them (the first two are required)
TOKENIZER_FILES = ("source.spm", "target.spm", "vocab.json", "tokenizer_config.json")
_ACTS_FROM_HF = {"swish": "swish", "silu": "swish", "gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu"}  # fmt: skip
_ACTS_TO_HF = {"swish": "swish", "gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
# HF MarianConfig field -> MarianConfig field
_CONFIG_FIELDS = {
    "vocab_size": "vocab_size",
    "d_model": "hidden_size",
    "encoder_layers": "num_layers",
    "decoder_layers": "decoder_layers",
    "encoder_attention_heads": "num_heads",
    "encoder_ffn_dim": "intermediate_size",
    "decoder_ffn_dim": "decoder_intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "dropout": "hidden_dropout",
    "attention_dropout": "attention_dropout",
    "init_std": "initializer_range",
    "scale_embedding": "scale_embedding",
    "pad_token_id": "pad_token_id",
    "eos_token_id": "eos_token_id",
}
# keys HF saves that bertjax computes or ties: position tables, the tied copies of `shared`
_DERIVED = ("embed_positions.weight", "embed_tokens.weight", "lm_head.weight")


def config_from_hf(hf_config: Mapping[str, Any], **overrides: Any) -> MarianConfig:
    """The `MarianConfig` of a transformers Marian `config.json` dict (plus field overrides);
    raises naming the field for a variant bertjax does not implement."""
    if hf_config.get("model_type") not in MODEL_TYPES:
        raise ValueError(f"config.json has model_type={hf_config.get('model_type')!r}, not marian")
    act = hf_config.get("activation_function", "gelu")
    if act not in _ACTS_FROM_HF:
        raise ValueError(f"config.json activation_function={act!r} is not supported: {sorted(_ACTS_FROM_HF)}")  # fmt: skip
    vocab = hf_config.get("vocab_size", 58101)
    pad = hf_config.get("pad_token_id", 58100)
    unsupported = {
        "share_encoder_decoder_embeddings": (
            hf_config.get("share_encoder_decoder_embeddings", True),
            True,
        ),  # fmt: skip
        "tie_word_embeddings": (hf_config.get("tie_word_embeddings", True), True),
        "decoder_vocab_size": (hf_config.get("decoder_vocab_size") or vocab, vocab),
        "decoder_attention_heads": (
            hf_config.get("decoder_attention_heads", 16),
            hf_config.get("encoder_attention_heads", 16),
        ),
        "decoder_start_token_id": (hf_config.get("decoder_start_token_id", pad), pad),
        "normalize_before": (hf_config.get("normalize_before", False), False),
    }
    for name, (have, want) in unsupported.items():
        if have != want:
            raise ValueError(
                f"config.json {name}={have!r} is not supported: bertjax's Marian needs {want!r} "
                "(one shared, tied vocabulary; equal head counts; post-LayerNorm)"
            )
    values = {ours: hf_config[theirs] for theirs, ours in _CONFIG_FIELDS.items() if theirs in hf_config}  # fmt: skip
    values["hidden_act"] = _ACTS_FROM_HF[act]
    return MarianConfig(**{**values, **overrides})


def check_exportable(config: MarianConfig) -> None:
    """Raises when `MarianMTModel` cannot represent `config` (a BERT encoder)."""
    if config.encoder != "marian":
        raise ValueError(
            f"config.model.encoder={config.encoder!r}: MarianMTModel has no BERT encoder, so this "
            "warm-started model cannot be exported to Hugging Face; keep it as a bertjax model"
        )


def config_to_hf(config: MarianConfig) -> dict[str, Any]:
    """The transformers `config.json` of a `MarianConfig` (a `MarianMTModel`)."""
    check_exportable(config)
    hf = {theirs: getattr(config, ours) for theirs, ours in _CONFIG_FIELDS.items()}
    hf.update(
        pad_token_id=config.pad_id,
        model_type="marian",
        architectures=["MarianMTModel"],
        decoder_attention_heads=config.num_heads,
        activation_function=_ACTS_TO_HF[config.hidden_act],
        decoder_start_token_id=config.pad_id,
        forced_eos_token_id=config.eos_token_id,
        decoder_vocab_size=config.vocab_size,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
        is_encoder_decoder=True,
        activation_dropout=0.0,
    )
    return hf


def _attention_to_hf(att: Params, prefix: str, h: int) -> dict[str, np.ndarray]:
    out = {}
    for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
        out[f"{prefix}.{theirs}.weight"] = att[ours]["kernel"].reshape(h, h).T
        out[f"{prefix}.{theirs}.bias"] = att[ours]["bias"].reshape(h)
    out[f"{prefix}.out_proj.weight"] = att["out"]["kernel"].reshape(h, h).T
    out[f"{prefix}.out_proj.bias"] = att["out"]["bias"]
    return out


def _attention_from_hf(state, prefix: str, config: MarianConfig) -> Params:
    h, heads = config.hidden_size, (config.num_heads, config.head_dim)
    out = {
        ours: {
            "kernel": state[f"{prefix}.{theirs}.weight"].T.reshape(h, *heads),
            "bias": state[f"{prefix}.{theirs}.bias"].reshape(heads),
        }
        for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"))
    }
    out["out"] = {
        "kernel": state[f"{prefix}.out_proj.weight"].T.reshape(*heads, h),
        "bias": state[f"{prefix}.out_proj.bias"],
    }
    return out


# bertjax layer part -> HF layer part (LayerNorms and feed-forward)
_NORMS = {
    "attention_layer_norm": "self_attn_layer_norm",
    "cross_attention_layer_norm": "encoder_attn_layer_norm",
    "mlp_layer_norm": "final_layer_norm",
}
_ATTENTIONS = {"attention": "self_attn", "cross_attention": "encoder_attn"}


def _layer_to_hf(layer: Params, prefix: str, h: int) -> dict[str, np.ndarray]:
    out = {}
    for ours, theirs in _ATTENTIONS.items():
        if ours in layer:
            out.update(_attention_to_hf(layer[ours], f"{prefix}.{theirs}", h))
    for ours, theirs in _NORMS.items():
        if ours in layer:
            out[f"{prefix}.{theirs}.weight"] = layer[ours]["scale"]
            out[f"{prefix}.{theirs}.bias"] = layer[ours]["bias"]
    for ours, theirs in (("wi", "fc1"), ("wo", "fc2")):
        out[f"{prefix}.{theirs}.weight"] = layer["mlp"][ours]["kernel"].T
        out[f"{prefix}.{theirs}.bias"] = layer["mlp"][ours]["bias"]
    return out


def _layer_from_hf(state, prefix: str, config: MarianConfig, decoder: bool) -> Params:
    layer = {
        ours: _attention_from_hf(state, f"{prefix}.{theirs}", config)
        for ours, theirs in _ATTENTIONS.items()
        if decoder or ours == "attention"
    }
    for ours, theirs in _NORMS.items():
        if decoder or ours != "cross_attention_layer_norm":
            layer[ours] = {
                "scale": state[f"{prefix}.{theirs}.weight"],
                "bias": state[f"{prefix}.{theirs}.bias"],
            }
    layer["mlp"] = {
        ours: {
            "kernel": state[f"{prefix}.{theirs}.weight"].T,
            "bias": state[f"{prefix}.{theirs}.bias"],
        }  # fmt: skip
        for ours, theirs in (("wi", "fc1"), ("wo", "fc2"))
    }
    return layer


def params_from_hf(
    state_dict: Mapping[str, np.ndarray],
    config: MarianConfig,
    *,
    with_heads: bool = True,
    init_fn=None,
) -> tuple[Params, list[str]]:
    """bertjax parameters of a `MarianMTModel` state dict: ({"backbone": ..., "heads": {"lm":
    {"final_logits_bias"}}}, []) (nothing starts fresh: a checkpoint without
    `final_logits_bias` has zeros, as transformers loads it). Unknown keys are errors naming
    them."""
    state = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
    state = {k if k.startswith(("model.", "lm_head.", "final_logits")) else f"model.{k}": v for k, v in state.items()}  # fmt: skip
    backbone = {
        "shared": {"embedding": state["model.shared.weight"]},
        "encoder": {
            f"layer_{i}": _layer_from_hf(state, f"model.encoder.layers.{i}", config, False)
            for i in range(config.num_layers)
        },
        "decoder": {
            f"layer_{i}": _layer_from_hf(state, f"model.decoder.layers.{i}", config, True)
            for i in range(config.decoder_layers)
        },
    }
    bias = state.get("final_logits_bias", np.zeros((1, config.vocab_size), np.float32))
    params = {"backbone": backbone, "heads": {"lm": {"final_logits_bias": bias.reshape(-1)}}}
    known = set(params_to_hf(params, dataclasses.replace(config, scan_layers=False)))
    unknown = sorted(k for k in state if k not in known and not k.endswith(_DERIVED))
    if unknown:
        raise ValueError(f"Marian checkpoint has weights bertjax does not know: {unknown[:5]}")
    if not with_heads:
        params.pop("heads")
    params = _tree_map(lambda x: x.astype(np_dtype(config.param_dtype)), params)
    if config.scan_layers:
        params = stack_layer_params(params, STACK_PATHS, config.num_layers)
    return params, []


def params_to_hf(params: Params, config: MarianConfig) -> dict[str, np.ndarray]:
    """The `MarianMTModel` state dict (float32 numpy; `model.shared.weight` stands for its tied
    copies, which transformers restores on loading)."""
    check_exportable(config)
    params = _tree_map(lambda x: np.asarray(x, np.float32), params)
    if config.scan_layers:
        params = unstack_layer_params(params, STACK_PATHS, config.num_layers)
    backbone, h = params["backbone"], config.hidden_size
    state = {"model.shared.weight": backbone["shared"]["embedding"]}
    for part, count in (("encoder", config.num_layers), ("decoder", config.decoder_layers)):
        for i in range(count):
            state.update(_layer_to_hf(backbone[part][f"layer_{i}"], f"model.{part}.layers.{i}", h))
    lm = params.get("heads", {}).get("lm", {})
    bias = lm.get("final_logits_bias", np.zeros(config.vocab_size, np.float32))
    state["final_logits_bias"] = bias.reshape(1, -1)
    return {k: np.ascontiguousarray(v) for k, v in state.items()}


def write_hf_files(
    out_dir: str | pathlib.Path,
    params: Params,
    config: MarianConfig,
    vocab_file: str | pathlib.Path,
    tokenizer_options: Mapping[str, Any] | None = None,
) -> None:
    """Writes `config.json`, `model.safetensors` and Marian's tokenizer files (those beside
    `vocab_file`) into `out_dir` (which must exist): a directory `MarianMTModel` and
    `MarianTokenizer` load."""
    from safetensors.numpy import save_file

    out_dir = pathlib.Path(out_dir)
    save_file(params_to_hf(params, config), out_dir / SAFETENSORS_NAME, metadata={"format": "pt"})
    text = json.dumps(config_to_hf(config), indent=2) + "\n"
    (out_dir / CONFIG_NAME).write_text(text, encoding="utf-8")
    copy_tokenizer_files(pathlib.Path(vocab_file).parent, out_dir)


def copy_tokenizer_files(src_dir: pathlib.Path, out_dir: pathlib.Path) -> None:
    """Copies Marian's tokenizer files present in `src_dir` into `out_dir`, as they are."""
    for name in TOKENIZER_FILES:
        path = pathlib.Path(src_dir) / name
        if path.is_file() and path.resolve() != (out_dir / name).resolve():
            shutil.copyfile(path, out_dir / name)


def hf_tokenizer_options(hf_dir: str | pathlib.Path) -> dict[str, Any]:
    """Marian's SentencePiece tokenizer has no bertjax options: {}."""
    return {}


def _tree_map(fn, tree):
    if isinstance(tree, Mapping):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    return fn(tree)
