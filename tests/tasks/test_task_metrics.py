"""Tests for bertjax.task_metrics: hand-computed cases and cross-checks against references."""

import math
import warnings

import numpy as np
import pytest
import seqeval.metrics

from bertjax import tasks
from bertjax.tasks import classification, qa, tagging

# ----------------------------------------------------------------------------- classification

LABELS = np.array([0, 1, 1, 0, 1])
PREDICTIONS = np.array([0, 1, 0, 0, 0])  # tp = 1 (#1), tn = 2 (#0, #3), fp = 0, fn = 2 (#2, #4)


def test_accuracy_and_binary_f1_by_hand():
    assert classification.accuracy(LABELS, PREDICTIONS) == pytest.approx(3 / 5)
    # F1 = 2 tp / (2 tp + fp + fn) = 2 / (2 + 0 + 2)
    assert classification.binary_f1(LABELS, PREDICTIONS) == pytest.approx(0.5)
    assert classification.binary_f1([0, 0], [0, 0]) == 0.0  # no positive anywhere


def test_matthews_by_hand():
    # (tp tn - fp fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (1*2 - 0) / sqrt(1 * 3 * 2 * 4)
    assert classification.matthews_corrcoef(LABELS, PREDICTIONS) == pytest.approx(2 / math.sqrt(24))
    # 3 classes: s = 6, c = 4 correct, t = (2, 2, 2), p = (2, 3, 1):
    # (c s - p.t) / sqrt((s^2 - p.p)(s^2 - t.t)) = (24 - 12) / sqrt((36 - 14)(36 - 12))
    mcc = classification.matthews_corrcoef([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0])
    assert mcc == pytest.approx(12 / math.sqrt(22 * 24))
    assert (
        classification.matthews_corrcoef([0, 1, 1], [1, 1, 1]) == 0.0
    )  # constant prediction: undefined


def _binary_mcc(labels, predictions):
    tp = np.sum((labels == 1) & (predictions == 1))
    tn = np.sum((labels == 0) & (predictions == 0))
    fp = np.sum((labels == 0) & (predictions == 1))
    fn = np.sum((labels == 1) & (predictions == 0))
    return (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))


def _covariance_mcc(labels, predictions, n_classes):
    """MCC as cov(X, Y) / sqrt(cov(X, X) cov(Y, Y)) of one-hot matrices, summed over classes."""
    x, y = np.eye(n_classes)[labels], np.eye(n_classes)[predictions]
    x, y = x - x.mean(0), y - y.mean(0)
    return np.sum(x * y) / math.sqrt(np.sum(x * x) * np.sum(y * y))


def test_matthews_matches_reference_formulas_on_random_labels():
    rng = np.random.default_rng(0)
    for trial in range(20):
        labels = rng.integers(0, 2, 200)
        predictions = np.where(rng.random(200) < 0.3, 1 - labels, labels)
        expected = _binary_mcc(labels, predictions)
        assert classification.matthews_corrcoef(labels, predictions) == pytest.approx(expected)
        labels, predictions = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
        predictions[: 50 + 5 * trial] = labels[: 50 + 5 * trial]
        expected = _covariance_mcc(labels, predictions, 4)
        assert classification.matthews_corrcoef(labels, predictions) == pytest.approx(expected)


def test_pearson_spearman_by_hand():
    # x - mean = (-1.5, -.5, .5, 1.5), y - mean = (-2.5, -1.5, -.5, 4.5):
    # r = 11 / sqrt(5 * 29); the ranks agree exactly, so rho = 1.
    result = classification.pearson_spearman([1, 2, 3, 4], [1, 2, 3, 8])
    assert result["pearson"] == pytest.approx(11 / math.sqrt(145))
    assert result["spearman"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- tagging


def test_entity_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]  # PER 0-1, LOC 3, ORG 0
    pred = [["B-PER", "I-PER", "B-LOC", "B-ORG"], ["I-ORG", "O"]]  # PER 0-1, LOC 2, ORG 3, ORG 0
    # correct: PER 0-1 and ORG 0 (an I- after O opens an entity): P = 2/4, R = 2/3,
    # F1 = 2 * (1/2)(2/3) / (1/2 + 2/3) = 4/7
    scores = tagging.entity_scores(gold, pred)
    assert scores == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7})
    assert tagging.entity_f1(gold, pred) == pytest.approx(4 / 7)
    # token accuracy: 3 of 6 tags equal (words 2 and 3 of the first sentence and B-/I-ORG differ)
    assert tagging.token_accuracy(gold, pred) == pytest.approx(3 / 6)


def test_tag_chunks_follow_conlleval_rules():
    assert tagging.tag_chunks(["I-PER", "I-LOC", "B-LOC", "I-LOC", "O"]) == [
        ("PER", 0, 0),
        ("LOC", 1, 1),
        ("LOC", 2, 3),
    ]
    assert tagging.tag_chunks(["S-PER", "B-ORG", "E-ORG", "E-ORG"]) == [
        ("PER", 0, 0),
        ("ORG", 1, 2),
        ("ORG", 3, 3),
    ]
    assert tagging.tag_chunks(["B-creative-work", "I-creative-work"]) == [("creative-work", 0, 1)]


