"""Checkpoints on disk.

Model directories (this section): bertjax's own format for a trained model, import from and export
to Hugging Face `transformers` directories, and `load_pretrained`, which reads either.

A bertjax model directory holds:
  config.json            {"format": "bertjax", "model": {BertConfig fields}}
  vocab.txt              the WordPiece vocabulary, one token per line
  tokenizer_config.json  optional: lowercase, strip_accents, handle_chinese_chars
  params/                the parameter tree, written with orbax
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import pathlib
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tokenizers

from bertjax import convert
from bertjax.config import BertConfig, bert_config
from bertjax.model import BertForPreTraining, BertModel
from bertjax.tokenizer import load_tokenizer, read_vocab

logger = logging.getLogger(__name__)

Params = dict[str, Any]

# ============================================================================================
# Model directories: bertjax format, Hugging Face import/export, load_pretrained
# ============================================================================================

MODEL_FORMAT = "bertjax"
MODEL_CONFIG_NAME = convert.CONFIG_NAME  # the same file names as a transformers directory
PARAMS_DIR = "params"
VOCAB_NAME = convert.VOCAB_NAME
TOKENIZER_CONFIG_NAME = convert.TOKENIZER_CONFIG_NAME
TOKENIZER_OPTIONS = ("lowercase", "strip_accents", "handle_chinese_chars")
HEADS = ("mlm_head", "nsp_head")


@contextlib.contextmanager
def _atomic_dir(out_dir: str | pathlib.Path, *, overwrite: bool) -> Iterator[pathlib.Path]:
    """Yields a temporary sibling of `out_dir` to fill; renames it to `out_dir` on success.

    On any error the temporary directory is removed, so `out_dir` is never left half-written.
    An existing non-empty `out_dir` is refused unless `overwrite`, and then replaced only at the end.
    """
    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"output directory {out} exists and is not empty (use overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _check_vocab(vocab_file: str | pathlib.Path, config: BertConfig, config_source: str) -> None:
    vocab_file = pathlib.Path(vocab_file)
    if not vocab_file.is_file():
        raise FileNotFoundError(f"vocabulary file {vocab_file} does not exist")
    size = len(read_vocab(vocab_file))
    if size != config.vocab_size:
        raise ValueError(
            f"vocabulary {vocab_file} has {size} entries but the model's word embedding has "
            f"vocab_size={config.vocab_size} rows ({config_source}); they must be equal"
        )


def init_params(config: BertConfig, *, with_heads: bool = True, seed: int = 0) -> Params:
    """Fresh unboxed parameters of `BertForPreTraining` (or `BertModel`) as numpy arrays."""
    model = (BertForPreTraining if with_heads else BertModel)(config)
    ids = jnp.zeros((1, 1), jnp.int32)
    variables = jax.jit(model.init)(jax.random.key(seed), ids, ids, jnp.ones_like(ids))
    return jax.device_get(nn.meta.unbox(variables["params"]))


def save_model(
    out_dir: str | pathlib.Path,
    params: Params,
    config: BertConfig,
    vocab_file: str | pathlib.Path,
    tokenizer_config: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> pathlib.Path:
    """Writes a bertjax model directory atomically.

    Args:
      out_dir: The directory to create; a non-empty one is refused unless `overwrite`.
      params: Unboxed parameters (e.g. of `BertForPreTraining`), in the layout of
        `config.scan_layers`.
      config: The architecture.
      vocab_file: `vocab.txt`; it must have exactly `config.vocab_size` entries.
      tokenizer_config: Tokenizer options (lowercase, strip_accents, handle_chinese_chars).
      overwrite: Replace an existing non-empty `out_dir` (only once the new one is complete).

    Returns:
      The path of the written directory.
    """
    _check_vocab(vocab_file, config, "the config passed to save_model")
    if "bert" not in params:
        raise ValueError("save_model: params have no 'bert' subtree; pass unboxed BERT params")
    unknown = sorted(set(tokenizer_config or {}) - set(TOKENIZER_OPTIONS))
    if unknown:
        raise ValueError(
            f"tokenizer_config has unknown fields {unknown}; allowed {TOKENIZER_OPTIONS}"
        )
    with _atomic_dir(out_dir, overwrite=overwrite) as tmp:
        document = {"format": MODEL_FORMAT, "model": dataclasses.asdict(config)}
        _write_json(tmp / MODEL_CONFIG_NAME, document)
        shutil.copyfile(vocab_file, tmp / VOCAB_NAME)
        if tokenizer_config is not None:
            _write_json(tmp / TOKENIZER_CONFIG_NAME, dict(tokenizer_config))
        # Written by this process alone (in a multi-process job: process 0, from gathered host
        # arrays; orbax refuses process-local jax.Arrays there).
        alone = ocp.options.MultiprocessingOptions(
            primary_host=jax.process_index(), active_processes={jax.process_index()}
        )
        arrays = jax.tree.map(np.asarray, params)
        leaves = jax.tree_util.tree_leaves_with_path(arrays)
        bad = [jax.tree_util.keystr(path) for path, x in leaves if x.dtype == object]
        if bad:
            raise TypeError(f"save_model: parameters {', '.join(bad)} are not numeric arrays")
        checkpointer = ocp.StandardCheckpointer(multiprocessing_options=alone)
        checkpointer.save((tmp / PARAMS_DIR).absolute(), arrays)
        checkpointer.wait_until_finished()
        checkpointer.close()
    return pathlib.Path(out_dir)


def load_model_dir(path: str | pathlib.Path) -> tuple[BertConfig, Params]:
    """Reads a bertjax model directory: (config, unboxed params on the default device)."""
    path = pathlib.Path(path)
    document = _read_json(path / MODEL_CONFIG_NAME)
    if document.get("format") != MODEL_FORMAT or "model" not in document:
        raise ValueError(
            f"{path / MODEL_CONFIG_NAME} is not a bertjax model config "
            f'(expected {{"format": "{MODEL_FORMAT}", "model": {{...}}}})'
        )
    config = bert_config(document["model"])
    params_dir = (path / PARAMS_DIR).absolute()
    if not params_dir.is_dir():
        raise FileNotFoundError(f"bertjax model directory {path} has no weights ({PARAMS_DIR}/)")
    checkpointer = ocp.StandardCheckpointer()
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
        checkpointer.metadata(params_dir).item_metadata.tree,
    )
    params = checkpointer.restore(params_dir, abstract)
    checkpointer.close()
    return config, params


def load_hf_dir(
    path: str | pathlib.Path, *, with_heads: bool = True, **overrides: Any
) -> tuple[BertConfig, Params, list[str]]:
    """Reads a transformers BERT directory: (config, numpy params, paths initialised fresh).

    `overrides` are BertConfig fields set on top of config.json (e.g. `scan_layers=True`).
    """
    config = convert.config_from_hf(convert.read_hf_config(path), **overrides)
    state = convert.read_hf_weights(path)
    params, initialised = convert.params_from_hf(
        state, config, with_heads=with_heads, init_fn=lambda: _fresh_heads(config, with_heads)
    )
    return config, params, initialised


def _fresh_heads(config: BertConfig, with_heads: bool = True) -> Params:
    """Fresh parameters to take the pooler and heads from (not the encoder layers).

    Those do not depend on the depth, so a one-layer model is initialised: a fraction of the
    compile time of a deep one.
    """
    shallow = dataclasses.replace(config, num_layers=1, scan_layers=False)
    return init_params(shallow, with_heads=with_heads)


def import_hf(
    hf_dir: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    *,
    overwrite: bool = False,
    scan_layers: bool = False,
) -> list[str]:
    """Converts a transformers BERT directory into a bertjax model directory.

    Returns:
      The parameters initialised fresh because the checkpoint lacks them (e.g. the MLM and NSP
      heads of an encoder-only checkpoint), as `/`-joined paths.
    """
    hf_dir = pathlib.Path(hf_dir)
    config, params, initialised = load_hf_dir(hf_dir, scan_layers=scan_layers)
    vocab = hf_dir / VOCAB_NAME
    if not vocab.is_file():
        raise FileNotFoundError(f"{hf_dir} has no {VOCAB_NAME}; bertjax needs a WordPiece vocab")
    _check_vocab(vocab, config, f"vocab_size in {hf_dir / convert.CONFIG_NAME}")
    options = convert.hf_tokenizer_options(hf_dir)
    save_model(out_dir, params, config, vocab, options, overwrite=overwrite)
    return initialised


def export_hf(
    model_dir: str | pathlib.Path, out_dir: str | pathlib.Path, *, overwrite: bool = False
) -> pathlib.Path:
    """Writes a bertjax model directory as a transformers `BertForPreTraining` directory.

    The result has `config.json`, `model.safetensors`, `vocab.txt` and `tokenizer_config.json`
    and loads with `transformers.BertForPreTraining.from_pretrained`.
    """
    model_dir = pathlib.Path(model_dir)
    config, params = load_model_dir(model_dir)
    if any(head not in params for head in HEADS):
        raise ValueError(f"{model_dir} holds no pretraining heads {HEADS}; nothing to export")
    options = _read_json(model_dir / TOKENIZER_CONFIG_NAME, missing_ok=True)
    params = jax.device_get(params)
    with _atomic_dir(out_dir, overwrite=overwrite) as tmp:
        convert.write_hf_files(tmp, params, config, model_dir / VOCAB_NAME, options)
    return pathlib.Path(out_dir)


def _detect_format(path: str | pathlib.Path) -> str:
    """The format of a model directory: a key of `_LOADERS`."""
    path = pathlib.Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    if not (path / MODEL_CONFIG_NAME).is_file():
        raise FileNotFoundError(
            f"{path} has no {MODEL_CONFIG_NAME}: not a bertjax model or transformers directory"
        )
    document = _read_json(path / MODEL_CONFIG_NAME)
    if document.get("format") == MODEL_FORMAT:
        return (
            "workdir"
            if (path / "checkpoints").is_dir() and not (path / PARAMS_DIR).exists()
            else "bertjax"
        )
    if "model_type" in document:
        return "hf"
    raise ValueError(
        f"{path / MODEL_CONFIG_NAME} has neither format 'bertjax' nor a transformers model_type"
    )


def _load_bertjax(path: pathlib.Path, with_heads: bool) -> tuple[BertConfig, Params]:
    config, params = load_model_dir(path)
    missing = [head for head in HEADS if head not in params]
    if with_heads and missing:
        fresh = _fresh_heads(config)
        params = {**params, **{head: fresh[head] for head in missing}}
        logger.warning("%s has no %s; initialised fresh", path, missing)
    return config, params


def _load_hf(path: pathlib.Path, with_heads: bool) -> tuple[BertConfig, Params]:
    config, params, _ = load_hf_dir(path, with_heads=with_heads)
    return config, params


# format -> loader(path, with_heads) -> (config, params in the layout of config.scan_layers)
_LOADERS: dict[str, Callable[[pathlib.Path, bool], tuple[BertConfig, Params]]] = {
    "bertjax": _load_bertjax,
    "hf": _load_hf,
    "workdir": lambda path, with_heads: latest_checkpoint_params(path),
}


def load_pretrained(
    path: str | pathlib.Path,
    *,
    dtype: str | None = None,
    with_heads: bool = True,
    scan_layers: bool | None = None,
) -> tuple[nn.Module, Params]:
    """Loads a bertjax model directory or a transformers BERT directory.

    Args:
      path: The directory (format detected from its config.json).
      dtype: Compute dtype override ("float32", "bfloat16", "float16"); parameters keep their
        stored dtype (`config.param_dtype`).
      with_heads: `BertForPreTraining` (heads the checkpoint lacks are initialised fresh, with a
        warning); False gives the bare `BertModel`.
      scan_layers: Override the layer layout (None keeps the stored one).

    Returns:
      (model, params): `model.apply({"params": params}, input_ids, token_type_ids,
      attention_mask)` returns `sequence_output` [batch, length, hidden], `pooled_output`
      [batch, hidden] and, with heads, `mlm_logits` and `nsp_logits`.
    """
    path = pathlib.Path(path)
    config, params = _LOADERS[_detect_format(path)](path, with_heads)
    if not with_heads:
        params = {"bert": params["bert"]}
    if scan_layers is not None and scan_layers != config.scan_layers:
        relayout = convert.stack_layers if scan_layers else convert.unstack_layers
        params = relayout(jax.device_get(params), config.num_layers)
        config = dataclasses.replace(config, scan_layers=scan_layers)
    if dtype is not None:
        config = dataclasses.replace(config, dtype=dtype)
    model = (BertForPreTraining if with_heads else BertModel)(config)
    return model, jax.tree.map(jnp.asarray, params)


def load_model_tokenizer(path: str | pathlib.Path) -> tokenizers.Tokenizer:
    """The WordPiece tokenizer of a bertjax or transformers model directory.

    Uses `vocab.txt` with the options of `tokenizer_config.json` (bertjax's keys, or transformers'
    `do_lower_case`, `strip_accents`, `tokenize_chinese_chars`). Special tokens ([CLS], [SEP],
    [MASK], ...) are matched whole in the text, and encoding adds [CLS] ... [SEP].
    """
    path = pathlib.Path(path)
    vocab = path / VOCAB_NAME
    if not vocab.is_file():
        raise FileNotFoundError(f"model directory {path} has no {VOCAB_NAME}")
    if _detect_format(path) == "hf":
        options = convert.hf_tokenizer_options(path)
    else:
        options = _read_json(path / TOKENIZER_CONFIG_NAME, missing_ok=True)
    lowercase = options.get("lowercase", True)
    strip_accents = options.get("strip_accents")
    return load_tokenizer(
        vocab,
        lowercase=lowercase,
        strip_accents=lowercase if strip_accents is None else strip_accents,
        handle_chinese_chars=options.get("handle_chinese_chars", True),
    )


def _write_json(path: pathlib.Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _read_json(path: pathlib.Path, *, missing_ok: bool = False) -> dict[str, Any]:
    if missing_ok and not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


# ============================================================================================
# Training checkpoints: train state + data position, orbax CheckpointManager
# ============================================================================================
#
# WORKDIR/checkpoints/<step>/{state,data}: `state` is the whole TrainState (params, optimizer
# state, step, rng), saved by all processes together, each writing its own shards; `data` is the
# input position as JSON. orbax writes each step into a temporary folder and renames it when
# complete, so a checkpoint cut off half-written is never listed or loaded.
#
# The data position is stored as the number of examples consumed by the whole job
# (step x global_batch_size). The input pipeline cuts one process-independent example order into
# global batches, so on restore with any number of processes P each process continues at
# examples_consumed / P of its own stream: checkpoints move between process counts (elastic).


def write_model_files(workdir: str | pathlib.Path, config: BertConfig, vocab_file) -> None:
    """Writes `config.json` and `vocab.txt` of a training workdir (the params live in checkpoints)."""
    workdir = pathlib.Path(workdir)
    _check_vocab(vocab_file, config, f"{workdir / MODEL_CONFIG_NAME}")
    _write_json(
        workdir / MODEL_CONFIG_NAME, {"format": MODEL_FORMAT, "model": dataclasses.asdict(config)}
    )
    if pathlib.Path(vocab_file).resolve() != (workdir / VOCAB_NAME).resolve():
        shutil.copyfile(vocab_file, workdir / VOCAB_NAME)
    tokenizer_config = pathlib.Path(vocab_file).parent / TOKENIZER_CONFIG_NAME
    if (
        tokenizer_config.is_file()
        and tokenizer_config.resolve() != (workdir / TOKENIZER_CONFIG_NAME).resolve()
    ):
        shutil.copyfile(tokenizer_config, workdir / TOKENIZER_CONFIG_NAME)


def train_checkpoint_manager(
    directory: str | pathlib.Path, options: Mapping[str, Any]
) -> ocp.CheckpointManager:
    """An orbax CheckpointManager for `config.checkpoint` (keep the last `keep`, async writes)."""
    return ocp.CheckpointManager(
        pathlib.Path(directory).absolute(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=int(options["keep"]),
            enable_async_checkpointing=bool(options["async_save"]),
            create=True,
        ),
    )


def save_train_state(
    manager: ocp.CheckpointManager, step: int, state: Any, global_batch_size: int
) -> None:
    """Starts saving the train state and data position of `step` (returns before the write ends)."""
    position = {"step": int(step), "examples_consumed": int(step) * int(global_batch_size)}
    manager.save(
        int(step),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(position)
        ),
    )


def restore_train_state(
    manager: ocp.CheckpointManager, state_shardings: Any, abstract_state: Any
) -> tuple[Any, dict] | None:
    """Restores the latest complete checkpoint onto `state_shardings`, or None if there is none.

    Returns:
      (the train state, the data position `{"step", "examples_consumed"}`).
    """
    step = manager.latest_step()
    if step is None:
        return None
    target = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        abstract_state,
        state_shardings,
    )
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()
        ),
    )
    logger.info("restored checkpoint of step %d from %s", step, manager.directory)
    return restored["state"], dict(restored["data"])


def latest_checkpoint_params(workdir: str | pathlib.Path) -> tuple[BertConfig, Params]:
    """Params of the latest checkpoint of a pretraining workdir (on the host, no optimizer state)."""
    workdir = pathlib.Path(workdir)
    config = bert_config(_read_json(workdir / MODEL_CONFIG_NAME)["model"])
    manager = ocp.CheckpointManager((workdir / "checkpoints").absolute())
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"{workdir / 'checkpoints'} holds no complete checkpoint")
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(None)))
    manager.close()
    return config, restored["state"]["params"]
