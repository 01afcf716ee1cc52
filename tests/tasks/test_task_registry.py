"""Contract tests over the task registries: every task kind (`bertjax.tasks.TASKS`), task file
format (`tasks.formats.READERS`) and task metric (`tasks.formats.METRICS`). Host side only, no
compiling: the device side of each kind trains end to end in tests/training/test_finetune.py,
which checks that every registered kind has a case there."""

import inspect

import pytest

from bertjax.tasks import TASKS, formats, task_module
from bertjax.tasks.korean import KLUE_NER_LABELS
from bertjax.tasks.qa import Answer, QAExample

TAGS = [["B-PS", "I-PS", "O", "B-LC"], ["O", "B-OG", "I-OG"]]
QUESTIONS = [
    QAExample("q1", "", "Who wrote it?", "Ada wrote it.", (Answer("Ada", 0),)),
    QAExample("q2", "", "What sat?", "It was a cat that sat.", (Answer("a cat", 7),)),
]
# kind -> (label names, a raw input, references, perfect predictions, wrong predictions, headline)
SAMPLES = {
    "classification": (("0", "1"), "a fine film", [0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1], "accuracy"),
    "regression": ((), ("a cat", "the cat"), [0.1, 0.5, 0.9, 0.3], [0.1, 0.5, 0.9, 0.3],
                   [0.9, 0.5, 0.1, 0.3], "pearson"),
    "tagging": (KLUE_NER_LABELS, "Ada sat", TAGS, TAGS, [["O"] * len(t) for t in TAGS], "f1"),
    "qa": ((), ("Who?", "Ada."), QUESTIONS, {e.id: e.answers[0].text for e in QUESTIONS},
           {e.id: "wrote" for e in QUESTIONS}, "f1"),
}  # fmt: skip
PERCENT = {"qa"}  # kinds scored in percent (SQuAD's and KorQuAD's scripts)


def _scores_best_and_worse(metrics, kind):
    """Every score of the perfect predictions is the best (1, or 100 %); the headline of wrong
    ones is lower."""
    _, _, references, perfect, wrong, headline = SAMPLES[kind]
    best = metrics(perfect, references)
    top = 100.0 if kind in PERCENT else 1.0
    assert best and all(v == pytest.approx(top) for v in best.values()), best
    assert metrics(wrong, references)[headline] < best[headline]


def test_every_task_kind_has_a_sample():
    assert set(SAMPLES) == set(TASKS)


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_a_task_kind_gives_its_functions_and_an_objective_that_scores(kind):
    module = task_module(kind)
    for name in ("read", "from_input", "labelled", "make_task"):
        assert callable(getattr(module, name)), name
    labels, raw, *_ = SAMPLES[kind]
    task = module.make_task({"kind": kind}, labels)
    assert task.kind == kind and task.heads and task.loss_terms
    device = ("prepare", "counts", "sums", "summarize", "flops_per_sequence")
    host = ("featurize", "outputs_to_predictions", "metrics", "write_predictions", "records")
    for name in device + host:
        assert callable(getattr(task, name)), name
    example = module.from_input(raw, 3)
    assert module.labelled([example]) in (True, False)
    _scores_best_and_worse(task.metrics, kind)


@pytest.mark.parametrize("kind,name", sorted((k, n) for k, v in formats.METRICS.items() for n in v))
def test_a_task_metric_scores_perfect_predictions_best(kind, name):
    metrics = formats.metrics(kind, name)
    assert len(inspect.signature(metrics).parameters) == 2  # (predictions, references)
    task = task_module(kind).make_task({"kind": kind, "metric": name}, SAMPLES[kind][0])
    assert task.metric == name
    _scores_best_and_worse(metrics, kind)


@pytest.mark.parametrize("kind,fmt", sorted((k, f) for k, v in formats.READERS.items() for f in v))
def test_a_task_format_names_a_reader_of_a_file_split(kind, fmt):
    reader = formats.reader(kind, fmt)
    assert list(inspect.signature(reader).parameters) == ["task_cfg", "path", "split"]
    with pytest.raises(ValueError, match=rf"config\.task\.format='nope' is invalid for {kind}"):
        formats.reader(kind, "nope")