def _perturb(sentences, names, rng, rate):
    """Each tag replaced with probability `rate` by a random tag (ill-formed runs included)."""
    out = []
    for tags in sentences:
        tags = list(tags)
        for i in range(len(tags)):
            if rng.random() < rate:
                tags[i] = names[rng.integers(len(names))]
        out.append(tags)
    return out


@pytest.mark.parametrize("scheme", ["IOB1", "IOB2"])
def test_entity_scores_match_seqeval_on_real_conll(shared_data, scheme):
    # scheme="IOB2" keeps the file's raw IOB1 tags; "IOB1" converts them: both must agree.
    sentences = tagging.read_conll(shared_data / "conll2003" / "valid.txt", scheme=scheme)[:400]
    gold = [list(s.tags) for s in sentences]
    names = sorted({t for tags in gold for t in tags} | {"B-PER", "B-LOC", "B-ORG", "B-MISC"})
    rng = np.random.default_rng(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns about ill-formed tags
        for rate in (0.02, 0.1, 0.3):
            pred = _perturb(gold, names, rng, rate)
            expected = {
                "precision": seqeval.metrics.precision_score(gold, pred),
                "recall": seqeval.metrics.recall_score(gold, pred),
                "f1": seqeval.metrics.f1_score(gold, pred),
            }
            assert tagging.entity_scores(gold, pred) == pytest.approx(expected, abs=1e-12)
            assert tagging.token_accuracy(gold, pred) == pytest.approx(
                seqeval.metrics.accuracy_score(gold, pred)
            )


def test_entity_scores_match_seqeval_on_wnut(shared_data):
    sentences = tagging.read_conll(shared_data / "wnut17" / "dev.txt")[:300]
    gold = [list(s.tags) for s in sentences]
    names = sorted({t for tags in gold for t in tags})
    pred = _perturb(gold, names, np.random.default_rng(2), 0.1)
    assert tagging.entity_f1(gold, pred) == pytest.approx(seqeval.metrics.f1_score(gold, pred))


# ----------------------------------------------------------------------------- SQuAD


def test_normalize_answer_edge_cases():
    assert qa.normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert qa.normalize_answer("an apple a day\tthe end") == "apple day end"
    assert qa.normalize_answer("Theatre and Anthem") == "theatre and anthem"  # whole words only
    assert qa.normalize_answer("U.S.-led (2010)") == "usled 2010"
    assert qa.normalize_answer("  the  ") == ""
    assert qa.normalize_answer("24–10") == "24–10"  # the en dash is not ASCII punctuation


def _qa(qid, *answers):
    return qa.QAExample(qid, "t", "q", "c", tuple(qa.Answer(a, 0) for a in answers))


def test_squad_em_f1_by_hand(caplog):
    examples = [
        _qa("q1", "Denver Broncos", "The Denver Broncos"),
        _qa("q2", "Santa Clara, California", "Levi's Stadium"),
        _qa("q3", "February 7, 2016"),
    ]
    predictions = {"q1": "denver broncos!", "q2": "Levi's Stadium in Santa Clara"}
    # q1: exact after normalisation. q2: pred = levis stadium in santa clara (5 words);
    # vs "santa clara california": 2 common, P 2/5, R 2/3, F1 1/2;
    # vs "levis stadium": 2 common, P 2/5, R 1, F1 4/7 -> max 4/7. q3 has no prediction: 0.
    result = qa.squad_em_f1(predictions, examples)
    assert result == pytest.approx({"exact_match": 100 / 3, "f1": 100 * (1 + 4 / 7) / 3})
    assert "1 of 3 questions have no prediction" in caplog.text
    # repeated words count once each: "cat cat" vs "cat" -> P 1/2, R 1, F1 2/3
    assert qa.answer_f1("the the cat cat", "a cat") == pytest.approx(2 / 3)
    assert qa.answer_f1("the", "a") == 0.0  # both normalise to nothing


# ----------------------------------------------------------------------------- dispatch


def test_compute_metrics_dispatches_by_task_kind():
    binary = tasks.compute_metrics("classification", references=LABELS, predictions=PREDICTIONS)
    assert binary == pytest.approx({"accuracy": 0.6, "f1": 0.5, "mcc": 2 / math.sqrt(24)})
    three = tasks.compute_metrics("classification", references=[0, 1, 2], predictions=[0, 1, 1])
    assert three == pytest.approx({"accuracy": 2 / 3})
    one_class = tasks.compute_metrics(
        "classification", references=[2, 2], predictions=[2, 2], num_labels=3
    )
    assert set(one_class) == {"accuracy"}
    regression = tasks.compute_metrics("regression", references=[1, 2, 3], predictions=[2, 4, 7])
    assert set(regression) == {"pearson", "spearman"} and regression["spearman"] == 1.0
    tags = tasks.compute_metrics("tagging", references=[["B-X", "O"]], predictions=[["B-X", "B-X"]])
    assert tags == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "accuracy": 0.5})
    qa = tasks.compute_metrics("qa", references=[_qa("a", "x")], predictions={"a": "X."})
    assert qa == {"exact_match": 100.0, "f1": 100.0}
    with pytest.raises(
        ValueError,
        match=r"config.task.kind='ner' is invalid: allowed values are \('classification'",
    ):
        tasks.compute_metrics("ner", references=[], predictions=[])
