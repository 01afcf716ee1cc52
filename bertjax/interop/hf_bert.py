"""Checkpoint conversion between Hugging Face `transformers` BERT and bertjax.

Pure functions on one side of the border (HF state dicts of numpy arrays keyed like
`bert.encoder.layer.0.attention.self.query.weight`, HF `config.json` dicts) and the other (the bertjax
parameter tree `{"backbone": ..., "heads": {"mlm": ..., "nsp": ...}}`, unscanned or scanned, and
`BertConfig`), plus readers and writers of the HF files themselves. Directory-level operations
(atomic writes, the bertjax model directory, `load_pretrained`) live in `bertjax.interop.model_dir`.

PyTorch `Linear` weights are [out, in]; Flax kernels are [in, out]. Attention kernels are 3-D in
bertjax: query/key/value [hidden, heads, head_dim] and the output projection [heads, head_dim, hidden].
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bertjax.interop.hf_files import (
    CONFIG_NAME,
    SAFETENSORS_NAME,
    np_dtype,
    read_hf_config,  # noqa: F401  (part of this converter's API)
    read_hf_weights,  # noqa: F401
)
from bertjax.models.bert import BertConfig
from bertjax.models.layers import stack_layer_params, unstack_layer_params

logger = logging.getLogger(__name__)

Params = dict[str, Any]

MODEL_TYPES = ("bert",)  # transformers model_type values this converter reads
STACK_PATHS = (("backbone", "encoder"),)  # where BertBackbone's LayerStack keeps its layers
VOCAB_NAME = "vocab.txt"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"

# HF `hidden_act` -> bertjax `hidden_act`. "gelu_new" and "gelu_pytorch_tanh" are the tanh formula.
_ACTS_FROM_HF = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
_ACTS_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new"}
# HF config.json field -> BertConfig field.
_CONFIG_FIELDS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "hidden_dropout_prob": "hidden_dropout",
    "attention_probs_dropout_prob": "attention_dropout",
    "layer_norm_eps": "layer_norm_eps",
    "initializer_range": "initializer_range",
}
# Buffers that HF models save with their weights; they carry no parameters.
_HARMLESS_KEY = re.compile(r"(^|\.)(position_ids|token_type_ids)$")
_DECODER_WEIGHT = "cls.predictions.decoder.weight"
_DECODER_BIAS = "cls.predictions.decoder.bias"
_WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"
# bertjax parameter paths of the pretraining heads
PRETRAINING_HEADS = ("mlm", "nsp")
MLM, NSP = ("heads", "mlm"), ("heads", "nsp")


# --------------------------------------------------------------------------------------------
# config.json <-> BertConfig
# --------------------------------------------------------------------------------------------


def config_from_hf(hf_config: Mapping[str, Any], **overrides: Any) -> BertConfig:
    """Builds a `BertConfig` from a transformers BERT `config.json` dict.

    Args:
      hf_config: The parsed `config.json`; `model_type` must be "bert".
      **overrides: BertConfig fields to set on top (e.g. `scan_layers=True`, `dtype="bfloat16"`).

    Raises:
      ValueError: Another architecture, or a BERT variant bertjax does not implement.
    """
    model_type = hf_config.get("model_type")
    if model_type != "bert":
        raise ValueError(
            f"config.json has model_type={model_type!r}; only BERT checkpoints "
            "(model_type 'bert') can be converted"
        )
    act = hf_config.get("hidden_act", "gelu")
    if act not in _ACTS_FROM_HF:
        raise ValueError(
            f"config.json hidden_act={act!r} is not supported; allowed: {sorted(_ACTS_FROM_HF)}"
        )
    position_type = hf_config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(
            f"config.json position_embedding_type={position_type!r} is not supported; "
            "bertjax has learned absolute positions only"
        )
    for flag in ("is_decoder", "add_cross_attention"):
        if hf_config.get(flag):
            raise ValueError(
                f"config.json {flag}=true is not supported: bertjax BERT is an encoder"
            )
    values = {
        ours: hf_config[theirs] for theirs, ours in _CONFIG_FIELDS.items() if theirs in hf_config
    }
    values["hidden_act"] = _ACTS_FROM_HF[act]
    pad = hf_config.get("pad_token_id")
    values["pad_token_id"] = 0 if pad is None else pad
    values.update(overrides)
    return BertConfig(**values)


def check_exportable(config: BertConfig) -> None:
    """Raises when transformers' BERT cannot represent `config` (its entity embedding)."""
    if config.entity_vocab_size:
        raise ValueError(
            f"config.model.entity_vocab_size={config.entity_vocab_size}: transformers' BertModel "
            "has no entity embedding (nor an entity_ids input), so this entity-aware model cannot "
            "be exported to Hugging Face; keep it as a bertjax model directory"
        )


