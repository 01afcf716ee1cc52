"""BERT's pretraining objective: masked LM (masking on the device) plus next-sentence prediction.

The loss is the mean MLM loss over all masked positions of the global batch plus the mean NSP
loss over its examples (one per row, or one per instance of a packed row).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax.numpy as jnp

from bertjax.data.entities import ENTITY_MARKERS
from bertjax.models import head_spec
from bertjax.models.heads import mlm_flops
from bertjax.objectives import masking
from bertjax.objectives.base import Array, Batch, apply, mean, nll_and_hits

# the example fields it reads (what an instance builder it is declared for must give)
EXAMPLE_FIELDS = ("input_ids", "attention_mask", "word_starts", "next_sentence_label")


def nsp_example_weights(batch: Batch) -> Array:
    """1.0 per NSP example: one per row, or `nsp_weights` [B, K] for packed rows (one per
    instance, 0.0 in empty slots)."""
    if "nsp_weights" in batch:
        return batch["nsp_weights"]
    return jnp.ones(batch["next_sentence_label"].shape, jnp.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class MlmNsp:
    """MLM + NSP.

    Attributes:
      mask_fn: `(rng, batch) -> masked batch` (`masking.mask_batch` with the vocabulary bound).
      max_predictions: masked positions per row (the gathered MLM head's width), for FLOPs.
      nsp: train the NSP head (False: MLM only, e.g. for RoBERTa-style runs).
    """

    mask_fn: object
    max_predictions: int
    nsp: bool = True

    @property
    def heads(self):
        return (head_spec("mlm"), head_spec("nsp"))

    @property
    def loss_terms(self):
        return (("mlm", 1.0), ("nsp", 1.0)) if self.nsp else (("mlm", 1.0),)

    def prepare(self, rng: Array, batch: Batch) -> Batch:
        return self.mask_fn(rng, batch)

    def counts(self, batch: Batch) -> dict[str, Array]:
        return {
            "mlm_count": jnp.sum(batch["masked_weights"]),
            "nsp_count": jnp.sum(nsp_example_weights(batch)),
        }

    def sums(self, model, params, batch: Batch, dropout_rng: Array | None) -> dict[str, Array]:
        """Forward pass and the summed MLM/NSP losses and hit counts of one (micro-)batch.

        Args:
          batch: a masked batch (see `masking.mask_batch`): `input_ids`, `token_type_ids`,
            `attention_mask` [B, L]; `masked_positions`, `masked_ids`, `masked_weights` [B, P];
            `next_sentence_label` [B], or for packed rows (`data.packing.PackedSource`)
            `next_sentence_label`, `nsp_positions` and `nsp_weights` [B, K].
          dropout_rng: None for a deterministic (evaluation) pass.
        """
        out = apply(model, params, batch, dropout_rng)
        weights = batch["masked_weights"]  # [B, P]
        mlm_nll, mlm_hit = nll_and_hits(out["mlm_logits"], batch["masked_ids"])
        labels = batch["next_sentence_label"].astype(jnp.int32)
        nsp_nll, nsp_hit = nll_and_hits(out["nsp_logits"], labels)  # [B] or [B, K]
        nsp_weights = nsp_example_weights(batch)
        return {
            "mlm_loss": jnp.sum(mlm_nll * weights),
            "mlm_correct": jnp.sum(mlm_hit * weights),
            "mlm_count": jnp.sum(weights),
            "nsp_loss": jnp.sum(nsp_nll * nsp_weights),
            "nsp_correct": jnp.sum(nsp_hit * nsp_weights),
            "nsp_count": jnp.sum(nsp_weights),
        }

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
        out = {
            "mlm_loss": mean(sums, "mlm_loss", "mlm_count"),
            "mlm_accuracy": mean(sums, "mlm_correct", "mlm_count"),
        }
        if self.nsp:  # MLM only: the NSP head is not trained, so nothing of it is reported
            out["nsp_loss"] = mean(sums, "nsp_loss", "nsp_count")
            out["nsp_accuracy"] = mean(sums, "nsp_correct", "nsp_count")
        out["loss"] = out["mlm_loss"] + out.get("nsp_loss", 0.0)
        return out

    def flops_per_sequence(self, family, config, seq_len: int) -> float:
        """3 x forward (backward = 2 x forward): encoder, MLM head on the gathered positions,
        NSP head on [CLS]."""
        nsp = 2 * config.hidden_size * 2
        forward = family.forward_flops(config, seq_len) + mlm_flops(config, self.max_predictions)
        return 3.0 * (forward + nsp)


def make_mask_fn(data: Mapping, vocab_tokens, special_ids: Mapping[str, int]):
    """The on-device masking function of `config.data` with the vocabulary's ids bound."""
    candidates = jnp.asarray(masking.random_candidates(vocab_tokens))
    markers = tuple(i for i, token in enumerate(vocab_tokens) if token in ENTITY_MARKERS)
    return functools.partial(
        masking.mask_batch,
        candidate_ids=candidates,
        mask_id=special_ids["mask"],
        cls_id=special_ids["cls"],
        sep_id=special_ids["sep"],
        pad_id=special_ids["pad"],
        max_predictions=data["max_predictions"],
        unmaskable_ids=markers,
        mask_rate=data["mask_rate"],
        whole_word_masking=data["whole_word_masking"],
        mask_token_prob=data.get("mask_token_prob", masking.MASK_PROB),
        random_token_prob=data.get("random_token_prob", masking.RANDOM_PROB),
    )


def make_objective(config, vocab_path, *, nsp: bool = True) -> MlmNsp:
    """The MLM(+NSP) objective of a pretraining config and its vocabulary."""
    from bertjax.data.tokenizer import load_tokenizer, read_vocab, special_token_ids

    ids = special_token_ids(load_tokenizer(vocab_path), str(vocab_path))
    mask_fn = make_mask_fn(config.data, read_vocab(vocab_path), ids)
    return MlmNsp(mask_fn, config.data.max_predictions, nsp=nsp)
