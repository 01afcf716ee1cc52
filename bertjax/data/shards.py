"""The prepared-data format: a folder with `metadata.json` and per split `.npy` shards.

`prepare` writes it (`ShardWriter`, one per split); `PretrainingSource` reads it. Each shard
holds one `.npy` file per field of the instance builder (`shard_filename`), all with the same
number of rows; `metadata.json` records the builder, the vocabulary (and its sha256), the
settings, the shard sizes of each split and what was read, cut or skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

import numpy as np

FORMAT_VERSION = 1
SPLITS = ("train", "eval")


def field_dtypes(vocab_size: int) -> dict[str, type]:
    """Storage dtype of each shard field; ids fit uint16 when the vocabulary does."""
    return {
        "input_ids": np.uint16 if vocab_size <= 1 << 16 else np.int32,
        "token_type_ids": np.uint8,
        "lengths": np.uint16,
        "next_sentence_labels": np.uint8,
        "word_starts": np.uint8,
    }


class ShardWriter:
    """Buffers instance arrays of one split and writes them as `.npy` shards of `shard_size`."""

    def __init__(self, directory: pathlib.Path, shard_size: int):
        self.directory = directory
        self.shard_size = shard_size
        self.buffer: list[dict[str, np.ndarray]] = []
        self.buffered = 0
        self.shards: list[int] = []
        self.tokens = 0
        self.random_next = 0
        self.fields: tuple[str, ...] = ()
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(arrays["lengths"])
        if not n:
            return
        self.fields = tuple(arrays)
        self.tokens += int(arrays["lengths"].sum(dtype=np.int64))
        if "next_sentence_labels" in arrays:
            self.random_next += int(arrays["next_sentence_labels"].sum(dtype=np.int64))
        self.buffer.append(arrays)
        self.buffered += n
        while self.buffered >= self.shard_size:
            self._write(self.shard_size)

    def close(self) -> None:
        if self.buffered:
            self._write(self.buffered)

    def _write(self, n: int) -> None:
        merged = {f: np.concatenate([b[f] for b in self.buffer]) for f in self.fields}
        index = len(self.shards)
        for field in self.fields:
            np.save(self.directory / shard_filename(field, index), merged[field][:n])
        rest = {f: merged[f][n:] for f in self.fields}
        self.buffered -= n
        self.buffer = [rest] if self.buffered else []
        self.shards.append(n)


def shard_filename(field: str, index: int) -> str:
    """The file of one field of one shard, e.g. `input_ids-00000.npy`."""
    return f"{field}-{index:05d}.npy"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file (the vocabulary a dataset was prepared with)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_metadata(directory: str | os.PathLike) -> dict:
    """Reads and checks `metadata.json` of a prepared dataset."""
    path = pathlib.Path(directory) / "metadata.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} is not a prepared dataset")
    metadata = json.loads(path.read_text(encoding="utf-8"))
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {metadata.get('format_version')} is not {FORMAT_VERSION}; "
            "prepare the data again"
        )
    return metadata
