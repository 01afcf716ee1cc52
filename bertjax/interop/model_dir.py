"""The pretrained bertjax model directory (read and written), and Hugging Face import/export.

Which kind of directory a path is, and loading any of them (`load_params`, `load_pretrained`),
is `bertjax.interop.formats`.

A bertjax model directory holds:
  config.json            {"format": "bertjax", "family": "bert", "model": {config fields}}
  the tokenizer, one of:
    vocab.txt              WordPiece (BERT), one token per line, with
    bertjax_tokenizer.json its options: lowercase, strip_accents, handle_chinese_chars,
                           keep_hangul, pretokenizer (older directories: in
                           tokenizer_config.json; still read),
    tokenizer.json and     the exact tokenizer (tokenizers' serialization) and transformers'
    tokenizer_config.json  keys, so AutoTokenizer.from_pretrained(dir) matches (not written for
                           pretokenizer="morpheme", which transformers cannot reproduce);
    vocab.json, merges.txt or byte-level BPE (GPT-2)
  params/                the parameter tree {"backbone": ..., "heads": {...}}, written with orbax

`vocab_file(dir)` names the tokenizer of a directory whatever its kind; the family's
`pretraining_heads` say which heads a pretrained directory holds (BERT mlm + nsp, GPT lm).

Directories written before the model registry (no "family", parameters under "bert",
"mlm_head", "nsp_head", "classifier", "qa_outputs") load unchanged: `bertjax.interop.legacy`
maps them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import pathlib
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tokenizers

from bertjax import files
from bertjax.data.tokenizer import (
    BPE_VOCAB_NAME,
    load_tokenizer,
    read_options,
    read_vocab,
    resolve_options,
    tokenizer_files,
    tokenizer_kind,
    write_tokenizer_files,
)
from bertjax.interop.hf_files import read_hf_config
from bertjax.interop.legacy import upgrade_params
from bertjax.models import Model, head_spec, model_config
from bertjax.models.layers import stack_layer_params, unstack_layer_params
from bertjax.models.registry import FAMILIES, family_of

logger = logging.getLogger(__name__)

Params = dict[str, Any]

MODEL_FORMAT = "bertjax"
MODEL_CONFIG_NAME = "config.json"  # the same file names as a transformers directory
PARAMS_DIR = "params"
FRESH_HEADS_KEY = "fresh_heads"  # config.json: heads initialised fresh by import-hf, untrained
VOCAB_NAME = "vocab.txt"
VOCAB_NAMES = ("source.spm", BPE_VOCAB_NAME, VOCAB_NAME)  # tokenizer kinds (Marian first)
TOKENIZER_OPTIONS = (
    "lowercase",
    "strip_accents",
    "handle_chinese_chars",
    "keep_hangul",
    "pretokenizer",
)
PRETRAINING_HEADS = (head_spec("mlm"), head_spec("nsp"))  # BERT's; any family: pretraining_heads


def check_out_dir(out_dir: str | pathlib.Path, *, overwrite: bool) -> None:
    """Raises unless `out_dir` may be written: absent, empty, or replaced with `overwrite`."""
    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output directory {out} exists and is not empty (--overwrite, or overwrite=True "
            "from Python, replaces it)"
        )


@contextlib.contextmanager
def _atomic_dir(out_dir: str | pathlib.Path, *, overwrite: bool) -> Iterator[pathlib.Path]:
    """Yields a temporary sibling of `out_dir` to fill; renames it to `out_dir` on success.

    On any error the temporary directory is removed, so `out_dir` is never left half-written.
    An existing non-empty `out_dir` is refused unless `overwrite`, and then replaced only at the end.
    """
    out = pathlib.Path(out_dir)
    check_out_dir(out, overwrite=overwrite)
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


atomic_dir = _atomic_dir


def check_vocab(vocab_file: str | pathlib.Path, config: Any, config_source: str) -> None:
    """Raises unless `vocab_file` exists and has exactly `config.vocab_size` entries."""
    vocab_file = pathlib.Path(vocab_file)
    if not vocab_file.is_file():
        raise FileNotFoundError(f"vocabulary file {vocab_file} does not exist")
    size = len(read_vocab(vocab_file))
    if size != config.vocab_size:
        raise ValueError(
            f"vocabulary {vocab_file} has {size} entries but the model's word embedding has "
            f"vocab_size={config.vocab_size} rows ({config_source}); they must be equal"
        )


def vocab_file(directory: str | pathlib.Path) -> pathlib.Path:
    """The vocabulary file naming the tokenizer of a model directory, workdir or transformers
    directory: `vocab.json` (byte-level BPE) when present, else `vocab.txt` (WordPiece)."""
    directory = pathlib.Path(directory)
    for name in VOCAB_NAMES:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{directory} has no tokenizer ({' or '.join(VOCAB_NAMES)})")


def _write_tokenizer(out_dir: pathlib.Path, config: Any, vocab_file, options: Mapping) -> None:
    """The tokenizer of `vocab_file` in `out_dir`: byte-level BPE's `vocab.json` and
    `merges.txt`, or WordPiece's `vocab.txt` with its options, `tokenizer.json` and
    transformers' `tokenizer_config.json`. Nothing is copied onto itself."""
    out_dir, vocab_file = pathlib.Path(out_dir), pathlib.Path(vocab_file)
    if tokenizer_kind(vocab_file) != "wordpiece":  # BPE, SentencePiece: their files as they are
        for path in tokenizer_files(vocab_file):
            if path.resolve() != (out_dir / path.name).resolve():
                shutil.copyfile(path, out_dir / path.name)
        return
    if vocab_file.resolve() != (out_dir / VOCAB_NAME).resolve():
        shutil.copyfile(vocab_file, out_dir / VOCAB_NAME)
    write_tokenizer_files(
        out_dir,
        out_dir / VOCAB_NAME,
        options,
        model_max_length=getattr(config, "max_position_embeddings", 512),
    )


