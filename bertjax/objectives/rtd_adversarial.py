"""ELECTRA with an adversarially trained generator: the generator is rewarded for fooling the
discriminator (Clark et al. 2020, section 3.2 and appendix F), by policy gradient.

The step is `rtd`'s (`ReplacedTokenDetection.play`: generator pass, one sample per masked
position, discriminator pass on the corrupted sequence); only the generator's loss differs.
The discriminator is trained as in `rtd`, on samples that carry no gradient.

The game. ELECTRA's generator maximises the discriminator's loss on its own samples. With the
paper's simplifying assumption (the discriminator's verdict at a masked position t depends on
that position's sample and the unmasked context only), the objective splits over the masked
positions: maximise sum_t E_{x_t ~ p_G}[R_t(x_t)], where the reward R_t is the discriminator's
sigmoid cross-entropy at t: -log P_D(original) if the sample equals the original token,
-log P_D(replaced) otherwise. Sampling is not differentiable, so the gradient is REINFORCE's
(Williams 1992), one sample a position:

    grad E[R_t] ~= (R_t(x_t) - b_t) * grad log p_G(x_t | x_masked)

The baseline. The paper learns one, b = -log sigmoid(w . h_G), a head on the generator trained to
match the reward. Here b_t is the leave-one-out mean reward of the other masked positions of the
(micro-)batch. It uses no parameters (the pretrained model and its exports are `rtd`'s), needs no
warm-up to be useful, and keeps the estimator exactly unbiased: the other positions' samples
are drawn independently of x_t given the parameters, so E[b_t * grad log p_G(x_t)] = 0. The
loss term is the surrogate -sum_t stop_gradient(R_t - b_t) * log p_G(x_t) over the masked
positions, whose gradient is minus that estimate; its value is no objective, so the metrics
report the mean reward instead (`generator_reward`). Optionally the maximum-likelihood MLM
loss is mixed in:

    loss = surrogate + mle_weight * generator MLM loss + discriminator_weight * discriminator loss
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from bertjax.objectives import rtd
from bertjax.objectives.base import Array, Batch, mean, nll_and_hits
from bertjax.objectives.rtd import ReplacedTokenDetection, detection_sums, masked_rewards
from bertjax.objectives.rtd import make_objective as make_rtd

EXAMPLE_FIELDS = rtd.EXAMPLE_FIELDS  # the batch fields it reads: those of `rtd`


def policy_gradient_surrogate(
    logits: Array, sampled: Array, rewards: Array, weights: Array
) -> Array:
    """REINFORCE's surrogate with a leave-one-out baseline, summed over the weighted positions.

    Its gradient with respect to `logits` is minus an unbiased estimate of the gradient of
    sum_t E_{x ~ softmax(logits_t)}[R_t(x)].

    Args:
      logits: the policy's logits [..., P, V].
      sampled: the actions drawn from them, int [..., P].
      rewards: R_t(sampled_t), [..., P] (no gradient is taken through them).
      weights: 1 for a position that counts, 0 for padding, [..., P].

    Returns:
      -sum_t weights_t * (R_t - b_t) * log p(sampled_t), a scalar; b_t is the mean reward of the
      other counted positions (0 when there are none).
    """
    rewards = jax.lax.stop_gradient(rewards) * weights
    total, count = jnp.sum(rewards), jnp.sum(weights)
    baseline = (total - rewards) / jnp.maximum(count - 1.0, 1.0)
    advantage = jax.lax.stop_gradient(rewards - baseline)
    nll, _ = nll_and_hits(logits, sampled)  # -log p(sampled)
    return jnp.sum(advantage * nll * weights)


@dataclasses.dataclass(frozen=True, eq=False)
class AdversarialRTD(ReplacedTokenDetection):
    """ELECTRA pretraining with the generator trained to fool the discriminator.

    Attributes (beyond `ReplacedTokenDetection`'s):
      mle_weight: the weight of the generator's maximum-likelihood MLM loss (0: adversarial only).
    """

    mle_weight: float = 0.0

    @property
    def loss_terms(self):
        mle = (("mlm", self.mle_weight),) if self.mle_weight > 0 else ()
        return (("pg", 1.0), *mle, ("rtd", self.discriminator_weight))

    def counts(self, batch: Batch) -> dict[str, Array]:
        counts = super().counts(batch)
        return {**counts, "pg_count": counts["mlm_count"]}

    def sums(self, model, params, batch: Batch, dropout_rng: Array | None) -> dict[str, Array]:
        """Both passes (`play`); the policy-gradient surrogate, the rewards, the generator's MLM
        loss and hits, and the discriminator's sums.

        Args:
          batch: a prepared batch (see `ReplacedTokenDetection.play`).
          dropout_rng: None for a deterministic (evaluation) pass.
        """
        game = self.play(model, params, batch, dropout_rng)
        weights = batch["masked_weights"]  # [B, P]
        rewards = masked_rewards(game, batch)  # [B, P], no gradient
        mlm_nll, mlm_hit = nll_and_hits(game["mlm_logits"], batch["masked_ids"])
        return {
            "pg_loss": policy_gradient_surrogate(
                game["mlm_logits"], game["sampled"], rewards, weights
            ),
            "pg_count": jnp.sum(weights),
            "generator_reward": jnp.sum(rewards * weights),
            "mlm_loss": jnp.sum(mlm_nll * weights),
            "mlm_correct": jnp.sum(mlm_hit * weights),
            "mlm_count": jnp.sum(weights),
            **detection_sums(game),
        }

    def summarize(self, sums: Mapping[str, float]) -> dict[str, float]:
        """`rtd`'s metrics; `generator_loss` is the generator's side of the game: minus its mean
        reward plus `mle_weight` x its MLM loss; `loss` adds the weighted discriminator loss."""
        out = super().summarize(sums)
        reward = mean(sums, "generator_reward", "mlm_count")
        out["generator_loss"] = self.mle_weight * out["mlm_loss"] - reward
        out["loss"] = out["generator_loss"] + self.discriminator_weight * out["rtd_loss"]
        return out


def make_objective(config, vocab_path) -> AdversarialRTD:
    """The adversarial RTD objective of a pretraining config (`config.data` masking,
    `config.rtd.discriminator_weight` and `config.rtd.mle_weight`)."""
    rtd = make_rtd(config, vocab_path)
    weight = config.rtd.get("mle_weight", 0.0)
    if not weight >= 0:
        raise ValueError(f"config.rtd.mle_weight={weight} is invalid: must be >= 0")
    return AdversarialRTD(rtd.mask_fn, rtd.max_predictions, rtd.discriminator_weight, weight)
