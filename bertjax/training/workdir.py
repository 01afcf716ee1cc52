"""One run per workdir: a lock file that a killed process does not leave stuck.

`claim(workdir)` creates `WORKDIR/.bertjax.lock` exclusively (O_CREAT | O_EXCL, atomic also on
NFS v3+) holding the owner's host, pid and start time, and a daemon thread touches it every
`HEARTBEAT_SECONDS`. A second run on the workdir is refused at once with a ValueError naming the
owner, unless the lock is stale: on the same host when the owner's pid is gone, on another host
(a shared filesystem) when the heartbeat is older than `STALE_SECONDS`. A stale lock is taken
over with a warning. The lock is released by `release(workdir)` (the trainer's close) and at exit.

Several processes of one job (`bertjax launch`) share the workdir: only process 0 claims it.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import pathlib
import shutil
import socket
import threading
import time

log = logging.getLogger(__name__)

LOCK_NAME = ".bertjax.lock"
LOG_NAME = "log.txt"  # the run's text log (`training.run_log`), appended from the first record
HEARTBEAT_SECONDS = 30.0  # how often the owner touches the lock file
STALE_SECONDS = 300.0  # another host's lock whose heartbeat is older than this is stale

_held: dict[pathlib.Path, threading.Event] = {}  # lock file -> its heartbeat's stop event


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


def open_workdir(workdir: str | os.PathLike, process_index: int = 0) -> bool:
    """Creates `workdir` if needed and claims it (process 0); returns whether it was created.

    Raises:
      ValueError: another live run holds it.
    """
    path = pathlib.Path(workdir)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    if process_index == 0:
        try:
            claim(path)
        except ValueError:
            if created:
                path.rmdir()
            raise
    return created


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
