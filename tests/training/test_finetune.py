"""Fine-tuning: each task kind end to end on real data slices, loading, checks, eval_only."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import numpy as np
import pytest

from bertjax.config import load_config
from bertjax.data.tokenizer import load_tokenizer
from bertjax.interop import model_dir
from bertjax.interop.init_from import load_encoder
from bertjax.models.bert import BertConfig
from bertjax.tasks import classification
from bertjax.tasks.assembly import build_task, make_model
from bertjax.training.finetune import finetune
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
    "--config.train.global_batch_size=16",
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


def test_every_registered_task_kind_has_an_end_to_end_case():
    """The device side of the task contract (`bertjax.tasks.TASKS`; the host side:
    tests/tasks/test_task_registry.py): each kind trains here."""
    from bertjax.tasks import TASKS as KINDS

    assert {load_config(CONFIGS / f"{name}.py").task.kind for name in TASKS} == set(KINDS)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A randomly initialised 2-layer, 32-wide bertjax model with the bert-base-uncased vocab."""
    from tests.conftest import data_dir

    vocab = data_dir() / "vocab" / "bert-base-uncased-vocab.txt"
    if not vocab.is_file():
        pytest.skip(f"real data folder {data_dir()} is absent (set BERTJAX_DATA)")
    cfg = BertConfig(**TINY)
    out = tmp_path_factory.mktemp("tiny") / "model"
    model_dir.save_model(out, model_dir.init_params(cfg, heads=(), seed=3), cfg, vocab)
    return out


def _config(task, source, *extra):
    overrides = [f"--config.init_from={source}", *COMMON, *TASKS[task], *extra]
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
    assert any("loss" in json.loads(line) for line in lines)
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
    from bertjax.tasks.assembly import read_split

    config = _config("squad", tiny_model)
    metrics = finetune(config, tmp_path)
    _check_outputs("squad", tmp_path, metrics, 12)
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    ids = {e.id for e in read_split(config.task, "eval")}
    assert set(predictions) == ids and len(ids) == 12


def test_encoder_loads_from_init_checkpoint_and_head_is_fresh(tiny_model):
    config = _config("sst2", tiny_model)
    _, bert, _, _ = load_encoder(config)
    _, stored = model_dir.load_model_dir(tiny_model)
    same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), bert, stored["backbone"])
    assert all(jax.tree.leaves(same))
    # The train state's encoder is the checkpoint's, before any step; the head is new.
    from bertjax.training.finetune import setup

    config.train.num_steps = 1
    import tempfile

    with tempfile.TemporaryDirectory() as workdir:
        job = setup(config, workdir)
        params = jax.device_get(job.state.params)
        job.manager.close()
        job.writer.close()
    same = jax.tree.map(
        lambda a, b: bool(np.allclose(a, b)), params["backbone"], stored["backbone"]
    )
    assert all(jax.tree.leaves(same))
    assert set(params) == {"backbone", "heads"} and set(params["heads"]) == {"classifier"}
    head = params["heads"]["classifier"]["dense"]
    assert head["kernel"].shape == (32, 2)
    assert not np.allclose(head["kernel"], 0.0)


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
    cfg = BertConfig(**{**TINY, "vocab_size": 100})
    ids = jax.ShapeDtypeStruct((2, 8), np.int32)
    inputs = {"input_ids": ids, "token_type_ids": ids, "attention_mask": ids}
    cases = [
        (make_model("classification", cfg, 3), "classifier", {"logits": (2, 3)}),
        (make_model("tagging", cfg, 5), "tagger", {"logits": (2, 8, 5)}),
        (make_model("qa", cfg), "span", {"start_logits": (2, 8), "end_logits": (2, 8)}),
    ]
    for model, head, shapes in cases:
        variables = jax.eval_shape(model.init, jax.random.key(0), inputs)
        kernel = variables["params"]["heads"][head]["dense"]["kernel"]
        assert kernel.names == ("embed", "classes")
        out = jax.eval_shape(
            lambda v, x, m=model, h=head: m.apply(v, x, only=(h,)), nn.meta.unbox(variables), inputs
        )
        out = {k: v for k, v in out.items() if k not in ("sequence_output", "pooled_output")}
        assert {k: v.shape for k, v in out.items()} == shapes
        assert all(v.dtype == np.float32 for v in out.values())


