"""Inputs in buckets: `gs://` and `s3://` files and folders, read through a per-host cache.

`bertjax.config.resolve_path` sends every `gs://` or `s3://` path it is given here (today:
`init_from`, vocabularies, `data.extra_vocab`, fine-tuning data files, gazetteers), so a model,
a vocabulary or a data file can sit in a bucket. The clients are fsspec's (`gcsfs`, `s3fs`: the
`cloud` extra) with their usual credentials (`gcloud auth application-default login`, the
metadata server on a TPU VM; `AWS_*` variables or `~/.aws`; an S3-compatible endpoint through
`FSSPEC_S3_ENDPOINT_URL`); bertjax never prints or stores a credential.

Each host keeps one copy per URL under `$BERTJAX_CACHE` (default `~/.cache/bertjax/remote`):
a file is fetched only when its fingerprint (size and ETag/MD5 as listed by the bucket) differs
from the one recorded in the copy's manifest, is written to a temporary name, checked (size, and
MD5 where the bucket lists one) and renamed, so many hosts read a shared model or data folder
once each, never a half-written file. Listing and fetching retry `ATTEMPTS` times; then one line
names the URL.

Outputs in buckets (a training `--workdir`, `predict --out`, `export-hf OUT`, ...) go through
`Mirror`: the job writes a local staging folder exactly as it writes a local workdir (one code
path: appends, atomic renames, orbax's checkpoints, TensorBoard), and the mirror makes the bucket
match it (see `Mirror`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import pathlib
import shutil
import threading
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

SCHEMES = ("gs://", "s3://")
ATTEMPTS = 3  # tries per listing, download or upload before giving up (sleeping 1 s, then 2 s)
MANIFEST = ".bertjax-remote.json"
SYNC_SECONDS = (
    30.0  # a staged workdir is uploaded this often (and at the end); $BERTJAX_SYNC_SECONDS
)
COMPLETE = "_CHECKPOINT_METADATA"  # orbax's file in every finished checkpoint: uploaded last
LOCK_NAME = ".bertjax.lock"  # the workdir lock (`training.workdir`): a local file, a remote object


def is_remote(path: str | os.PathLike) -> bool:
    """True for a `gs://` or `s3://` URL."""
    return str(path).startswith(SCHEMES)


def cache_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("BERTJAX_CACHE") or "~/.cache/bertjax").expanduser() / (
        "remote"
    )


def _filesystem(url: str):
    try:
        import fsspec
    except ImportError as err:
        raise ValueError(
            f"{url}: reading buckets needs fsspec with gcsfs or s3fs: pip install 'bertjax[cloud]'"
        ) from err
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as err:
        raise ValueError(f"{url}: {err}; pip install 'bertjax[cloud]'") from err


EXIT_UNREACHABLE = 7  # a command's exit status when a bucket could not be read or written


class BucketError(OSError):
    """A bucket that could not be reached after `ATTEMPTS` tries; its message is one line naming
    the URL (the CLI prints it and exits with `EXIT_UNREACHABLE`)."""

    def __str__(self) -> str:
        return self.args[0]


def retrying(url: str, what: str, call):
    """`call()` with `ATTEMPTS` tries; a missing object fails at once, naming `url`."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{url}: no such object in the bucket") from err
        except (FileExistsError, ValueError):  # a conditional write refused; a user error
            raise
        except PermissionError as err:
            raise PermissionError(f"{url}: {what} refused: {_first_line(err)}") from err
        except Exception as err:  # noqa: BLE001 - OSError, botocore's and google's errors alike
            if attempt == ATTEMPTS:
                raise BucketError(
                    f"{url}: {what} failed {ATTEMPTS} times: {_first_line(err)}"
                ) from err
            log.warning("%s: %s failed (%s); retrying", url, what, type(err).__name__)
            time.sleep(attempt)


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:300]


def _fingerprint(info: dict) -> str:
    tag = info.get("ETag") or info.get("md5Hash") or info.get("crc32c") or info.get("etag") or ""
    return f"{info.get('size')}:{str(tag).strip(chr(34))}"


def _expected_md5(info: dict) -> str | None:
    """The object's MD5 (hex) where the listing gives one: GCS md5Hash, or a plain S3 ETag."""
    if info.get("md5Hash"):
        return base64.b64decode(info["md5Hash"]).hex()
    etag = str(info.get("ETag", "")).strip('"')
    return etag if len(etag) == 32 and "-" not in etag else None


