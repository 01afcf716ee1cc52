"""What the one train step needs from an objective (pretraining) or a task (fine-tuning).

An objective is a frozen dataclass with:
  heads        the `head_spec`s its model needs;
  loss_terms   ((term, weight), ...): the loss is sum(weight * sums[term_loss] / counts[term_count]);
  prepare(rng, batch) -> batch        on-device corruption (masking), inside the jitted step;
  counts(batch) -> {term_count: ...}  the global denominators, from the prepared batch, so
                                      gradient accumulation gives the full-batch gradient;
  sums(model, params, batch, dropout_rng) -> {...}
                                      owns the forward passes (one model, or two in sequence)
                                      and returns sums: term_loss, term_count, hits ...;
  summarize(sums) -> {...}            host side: means and accuracies of summed metrics;
  flops_per_sequence(family, config, seq_len) -> float   training FLOPs for TFLOP/s and MFU.
  host_metrics(model, params, eval_source) -> {...}   optional: held-out metrics that need host
                                      work (the `seq2seq` objective's BLEU and chrF of decoded
                                      translations), added to the evaluation by `pretrain.evaluate`.
Metrics leave a step as sums with their denominators, so they add up over steps, micro-batches
and devices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import jax
import jax.numpy as jnp

Array = jax.Array
Batch = Mapping[str, Array]


class Objective(Protocol):
    heads: tuple
    loss_terms: tuple[tuple[str, float], ...]

    def prepare(self, rng: Array, batch: Batch) -> Batch: ...

    def counts(self, batch: Batch) -> dict[str, Array]: ...

    def sums(self, model, params, batch: Batch, dropout_rng: Array | None) -> dict[str, Array]: ...

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float]: ...

    def flops_per_sequence(self, family, config, seq_len: int) -> float: ...


def apply(model, params, batch: Batch, dropout_rng: Array | None, **kwargs) -> dict[str, Array]:
    """`model.apply` on a batch, deterministic when `dropout_rng` is None."""
    return model.apply(
        {"params": params},
        batch,
        deterministic=dropout_rng is None,
        rngs=None if dropout_rng is None else {"dropout": dropout_rng},
        **kwargs,
    )


def nll_and_hits(logits: Array, labels: Array) -> tuple[Array, Array]:
    """Cross-entropy and top-1 hits (float 0/1) of integer `labels` under `logits` [..., C].

    Both come from one pass over the classes: the label's logit (a gather) against the
    log-sum-exp and the row maximum. A hit is the label's logit reaching the maximum, which is
    `argmax == label` except on exact ties, without argmax's second (index-carrying) reduction;
    over the MLM head's 30k-word vocabulary that pass is a visible part of the step on a CPU.
    """
    label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    nll = jax.nn.logsumexp(logits, axis=-1) - label_logit
    hits = (label_logit >= jnp.max(logits, axis=-1)).astype(jnp.float32)
    return nll, hits


def mean(sums: Mapping[str, float], key: str, count: str) -> float:
    """sums[key] / sums[count] (0 counts as 1)."""
    return float(sums[key]) / max(float(sums[count]), 1.0)
