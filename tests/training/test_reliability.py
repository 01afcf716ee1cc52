"""Reliability of the one trainer: divergence guard, unreadable checkpoints, SIGTERM, watchdog,
config checks before data work, float16 refused for training."""

import contextlib
import errno
import json
import logging
import os
import pathlib
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from unittest import mock

import jax
import numpy as np
import pytest

from bertjax import files
from bertjax.cli import main
from bertjax.config import load_config
from bertjax.training import checkpoints, run_log, stops, trainer
from bertjax.training import pretrain as pretrain_module
from bertjax.training import workdir as lock
from bertjax.training.metric_writers import MetricWriter
from bertjax.training.pretrain import BUILTIN_CORPUS, pretrain, setup
from tests.conftest import REPO, STRAIGHT

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
    assert main(args) == stops.EXIT_DIVERGED
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    skipped = [r["step"] for r in records if r["skipped_steps"] > 0]
    assert len(skipped) >= 3 and skipped[-3:] == list(range(skipped[-1] - 2, skipped[-1] + 1))
    err = capsys.readouterr().err
    assert f"stopped at step {skipped[-1]}" in err
    # The progress bar was closed first: the reason is the last line on the terminal (issue 24).
    shown = [line.split("\r")[-1] for line in err.splitlines() if line.split("\r")[-1].strip()]
    assert shown[-1].startswith("bertjax pretrain: stopped: training diverged"), shown[-1]
    assert "stopped: training diverged" in (tmp_path / "log.txt").read_text()
    assert not (tmp_path / "model").exists()
    # No checkpoint of a skipped step; the newest one restores with finite parameters.
    saved = _steps(tmp_path)
    assert f"the checkpoint of step {saved[-1]} holds the last good parameters" in err
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


