"""Checkpoint conversion between Hugging Face `transformers` GPT-2 (`GPT2LMHeadModel`) and the
bertjax GPT family.

HF state dicts are numpy arrays keyed like `transformer.h.0.attn.c_attn.weight`. GPT-2 uses
`Conv1D`, whose weights are already [in, out] like Flax kernels; `c_attn` holds query, key and
value side by side ([hidden, 3 * hidden]), which bertjax keeps as three [hidden, heads,
head_dim] kernels. The LM head is tied to `transformer.wte` in both, so it has no parameters of
its own. The readers of HF files are shared with `hf_bert`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np

from bertjax.data.tokenizer import tokenizer_files
from bertjax.interop.hf_files import (  # noqa: F401  (read_hf_*: this converter's readers)
    CONFIG_NAME,
    SAFETENSORS_NAME,
    np_dtype,
    read_hf_config,
    read_hf_weights,
)
from bertjax.models.gpt import GptConfig
from bertjax.models.layers import stack_layer_params, unstack_layer_params

Params = dict[str, Any]

MODEL_TYPES = ("gpt2",)  # transformers model_type values this converter reads
PRETRAINING_HEADS = ("lm",)
STACK_PATHS = (("backbone", "decoder"),)  # where GptBackbone's LayerStack keeps its blocks
_ACTS_FROM_HF = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
_ACTS_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu"}
# HF GPT2Config field -> GptConfig field
_CONFIG_FIELDS = {
    "vocab_size": "vocab_size",
    "n_embd": "hidden_size",
    "n_layer": "num_layers",
    "n_head": "num_heads",
    "n_positions": "max_position_embeddings",
    "resid_pdrop": "hidden_dropout",
    "attn_pdrop": "attention_dropout",
    "layer_norm_epsilon": "layer_norm_eps",
    "initializer_range": "initializer_range",
    "eos_token_id": "eos_token_id",
}
_IGNORED = (".attn.bias", ".attn.masked_bias", "lm_head.weight")  # buffers; the tied head


def config_from_hf(hf_config: Mapping[str, Any], **overrides: Any) -> GptConfig:
    """The `GptConfig` of a transformers GPT-2 `config.json` dict (plus field overrides)."""
    if hf_config.get("model_type", "gpt2") not in MODEL_TYPES:
        raise ValueError(f"model_type={hf_config.get('model_type')!r} is not GPT-2")
    act = hf_config.get("activation_function", "gelu_new")
    if act not in _ACTS_FROM_HF:
        raise ValueError(f"activation_function={act!r} is not supported: {sorted(_ACTS_FROM_HF)}")
    if not hf_config.get("tie_word_embeddings", True):
        raise ValueError("GPT-2 checkpoints with an untied LM head are not supported")
    values = {
        ours: hf_config[theirs]
        for theirs, ours in _CONFIG_FIELDS.items()
        if hf_config.get(theirs) is not None
    }
    hidden = values.get("hidden_size", 768)
    values["intermediate_size"] = hf_config.get("n_inner") or 4 * hidden
    values["hidden_act"] = _ACTS_FROM_HF[act]
    return GptConfig(**{**values, **overrides})


def config_to_hf(config: GptConfig) -> dict[str, Any]:
    """The transformers `config.json` of a `GptConfig` (a `GPT2LMHeadModel`)."""
    hf = {theirs: getattr(config, ours) for theirs, ours in _CONFIG_FIELDS.items()}
    hf.update(
        model_type="gpt2",
        architectures=["GPT2LMHeadModel"],
        n_inner=config.intermediate_size,
        n_ctx=config.max_position_embeddings,
        embd_pdrop=config.hidden_dropout,
        activation_function=_ACTS_TO_HF[config.hidden_act],
        bos_token_id=config.eos_token_id,
        tie_word_embeddings=True,
    )
    return hf


def _layer_to_hf(layer: Params, config: GptConfig, prefix: str) -> dict[str, np.ndarray]:
    h = config.hidden_size
    att, mlp = layer["attention"], layer["mlp"]
    qkv = [att[n]["kernel"].reshape(h, h) for n in ("query", "key", "value")]
    qkv_bias = [att[n]["bias"].reshape(h) for n in ("query", "key", "value")]
    return {
        f"{prefix}.ln_1.weight": layer["ln_1"]["scale"],
        f"{prefix}.ln_1.bias": layer["ln_1"]["bias"],
        f"{prefix}.attn.c_attn.weight": np.concatenate(qkv, axis=1),
        f"{prefix}.attn.c_attn.bias": np.concatenate(qkv_bias),
        f"{prefix}.attn.c_proj.weight": att["out"]["kernel"].reshape(h, h),
        f"{prefix}.attn.c_proj.bias": att["out"]["bias"],
        f"{prefix}.ln_2.weight": layer["ln_2"]["scale"],
        f"{prefix}.ln_2.bias": layer["ln_2"]["bias"],
        f"{prefix}.mlp.c_fc.weight": mlp["wi"]["kernel"],
        f"{prefix}.mlp.c_fc.bias": mlp["wi"]["bias"],
        f"{prefix}.mlp.c_proj.weight": mlp["wo"]["kernel"],
        f"{prefix}.mlp.c_proj.bias": mlp["wo"]["bias"],
    }


def _layer_from_hf(state: Mapping[str, np.ndarray], config: GptConfig, prefix: str) -> Params:
    h, heads = config.hidden_size, (config.num_heads, config.head_dim)
    qkv = np.split(state[f"{prefix}.attn.c_attn.weight"], 3, axis=1)
    qkv_bias = np.split(state[f"{prefix}.attn.c_attn.bias"], 3)
    names = ("query", "key", "value")
    attention = {
        n: {"kernel": k.reshape(h, *heads), "bias": b.reshape(heads)}
        for n, k, b in zip(names, qkv, qkv_bias, strict=True)
    }
    attention["out"] = {
        "kernel": state[f"{prefix}.attn.c_proj.weight"].reshape(*heads, h),
        "bias": state[f"{prefix}.attn.c_proj.bias"],
    }

    def norm(name):
        return {"scale": state[f"{prefix}.{name}.weight"], "bias": state[f"{prefix}.{name}.bias"]}

    def dense(name):
        return {"kernel": state[f"{prefix}.{name}.weight"], "bias": state[f"{prefix}.{name}.bias"]}

    mlp = {"wi": dense("mlp.c_fc"), "wo": dense("mlp.c_proj")}
    return {"ln_1": norm("ln_1"), "attention": attention, "ln_2": norm("ln_2"), "mlp": mlp}


def normalize_hf_keys(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keys of a `GPT2Model` checkpoint (no `transformer.` prefix) get the prefix."""
    return {
        k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}": v
        for k, v in state.items()
    }


