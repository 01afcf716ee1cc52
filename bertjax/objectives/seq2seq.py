"""Sequence to sequence (translation): token cross-entropy of the target under teacher forcing.

The model reads the source and the target shifted right (`decoder_input_ids`, the seq2seq
protocol's batch, `data/instances/parallel_pairs.py`) and predicts every target token
(`labels`; -100 where there is none, so padding is masked). With label smoothing eps
(`config.seq2seq.label_smoothing`) the loss of a token is the cross-entropy against
(1 - eps) one-hot + eps / V uniform, i.e. (1 - eps) NLL + eps mean_v(-log p_v). Metrics: the
(smoothed) loss, the NLL, its perplexity exp(NLL) and the token accuracy.

In evaluation the objective also translates held-out sources greedily
(`bertjax.models.seq2seq_decoding.translate_ids`) and scores them with sacrebleu's BLEU and chrF
(default signatures, detokenised text) against the decoded references (`host_metrics`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from bertjax.data import tokenizer as tokenizer_lib
from bertjax.models import head_spec
from bertjax.objectives.base import Array, Batch, apply, mean, nll_and_hits

EXAMPLE_FIELDS = (
    "input_ids",
    "attention_mask",
    "decoder_input_ids",
    "decoder_attention_mask",
    "labels",
)


def smoothed_nll(logits: Array, labels: Array, smoothing: float) -> tuple[Array, Array, Array]:
    """Per-token (smoothed loss, NLL, hits) [B, T] of `labels` (>= 0; others give garbage
    that the caller masks) under `logits` float32 [B, T, V]."""
    safe = jnp.maximum(labels, 0)
    nll, hits = nll_and_hits(logits, safe)
    if smoothing == 0.0:
        return nll, nll, hits
    uniform = jax.nn.logsumexp(logits, axis=-1) - jnp.mean(logits, axis=-1)  # mean_v -log p_v
    return (1.0 - smoothing) * nll + smoothing * uniform, nll, hits


@dataclasses.dataclass(frozen=True, eq=False)
class Seq2Seq:
    """Teacher-forced target cross-entropy with the family's "lm" head.

    Attributes:
      label_smoothing: eps in [0, 1).
      eval_translations: held-out pairs translated for BLEU/chrF per evaluation (0: none).
      max_decode_len: the longest translation in evaluation, `</s>` excluded.
      vocab_path: the tokenizer (for the detokenised text of translations and references).
      tokenizer: the tokenizer of `vocab_path`, loaded once (None without eval_translations).
    """

    label_smoothing: float = 0.0
    eval_translations: int = 0
    max_decode_len: int = 64
    vocab_path: str = ""
    tokenizer: Any = dataclasses.field(default=None, repr=False)

    @property
    def heads(self):
        return (head_spec("lm"),)

    @property
    def loss_terms(self):
        return (("lm", 1.0),)

    def prepare(self, rng: Array, batch: Batch) -> Batch:
        return batch  # nothing is corrupted

    def counts(self, batch: Batch) -> dict[str, Array]:
        return {"lm_count": jnp.sum(batch["labels"] >= 0).astype(jnp.float32)}

    def sums(self, model, params, batch: Batch, dropout_rng: Array | None) -> dict[str, Array]:
        """Summed target loss, NLL and hits of one (micro-)batch: `labels` [B, T] (-100 where
        ignored) and the model's `lm_logits` [B, T, V]."""
        out = apply(model, params, batch, dropout_rng, only=("lm",))
        labels = batch["labels"]
        weights = (labels >= 0).astype(jnp.float32)
        loss, nll, hits = smoothed_nll(out["lm_logits"], labels, self.label_smoothing)
        return {
            "lm_loss": jnp.sum(loss * weights),
            "lm_nll": jnp.sum(nll * weights),
            "lm_correct": jnp.sum(hits * weights),
            "lm_count": jnp.sum(weights),
        }

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
        nll = mean(sums, "lm_nll", "lm_count")
        return {
            "loss": mean(sums, "lm_loss", "lm_count"),
            "nll": nll,
            "perplexity": math.exp(min(nll, 700.0)),
            "token_accuracy": mean(sums, "lm_correct", "lm_count"),
        }

    def flops_per_sequence(self, family, config, seq_len: int) -> float:
        """3 x forward (backward = 2 x forward) of the family at `seq_len` (source and target
        alike) plus the output layer on every target position."""
        head = 2 * seq_len * config.hidden_size * config.vocab_size
        return 3.0 * (family.forward_flops(config, seq_len) + head)

    def host_metrics(self, model, params, source) -> dict[str, float]:
        """BLEU and chrF of greedy translations of the first `eval_translations` pairs of the
        eval `source` (a `PretrainingSource` of parallel pairs); {} when 0."""
        if not self.eval_translations:
            return {}
        from bertjax.objectives import seq2seq_eval  # sacrebleu and decoding: host side only

        return seq2seq_eval.bleu_chrf(self, model, params, source)


def make_objective(config, vocab_path) -> Seq2Seq:
    """`config.seq2seq`: label_smoothing, eval_translations, max_decode_len."""
    options = dict(config.get("seq2seq", {}))
    smoothing = float(options.get("label_smoothing", 0.0))
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"config.seq2seq.label_smoothing={smoothing} must be in [0, 1)")
    translations = int(options.get("eval_translations", 0))
    if translations < 0:
        raise ValueError(f"config.seq2seq.eval_translations={translations} must be >= 0")
    return Seq2Seq(
        label_smoothing=smoothing,
        eval_translations=translations,
        max_decode_len=int(options.get("max_decode_len", 64)),
        vocab_path=str(vocab_path),
        tokenizer=tokenizer_lib.load_tokenizer(vocab_path) if translations else None,
    )
