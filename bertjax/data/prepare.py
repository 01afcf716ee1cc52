"""The prepare driver: text files -> chunks -> worker processes -> shards of each split.

`prepare` turns raw text into fixed-shape instances with the instance builder picked by
`instances` (`config.data.instances`, see `instances.BUILDERS`) and writes them as
memory-mappable numpy shards (`shards`); `source.PretrainingSource` reads them back. Masking is
not done here: it is dynamic, on device, every step, so the original `dupe_factor` (several
differently masked copies of the corpus) is not needed.

Streaming and parallelism: the main process reads files one line at a time (`text`), splits
sentences, assigns documents to the train or eval split, and groups each split's documents into
chunks of about `chunk_chars` characters. Worker processes tokenize a chunk and build its
instances (`builder.build`) with a random generator seeded by `(seed, chunk index)`, so the
output depends on the seed and the chunking only, not on the number or timing of workers. Only a
bounded number of chunks is in flight, and instances are written shard by shard, so memory does
not grow with the corpus.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import multiprocessing
import os
import pathlib
import shutil
from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np

from bertjax.data import entities as entities_lib
from bertjax.data import instances as instances_lib
from bertjax.data import shards
from bertjax.data import tokenizer as tokenizer_lib
from bertjax.data.instances.base import Settings, Worker
from bertjax.data.text import (
    MAX_DOCUMENT_CHARS,
    MAX_LINE_BYTES,
    MAX_SENTENCE_CHARS,
    Statistics,
    iter_documents,
    resolve_files,
)
from bertjax.files import atomic_write_text

logger = logging.getLogger(__name__)


_worker: list[Worker] = []  # the builder context of this process (set by _init_worker)


def _init_worker(settings: Settings, single_threaded: bool) -> None:
    if single_threaded:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tok = tokenizer_lib.load_tokenizer(settings.vocab_path, lowercase=settings.lowercase)
    vocab = tokenizer_lib.read_vocab(settings.vocab_path)
    _worker[:] = [
        Worker(
            settings=settings,
            tokenizer=tok,
            special=tokenizer_lib.special_token_ids(tok, settings.vocab_path),
            vocab=vocab,
            ids_dtype=shards.field_dtypes(len(vocab))["input_ids"],
            spans=entity_source(settings.entities, tok),
        )
    ]


def _process_chunk(task: tuple[int, str, list[list[str]]]) -> tuple[str, dict, dict]:
    chunk_index, split, documents = task
    worker = _worker[0]
    builder = instances_lib.get(worker.settings.instances)
    return split, *builder.build(chunk_index, documents, worker)


def entity_source(spec: str, tok) -> entities_lib.SpanSource | None:
    """The span source of `config.data.entities` ("" none), its markers checked in `tok`."""
    if not spec:
        return None
    if spec == "jsonl":
        raise ValueError(
            "config.data.entities='jsonl' is for JSONL task files; a text corpus takes 'markup' "
            "(inline <text:TYPE>) or 'gazetteer:<file>'"
        )
    source = entities_lib.SpanSource(spec, "config.data.entities")
    source.marker_ids(tok, "config.data.entities")
    return source


def is_eval_document(index: int, eval_fraction: float) -> bool:
    """Held-out choice for the `index`-th usable document: evenly spread, about `eval_fraction`
    of all, the second document (index 1) first so that two documents already give one."""
    if index < 1 or eval_fraction <= 0:
        return False
    return math.ceil(index * eval_fraction) > math.ceil((index - 1) * eval_fraction)


def _documents(builder, files, stats: Statistics, documents_per_file: bool, reader_options):
    """The documents of `files`: the builder's own reader (`read_documents`, e.g. parallel
    pairs) if it has one, else text files (`text.iter_documents`)."""
    if hasattr(builder, "read_documents"):
        yield from builder.read_documents(files, stats, reader_options)
        return
    for path in files:
        yield from iter_documents(path, stats, documents_per_file=documents_per_file)


def _iter_chunks(
    streams: Sequence[tuple[str | None, Iterator[list[str]]]],
    stats: Statistics,
    *,
    eval_fraction: float,
    chunk_chars: int,
    min_sentences: int = 2,
) -> Iterator[tuple[int, str, list[list[str]]]]:
    """Yields `(chunk_index, split, documents)`, each chunk about `chunk_chars` of one split;
    documents with fewer than `min_sentences` sentences are skipped (NSP needs two). `streams`:
    (split, documents); split None: `eval_fraction` of the documents go to eval."""
    buffers: dict[str, list] = {s: [] for s in shards.SPLITS}
    sizes = dict.fromkeys(shards.SPLITS, 0)
    chunk_index, usable = 0, 0
    for fixed, documents in streams:
        for document in documents:
            if not document:
                continue
            stats.documents += 1
            if len(document) < min_sentences:
                stats.documents_skipped_single_sentence += 1
                continue
            split = fixed or ("eval" if is_eval_document(usable, eval_fraction) else "train")
            usable += 1
            buffers[split].append(document)
            sizes[split] += sum(map(len, document))
            if sizes[split] >= chunk_chars:
                yield chunk_index, split, buffers[split]
                chunk_index += 1
                buffers[split], sizes[split] = [], 0
    for split in shards.SPLITS:
        if buffers[split]:
            yield chunk_index, split, buffers[split]
            chunk_index += 1


def _run_chunks(tasks, settings: Settings, num_workers: int) -> Iterator[tuple[str, dict, dict]]:
    """Processes chunks in order, in `num_workers` processes (0: here), few chunks in flight."""
    if num_workers == 0:
        _init_worker(settings, single_threaded=False)
        yield from map(_process_chunk, tasks)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(num_workers, _init_worker, (settings, True)) as pool:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.apply_async(_process_chunk, (task,)))
            if len(pending) >= 2 * num_workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _check_arguments(max_seq_len, short_seq_prob, eval_fraction, shard_size, chunk_chars):
    if not 8 <= max_seq_len <= 65535:
        raise ValueError(f"max_seq_len must be in [8, 65535], got {max_seq_len}")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise ValueError(f"short_seq_prob must be in [0, 1], got {short_seq_prob}")
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    if chunk_chars < 1:
        raise ValueError(f"chunk_chars must be positive, got {chunk_chars}")


def _prepare_out_dir(out_dir: pathlib.Path, overwrite: bool) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"output folder {out_dir} is not empty (pass overwrite=True)")
        if not (out_dir / "metadata.json").is_file():
            raise FileExistsError(f"refusing to overwrite {out_dir}: it is not a prepared dataset")
        for split in shards.SPLITS:
            shutil.rmtree(out_dir / split, ignore_errors=True)
        (out_dir / "metadata.json").unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def prepare(
    files: Sequence[str | os.PathLike],
    vocab_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    max_seq_len: int = 128,
    short_seq_prob: float = 0.1,
    eval_fraction: float = 0.01,
    seed: int = 0,
    num_workers: int | None = None,
    documents_per_file: bool = False,
    shard_size: int = 1 << 16,
    lowercase: bool | None = None,
    chunk_chars: int = 1 << 20,
    overwrite: bool = False,
    instances: str = "nsp_pairs",
    entities: str = "",
    nsp: bool = True,
    eval_files: Sequence[str | os.PathLike] = (),
    reader_options: dict | None = None,
    max_target_len: int = 0,
) -> dict:
    """Prepares pretraining instances from text files into `out_dir`.

    Args:
      files: Text files, folders (their `*.txt`) or glob patterns.
      vocab_path: WordPiece `vocab.txt` (its `tokenizer_config.json`, if any, is honoured), or
        a byte-level BPE `vocab.json` (merges.txt beside it) for "lm_blocks".
      out_dir: Output folder; must be empty or a dataset prepared earlier with `overwrite`.
      max_seq_len: L, the padded instance length, specials included.
      short_seq_prob: Probability that a document uses a random shorter target length.
      eval_fraction: Fraction of documents held out for the `eval` split.
      seed: Seed of all random choices; the output is a function of the inputs and the seed.
      num_workers: Worker processes; None: one per CPU (none for files of at most `chunk_chars`
        bytes); 0: everything in this process.
      documents_per_file: Treat each file as one document (blank lines end paragraphs).
      shard_size: Instances per shard file.
      lowercase: Tokenizer option; None: from the vocabulary's config, else True.
      chunk_chars: Characters of text per unit of work (and per NSP random-document pool).
      overwrite: Replace an earlier prepared dataset in `out_dir`.
      instances: The instance builder (`instances.BUILDERS`): "nsp_pairs" (BERT), "lm_blocks"
        (GPT), ...
      entities: "markup" or "gazetteer:<file>": `[ENT]`/`[/ENT]` written around each entity
        span of every sentence before tokenization (entity-aware BERT; the vocabulary must hold
        the markers); `PretrainingSource` then adds `entity_ids`. "": none.
      nsp: "nsp_pairs" for next-sentence prediction: single-sentence documents are skipped
        (no pair A/B); False (an MLM-only objective) keeps them, B drawn from another document.
      eval_files: held-out files (as `files`): their documents are the eval split, all of
        `files` train, `eval_fraction` unused. (): `eval_fraction` of `files`.
      reader_options: options of a builder that reads its own files (`read_documents`, e.g.
        "parallel_pairs": `config.data.reader`).
      max_target_len: the longest target of a builder with targets ("parallel_pairs").

    Returns:
      The metadata, also written to `out_dir/metadata.json`.
    """
    _check_arguments(max_seq_len, short_seq_prob, eval_fraction, shard_size, chunk_chars)
    builder = instances_lib.get(instances)
    paths = resolve_files(files)
    eval_paths = resolve_files(eval_files) if eval_files else []
    vocab_path = pathlib.Path(vocab_path)
    tok = tokenizer_lib.load_tokenizer(vocab_path, lowercase=lowercase)
    special = tokenizer_lib.special_token_ids(tok, str(vocab_path))
    vocab_size = tok.get_vocab_size()
    _check_builder(builder, instances, special, entities, vocab_path)
    markers = None
    if entity_source(entities, tok) is not None:
        markers = entities_lib.SpanSource.marker_ids(tok, "config.data.entities")
    out = pathlib.Path(out_dir)
    _prepare_out_dir(out, overwrite)
    if num_workers is None:  # a worker costs seconds to spawn: none for a single chunk of text
        one_chunk = sum(os.path.getsize(p) for p in paths) <= chunk_chars
        num_workers = 0 if one_chunk else _default_workers()
    settings = Settings(
        str(vocab_path),
        lowercase,
        max_seq_len,
        short_seq_prob,
        seed,
        instances,
        entities,
        nsp,
        max_target_len,
    )
    stats = Statistics()
    read = functools.partial(_documents, builder, stats=stats, reader_options=reader_options)
    streams = [(None, read(paths, documents_per_file=documents_per_file))]
    if eval_paths:  # held-out files: the eval split, and all of `files` train
        streams = [("train", streams[0][1]), ("eval", read(eval_paths, documents_per_file=False))]
    tasks = _iter_chunks(
        streams,
        stats,
        eval_fraction=eval_fraction,
        chunk_chars=chunk_chars,
        min_sentences=builder.MIN_SENTENCES if nsp else 1,
    )
    splits = _write_splits(_run_chunks(tasks, settings, num_workers), out, shard_size, stats)
    metadata = {
        "format_version": shards.FORMAT_VERSION,
        "instances": instances,
        "vocab_file": str(vocab_path),
        "vocab_sha256": shards.file_sha256(vocab_path),
        "vocab_size": vocab_size,
        "special_ids": special,
        "lowercase": lowercase,
        "max_seq_len": max_seq_len,
        "short_seq_prob": short_seq_prob,
        "eval_fraction": eval_fraction,
        "seed": seed,
        "documents_per_file": documents_per_file,
        "chunk_chars": chunk_chars,
        "dtypes": {f: np.dtype(d).name for f, d in shards.field_dtypes(vocab_size).items()},
        "fields": list(builder.FIELDS),
        "word_starts_packed": True,
        "splits": splits,
        "source_files": [str(p) for p in paths],
        "eval_files": [str(p) for p in eval_paths],
        "max_target_len": max_target_len,
        "entities": entities,
        "entity_marker_ids": list(markers) if markers else None,
        "statistics": dataclasses.asdict(stats),
    }
    atomic_write_text(out / "metadata.json", json.dumps(metadata, indent=2) + "\n")
    _log_summary(metadata)
    return metadata


def _check_builder(builder, instances: str, special: dict, entities: str, vocab_path) -> None:
    """Raises unless the vocabulary has the builder's special tokens and the builder writes
    entity spans when `entities` asks for them."""
    missing = [key for key in builder.SPECIALS if key not in special]
    if missing:
        raise ValueError(
            f"config.data.instances={instances!r} needs the special tokens {missing}, which the "
            f"{tokenizer_lib.tokenizer_kind(vocab_path)} vocabulary {vocab_path} has not; "
            "choose another config.data.tokenizer or config.data.vocab"
        )
    if entities and not builder.ENTITIES:
        raise ValueError(
            f"config.data.entities={entities!r} needs instances that write entity spans "
            f"({_entity_builders()}), not config.data.instances={instances!r}"
        )


def _entity_builders() -> tuple[str, ...]:
    return tuple(n for n in instances_lib.BUILDERS if instances_lib.get(n).ENTITIES)


def _write_splits(results, out: pathlib.Path, shard_size: int, stats: Statistics) -> dict:
    """Writes chunk results to shards of their split; returns the per-split summaries."""
    writers = {split: shards.ShardWriter(out / split, shard_size) for split in shards.SPLITS}
    documents = dict.fromkeys(shards.SPLITS, 0)
    for split, arrays, chunk_stats in results:
        writers[split].add(arrays)
        documents[split] += chunk_stats.pop("documents")
        stats.add(chunk_stats)
    for writer in writers.values():
        writer.close()
    return {split: _split_summary(writers[split], documents[split]) for split in shards.SPLITS}


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _split_summary(writer: shards.ShardWriter, documents: int) -> dict:
    return {
        "num_examples": sum(writer.shards),
        "num_documents": documents,
        "num_tokens": writer.tokens,
        "num_random_next": writer.random_next,
        "shards": writer.shards,
    }


def _log_summary(metadata: dict) -> None:
    stats = metadata["statistics"]
    for split, summary in metadata["splits"].items():
        logger.info(
            "%s: %d instances from %d documents, %d tokens",
            split,
            summary["num_examples"],
            summary["num_documents"],
            summary["num_tokens"],
        )
    for key, message in DATA_NOTES.items():
        if stats.get(key):
            logger.warning(message.format(n=stats[key], **metadata))


# Statistics field -> what a non-zero count means, in words (logged after preparation)
DATA_NOTES = {
    "files_empty": "{n} input files were empty and were skipped",
    "files_skipped_binary": "{n} input files look binary (not text) and were skipped",
    "lines_repaired_utf8": "{n} lines held invalid UTF-8 and were repaired as U+FFFD",
    "lines_cut_long": f"{{n}} lines longer than {MAX_LINE_BYTES} bytes were read in pieces",
    "sentences_cut_long": (
        f"{{n}} cuts were made in sentences longer than {MAX_SENTENCE_CHARS} characters"
    ),
    "sentences_split_tokens": (
        "{n} times a sentence had more tokens than fit in one instance (max_seq_len="
        "{max_seq_len}) and was split into several; nothing was lost"
    ),
    "documents_cut_long": (
        f"{{n}} documents longer than {MAX_DOCUMENT_CHARS} characters were cut into parts"
    ),
    "documents_skipped_single_sentence": (
        "{n} documents with a single sentence were skipped (next-sentence prediction needs two)"
    ),
    "rows_skipped_bad": "{n} parallel rows without both texts were skipped (logged by file and line)",
    "pairs_truncated": (
        "{n} parallel pairs were cut to max_seq_len={max_seq_len} source or "
        "max_target_len={max_target_len} target tokens"
    ),
    "documents_skipped_after_tokenization": (
        "{n} documents had fewer than two non-empty sentences after tokenization and were skipped"
    ),
}