def pretraining_heads(family) -> tuple:
    """The `head_spec`s of the heads a pretrained model of `family` holds."""
    return tuple(head_spec(name) for name in family.pretraining_heads)


def example_inputs(family, length: int = 1) -> dict[str, jax.Array]:
    """A [1, length] batch of the family's input fields, for `init` and `eval_shape`."""
    ids = jnp.zeros((1, length), jnp.int32)
    return {
        name: jnp.ones_like(ids) if name == "attention_mask" else ids
        for name in family.input_fields
    }


def init_params(config: Any, *, heads=None, seed: int = 0) -> Params:
    """Fresh unboxed parameters of `Model(family_of(config), config, heads)` as numpy arrays
    (heads None: the family's pretraining heads)."""
    family = family_of(config)
    heads = pretraining_heads(family) if heads is None else tuple(heads)
    variables = _jitted_init(config, heads)(jax.random.key(seed), example_inputs(family))
    return jax.device_get(nn.meta.unbox(variables["params"]))


@functools.lru_cache(maxsize=8)
def _jitted_init(config: Any, heads: tuple):
    """The jitted `init` of `Model(family_of(config), config, heads)`, kept so that the next
    model of the same architecture (e.g. a warm start's from-scratch twin) does not compile
    it again."""
    return jax.jit(Model(family_of(config), config, heads).init)


def encoder_params(config: Any, backbone: Params) -> Params:
    """The subtrees of `backbone` that a model without pretraining heads has (what fine-tuning
    loads; ELECTRA's generator is left out)."""
    family = family_of(config)
    model = Model(family, config, ())
    shapes = jax.eval_shape(model.init, jax.random.key(0), example_inputs(family))["params"]
    return {k: v for k, v in backbone.items() if k in shapes["backbone"]}


