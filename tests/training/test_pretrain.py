"""Pretraining: optimizer, jitted sharded step, gradient accumulation, the job, SIGKILL and resume
of a run in a bucket (local SIGKILL and SIGTERM resume: tests/training/test_reliability.py)."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bertjax import sharding, storage
from bertjax.config import load_config
from bertjax.data.source import PretrainingSource
from bertjax.interop import formats
from bertjax.objectives import base as train
from bertjax.training import checkpoints, loop, optimizer
from bertjax.training.pretrain import BUILTIN_CORPUS, evaluate, pretrain, setup
from tests.conftest import REPO, S3_KEY_ID, S3_SECRET, STRAIGHT

TEST_CONFIG = REPO / "configs" / "test.py"


def _config(prepared, *overrides):
    return load_config(TEST_CONFIG, [*prepared, *overrides])


def test_schedule_warms_up_then_decays_linearly_to_zero():
    optim = load_config(TEST_CONFIG).optim
    optim.update(learning_rate=1e-3, warmup_steps=10)
    schedule = optimizer.learning_rate_schedule(optim, 110)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(5e-4)
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(60)) == pytest.approx(5e-4)
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-12)


def test_weight_decay_skips_biases_and_layer_norm():
    params = {
        "backbone": {
            "embeddings": {"layer_norm": {"scale": 1, "bias": 1}, "position_embeddings": 1},
            "encoder": {"layer_0": {"mlp": {"wi": {"kernel": 1, "bias": 1}}}},
        },
        "heads": {"mlm": {"output_bias": 1}},
    }
    mask = optimizer.decay_mask(params)
    assert mask["backbone"]["embeddings"]["layer_norm"] == {"scale": False, "bias": False}
    assert mask["backbone"]["embeddings"]["position_embeddings"] is True
    assert mask["backbone"]["encoder"]["layer_0"]["mlp"]["wi"] == {"kernel": True, "bias": False}
    assert mask["heads"]["mlm"]["output_bias"] is False
    with pytest.raises(ValueError, match="config.optim.optimizer='sgd'"):
        optim = load_config(TEST_CONFIG).optim
        optim.optimizer = "sgd"
        optimizer.make_optimizer(optim, 10)


def test_nll_and_hits_match_optax_cross_entropy_and_argmax():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(4, 20, 300)) * 5, jnp.float32)
    labels = jnp.asarray(rng.integers(0, 300, size=(4, 20)))
    labels = labels.at[0, :5].set(jnp.argmax(logits[0, :5], -1))  # some certain hits
    nll, hits = train.nll_and_hits(logits, labels)
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    np.testing.assert_allclose(nll, expected, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(hits, (jnp.argmax(logits, -1) == labels).astype(np.float32))
    assert float(hits[0, :5].sum()) == 5.0
    grad = jax.grad(lambda x: train.nll_and_hits(x, labels)[0].sum())(logits)
    expected_grad = jax.nn.softmax(logits) - jax.nn.one_hot(labels, 300)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-6)


def _fixed_batch(job):
    return sharding.global_batch(next(job.train_iter), job.steps.mesh)


@pytest.mark.parametrize(
    "mesh", [{"data": 2, "fsdp": 2, "tensor": 2}, {"data": 1, "fsdp": 8, "tensor": 1}]
)
def test_sharded_steps_lower_the_loss(prepared, tmp_path, mesh):
    config = _config(prepared, "--config.optim.warmup_steps=0", "--config.optim.learning_rate=5e-3")
    config.mesh.update(mesh)
    job = setup(config, tmp_path)
    embedding = job.state.params["backbone"]["embeddings"]["word_embeddings"]["embedding"]
    assert not embedding.sharding.is_fully_replicated
    batch = _fixed_batch(job)
    losses = []
    for _ in range(8):
        job.state, metrics = job.steps.train_step(job.state, batch)
        sums = jax.device_get(metrics)
        losses.append(sums["mlm_loss"] / sums["mlm_count"] + sums["nsp_loss"] / sums["nsp_count"])
    assert int(job.state.step) == 8
    assert losses[-1] < losses[0] - 0.4, losses
    # The optimizer state is sharded like the parameters (ZeRO-style on fsdp).
    mu = job.state.opt_state[1][0].mu["backbone"]["embeddings"]["word_embeddings"]["embedding"]
    assert mu.sharding == embedding.sharding


def test_packed_rows_train_with_one_nsp_example_per_instance(prepared, tmp_path):
    packing = ["--config.data.pack_sequences=True", "--config.data.max_pack_size=3"]
    # Length 64 with many short instances: room to pack (length 32 is ~99.8% real tokens).
    shorter = ["--config.data.max_seq_len=64", "--config.data.short_seq_prob=0.5"]
    config = _config(prepared, *packing, *shorter, "--config.optim.warmup_steps=0")
    config.data.update(dir="", corpus=BUILTIN_CORPUS)
    config.optim.learning_rate = 5e-3
    job = setup(config, tmp_path)
    eval_instances = PretrainingSource(tmp_path / "data", "eval")
    assert len(job.eval_source) < len(eval_instances)
    fullest = np.argsort(-(job.eval_source.plan >= 0).sum(axis=1), kind="stable")[:8]
    rows = [job.eval_source[int(i)] for i in fullest]
    local = {k: np.stack([row[k] for row in rows]) for k in rows[0]}
    batch = sharding.global_batch(local, job.steps.mesh)
    instances = float(np.asarray(batch["nsp_weights"]).sum())
    assert instances > config.train.global_batch_size  # rows hold several instances
    losses = []
    for _ in range(8):
        job.state, metrics = job.steps.train_step(job.state, batch)
        sums = jax.device_get(metrics)
        assert sums["nsp_count"] == instances
        losses.append(sums["mlm_loss"] / sums["mlm_count"] + sums["nsp_loss"] / sums["nsp_count"])
    assert losses[-1] < losses[0] - 0.4, losses
    evaluated = evaluate(job)
    assert np.isfinite(evaluated["loss"])
    with pytest.raises(ValueError, match="config.data.pack_sequences=True"):
        cudnn = ["--config.model.attention_impl=cudnn", "--config.model.attention_dropout=0.0"]
        setup(_config(prepared, *packing, *cudnn, "--config.model.dtype=bfloat16"), tmp_path / "c")


def test_gradient_accumulation_gives_the_full_batch_update(prepared, tmp_path):
    def run(accum):
        config = _config(
            prepared,
            f"--config.train.grad_accum_steps={accum}",
            "--config.model.hidden_dropout=0.0",
            "--config.model.attention_dropout=0.0",
            "--config.optim.warmup_steps=0",
        )
        job = setup(config, tmp_path / f"accum{accum}")
        state, metrics = job.steps.train_step(job.state, _fixed_batch(job))
        return jax.device_get(state.params), jax.device_get(metrics)

    params1, metrics1 = run(1)
    params4, metrics4 = run(4)
    assert metrics1["mlm_count"] == metrics4["mlm_count"] > 0
    np.testing.assert_allclose(metrics1["mlm_loss"], metrics4["mlm_loss"], rtol=1e-5)
    np.testing.assert_allclose(metrics1["grad_norm"], metrics4["grad_norm"], rtol=1e-4)
    for a, b in zip(
        jax.tree_util.tree_leaves(params1), jax.tree_util.tree_leaves(params4), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=2e-6)


def test_bfloat16_step_keeps_float32_master_weights(prepared, tmp_path):
    job = setup(_config(prepared, "--config.model.dtype=bfloat16"), tmp_path)
    state, metrics = job.steps.train_step(job.state, _fixed_batch(job))
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(state.params))
    assert np.isfinite(float(metrics["mlm_loss"]))


def test_log_window_counts_the_wait_for_the_steps_results(prepared, tmp_path, monkeypatch):
    """Steps are dispatched asynchronously, so a window's time must run to the end of the host
    sync that fetches its metrics; timed before it, seq_per_sec reported the dispatch rate
    (100x the real rate on CPU)."""
    job = setup(_config(prepared), tmp_path)
    _, metrics = job.steps.train_step(job.state, _fixed_batch(job))
    fetch = jax.device_get

    def busy_device_get(tree):  # results that arrive 0.5 s after the call, as a busy device's
        time.sleep(0.5)
        return fetch(tree)

    monkeypatch.setattr(loop.jax, "device_get", busy_device_get)
    out = loop._log_window(job, [metrics], time.perf_counter())
    assert 0 < out["seq_per_sec"] <= job.global_batch_size / 0.5


def test_pretrain_job_writes_metrics_checkpoints_and_a_loadable_model(prepared, tmp_path):
    config = _config(
        prepared,
        "--config.train.num_steps=12",
        "--config.train.log_every=4",
        "--config.train.eval_every=6",
        "--config.checkpoint.every_steps=6",
        "--config.checkpoint.keep=2",
    )
    final = pretrain(config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_records] == [4, 8, 12]
    for field in ("loss", "mlm_accuracy", "nsp_accuracy", "learning_rate", "seq_per_sec"):
        assert all(np.isfinite(r[field]) for r in train_records), field
    assert [r["step"] for r in records if "eval_mlm_accuracy" in r] == [6, 12]
    assert train_records[-1]["loss"] < train_records[0]["loss"]  # 12 steps lower the loss
    # Rerunning a finished job trains nothing and reports the same evaluation.
    again = pretrain(config, tmp_path)
    assert again["eval_mlm_accuracy"] == final["eval_mlm_accuracy"]
    assert json.loads((tmp_path / "final_metrics.json").read_text()) == again
    assert list((tmp_path / "tensorboard").iterdir())
    # keep=2: the two most recent checkpoints are left.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["12", "6"]
    model, params = formats.load_pretrained(tmp_path / "model")
    ids = jnp.ones((1, 8), jnp.int32)
    batch = {"input_ids": ids, "token_type_ids": jnp.zeros_like(ids), "attention_mask": ids}
    out = model.apply({"params": params}, batch)
    assert out["sequence_output"].shape == (1, 8, 32)
    # The workdir itself loads too: the latest checkpoint's parameters, equal to the final model.
    _, workdir_params = formats.load_pretrained(tmp_path)
    for a, b in zip(
        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(workdir_params), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_a_half_written_checkpoint_is_never_loaded(prepared, tmp_path):
    config = _config(
        prepared,
        "--config.train.num_steps=4",
        "--config.train.log_every=2",
        "--config.checkpoint.every_steps=2",
        "--config.train.eval_every=0",
    )
    pretrain(config, tmp_path)
    ckpts = tmp_path / "checkpoints"
    # A write of step 4 cut off by a crash: orbax writes into a temporary folder, renamed when done.
    (ckpts / "4").rename(ckpts / "4.orbax-checkpoint-tmp-1700000000")
    manager = checkpoints.checkpoint_manager(ckpts, config.checkpoint)
    assert manager.latest_step() == 2
    job = setup(config, tmp_path)
    assert int(job.state.step) == 2
    # Goodput over both runs: steps 3 and 4 are trained again, and counted as lost.
    final = loop.train(job)
    job.close()
    totals = json.loads((tmp_path / "goodput.json").read_text())
    assert (totals["runs"], totals["steps_trained"], totals["lost_steps"]) == (2, 6, 2)
    assert sum(totals["seconds"].values()) == pytest.approx(totals["wall_seconds"])
    assert all(totals["seconds"][k] > 0 for k in ("startup", "compile", "train", "lost"))
    assert final["goodput"] == pytest.approx(totals["seconds"]["train"] / totals["wall_seconds"])
    assert final["goodput_lost_steps"] == 2 and 0 < final["goodput"] < 1


def test_missing_data_names_the_config_fields(tmp_path):
    config = load_config(TEST_CONFIG)
    with pytest.raises(ValueError, match="config.data.corpus .* or config.data.dir"):
        setup(config, tmp_path)


def _run_cli(workdir, prepared, *extra, wait=True, env=None):
    cmd = [
        sys.executable,
        "-m",
        "bertjax.cli",
        "pretrain",
        "--config",
        str(TEST_CONFIG),
        "--workdir",
        str(workdir),
        *prepared,
        *STRAIGHT,
        *extra,
    ]
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
        **(env or {}),
    }
    if wait:
        return subprocess.run(cmd, check=True, env=env, cwd=REPO, capture_output=True)
    return subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _losses(workdir, fs=None):
    if fs is None:
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
    else:  # a workdir in a bucket
        fs.invalidate_cache()
        found = fs.exists(f"{workdir}/metrics.jsonl")
        lines = fs.cat(f"{workdir}/metrics.jsonl").decode().splitlines() if found else []
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


@pytest.mark.slow
def test_killed_run_resumes_with_exactly_the_same_losses(prepared, straight_losses, s3):
    # The same run with its prepared data and its workdir in a bucket (moto's S3 server), killed
    # with SIGKILL once the checkpoint of step 8 is in the bucket, and rerun: the same losses.
    # The run works in a local staging folder uploaded every 0.5 s; the rerun resumes in that
    # folder (a local workdir after a SIGKILL: a torn metrics line, orbax's unfinished folder)
    # when the bucket is as its last upload left it, else from what the bucket holds.
    fields = dict(arg.removeprefix("--config.").split("=", 1) for arg in prepared)
    s3.put(fields["data.dir"], "bertjax-test/kill/data", recursive=True)
    s3.put(fields["data.vocab"], "bertjax-test/kill/vocab.txt")
    in_bucket = [
        *prepared,
        "--config.data.dir=s3://bertjax-test/kill/data",
        "--config.data.vocab=s3://bertjax-test/kill/vocab.txt",
    ]
    url, sync = "s3://bertjax-test/kill/run", {"BERTJAX_SYNC_SECONDS": "0.5"}
    process = _run_cli(url, in_bucket, wait=False, env=sync)
    deadline = time.time() + 300
    while time.time() < deadline:
        if (
            s3.exists(f"{url}/checkpoints/8/_CHECKPOINT_METADATA")
            and max(_losses(url, s3), default=0) >= 9
        ):
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 8 < max(_losses(url, s3)) < 24, "the run finished before it was killed"
    assert s3.exists(f"{url}/.bertjax.lock")  # left by the killed run: taken over (pid gone)
    rerun = _run_cli(url, in_bucket, env=sync)
    assert _losses(url, s3) == straight_losses
    assert not s3.exists(f"{url}/.bertjax.lock")
    # the credentials (moto's, from the environment) are in no output and no file of the run
    written = [rerun.stdout, rerun.stderr, *s3.cat(s3.find(url)).values()]
    written += [p.read_bytes() for p in storage.staging_dir(url).rglob("*") if p.is_file()]
    assert len(written) > 20 and not any(
        S3_SECRET.encode() in b or S3_KEY_ID.encode() in b for b in written
    )
