"""Checkpoint conversion between Hugging Face `transformers` ELECTRA and bertjax's ELECTRA family.

A transformers ELECTRA comes as two models: the discriminator (`ElectraForPreTraining`) and the
generator (`ElectraForMaskedLM`). bertjax holds both in one model; its Hugging Face form is the
discriminator's directory with the generator's in a `generator/` subfolder:

  out/            ElectraForPreTraining: config.json, model.safetensors, vocab.txt, ...
  out/generator/  ElectraForMaskedLM of the same vocabulary and embedding size

Each loads with `from_pretrained` on its own. Importing reads the pair; a discriminator directory
without `generator/` (e.g. a released `*-discriminator`) imports with a fresh generator. Shared
embeddings (`tie_embeddings`) are written to both models and read back as shared when equal.
Fine-tuned models export as `ElectraFor{SequenceClassification,TokenClassification,
QuestionAnswering}`, the discriminator's encoder and the task head.

The layer layout and the readers and writers are BERT's (`bertjax.interop.hf_bert`).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bertjax.interop import hf_bert, hf_files
from bertjax.interop.hf_bert import (  # noqa: F401  (the converter API, as hf_bert's)
    _Entry,
    _get,
    _linear,
    _norm,
    _to_bertjax,
    _to_hf,
    _unflatten,
    _write_tokenizer_files,
    embedding_entries,
    hf_tokenizer_options,
    layer_entries,
)
from bertjax.interop.hf_files import CONFIG_NAME, SAFETENSORS_NAME
from bertjax.models.electra import ELECTRA, ElectraConfig
from bertjax.models.layers import stack_layer_params, unstack_layer_params

Params = dict[str, Any]

MODEL_TYPES = ("electra",)
GENERATOR_DIR = "generator"  # the generator's subfolder (and the prefix of its state keys)
_G = GENERATOR_DIR + "/"
_FIELDS = {**hf_bert._CONFIG_FIELDS, "embedding_size": "embedding_size"}
_HARMLESS = re.compile(r"(^|\.)(position_ids|token_type_ids)$|generator_lm_head\.weight$")
# task kind -> (transformers architecture, bertjax head, {bertjax sub-dense: HF prefix})
HF_TASK_HEADS = {
    "classification": (
        "ElectraForSequenceClassification",
        "classifier",
        {"dense": "classifier.dense", "out_proj": "classifier.out_proj"},
    ),
    "tagging": ("ElectraForTokenClassification", "tagger", {"dense": "classifier"}),
    "qa": ("ElectraForQuestionAnswering", "span", {"dense": "qa_outputs"}),
}
HF_TASK_HEADS["regression"] = HF_TASK_HEADS["classification"]


# --------------------------------------------------------------------------------------------
# config.json <-> ElectraConfig
# --------------------------------------------------------------------------------------------


def config_from_hf(hf_config: Mapping[str, Any], **overrides: Any) -> ElectraConfig:
    """An `ElectraConfig` from a discriminator's `config.json` (and, under `generator`, the
    generator's, as `read_hf_config` attaches it).

    Raises:
      ValueError: another architecture, a variant bertjax lacks, or a generator that is not a
        `generator_fraction` of the discriminator (same depth, vocabulary and embeddings).
    """
    if hf_config.get("model_type") != "electra":
        raise ValueError(
            f"config.json has model_type={hf_config.get('model_type')!r}, not 'electra'"
        )
    if "ElectraForMaskedLM" in hf_config.get("architectures", []):
        raise ValueError(
            "this is an ElectraForMaskedLM, ELECTRA's generator: put it in the discriminator's "
            f"directory as {GENERATOR_DIR}/ and import that directory"
        )
    _check_variant(hf_config)
    values = {ours: hf_config[theirs] for theirs, ours in _FIELDS.items() if theirs in hf_config}
    values["pad_token_id"] = hf_config.get("pad_token_id") or 0
    generator = hf_config.get(GENERATOR_DIR)
    if generator is not None:
        _check_variant(generator)
        values["generator_fraction"] = generator["hidden_size"] / hf_config["hidden_size"]
        values["tie_embeddings"] = bool(generator.get("tied_embeddings", False))
    config = ElectraConfig(**{**values, **overrides})
    if generator is not None:
        _check_generator(config, generator)
    return config


def _check_variant(hf_config: Mapping[str, Any]) -> None:
    act = hf_config.get("hidden_act", "gelu")
    if act != "gelu":  # HF's generator and classifier heads use exact GELU whatever hidden_act
        raise ValueError(f"config.json hidden_act={act!r} is not supported for ELECTRA: 'gelu'")
    if hf_config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("config.json position_embedding_type must be 'absolute'")


def _check_generator(config: ElectraConfig, generator: Mapping[str, Any]) -> None:
    want = config.network("generator")
    pairs = {
        "hidden_size": want.hidden_size,
        "num_attention_heads": want.num_heads,
        "intermediate_size": want.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "embedding_size": config.embedding_size,
        "vocab_size": config.vocab_size,
    }
    bad = {k: (generator.get(k), v) for k, v in pairs.items() if generator.get(k) != v}
    if bad:
        raise ValueError(
            f"{GENERATOR_DIR}/config.json does not fit generator_fraction="
            f"{config.generator_fraction:.4g} of the discriminator: (theirs, bertjax) {bad}"
        )


def config_to_hf(config: ElectraConfig, role: str = "discriminator") -> dict[str, Any]:
    """The transformers `config.json` of the discriminator (`ElectraForPreTraining`) or the
    generator (`ElectraForMaskedLM`)."""
    if config.hidden_act != "gelu":
        raise ValueError(f"config.model.hidden_act={config.hidden_act!r}: ELECTRA exports 'gelu'")
    net = config.network(role)
    arch = "ElectraForPreTraining" if role == "discriminator" else "ElectraForMaskedLM"
    hf = {"architectures": [arch], "model_type": "electra"}
    hf.update({theirs: getattr(config, ours) for theirs, ours in _FIELDS.items()})
    hf.update(
        hidden_size=net.hidden_size,
        num_attention_heads=net.num_heads,
        intermediate_size=net.intermediate_size,
        hidden_act="gelu",
        pad_token_id=config.pad_token_id,
        position_embedding_type="absolute",
        tie_word_embeddings=True,
    )
    return hf


# --------------------------------------------------------------------------------------------
# State dict <-> parameter tree
# --------------------------------------------------------------------------------------------


def _entries(config: ElectraConfig) -> list[_Entry]:
    """bertjax paths <-> HF keys (the generator's prefixed `generator/`). Groups: "encoder"
    (embeddings and discriminator), "rtd", "generator" (its network and MLM head)."""
    e, h, v = config.embedding_size, config.hidden_size, config.vocab_size
    g = config.network("generator").hidden_size
    bb = ("backbone",)
    entries = embedding_entries((*bb, "embeddings"), "electra.embeddings", config, e, "encoder")
    if e != h:
        entries += _linear(
            (*bb, "discriminator", "embeddings_project"),
            "electra.embeddings_project",
            (h, e),
            "encoder",
        )
    disc = config.network("discriminator")
    entries += layer_entries((*bb, "discriminator", "encoder"), "electra.encoder", disc, "encoder")
    entries += _linear(("heads", "rtd", "dense"), "discriminator_predictions.dense", (h, h), "rtd")
    entries += _linear(
        ("heads", "rtd", "dense_prediction"),
        "discriminator_predictions.dense_prediction",
        (1, h),
        "rtd",
    )
    gen = []
    if not config.tie_embeddings:
        gen += embedding_entries(
            (*bb, "generator_embeddings"), f"{_G}electra.embeddings", config, e, "generator"
        )
    if e != g:
        gen += _linear(
            (*bb, "generator", "embeddings_project"),
            f"{_G}electra.embeddings_project",
            (g, e),
            "generator",
        )
    gen += layer_entries(
        (*bb, "generator", "encoder"),
        f"{_G}electra.encoder",
        config.network("generator"),
        "generator",
    )
    mlm = ("heads", "mlm")
    gen += _linear((*mlm, "transform"), f"{_G}generator_predictions.dense", (e, g), "generator")
    gen += _norm((*mlm, "layer_norm"), f"{_G}generator_predictions.LayerNorm", e, "generator")
    gen.append(
        _Entry((*mlm, "output_bias"), f"{_G}generator_lm_head.bias", (v,), "copy", "generator")
    )
    return entries + gen


def _network(config: ElectraConfig, entry: _Entry):
    return config.network("generator" if entry.group == "generator" else "discriminator")


def _tied_copies(config: ElectraConfig) -> dict[str, str]:
    """With shared embeddings: generator key -> the discriminator key it repeats."""
    if not config.tie_embeddings:
        return {}
    tables = embedding_entries((), "electra.embeddings", config, config.embedding_size, "")
    return {f"{_G}{t.key}": t.key for t in tables}


def normalize_hf_keys(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Prefixes `electra.` to the keys of a bare `ElectraModel` (`embeddings.*`, `encoder.*`)."""
    bare = ("embeddings.", "embeddings_project.", "encoder.")
    return {("electra." + k if k.startswith(bare) else k): v for k, v in state.items()}


def params_from_hf(
    state_dict: Mapping[str, np.ndarray],
    config: ElectraConfig,
    *,
    with_heads: bool = True,
    init_fn: Callable[[], Params] | None = None,
) -> tuple[Params, list[str]]:
    """Maps an ELECTRA state dict (`read_hf_weights`: the discriminator's keys and the
    generator's under `generator/`) to bertjax parameters.

    Args:
      state_dict: HF key -> numpy array.
      config: the architecture (`config_from_hf`); `scan_layers` picks the result's layout.
      with_heads: also the RTD head and the generator (pretraining); False: the embeddings and
        the discriminator only (fine-tuning), whatever else the checkpoint holds.
      init_fn: fresh unboxed parameters (a shallow model) for a missing RTD head. A missing
        generator is initialised at full depth here.

    Returns:
      (params, the sorted `/`-joined paths initialised fresh).
    """
    state = normalize_hf_keys(state_dict)
    if not with_heads:
        state = {k: v for k, v in state.items() if k.startswith("electra.")}
    tied = _tied_copies(config)
    for copy, key in tied.items():
        if copy in state and key in state and not np.array_equal(state[copy], state[key]):
            raise ValueError(f"{copy} differs from {key} but config.model.tie_embeddings=True")
    entries = [e for e in _entries(config) if with_heads or e.group == "encoder"]
    known = {e.key for e in entries} | set(tied)
    unknown = sorted(k for k in state if k not in known and not _HARMLESS.search(k))
    if unknown:
        raise ValueError(f"checkpoint has {len(unknown)} unknown key(s) for ELECTRA: {unknown}")
    missing = hf_bert._missing_groups(entries, state)
    fresh = _fresh(config, missing, init_fn)
    convert = lambda entry, array: _to_bertjax(entry.kind, array, _network(config, entry))  # noqa: E731
    flat, initialised = hf_bert.read_entries(
        entries, state, missing, fresh, config.param_dtype, convert
    )
    params = _unflatten(flat)
    if config.scan_layers:
        params = stack_layer_params(params, ELECTRA.stack_paths, config.num_layers)
    return params, sorted(initialised)


def _fresh(config: ElectraConfig, missing: list[str], init_fn) -> Params | None:
    if not missing:
        return None
    if "generator" in missing:  # a whole network: it depends on the depth
        from bertjax.interop.model_dir import init_params

        return init_params(dataclasses.replace(config, scan_layers=False))
    if init_fn is None:
        raise ValueError(f"checkpoint lacks {missing} and no init_fn was given to initialise them")
    return init_fn()


def _state(params: Params, config: ElectraConfig, groups: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The HF state dict of the entries of `groups` (the tied embedding copies included)."""
    if config.scan_layers:
        params = unstack_layer_params(params, ELECTRA.stack_paths, config.num_layers)
    out = {}
    for entry in _entries(config):
        if entry.group in groups:
            array = _to_hf(
                entry.kind, np.asarray(_get(params, entry.path)), _network(config, entry)
            )
            out[entry.key] = np.ascontiguousarray(array)
    if "generator" in groups:
        out.update({copy: out[key] for copy, key in _tied_copies(config).items()})
    return out


def params_to_hf(params: Params, config: ElectraConfig) -> dict[str, np.ndarray]:
    """Pretraining parameters -> one state dict: the discriminator's keys and the generator's
    under `generator/` (`write_hf_files` splits them into the two directories)."""
    missing = [h for h in ("mlm", "rtd") if h not in params.get("heads", {})]
    if missing:
        raise ValueError(f"params_to_hf needs pretraining parameters; heads {missing} are absent")
    return _state(params, config, ("encoder", "rtd", "generator"))


# --------------------------------------------------------------------------------------------
# HF files
# --------------------------------------------------------------------------------------------


def read_hf_config(hf_dir: str | pathlib.Path) -> dict[str, Any]:
    """The discriminator's `config.json`, with the generator's (if `generator/` exists) under
    `generator`, marked `tied_embeddings` when both models hold the same embedding tables."""
    hf_dir = pathlib.Path(hf_dir)
    config = hf_files.read_hf_config(hf_dir)
    if (hf_dir / GENERATOR_DIR).is_dir():
        generator = hf_files.read_hf_config(hf_dir / GENERATOR_DIR)
        ours = normalize_hf_keys(hf_files.read_hf_weights(hf_dir))
        theirs = normalize_hf_keys(hf_files.read_hf_weights(hf_dir / GENERATOR_DIR))
        names = [k for k in ours if k.startswith("electra.embeddings.") and k.endswith("weight")]
        generator["tied_embeddings"] = all(
            k in theirs and np.array_equal(ours[k], theirs[k]) for k in names
        )
        config[GENERATOR_DIR] = generator
    return config


def read_hf_weights(hf_dir: str | pathlib.Path) -> dict[str, np.ndarray]:
    """The discriminator's weights, and the generator's (if any) with keys under `generator/`."""
    hf_dir = pathlib.Path(hf_dir)
    state = hf_files.read_hf_weights(hf_dir)
    if (hf_dir / GENERATOR_DIR).is_dir():
        generator = hf_files.read_hf_weights(hf_dir / GENERATOR_DIR)
        state.update({_G + k: v for k, v in generator.items()})
    return state


def _write(out_dir: pathlib.Path, state, hf_config, config, vocab_file, options) -> None:
    from safetensors.numpy import save_file

    out_dir.mkdir(exist_ok=True)
    save_file(state, out_dir / SAFETENSORS_NAME, metadata={"format": "pt"})
    (out_dir / CONFIG_NAME).write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    _write_tokenizer_files(out_dir, config, vocab_file, options)


def write_hf_files(
    out_dir: str | pathlib.Path,
    params: Params,
    config: ElectraConfig,
    vocab_file: str | pathlib.Path,
    tokenizer_options: Mapping[str, Any] | None = None,
) -> None:
    """Writes the discriminator to `out_dir` and the generator to `out_dir/generator/`."""
    out_dir = pathlib.Path(out_dir)
    state = params_to_hf(params, config)
    generator = {k[len(_G) :]: v for k, v in state.items() if k.startswith(_G)}
    discriminator = {k: v for k, v in state.items() if not k.startswith(_G)}
    _write(out_dir, discriminator, config_to_hf(config), config, vocab_file, tokenizer_options)
    gen_config = config_to_hf(config, "generator")
    _write(out_dir / GENERATOR_DIR, generator, gen_config, config, vocab_file, tokenizer_options)


def write_hf_task_files(
    out_dir: pathlib.Path,
    params: Params,
    config: ElectraConfig,
    kind: str,
    label_names: Sequence[str],
    vocab_file: str | pathlib.Path,
    tokenizer_options: Mapping[str, Any] | None = None,
) -> None:
    """Writes a fine-tuned model as the transformers ELECTRA class of its task."""
    state = _state(params, config, ("encoder",))
    arch, head, denses = HF_TASK_HEADS[kind]
    for ours, prefix in denses.items():
        dense = params["heads"][head][ours]
        state[f"{prefix}.weight"] = np.ascontiguousarray(np.asarray(dense["kernel"]).T)
        state[f"{prefix}.bias"] = np.asarray(dense["bias"])
    hf = {**config_to_hf(config), **hf_bert.task_label_fields(kind, label_names)}
    hf["architectures"] = [arch]
    _write(pathlib.Path(out_dir), state, hf, config, vocab_file, tokenizer_options)
