"""One run per workdir: a lock file that a killed process does not leave stuck.

`claim(workdir)` creates `WORKDIR/.bertjax.lock` exclusively (O_CREAT | O_EXCL, atomic also on
NFS v3+) holding the owner's host, pid and start time, and a daemon thread touches it every
`HEARTBEAT_SECONDS`. A second run on the workdir is refused at once with a ValueError naming the
owner, unless the lock is stale: on the same host when the owner's pid is gone, on another host
(a shared filesystem) when the heartbeat is older than `STALE_SECONDS`. A stale lock is taken
over with a warning. The lock is released by `release(workdir)` (the trainer's close) and at exit.

Several processes of one job (`bertjax launch`) share the workdir: only process 0 claims it.

A workdir in a bucket (`gs://`, `s3://`; staged by `bertjax.storage.Mirror`) has no flock or
O_EXCL: `claim_bucket` creates the lock object `WORKDIR/.bertjax.lock` with a conditional write
(S3 `If-None-Match: *`, GCS `ifGenerationMatch=0`: the bucket refuses a second create), holding
the owner's host, pid, start and heartbeat times, rewritten every `HEARTBEAT_SECONDS`. A lock
whose heartbeat is older than `STALE_SECONDS` (by this host's clock: hosts' clocks must agree
within minutes), or whose owner on this host is gone, is taken over with a warning. Limits: the
take-over (delete, then create) of a stale lock is not atomic, so two runs started within the same
second on a stale lock can both proceed; S3-compatible stores without conditional writes accept
a second create (fsspec's `mode="create"`); both are named in docs/distributed.md.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import pathlib
import shutil
import socket
import threading
import time
from collections.abc import Iterator

from bertjax import storage

log = logging.getLogger(__name__)

LOCK_NAME = storage.LOCK_NAME  # ".bertjax.lock"
LOG_NAME = "log.txt"  # the run's text log (`training.run_log`), appended from the first record
HEARTBEAT_SECONDS = 30.0  # how often the owner touches the lock file
STALE_SECONDS = 300.0  # another host's lock whose heartbeat is older than this is stale

_held: dict[pathlib.Path, threading.Event] = {}  # lock file -> its heartbeat's stop event
_held_buckets: dict[str, threading.Event] = {}  # bucket workdir URL -> its heartbeat's stop event


def _owner(path: pathlib.Path) -> dict | None:
    """The lock's owner record, {} when unreadable (being written), None when it is gone."""
    try:
        text = path.read_text(encoding="utf-8")
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        return {**json.loads(text), "age": age}
    except ValueError:
        return {"age": age}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _stale(owner: dict) -> bool:
    if owner.get("host") == socket.gethostname() and "pid" in owner:
        return not _alive(int(owner["pid"]))
    return owner["age"] > STALE_SECONDS


def _describe(owner: dict) -> str:
    started = owner.get("started")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started {since}"


def claim(workdir: str | os.PathLike) -> None:
    """Takes the workdir's lock for this process (again: a no-op).

    Raises:
      ValueError: another live run holds it (naming its host, pid and start time).
    """
    path = pathlib.Path(workdir).absolute() / LOCK_NAME
    if path in _held:
        return
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(path)
            if owner is None:
                continue  # released meanwhile
            if not _stale(owner):
                raise ValueError(
                    f"{path.parent} is in use by another bertjax run ({_describe(owner)}; lock "
                    f"{path}): wait for it to finish, stop it, or use another --workdir"
                ) from None
            log.warning("taking over the stale lock %s of %s", path, _describe(owner))
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f)
        _held[path] = stop = threading.Event()
        threading.Thread(target=_heartbeat, args=(path, stop), daemon=True).start()
        return
    raise ValueError(f"could not take the lock {path}: other runs keep taking it")