def params_from_hf(
    state_dict: Mapping[str, np.ndarray],
    config: GptConfig,
    *,
    with_heads: bool = True,
    init_fn=None,
) -> tuple[Params, list[str]]:
    """bertjax parameters of a GPT-2 state dict: ({"backbone": ...}, []) — the tied LM head has
    no parameters, so nothing is initialised fresh. Unknown keys are errors naming them."""
    state = {k: np.asarray(v, np.float32) for k, v in normalize_hf_keys(state_dict).items()}
    backbone = {
        "wte": {"embedding": state["transformer.wte.weight"]},
        "wpe": state["transformer.wpe.weight"],
        "ln_f": {"scale": state["transformer.ln_f.weight"], "bias": state["transformer.ln_f.bias"]},
        "decoder": {
            f"layer_{i}": _layer_from_hf(state, config, f"transformer.h.{i}")
            for i in range(config.num_layers)
        },
    }
    params = {"backbone": backbone}
    known = set(params_to_hf(params, dataclasses.replace(config, scan_layers=False)))
    unknown = sorted(k for k in state if k not in known and not k.endswith(_IGNORED))
    if unknown:
        raise ValueError(f"GPT-2 checkpoint has weights bertjax does not know: {unknown[:5]}")
    params = _tree_map(lambda x: x.astype(np_dtype(config.param_dtype)), params)
    if config.scan_layers:
        params = stack_layer_params(params, STACK_PATHS, config.num_layers)
    return params, []


def params_to_hf(params: Params, config: GptConfig) -> dict[str, np.ndarray]:
    """The `GPT2LMHeadModel` state dict (float32 numpy, without the tied `lm_head.weight`)."""
    params = _tree_map(lambda x: np.asarray(x, np.float32), params)
    if config.scan_layers:
        params = unstack_layer_params(params, STACK_PATHS, config.num_layers)
    backbone = params["backbone"]
    state = {
        "transformer.wte.weight": backbone["wte"]["embedding"],
        "transformer.wpe.weight": backbone["wpe"],
        "transformer.ln_f.weight": backbone["ln_f"]["scale"],
        "transformer.ln_f.bias": backbone["ln_f"]["bias"],
    }
    for i in range(config.num_layers):
        state.update(_layer_to_hf(backbone["decoder"][f"layer_{i}"], config, f"transformer.h.{i}"))
    return {k: np.ascontiguousarray(v) for k, v in state.items()}


def write_hf_files(
    out_dir: str | pathlib.Path,
    params: Params,
    config: GptConfig,
    vocab_file: str | pathlib.Path,
    tokenizer_options: Mapping[str, Any] | None = None,
) -> None:
    """Writes `config.json`, `model.safetensors`, `vocab.json` and `merges.txt` into `out_dir`
    (which must exist): a directory `GPT2LMHeadModel` and `GPT2TokenizerFast` load."""
    from safetensors.numpy import save_file

    out_dir = pathlib.Path(out_dir)
    save_file(params_to_hf(params, config), out_dir / SAFETENSORS_NAME, metadata={"format": "pt"})
    text = json.dumps(config_to_hf(config), indent=2) + "\n"
    (out_dir / CONFIG_NAME).write_text(text, encoding="utf-8")
    for path in tokenizer_files(vocab_file):
        shutil.copyfile(path, out_dir / path.name)


def hf_tokenizer_options(hf_dir: str | pathlib.Path) -> dict[str, Any]:
    """Byte-level BPE has no options: {}."""
    return {}


def _tree_map(fn, tree):
    if isinstance(tree, Mapping):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    return fn(tree)
