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
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import pathlib
import time

log = logging.getLogger(__name__)

SCHEMES = ("gs://", "s3://")
ATTEMPTS = 3  # tries per listing or file before giving up
MANIFEST = ".bertjax-remote.json"


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


def _retrying(url: str, what: str, call):
    """`call()` with `ATTEMPTS` tries; a missing object fails at once, naming `url`."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{url}: no such object in the bucket") from err
        except OSError as err:
            if attempt == ATTEMPTS:
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise OSError(f"{url}: {what} failed {ATTEMPTS} times: {reason}") from err
            log.warning("%s: %s failed (%s); retrying", url, what, type(err).__name__)
            time.sleep(attempt)


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
    _retrying(url, "download", lambda: fs.get_file(remote, str(tmp)))
    data = tmp.read_bytes()
    md5 = _expected_md5(info)
    if len(data) != info.get("size", len(data)) or (md5 and hashlib.md5(data).hexdigest() != md5):
        tmp.unlink()
        raise OSError(f"{url}: the downloaded copy does not match the bucket's size or checksum")
    tmp.replace(local)


def local_copy(url: str) -> pathlib.Path:
    """A local, up-to-date copy of the file or folder at `url` (this host's cache).

    Raises:
      FileNotFoundError: no object or folder at `url` (one line naming it).
      OSError: the bucket could not be read after `ATTEMPTS` tries (one line naming `url`).
    """
    fs, root = _filesystem(url)
    info = _retrying(url, "listing", lambda: fs.info(root))
    if info["type"] == "directory":
        found = _retrying(url, "listing", lambda: fs.find(root, detail=True))
        files = {name[len(root) :].lstrip("/"): meta for name, meta in found.items()}
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
