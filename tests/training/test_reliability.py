"""Reliability of the one trainer: divergence guard, unreadable checkpoints, SIGTERM, watchdog,
config checks before data work, float16 refused for training."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from bertjax.cli import main
from bertjax.config import load_config
from bertjax.training import checkpoints, trainer
from bertjax.training.pretrain import BUILTIN_CORPUS, pretrain, setup
from tests.conftest import REPO

TEST_CONFIG = REPO / "configs" / "test.py"
QUIET = ["--config.train.eval_every=0", "--config.checkpoint.async_save=False"]


def _config(prepared, *overrides):
    return load_config(TEST_CONFIG, [*prepared, *QUIET, *overrides])


def _env():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    return env


def _losses(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def _steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_divergence_stops_naming_the_step_and_keeps_the_good_checkpoint(prepared, tmp_path, capsys):
    args = ["pretrain", "--config", str(TEST_CONFIG), "--workdir", str(tmp_path), *prepared]
    args += [*QUIET, "--config.optim.learning_rate=1e4", "--config.optim.warmup_steps=0"]
    args += ["--config.train.log_every=1", "--config.checkpoint.every_steps=1"]
    args += ["--config.train.max_bad_steps=3", "--config.checkpoint.keep=2"]
    assert main(args) == trainer.EXIT_DIVERGED
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    skipped = [r["step"] for r in records if r["skipped_steps"] > 0]
    assert len(skipped) >= 3 and skipped[-3:] == list(range(skipped[-1] - 2, skipped[-1] + 1))
    assert f"stopped at step {skipped[-1]}" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()
    # No checkpoint of a skipped step; the newest one restores with finite parameters.
    saved = _steps(tmp_path)
    assert saved and not set(saved) & set(skipped) and saved[-1] < skipped[-1]
    config = _config(prepared, "--config.optim.learning_rate=1e4")
    job = setup(config, tmp_path)
    assert int(job.state.step) == saved[-1]
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(job.state.params)))
    job.close()


def _truncate_largest_file(step_dir):
    """Cuts the array data (orbax's merged OCDBT data file `state/d/*`) to a third."""
    largest = max((step_dir / "state" / "d").iterdir(), key=lambda p: p.stat().st_size)
    with largest.open("r+b") as f:
        f.truncate(largest.stat().st_size // 3)


def test_unreadable_checkpoint_falls_back_to_the_newest_readable_one(prepared, tmp_path, caplog):
    steps = ["--config.train.log_every=2", "--config.checkpoint.every_steps=2"]
    config = _config(prepared, "--config.train.num_steps=4", *steps)
    pretrain(config, tmp_path)
    ckpts = tmp_path / "checkpoints"
    assert _steps(tmp_path) == [2, 4]
    _truncate_largest_file(ckpts / "4")
    with caplog.at_level("WARNING", logger="bertjax.training.checkpoints"):
        job = setup(config, tmp_path)
    assert int(job.state.step) == 2
    assert any(f"{ckpts / '4'} is unreadable" in r.getMessage() for r in caplog.records)
    job.close()
    assert (ckpts / "4.unreadable").is_dir()  # left on disk, out of the listing
    # Training on from step 2 with keep=1 saves 4 and 6 again; the good ones are what is kept.
    config = _config(prepared, "--config.train.num_steps=6", *steps, "--config.checkpoint.keep=1")
    pretrain(config, tmp_path)
    assert _steps(tmp_path) == [6] and (ckpts / "4.unreadable").is_dir()
    assert sorted(_losses(tmp_path)) == [2, 4, 6]
    # None readable: one clear error naming the folder, no tensorstore traceback.
    _truncate_largest_file(ckpts / "6")
    with pytest.raises(ValueError, match="no readable checkpoint in .*checkpoints"):
        setup(config, tmp_path)


def _cli(workdir, prepared, *extra, script=None, wait=True):
    head = [sys.executable, "-c", script, "pretrain"] if script else None
    cmd = head or [sys.executable, "-m", "bertjax.cli", "pretrain"]
    cmd += ["--config", str(TEST_CONFIG), "--workdir", str(workdir), *prepared, *extra]
    if wait:
        return subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True)
    return subprocess.Popen(
        cmd, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


PREEMPT = ["--config.train.num_steps=24", "--config.train.log_every=1"]
PREEMPT += ["--config.train.eval_every=0", "--config.checkpoint.every_steps=8"]


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_resumes_exactly(prepared, tmp_path):
    pretrain(load_config(TEST_CONFIG, [*prepared, *PREEMPT]), tmp_path / "straight")
    expected = _losses(tmp_path / "straight")
    assert sorted(expected) == list(range(1, 25))

    stopped = tmp_path / "stopped"
    process = _cli(stopped, prepared, *PREEMPT, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if (stopped / "metrics.jsonl").exists() and max(_losses(stopped), default=0) >= 10:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait() == trainer.EXIT_PREEMPTED
    last = max(_losses(stopped))
    assert 10 <= last < 24 and _steps(stopped)[-1] == last  # saved at the step it stopped
    finished = _cli(stopped, prepared, *PREEMPT)
    assert finished.returncode == 0, finished.stderr
    assert _losses(stopped) == expected


SLEEPY_READER = """
import sys, time
from bertjax.data import pretraining
read, calls = pretraining.PretrainingSource.__getitem__, [0]
def sleepy_getitem(self, index):
    calls[0] += 1
    if calls[0] > 12:
        time.sleep(600)
    return read(self, index)
pretraining.PretrainingSource.__getitem__ = sleepy_getitem
from bertjax.cli import main
sys.argv[0] = "bertjax"
sys.exit(main(sys.argv[1:]))
"""


def test_watchdog_logs_every_stack_and_exits_when_the_reader_hangs(prepared, tmp_path):
    watch = ["--config.train.watchdog_seconds=3", "--config.data.prefetch=1"]
    started = time.time()
    result = _cli(tmp_path, prepared, *watch, script=SLEEPY_READER)
    assert result.returncode == trainer.EXIT_STUCK, result.stderr[-3000:]
    assert "config.train.watchdog_seconds" in result.stderr
    assert "in sleepy_getitem" in result.stderr  # the reader's frame, in a grain thread
    assert "thread MainThread" in result.stderr
    assert time.time() - started < 300


CORPUS = [f"--config.data.corpus={BUILTIN_CORPUS}"]


@pytest.mark.parametrize(
    "override,match",
    [
        ("--config.train.global_batch_size=0", r"config\.train\.global_batch_size=0"),
        ("--config.train.grad_accum_steps=3", r"config\.train\.grad_accum_steps=3"),
        ("--config.optim.optimizer=sgd", r"config\.optim\.optimizer='sgd'"),
        ("--config.optim.warmup_steps=100", r"config\.optim\.warmup_steps=100 exceeds"),
        ("--config.mesh.data=3", r"config\.mesh"),
        ("--config.data.max_seq_len=128", r"config\.data\.max_seq_len=128 exceeds"),
        ("--config.train.max_bad_steps=-1", r"config\.train\.max_bad_steps=-1"),
        ("--config.checkpoint.best_mode=up", r"config\.checkpoint\.best_mode='up'"),
        ("--config.model.dtype=float16", r"config\.model\.dtype='float16'.*bfloat16"),
        ("--config.model.param_dtype=float16", r"config\.model\.param_dtype='float16'"),
    ],
)
def test_config_errors_come_before_any_data_work(tmp_path, override, match):
    config = load_config(TEST_CONFIG, [*CORPUS, override])
    with pytest.raises(ValueError, match=match):
        setup(config, tmp_path)
    assert not (tmp_path / "tokenizer").exists() and not (tmp_path / "data").exists()


def test_float16_training_is_refused_on_the_command_line(tmp_path, capsys):
    args = ["pretrain", "--config", str(TEST_CONFIG), "--workdir", str(tmp_path), *CORPUS]
    assert main([*args, "--config.model.dtype=float16"]) == 2
    assert "use --config.model.dtype=bfloat16" in capsys.readouterr().err
    # float16 stays available for inference.
    trainer.check_config(load_config(TEST_CONFIG, ["--config.model.dtype=float16"]), training=False)


def test_best_checkpoint_lookup_without_ranked_checkpoints_is_none(tmp_path):
    config = load_config(TEST_CONFIG)
    manager = checkpoints.checkpoint_manager(tmp_path, config.checkpoint)
    assert checkpoints.best_checkpoint(manager) is None
    manager.close()


@pytest.mark.slow
def test_the_same_command_twice_gives_the_same_vocabulary_and_losses(tmp_path):
    """Vocabulary training, data preparation and training from the corpus, in two processes:
    byte-identical vocabularies and bit-identical losses."""
    argv = [
        "pretrain",
        "--config",
        str(TEST_CONFIG),
        f"--config.data.corpus={BUILTIN_CORPUS}",
        "--config.data.max_seq_len=32",
        "--config.data.max_predictions=5",
        "--config.train.num_steps=6",
        "--config.train.log_every=2",
        *QUIET,
    ]
    for run in ("a", "b"):
        command = [sys.executable, "-m", "bertjax.cli", *argv, "--workdir", str(tmp_path / run)]
        subprocess.run(command, env=_env(), check=True, capture_output=True, timeout=900)
    vocab = [(tmp_path / run / "tokenizer" / "vocab.txt").read_bytes() for run in ("a", "b")]
    assert vocab[0] == vocab[1]
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    assert len(_losses(tmp_path / "a")) == 3


def test_an_eval_split_smaller_than_the_devices_stops_the_job_before_any_step(tmp_path):
    """The final evaluation needs a row of eval instances per device: a split too small for
    that is an error at setup, not after the whole run."""
    lines = []
    for i in range(30):  # 30 short documents; eval_fraction 0.04 holds out one of them
        lines += [f"Cat {i} sat on the mat.", f"Dog {i} ran to the park.", "It was late.", ""]
    (tmp_path / "corpus.txt").write_text("\n".join(lines), encoding="utf-8")
    config = load_config(
        REPO / "configs" / "test.py",
        [
            f"--config.data.corpus={tmp_path / 'corpus.txt'}",
            "--config.model.vocab_size=120",
            "--config.data.max_seq_len=32",
            "--config.data.max_predictions=5",
            "--config.data.eval_fraction=0.04",
        ],
    )
    with pytest.raises(ValueError, match=r"eval split has [1-7] instances, fewer than the 8"):
        pretrain(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