def _heartbeat(path: pathlib.Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            os.utime(path)
        except OSError:
            return


def claim_bucket(fs, url: str, root: str) -> None:
    """Takes the lock object of the bucket workdir `url` (`root`: its path for `fs`)."""
    lock = f"{root.rstrip('/')}/{LOCK_NAME}"
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    for _ in range(3):
        try:
            storage.retrying(
                f"{url}/{LOCK_NAME}",
                "locking",
                lambda: fs.pipe_file(lock, _bucket_record(record), mode="create"),
            )
        except FileExistsError:
            try:
                owner = json.loads(fs.cat_file(lock))
            except FileNotFoundError:
                continue  # released meanwhile
            owner["age"] = time.time() - float(owner.get("heartbeat", 0))
            if not _stale(owner):
                raise ValueError(
                    f"{url} is in use by another bertjax run ({_describe(owner)}; lock object "
                    f"{url}/{LOCK_NAME}): wait for it to finish, stop it, or use another --workdir"
                ) from None
            log.warning("taking over the stale lock %s/%s of %s", url, LOCK_NAME, _describe(owner))
            fs.rm_file(lock)
            continue
        _held_buckets[url] = stop = threading.Event()
        beat = threading.Thread(target=_beat_bucket, args=(fs, lock, record, stop), daemon=True)
        beat.start()
        return
    raise ValueError(f"could not take the lock {url}/{LOCK_NAME}: other runs keep taking it")


def _bucket_record(record: dict) -> bytes:
    return json.dumps({**record, "heartbeat": time.time()}).encode()


def _beat_bucket(fs, lock: str, record: dict, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            fs.pipe_file(lock, _bucket_record(record))
        except Exception as err:  # noqa: BLE001 - the run goes on; the next beat may work
            log.warning("could not renew the lock %s (%s)", lock, type(err).__name__)


def release_bucket(fs, url: str, root: str) -> None:
    """Deletes the lock object of `url` when this process holds it."""
    stop = _held_buckets.pop(url, None)
    if stop is not None:
        stop.set()
        try:
            fs.rm_file(f"{root.rstrip('/')}/{LOCK_NAME}")
        except FileNotFoundError:
            pass


def open_workdir(workdir: str | os.PathLike, process_index: int = 0) -> bool:
    """Creates `workdir` if needed and claims it (process 0); returns whether it was created.

    Raises:
      ValueError: another live run holds it.
    """
    path = pathlib.Path(workdir)
    # a bucket workdir's staging folder exists (pulled) but is empty when the bucket held nothing
    created = not path.exists() or (
        storage.staged_url(path) is not None and not any(path.iterdir())
    )
    path.mkdir(parents=True, exist_ok=True)
    if process_index == 0:
        try:
            claim(path)
        except ValueError:
            if created:
                path.rmdir()
            raise
    return created


@contextlib.contextmanager
def staged(
    workdir: str | os.PathLike, process_index: int = 0, process_count: int = 1
) -> Iterator[pathlib.Path]:
    """The folder a job works in: `workdir`, or for a `gs://`/`s3://` URL its staging folder
    (`storage.Mirror`). Process 0 holds the bucket's lock, pulls before the job and pushes every
    `storage.SYNC_SECONDS` during it and after it, also when it fails (nothing saved is lost);
    the other processes of a job only pull (into their own staging folders: they read the
    workdir, process 0 writes it). Their checkpoints go to the bucket through orbax, which
    writes `gs://` itself; an `s3://` workdir (staged checkpoints) allows one process.

    Raises:
      ValueError: an `s3://` workdir for a job of several processes.
    """
    if not storage.is_remote(workdir):
        yield pathlib.Path(workdir)
        return
    url = str(workdir)
    if process_count > 1 and not url.startswith(storage.NATIVE):
        raise ValueError(
            f"--workdir {url}: orbax writes no s3:// checkpoints, so an s3:// workdir is staged "
            f"on one host, but this job has {process_count} processes; give a workdir on a "
            "filesystem every host mounts (data and models may stay in the bucket)"
        )
    primary = process_index == 0
    mirror = storage.Mirror(url, None if primary else f"process{process_index}")
    if primary:
        claim_bucket(mirror.fs, mirror.url, mirror.root)
    try:
        mirror.pull()
        storage.register(mirror)
        if primary:
            mirror.start()
        failed = True
        try:
            yield mirror.local
            failed = False
        finally:
            try:
                if primary:
                    mirror.close()
            except Exception as err:  # noqa: BLE001 - the job's own error is the one to show
                if not failed:
                    raise
                log.error("%s", err)
    finally:
        storage.unregister(mirror)
        if primary:
            release_bucket(mirror.fs, mirror.url, mirror.root)


def abandon(workdir: str | os.PathLike, created: bool) -> None:
    """After a failed setup: releases the lock and removes `workdir` when this run created it
    and left nothing in it but the run's log (a config error or a corpus glob that matches
    nothing leaves no folder behind; the CLI reports the error). The one cleanup of both the
    command line (`run_log.run_job`) and the Python API (`trainer.start`)."""
    release(workdir)
    path = pathlib.Path(workdir)
    if created and path.is_dir() and {p.name for p in path.iterdir()} <= {LOG_NAME}:
        shutil.rmtree(path)


def release(workdir: str | os.PathLike) -> None:
    """Releases this process's lock of `workdir` (nothing when it holds none)."""
    path = pathlib.Path(workdir).absolute() / LOCK_NAME
    stop = _held.pop(path, None)
    if stop is not None:
        stop.set()
        path.unlink(missing_ok=True)


@atexit.register
def _release_all() -> None:
    for path in list(_held):
        release(path.parent)
