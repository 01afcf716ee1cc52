"""The throughput harness: synthetic data and timing helpers, and smoke runs of the benchmarks.

The smoke runs go in-process through `main(argv)` at `configs/test.py` size (batch 8, length 16,
2 timed steps) on the 8 fake CPU devices of `conftest.py`.
"""

import importlib.util
import math

import numpy as np
import pytest

from bertjax.objectives import masking
from tests.conftest import REPO

SMOKE = [
    f"--config={REPO / 'configs' / 'test.py'}",
    "--batch=8",
    "--seq=16",
    "--warmup=1",
    "--steps=2",
    "--repeats=1",
    "--rounds=1",
    "--threads=1",
    "--in_process",
]


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def common():
    return load_benchmark("common")


def test_synthetic_batch_is_shaped_like_pretraining_data(common):
    rs = np.random.default_rng(0)
    batch = common.synthetic_batch(rs, 64, 32, 100, short_seq_prob=0.25)
    ids = batch["input_ids"]
    assert ids.shape == (64, 32) and ids.dtype == np.int32
    assert (ids[:, 0] == common.CLS).all()
    lengths = batch["attention_mask"].sum(1)
    assert (ids[np.arange(64), lengths - 1] == common.SEP).all()
    assert ((ids == common.SEP).sum(1) == 2).all()
    assert 0 < (lengths < 32).sum() < 64  # some rows short, most full
    assert ((ids == common.PAD) == (batch["attention_mask"] == 0)).all()
    assert not batch["word_starts"][ids < common.FIRST_ORDINARY].any()
    assert set(np.unique(batch["next_sentence_label"])) == {0, 1}
    # Every id from 5 up is a masking candidate, and only those.
    candidates = masking.random_candidates(common.synthetic_vocab(100))
    np.testing.assert_array_equal(candidates, np.arange(5, 100))


def test_time_steps_synchronises_and_counts(common):
    calls, synced = [], []
    blocks = common.time_steps(lambda: calls.append(1) or len(calls), 2, 3, synced.append, 2)
    assert len(calls) == 2 + 3 * 2
    assert synced == [2, 5, 8]  # after warm-up and after each block, on the last output
    assert len(blocks) == 2 and all(b >= 0 for b in blocks)
    figures = common.throughput(
        [0.5, 0.25, 1.0], batch=8, seq=16, flops_per_sequence=1e12, devices=2, peak_tflops=None
    )
    assert figures["step_ms"] == 500.0 and figures["seq_per_s"] == 16.0
    assert figures["tflops_per_device"] == 8.0 and figures["mfu"] is None


def _check_figures(row):
    for key in ("step_ms", "seq_per_s", "tokens_per_s", "tflops_per_device", "compile_s"):
        assert math.isfinite(row[key]) and row[key] > 0, (row["name"], key, row[key])
    assert row["peak_memory_bytes"] > 0 and row["loadavg"] is not None


@pytest.mark.slow
def test_compare_smoke_has_both_rows(common, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    compare = load_benchmark("compare")
    result = compare.main(SMOKE)
    bertjax, peer = result["rows"]
    assert (bertjax["name"], peer["name"]) == ("bertjax", "torch")
    for row in (bertjax, peer):
        _check_figures(row)
        assert row["loss_finite"]
    assert bertjax["devices"] == 8 and bertjax["max_predictions"] == 4
    assert peer["max_predictions"] == 16  # the peer projects every token
    assert math.isfinite(bertjax["ratio"]) and bertjax["ratio"] > 0
    lines = result["table"].splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["bertjax", "torch"]
    pytest.importorskip("matplotlib")
    compare.plot(result["rows"], str(tmp_path / "plot.png"), "smoke")
    assert (tmp_path / "plot.png").stat().st_size > 0


@pytest.mark.slow
def test_inference_smoke_has_both_rows(common):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    inference = load_benchmark("inference")
    result = inference.main(SMOKE)
    rows = result["rows"]
    assert [row["name"] for row in rows] == ["bertjax", "torch"]
    for row in rows:
        _check_figures(row)
    assert math.isfinite(rows[0]["ratio"]) and rows[0]["ratio"] > 0
    assert [line.split()[0] for line in result["table"].splitlines()[2:]] == ["bertjax", "torch"]
