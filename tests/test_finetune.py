"""Fine-tuning: each task kind end to end on real data slices, loading, checks, eval_only."""

import json

import flax.linen as nn
import jax
import numpy as np
import pytest

from bertjax import checkpoint
from bertjax.config import BertConfig, load_config
from bertjax.finetune import finetune, load_encoder
from bertjax.heads import BertForSequenceClassification
from tests.conftest import REPO

CONFIGS = REPO / "configs" / "finetune"
TINY = dict(
    vocab_size=30522,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    intermediate_size=64,
    max_position_embeddings=128,
)
COMMON = [
    "--config.model.hidden_size=32",
    "--config.train.batch_size=16",
    "--config.train.num_epochs=1.0",
    "--config.train.log_every=2",
    "--config.optim.learning_rate=1e-3",
    "--config.checkpoint.async_save=False",
    "--config.mesh.data=1",  # parameters sharded over all 8 devices (FSDP)
    "--config.mesh.fsdp=-1",
]
TASKS = {
    "sst2": [
        "--config.task.max_train_examples=64",
        "--config.task.max_eval_examples=40",
        "--config.task.max_len=32",
    ],
    "stsb": [
        "--config.task.max_train_examples=32",
        "--config.task.max_eval_examples=24",
        "--config.task.max_len=48",
    ],
    "conll2003": [
        "--config.task.max_train_examples=32",
        "--config.task.max_eval_examples=20",
        "--config.task.max_len=48",
    ],
    "squad": [
        "--config.task.max_train_examples=16",
        "--config.task.max_eval_examples=12",
        "--config.task.max_len=96",
        "--config.task.doc_stride=48",
    ],
}
EXPECTED_KEYS = {
    "sst2": {"accuracy", "f1", "mcc"},
    "stsb": {"pearson", "spearman"},
    "conll2003": {"precision", "recall", "f1", "accuracy"},
    "squad": {"exact_match", "f1"},
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A randomly initialised 2-layer, 32-wide bertjax model with the bert-base-uncased vocab."""
    from tests.conftest import data_dir

    vocab = data_dir() / "vocab" / "bert-base-uncased-vocab.txt"
    if not vocab.is_file():
        pytest.skip(f"real data folder {data_dir()} is absent (set BERTJAX_DATA)")
    cfg = BertConfig(**TINY)
    out = tmp_path_factory.mktemp("tiny") / "model"
    checkpoint.save_model(out, checkpoint.init_params(cfg, with_heads=False, seed=3), cfg, vocab)
    return out


def _config(task, model_dir, *extra):
    overrides = [f"--config.init_from={model_dir}", *COMMON, *TASKS[task], *extra]
    return load_config(CONFIGS / f"{task}.py", overrides)


@pytest.fixture(scope="module")
def sst2_run(tiny_model, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sst2")
    metrics = finetune(_config("sst2", tiny_model), workdir)
    return workdir, metrics


def _check_outputs(task, workdir, metrics, n_eval):
    saved = json.loads((workdir / "eval_metrics.json").read_text())
    assert set(saved) == EXPECTED_KEYS[task]
    assert saved == pytest.approx(metrics)
    assert all(np.isfinite(v) for v in saved.values())
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert any("train_loss" in json.loads(line) for line in lines)
    if task == "squad":
        return
    rows = (workdir / "predictions.tsv").read_text().splitlines()
    assert len(rows) == 1 + n_eval  # header + one row per eval example


def test_sequence_classification_trains_and_evaluates(sst2_run):
    workdir, metrics = sst2_run
    _check_outputs("sst2", workdir, metrics, 40)
    rows = [r.split("\t") for r in (workdir / "predictions.tsv").read_text().splitlines()[1:]]
    assert {r[1] for r in rows} <= {"0", "1"}
    assert (workdir / "model" / "params").is_dir()
    assert json.loads((workdir / "finetune.json").read_text())["label_names"] == ["0", "1"]


@pytest.mark.parametrize("task", ["stsb", "conll2003"])
def test_regression_and_tagging_train_and_evaluate(task, tiny_model, tmp_path):
    metrics = finetune(_config(task, tiny_model), tmp_path)
    n_eval = int(TASKS[task][1].split("=")[1])
    _check_outputs(task, tmp_path, metrics, n_eval)


def test_qa_trains_and_predicts_every_eval_question(tiny_model, tmp_path):
    from bertjax.finetune import read_split

    config = _config("squad", tiny_model)
    metrics = finetune(config, tmp_path)
    _check_outputs("squad", tmp_path, metrics, 12)
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    ids = {e.id for e in read_split(config.task, "eval")}
    assert set(predictions) == ids and len(ids) == 12


def test_encoder_loads_from_init_checkpoint_and_head_is_fresh(tiny_model):
    config = _config("sst2", tiny_model)
    _, bert, _, _ = load_encoder(config)
    _, stored = checkpoint.load_model_dir(tiny_model)
    same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), bert, stored["bert"])
    assert all(jax.tree.leaves(same))
    # The train state's encoder is the checkpoint's, before any step; the head is new.
    from bertjax.finetune import setup

    config.train.num_steps = 1
    import tempfile

    with tempfile.TemporaryDirectory() as workdir:
        job = setup(config, workdir)
        params = jax.device_get(job.state.params)
        job.manager.close()
        job.writer.close()
    same = jax.tree.map(lambda a, b: bool(np.allclose(a, b)), params["bert"], stored["bert"])
    assert all(jax.tree.leaves(same))
    assert set(params) == {"bert", "classifier"}
    assert params["classifier"]["kernel"].shape == (32, 2)
    assert not np.allclose(params["classifier"]["kernel"], 0.0)


def test_mismatching_init_checkpoint_fails_before_training(tiny_model, tmp_path):
    config = _config("sst2", tiny_model, "--config.model.hidden_size=64")
    with pytest.raises(ValueError, match=r"hidden_size=32.*config\.model\.hidden_size=64"):
        finetune(config, tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_eval_only_reproduces_eval_metrics(sst2_run, tmp_path):
    workdir, _ = sst2_run
    config = _config("sst2", workdir, "--config.eval_only=True")
    metrics = finetune(config, tmp_path)
    original = json.loads((workdir / "eval_metrics.json").read_text())
    assert json.loads((tmp_path / "eval_metrics.json").read_text()) == pytest.approx(original)
    assert metrics == pytest.approx(original)
    assert (tmp_path / "predictions.tsv").read_text() == (workdir / "predictions.tsv").read_text()


def test_heads_return_float32_logits_with_class_axes():
    from bertjax.heads import BertForQuestionAnswering, BertForTokenClassification

    cfg = BertConfig(**{**TINY, "vocab_size": 100})
    ids = jax.ShapeDtypeStruct((2, 8), np.int32)
    cases = [
        (BertForSequenceClassification(cfg, 3), "classifier", {"logits": (2, 3)}),
        (BertForTokenClassification(cfg, 5), "classifier", {"logits": (2, 8, 5)}),
        (
            BertForQuestionAnswering(cfg),
            "qa_outputs",
            {"start_logits": (2, 8), "end_logits": (2, 8)},
        ),
    ]
    for model, head, shapes in cases:
        variables = jax.eval_shape(model.init, jax.random.key(0), ids, ids, ids)
        assert variables["params"][head]["kernel"].names == ("embed", "classes")
        out = jax.eval_shape(model.apply, nn.meta.unbox(variables), ids, ids, ids)
        assert {k: v.shape for k, v in out.items()} == shapes
        assert all(v.dtype == np.float32 for v in out.values())


def test_rerun_on_finished_workdir_resumes_without_training(sst2_run, tiny_model):
    workdir, metrics = sst2_run
    before = (workdir / "metrics.jsonl").read_text().count("train_loss")
    again = finetune(_config("sst2", tiny_model), workdir)
    assert again == pytest.approx(metrics)
    assert (workdir / "metrics.jsonl").read_text().count("train_loss") == before


@pytest.mark.interop
def test_export_to_transformers_gives_the_same_logits(sst2_run, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from bertjax.finetune import export_hf

    workdir, _ = sst2_run
    out = export_hf(workdir, tmp_path / "hf")
    hf_model = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    assert hf_model.config.id2label == {0: "0", 1: "1"}
    cfg, params = checkpoint.load_model_dir(workdir / "model")
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 2000, (3, 12)).astype(np.int32)
    types = np.zeros_like(ids)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    ours = BertForSequenceClassification(cfg, 2).apply({"params": params}, ids, types, mask)
    with torch.no_grad():
        theirs = hf_model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            token_type_ids=torch.tensor(types, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
        ).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours["logits"]), theirs, atol=1e-4)
