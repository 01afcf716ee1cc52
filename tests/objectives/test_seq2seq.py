"""The seq2seq objective: label-smoothed target cross-entropy with padding masked."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bertjax.objectives import seq2seq


class FixedLogits:
    """A stand-in model whose `apply` returns given logits (the objective owns the forward)."""

    def __init__(self, logits):
        self.logits = jnp.asarray(logits, jnp.float32)

    def apply(self, variables, batch, **kwargs):
        return {"lm_logits": self.logits}


def _objective(smoothing: float) -> seq2seq.Seq2Seq:
    config = ml_collections.ConfigDict({"seq2seq": {"label_smoothing": smoothing}})
    return seq2seq.make_objective(config, "vocab")


def test_label_smoothing_matches_a_hand_computed_value():
    # logits [2, 0, -1], label 0: NLL = log(e^2 + 1 + e^-1) - 2 = 0.169846;
    # mean_v -log p_v = log(e^2 + 1 + e^-1) - 1/3 = 1.836513; 0.9 * 0.169846 + 0.1 * 1.836513
    batch = {"labels": jnp.array([[0, -100]])}
    logits = [[[2.0, 0.0, -1.0], [50.0, -50.0, 0.0]]]  # the second position is padding
    objective = _objective(0.1)
    sums = objective.sums(FixedLogits(logits), None, batch, None)
    metrics = objective.summarize({k: float(v) for k, v in sums.items()})
    assert metrics["loss"] == pytest.approx(0.336513, abs=1e-5)
    assert metrics["nll"] == pytest.approx(0.169846, abs=1e-5)
    assert metrics["perplexity"] == pytest.approx(np.exp(0.169846), abs=1e-4)
    assert metrics["token_accuracy"] == 1.0
    assert float(objective.counts(batch)["lm_count"]) == 1.0
    unsmoothed = _objective(0.0).sums(FixedLogits(logits), None, batch, None)
    assert float(unsmoothed["lm_loss"]) == pytest.approx(0.169846, abs=1e-5)


def test_padding_positions_do_not_count():
    rng = np.random.default_rng(0)
    labels = np.array([[3, 1, 0, -100, -100], [2, 2, 4, 1, -100]])
    logits = rng.normal(size=(2, 5, 6))
    changed = logits.copy()
    changed[labels < 0] = rng.normal(size=(int((labels < 0).sum()), 6)) * 100
    objective = _objective(0.2)
    batch = {"labels": jnp.asarray(labels)}
    a = objective.sums(FixedLogits(logits), None, batch, None)
    b = objective.sums(FixedLogits(changed), None, batch, None)
    for key in a:
        assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-6), key
    assert float(a["lm_count"]) == 7.0
    with pytest.raises(ValueError, match="config.seq2seq.label_smoothing=1.0"):
        _objective(1.0)


def test_bleu_and_chrf_are_sacrebleus_on_detokenised_text():
    from bertjax.objectives.seq2seq_eval import scores

    refs = ["A plane is taking off.", "A man is playing a flute."]
    assert scores(refs, refs) == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}
    got = scores(["A plane is taking off.", "A man plays the guitar."], refs)
    assert 0.0 < got["bleu"] < 100.0 and got["chrf"] > got["bleu"] * 0.5
    assert scores(["", ""], refs) == {"bleu": 0.0, "chrf": 0.0}
