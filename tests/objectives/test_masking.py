"""Dynamic MLM masking: counts, positions, the 80/10/10 split, whole words, determinism, sharding."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bertjax.objectives import masking

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
TOKENS = np.arange(10, 60)  # ids the synthetic sequences use
CANDIDATES = np.arange(60, 100, dtype=np.int32)  # disjoint from TOKENS: a random draw always shows


def make_batch(rs, real_counts, length, start_prob=0.6):
    """Synthetic [CLS] A [SEP] B [SEP] batches with `real_counts[i]` real tokens in row i."""
    batch_size = len(real_counts)
    ids = np.full((batch_size, length), PAD, np.int32)
    types = np.zeros((batch_size, length), np.int32)
    starts = np.zeros((batch_size, length), bool)
    for row, n in enumerate(real_counts):
        a = int(rs.integers(0, n + 1))
        pieces = [CLS, *rs.choice(TOKENS, a), SEP, *rs.choice(TOKENS, n - a), SEP]
        ids[row, : len(pieces)] = pieces
        types[row, a + 2 : len(pieces)] = 1
        real = (ids[row] != PAD) & (ids[row] != CLS) & (ids[row] != SEP)
        starts[row] = real & (rs.random(length) < start_prob)
        starts[row, 1] |= a > 0  # the first piece after a special token starts a word
        starts[row, a + 2] |= n - a > 0
    return {
        "input_ids": ids,
        "token_type_ids": types,
        "attention_mask": (ids != PAD).astype(np.int32),
        "word_starts": starts,
    }


def expected_k(n, rate, max_predictions):
    """The documented rule: Python's round (half to even), at least 1, at most max_predictions."""
    return 0 if n == 0 else min(max_predictions, max(1, round(rate * n)))


@functools.cache
def jitted_mask_batch(**kwargs):
    fn = functools.partial(
        masking.mask_batch, mask_id=MASK, cls_id=CLS, sep_id=SEP, pad_id=PAD, **kwargs
    )
    return jax.jit(lambda rng, batch: fn(rng, batch, candidate_ids=jnp.asarray(CANDIDATES)))


def run(batch, rng=0, **kwargs):
    kwargs = {"mask_rate": 0.15, "max_predictions": 5, **kwargs}
    out = jitted_mask_batch(**kwargs)(
        jax.random.key(rng), {k: jnp.asarray(v) for k, v in batch.items()}
    )
    return {k: np.asarray(v) for k, v in out.items()}


def real_mask(batch):
    ids = batch["input_ids"]
    return (batch["attention_mask"] > 0) & (ids != CLS) & (ids != SEP) & (ids != PAD)


def test_random_candidates_drops_bracketed_tokens():
    vocab = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "##s", "[", "a]"]
    got = masking.random_candidates(vocab)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, [6, 7, 8, 9])


@pytest.mark.parametrize("rate, max_predictions", [(0.15, 4), (0.5, 6), (0.3, 1)])
def test_exact_count_and_valid_positions(rate, max_predictions):
    rs = np.random.default_rng(0)
    length = 32
    counts = [0, 1, 2, 3, 10, 13, length - 3, length - 3, *rs.integers(0, length - 2, 120)]
    batch = make_batch(rs, counts, length)
    out = run(batch, rng=1, mask_rate=rate, max_predictions=max_predictions)
    real = real_mask(batch)
    assert out["masked_positions"].shape == (len(counts), max_predictions)
    assert out["masked_positions"].dtype == np.int32
    assert out["masked_ids"].dtype == np.int32
    assert out["masked_weights"].dtype == np.float32
    assert any(rate * n > max_predictions for n in counts)
    for row, n in enumerate(counts):
        k = expected_k(n, rate, max_predictions)
        weights = out["masked_weights"][row]
        np.testing.assert_array_equal(weights, [1.0] * k + [0.0] * (max_predictions - k))
        pos = out["masked_positions"][row, :k]
        assert np.all(np.diff(pos) > 0), "sorted and unique"
        assert np.all(out["masked_positions"][row, k:] == 0)
        assert np.all(out["masked_ids"][row, k:] == 0)
        assert real[row, pos].all(), "never [CLS], [SEP] or padding"
        np.testing.assert_array_equal(out["masked_ids"][row, :k], batch["input_ids"][row, pos])
        untouched = np.ones(length, bool)
        untouched[pos] = False
        np.testing.assert_array_equal(
            out["input_ids"][row, untouched], batch["input_ids"][row, untouched]
        )
    for field in ("token_type_ids", "attention_mask", "word_starts"):
        np.testing.assert_array_equal(out[field], batch[field])


def test_round_half_to_even():
    # 0.5 * n lands exactly on .5 for odd n: 2.5 -> 2, 3.5 -> 4, 4.5 -> 4.
    table = masking.num_to_predict_table(9, 0.5, 20)
    np.testing.assert_array_equal(table, [0, 1, 1, 2, 2, 2, 3, 4, 4, 4])


def test_80_10_10_split_and_candidates():
    rs = np.random.default_rng(1)
    length = 128
    batch = make_batch(rs, rs.integers(60, length - 2, 2048), length)
    out = run(batch, rng=2, max_predictions=20)
    weights = out["masked_weights"] > 0
    total = int(weights.sum())
    assert total >= 20_000
    new = np.take_along_axis(out["input_ids"], out["masked_positions"], axis=1)[weights]
    orig = out["masked_ids"][weights]
    is_mask = new == MASK
    is_random = np.isin(new, CANDIDATES)
    is_same = new == orig
    assert np.all(is_mask | is_random | is_same), "only [MASK], a candidate or the original"
    assert not np.any(is_mask & is_random) and not np.any(is_random & is_same)
    assert abs(is_mask.mean() - 0.8) < 0.01
    assert abs(is_random.mean() - 0.1) < 0.01
    assert abs(is_same.mean() - 0.1) < 0.01
    assert len(np.unique(new[is_random])) == len(CANDIDATES), "all candidates drawn"