def save_model(
    out_dir: str | pathlib.Path,
    params: Params,
    config: Any,
    vocab_file: str | pathlib.Path,
    tokenizer_config: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
    fresh_heads: Sequence[str] = (),
) -> pathlib.Path:
    """Writes a bertjax model directory atomically.

    Args:
      out_dir: The directory to create; a non-empty one is refused unless `overwrite`.
      params: Unboxed parameters `{"backbone": ..., "heads": {...}}`, in the layout of
        `config.scan_layers`.
      config: The architecture (a registered family's config dataclass).
      vocab_file: `vocab.txt` or `vocab.json` (merges.txt beside it); it must have exactly
        `config.vocab_size` entries.
      tokenizer_config: WordPiece options (lowercase, strip_accents, handle_chinese_chars,
        keep_hangul, pretokenizer); None: BERT's defaults. Written with `tokenizer.json` and
        transformers' `tokenizer_config.json` (`bertjax.data.tokenizer.write_tokenizer_files`;
        not for pretokenizer="morpheme", which transformers cannot reproduce).
      overwrite: Replace an existing non-empty `out_dir` (only once the new one is complete).
      fresh_heads: Heads initialised fresh, never trained (`import-hf` of a checkpoint without
        them), recorded as `"fresh_heads"` in config.json (`fresh_heads(dir)` reads them).

    Returns:
      The path of the written directory.
    """
    family = family_of(config)
    check_vocab(vocab_file, config, "the config passed to save_model")
    if "backbone" not in params:
        raise ValueError("save_model: params have no 'backbone' subtree; pass unboxed params")
    unknown = sorted(set(tokenizer_config or {}) - set(TOKENIZER_OPTIONS))
    if unknown:
        raise ValueError(
            f"tokenizer_config has unknown fields {unknown}; allowed {TOKENIZER_OPTIONS}"
        )
    with _atomic_dir(out_dir, overwrite=overwrite) as tmp:
        document = config_document(config)
        if fresh_heads:
            document[FRESH_HEADS_KEY] = sorted(fresh_heads)
        _write_json(tmp / MODEL_CONFIG_NAME, document)
        _write_tokenizer(tmp, config, vocab_file, dict(tokenizer_config or {}))
        _write_params(tmp / PARAMS_DIR, params)
    logger.debug("wrote %s model to %s", family.name, out_dir)
    return pathlib.Path(out_dir)


def _write_params(path: pathlib.Path, params: Params) -> None:
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
    checkpointer.save(path.absolute(), arrays)
    checkpointer.wait_until_finished()
    checkpointer.close()


def fresh_heads(path: str | pathlib.Path) -> list[str]:
    """The heads a bertjax model directory records as initialised fresh (see `save_model`)."""
    return list(read_json(pathlib.Path(path) / MODEL_CONFIG_NAME).get(FRESH_HEADS_KEY, []))


def config_document(config: Any) -> dict[str, Any]:
    """The `config.json` document of a bertjax model directory or training workdir."""
    return {
        "format": MODEL_FORMAT,
        "family": family_of(config).name,
        "model": dataclasses.asdict(config),
    }


def read_model_config(path: str | pathlib.Path) -> Any:
    """The frozen model config of a bertjax `config.json` (a model directory or a workdir)."""
    path = pathlib.Path(path)
    document = read_json(path / MODEL_CONFIG_NAME)
    if document.get("format") != MODEL_FORMAT or "model" not in document:
        raise ValueError(
            f"{path / MODEL_CONFIG_NAME} is not a bertjax model config "
            f'(expected {{"format": "{MODEL_FORMAT}", "model": {{...}}}})'
        )
    _, config = model_config({"family": document.get("family", "bert"), **document["model"]})
    return config


def load_model_dir(path: str | pathlib.Path) -> tuple[Any, Params]:
    """Reads a bertjax model directory: (config, unboxed params on the default device)."""
    path = pathlib.Path(path)
    config = read_model_config(path)
    params_dir = (path / PARAMS_DIR).absolute()
    if not params_dir.is_dir():
        raise FileNotFoundError(f"bertjax model directory {path} has no weights ({PARAMS_DIR}/)")
    checkpointer = ocp.StandardCheckpointer()
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    try:
        abstract = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
            checkpointer.metadata(params_dir).item_metadata.tree,
        )
        params = checkpointer.restore(params_dir, abstract)
    except Exception as err:  # noqa: BLE001 - tensorstore and orbax errors of a damaged file
        cause = (str(err).splitlines() or [""])[0][:200]
        raise ValueError(
            f"{params_dir}: the parameters cannot be read ({type(err).__name__}: {cause}); the "
            "model directory is damaged or incomplete: save or copy it again"
        ) from None
    finally:
        checkpointer.close()
    params = upgrade_params(params)
    check_params_fit(config, params, path / MODEL_CONFIG_NAME)
    return config, params