def config_to_hf(config: BertConfig) -> dict[str, Any]:
    """The transformers `config.json` dict of a `BertForPreTraining` with this architecture."""
    check_exportable(config)
    hf = {"architectures": ["BertForPreTraining"], "model_type": "bert"}
    hf.update({theirs: getattr(config, ours) for theirs, ours in _CONFIG_FIELDS.items()})
    hf.update(
        hidden_act=_ACTS_TO_HF[config.hidden_act],
        pad_token_id=config.pad_token_id,
        position_embedding_type="absolute",
        tie_word_embeddings=True,
    )
    return hf


# --------------------------------------------------------------------------------------------
# State dict <-> parameter tree
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Entry:
    path: tuple[str, ...]  # bertjax path (unscanned)
    key: str  # HF key
    shape: tuple[int, ...]  # HF shape
    kind: str  # how the array is laid out: see `_to_bertjax`
    group: str  # "encoder", "pooler", "mlm_head" or "nsp_head"


def _norm(path: tuple[str, ...], key: str, size: int, group: str) -> list[_Entry]:
    return [
        _Entry((*path, "scale"), f"{key}.weight", (size,), "copy", group),
        _Entry((*path, "bias"), f"{key}.bias", (size,), "copy", group),
    ]


def _linear(
    path: tuple[str, ...], key: str, shape: tuple[int, int], group: str, kind: str = "linear"
) -> list[_Entry]:
    """A torch Linear: weight [out, in], bias [out]."""
    return [
        _Entry((*path, "kernel"), f"{key}.weight", shape, kind, group),
        _Entry(
            (*path, "bias"),
            f"{key}.bias",
            shape[:1],
            "heads_bias" if kind == "heads_kernel" else "copy",
            group,
        ),
    ]


def embedding_entries(
    ours: tuple[str, ...], theirs: str, config: Any, width: int, group: str
) -> list[_Entry]:
    """The entries of the word, position and token-type tables (`width` wide) and their
    LayerNorm: bertjax `ours/...` and HF `theirs.*`."""
    tables = (
        ("word_embeddings", "embedding", config.vocab_size),
        ("position_embeddings", None, config.max_position_embeddings),
        ("token_type_embeddings", None, config.type_vocab_size),
    )
    entries = [
        _Entry(
            (*ours, name, leaf) if leaf else (*ours, name),
            f"{theirs}.{name}.weight",
            (rows, width),
            "copy",
            group,
        )
        for name, leaf, rows in tables
    ]
    return entries + _norm((*ours, "layer_norm"), f"{theirs}.LayerNorm", width, group)


def layer_entries(ours: tuple[str, ...], theirs: str, config: Any, group: str) -> list[_Entry]:
    """The entries of a BERT-style encoder's layers: bertjax `ours/layer_{i}` and HF
    `theirs.layer.{i}` (query/key/value, attention output, LayerNorms, intermediate, output)."""
    h, m = config.hidden_size, config.intermediate_size
    entries = []
    for i in range(config.num_layers):
        layer, hf = (*ours, f"layer_{i}"), f"{theirs}.layer.{i}"
        for name in ("query", "key", "value"):
            entries += _linear(
                (*layer, "attention", name),
                f"{hf}.attention.self.{name}",
                (h, h),
                group,
                "heads_kernel",
            )
        entries += _linear(
            (*layer, "attention", "out"),
            f"{hf}.attention.output.dense",
            (h, h),
            group,
            "out_kernel",
        )
        entries += _norm(
            (*layer, "attention_layer_norm"), f"{hf}.attention.output.LayerNorm", h, group
        )
        entries += _linear((*layer, "mlp", "wi"), f"{hf}.intermediate.dense", (m, h), group)
        entries += _linear((*layer, "mlp", "wo"), f"{hf}.output.dense", (h, m), group)
        entries += _norm((*layer, "mlp_layer_norm"), f"{hf}.output.LayerNorm", h, group)
    return entries


