"""`bertjax predict` and `bertjax.predictor`: predictions on the eval file equal the evaluation's
own predictions.tsv / predictions.json, for every task kind, from unlabelled inputs."""

import json

import numpy as np
import pytest

import bertjax
from bertjax import cli
from bertjax.inference import Predictor, predict_file
from bertjax.interop import model_dir
from bertjax.models.bert import BertConfig
from bertjax.tasks.assembly import read_split
from bertjax.training.finetune import finetune
from tests.conftest import data_dir
from tests.training import test_finetune as ft

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    vocab = data_dir() / "vocab" / "bert-base-uncased-vocab.txt"
    if not vocab.is_file():
        pytest.skip(f"real data folder {data_dir()} is absent (set BERTJAX_DATA)")
    cfg = BertConfig(**ft.TINY)
    out = tmp_path_factory.mktemp("tiny") / "model"
    model_dir.save_model(out, model_dir.init_params(cfg, heads=(), seed=3), cfg, vocab)
    return out


def _finetuned(task, tiny, tmp_path_factory):
    config = ft._config(task, tiny)
    workdir = tmp_path_factory.mktemp(task)
    finetune(config, workdir)
    return workdir, config


def _tsv_column(path, column):
    rows = [r.split("\t") for r in path.read_text(encoding="utf-8").splitlines()]
    index = rows[0].index(column)
    return [r[index] for r in rows[1:]]


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_classification_file_and_texts_match_evaluation(tiny, tmp_path_factory, tmp_path, s3):
    workdir, config = _finetuned("sst2", tiny, tmp_path_factory)
    saved = json.loads((workdir / "finetune.json").read_text())
    assert saved["task"]["max_len"] == 32  # the featurizer's settings travel with the model
    examples = read_split(config.task, "eval")
    unlabelled = tmp_path / "input.tsv"  # the eval file without its label column
    unlabelled.write_text("sentence\n" + "".join(e.text_a + "\n" for e in examples))
    out = tmp_path / "out.jsonl"
    argv = ["predict", str(workdir), "--input", str(unlabelled), "--out", str(out)]
    assert cli.main([*argv, "--batch-size", "8", "--no-progress"]) == 0
    records = _jsonl(out)
    expected = _tsv_column(workdir / "predictions.tsv", "prediction")
    assert [r["label"] for r in records] == expected and len(expected) == 40
    for r in records:
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)
    # the Python API on raw strings, through model/, agrees; so does a chunked stream to TSV
    direct = bertjax.predictor(workdir / "model")([e.text_a for e in examples])
    assert [r["label"] for r in direct] == expected
    model = Predictor(workdir, batch_size=16)
    predict_file(model, model.read(unlabelled), tmp_path / "out.tsv", chunk_size=7, progress=False)
    assert _tsv_column(tmp_path / "out.tsv", "label") == expected
    # the workdir, the input and the output in a bucket (moto's S3 server on 127.0.0.1)
    s3.put(str(workdir), "bertjax-test/predict/sst2", recursive=True)
    s3.put(str(unlabelled), "bertjax-test/predict/input.tsv")
    url = "s3://bertjax-test/predict"
    argv = ["predict", f"{url}/sst2", "--input", f"{url}/input.tsv", "--out", f"{url}/out.tsv"]
    assert cli.main([*argv, "--no-progress"]) == 0
    rows = s3.cat("bertjax-test/predict/out.tsv").decode().splitlines()
    assert [row.split("\t")[0] for row in rows[1:]] == expected


def test_regression_scores_match_evaluation(tiny, tmp_path_factory, tmp_path):
    workdir, config = _finetuned("stsb", tiny, tmp_path_factory)
    examples = read_split(config.task, "eval")
    pairs = [(e.text_a, e.text_b) for e in examples]
    scores = [r["score"] for r in bertjax.predictor(workdir)(pairs)]
    expected = [float(x) for x in _tsv_column(workdir / "predictions.tsv", "prediction")]
    np.testing.assert_allclose(scores, expected, atol=2e-6)
    argv = ["predict", str(workdir), "--out", str(tmp_path / "o.jsonl"), "--no-progress"]
    for a, b in pairs[:3]:
        argv += ["--text", a, "--text-b", b]
    assert cli.main(argv) == 0
    inline = [r["score"] for r in _jsonl(tmp_path / "o.jsonl")]
    np.testing.assert_allclose(inline, expected[:3], atol=2e-6)


def test_tagging_words_and_entities_match_evaluation(tiny, tmp_path_factory, tmp_path):
    workdir, config = _finetuned("conll2003", tiny, tmp_path_factory)
    sentences = read_split(config.task, "eval")
    words_only = tmp_path / "words.txt.conll"  # one word per line, no tag column
    words_only.write_text("".join("\n".join(s.tokens) + "\n\n" for s in sentences))
    out = tmp_path / "tags.jsonl"
    argv = ["predict", str(workdir), "--input", str(words_only), "--out", str(out)]
    assert cli.main([*argv, "--no-progress"]) == 0
    records = _jsonl(out)
    expected = _tsv_column(workdir / "predictions.tsv", "prediction")
    assert [" ".join(r["tags"]) for r in records] == expected and len(records) == 20
    for sentence, r in zip(sentences, records, strict=True):
        text = " ".join(sentence.tokens)
        for entity in r["entities"]:
            assert text[entity["start"] : entity["end"]] == entity["text"]
    # raw text: words from BERT's pre-tokenizer, offsets into the text as given
    text = "  Peter Blackburn, of the European Commission, said (in Brussels)."
    [r] = bertjax.predictor(workdir)([text])
    assert r["tokens"][:3] == ["Peter", "Blackburn", ","] and len(r["tags"]) == len(r["tokens"])
    for entity in r["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["text"]


def test_qa_answers_match_evaluation(tiny, tmp_path_factory, tmp_path):
    workdir, config = _finetuned("squad", tiny, tmp_path_factory)
    examples = read_split(config.task, "eval")
    paragraphs = {}
    for e in examples:  # the eval questions as a SQuAD file without answers
        qas = paragraphs.setdefault((e.title, e.context), [])
        qas.append({"id": e.id, "question": e.question})
    data = [
        {"title": t, "paragraphs": [{"context": c, "qas": qas}]}
        for (t, c), qas in paragraphs.items()
    ]
    squad = tmp_path / "questions.json"
    squad.write_text(json.dumps({"data": data}))
    out = tmp_path / "answers.jsonl"
    argv = ["predict", str(workdir), "--input", str(squad), "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    records = _jsonl(out)
    expected = json.loads((workdir / "predictions.json").read_text())
    assert {r["id"]: r["answer"] for r in records} == expected and len(records) == 12
    contexts = {e.id: e.context for e in examples}
    for r in records:
        assert contexts[r["id"]][r["start"] : r["end"]] == r["answer"]
    e = examples[0]
    argv = ["predict", str(workdir), "--question", e.question, "--context", e.context]
    assert cli.main([*argv, "--out", str(tmp_path / "one.jsonl"), "--no-progress"]) == 0
    assert _jsonl(tmp_path / "one.jsonl")[0]["answer"] == expected[e.id]