def check_params_fit(config: Any, params: Params, config_file: pathlib.Path) -> None:
    """Raises naming `config_file` and the first parameter whose shape its config does not
    give (a config.json that belongs to another model)."""
    family = family_of(config)
    shapes = jax.eval_shape(
        Model(family, config, ()).init, jax.random.key(0), example_inputs(family)
    )["params"]["backbone"]
    expected = dict(jax.tree_util.tree_flatten_with_path(nn.meta.unbox(shapes))[0])
    for key, leaf in jax.tree_util.tree_flatten_with_path(params.get("backbone", {}))[0]:
        want = expected.get(key)
        if want is not None and tuple(want.shape) != tuple(np.shape(leaf)):
            raise ValueError(
                f"{config_file} does not match the parameters beside it: backbone"
                f"{jax.tree_util.keystr(key)} has shape {tuple(np.shape(leaf))}, the config "
                f"gives {tuple(want.shape)}"
            )


def hf_family(path: str | pathlib.Path):
    """The family whose converter reads the transformers directory `path` (by `model_type`)."""
    model_type = read_hf_config(path).get("model_type")
    for family in FAMILIES.values():
        if family.hf is not None and model_type in family.converter().MODEL_TYPES:
            return family
    supported = sorted(t for f in FAMILIES.values() if f.hf for t in f.converter().MODEL_TYPES)
    raise ValueError(
        f"{path}/config.json has model_type={model_type!r}; bertjax converts {supported}"
    )


def load_hf_config(path: str | pathlib.Path, **overrides: Any) -> Any:
    """The frozen model config of a transformers directory's `config.json`."""
    hf = hf_family(path).converter()
    return hf.config_from_hf(hf.read_hf_config(path), **overrides)


def load_hf_dir(
    path: str | pathlib.Path, *, with_heads: bool = True, **overrides: Any
) -> tuple[Any, Params, list[str]]:
    """Reads a transformers directory: (config, numpy params, paths initialised fresh).

    `overrides` are config fields set on top of config.json (e.g. `scan_layers=True`).
    """
    hf = hf_family(path).converter()
    config = hf.config_from_hf(hf.read_hf_config(path), **overrides)
    state = hf.read_hf_weights(path)
    params, initialised = hf.params_from_hf(
        state, config, with_heads=with_heads, init_fn=lambda: init_fresh_heads(config, with_heads)
    )
    return config, params, initialised


def init_fresh_heads(config: Any, with_heads: bool = True) -> Params:
    """Fresh parameters to take the pooler and heads from (not the encoder layers).

    Those do not depend on the depth, so a one-layer model is initialised: a fraction of the
    compile time of a deep one.
    """
    return init_params(_shallow(config), heads=None if with_heads else ())


def _shallow(config: Any) -> Any:
    """`config` with one unscanned layer (the heads' shapes do not depend on the depth)."""
    fields = {f.name for f in dataclasses.fields(config)}
    changes = {"num_layers": 1, "scan_layers": False}
    return dataclasses.replace(config, **{k: v for k, v in changes.items() if k in fields})


def heads_with_params(config: Any) -> list[str]:
    """The pretraining heads of the family that have parameters (GPT's tied LM head has none)."""
    family = family_of(config)
    model = Model(family, _shallow(config), pretraining_heads(family))
    shapes = jax.eval_shape(model.init, jax.random.key(0), example_inputs(family))
    return [name for name in family.pretraining_heads if name in shapes["params"].get("heads", {})]


def import_hf(
    hf_dir: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    *,
    overwrite: bool = False,
    scan_layers: bool = False,
) -> list[str]:
    """Converts a transformers directory into a bertjax model directory.

    Returns:
      The parameters initialised fresh because the checkpoint lacks them (e.g. the MLM and NSP
      heads of an encoder-only checkpoint), as `/`-joined paths.
    """
    hf_dir = pathlib.Path(hf_dir)
    check_out_dir(out_dir, overwrite=overwrite)  # before the work
    config, params, initialised = load_hf_dir(hf_dir, scan_layers=scan_layers)
    vocab = vocab_file(hf_dir)
    check_vocab(vocab, config, f"vocab_size in {hf_dir / MODEL_CONFIG_NAME}")
    options = family_of(config).converter().hf_tokenizer_options(hf_dir)
    fresh = sorted({p.split("/")[1] for p in initialised if p.startswith("heads/")})
    save_model(out_dir, params, config, vocab, options, overwrite=overwrite, fresh_heads=fresh)
    return initialised


