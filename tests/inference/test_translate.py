"""A short translation run end to end: `bertjax pretrain` with the seq2seq test config on a
slice of the ko-en pairs (the loss falls, evaluation reports BLEU and chrF), then `bertjax
translate` with beam search, references and the attention heatmap, and the Python function."""

import json
import pathlib

import numpy as np
import pytest

from bertjax.cli import main
from bertjax.data import parallel
from tests.conftest import REPO, data_dir

CONFIG = str(REPO / "configs" / "seq2seq" / "rnn_test.py")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> pathlib.Path:
    """The workdir of 40 steps on 400 training pairs, evaluated on 16 dev pairs (8 translated)."""
    if not data_dir().is_dir():
        pytest.skip("real data folder is absent (set BERTJAX_DATA)")
    root = tmp_path_factory.mktemp("ko-en")
    parallel.write_korsts_pairs(root / "all")
    for split, n in (("train", 400), ("dev", 16)):
        lines = (root / "all" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        (root / f"{split}.tsv").write_text("\n".join(lines[: n + 1]) + "\n", encoding="utf-8")
    workdir = root / "run"
    overrides = [
        f"--config.data.corpus={root / 'train.tsv'}",
        f"--config.data.eval_corpus={root / 'dev.tsv'}",
        "--config.train.num_steps=40",
        "--config.train.eval_every=40",
        "--config.checkpoint.every_steps=40",
        "--config.seq2seq.eval_translations=8",
    ]
    assert main(["pretrain", "--config", CONFIG, "--workdir", str(workdir), *overrides]) == 0
    return workdir


def test_pretraining_lowers_the_loss_and_reports_bleu(trained):
    lines = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line]
    assert losses[-1] < losses[0] - 1.0
    final = json.loads((trained / "final_metrics.json").read_text())
    # 40 steps only repeat the commonest piece; the scores are there (values: test_seq2seq)
    assert 0.0 <= final["eval_bleu"] <= 100.0 and 0.0 <= final["eval_chrf"] <= 100.0
    assert final["eval_nll"] < np.log(1500)  # better than uniform over the vocabulary
    assert {"source.spm", "target.spm", "vocab.json"} <= {
        p.name for p in (trained / "model").iterdir()
    }


def test_translate_command_and_function(trained, tmp_path, capsys):
    from bertjax.inference.translate import translate

    pairs = list(
        parallel.read_pairs(
            [trained.parent / "dev.tsv"], {"source_column": "ko", "target_column": "en"}
        )
    )[:4]
    (tmp_path / "in.txt").write_text("".join(ko + "\n" for ko, _ in pairs), encoding="utf-8")
    (tmp_path / "ref.txt").write_text("".join(en + "\n" for _, en in pairs), encoding="utf-8")
    png = tmp_path / "attention.png"
    args = ["translate", str(trained / "model"), "--input", str(tmp_path / "in.txt")]
    args += ["--out", str(tmp_path / "out.txt"), "--beam", "2", "--max-len", "12"]
    args += ["--references", str(tmp_path / "ref.txt"), "--attention-png", str(png)]
    assert main(args) == 0
    translations = (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines()
    assert len(translations) == 4
    assert "BLEU" in capsys.readouterr().err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    results = translate(
        trained / "model", [ko for ko, _ in pairs], beams=2, max_len=12, with_attention=True
    )
    assert [r["translation"] for r in results] == translations
    for result in results:
        weights = result["attention"]
        assert weights.shape == (len(result["target_tokens"]), len(result["source_tokens"]))
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    with pytest.raises(SystemExit) as exit_info:  # neither --text nor --input
        main(["translate", str(trained / "model")])
    assert exit_info.value.code == 2
