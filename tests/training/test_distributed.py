"""Multi-process runs on one machine: 2 processes x 4 fake CPU devices against 1 process x 8.

The multi-process jobs run as subprocesses (`jax.distributed` is set up once per process); the
one-process reference runs in this process on the 8 devices of conftest.
"""

import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from bertjax.config import load_config
from bertjax.data import pipeline as input_pipeline
from bertjax.data.source import PretrainingSource
from bertjax.interop import model_dir
from bertjax.training import distributed
from bertjax.training.pretrain import BUILTIN_CORPUS, prepare_data, pretrain
from tests.conftest import REPO

TEST_CONFIG = REPO / "configs" / "test.py"
RUN = [  # 20 steps on a data x fsdp mesh that spans both processes (data=2: one row each)
    "--config.mesh.data=2",
    "--config.mesh.fsdp=4",
    "--config.train.num_steps=20",
    "--config.train.log_every=1",
    "--config.train.eval_every=0",
    "--config.checkpoint.every_steps=10",
    "--config.distributed.initialization_timeout=120",
]


def _distributed_config(**fields):
    config = load_config(TEST_CONFIG).distributed
    config.update(fields)
    return config


def _pretrain_argv(prepared, workdir, *extra):
    return ["pretrain", "--config", str(TEST_CONFIG), "--workdir", str(workdir), *prepared, *extra]