def test_rerun_on_finished_workdir_resumes_without_training(sst2_run, tiny_model):
    workdir, metrics = sst2_run
    before = (workdir / "metrics.jsonl").read_text().count('"loss"')
    again = finetune(_config("sst2", tiny_model), workdir)
    assert again == pytest.approx(metrics)
    assert (workdir / "metrics.jsonl").read_text().count('"loss"') == before


@pytest.mark.interop
def test_export_to_transformers_gives_the_same_logits(sst2_run, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from bertjax.interop.finetuned_dir import export_hf

    workdir, _ = sst2_run
    out = export_hf(workdir, tmp_path / "hf")
    hf_model = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    assert hf_model.config.id2label == {0: "0", 1: "1"}
    cfg, params = model_dir.load_model_dir(workdir / "model")
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 2000, (3, 12)).astype(np.int32)
    types = np.zeros_like(ids)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    ours = make_model("classification", cfg, 2).apply(
        {"params": params}, {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    )
    with torch.no_grad():
        theirs = hf_model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            token_type_ids=torch.tensor(types, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
        ).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours["logits"]), theirs, atol=1e-4)


# ----------------------------------------------------------------------------- export of every head


def _fake_finetuned_workdir(root, source, kind, label_names):
    """A fine-tuned workdir (model/ with a random head, finetune.json) without training."""
    from bertjax.interop.finetuned_dir import TASK_FILE

    cfg, stored = model_dir.load_model_dir(source)
    ids = np.zeros((1, 8), np.int32)
    num_labels = 2 if kind == "qa" else len(label_names)
    variables = make_model(kind, cfg, num_labels).init(
        jax.random.key(1), {"input_ids": ids, "token_type_ids": ids, "attention_mask": ids + 1}
    )
    params = {**nn.meta.unbox(variables["params"]), "backbone": stored["backbone"]}
    model_dir.save_model(root / "model", params, cfg, source / model_dir.VOCAB_NAME)
    document = {"kind": kind, "label_names": list(label_names)}
    (root / TASK_FILE).write_text(json.dumps(document) + "\n")
    return cfg, params


