"""A pretraining run's data found or made: the vocabulary (given or trained on the corpus) and the
prepared instances (`prepare_data`), then opened as sources checked against the config
(`open_sources`). `check_config` checks the data fields against the model config before any
data work, `check_vocab_size` the vocabulary made against it. Numpy-only, like the rest of
`bertjax.data`.
"""

from __future__ import annotations

import logging
import pathlib
import shutil

import ml_collections

from bertjax.config import resolve_path
from bertjax.data import instances as instance_builders
from bertjax.data import tokenizer_kinds
from bertjax.data.corpus import BUILTIN_CORPUS, resolve_corpus
from bertjax.data.packing import PackedSource
from bertjax.data.prepare import prepare
from bertjax.data.shards import file_sha256, load_metadata
from bertjax.data.source import PretrainingSource
from bertjax.data.text import utf8_policy
from bertjax.files import named_errors

log = logging.getLogger(__name__)


def prepare_data(
    config: ml_collections.ConfigDict,
    workdir: pathlib.Path,
    vocab: pathlib.Path | None = None,
    *,
    process_count: int = 1,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Finds or makes the vocabulary and the prepared instances (`_prepare_data`), the corpus
    read under `config.data.strict_utf8`. Returns (data_dir, vocab)."""
    with utf8_policy(config.data.get("strict_utf8", False)):
        return _prepare_data(config, workdir, vocab, process_count=process_count)


def _prepare_data(
    config: ml_collections.ConfigDict,
    workdir: pathlib.Path,
    vocab: pathlib.Path | None = None,
    *,
    process_count: int = 1,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Finds or makes the vocabulary and the prepared instances. Returns (data_dir, vocab).

    `vocab`: a given vocabulary (continued pretraining) with its tokenizer options saved beside
    it; the data must have been prepared with it.
    """
    data_dir = resolve_path(config.data.dir) if config.data.dir else workdir / "data"
    if (data_dir / "metadata.json").exists():
        metadata = load_metadata(data_dir)
        if vocab is not None:
            if metadata.get("vocab_sha256") != file_sha256(vocab):
                raise ValueError(
                    f"{data_dir} was prepared with the vocabulary {metadata['vocab_file']}, not "
                    f"that of config.init_from={config.init_from!r} ({vocab}); prepare the "
                    "corpus again (set config.data.corpus and leave config.data.dir empty)"
                )
            return data_dir, vocab
        vocab = resolve_path(config.data.vocab or metadata["vocab_file"])
        return data_dir, vocab
    if process_count > 1:  # one preparation, readable by every process
        raise ValueError(
            f"config.data.dir={config.data.dir!r} holds no prepared data: with "
            f"{process_count} processes, prepare it once (`bertjax prepare`, or a "
            "one-process run) and set config.data.dir to a folder every process can read"
        )
    if config.data.dir:
        raise FileNotFoundError(
            f"config.data.dir={config.data.dir!r} has no metadata.json; run `bertjax prepare`"
        )
    _clear_interrupted(data_dir)
    files = resolve_corpus(config.data.corpus, workdir)
    lowercase = None if vocab is not None else config.data.lowercase  # None: vocab's options
    if vocab is None and config.data.vocab:
        vocab = resolve_path(config.data.vocab)
    elif vocab is None:
        with named_errors("the vocabulary", workdir / "tokenizer"):  # a full disk, named
            vocab = train_tokenizer(config, files, workdir / "tokenizer")
    with named_errors("the prepared instances", data_dir):
        _prepare(config, workdir, files, vocab, data_dir, lowercase)
    return data_dir, vocab


def _prepare(config, workdir, files, vocab, data_dir, lowercase) -> None:
    prepare(
        files,
        vocab,
        data_dir,
        max_seq_len=config.data.max_seq_len,
        short_seq_prob=config.data.short_seq_prob,
        eval_fraction=config.data.eval_fraction,
        seed=config.train.seed,
        documents_per_file=config.data.corpus == BUILTIN_CORPUS,
        lowercase=lowercase,
        instances=config.data.instances,
        entities=config.data.get("entities", ""),
        nsp=config.get("objective", "mlm_nsp") != "mlm",  # MLM only: single sentences kept
        **builder_options(config, workdir),
    )


def builder_options(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    """`prepare`'s options of builders that read their own files (parallel pairs): the held-out
    files `config.data.eval_corpus`, `config.data.reader` and `config.data.max_target_len`."""
    eval_corpus = config.data.get("eval_corpus", "")
    return {
        "eval_files": resolve_corpus(eval_corpus, workdir) if eval_corpus else (),
        "reader_options": dict(config.data.get("reader", {})),
        "max_target_len": config.data.get("max_target_len", 0),
    }


def _clear_interrupted(data_dir: pathlib.Path) -> None:
    """Removes the workdir's `data/` left by an interrupted preparation (SIGKILL, Ctrl-C, a full
    disk): `metadata.json` is written last, so a folder without it is incomplete; the same
    command redoes it."""
    if data_dir.is_dir() and any(data_dir.iterdir()):
        log.warning(
            "%s holds an interrupted preparation (no metadata.json, which is written last); "
            "preparing the data again",
            data_dir,
        )
        shutil.rmtree(data_dir)


def train_tokenizer(config: ml_collections.ConfigDict, files, out_dir: pathlib.Path):
    """Trains the `config.data.tokenizer` kind on the corpus (read under
    `config.data.strict_utf8`); returns its vocabulary file."""
    with utf8_policy(config.data.get("strict_utf8", False)):
        return tokenizer_kinds.get(config.data.tokenizer).train(files, out_dir, config)


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


def open_sources(config: ml_collections.ConfigDict, data_dir: pathlib.Path, vocab: pathlib.Path):
    """The train and eval sources of prepared data (packed with `config.data.pack_sequences`),
    checked against `config.data`; raises naming the field that disagrees."""
    options = dict(
        vocab_path=vocab,
        document_attention=config.data.document_attention,
        entity_masking=bool(config.data.get("entity_masking")),
    )
    train_source = PretrainingSource(data_dir, "train", **options)
    eval_source = PretrainingSource(data_dir, "eval", **options)
    if train_source.entities != config.data.get("entities", ""):
        raise ValueError(
            f"config.data.entities={config.data.get('entities', '')!r} but {data_dir} was "
            f"prepared with entities={train_source.entities!r}; prepare the corpus again"
        )
    if train_source.instances != config.data.instances:
        raise ValueError(
            f"config.data.instances={config.data.instances!r} but {data_dir} holds "
            f"{train_source.instances!r} instances"
        )
    if train_source.max_seq_len != config.data.max_seq_len:
        raise ValueError(
            f"config.data.max_seq_len={config.data.max_seq_len} but {data_dir} was prepared at "
            f"length {train_source.max_seq_len}"
        )
    if config.data.pack_sequences:
        return tuple(_packed(s, config.data.max_pack_size) for s in (train_source, eval_source))
    return train_source, eval_source


def check_config(config: ml_collections.ConfigDict, cfg) -> None:
    """The pretraining data checks that need no data (run with `trainer.check_config`, before
    any data work): the tokenizer kind and instance builder exist, and the data fields fit the
    model config `cfg`; raise naming the fields."""
    tokenizer_kinds.get(config.data.tokenizer)  # raises naming the field
    instance_builders.get(config.data.instances)
    limit = getattr(cfg, "max_position_embeddings", None)  # None: any length (recurrent)
    if limit is not None and config.data.max_seq_len > limit:
        raise ValueError(
            f"config.data.max_seq_len={config.data.max_seq_len} exceeds "
            f"config.model.max_position_embeddings={cfg.max_position_embeddings}"
        )
    if config.data.pack_sequences and getattr(cfg, "attention_impl", "xla") == "cudnn":
        raise ValueError(
            "config.data.pack_sequences=True needs block-diagonal attention, which "
            "config.model.attention_impl='cudnn' (key lengths only) does not do; use 'xla'"
        )
    if config.data.pack_sequences and not instance_builders.get(config.data.instances).PACKABLE:
        raise ValueError(
            "config.data.pack_sequences=True packs sentence pairs; "
            f"config.data.instances={config.data.instances!r} blocks are full already"
        )
    entities, entity_masking = config.data.get("entities", ""), config.data.get("entity_masking")
    if entities and getattr(cfg, "entity_vocab_size", 0) < 2:
        raise ValueError(
            f"config.data.entities={entities!r} feeds entity_ids to the model: set "
            "config.model.entity_vocab_size=2 (the BERT family's entity embedding)"
        )
    if entity_masking and not (entities and config.data.whole_word_masking):
        raise ValueError(
            "config.data.entity_masking=True masks each entity as one word: it needs "
            "config.data.entities and config.data.whole_word_masking=True"
        )
    if config.data.pack_sequences and config.data.max_pack_size < 1:
        raise ValueError(f"config.data.max_pack_size={config.data.max_pack_size} must be >= 1")


def check_vocab_size(cfg, vocab_size: int) -> None:
    """Raises unless the vocabulary fills `config.model.vocab_size` exactly."""
    if vocab_size != cfg.vocab_size:
        raise ValueError(
            f"the vocabulary has {vocab_size} tokens but config.model.vocab_size={cfg.vocab_size}"
        )
