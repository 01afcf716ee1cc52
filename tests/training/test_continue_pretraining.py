"""Continued pretraining (`config.init_from`) and vocabulary extension (`config.data.extra_vocab`)."""

import logging

import jax
import numpy as np
import pytest

from bertjax.config import load_config
from bertjax.data.tokenizer import load_tokenizer, read_vocab
from bertjax.interop import model_dir, vocab_extension
from bertjax.models import Model, head_spec
from bertjax.models.bert import BertConfig
from bertjax.models.registry import family_of
from bertjax.training import pretrain
from tests.conftest import REPO, data_dir

TEST_CONFIG = REPO / "configs" / "test.py"
ARCH = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
RUN = ["--config.train.num_steps=2", "--config.checkpoint.async_save=False"]


def _outputs(cfg, params, ids):
    model = Model(family_of(cfg), cfg, model_dir.PRETRAINING_HEADS)
    inputs = {
        "input_ids": ids,
        "token_type_ids": np.zeros_like(ids),
        "attention_mask": np.ones_like(ids),
    }
    return model.apply({"params": params}, inputs)


def test_extended_vocab_keeps_old_outputs_and_inits_new_rows_from_pieces():
    vocab = data_dir() / "vocab" / "bert-base-uncased-vocab.txt"
    if not vocab.is_file():
        pytest.skip(f"{vocab} is absent (set BERTJAX_DATA)")
    cfg = BertConfig(vocab_size=30522, max_position_embeddings=32, **ARCH)
    params = model_dir.init_params(cfg, seed=1)
    rng = np.random.default_rng(0)
    params["heads"]["mlm"]["output_bias"] = rng.normal(size=30522).astype(np.float32)
    tokenizer = load_tokenizer(vocab)
    new = ["jaxification", "flaxen", "##izer"]
    extended, pieces = vocab_extension.extend_params(params, tokenizer, new)
    table = extended["backbone"]["embeddings"]["word_embeddings"]["embedding"]
    old_table = params["backbone"]["embeddings"]["word_embeddings"]["embedding"]
    assert table.shape == (30522 + 3, 32)
    np.testing.assert_array_equal(table[:30522], old_table)
    for row, ids in enumerate(pieces):
        assert len(ids) >= 1
        np.testing.assert_allclose(table[30522 + row], old_table[ids].mean(0), rtol=1e-6)
    bias = extended["heads"]["mlm"]["output_bias"]
    assert bias[30522] == pytest.approx(params["heads"]["mlm"]["output_bias"][pieces[0]].mean())
    # before training: old tokens' outputs are those of the original model
    ids = np.array([tokenizer.encode("the cat sat on the mat").ids], np.int32)
    before = _outputs(cfg, params, ids)
    after = _outputs(
        BertConfig(vocab_size=30525, max_position_embeddings=32, **ARCH), extended, ids
    )
    np.testing.assert_allclose(after["sequence_output"], before["sequence_output"], atol=1e-6)
    np.testing.assert_allclose(after["mlm_logits"][..., :30522], before["mlm_logits"], atol=1e-5)
    assert params["heads"]["mlm"]["output_bias"].shape == (30522,)  # the input is not changed


def _init_model(tmp_path, vocab, heads):
    cfg = BertConfig(vocab_size=len(read_vocab(vocab)), max_position_embeddings=64, **ARCH)
    out = tmp_path / "init"
    params = model_dir.init_params(cfg, heads=heads, seed=5)
    model_dir.save_model(out, params, cfg, vocab, {"lowercase": True})
    return out, params


@pytest.mark.slow
def test_pretraining_continues_from_a_model_dir(prepared, tmp_path, caplog):
    overrides = [o for o in prepared if not o.startswith("--config.data.vocab=")]
    vocab = next(o for o in prepared if o.startswith("--config.data.vocab=")).split("=", 1)[1]
    init, params = _init_model(tmp_path, vocab, heads=(head_spec("mlm"),))
    config = load_config(TEST_CONFIG, [*overrides, *RUN, f"--config.init_from={init}"])
    caplog.set_level(logging.INFO)
    job = pretrain.setup(config, tmp_path / "run")
    assert "heads ['mlm'] loaded, ['nsp'] start fresh" in caplog.text
    state = jax.device_get(job.state.params)
    for path in (("backbone", "embeddings"), ("heads", "mlm")):
        got, want = state[path[0]][path[1]], params[path[0]][path[1]]
        jax.tree.map(np.testing.assert_array_equal, got, want)
    job.close()
    metrics = pretrain.pretrain(config, tmp_path / "run")
    assert np.isfinite(metrics["loss"])
    assert read_vocab(tmp_path / "run" / "model" / "vocab.txt") == read_vocab(vocab)


@pytest.mark.slow
def test_pretraining_with_extra_vocab_appends_tokens(prepared, tmp_path):
    vocab = next(o for o in prepared if o.startswith("--config.data.vocab=")).split("=", 1)[1]
    init, _ = _init_model(tmp_path, vocab, heads=model_dir.PRETRAINING_HEADS)
    corpus = tmp_path / "corpus.txt"
    paragraph = "The flaxen jaxification of models. It trains well on small machines.\n"
    corpus.write_text((paragraph * 4 + "\n") * 40)
    extra = tmp_path / "extra.txt"
    extra.write_text("Jaxification\nflaxen\n\nthe\n")  # "the" is known: skipped
    overrides = [
        f"--config.init_from={init}",
        f"--config.data.corpus={corpus}",
        f"--config.data.extra_vocab={extra}",
        "--config.data.max_seq_len=32",
        "--config.data.max_predictions=5",
        "--config.data.eval_fraction=0.1",
        "--config.train.eval_batches=1",
    ]
    config = load_config(TEST_CONFIG, [*overrides, *RUN])
    pretrain.pretrain(config, tmp_path / "run")
    tokens = read_vocab(tmp_path / "run" / "model" / "vocab.txt")
    assert tokens == [*read_vocab(vocab), "jaxification", "flaxen"]
    cfg, params = model_dir.load_model_dir(tmp_path / "run" / "model")
    assert cfg.vocab_size == len(tokens)
    assert params["heads"]["mlm"]["output_bias"].shape == (len(tokens),)
    tokenizer = model_dir.load_model_tokenizer(tmp_path / "run" / "model")
    assert tokenizer.encode("jaxification", add_special_tokens=False).tokens == ["jaxification"]