def _entries(config: BertConfig) -> list[_Entry]:
    """The one-to-one map between bertjax parameters and HF keys of `BertForPreTraining`."""
    h = config.hidden_size
    entries = embedding_entries(("backbone", "embeddings"), "bert.embeddings", config, h, "encoder")
    entries += layer_entries(("backbone", "encoder"), "bert.encoder", config, "encoder")
    entries += _linear(("backbone", "pooler", "dense"), "bert.pooler.dense", (h, h), "pooler")
    entries += _linear((*MLM, "transform"), "cls.predictions.transform.dense", (h, h), "mlm_head")
    entries += _norm((*MLM, "layer_norm"), "cls.predictions.transform.LayerNorm", h, "mlm_head")
    entries.append(
        _Entry(
            (*MLM, "output_bias"),
            "cls.predictions.bias",
            (config.vocab_size,),
            "copy",
            "mlm_head",
        )
    )
    entries += _linear((*NSP, "dense"), "cls.seq_relationship", (2, h), "nsp_head")
    return entries


def _to_bertjax(kind: str, array: np.ndarray, config: BertConfig) -> np.ndarray:
    heads, head_dim, hidden = config.num_heads, config.head_dim, config.hidden_size
    if kind == "linear":  # [out, in] -> [in, out]
        return array.T
    if kind == "heads_kernel":  # [heads*head_dim, hidden] -> [hidden, heads, head_dim]
        return array.T.reshape(hidden, heads, head_dim)
    if kind == "heads_bias":  # [heads*head_dim] -> [heads, head_dim]
        return array.reshape(heads, head_dim)
    if kind == "out_kernel":  # [hidden, heads*head_dim] -> [heads, head_dim, hidden]
        return array.T.reshape(heads, head_dim, hidden)
    return array


def _to_hf(kind: str, array: np.ndarray, config: BertConfig) -> np.ndarray:
    hidden = config.hidden_size
    if kind == "linear":
        return array.T
    if kind in ("heads_kernel", "out_kernel"):  # back to [in, out], then [out, in]
        return array.reshape(hidden, hidden).T
    if kind == "heads_bias":
        return array.reshape(hidden)
    return array


