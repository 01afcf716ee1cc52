"""Packing: several prepared instances per row, attention kept within each (Krell et al. 2021)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from bertjax.data.source import PretrainingSource


def pack_plan(lengths: Sequence[int], capacity: int, max_per_row: int) -> np.ndarray:
    """Groups instances into rows of at most `capacity` tokens and `max_per_row` instances.

    Best-fit decreasing: instances are placed longest first, each into the open row whose free
    space fits it most tightly (a new row when none does). Deterministic in `lengths`.

    Returns:
      int64 [rows, max_per_row]: the instance indices of each row in placement order, -1 padding.
      Every index appears exactly once.
    """
    lengths = np.asarray(lengths, np.int64)
    if max_per_row < 1:
        raise ValueError(f"config.data.max_pack_size={max_per_row} must be >= 1")
    if lengths.size and (lengths.min() < 1 or lengths.max() > capacity):
        raise ValueError(f"instance lengths must be in [1, {capacity}]")
    rows: list[list[int]] = []
    open_by_space: dict[int, list[int]] = {}  # free tokens -> open rows with that much room
    spaces: list[int] = []  # sorted keys of open_by_space
    for index in np.argsort(-lengths, kind="stable"):
        need = int(lengths[index])
        at = bisect.bisect_left(spaces, need)
        if at < len(spaces):
            space = spaces[at]
            row = open_by_space[space].pop()
            if not open_by_space[space]:
                del open_by_space[space]
                spaces.pop(at)
        else:
            space, row = capacity, len(rows)
            rows.append([])
        rows[row].append(int(index))
        left = space - need
        if left > 0 and len(rows[row]) < max_per_row:
            if left not in open_by_space:
                open_by_space[left] = []
                bisect.insort(spaces, left)
            open_by_space[left].append(row)
    plan = np.full((len(rows), max_per_row), -1, np.int64)
    for r, members in enumerate(rows):
        plan[r, : len(members)] = members
    return plan


class PackedSource:
    """Rows of several prepared instances each, without cross-contamination (Krell et al. 2021).

    The instances of `source` are grouped by `pack_plan` into rows of the same length. In a row,
    `attention_mask` holds the segment of each token (1, 2, ... per instance, 0 for padding), which
    the model turns into block-diagonal attention and per-instance positions; NSP comes from each
    instance's [CLS]:

      `input_ids`, `token_type_ids`, `attention_mask` int32 [L], `word_starts` bool [L],
      `next_sentence_label` int32 [K], `nsp_positions` int32 [K] (where each [CLS] is),
      `nsp_weights` float32 [K] (1 for an instance, 0 for an empty slot); K = `max_per_row`.
    """

    def __init__(self, source: PretrainingSource, max_per_row: int):
        self.source = source
        self.max_per_row = max_per_row
        self.max_seq_len = source.max_seq_len
        lengths = source.lengths()
        self.plan = pack_plan(lengths, self.max_seq_len, max_per_row)
        self.real_tokens = int(lengths.sum())

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        length, k = self.max_seq_len, self.max_per_row
        out = {
            "input_ids": np.zeros(length, np.int32),
            "token_type_ids": np.zeros(length, np.int32),
            "attention_mask": np.zeros(length, np.int32),
            "word_starts": np.zeros(length, bool),
            "next_sentence_label": np.zeros(k, np.int32),
            "nsp_positions": np.zeros(k, np.int32),
            "nsp_weights": np.zeros(k, np.float32),
        }
        fields = ["input_ids", "token_type_ids", "word_starts"]
        if self.source.entity_marker_ids:
            out["entity_ids"] = np.zeros(length, np.int32)
            fields.append("entity_ids")
        start = 0
        for slot, member in enumerate(self.plan[int(index)]):
            if member < 0:
                break
            item = self.source[int(member)]
            n = int(item["attention_mask"].sum())
            for field in fields:
                out[field][start : start + n] = item[field][:n]
            out["attention_mask"][start : start + n] = slot + 1
            out["next_sentence_label"][slot] = item["next_sentence_label"]
            out["nsp_positions"][slot] = start
            out["nsp_weights"][slot] = 1.0
            start += n
        return out

    def __repr__(self) -> str:
        return f"PackedSource({self.source!r}, rows={len(self)}, max_per_row={self.max_per_row})"
