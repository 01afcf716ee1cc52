"""Input pipeline: batch shapes, deterministic shuffling, exact resume, process sharding."""

import json

import numpy as np
import pytest

from bertjax.data import pipeline as input_pipeline

N, L = 103, 6


class ArraySource:
    """Example i has `index` = i and `tokens` = [i, i+1, ...]."""

    def __len__(self):
        return N

    def __getitem__(self, index):
        index = int(index)
        return {"index": np.array(index, np.int32), "tokens": np.arange(index, index + L)}


def _indices(iterator, steps):
    return [next(iterator)["index"].tolist() for _ in range(steps)]


def test_batches_have_local_shapes():
    iterator = input_pipeline.make_iterator(
        ArraySource(), global_batch_size=8, seed=0, process_index=1, process_count=2
    )
    batch = next(iterator)
    assert batch["tokens"].shape == (4, L) and batch["index"].shape == (4,)
    np.testing.assert_array_equal(batch["tokens"][:, 0], batch["index"])


def test_shuffle_is_deterministic_from_the_seed_and_differs_per_epoch():
    first = _indices(input_pipeline.make_iterator(ArraySource(), global_batch_size=8, seed=5), 26)
    again = _indices(input_pipeline.make_iterator(ArraySource(), global_batch_size=8, seed=5), 26)
    other = _indices(input_pipeline.make_iterator(ArraySource(), global_batch_size=8, seed=6), 26)
    assert first == again and first != other
    flat = sum(first, [])
    assert sorted(flat[:N]) == list(range(N))  # the first epoch is a permutation
    assert flat[N : N + 20] != flat[:20]  # the second epoch is shuffled anew
    unshuffled = input_pipeline.make_iterator(
        ArraySource(), global_batch_size=8, seed=5, shuffle=False
    )
    assert _indices(unshuffled, 2) == [list(range(8)), list(range(8, 16))]


def test_restored_iterator_continues_exactly():
    iterator = input_pipeline.make_iterator(ArraySource(), global_batch_size=8, seed=1)
    _indices(iterator, 17)  # into the second epoch
    state = json.loads(json.dumps(iterator.get_state()))
    expected = _indices(iterator, 10)
    restored = input_pipeline.make_iterator(ArraySource(), global_batch_size=8, seed=1)
    restored.set_state(state)
    assert _indices(restored, 10) == expected


def test_processes_read_disjoint_slices_of_each_global_batch():
    kwargs = dict(global_batch_size=8, seed=3, num_epochs=1)
    single = list(input_pipeline.make_iterator(ArraySource(), **kwargs))
    parts = [
        list(
            input_pipeline.make_iterator(ArraySource(), process_index=p, process_count=2, **kwargs)
        )
        for p in range(2)
    ]
    assert len(single) == len(parts[0]) == len(parts[1]) == N // 8
    seen = []
    for whole, p0, p1 in zip(single, *parts, strict=True):
        assert not set(p0["index"].tolist()) & set(p1["index"].tolist())
        assert sorted(p0["index"].tolist() + p1["index"].tolist()) == sorted(
            whole["index"].tolist()
        )
        seen += whole["index"].tolist()
    assert len(set(seen)) == len(seen) == N // 8 * 8


@pytest.mark.slow
def test_worker_processes_give_the_same_batches_and_state():
    reference = input_pipeline.make_iterator(ArraySource(), global_batch_size=8, seed=2)
    expected = _indices(reference, 6)
    iterator = input_pipeline.make_iterator(
        ArraySource(), global_batch_size=8, seed=2, worker_count=1
    )
    assert _indices(iterator, 3) == expected[:3]
    state = json.loads(json.dumps(iterator.get_state()))
    restored = input_pipeline.make_iterator(
        ArraySource(), global_batch_size=8, seed=2, worker_count=1
    )
    restored.set_state(state)
    assert _indices(restored, 3) == expected[3:]
    for it in (reference, iterator, restored):
        it.close()


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="global_batch_size=10 is not divisible"):
        input_pipeline.make_iterator(ArraySource(), global_batch_size=10, seed=0, process_count=4)
    with pytest.raises(ValueError, match="process_index"):
        input_pipeline.make_iterator(
            ArraySource(), global_batch_size=8, seed=0, process_index=2, process_count=2
        )
    with pytest.raises(ValueError, match="fewer than global_batch_size"):
        input_pipeline.make_iterator(ArraySource(), global_batch_size=128, seed=0)