def normalize_hf_keys(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Renames keys to the `BertForPreTraining` convention.

    Encoder-only checkpoints (`BertModel`) have no `bert.` prefix; old checkpoints name LayerNorm
    parameters `gamma`/`beta`.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith(("embeddings.", "encoder.", "pooler.")):
            key = "bert." + key
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
        key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
        out[key] = value
    return out


def _check_tied(state_dict: Mapping[str, np.ndarray]) -> None:
    """Checks that an explicit MLM decoder is the tied one bertjax has (tied to the embedding)."""
    pairs = ((_DECODER_WEIGHT, _WORD_EMBEDDINGS), (_DECODER_BIAS, "cls.predictions.bias"))
    for extra, tied in pairs:
        if extra in state_dict and tied in state_dict:
            if not np.array_equal(state_dict[extra], state_dict[tied]):
                raise ValueError(
                    f"checkpoint has {extra} different from {tied}; bertjax ties the MLM "
                    "decoder to the word embedding and cannot represent an untied one"
                )


def params_from_hf(
    state_dict: Mapping[str, np.ndarray],
    config: BertConfig,
    *,
    with_heads: bool = True,
    init_fn: Callable[[], Params] | None = None,
) -> tuple[Params, list[str]]:
    """Maps a transformers BERT state dict to a bertjax parameter tree.

    Args:
      state_dict: HF key -> numpy array, from `BertForPreTraining`, `BertForMaskedLM`, `BertModel`
        (keys without `bert.`) or an older checkpoint (`gamma`/`beta`).
      config: The architecture; `config.scan_layers` picks the layout of the result.
      with_heads: Convert the MLM and NSP heads too (`BertForPreTraining`); False gives `BertModel`
        parameters and ignores heads in the checkpoint.
      init_fn: Returns fresh unboxed, unscanned parameters of this architecture; called only when
        the checkpoint lacks a whole head or the pooler. None: such a gap is an error.

    Returns:
      (params, initialised): unboxed numpy parameters in `config.param_dtype`, and the sorted
      `/`-joined paths of the parameters initialised fresh because the checkpoint lacks them.

    Raises:
      ValueError: Unknown keys, a missing encoder weight, a half-present head, a shape mismatch.
    """
    state = normalize_hf_keys(state_dict)
    if not with_heads:
        state = {k: v for k, v in state.items() if not k.startswith("cls.")}
    _check_tied(state)
    if "cls.predictions.bias" not in state and _DECODER_BIAS in state:
        state["cls.predictions.bias"] = state[_DECODER_BIAS]
    entries = [e for e in _entries(config) if with_heads or e.group in ("encoder", "pooler")]
    known = {e.key for e in entries} | {_DECODER_WEIGHT, _DECODER_BIAS}
    unknown = sorted(k for k in state if k not in known and not _HARMLESS_KEY.search(k))
    if unknown:
        raise ValueError(f"checkpoint has {len(unknown)} unknown key(s) for BERT: {unknown}")
    missing = _missing_groups(entries, state)
    if missing and init_fn is None:
        raise ValueError(f"checkpoint lacks {missing} and no init_fn was given to initialise them")
    fresh = init_fn() if missing else None
    convert = lambda entry, array: _to_bertjax(entry.kind, array, config)  # noqa: E731
    flat, initialised = read_entries(entries, state, missing, fresh, config.param_dtype, convert)
    params = _unflatten(flat)
    if config.scan_layers:
        params = stack_layers(params, config.num_layers)
    if initialised:
        logger.warning(
            "initialised %d parameter(s) fresh (absent from the checkpoint): %s",
            len(initialised),
            ", ".join(initialised),
        )
    return params, sorted(initialised)


def read_entries(entries, state, missing, fresh, param_dtype: str, convert):
    """The flat `{path: array}` of `entries` and the `/`-joined paths initialised fresh.

    Each entry comes from the HF `state` (shape-checked, then `convert(entry, array)`), or from
    the `fresh` params where its group is in `missing`; arrays are cast to `param_dtype`.
    """
    dtype = np_dtype(param_dtype)
    flat, initialised = {}, []
    for entry in entries:
        if entry.group in missing:
            flat[entry.path] = np.asarray(_get(fresh, entry.path)).astype(dtype)
            initialised.append("/".join(entry.path))
            continue
        array = np.asarray(state[entry.key])
        if array.shape != entry.shape:
            raise ValueError(
                f"checkpoint weight {entry.key} has shape {array.shape}, but config.json "
                f"implies {entry.shape}"
            )
        flat[entry.path] = np.ascontiguousarray(convert(entry, array), dtype)
    return flat, initialised


def _missing_groups(entries: list[_Entry], state: Mapping[str, np.ndarray]) -> list[str]:
    """Groups wholly absent from the checkpoint; a partly absent group or encoder gap is an error."""
    missing = []
    for group in dict.fromkeys(e.group for e in entries):
        keys = [e.key for e in entries if e.group == group]
        absent = [k for k in keys if k not in state]
        if not absent:
            continue
        if group == "encoder" or len(absent) < len(keys):
            raise ValueError(f"checkpoint is missing {len(absent)} {group} weight(s): {absent}")
        missing.append(group)
    return missing


def params_to_hf(params: Params, config: BertConfig) -> dict[str, np.ndarray]:
    """Maps `BertForPreTraining` parameters (either layout) to a transformers state dict.

    The tied decoder (`cls.predictions.decoder.*`) is left out, as transformers itself saves it.
    """
    check_exportable(config)
    if any(head not in params.get("heads", {}) for head in PRETRAINING_HEADS):
        raise ValueError(
            f"params_to_hf needs pretraining parameters (with heads {PRETRAINING_HEADS})"
        )
    if config.scan_layers:
        params = unstack_layers(params, config.num_layers)
    out = {}
    for entry in _entries(config):
        array = np.asarray(_get(params, entry.path))
        out[entry.key] = np.ascontiguousarray(_to_hf(entry.kind, array, config))
    return out


# --------------------------------------------------------------------------------------------
# Tree helpers: layouts, paths
# --------------------------------------------------------------------------------------------


def stack_layers(params: Params, num_layers: int) -> Params:
    """Unscanned `backbone/encoder/layer_{i}` -> scanned `backbone/encoder/layers`."""
    return stack_layer_params(params, STACK_PATHS, num_layers)


def unstack_layers(params: Params, num_layers: int) -> Params:
    """Scanned `backbone/encoder/layers` -> unscanned `backbone/encoder/layer_{i}`."""
    return unstack_layer_params(params, STACK_PATHS, num_layers)


def _get(tree: Params, path: tuple[str, ...]) -> Any:
    for name in path:
        tree = tree[name]
    return tree


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> Params:
    tree: Params = {}
    for path, value in flat.items():
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return tree


def write_hf_files(
    out_dir: str | pathlib.Path,
    params: Params,
    config: BertConfig,
    vocab_file: str | pathlib.Path,
    tokenizer_options: Mapping[str, Any] | None = None,
) -> None:
    """Writes `config.json`, `model.safetensors`, `vocab.txt` and `tokenizer_config.json`.

    `out_dir` must exist; `bertjax.interop.model_dir.export_hf` wraps this in an atomic directory write.
    `tokenizer_options` uses bertjax's keys (lowercase, strip_accents, handle_chinese_chars).
    """
    from safetensors.numpy import save_file

    out_dir = pathlib.Path(out_dir)
    state = params_to_hf(params, config)
    save_file(state, out_dir / SAFETENSORS_NAME, metadata={"format": "pt"})
    hf_config = config_to_hf(config)
    (out_dir / CONFIG_NAME).write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    _write_tokenizer_files(out_dir, config, vocab_file, tokenizer_options)


def _write_tokenizer_files(
    out_dir: pathlib.Path, config: BertConfig, vocab_file, tokenizer_options
):
    """`vocab.txt` and the transformers `tokenizer_config.json` of bertjax tokenizer options."""
    (out_dir / VOCAB_NAME).write_bytes(pathlib.Path(vocab_file).read_bytes())
    options = dict(tokenizer_options or {})
    tokenizer_config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": options.get("lowercase", True),
        "strip_accents": options.get("strip_accents"),
        "tokenize_chinese_chars": options.get("handle_chinese_chars", True),
        "model_max_length": config.max_position_embeddings,
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    if options.get("keep_hangul"):  # read back by hf_tokenizer_options; transformers ignores it
        tokenizer_config["keep_hangul"] = True
    if options.get("pretokenizer", "whitespace") != "whitespace":
        # Read back by hf_tokenizer_options; transformers ignores it and splits words BERT's way.
        tokenizer_config["pretokenizer"] = options["pretokenizer"]
        logger.warning(
            "%s: transformers cannot reproduce pretokenizer=%r; only bertjax tokenizes this "
            "model as it was trained",
            out_dir,
            options["pretokenizer"],
        )
    text = json.dumps(tokenizer_config, indent=2) + "\n"
    (out_dir / TOKENIZER_CONFIG_NAME).write_text(text, encoding="utf-8")


def hf_tokenizer_options(hf_dir: str | pathlib.Path) -> dict[str, Any]:
    """bertjax tokenizer options (lowercase, strip_accents, handle_chinese_chars) of an HF dir.

    Read from `tokenizer_config.json` (`do_lower_case`, `strip_accents`, `tokenize_chinese_chars`)
    or else `config.json` (`do_lower_case`); BERT's defaults where neither says.
    """
    hf_dir = pathlib.Path(hf_dir)
    source: dict[str, Any] = {}
    for name in (TOKENIZER_CONFIG_NAME, CONFIG_NAME):
        path = hf_dir / name
        if path.is_file():
            values = json.loads(path.read_text(encoding="utf-8"))
            source = {**values, **source}
    return {
        "lowercase": bool(source.get("do_lower_case", True)),
        "strip_accents": source.get("strip_accents"),
        "handle_chinese_chars": bool(source.get("tokenize_chinese_chars", True)),
        "keep_hangul": bool(source.get("keep_hangul", False)),
        "pretokenizer": source.get("pretokenizer", "whitespace"),
    }


# --------------------------------------------------------------------------------------------
# Fine-tuned models: BertFor{Sequence,Token}Classification, BertForQuestionAnswering
# --------------------------------------------------------------------------------------------

# task kind -> (transformers architecture, bertjax head, transformers head prefix)
HF_TASK_HEADS = {
    "classification": ("BertForSequenceClassification", "classifier", "classifier"),
    "regression": ("BertForSequenceClassification", "classifier", "classifier"),
    "tagging": ("BertForTokenClassification", "tagger", "classifier"),
    "qa": ("BertForQuestionAnswering", "span", "qa_outputs"),
}


def task_config_to_hf(config: BertConfig, kind: str, label_names: Sequence[str]) -> dict[str, Any]:
    """The transformers `config.json` of a fine-tuned model of task `kind`."""
    hf = config_to_hf(config)
    hf["architectures"] = [HF_TASK_HEADS[kind][0]]
    return {**hf, **task_label_fields(kind, label_names)}


def task_label_fields(kind: str, label_names: Sequence[str]) -> dict[str, Any]:
    """The label fields of a fine-tuned model's `config.json` (id2label, label2id, problem_type)."""
    hf: dict[str, Any] = {}
    if kind == "regression":
        hf.update(id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0}, problem_type="regression")
    elif kind in ("classification", "tagging"):
        hf["id2label"] = {str(i): name for i, name in enumerate(label_names)}
        hf["label2id"] = {name: i for i, name in enumerate(label_names)}
        if kind == "classification":
            hf["problem_type"] = "single_label_classification"
    return hf