def export_hf(
    model_dir: str | pathlib.Path, out_dir: str | pathlib.Path, *, overwrite: bool = False
) -> pathlib.Path:
    """Writes a bertjax model directory as a transformers pretraining directory (for BERT,
    `BertForPreTraining` with `vocab.txt`, `tokenizer_config.json`; for GPT, `GPT2LMHeadModel`
    with `vocab.json`, `merges.txt`): `config.json`, `model.safetensors` and the tokenizer."""
    model_dir = pathlib.Path(model_dir)
    config, params = load_model_dir(model_dir)
    hf = family_of(config).converter()
    present = params.get("heads", {})
    missing = [name for name in heads_with_params(config) if name not in present]
    if missing:
        raise ValueError(f"{model_dir} holds no pretraining heads {missing}; nothing to export")
    options = tokenizer_options(model_dir)
    params = jax.device_get(params)
    with _atomic_dir(out_dir, overwrite=overwrite) as tmp:
        hf.write_hf_files(tmp, params, config, vocab_file(model_dir), options)
    return pathlib.Path(out_dir)


def relayout(config: Any, params: Params, scan_layers: bool) -> tuple[Any, Params]:
    """Params (and config) in the scanned or unscanned layer layout."""
    paths = family_of(config).stack_paths
    if not paths or scan_layers == config.scan_layers:
        return config, params
    move = stack_layer_params if scan_layers else unstack_layer_params
    params = move(jax.device_get(params), paths, config.num_layers)
    return dataclasses.replace(config, scan_layers=scan_layers), params


def load_model_tokenizer(path: str | pathlib.Path) -> tokenizers.Tokenizer:
    """The tokenizer of a bertjax model directory, workdir or transformers directory.

    Byte-level BPE from `vocab.json` + `merges.txt` (GPT-2's, encoding as GPT2TokenizerFast),
    or WordPiece from `vocab.txt` with the options of `bertjax_tokenizer.json` (older
    directories: `tokenizer_config.json` with bertjax's keys), or of a transformers directory's
    `tokenizer_config.json` (`do_lower_case`, `strip_accents`, `tokenize_chinese_chars`). Special
    tokens ([CLS], [SEP], [MASK], ...) are matched whole in the text, and encoding adds
    [CLS] ... [SEP].
    """
    vocab = vocab_file(path)
    if tokenizer_kind(vocab) != "wordpiece":  # no options
        return load_tokenizer(vocab)
    return load_tokenizer(vocab, **resolve_options(tokenizer_options(path)))


def tokenizer_options(model_dir: str | pathlib.Path) -> dict[str, Any]:
    """The tokenizer options of a bertjax or transformers model directory ({} if none)."""
    model_dir = pathlib.Path(model_dir)
    if is_hf_dir(model_dir):
        return hf_family(model_dir).converter().hf_tokenizer_options(model_dir)
    return read_options(model_dir)


def is_hf_dir(path: str | pathlib.Path) -> bool:
    """Whether the `config.json` of `path` is a transformers one (it has a `model_type`)."""
    return "model_type" in read_json(pathlib.Path(path) / MODEL_CONFIG_NAME, missing_ok=True)


def _write_json(path: pathlib.Path, value: Any) -> None:
    files.atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def read_json(path: pathlib.Path, *, missing_ok: bool = False) -> dict[str, Any]:
    if missing_ok and not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def write_model_files(
    workdir: str | pathlib.Path, config: Any, vocab_file, options: Mapping[str, Any] | None = None
) -> None:
    """Writes `config.json`, `vocab.txt` and the tokenizer files of a training workdir (the
    params live in checkpoints); `options` default to those saved beside the vocabulary."""
    workdir = pathlib.Path(workdir)
    check_vocab(vocab_file, config, f"{workdir / MODEL_CONFIG_NAME}")
    options = dict(read_options(pathlib.Path(vocab_file).parent) if options is None else options)
    _write_json(workdir / MODEL_CONFIG_NAME, config_document(config))
    _write_tokenizer(workdir, config, vocab_file, options)
