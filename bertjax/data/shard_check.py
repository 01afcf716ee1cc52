"""Prepared shards are checked when a run opens them, so damage is named, not a NaN loss.

`check_shards(source, vocab_size)` opens every shard of a `PretrainingSource` split (memory
maps: a truncated `.npy` fails here, naming the file), checks each field's row count against
`metadata.json` and that every token id is below the model's vocabulary size. The id check
reads each `input_ids` shard once (a max over the memory map: about 1 s per GB on a disk
that is in the page cache, 23 MB for the 105k instances of the README's corpus at length 128);
the time is logged.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from bertjax.data.shards import shard_filename

log = logging.getLogger(__name__)


def check_shards(source, vocab_size: int) -> None:
    """Raises a ValueError naming the shard file when a shard is unreadable, holds another
    number of rows than `metadata.json` says, or holds a token id >= `vocab_size`.

    Args:
      source: a `data.source.PretrainingSource` (one split).
      vocab_size: the model's vocabulary size.
    """
    started = time.perf_counter()
    folder = source.directory / source.split
    counts = source.metadata["splits"][source.split]["shards"]
    nbytes = 0
    for index, count in enumerate(counts):
        for field in source.fields:
            path = folder / shard_filename(field, index)
            try:
                array = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise ValueError(
                    f"{path}: shard unreadable ({err}); prepare the data again"
                ) from None
            if array.shape[0] != count:
                raise ValueError(
                    f"{path}: {array.shape[0]} rows, but {source.directory}/metadata.json says "
                    f"{count}; prepare the data again"
                )
            if field == "input_ids" and array.size:
                nbytes += array.nbytes
                top = int(array.max())
                if top >= vocab_size:
                    raise ValueError(
                        f"{path}: token id {top} is not below the vocabulary size {vocab_size} "
                        "(data prepared with another vocabulary, or damaged); prepare it again"
                    )
    log.info(
        "checked %d %s shards of %s (%.1f MB of ids) in %.2f s",
        len(counts),
        source.split,
        source.directory,
        nbytes / 1e6,
        time.perf_counter() - started,
    )
