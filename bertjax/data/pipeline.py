"""Host input pipeline: shuffled, process-sharded, prefetched numpy batches from a random-access
source, built on grain. numpy only; batches become global jax arrays elsewhere (the one border).

The order is defined once for the whole job: the (per-epoch reshuffled) sequence of examples is
cut into global batches of `global_batch_size`, and process `p` of `P` keeps the `p`-th of the `P`
equal consecutive blocks of each global batch: the block that lands on its devices when the batch
becomes a global array sharded over the data axes. The global batches, and the global arrays made
from them, therefore do not depend on the number of processes, and each process reads only its own
examples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

import grain
import numpy as np
from absl import flags


class RandomAccessSource(Protocol):
    """Anything with a length and integer indexing that returns a dict of numpy arrays."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Mapping[str, np.ndarray]: ...


def local_batch_size(global_batch_size: int, process_count: int) -> int:
    """Examples per process and step; raises unless `global_batch_size` divides evenly."""
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size must be positive, got {global_batch_size}")
    if process_count < 1:
        raise ValueError(f"process_count must be positive, got {process_count}")
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by the number of "
            f"processes ({process_count})"
        )
    return global_batch_size // process_count


def make_dataset(
    source: RandomAccessSource,
    *,
    global_batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    worker_count: int = 0,
    prefetch_buffer_size: int = 16,
    read_threads: int = 4,
) -> grain.IterDataset:
    """Builds the grain dataset behind `make_iterator`; the arguments are documented there."""
    local = local_batch_size(global_batch_size, process_count)
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
    if len(source) < global_batch_size:
        raise ValueError(
            f"the source has {len(source)} examples, fewer than global_batch_size="
            f"{global_batch_size}"
        )
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be positive or None, got {num_epochs}")
    dataset = grain.MapDataset.source(source)
    if shuffle:
        dataset = dataset.shuffle(seed=seed)  # reshuffled every epoch by `repeat`
    dataset = dataset.repeat(num_epochs)
    if num_epochs is not None:  # end on a whole global batch so that all processes agree
        dataset = dataset[: len(dataset) // global_batch_size * global_batch_size]
    # Chunks of `local` consecutive examples; process p takes chunk p of every global batch.
    dataset = dataset.batch(local, drop_remainder=True)[process_index::process_count]
    read_options = grain.ReadOptions(
        num_threads=read_threads, prefetch_buffer_size=prefetch_buffer_size
    )
    dataset = dataset.to_iter_dataset(read_options)
    if worker_count > 0:
        _mark_flags_parsed()
        options = grain.MultiprocessingOptions(num_workers=worker_count)
        dataset = dataset.mp_prefetch(options)
    return dataset


def make_iterator(source: RandomAccessSource, **options) -> Iterator[dict[str, np.ndarray]]:
    """Returns an iterator of this process's batches: dicts of numpy arrays [local_batch, ...].

    The iterator is grain's: `get_state()` returns a JSON-serializable dict and `set_state(state)`
    makes it continue exactly where the saved one was.

    Args (keyword-only, passed to `make_dataset`):
      source: Random-access source of examples (dicts of numpy arrays of fixed shapes).
      global_batch_size: Examples per step over all processes.
      seed: Seed of the shuffle; each epoch is shuffled differently but reproducibly.
      shuffle: Shuffle the examples (off: source order).
      num_epochs: Passes over the data; None: endless.
      process_index: This process (e.g. `jax.process_index()`).
      process_count: All processes (e.g. `jax.process_count()`).
      worker_count: Processes reading and batching in the background; 0: threads only.
      prefetch_buffer_size: Batches read ahead by background threads.
      read_threads: Threads reading batches.

    Returns:
      An iterator; a final incomplete global batch is dropped.
    """
    return iter(make_dataset(source, **options))


def _mark_flags_parsed() -> None:
    """grain reads absl flags in its worker processes; accept the defaults when the program
    does not parse absl flags itself."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def seek(iterator, global_batches_consumed: int) -> None:
    """Moves a fresh `make_iterator` iterator to after `global_batches_consumed` global batches.

    Positions are counted in global batches, which do not depend on the number of processes, so a
    checkpoint taken with N processes resumes with M (each process seeks to the same batch index of
    its own slice). Not for iterators with `worker_count > 0`, whose state has another form: those
    are restored with `set_state` of a state saved by the same process layout.
    """
    # (Calling get_state() first would start grain's prefetch at position 0; don't.)
    try:
        iterator.set_state({"next_index": int(global_batches_consumed)})
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            "resuming needs the in-process input pipeline: set config.data.worker_count=0"
        ) from err
