"""Heads for encoder families: masked LM, next-sentence prediction, sequence classification,
token classification (tagging) and extractive-QA spans.

A head is `head(config, **kwargs)(features, inputs, *, deterministic) -> dict` where `features`
are the backbone's outputs (`sequence_output`, `pooled_output`, `word_embeddings`) and `inputs`
the batch. Every head returns float32 outputs with fixed names, so objectives and tasks read
`mlm_logits`, `nsp_logits`, `logits`, `start_logits`/`end_logits` whatever the family.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax.models.layers import activation, dense, gather_positions, layer_norm, zeros_init

Array = jax.Array


class MlmHead(nn.Module):
    """dense + GELU + LayerNorm, then the decoder tied to the word embedding plus an output bias.

    The transform maps the hidden state to the word embedding's width (ELECTRA's generator has a
    narrower hidden state than its embedding; in BERT they are equal).

    Runs on `inputs["masked_positions"]` [batch, P] when present (the vocabulary-sized
    projection only where a prediction is needed), else on every token.
    """

    config: Any

    @nn.compact
    def __call__(self, features, inputs: Mapping[str, Array], *, deterministic: bool):
        """Returns `mlm_logits`, float32 [batch, P or length, vocab]."""
        cfg = self.config
        x = features["sequence_output"]
        if inputs.get("masked_positions") is not None:
            x = gather_positions(x, inputs["masked_positions"])
        word = features["word_embeddings"]  # its width: hidden_size, or a smaller embedding_size
        h = dense(cfg, word.features, ("embed", "mlp"), "transform")(x)
        h = activation(cfg)(h)
        h = layer_norm(cfg, "layer_norm")(h)
        bias = self.param("output_bias", zeros_init(("vocab",)), (cfg.vocab_size,), cfg.param_dtype)
        logits = word.attend(h) + jnp.asarray(bias, cfg.dtype)
        logits = nn.with_logical_constraint(logits, ("act_batch", "act_length", "act_vocab"))
        return {"mlm_logits": logits.astype(jnp.float32)}


class NspHead(nn.Module):
    """Is-next / random-next logits from the pooled [CLS] state (of each packed instance)."""

    config: Any

    @nn.compact
    def __call__(self, features, inputs, *, deterministic: bool):
        """Returns `nsp_logits`, float32 [batch, 2] (or [batch, k, 2] for packed rows)."""
        logits = dense(self.config, 2, ("embed", "classes"), "dense")(features["pooled_output"])
        return {"nsp_logits": logits.astype(jnp.float32)}


class SequenceClassifier(nn.Module):
    """Classifies (or, with `num_labels == 1`, scores) a sequence from its pooled state."""

    config: Any
    num_labels: int

    @nn.compact
    def __call__(self, features, inputs, *, deterministic: bool):
        """Returns `logits` float32 [batch, num_labels] (a regression score is `logits[:, 0]`)."""
        cfg = self.config
        x = nn.Dropout(cfg.hidden_dropout)(features["pooled_output"], deterministic=deterministic)
        logits = dense(cfg, self.num_labels, ("embed", "classes"), "dense")(x)
        return {"logits": logits.astype(jnp.float32)}


class TokenClassifier(nn.Module):
    """Tags every token from its final hidden state."""

    config: Any
    num_labels: int

    @nn.compact
    def __call__(self, features, inputs, *, deterministic: bool):
        """Returns `logits` float32 [batch, length, num_labels]."""
        cfg = self.config
        x = nn.Dropout(cfg.hidden_dropout)(features["sequence_output"], deterministic=deterministic)
        logits = dense(cfg, self.num_labels, ("embed", "classes"), "dense")(x)
        logits = nn.with_logical_constraint(logits, ("act_batch", "act_length", None))
        return {"logits": logits.astype(jnp.float32)}


class SpanHead(nn.Module):
    """Scores every token as the start and as the end of the answer span."""

    config: Any

    @nn.compact
    def __call__(self, features, inputs, *, deterministic: bool):
        """Returns `start_logits` and `end_logits`, float32 [batch, length]; padding positions
        get a very low score."""
        cfg = self.config
        x = nn.Dropout(cfg.hidden_dropout)(features["sequence_output"], deterministic=deterministic)
        logits = dense(cfg, 2, ("embed", "classes"), "dense")(x).astype(jnp.float32)
        logits = jnp.where(inputs["attention_mask"][..., None] > 0, logits, -1e9)
        return {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}


def mlm_flops(cfg: Any, num_positions: int) -> float:
    """Forward matmul FLOPs of the MLM head (transform + tied decoder) on `num_positions`."""
    h = cfg.hidden_size
    return float(2 * num_positions * (h * h + h * cfg.vocab_size))


# head name -> module, for every encoder family (bert, and later electra, rnn, ...)
ENCODER_HEADS = {
    "mlm": MlmHead,
    "nsp": NspHead,
    "classifier": SequenceClassifier,
    "tagger": TokenClassifier,
    "span": SpanHead,
}
