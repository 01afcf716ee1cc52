"""The recurrent encoder-decoder: teacher forcing equals step-by-step decoding from the cache,
and attention weights are a distribution over the real source tokens, for every attention kind."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax.config import load_config
from bertjax.data import synthetic
from bertjax.models import Model, head_spec, model_config
from tests.conftest import REPO

B, S, T = 3, 9, 6


@pytest.mark.parametrize(
    "attention,cell,layers",
    [("none", "lstm", 1), ("additive", "gru", 2), ("dot", "lstm", 1), ("general", "gru", 1)],
)
def test_teacher_forcing_equals_step_by_step_decoding(attention, cell, layers):
    config = load_config(REPO / "configs/seq2seq/rnn_test.py")
    family, cfg = model_config(config.model)
    cfg = dataclasses.replace(cfg, attention=attention, cell=cell, decoder_layers=layers)
    batch = synthetic.seq2seq_batch(np.random.default_rng(1), B, S, T, cfg.vocab_size)
    model = Model(family, cfg, (head_spec("lm"),))
    inputs = {k: batch[k] for k in family.input_fields}
    params = model.init(jax.random.key(0), inputs)["params"]
    apply = jax.jit(lambda p, x: model.apply({"params": p}, x))
    forced = apply(params, inputs)
    source = {k: batch[k] for k in ("input_ids", "attention_mask")}
    memory = model.apply({"params": params}, source, only=())
    memory = {**memory, "attention_mask": batch["attention_mask"]}

    def step(p, cache, ids):
        out, variables = model.apply(
            {"params": p, "cache": cache},
            {**memory, "decoder_input_ids": ids},
            only=("lm",),
            mutable=["cache"],
        )
        return out, variables["cache"]

    full = {**memory, "decoder_input_ids": jnp.zeros((B, 20), jnp.int32)}
    shapes = jax.eval_shape(lambda: step(params, {}, full["decoder_input_ids"])[1])
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    for leaf in jax.tree.leaves(cache):  # beam search reorders arrays with a leading batch
        assert leaf.ndim == 0 or leaf.shape[0] == B
    step = jax.jit(step)
    logits, weights = [], []
    for t in range(T):
        out, cache = step(params, cache, batch["decoder_input_ids"][:, t : t + 1])
        logits.append(out["lm_logits"])
        weights.append(out.get("cross_attention"))
    np.testing.assert_allclose(jnp.concatenate(logits, 1), forced["lm_logits"], atol=1e-5)
    assert forced["lm_logits"].shape == (B, T, cfg.vocab_size)
    if attention == "none":  # the bottleneck: no attention at all
        assert "cross_attention" not in forced and weights[0] is None
        return
    real = batch["attention_mask"][:, None, :] > 0
    attn = np.asarray(forced["cross_attention"])
    assert attn.shape == (B, T, S) and attn.dtype == np.float32
    np.testing.assert_allclose(attn.sum(-1), 1.0, atol=1e-5)
    assert np.all(attn[np.broadcast_to(~real, attn.shape)] == 0)
    np.testing.assert_allclose(jnp.concatenate(weights, 1), attn, atol=1e-5)
