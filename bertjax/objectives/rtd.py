"""ELECTRA's replaced-token detection: a generator and a discriminator trained in one step.

All on the device, inside the jitted step: `prepare` masks as BERT does (`masking.mask_batch`,
ELECTRA's rate and [MASK]-only replacement from `config.data`) and draws one sampling key per row;
`sums` runs the generator on the masked batch, samples a replacement at every masked position from
its softmax (Gumbel-max, no gradient), runs the discriminator on the corrupted sequence and scores
every real token as original or replaced. A sample equal to the original token is original.
`rtd_adversarial` trains the generator to fool the discriminator instead (one config field).

    loss = generator MLM loss + discriminator_weight * discriminator loss   (weight 50, as ELECTRA)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from bertjax.models import head_spec
from bertjax.objectives.base import Array, Batch, apply, mean, nll_and_hits
from bertjax.objectives.mlm_nsp import make_mask_fn

# the example fields it reads (what an instance builder it is declared for must give)
EXAMPLE_FIELDS = ("input_ids", "attention_mask", "word_starts")


def scatter_positions(ids: Array, positions: Array, values: Array, weights: Array) -> Array:
    """`ids` [B, L] with `values` [B, P] written at `positions` [B, P] where `weights` > 0."""
    current = jnp.take_along_axis(ids, positions, axis=1)
    values = jnp.where(weights > 0, values.astype(ids.dtype), current)  # padding rewrites itself
    return jax.vmap(lambda row, pos, val: row.at[pos].set(val))(ids, positions, values)


def gumbel_sample(logits: Array, keys: Array) -> Array:
    """One draw per position from softmax(`logits` [B, P, V]), by Gumbel-max with per-row
    keys (raw key data [B, 2]); int32 [B, P]."""

    def row(key, row_logits):
        noise = jax.random.gumbel(jax.random.wrap_key_data(key), row_logits.shape, jnp.float32)
        return jnp.argmax(row_logits + noise, axis=-1).astype(jnp.int32)

    return jax.vmap(row)(keys, jax.lax.stop_gradient(logits))


@dataclasses.dataclass(frozen=True, eq=False)
class ReplacedTokenDetection:
    """ELECTRA pretraining.

    Attributes:
      mask_fn: `(rng, batch) -> masked batch` (`masking.mask_batch` with the vocabulary bound).
      max_predictions: masked positions per row (the generator's MLM width), for FLOPs.
      discriminator_weight: lambda, the weight of the discriminator loss.
    """

    mask_fn: object
    max_predictions: int
    discriminator_weight: float = 50.0

    @property
    def heads(self):
        return (head_spec("mlm"), head_spec("rtd"))

    @property
    def loss_terms(self):
        return (("mlm", 1.0), ("rtd", self.discriminator_weight))

    def prepare(self, rng: Array, batch: Batch) -> Batch:
        """The masked batch plus `sample_keys` uint32 [B, 2] (one sampling key per row)."""
        mask_rng, sample_rng = jax.random.split(rng)
        keys = jax.random.split(sample_rng, batch["input_ids"].shape[0])
        return {**self.mask_fn(mask_rng, batch), "sample_keys": jax.random.key_data(keys)}

    def counts(self, batch: Batch) -> dict[str, Array]:
        return {
            "mlm_count": jnp.sum(batch["masked_weights"]),
            "rtd_count": jnp.sum(batch["attention_mask"] > 0).astype(jnp.float32),
        }

    def play(self, model, params, batch: Batch, dropout_rng: Array | None) -> dict[str, Array]:
        """Generator pass, sampling, discriminator pass: the arrays both players' losses use.

        Args:
          batch: a prepared batch: `input_ids` (masked), `token_type_ids`, `attention_mask`
            [B, L]; `masked_positions`, `masked_ids`, `masked_weights` [B, P]; `sample_keys`.
          dropout_rng: None for a deterministic (evaluation) pass.

        Returns:
          `mlm_logits` [B, P, V] (the generator's), `sampled` int32 [B, P] (its draws, no
          gradient), `replaced` and `real` float [B, L] (1: a sample differing from the original;
          1: a real token), `rtd_logits` [B, L] (> 0: the discriminator says replaced).
        """
        rngs = (None, None) if dropout_rng is None else tuple(jax.random.split(dropout_rng))
        generator = apply(model, params, batch, rngs[0], only=("mlm",))
        weights, positions = batch["masked_weights"], batch["masked_positions"]
        sampled = gumbel_sample(generator["mlm_logits"], batch["sample_keys"])  # [B, P]
        original = scatter_positions(batch["input_ids"], positions, batch["masked_ids"], weights)
        corrupted = scatter_positions(batch["input_ids"], positions, sampled, weights)
        inputs = {**batch, "input_ids": corrupted}
        return {
            "mlm_logits": generator["mlm_logits"],
            "sampled": sampled,
            "replaced": (corrupted != original).astype(jnp.float32),  # equal samples: original
            "real": (batch["attention_mask"] > 0).astype(jnp.float32),
            "rtd_logits": apply(model, params, inputs, rngs[1], only=("rtd",))["rtd_logits"],
        }

    def sums(self, model, params, batch: Batch, dropout_rng: Array | None) -> dict[str, Array]:
        """Both passes (`play`); the generator's summed MLM loss and hits and the
        discriminator's (`detection_sums`)."""
        game = self.play(model, params, batch, dropout_rng)
        weights = batch["masked_weights"]  # [B, P]
        mlm_nll, mlm_hit = nll_and_hits(game["mlm_logits"], batch["masked_ids"])
        return {
            "mlm_loss": jnp.sum(mlm_nll * weights),
            "mlm_correct": jnp.sum(mlm_hit * weights),
            "mlm_count": jnp.sum(weights),
            "generator_reward": jnp.sum(masked_rewards(game, batch) * weights),
            **detection_sums(game),
        }

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
        out = {
            "mlm_loss": mean(sums, "mlm_loss", "mlm_count"),
            "mlm_accuracy": mean(sums, "mlm_correct", "mlm_count"),
            "rtd_loss": mean(sums, "rtd_loss", "rtd_count"),
            "rtd_accuracy": mean(sums, "rtd_correct", "rtd_count"),
            "rtd_precision": mean(sums, "rtd_true_positives", "rtd_predicted"),
            "rtd_recall": mean(sums, "rtd_true_positives", "rtd_replaced"),  # on replaced tokens
            "rtd_original_accuracy": (
                (float(sums["rtd_correct"]) - float(sums["rtd_true_positives"]))
                / max(float(sums["rtd_count"]) - float(sums["rtd_replaced"]), 1.0)
            ),
            "replaced_share": mean(sums, "rtd_replaced", "rtd_count"),
        }
        # The generator's reward: the discriminator's loss on its samples (what `rtd_adversarial`
        # maximises); here the generator minimises its MLM loss.
        out["generator_reward"] = mean(sums, "generator_reward", "mlm_count")
        out["generator_loss"] = out["mlm_loss"]
        out["loss"] = out["mlm_loss"] + self.discriminator_weight * out["rtd_loss"]
        return out

    def flops_per_sequence(self, family, config, seq_len: int) -> float:
        """3 x forward (backward = 2 x forward) of both networks: the generator with its MLM
        head on the masked positions, the discriminator with its RTD head on every token."""
        g, h, e = config.network("generator").hidden_size, config.hidden_size, config.embedding_size
        mlm_head = 2 * self.max_predictions * (g * e + e * config.vocab_size)
        rtd_head = 2 * seq_len * (h * h + h)
        generator = family.forward_flops(config, seq_len, role="generator") + mlm_head
        return 3.0 * (generator + family.forward_flops(config, seq_len) + rtd_head)


def detection_sums(game: Mapping[str, Array]) -> dict[str, Array]:
    """The discriminator's summed sigmoid cross-entropy and counts over the real tokens of a
    `play`."""
    logits, replaced, real = game["rtd_logits"], game["replaced"], game["real"]
    bce = jax.nn.softplus(logits) - replaced * logits  # sigmoid cross-entropy
    predicted = (logits > 0).astype(jnp.float32)
    return {
        "rtd_loss": jnp.sum(bce * real),
        "rtd_correct": jnp.sum((predicted == replaced) * real),
        "rtd_count": jnp.sum(real),
        "rtd_true_positives": jnp.sum(predicted * replaced * real),
        "rtd_predicted": jnp.sum(predicted * real),
        "rtd_replaced": jnp.sum(replaced * real),
    }


def masked_rewards(game: Mapping[str, Array], batch: Batch) -> Array:
    """The discriminator's sigmoid cross-entropy at each masked position of a `play` [B, P],
    without gradient: the reward of the generator's sample there (ELECTRA's appendix F)."""
    logits = jnp.take_along_axis(game["rtd_logits"], batch["masked_positions"], axis=1)
    replaced = jnp.take_along_axis(game["replaced"], batch["masked_positions"], axis=1)
    return jax.lax.stop_gradient(jax.nn.softplus(logits) - replaced * logits)


def make_objective(config, vocab_path) -> ReplacedTokenDetection:
    """The RTD objective of a pretraining config (`config.data` masking, `config.rtd`)."""
    from bertjax.data.tokenizer import load_tokenizer, read_vocab, special_token_ids

    ids = special_token_ids(load_tokenizer(vocab_path), str(vocab_path))
    mask_fn = make_mask_fn(config.data, read_vocab(vocab_path), ids)
    weight = config.rtd.discriminator_weight
    if weight <= 0:
        raise ValueError(f"config.rtd.discriminator_weight={weight} is invalid: must be > 0")
    return ReplacedTokenDetection(mask_fn, config.data.max_predictions, weight)
