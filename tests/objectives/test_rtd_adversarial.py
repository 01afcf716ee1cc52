"""Adversarial ELECTRA (`rtd_adversarial`): the policy-gradient estimator is unbiased, and one step
of each player moves its own objective the right way."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax.config import load_config
from bertjax.models import Model, get_family, head_spec
from bertjax.models.electra import ElectraConfig
from bertjax.objectives import make_objective, masking
from bertjax.objectives.rtd_adversarial import AdversarialRTD, policy_gradient_surrogate
from bertjax.training.step import loss_from_sums
from tests.conftest import REPO

VOCAB = 100
TINY = ElectraConfig(
    vocab_size=VOCAB,
    embedding_size=16,
    hidden_size=32,
    num_layers=1,
    num_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    generator_fraction=0.5,
)


@jax.jit
def _enumerated_estimator(table):
    """Mean and variance (over every joint sample, by enumeration) of the gradient estimate,
    minus the surrogate's gradient, for 3 positions of 3 actions with rewards `table` [3, 3]."""
    logits = jnp.array([[0.3, -1.0, 0.5], [1.2, 0.0, -0.4], [0.1, 0.2, 0.3]])[None]  # [1, 3, 3]
    weights = jnp.array([[1.0, 1.0, 0.0]])  # the third position is padding
    samples = jnp.array(list(itertools.product(range(3), repeat=3)))  # [27, 3]
    probs = jax.nn.softmax(logits[0])
    joint = jnp.prod(probs[jnp.arange(3), samples], axis=1)  # [27]

    def estimate(sample):
        rewards = table[jnp.arange(3), sample][None]
        surrogate = lambda x: policy_gradient_surrogate(x, sample[None], rewards, weights)
        return -jax.grad(surrogate)(logits)

    estimates = jax.vmap(estimate)(samples)  # [27, 1, 3, 3]
    mean = jnp.tensordot(joint, estimates, axes=1)
    variance = jnp.tensordot(joint, jnp.sum((estimates - mean) ** 2, axis=(1, 2, 3)), axes=1)

    def expected_reward(x):
        return jnp.sum(weights * jnp.sum(jax.nn.softmax(x) * table[None], axis=-1))

    return mean, variance, jax.grad(expected_reward)(logits)


def test_policy_gradient_is_unbiased_by_enumeration():
    table = jnp.array([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0], [9.0, 9.0, 9.0]])  # R_t(action)
    mean, variance, analytic = _enumerated_estimator(table)
    np.testing.assert_allclose(mean, analytic, atol=1e-6)
    assert float(jnp.abs(analytic[0, 2]).max()) == 0.0  # padding has no gradient
    # The leave-one-out baseline cancels a constant added to every reward: same mean, same
    # variance (without a baseline the variance would grow with the offset).
    shifted_mean, shifted_variance, _ = _enumerated_estimator(table + 100.0)
    np.testing.assert_allclose(shifted_mean, analytic, atol=1e-4)
    np.testing.assert_allclose(shifted_variance, variance, rtol=1e-4)


def _one_masked_position_batch(rows=2, length=12, replicas=64):
    """`rows` rows with one [MASK] each, every row repeated `replicas` times with its own
    sampling key: the policy gradient averaged over many samples of the same positions."""
    rng = np.random.default_rng(0)
    ids = rng.integers(5, VOCAB, (rows, length)).astype(np.int32)
    raw = {
        "input_ids": jnp.asarray(ids),
        "token_type_ids": jnp.zeros((rows, length), jnp.int32),
        "attention_mask": jnp.ones((rows, length), jnp.int32),
    }
    raw["word_starts"] = raw["attention_mask"] > 0

    def mask_fn(key, batch):
        return masking.mask_batch(
            key,
            batch,
            candidate_ids=jnp.arange(5, VOCAB),
            mask_id=4,
            cls_id=2,
            sep_id=3,
            pad_id=0,
            max_predictions=1,
            mask_token_prob=1.0,
            random_token_prob=0.0,
        )

    objective = AdversarialRTD(mask_fn, max_predictions=1)
    prepared = objective.prepare(jax.random.key(1), raw)
    batch = {k: jnp.repeat(v, replicas, axis=0) for k, v in prepared.items()}
    keys = jax.random.split(jax.random.key(2), rows * replicas)
    return objective, prepared, {**batch, "sample_keys": jax.random.key_data(keys)}