def task_params_to_hf(params: Params, config: BertConfig, kind: str) -> dict[str, np.ndarray]:
    """The transformers state dict of a fine-tuned model: encoder, pooler and the task head."""
    if config.scan_layers:
        params = unstack_layers(params, config.num_layers)
    out = {}
    for entry in _entries(config):
        if entry.group in ("encoder", "pooler"):
            array = np.asarray(_get(params, entry.path))
            out[entry.key] = np.ascontiguousarray(_to_hf(entry.kind, array, config))
    _, head, prefix = HF_TASK_HEADS[kind]
    dense = params["heads"][head]["dense"]
    out[f"{prefix}.weight"] = np.ascontiguousarray(np.asarray(dense["kernel"]).T)
    out[f"{prefix}.bias"] = np.asarray(dense["bias"])
    return out


def write_hf_task_files(
    out_dir: pathlib.Path,
    params: Params,
    config: BertConfig,
    kind: str,
    label_names: Sequence[str],
    vocab_file: str | pathlib.Path,
    tokenizer_options: Mapping[str, Any] | None = None,
) -> None:
    """Writes a fine-tuned model as a transformers directory of the task's head class."""
    from safetensors.numpy import save_file

    state = task_params_to_hf(params, config, kind)
    save_file(state, out_dir / SAFETENSORS_NAME, metadata={"format": "pt"})
    _write_tokenizer_files(out_dir, config, vocab_file, tokenizer_options)
    hf = task_config_to_hf(config, kind, label_names)
    (out_dir / CONFIG_NAME).write_text(json.dumps(hf, indent=2) + "\n", encoding="utf-8")
