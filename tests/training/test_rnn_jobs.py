"""The recurrent family through the same jobs as BERT: fine-tuned from scratch on a task, and
pretrained with masked LM then fine-tuned (configs/rnn/)."""

import json

import numpy as np
import pytest

from bertjax.config import load_config
from bertjax.interop import formats, model_dir
from bertjax.training.finetune import finetune
from bertjax.training.pretrain import pretrain
from tests.conftest import REPO

SMALL_RNN = [
    "--config.model.hidden_size=32",
    "--config.model.embedding_size=32",
    "--config.model.rnn_size=16",
    "--config.model.num_layers=1",
]
SST2 = [
    *SMALL_RNN,
    "--config.train.global_batch_size=16",
    "--config.train.num_steps=24",
    "--config.train.log_every=4",
    "--config.optim.warmup_fraction=0.0",
    "--config.task.max_train_examples=128",
    "--config.task.max_eval_examples=32",
    "--config.task.max_len=32",
    "--config.checkpoint.async_save=False",
]


def _scored_accuracy(workdir) -> float:
    """The accuracy of the eval predictions written to `predictions.tsv`."""
    rows = [line.split("\t") for line in (workdir / "predictions.tsv").read_text().splitlines()]
    return sum(r[1] == r[2] for r in rows[1:]) / (len(rows) - 1)


def _losses(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


def test_a_recurrent_encoder_fine_tunes_from_scratch(shared_data, tmp_path):
    config = load_config(REPO / "configs" / "rnn" / "sst2.py", SST2)
    metrics = finetune(config, tmp_path)
    assert metrics["accuracy"] == pytest.approx(_scored_accuracy(tmp_path))
    losses = _losses(tmp_path)
    assert losses[-1] < losses[0], losses
    cfg, params = model_dir.load_model_dir(tmp_path / "model")
    assert type(cfg).__name__ == "RnnConfig" and "classifier" in params["heads"]
    assert (tmp_path / "predictions.tsv").read_text().count("\n") == 33


def test_a_recurrent_encoder_pretrains_with_mlm_then_fine_tunes(prepared, shared_data, tmp_path):
    overrides = [
        *prepared,
        *SMALL_RNN,
        "--config.train.num_steps=6",
        "--config.optim.warmup_steps=2",
        "--config.train.eval_every=0",
        "--config.train.global_batch_size=8",
        "--config.checkpoint.every_steps=6",
    ]
    config = load_config(REPO / "configs" / "rnn" / "quickstart.py", overrides)
    final = pretrain(config, tmp_path / "pre")
    assert np.isfinite(final["eval_mlm_loss"]) and "eval_nsp_loss" not in final  # not reported
    assert final["loss"] == pytest.approx(final["mlm_loss"])  # MLM only: NSP is not trained
    model, params = formats.load_pretrained(tmp_path / "pre" / "model")
    assert model.family.name == "rnn"
    # The pretrained recurrent encoder is an init_from like any other.
    ft = [o for o in SST2 if not o.startswith("--config.model")]
    ft += [f"--config.init_from={tmp_path / 'pre' / 'model'}", "--config.train.num_steps=4"]
    config = load_config(REPO / "configs" / "finetune" / "sst2.py", ft)
    metrics = finetune(config, tmp_path / "ft")
    assert metrics["accuracy"] == pytest.approx(_scored_accuracy(tmp_path / "ft"))