def _expected_reward(model, params, prepared):
    """The generator's exact expected reward, by enumerating its one sample per row: the mean
    over rows of sum_v p_G(v) * (the discriminator's cross-entropy with v in place)."""
    probs = jax.nn.softmax(model.apply({"params": params}, prepared, only=("mlm",))["mlm_logits"])
    rows, length = prepared["input_ids"].shape
    position, original = prepared["masked_positions"][:, 0], prepared["masked_ids"][:, 0]
    candidates = jnp.arange(VOCAB)
    ids = jnp.repeat(prepared["input_ids"][:, None], VOCAB, axis=1)  # [rows, V, L]
    ids = ids.at[jnp.arange(rows)[:, None], candidates[None], position[:, None]].set(candidates)
    flat = {
        "input_ids": ids.reshape(rows * VOCAB, length),
        "token_type_ids": jnp.repeat(prepared["token_type_ids"], VOCAB, axis=0),
        "attention_mask": jnp.repeat(prepared["attention_mask"], VOCAB, axis=0),
    }
    logits = model.apply({"params": params}, flat, only=("rtd",))["rtd_logits"]
    logits = logits.reshape(rows, VOCAB, length)[jnp.arange(rows), :, position]  # [rows, V]
    replaced = (candidates[None] != original[:, None]).astype(jnp.float32)
    rewards = jax.nn.softplus(logits) - replaced * logits
    return jnp.mean(jnp.sum(probs[:, 0] * rewards, axis=-1))


def _owned(tree, network, head):
    return {"backbone": tree["backbone"][network], "head": tree["heads"][head]}


def _step(params, grads, network, head, lr):
    """`params` with one gradient-descent step on one player's own parameters."""
    out = jax.tree.map(lambda x: x, params)
    out["backbone"][network] = jax.tree.map(
        lambda p, g: p - lr * g, params["backbone"][network], grads["backbone"][network]
    )
    out["heads"][head] = jax.tree.map(
        lambda p, g: p - lr * g, params["heads"][head], grads["heads"][head]
    )
    return out


def _players_steps(objective, model, params, prepared, batch):
    """One jitted pass over everything the step test checks (one compile)."""
    counts = objective.counts(batch)

    def term_loss(p, term):  # one term of the objective's loss, as the train step forms it
        sums = objective.sums(model, p, batch, None)
        return loss_from_sums(type("Term", (), {"loss_terms": ((term, 1.0),)}), sums, counts)

    flat = lambda tree: jnp.concatenate([x.ravel() for x in jax.tree.leaves(tree)])
    generator_grads = jax.grad(term_loss)(params, "pg")
    discriminator_before, discriminator_grads = jax.value_and_grad(term_loss)(params, "rtd")
    reward_before, exact = jax.value_and_grad(_expected_reward, argnums=1)(model, params, prepared)
    estimate = -flat(_owned(generator_grads, "generator", "mlm"))
    truth = flat(_owned(exact, "generator", "mlm"))
    # A step of norm 0.1 (the expected reward's change is first order in the step: ~1e-4)
    moved = _step(params, generator_grads, "generator", "mlm", 0.1 / jnp.linalg.norm(estimate))
    return {
        "leak": jnp.abs(flat(_owned(generator_grads, "discriminator", "rtd"))).max(),
        "cosine": estimate @ truth / (jnp.linalg.norm(estimate) * jnp.linalg.norm(truth)),
        "reward_before": reward_before,
        "reward_after": _expected_reward(model, moved, prepared),
        "discriminator_before": discriminator_before,
        "discriminator_after": term_loss(
            _step(params, discriminator_grads, "discriminator", "rtd", 0.1), "rtd"
        ),
    }


def test_one_step_of_each_player_improves_its_own_objective():
    objective, prepared, batch = _one_masked_position_batch()
    model = Model(get_family("electra"), TINY, (head_spec("mlm"), head_spec("rtd")))
    params = nn.meta.unbox(model.init(jax.random.key(0), prepared)["params"])
    steps = jax.jit(_players_steps, static_argnums=(0, 1))
    out = {k: float(v) for k, v in steps(objective, model, params, prepared, batch).items()}
    # The generator's surrogate sends nothing into the discriminator (its samples and rewards
    # carry no gradient) ...
    assert out["leak"] == 0.0
    # ... its estimate (the loss's gradient on the generator's own parameters, averaged over
    # many samples of the same positions) points up the exact expected reward's gradient, and
    # a step along it raises the expected reward; the discriminator's step lowers its loss.
    assert out["cosine"] > 0.5, out
    assert out["reward_after"] > out["reward_before"], out
    assert out["discriminator_after"] < out["discriminator_before"], out


def test_config_selects_the_adversarial_objective(prepared):
    base = [*prepared, "--config.objective=rtd_adversarial"]
    config = load_config(
        REPO / "configs" / "electra" / "test.py", [*base, "--config.rtd.mle_weight=0.5"]
    )
    objective = make_objective(config, config.data.vocab)
    assert isinstance(objective, AdversarialRTD) and objective.mle_weight == 0.5
    assert objective.loss_terms == (("pg", 1.0), ("mlm", 0.5), ("rtd", 50.0))
    config.rtd.mle_weight = -1.0
    with pytest.raises(ValueError, match=r"config.rtd.mle_weight=-1.0 is invalid"):
        make_objective(config, config.data.vocab)