@pytest.mark.interop
@pytest.mark.parametrize(
    "kind,given", [("tagging", "workdir"), ("qa", "model_dir")], ids=["tagging", "qa"]
)
def test_export_hf_command_exports_tagging_and_qa_heads_with_the_same_logits(
    kind, given, tiny_model, tmp_path
):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from bertjax.cli import main

    labels = ["B-PER", "I-PER", "O"] if kind == "tagging" else []
    cfg, params = _fake_finetuned_workdir(tmp_path / "run", tiny_model, kind, labels)
    source = tmp_path / "run" if given == "workdir" else tmp_path / "run" / "model"
    assert main(["export-hf", str(source), str(tmp_path / "hf")]) == 0
    cls = {"tagging": "BertForTokenClassification", "qa": "BertForQuestionAnswering"}[kind]
    hf_model = getattr(transformers, cls).from_pretrained(tmp_path / "hf").eval()
    if kind == "tagging":
        assert hf_model.config.id2label == dict(enumerate(labels))
    ids = np.random.default_rng(0).integers(1000, 2000, (3, 12)).astype(np.int32)
    types, mask = np.zeros_like(ids), np.ones_like(ids)
    types[:, 6:] = 1
    mask[1, 7:] = 0
    ours = make_model(kind, cfg, len(labels)).apply(
        {"params": params}, {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    )
    with torch.no_grad():
        theirs = hf_model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            token_type_ids=torch.tensor(types, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
        )
    real = mask.astype(bool)  # bertjax's QA head scores padding -1e9; compare real tokens
    ours = {k: v for k, v in ours.items() if k not in ("sequence_output", "pooled_output")}
    for name in ours:
        np.testing.assert_allclose(
            np.asarray(ours[name])[real], getattr(theirs, name).numpy()[real], atol=1e-4
        )


def test_export_hf_command_keeps_pretrained_models_on_the_pretraining_path(tiny_model, tmp_path):
    from bertjax.cli import main
    from bertjax.interop.finetuned_dir import finetuned_workdir

    assert finetuned_workdir(tiny_model) is None
    # tiny_model has no pretraining heads: the pretraining exporter's own error, not the task one
    assert main(["export-hf", str(tiny_model), str(tmp_path / "hf")]) == 2
    assert not (tmp_path / "hf").exists()


# ----------------------------------------------------------------------------- bad input


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def _sst2_files(tmp_path, train_rows, eval_text=None):
    train = _write(tmp_path / "train.tsv", "sentence\tlabel\n" + "".join(train_rows))
    good = "a fine film\t1\nnot good\t0\n" * 8
    dev = _write(tmp_path / "dev.tsv", eval_text or "sentence\tlabel\n" + good)
    return [f"--config.task.train_file={train}", f"--config.task.eval_file={dev}"]


def _fails_before_training(config, workdir, match):
    with pytest.raises(ValueError, match=match):
        finetune(config, workdir)
    assert not (workdir / "checkpoints").exists()


def test_row_with_wrong_column_count_names_file_and_line(tiny_model, tmp_path):
    rows = ["good\t1\n", "one\ttoo\tmany\n"]
    config = _config("sst2", tiny_model, *_sst2_files(tmp_path, rows))
    _fails_before_training(config, tmp_path / "w", r"train\.tsv:3: expected 2 columns, found 3")


def test_unknown_label_lists_the_known_labels(tiny_model, tmp_path):
    rows = ["good\t1\n", "meh\tneutral\n"]
    config = _config("sst2", tiny_model, *_sst2_files(tmp_path, rows))
    match = r"train\.tsv:3: unknown label 'neutral'; known labels: \['0', '1'\]"
    _fails_before_training(config, tmp_path / "w", match)


def test_eval_file_without_labels_fails_before_training(tiny_model, tmp_path):
    files = _sst2_files(tmp_path, ["good\t1\n"], eval_text="sentence\nfine\n")
    config = _config("sst2", tiny_model, *files)
    with pytest.raises(ValueError, match=r"dev\.tsv: no column 'label'"):
        finetune(config, tmp_path / "w")
    context = "Paris is the capital of France."
    article = {"title": "t", "paragraphs": [{"context": context, "qas": []}]}
    qa = {"id": "q1", "question": "What is the capital?", "answers": []}
    article["paragraphs"][0]["qas"].append(qa)
    squad = _write(tmp_path / "test.json", json.dumps({"version": "1.1", "data": [article]}))
    config = _config(
        "squad",
        tiny_model,
        "--config.task.split_by_article=False",
        f"--config.task.eval_file={squad}",
    )
    _fails_before_training(config, tmp_path / "w2", r"eval_file=.*test\.json' has no answers")


def test_global_batch_not_divisible_by_devices_fails_naming_the_field(tiny_model, tmp_path):
    config = _config("sst2", tiny_model, "--config.train.global_batch_size=12")
    _fails_before_training(
        config,
        tmp_path / "w",
        r"config\.train\.global_batch_size=12 must be a positive multiple of 8",
    )
    assert not (tmp_path / "w").exists()


def test_init_checkpoint_vocab_mismatch_fails_before_training(tiny_model, tmp_path):
    config = _config("sst2", tiny_model, "--config.model.vocab_size=1000")
    _fails_before_training(
        config, tmp_path / "w", r"vocab_size=30522 but config\.model\.vocab_size=1000"
    )
    # A vocabulary with more tokens than the embedding has rows: not these weights' vocabulary.
    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    document = json.loads((other / "config.json").read_text())
    document["model"]["vocab_size"] = 30000
    (other / "config.json").write_text(json.dumps(document))
    config = _config("sst2", other, "--config.model.vocab_size=30000")
    _fails_before_training(config, tmp_path / "w2", r"vocabulary has 30522 tokens.*only 30000 rows")


def test_truncation_cut_tags_and_unmatched_answers_are_warned_and_recorded(
    tiny_model, tmp_path, caplog
):
    from bertjax.tasks.assembly import TaskData, build_task, write_data_stats

    tokenizer = model_dir.load_model_tokenizer(tiny_model)
    long_row = " ".join(["word"] * 40) + "\t1\n"
    config = _config("sst2", tiny_model, *_sst2_files(tmp_path, [long_row, "ok\t0\n"]))
    conll = "-DOCSTART- O\n\n" + "".join(f"w{i} O\n" for i in range(40)) + "Paris B-LOC\n\n"
    tagging = [
        f"--config.task.{s}_file={_write(tmp_path / 'ner.txt', conll)}" for s in ("train", "eval")
    ]
    context = "Paris is the capital of France."
    qas = [
        {"id": "q1", "question": "Capital?", "answers": [{"text": "Paris", "answer_start": 0}]},
        {"id": "q2", "question": "Country?", "answers": [{"text": "Spain", "answer_start": 24}]},
    ]
    data = [{"title": t, "paragraphs": [{"context": context, "qas": qas}]} for t in "ab"]
    squad = _write(tmp_path / "squad.json", json.dumps({"version": "1.1", "data": data}))
    configs = {
        "classification": config,
        "tagging": _config("conll2003", tiny_model, *tagging, "--config.task.max_len=16"),
        "qa": _config(
            "squad",
            tiny_model,
            f"--config.task.train_file={squad}",
            f"--config.task.eval_file={squad}",
            "--config.task.eval_fraction=0.5",
        ),
    }
    expected = {
        "classification": ("num_truncated", 1, "examples cut to config.task.max_len=32"),
        "tagging": ("tagged_words_cut", 1, "of the cut words had an entity tag"),
        "qa": ("answers_mismatched", 1, "answers not found in their context"),
    }
    for kind, task_config in configs.items():
        caplog.clear()
        with caplog.at_level("WARNING", logger="bertjax.tasks.common"):
            task = build_task(task_config, tokenizer, tiny_model / "vocab.txt", {})
        key, count, message = expected[kind]
        assert isinstance(task, TaskData) and task.train.stats[key] == count
        assert any(message in r.getMessage() for r in caplog.records), kind
        write_data_stats(tmp_path, task)
        saved = json.loads((tmp_path / "data_stats.json").read_text())
        assert saved["train"][key] == count and set(saved) == {"train", "eval"}


def test_finetune_writes_data_stats(sst2_run):
    workdir, _ = sst2_run
    saved = json.loads((workdir / "data_stats.json").read_text())
    assert saved["train"]["num_examples"] == 64 and saved["eval"]["num_examples"] == 40
    assert saved["train"]["num_truncated"] >= 0


# ----------------------------------------------------------------------------- kill and resume


RESUME = ["--config.train.num_steps=40", "--config.train.log_every=1"]
RESUME += ["--config.checkpoint.every_steps=10"]


def _run_finetune_cli(workdir, source, *, wait=True):
    cmd = [sys.executable, "-m", "bertjax.cli", "finetune", "--config", str(CONFIGS / "sst2.py")]
    cmd += ["--workdir", str(workdir), f"--config.init_from={source}"]
    cmd += [*COMMON, *TASKS["sst2"], *RESUME]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    if wait:
        subprocess.run(cmd, check=True, env=env, cwd=REPO, capture_output=True)
        return None
    return subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _train_losses(workdir):
    path = workdir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


@pytest.mark.slow
def test_killed_finetune_resumes_with_exactly_the_same_losses(tiny_model, tmp_path):
    finetune(_config("sst2", tiny_model, *RESUME), tmp_path / "straight")  # same 8 devices
    expected = _train_losses(tmp_path / "straight")
    assert sorted(expected) == list(range(1, 41))

    killed = tmp_path / "killed"
    process = _run_finetune_cli(killed, tiny_model, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if (killed / "checkpoints" / "10").exists() and max(_train_losses(killed), default=0) > 12:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (killed / "checkpoints" / "10").exists(), "killed before its first checkpoint"
    assert max(_train_losses(killed)) < 40, "the run finished before it was killed"
    assert not (killed / "eval_metrics.json").exists()
    _run_finetune_cli(killed, tiny_model)
    assert _train_losses(killed) == expected
    straight = json.loads((tmp_path / "straight" / "eval_metrics.json").read_text())
    assert json.loads((killed / "eval_metrics.json").read_text()) == straight


# ----------------------------------------------------------------------------- best checkpoint


def test_best_checkpoint_is_kept_beside_the_last_and_reported(tiny_model, tmp_path):
    best = ["--config.checkpoint.best_metric=accuracy", "--config.checkpoint.keep=1"]
    steps = ["--config.train.num_steps=8", "--config.train.eval_every=2"]
    steps += ["--config.checkpoint.every_steps=100", "--config.optim.learning_rate=5e-3"]
    finetune(_config("sst2", tiny_model, *best, *steps), tmp_path)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    evals = {r["step"]: r["eval_accuracy"] for r in map(json.loads, lines) if "eval_f1" in r}
    assert sorted(evals) == [2, 4, 6, 8]
    top = max(evals.values())
    best_step = max(step for step, value in evals.items() if value == top)  # ties: the later
    saved = json.loads((tmp_path / "eval_metrics.json").read_text())
    assert saved["best"]["step"] == best_step and saved["best"]["accuracy"] == pytest.approx(top)
    assert saved["accuracy"] == pytest.approx(evals[8])  # the metrics are still the last model's
    kept = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
    assert kept == sorted({best_step, 8})


def test_float16_training_and_too_long_max_len_fail_before_training(tiny_model, tmp_path):
    config = _config("sst2", tiny_model, "--config.model.dtype=float16")
    _fails_before_training(config, tmp_path / "w", r"config\.model\.dtype='float16'.*bfloat16")
    assert not (tmp_path / "w").exists()
    config = _config("sst2", tiny_model, "--config.task.max_len=256")
    _fails_before_training(config, tmp_path / "w2", r"config\.task\.max_len=256 exceeds")


def test_an_eval_label_training_never_saw_names_file_line_and_label(tiny_model, tmp_path):
    eval_text = "sentence\tlabel\n" + "a fine film\t1\nnot good\t0\n" * 4 + "so so\tneutral\n"
    files = _sst2_files(tmp_path, ["good\t1\n", "bad\t0\n"] * 8, eval_text=eval_text)
    config = _config("sst2", tiny_model, *files)
    config.task.labels = []  # the labels seen in training
    match = r"dev\.tsv:10: label 'neutral' never occurs in the training file .*train\.tsv"
    _fails_before_training(config, tmp_path / "w", match + r".*config\.task\.labels")
    assert not (tmp_path / "w").exists()  # nothing left behind
    config.task.labels = ["0", "1", "neutral"]  # listed: evaluated anyway, as a class of its own
    vocab = model_dir.vocab_file(tiny_model)
    data = build_task(config, load_tokenizer(vocab), vocab, {"lowercase": True})
    assert data.label_names == ["0", "1", "neutral"]


def test_a_folder_an_empty_file_and_a_headerless_file_are_named(tiny_model, tmp_path, caplog):
    dev = _sst2_files(tmp_path, ["good\t1\n"])[1]
    folder = tmp_path / "folder"
    folder.mkdir()
    config = _config("sst2", tiny_model, f"--config.task.train_file={folder}", dev)
    _fails_before_training(config, tmp_path / "w", rf"train_file: {folder} is a folder, not a")
    for name, text in (("header.tsv", "sentence\tlabel\n"), ("empty.tsv", "")):
        train = _write(tmp_path / name, text)
        config = _config("sst2", tiny_model, f"--config.task.train_file={train}", dev)
        _fails_before_training(config, tmp_path / "w", rf"{name} holds no examples .it is empty")
    # Columns by index and header=True: the first row is a header; the log says so.
    rows = _write(tmp_path / "rows.tsv", "a fine film\t1\nnot good\t0\n")
    examples = classification.read_text_classification(rows, text_a=0, label=1)
    assert [e.label for e in examples] == ["0"]
    assert "rows.tsv:1: the first row ['a fine film', '1'] is read as a header" in caplog.text


def test_a_damaged_model_directory_is_one_line_naming_the_file(tiny_model, tmp_path):
    wrong = tmp_path / "wrong"
    shutil.copytree(tiny_model, wrong)
    document = json.loads((wrong / "config.json").read_text())
    document["model"]["intermediate_size"] += 8
    (wrong / "config.json").write_text(json.dumps(document))
    match = r"wrong/config\.json does not match the parameters beside it: backbone.* has shape"
    with pytest.raises(ValueError, match=match):
        model_dir.load_model_dir(wrong)
    cut = tmp_path / "cut"
    shutil.copytree(tiny_model, cut)
    data = [p for p in (cut / model_dir.PARAMS_DIR).rglob("*") if p.is_file()]
    largest = max(data, key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 3])
    with pytest.raises(ValueError, match=r"cut/params: the parameters cannot be read"):
        model_dir.load_model_dir(cut)


class _NotATensor:
    pass


def test_a_pickle_with_objects_is_refused_with_the_way_to_convert_it(tmp_path):
    torch = pytest.importorskip("torch")
    from bertjax.interop.hf_files import read_hf_weights

    torch.save({"w": torch.zeros(2), "object": _NotATensor()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: refused to load: .*safetensors"):
        read_hf_weights(tmp_path)


def test_invalid_utf8_in_a_task_file_is_refused_with_strict_utf8(tiny_model, tmp_path):
    train = tmp_path / "latin1.tsv"
    train.write_bytes(b"sentence\tlabel\ngood\t1\n" + "caf\xe9\t0\n".encode("latin-1"))
    dev = _sst2_files(tmp_path, ["good\t1\n"])[1]
    strict = "--config.data.strict_utf8=True"
    config = _config("sst2", tiny_model, f"--config.task.train_file={train}", dev, strict)
    _fails_before_training(config, tmp_path / "w", r"latin1\.tsv:3:4: invalid UTF-8 in a TSV")