def _launch(prepared, workdir, *extra):
    """`bertjax launch` of 2 x 4 devices: (exit status, prefixed output)."""
    cmd = [sys.executable, "-m", "bertjax.cli", "launch", "--num-processes=2"]
    cmd += ["--devices-per-process=4", "--", *_pretrain_argv(prepared, workdir, *extra)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def _losses(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def _assert_losses_equal(got, want, steps):
    assert sorted(got) == list(steps), sorted(got)
    np.testing.assert_allclose([got[s] for s in steps], [want[s] for s in steps], atol=1e-5)


def test_each_process_reads_its_own_block_of_every_global_batch(prepared):
    config = load_config(TEST_CONFIG, prepared)
    source = PretrainingSource(config.data.dir, "train", vocab_path=config.data.vocab)
    kwargs = dict(global_batch_size=8, seed=0, num_epochs=1)
    whole = input_pipeline.make_iterator(source, **kwargs)
    parts = [
        input_pipeline.make_iterator(source, process_index=p, process_count=2, **kwargs)
        for p in range(2)
    ]
    for _ in range(5):
        batch, first, second = next(whole), next(parts[0]), next(parts[1])
        assert first["input_ids"].shape == (4, 32)
        # Disjoint, and together exactly the global batch in its order: process p's block is the
        # rows that land on its devices, so the global array does not depend on the process count.
        assert not {r.tobytes() for r in first["input_ids"]} & {
            r.tobytes() for r in second["input_ids"]
        }
        for name in batch:
            np.testing.assert_array_equal(np.concatenate([first[name], second[name]]), batch[name])


def test_bad_settings_fail_before_joining_and_name_the_setting(prepared, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"config\.distributed\.process_id=2 is out of range"):
        distributed.initialize(
            _distributed_config(
                mode="explicit", coordinator_address="127.0.0.1:1234", num_processes=2, process_id=2
            )
        )
    with pytest.raises(ValueError, match=r"config\.distributed\.mode='mpi' is invalid"):
        distributed.initialize(_distributed_config(mode="mpi"))
    address = f"127.0.0.1:{distributed.free_port()}"  # nobody listens there
    started = time.monotonic()
    with pytest.raises(
        ValueError, match=r"config\.distributed\.coordinator_address=.* cannot be reached"
    ):
        distributed.initialize(
            _distributed_config(
                mode="explicit",
                coordinator_address=address,
                num_processes=2,
                process_id=1,
                initialization_timeout=1,
            )
        )
    assert time.monotonic() - started < 10
    assert not jax.distributed.is_initialized()
    # Several processes need data prepared once, in a folder they all read.
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    config = load_config(TEST_CONFIG, [f"--config.data.corpus={BUILTIN_CORPUS}"])
    with pytest.raises(ValueError, match=r"config\.data\.dir='' holds no prepared data"):
        prepare_data(config, tmp_path)


def test_launcher_stops_the_others_when_one_fails():
    # rank 1 fails at once; rank 0 would sleep for a minute.
    script = (
        "import sys, time; rank = int(sys.argv[-1].split('=')[1]); print('rank', rank, 'up');"
        "sys.exit(3) if rank == 1 else time.sleep(60)"
    )
    out = io.StringIO()
    started = time.monotonic()
    status = distributed.launch(["--"], 2, command=[sys.executable, "-c", script], out=out)
    assert status == 3
    assert time.monotonic() - started < 30
    lines = out.getvalue().splitlines()
    assert "[0] rank 0 up" in lines and "[1] rank 1 up" in lines


@pytest.mark.slow
def test_process_zero_without_its_peers_stops_naming_the_settings(prepared, tmp_path):
    address = f"127.0.0.1:{distributed.free_port()}"
    cmd = [sys.executable, "-m", "bertjax.cli"] + _pretrain_argv(
        prepared,
        tmp_path,
        "--config.distributed.mode=explicit",
        f"--config.distributed.coordinator_address={address}",
        "--config.distributed.num_processes=2",
        "--config.distributed.process_id=0",
        "--config.distributed.initialization_timeout=3",
    )
    env = distributed.child_env(4)
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "config.distributed.coordinator_address" in done.stderr
    assert "config.distributed.initialization_timeout=3" in done.stderr


@pytest.mark.slow
def test_a_mesh_that_does_not_fit_all_processes_devices_fails_at_start(prepared, tmp_path):
    status, output = _launch(prepared, tmp_path, "--config.mesh.data=3", "--config.mesh.fsdp=1")
    assert status != 0
    for rank in (0, 1):
        assert f"[{rank}] bertjax pretrain: error: config.mesh: data=3" in output, output[-3000:]
    assert "but 8 are available" in output


@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory):
    """The one-process run (8 devices, same mesh shape and global batch): its workdir."""
    workdir = tmp_path_factory.mktemp("one_process")
    pretrain(load_config(TEST_CONFIG, prepared + RUN), workdir)
    return workdir


def _start(prepared, workdir, rank, address, *extra):
    cmd = [sys.executable, "-m", "bertjax.cli"] + _pretrain_argv(
        prepared,
        workdir,
        *RUN,
        "--config.distributed.mode=explicit",
        f"--config.distributed.coordinator_address={address}",
        "--config.distributed.num_processes=2",
        f"--config.distributed.process_id={rank}",
        *extra,
    )
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env=distributed.child_env(4),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_killed_process_stops_the_job_and_one_process_resumes_it(prepared, reference, tmp_path):
    expected = _losses(reference)
    address = f"127.0.0.1:{distributed.free_port()}"
    beat = "--config.distributed.heartbeat_timeout=5"
    processes = [_start(prepared, tmp_path, rank, address, beat) for rank in range(2)]
    stderr = [[], []]
    readers = [
        threading.Thread(target=lambda p=p, s=s: s.extend(p.stderr), daemon=True)
        for p, s in zip(processes, stderr, strict=True)
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + 240
    while not (tmp_path / "checkpoints" / "10").exists():
        assert time.monotonic() < deadline and processes[0].poll() is None, "".join(stderr[0])
        time.sleep(0.1)
    processes[1].kill()
    killed = time.monotonic()
    status = processes[0].wait(timeout=90)  # not a hang in a collective
    stopped_after = time.monotonic() - killed
    readers[0].join(timeout=10)
    assert status != 0
    assert stopped_after < 60, stopped_after
    message = "".join(stderr[0])
    # What the survivor's runtime reports depends on where the peer died: in the coordination
    # service's heartbeat, on the socket, or inside a gloo collective whose message it cut short.
    reasons = ("another task died", "Connection reset by peer", "gloo::EnforceNotMet")
    assert any(reason in message for reason in reasons), message[-2000:]
    logged = _losses(tmp_path)
    assert max(logged) < 20, "the run finished before it was killed"
    # process 0 may log a few steps past checkpoint 10 before it sees the death; the rerun
    # starts from the checkpoint and writes them again
    _assert_losses_equal({s: v for s, v in logged.items() if s <= 10}, expected, range(1, 11))

    # Rerun with 1 process: the checkpoint of 2 processes restores and the job goes on exactly.
    pretrain(load_config(TEST_CONFIG, prepared + RUN), tmp_path)
    _assert_losses_equal(_losses(tmp_path), expected, range(1, 21))


@pytest.mark.slow
def test_two_processes_resume_a_one_process_checkpoint_exactly_all_in_gcs(
    prepared, reference, gcs, tmp_path
):
    """As on a TPU pod with everything in gs://: prepared data, vocabulary and workdir in the
    (emulated) bucket; both processes write their checkpoint shards into it through orbax."""
    expected = _losses(reference)
    bucket = "bertjax-gcs/pod"
    overrides = dict(arg.split("=", 1) for arg in prepared)
    for name in ("--config.data.dir", "--config.data.vocab"):
        local = pathlib.Path(overrides[name])
        gcs.put(str(local), f"{bucket}/{local.name}", recursive=local.is_dir())
        overrides[name] = f"gs://{bucket}/{local.name}"
    workdir = tmp_path / "resumed"
    shutil.copytree(reference, workdir)
    shutil.rmtree(workdir / "checkpoints" / "20")  # as if the one-process run stopped at 10
    (workdir / "model").rename(tmp_path / "reference_model")
    run_config = workdir / "run_config.json"  # as if the one-process run read the bucket too
    text = run_config.read_text()
    for arg in prepared:
        name, value = arg.split("=", 1)
        text = text.replace(json.dumps(value), json.dumps(overrides[name]))
    run_config.write_text(text)
    gcs.put(str(workdir), f"{bucket}/run", recursive=True)
    in_gcs = [f"{name}={value}" for name, value in overrides.items()]
    status, output = _launch(in_gcs, f"gs://{bucket}/run", *RUN)
    assert status == 0, output[-3000:]
    gcs.invalidate_cache()
    gcs.get(f"{bucket}/run", str(tmp_path / "done"), recursive=True)
    workdir = tmp_path / "done"
    _assert_losses_equal(_losses(workdir), expected, range(1, 21))
    # Process 0 wrote the final model from the parameters gathered off both processes.
    _, want = model_dir.load_model_dir(tmp_path / "reference_model")
    _, got = model_dir.load_model_dir(workdir / "model")
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert json.loads((workdir / "final_metrics.json").read_text())["loss"] == pytest.approx(
        expected[20], abs=1e-5
    )
    assert "[1] " in output and "[0] " in output
    assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "20"]


@pytest.mark.slow
def test_fine_tuning_on_two_processes_equals_one_process(shared_data, tmp_path):
    from bertjax.models.bert import BertConfig

    vocab = shared_data / "vocab" / "bert-base-uncased-vocab.txt"
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model_dir.save_model(tmp_path / "init", model_dir.init_params(cfg), cfg, vocab)
    argv = [
        "finetune",
        "--config",
        str(REPO / "configs" / "finetune" / "sst2.py"),
        f"--config.init_from={tmp_path / 'init'}",
        "--config.train.global_batch_size=16",
        "--config.train.num_epochs=1.0",
        "--config.task.max_train_examples=64",
        "--config.task.max_eval_examples=32",
        "--config.task.max_len=32",
        "--config.mesh.data=2",
        "--config.mesh.fsdp=4",
        "--config.train.log_every=1",
    ]
    env = {**os.environ, "BERTJAX_DATA": str(shared_data)}
    two = distributed.launch(
        [*argv, "--workdir", str(tmp_path / "two")], 2, devices_per_process=4, out=io.StringIO()
    )
    assert two == 0
    one = subprocess.run(
        [sys.executable, "-m", "bertjax.cli", *argv, "--workdir", str(tmp_path / "one")],
        env=distributed.child_env(8, env),
        cwd=tmp_path,
        capture_output=True,
    )
    assert one.returncode == 0, one.stderr.decode()[-2000:]
    records = [
        [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        for run in ("one", "two")
    ]
    losses = [[r["loss"] for r in run if "loss" in r] for run in records]
    assert len(losses[0]) == 4
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    assert (tmp_path / "one" / "predictions.tsv").read_text() == (
        tmp_path / "two" / "predictions.tsv"
    ).read_text()
