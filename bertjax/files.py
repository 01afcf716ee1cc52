"""Crash-safe small files: a crash (SIGKILL, power loss, a full disk) leaves the old or the new
version of a rewritten file, never a partial one, and at most a torn last line of an appended
JSON-lines file, which readers drop with a warning naming the file.

A full disk (ENOSPC, EDQUOT) becomes `DiskFull`, a one-line error saying what filled and where
and that rerunning the same command after freeing space resumes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pathlib
import tempfile

log = logging.getLogger(__name__)

_UMASK = os.umask(0o022)
os.umask(_UMASK)

FULL = (errno.ENOSPC, errno.EDQUOT)
EXIT_DISK_FULL = 5  # the command's exit status when the disk filled (rerun after freeing space)


class DiskFull(OSError):
    """No space left where a job writes; its message is the one line the CLI prints."""

    def __str__(self) -> str:
        return self.args[0]


def disk_full(err: OSError, what: str, where: str | os.PathLike) -> OSError:
    """`err` as `DiskFull` naming `what` was being written to `where` when it is ENOSPC/EDQUOT;
    other errors unchanged."""
    if getattr(err, "errno", None) not in FULL:
        return err
    return DiskFull(
        f"the disk is full: writing {what} to {where} failed ({os.strerror(err.errno)}); free "
        "space there and rerun the same command: it resumes from the last complete checkpoint "
        "(an unfinished data preparation is redone)"
    )


@contextlib.contextmanager
def named_errors(what: str, where: str | os.PathLike):
    """Turns a full disk met in the block into `DiskFull` naming `what` and `where`."""
    try:
        yield
    except OSError as err:
        full = disk_full(err, what, where)
        if full is err:
            raise
        raise full from err


def as_disk_full(err: BaseException) -> DiskFull | None:
    """`err` (or what it was raised from) as `DiskFull`, or None when it is no full disk."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, DiskFull):
            return err
        if isinstance(err, OSError) and err.errno in FULL:
            name = pathlib.Path(err.filename) if err.filename else None
            what, where = (name.name, name.parent) if name else ("a file", "the output folder")
            return disk_full(err, what, where)
        if "No space left on device" in str(err):  # tensorstore and orbax wrap the OSError
            return DiskFull(
                f"the disk is full ({str(err).splitlines()[0][:200]}); free space there and "
                "rerun the same command: it resumes from the last complete checkpoint (an unfinished "
                "data preparation is redone)"
            )
        err = err.__cause__ or err.__context__
    return None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` (UTF-8) to `path` through a temporary file in the same folder, fsynced and
    renamed over `path`: readers see the old or the new content, never a mix."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would make the file private
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise disk_full(err, path.name, path.parent) from err
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def append_line(path: str | os.PathLike, line: str) -> None:
    """Appends `line` and a newline in one write, flushed to disk (a crash tears at most it)."""
    path = pathlib.Path(path)
    try:
        with path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise disk_full(err, path.name, path.parent) from err


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file; a torn last line (a crash mid-append) is dropped with a
    warning, a bad line elsewhere is a ValueError naming the file and line."""
    path = pathlib.Path(path)
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if all(not rest.strip() for rest in lines[number:]):
                log.warning("%s:%d: dropped a torn last line (%s)", path, number, err)
                continue
            raise ValueError(f"{path}:{number}: not a JSON record ({err})") from None
    return records
