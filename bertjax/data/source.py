"""Reading prepared shards for training: random access to the examples of one split."""

from __future__ import annotations

import bisect
import os
import pathlib

import numpy as np

from bertjax.data import instances as instances_lib
from bertjax.data import shards


class PretrainingSource:
    """Random access to prepared instances of one split, memory-mapped shard by shard.

    Each item is a dict of arrays made by the instance builder the data was prepared with
    (its `example`): for "nsp_pairs" `input_ids`, `token_type_ids`, `attention_mask` int32 [L],
    `next_sentence_label` int32 [] and `word_starts` bool [L]; for "lm_blocks" `input_ids` and
    `attention_mask` int32 [L].

    Args:
      directory: Output folder of `prepare`.
      split: "train" or "eval".
      vocab_path: When given, its sha256 must match the one the data was prepared with.
      document_attention: "lm_blocks" only: number the documents in `attention_mask`.
      entity_masking: data prepared with entities: each `[ENT] ... [/ENT]` span is one word
        for whole-word masking (`entities.entity_word_starts`).

    Data prepared with `entities` also gives `entity_ids` int32 [L] (1 from `[ENT]` to `[/ENT]`).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        split: str = "train",
        *,
        vocab_path: str | os.PathLike | None = None,
        document_attention: bool = False,
        entity_masking: bool = False,
    ):
        self.directory = pathlib.Path(directory)
        self.metadata = shards.load_metadata(directory)
        splits = self.metadata["splits"]
        if split not in splits:
            raise ValueError(f"split {split!r} not in {directory}; available: {sorted(splits)}")
        if vocab_path is not None:
            digest = shards.file_sha256(vocab_path)
            if digest != self.metadata["vocab_sha256"]:
                raise ValueError(
                    f"vocabulary mismatch: {vocab_path} (sha256 {digest[:12]}...) is not the "
                    f"vocabulary {self.metadata['vocab_file']} (sha256 "
                    f"{self.metadata['vocab_sha256'][:12]}...) that {directory} was prepared with"
                )
        self.split = split
        self.instances = self.metadata.get("instances", "nsp_pairs")
        self.fields = tuple(self.metadata.get("fields", self.builder.FIELDS))
        self.document_attention = document_attention
        self.max_seq_len = self.metadata["max_seq_len"]
        self.entities = self.metadata.get("entities", "")
        self.entity_marker_ids = self.metadata.get("entity_marker_ids")
        if entity_masking and not self.entities:
            raise ValueError(
                f"config.data.entity_masking=True but {directory} was prepared without entity "
                "spans (set config.data.entities and prepare it again)"
            )
        self.entity_masking = entity_masking
        self._offsets = np.cumsum([0, *splits[split]["shards"]]).tolist()
        self._shards: list[dict[str, np.ndarray]] | None = None

    @property
    def builder(self):
        """The instance builder module the data was prepared with (a module does not pickle)."""
        return instances_lib.get(self.instances)

    def __len__(self) -> int:
        return self._offsets[-1]

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} {self.split} examples")
        shard = bisect.bisect_right(self._offsets, index) - 1
        row = index - self._offsets[shard]
        arrays = self._open()[shard]
        length = int(arrays["lengths"][row])
        attention_mask = np.zeros(self.max_seq_len, np.int32)
        attention_mask[:length] = 1
        return self.builder.example(arrays, row, attention_mask, self)

    def lengths(self) -> np.ndarray:
        """Real tokens of every instance, int64 [len(self)]."""
        return np.concatenate([shard["lengths"] for shard in self._open()]).astype(np.int64)

    def __repr__(self) -> str:
        return f"PretrainingSource({str(self.directory)!r}, {self.split!r}, n={len(self)})"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_shards"] = None  # memory maps are reopened in the receiving process
        return state

    def _open(self) -> list[dict[str, np.ndarray]]:
        if self._shards is None:
            folder = self.directory / self.split
            self._shards = [
                {
                    f: np.load(folder / shards.shard_filename(f, i), mmap_mode="r")
                    for f in self.fields
                }
                for i in range(len(self._offsets) - 1)
            ]
        return self._shards