def _fetch(fs, remote: str, local: pathlib.Path, info: dict, url: str) -> None:
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(local.name + f".part{os.getpid()}")
    retrying(url, "download", lambda: fs.get_file(remote, str(tmp)))
    data = tmp.read_bytes()
    md5 = _expected_md5(info)
    if len(data) != info.get("size", len(data)) or (md5 and hashlib.md5(data).hexdigest() != md5):
        tmp.unlink()
        raise OSError(f"{url}: the downloaded copy does not match the bucket's size or checksum")
    tmp.replace(local)


def local_copy(url: str, skip: tuple[str, ...] = ()) -> pathlib.Path:
    """A local, up-to-date copy of the file or folder at `url` (this host's cache), without the
    subfolders named in `skip`.

    Raises:
      FileNotFoundError: no object or folder at `url` (one line naming it).
      OSError: the bucket could not be read after `ATTEMPTS` tries (one line naming `url`).
    """
    fs, root = _filesystem(url)
    info = retrying(url, "listing", lambda: fs.info(root))
    if info["type"] == "directory":
        found = retrying(url, "listing", lambda: fs.find(root, detail=True))
        files = {name[len(root) :].lstrip("/"): meta for name, meta in found.items()}
        files = {k: v for k, v in files.items() if k.split("/", 1)[0] not in skip}
    else:
        files = {"": info}
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    base = cache_root() / digest / pathlib.PurePosixPath(root.rstrip("/")).name
    manifest_path = base.parent / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    fetched = 0
    for relative, meta in sorted(files.items()):
        local = base / relative if relative else base
        if manifest.get(relative) == _fingerprint(meta) and local.exists():
            continue
        _fetch(fs, meta["name"], local, meta, f"{url.rstrip('/')}/{relative}".rstrip("/"))
        manifest[relative] = _fingerprint(meta)
        fetched += 1
    for relative in set(manifest) - set(files):  # deleted from the bucket since
        (base / relative if relative else base).unlink(missing_ok=True)
        del manifest[relative]
        fetched += 1
    if fetched:
        tmp = manifest_path.with_name(MANIFEST + f".part{os.getpid()}")
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.replace(manifest_path)
        log.info("%s: fetched %d of %d files into %s", url, fetched, len(files), base)
    return base


def local_files(url: str) -> list[pathlib.Path]:
    """This host's copies of the files a URL names: a file, a folder, or a glob pattern
    (`gs://b/corpus/*.txt`), each through `local_copy`.

    Raises:
      FileNotFoundError: the pattern matches no object (one line naming it).
    """
    if not any(char in url for char in "*?["):
        return [local_copy(url)]
    fs, pattern = _filesystem(url)
    scheme = url.split("://", 1)[0] + "://"
    matches = retrying(url, "listing", lambda: sorted(fs.glob(pattern)))
    if not matches:
        raise FileNotFoundError(f"{url}: no object in the bucket matches")
    return [local_copy(scheme + match) for match in matches]


MODEL_SKIP = ("checkpoints", "data", "corpus", "tensorboard")  # workdir folders no model reads


def input_path(path: str | os.PathLike) -> pathlib.Path:
    """A command's input (a model directory or workdir, a text file): `path`, or for a URL this
    host's cached copy without a workdir's checkpoints, data and TensorBoard events."""
    return local_copy(str(path), MODEL_SKIP) if is_remote(path) else pathlib.Path(path)


