"""Causal language modelling (GPT): next-token cross-entropy over every real position.

Position t predicts token t + 1. A prediction counts when both tokens are real (padding is
masked) and belong to the same segment of `attention_mask` (with `data.document_attention` each
document is its own segment, so no token is predicted across a document boundary; without it a
block is one segment and <|endoftext|> predicts the next document's first token, as in GPT-2).
The loss is the mean over all counted predictions of the global batch; `summarize` adds the
accuracy and the perplexity exp(loss).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import jax.numpy as jnp

from bertjax.models import head_spec
from bertjax.objectives.base import Array, Batch, apply, mean, nll_and_hits

# the example fields it reads (what an instance builder it is declared for must give)
EXAMPLE_FIELDS = ("input_ids", "attention_mask")


def next_token_targets(batch: Batch) -> tuple[Array, Array]:
    """Labels int32 [batch, length - 1] (the next tokens) and weights float32 [batch, length - 1]
    (1.0 where the prediction counts: both tokens real and in the same segment)."""
    ids, segments = batch["input_ids"], batch["attention_mask"]
    current, following = segments[:, :-1], segments[:, 1:]
    weights = (current > 0) & (following == current)
    return ids[:, 1:].astype(jnp.int32), weights.astype(jnp.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class CausalLm:
    """Next-token prediction with the family's tied "lm" head."""

    @property
    def heads(self):
        return (head_spec("lm"),)

    @property
    def loss_terms(self):
        return (("lm", 1.0),)

    def prepare(self, rng: Array, batch: Batch) -> Batch:
        return batch  # nothing is corrupted: the targets are the inputs shifted

    def counts(self, batch: Batch) -> dict[str, Array]:
        return {"lm_count": jnp.sum(next_token_targets(batch)[1])}

    def sums(self, model, params, batch: Batch, dropout_rng: Array | None) -> dict[str, Array]:
        """Summed next-token loss and hits of one (micro-)batch.

        Args:
          batch: `input_ids`, `attention_mask` [B, L] (segment numbers, 0 for padding).
          dropout_rng: None for a deterministic (evaluation) pass.
        """
        out = apply(model, params, batch, dropout_rng, only=("lm",))
        labels, weights = next_token_targets(batch)
        nll, hits = nll_and_hits(out["lm_logits"][:, :-1], labels)  # [B, L - 1]
        return {
            "lm_loss": jnp.sum(nll * weights),
            "lm_correct": jnp.sum(hits * weights),
            "lm_count": jnp.sum(weights),
        }

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
        loss = mean(sums, "lm_loss", "lm_count")
        return {
            "loss": loss,
            "lm_loss": loss,
            "lm_accuracy": mean(sums, "lm_correct", "lm_count"),
            "perplexity": math.exp(min(loss, 700.0)),
        }

    def flops_per_sequence(self, family, config, seq_len: int) -> float:
        """3 x forward (backward = 2 x forward): the decoder and the tied LM head on every
        position."""
        head = 2 * seq_len * config.hidden_size * config.vocab_size
        return 3.0 * (family.forward_flops(config, seq_len) + head)


def make_objective(config, vocab_path) -> CausalLm:
    """The causal-LM objective (it needs nothing from the config or the vocabulary)."""
    if config.data.get("instances", "nsp_pairs") != "lm_blocks":
        raise ValueError(
            f"config.objective='causal_lm' needs config.data.instances='lm_blocks', "
            f"not {config.data.get('instances')!r}"
        )
    return CausalLm()