def words_of(starts_row, real_row):
    """Lists of positions, one per word, from word starts (a piece after a special starts one)."""
    words, prev_real = [], False
    for i, (start, real) in enumerate(zip(starts_row, real_row, strict=True)):
        if real and (start or not prev_real):
            words.append([i])
        elif real:
            words[-1].append(i)
        prev_real = real
    return words


@pytest.mark.parametrize("rate, max_predictions", [(0.15, 8), (0.4, 10)])
def test_whole_word_masking_takes_whole_words_greedily(rate, max_predictions):
    rs = np.random.default_rng(2)
    length = 48
    counts = [0, 1, 2, *rs.integers(0, length - 2, 300)]
    batch = make_batch(rs, counts, length, start_prob=0.4)  # words of 1 to ~8 pieces
    out = run(
        batch, rng=3, mask_rate=rate, max_predictions=max_predictions, whole_word_masking=True
    )
    real = real_mask(batch)
    multi_piece = shortfalls = 0
    for row, n in enumerate(counts):
        k = expected_k(n, rate, max_predictions)
        chosen = set(out["masked_positions"][row, out["masked_weights"][row] > 0].tolist())
        assert all(real[row, p] for p in chosen)
        count = len(chosen)
        assert count <= k
        taken = 0
        for word in words_of(batch["word_starts"][row], real[row]):
            inside = [p in chosen for p in word]
            assert all(inside) or not any(inside), f"row {row}: partial word {word}"
            if all(inside):
                taken += len(word)
                multi_piece += len(word) > 1
            else:
                # Greedy with skips: a word left out would not fit in what remains.
                assert len(word) > k - count, f"row {row}: word {word} still fits"
        assert taken == count
        shortfalls += count < k
    assert multi_piece > 50
    assert shortfalls > 0  # the test data exercises words that do not fit


def test_greedy_fit_matches_sequential_loop():
    rs = np.random.default_rng(3)
    lengths = rs.integers(0, 6, (64, 40)).astype(np.int32)
    k = rs.integers(0, 13, 64).astype(np.int32)
    got = np.asarray(jax.jit(masking._greedy_fit, static_argnums=2)(lengths, k, 12))
    for row in range(64):
        count, want = 0, []
        for n in lengths[row]:
            want.append(count + n <= k[row])
            count += n if want[-1] else 0
        np.testing.assert_array_equal(got[row], want)


def test_deterministic_given_rng():
    rs = np.random.default_rng(4)
    batch = make_batch(rs, rs.integers(5, 30, 16), 32)
    a, b, c = run(batch, rng=7), run(batch, rng=7), run(batch, rng=8)
    for field in a:
        np.testing.assert_array_equal(a[field], b[field])
    assert not np.array_equal(a["masked_positions"], c["masked_positions"])


@pytest.mark.parametrize("whole_word_masking", [False, True])
def test_sharded_matches_unsharded_without_transfers(whole_word_masking):
    assert jax.device_count() == 8
    rs = np.random.default_rng(5)
    batch = make_batch(rs, rs.integers(0, 30, 32), 32)
    fn = jax.jit(
        functools.partial(
            masking.mask_batch,
            candidate_ids=jnp.asarray(CANDIDATES),
            mask_id=MASK,
            cls_id=CLS,
            sep_id=SEP,
            pad_id=PAD,
            max_predictions=6,
            whole_word_masking=whole_word_masking,
        )
    )
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data", None))
    rng = jax.random.key(9)
    plain = fn(rng, {k: jnp.asarray(v) for k, v in batch.items()})
    sharded_batch = {k: jax.device_put(v, sharding) for k, v in batch.items()}
    candidates = jax.device_put(CANDIDATES, NamedSharding(mesh, PartitionSpec()))
    rng = jax.device_put(rng, NamedSharding(mesh, PartitionSpec()))
    fn = jax.jit(
        functools.partial(
            masking.mask_batch,
            mask_id=MASK,
            cls_id=CLS,
            sep_id=SEP,
            pad_id=PAD,
            max_predictions=6,
            whole_word_masking=whole_word_masking,
        )
    )
    compiled = fn.lower(rng, sharded_batch, candidate_ids=candidates).compile()
    # Rows are masked where they live: no device exchanges any data.
    assert not re.search(r"all-gather|all-reduce|all-to-all|collective-permute", compiled.as_text())
    with jax.transfer_guard("disallow"):
        sharded = compiled(rng, sharded_batch, candidate_ids=candidates)
    assert sharded["masked_positions"].sharding.is_equivalent_to(sharding, 2)
    assert sharded["input_ids"].sharding.is_equivalent_to(sharding, 2)
    for field in plain:
        np.testing.assert_array_equal(np.asarray(sharded[field]), np.asarray(plain[field]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_predictions": 0}, "max_predictions"),
        ({"max_predictions": 33}, "max_predictions"),
        ({"mask_rate": 0.0}, "mask_rate"),
        ({"mask_rate": 1.5}, "mask_rate"),
    ],
)
def test_invalid_arguments_name_the_field(kwargs, message):
    batch = make_batch(np.random.default_rng(6), [5, 6], 32)
    with pytest.raises(ValueError, match=message):
        run(batch, **kwargs)