def _flip_largest_file(step_dir):
    """Inverts a byte every 1/64 of the array data (orbax's merged data file `state/d/*`)."""
    largest = max((step_dir / "state" / "d").iterdir(), key=lambda p: p.stat().st_size)
    raw = bytearray(largest.read_bytes())
    for i in range(0, len(raw), max(1, len(raw) // 64)):
        raw[i] ^= 0xFF
    largest.write_bytes(bytes(raw))


def _unraisable(monkeypatch) -> list:
    """Records what reaches Python's hook for "unraisable" errors (printed as tracebacks)."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(repr(u.exc_value)))
    return seen


def test_unreadable_checkpoint_falls_back_to_the_newest_readable_one(
    prepared, tmp_path, caplog, monkeypatch
):
    shown = _unraisable(monkeypatch)  # no traceback of orbax's abandoned reads reaches it
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
    # None readable (bit flips this time): one clear error naming the folder, no traceback.
    _flip_largest_file(ckpts / "6")
    with pytest.raises(ValueError, match="no readable checkpoint in .*checkpoints"):
        setup(config, tmp_path)
    time.sleep(1)  # tensorstore's last abandoned reads call back
    assert shown == []


def _cli(workdir, prepared, *extra, script=None, wait=True):
    head = [sys.executable, "-c", script, "pretrain"] if script else None
    cmd = head or [sys.executable, "-m", "bertjax.cli", "pretrain"]
    cmd += ["--config", str(TEST_CONFIG), "--workdir", str(workdir), *prepared, *extra]
    if wait:
        return subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True)
    return subprocess.Popen(
        cmd, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _wait_for(process, done, seconds=300):
    deadline = time.time() + seconds
    while time.time() < deadline and process.poll() is None and not done():
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_and_sigkill_runs_resume_exactly(prepared, straight_losses, tmp_path):
    """One run stopped twice: SIGTERM saves the current step and exits 143, its rerun is killed
    (SIGKILL) some steps later, and the second rerun ends with the losses of a straight run."""
    assert sorted(straight_losses) == list(range(1, 25))

    stopped = tmp_path / "stopped"
    logged = lambda: (stopped / "metrics.jsonl").exists() and max(_losses(stopped), default=0)
    process = _cli(stopped, prepared, *STRAIGHT, wait=False)
    _wait_for(process, lambda: logged() >= 10)
    process.send_signal(signal.SIGTERM)
    assert process.wait() == stops.EXIT_PREEMPTED
    last = max(_losses(stopped))
    assert 10 <= last < 24 and _steps(stopped)[-1] == last  # saved at the step it stopped
    process = _cli(stopped, prepared, *STRAIGHT, wait=False)  # killed without a save
    _wait_for(process, lambda: logged() >= last + 3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert max(_losses(stopped)) < 24, "the run finished before it was killed"
    finished = _cli(stopped, prepared, *STRAIGHT)
    assert finished.returncode == 0, finished.stderr
    assert _losses(stopped) == straight_losses


SLEEPY_READER = """
import sys, time
from bertjax.data import source
read, calls = source.PretrainingSource.__getitem__, [0]
def sleepy_getitem(self, index):
    calls[0] += 1
    if calls[0] > 12:
        time.sleep(600)
    return read(self, index)
source.PretrainingSource.__getitem__ = sleepy_getitem
from bertjax.cli import main
sys.argv[0] = "bertjax"
sys.exit(main(sys.argv[1:]))
"""


def test_watchdog_logs_every_stack_and_exits_when_the_reader_hangs(prepared, tmp_path):
    watch = ["--config.train.watchdog_seconds=3", "--config.data.prefetch=1"]
    started = time.time()
    result = _cli(tmp_path, prepared, *watch, script=SLEEPY_READER)
    assert result.returncode == stops.EXIT_STUCK, result.stderr[-3000:]
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


# ------------------------------------------------------------------ issue 27, second round


def _lock(workdir, **owner):
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / lock.LOCK_NAME
    path.write_text(json.dumps({"started": time.time(), **owner}))
    return path


def test_a_second_run_on_a_workdir_in_use_is_refused_naming_the_other(tmp_path, capsys):
    args = ["pretrain", "--config", str(TEST_CONFIG), *CORPUS]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock(tmp_path / "a", host=socket.gethostname(), pid=sleeper.pid)
        started = time.time()
        assert main([*args, "--workdir", str(tmp_path / "a")]) == 2
        assert time.time() - started < 10
        err = capsys.readouterr().err
        assert f"is in use by another bertjax run (pid {sleeper.pid} on " in err
        assert not (tmp_path / "a" / "corpus").exists()  # refused before any data work
    finally:
        sleeper.kill()
        sleeper.wait()
    # A lock on another host (a shared filesystem) holds while its heartbeat is fresh.
    _lock(tmp_path / "b", host="elsewhere", pid=1)
    assert main([*args, "--workdir", str(tmp_path / "b")]) == 2
    assert "(pid 1 on elsewhere, started" in capsys.readouterr().err


def test_stale_locks_are_taken_over_and_released_at_close(tmp_path, caplog, monkeypatch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = _lock(tmp_path / "a", host=socket.gethostname(), pid=dead.pid)
    with caplog.at_level("WARNING", logger="bertjax.training.workdir"):
        lock.claim(tmp_path / "a")
    assert f"taking over the stale lock {path}" in caplog.text
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.claim(tmp_path / "a")  # the same process again: no-op
    lock.release(tmp_path / "a")
    assert not path.exists()
    # Another host's lock whose heartbeat stopped longer ago than STALE_SECONDS.
    path = _lock(tmp_path / "b", host="elsewhere", pid=1)
    old = time.time() - lock.STALE_SECONDS - 5
    os.utime(path, (old, old))
    lock.claim(tmp_path / "b")
    assert json.loads(path.read_text())["host"] == socket.gethostname()
    # The heartbeat keeps the owner's lock fresh.
    monkeypatch.setattr(lock, "HEARTBEAT_SECONDS", 0.05)
    lock.release(tmp_path / "b")
    lock.claim(tmp_path / "b")
    os.utime(path, (old, old))
    time.sleep(0.5)
    assert time.time() - path.stat().st_mtime < 5
    lock.release(tmp_path / "b")


def test_a_config_error_leaves_no_workdir_and_no_lock(tmp_path):
    config = load_config(TEST_CONFIG, [*CORPUS, "--config.train.global_batch_size=0"])
    with pytest.raises(ValueError, match="global_batch_size=0"):
        setup(config, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    with pytest.raises(ValueError, match="global_batch_size=0"):
        setup(config, tmp_path / "old")
    assert (tmp_path / "old").is_dir() and not any((tmp_path / "old").iterdir())
    # The one cleanup of both paths: a created workdir holding only the command's log goes too.
    created = lock.open_workdir(tmp_path / "logged")
    (tmp_path / "logged" / lock.LOG_NAME).write_text("error: ...\n")
    lock.abandon(tmp_path / "logged", created)
    assert not (tmp_path / "logged").exists()


def test_files_are_replaced_whole_and_a_torn_last_line_is_dropped(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "lo')
    with caplog.at_level("WARNING", logger="bertjax.files"):
        assert files.read_jsonl(path) == [{"step": 1, "loss": 2.5}]
    assert f"{path}:2: dropped a torn last line" in caplog.text
    path.write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl:2: not a JSON record"):
        files.read_jsonl(path)
    # A write that fails half-way (here: the disk fills) leaves the old content and no temp file.
    target = tmp_path / "final_metrics.json"
    target.write_text("old")

    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    with mock.patch("os.fdopen", return_value=contextlib.nullcontext(Full())):
        with pytest.raises(files.DiskFull, match=r"writing final_metrics.json to .* rerun the"):
            files.atomic_write_text(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [
        "final_metrics.json",
        "metrics.jsonl",
    ]


class _Sabotage:
    """pretrain's evaluate hook, doing `action()` before the evaluation of step `at`."""

    def __init__(self, at, action):
        self.at, self.action, self.evaluate = at, action, pretrain_module.evaluate

    def __call__(self, job, params=None):
        if int(job.state.step) == self.at:
            self.action(job)
        return self.evaluate(job, params)


def test_a_checkpoint_that_cannot_be_written_stops_at_its_step_in_one_line(
    prepared, tmp_path, monkeypatch, capsys
):
    """Step 2 is saved; before step 4's save the checkpoints folder becomes a file (root
    ignores read-only modes): the run stops at step 4 in one line naming the folder and the
    cause, within seconds, and checkpoint 2 stays. orbax's tracebacks of the failed writes go
    to log.txt, not to the terminal (a plain stderr handler, as the command line has)."""
    shown = _unraisable(monkeypatch)
    terminal = logging.StreamHandler(sys.stderr)
    monkeypatch.setattr(logging.getLogger(), "handlers", [terminal])
    ckpts = tmp_path / "checkpoints"

    def block(job):
        checkpoints.wait_for_saves(job.manager)  # checkpoint 2 is complete
        ckpts.rename(tmp_path / "moved")
        ckpts.write_text("")
        block.at = time.time()

    steps = ["--config.train.num_steps=4", "--config.train.eval_every=2"]
    steps += ["--config.checkpoint.every_steps=2", "--config.train.log_every=2"]
    args = ["pretrain", "--config", str(TEST_CONFIG), "--workdir", str(tmp_path), *prepared]
    monkeypatch.setattr(pretrain_module, "evaluate", _Sabotage(4, block))
    monkeypatch.setattr(checkpoints, "_probe", lambda *_: None)  # orbax's threads meet it
    async_save = "--config.checkpoint.async_save=True"  # orbax's writer threads log the errors
    before = set(threading.enumerate())
    assert main([*args, *QUIET, *steps, async_save]) == checkpoints.EXIT_SAVE_FAILED
    assert time.time() - block.at < 30
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "bertjax pretrain: " in line]
    assert len(lines) == 1 and "Traceback" not in err and not shown
    assert f"cannot save the checkpoint of step 4 in {ckpts} (NotADirectoryError" in lines[0]
    assert sorted(p.name for p in (tmp_path / "moved").iterdir()) == ["2"]
    assert "Traceback" in (tmp_path / "log.txt").read_text()
    # The failed run was closed: no orbax writer thread waits out its 300 s signal timeout
    # (which held the interpreter's exit for five minutes), the lock is released and the
    # TensorBoard events of both logged steps are on disk.
    left = [t for t in set(threading.enumerate()) - before if not t.daemon]
    for thread in left:
        threading.Thread.join(thread, timeout=10)  # orbax's join re-raises the thread's error
    assert not [t.name for t in left if t.is_alive()]
    assert not (tmp_path / lock.LOCK_NAME).exists()
    events = _tensorboard_scalars(tmp_path / "tensorboard")
    assert sorted(step for step, tag in events if tag == "loss") == [2, 4]
    assert events[(4, "loss")] == pytest.approx(_losses(tmp_path)[4], rel=1e-6)


def _tensorboard_scalars(folder) -> dict:
    """{(step, tag): value} of the TFRecord event files in `folder` (length, CRC, event, CRC)."""
    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in folder.glob("events.out.tfevents.*"):
        raw, at = path.read_bytes(), 0
        while at < len(raw):
            (size,) = struct.unpack("<Q", raw[at : at + 8])
            event = event_pb2.Event.FromString(raw[at + 12 : at + 12 + size])
            scalars.update({(event.step, v.tag): v.simple_value for v in event.summary.value})
            at += 12 + size + 4
    return scalars


def test_a_full_disk_under_tensorboard_is_one_line_naming_the_folder(tmp_path):
    """The event file on a full device (tensorboardX's file opener pointed at /dev/full, which
    fails every flush with ENOSPC): the write that meets it says so naming the folder, close
    says it once more, and nothing is left to flush at exit (no writer thread, no exit hook)."""
    writer = MetricWriter(tmp_path / "ok")
    writer.write(1, {"loss": np.float32(2.5), "name": "x"})
    writer.close()
    writer.close()  # a second close does nothing
    assert _tensorboard_scalars(tmp_path / "ok" / "tensorboard") == {(1, "loss"): 2.5}
    threads = set(threading.enumerate())
    device_full = lambda _: open("/dev/full", "wb")  # noqa: E731, SIM115
    with mock.patch("tensorboardX.record_writer.open_file", device_full):
        writer = MetricWriter(tmp_path / "full")
    with pytest.raises(files.DiskFull) as full:
        writer.write(1, {"loss": 2.5})
    folder = tmp_path / "full" / "tensorboard"
    assert str(full.value).startswith(f"the disk is full: writing TensorBoard events to {folder}")
    assert "rerun the same command: it resumes" in str(full.value)
    with pytest.raises(files.DiskFull):
        writer.close()
    writer.close()
    assert set(threading.enumerate()) == threads
    assert files.as_disk_full(PermissionError(13, "denied")) is None  # no loop on non-full errors


def test_a_full_disk_in_a_checkpoint_save_is_one_line_keeping_the_good_ones(tmp_path):
    config = load_config(TEST_CONFIG, ["--config.checkpoint.async_save=False"])
    manager = checkpoints.checkpoint_manager(tmp_path, config.checkpoint)
    state = {"w": np.arange(4.0)}
    checkpoints.save_train_state(manager, 2, state, 8)
    save = checkpoints.ocp.CheckpointManager.save

    def full(self, step, *args, **kwargs):  # tensorstore's error, wrapped by orbax
        raise ValueError("Error writing local file: [errno 28] No space left on device")

    with mock.patch.object(checkpoints.ocp.CheckpointManager, "save", full):
        with pytest.raises(checkpoints.SaveFailed) as failed:
            checkpoints.save_train_state(manager, 4, state, 8)
    assert failed.value.exit_code == files.EXIT_DISK_FULL
    message = str(failed.value)
    assert message.startswith("the checkpoint of step 4: the disk is full (Error writing")
    assert "rerun the same command: it resumes" in message
    assert f"the checkpoints of steps [2] are kept in {tmp_path})" in message
    assert save is checkpoints.ocp.CheckpointManager.save and manager.all_steps() == [2]
    manager.close()
    # The workdir's log on the full disk (a record of orbax's writer thread): kept, no exception.
    log = run_log.WorkdirLog(tmp_path)
    full = OSError(errno.ENOSPC, "No space left on device")
    with mock.patch.object(pathlib.Path, "open", side_effect=full):
        log.emit(logging.makeLogRecord({"msg": "first", "levelname": "ERROR"}))
    log.emit(logging.makeLogRecord({"msg": "second", "levelname": "INFO"}))
    lines = (tmp_path / run_log.LOG_NAME).read_text().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == ["first", "second"]


def test_the_divergence_message_says_when_no_checkpoint_exists():
    guard = stops.BadStepGuard(2, lambda: None)
    guard.add(1, np.bool_(True))
    guard.add(2, np.bool_(True))
    with pytest.raises(
        stops.Diverged,
        match=r"no checkpoint was saved before \(the rerun starts from the beginning\)",
    ):
        guard.check()


def test_atomic_writes_keep_the_usual_file_mode(tmp_path):
    files.atomic_write_text(tmp_path / "config.json", "{}")
    (tmp_path / "plain").write_text("{}")
    assert (tmp_path / "config.json").stat().st_mode == (tmp_path / "plain").stat().st_mode


def _data_dir(prepared):
    return pathlib.Path(
        next(a for a in prepared if a.startswith("--config.data.dir=")).split("=")[1]
    )


def test_damaged_shards_are_named_when_a_run_opens_them(prepared, tmp_path):
    from bertjax.data.shard_check import check_shards
    from bertjax.data.source import PretrainingSource

    size = int(next(a for a in prepared if "vocab_size" in a).split("=")[1])
    copy = tmp_path / "data"
    shutil.copytree(_data_dir(prepared), copy)
    check_shards(PretrainingSource(copy, "train"), size)  # intact: passes
    shard = copy / "train" / "input_ids-00000.npy"
    ids = np.load(shard)
    ids[3, 5] = size + 7
    np.save(shard, ids)
    with pytest.raises(
        ValueError, match=rf"input_ids-00000\.npy: token id {size + 7} is not below"
    ):
        check_shards(PretrainingSource(copy, "train"), size)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"input_ids-00000\.npy: shard unreadable .*mmap length"):
        check_shards(PretrainingSource(copy, "train"), size)
    np.save(shard, ids[:-1] % size)
    with pytest.raises(ValueError, match=r"input_ids-00000\.npy: \d+ rows, but .*metadata\.json"):
        check_shards(PretrainingSource(copy, "train"), size)


