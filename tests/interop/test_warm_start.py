"""The warm start of a Transformer encoder-decoder from a BERT (`bertjax.interop.warm_start`):
the encoder is the BERT (architecture, weights, tokenizer), the decoder is fresh."""

import flax.linen as nn
import jax
import numpy as np

from bertjax.config import load_config
from bertjax.data import synthetic
from bertjax.interop import init_from, model_dir
from bertjax.models import Model, get_family, model_config
from tests.conftest import REPO


def test_a_bert_becomes_the_encoder_and_the_decoder_starts_fresh(tmp_path):
    _, bert_cfg = model_config(load_config(REPO / "configs/test.py").model)
    bert_params = _random_params(bert_cfg)
    vocab = synthetic.write_vocab(bert_cfg.vocab_size, tmp_path)
    model_dir.save_model(tmp_path / "bert", bert_params, bert_cfg, vocab)
    config = load_config(
        REPO / "configs/seq2seq/ko_en_bert2tx.py",
        [
            f"--config.init_from={tmp_path / 'bert'}",
            "--config.model.decoder_layers=1",
            "--config.model.decoder_intermediate_size=48",
        ],
    )
    init = init_from.load_init(config, tmp_path / "work")

    cfg = init.config
    assert (cfg.encoder, cfg.decoder_layers, cfg.decoder_intermediate_size) == ("bert", 1, 48)
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size"):
        assert getattr(cfg, name) == getattr(bert_cfg, name), name
    encoder = model_dir.encoder_params(bert_cfg, bert_params["backbone"])
    jax.tree.map(np.testing.assert_array_equal, init.params["backbone"]["bert"], encoder)
    decoder = init.params["backbone"]["decoder"]["layer_0"]
    assert set(init.params["backbone"]) == {"bert", "shared", "decoder"}
    kernel = np.asarray(decoder["cross_attention"]["query"]["kernel"])
    assert abs(kernel.std() - cfg.initializer_range) < 0.005  # freshly initialised
    assert (tmp_path / "work/tokenizer/vocab.txt").read_text() == vocab.read_text()

    # the encoder's output is the BERT's sequence output
    batch = synthetic.synthetic_batch(np.random.default_rng(0), 2, 12, cfg.vocab_size)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    ours = Model(get_family("marian"), cfg).apply({"params": init.params}, inputs, only=())
    bert = Model(get_family("bert"), bert_cfg).apply({"params": {"backbone": encoder}}, inputs)
    np.testing.assert_allclose(ours["encoder_output"], bert["sequence_output"], atol=1e-5)

    # encoder_init="random": the same model and fresh decoder, the encoder from scratch
    config.encoder_init = "random"
    scratch = init_from.load_init(config, tmp_path / "scratch")
    assert scratch.config == cfg
    assert (tmp_path / "scratch/tokenizer/vocab.txt").read_text() == vocab.read_text()
    jax.tree.map(np.testing.assert_array_equal, scratch.params["backbone"]["decoder"], init.params["backbone"]["decoder"])  # fmt: skip
    query = scratch.params["backbone"]["bert"]["encoder"]["layer_0"]["attention"]["query"]
    assert abs(np.asarray(query["kernel"]).std() - cfg.initializer_range) < 0.005  # not the BERT's


def _random_params(cfg) -> dict:
    """Random parameters of a BERT with its pretraining heads (no compiled init: faster)."""
    family = get_family("bert")
    model = Model(family, cfg, model_dir.pretraining_heads(family))
    init = lambda: model.init(jax.random.key(0), model_dir.example_inputs(family))["params"]
    rs = np.random.default_rng(3)
    shapes = nn.meta.unbox(jax.eval_shape(init))
    return jax.tree.map(lambda s: rs.normal(0.0, 0.1, s.shape).astype(s.dtype), shapes)
