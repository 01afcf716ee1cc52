"""Smoke test of benchmarks/finetune_peer.py: both sides train a few steps and are scored."""

import importlib.util
import json
import shutil

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


def _tiny_bert(path, vocab):
    """A randomly initialised 2-layer, 32-wide transformers BERT with the uncased vocabulary:
    both sides load it like MiniLM (the benchmark's default), at a fraction of the compile."""
    import torch
    import transformers

    torch.manual_seed(0)
    size = len(vocab.read_text(encoding="utf-8").splitlines())
    config = transformers.BertConfig(
        vocab_size=size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    transformers.BertModel(config).save_pretrained(path)
    shutil.copy(vocab, path / "vocab.txt")
    (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return path


def test_finetune_peer_runs_both_sides_and_prints_the_table(capsys, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if not (data_dir() / "sst2" / "dev.tsv").is_file():
        pytest.skip(f"SST-2 is absent from {data_dir()} (set BERTJAX_DATA)")
    model = _tiny_bert(tmp_path / "tiny", data_dir() / "vocab" / "bert-base-uncased-vocab.txt")
    bench = _load_benchmark()
    result = bench.main(
        ["--task=sst2", "--train-rows=32", "--eval-rows=32", "--max-len=16", "--batch=16"]
        + ["--steps=2", "--threads=1", f"--init-from={model}"]
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