def test_an_interrupted_preparation_in_the_workdir_is_redone(prepared, tmp_path, caplog):
    from bertjax.training.pretrain import prepare_data

    vocab = next(a for a in prepared if a.startswith("--config.data.vocab="))
    lines = [f"Cat {i} sat on the mat. Dog {i} ran.\nIt was late.\n\n" for i in range(40)]
    (tmp_path / "corpus.txt").write_text("".join(lines))
    config = load_config(
        TEST_CONFIG,
        [*prepared[:4], vocab, f"--config.data.corpus={tmp_path / 'corpus.txt'}"],
    )
    partial = tmp_path / "w" / "data" / "train"
    partial.mkdir(parents=True)
    (partial / "input_ids-00000.npy").write_bytes(b"\x93NUMPY torn")
    with caplog.at_level("WARNING", logger="bertjax.training.pretrain"):
        data_dir, _ = prepare_data(config, tmp_path / "w")
    assert "holds an interrupted preparation (no metadata.json" in caplog.text
    assert (data_dir / "metadata.json").is_file()
    assert np.load(data_dir / "train" / "input_ids-00000.npy").shape[0] > 0


def test_an_empty_corpus_is_named_as_such(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    config = load_config(TEST_CONFIG, [f"--config.data.corpus={tmp_path / 'empty.txt'}"])
    with pytest.raises(
        ValueError, match=r"no training instances: the corpus .*empty\.txt' is empty"
    ):
        setup(config, tmp_path / "w")
