"""Smoke runs of the pretraining benchmarks with tiny settings, in-process through `main(argv)`."""

import importlib.util
import math

import pytest

from tests.conftest import REPO


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One workdir for both runs: the built-in corpus is prepared once, at length 32."""
    return tmp_path_factory.mktemp("benchmarks")


@pytest.mark.slow
def test_pretrain_quality_runs(workdir):
    quality = load_benchmark("pretrain_quality")
    result = quality.main(
        [
            f"--config={REPO / 'configs' / 'tiny.py'}",
            "--corpus=builtin:python-docs",
            "--steps=5",
            "--batch=8",
            "--seq=32",
            "--eval_batches=2",
            f"--workdir={workdir / 'shared'}",
        ]
    )
    assert result["steps"] == 5
    for key in ("eval_mlm_accuracy", "eval_mlm_loss", "baseline_accuracy", "train_loss"):
        assert math.isfinite(result[key]), key
    assert 0.0 <= result["eval_mlm_accuracy"] <= 1.0
    assert 0.0 < result["baseline_accuracy"] < 1.0
    assert result["eval_tokens"] > 0 and result["train_tokens"] > result["eval_tokens"]


@pytest.mark.slow
def test_peer_pretraining_agrees_for_ten_steps(workdir):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    peer = load_benchmark("peer_pretraining")
    result = peer.main(
        ["--steps", "10", "--batch", "8", "--seq", "32", "--workdir", str(workdir / "shared")]
    )
    assert result["steps"] == 10
    assert math.isfinite(result["max_rel_diff"])
    assert result["max_rel_diff"] < 1e-4  # float32 noise; main() itself fails above 1%
    assert result["max_lr_gap"] < 1e-9
    assert result["decayed_params"][0] == result["decayed_params"][1]
    # Ten steps at lr up to 1e-3 lower the loss on both sides.
    assert result["last_loss"][0] < result["first_loss"][0]
    assert result["last_loss"][1] < result["first_loss"][1]