@contextlib.contextmanager
def output(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Where a command writes its output `path` (a file or a folder): `path`, or for a URL a
    fresh staging path, uploaded (with `ATTEMPTS` tries per file) when the block ends without
    an error; an output in the bucket is replaced object by object, never deleted first."""
    if not is_remote(path):
        yield pathlib.Path(path)
        return
    mirror = Mirror(str(path))
    if mirror.local.is_dir():
        shutil.rmtree(mirror.local)
    mirror.local.unlink(missing_ok=True)
    mirror.manifest_path.unlink(missing_ok=True)
    mirror.local.parent.mkdir(parents=True, exist_ok=True)
    yield mirror.local
    if mirror.local.is_dir():
        mirror.push()
    else:
        put = lambda: mirror.fs.put_file(str(mirror.local), mirror.root)  # noqa: E731
        retrying(mirror.url, "upload", put)


_staged: dict[pathlib.Path, Mirror] = {}  # staging folder -> its mirror, while a job runs


def register(mirror: Mirror) -> None:
    _staged[mirror.local] = mirror


def unregister(mirror: Mirror) -> None:
    _staged.pop(mirror.local, None)


def staged_url(path: str | os.PathLike) -> str | None:
    """The bucket URL of a staging folder in use (or of a path inside one), else None."""
    path = pathlib.Path(path).absolute()
    for local, mirror in _staged.items():
        if path == local or local in path.parents:
            return mirror.url + path.as_posix()[len(local.as_posix()) :]
    return None


NATIVE = ("gs://",)  # schemes whose workdir checkpoints orbax writes itself (not staged)


def checkpoint_directory(path: str | os.PathLike):
    """The folder orbax writes checkpoints to: `path` (absolute), or, inside a staged workdir of
    a bucket orbax writes natively (`gs://`), its URL as an `etils.epath.Path`."""
    url = staged_url(path)
    if url is not None and url.startswith(NATIVE):
        from etils import epath

        return epath.Path(url)
    return pathlib.Path(path).absolute()


def staging_dir(url: str) -> pathlib.Path:
    """This host's staging folder of the bucket folder `url` (a workdir or an output)."""
    url = url.rstrip("/")
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return (cache_root().parent / "staged" / digest / pathlib.PurePosixPath(url).name).absolute()


def local_path(path: str | os.PathLike) -> pathlib.Path:
    """Where a job reads and writes `path`: its staging folder for a URL, else `path`."""
    return staging_dir(str(path)) if is_remote(path) else pathlib.Path(path)


def _skipped(relative: str) -> bool:
    """Files never mirrored: the lock, half-written temporaries (atomic writes, orbax's folders
    of a checkpoint in progress, downloads), the save probe."""
    name = relative.rsplit("/", 1)[-1]
    return (
        name == LOCK_NAME
        or ".orbax-checkpoint-tmp" in relative
        or (name.startswith(".") and name.endswith(".tmp"))
        or ".part" in name
        or name.startswith(".bertjax-probe-")
    )


def _checkpoint_step(relative: str) -> str | None:
    """`checkpoints/<step>` of a file inside a checkpoint, else None."""
    parts = relative.split("/")
    if len(parts) > 2 and parts[0] == "checkpoints" and parts[1].isdigit():
        return "/".join(parts[:2])
    return None


def _stat(path: pathlib.Path) -> list[int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]


class Mirror:
    """A bucket folder (`url`) worked on in this host's staging folder (`local`).

    `pull()` makes the staging folder equal to the bucket (fetching what differs, removing what
    the bucket lacks, skipping checkpoints whose upload was cut off), unless the bucket is
    exactly as this host's last push left it: then this host's newer files (a killed run's, or
    those of a failed push) are pushed instead, so nothing saved is lost; `push()` uploads what changed
    since the last push and deletes from the bucket what was deleted here (orbax's keep-last).
    Appends stay local-file appends (object stores have none): each push rewrites the grown
    objects whole (`metrics.jsonl`, `log.txt`, TensorBoard events), which costs one PUT per
    changed file, never a PUT per record. A push sends the small files first and the checkpoint
    folders after them, each with orbax's `_CHECKPOINT_METADATA` last, so the bucket never holds a
    checkpoint newer than the metrics before it, and a checkpoint cut off mid-upload is ignored.
    A background thread pushes every `SYNC_SECONDS` (`start()`), and `close()` pushes the rest.
    In a `gs://` workdir `checkpoints/` is neither pushed nor pulled: orbax writes it straight to
    the bucket (`checkpoint_directory`). `suffix` names the staging folder of a second process of
    a job on one host (it only pulls).
    """

    def __init__(self, url: str, suffix: str | None = None):
        self.url = url.rstrip("/")
        self.fs, root = _filesystem(self.url)
        self.root = root.rstrip("/")
        self.local = staging_dir(self.url)
        if suffix:  # a second process on one host: a folder of its own
            self.local = self.local.with_name(f"{self.local.name}.{suffix}")
        self.native = self.url.startswith(NATIVE)  # orbax writes checkpoints/ itself
        self.manifest_path = self.local.parent / f".bertjax-sync-{self.local.name}.json"
        self.entries: dict[str, dict] = {}
        self.mutex = threading.Lock()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _skipped(self, relative: str) -> bool:
        return _skipped(relative) or (self.native and relative.startswith("checkpoints/"))

    def _url(self, relative: str) -> str:
        return f"{self.url}/{relative}" if relative else self.url

    def _remote(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def pull(self) -> int:
        """Makes the staging folder hold what the bucket holds; returns the files fetched."""
        self.local.mkdir(parents=True, exist_ok=True)
        if self.manifest_path.exists():
            self.entries = json.loads(self.manifest_path.read_text())
        self.fs.invalidate_cache()
        found = retrying(self.url, "listing", lambda: self.fs.find(self.root, detail=True))
        remote = {name[len(self.root) :].lstrip("/"): info for name, info in found.items()}
        remote = {rel: info for rel, info in remote.items() if rel and not self._skipped(rel)}
        left = {rel: entry["remote"] for rel, entry in self.entries.items()}
        if left and left == {rel: _fingerprint(info) for rel, info in remote.items()}:
            # the bucket is as this host's last push left it: what this host saved since (a run
            # killed, or a push that failed) is newer, and is uploaded instead of dropped
            log.info("%s: uploading what %s saved since its last upload", self.url, self.local)
            self.push()
            return 0
        complete = {_checkpoint_step(rel) for rel in remote if rel.endswith("/" + COMPLETE)}
        cut_off = {_checkpoint_step(rel) for rel in remote} - complete - {None}
        for step in sorted(cut_off):
            log.warning("%s: an upload cut off before it ended; ignored", self._url(step))
        remote = {rel: i for rel, i in remote.items() if _checkpoint_step(rel) not in cut_off}
        fetched = 0
        for rel, info in sorted(remote.items()):
            path, entry = self.local / rel, self.entries.get(rel, {})
            if entry.get("remote") == _fingerprint(info) and entry.get("local") == _stat(path):
                continue
            _fetch(self.fs, info["name"], path, info, self._url(rel))
            self.entries[rel] = {"remote": _fingerprint(info), "local": _stat(path)}
            fetched += 1
        for path in sorted(self.local.rglob("*"), reverse=True):  # what the bucket lacks
            rel = path.relative_to(self.local).as_posix()
            if path.is_dir():
                if not any(path.iterdir()):
                    path.rmdir()
            elif rel not in remote and rel != LOCK_NAME:
                path.unlink()
                self.entries.pop(rel, None)
        self._save_manifest()
        log.info("%s: %d files fetched into %s", self.url, fetched, self.local)
        return fetched

    def push(self) -> int:
        """Uploads what changed in the staging folder since the last push; returns the count."""
        with self.mutex:
            current = {}
            for path in self.local.rglob("*"):
                rel = path.relative_to(self.local).as_posix()
                if not self._skipped(rel) and path.is_file() and (stat := _stat(path)) is not None:
                    current[rel] = stat
            changed = [r for r, st in current.items() if self.entries.get(r, {}).get("local") != st]
            changed.sort(key=lambda r: (_checkpoint_step(r) is not None, r.endswith(COMPLETE), r))
            for rel in changed:
                try:
                    put = lambda r=rel: self.fs.put_file(str(self.local / r), self._remote(r))  # noqa: E731
                    retrying(self._url(rel), "upload", put)
                except FileNotFoundError:  # deleted here meanwhile (keep-last): next push
                    continue
                info = retrying(
                    self._url(rel), "listing", lambda r=rel: self.fs.info(self._remote(r))
                )
                self.entries[rel] = {"remote": _fingerprint(info), "local": current[rel]}
            for rel in [r for r in self.entries if r not in current]:
                retrying(self._url(rel), "delete", lambda r=rel: _rm(self.fs, self._remote(r)))
                del self.entries[rel]
            self._save_manifest()
            return len(changed)

    def _save_manifest(self) -> None:
        tmp = self.manifest_path.with_name(self.manifest_path.name + f".part{os.getpid()}")
        tmp.write_text(json.dumps(self.entries, indent=0))
        tmp.replace(self.manifest_path)

    def start(self, seconds: float | None = None) -> None:
        """Pushes every `seconds` (default `$BERTJAX_SYNC_SECONDS` or `SYNC_SECONDS`) in a
        background thread until `close()`; a failed push is kept and raised by `close()`."""
        seconds = float(seconds or os.environ.get("BERTJAX_SYNC_SECONDS") or SYNC_SECONDS)
        self.thread = threading.Thread(target=self._run, args=(seconds,), daemon=True)
        self.thread.start()

    def _run(self, seconds: float) -> None:
        while not self.stop.wait(seconds):
            try:
                self.push()
            except Exception as err:  # noqa: BLE001 - reported by close()
                log.warning("%s", _first_line(err))
                self.error = err

    def close(self) -> None:
        """Stops the background pushes and pushes the rest (raises when the bucket refuses)."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        self.push()


def _rm(fs, remote: str) -> None:
    try:
        fs.rm_file(remote)
    except FileNotFoundError:
        pass
