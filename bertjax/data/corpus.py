"""Where pretraining text comes from: files or globs, or the corpus that ships with Python."""

from __future__ import annotations

import pathlib

from bertjax import storage
from bertjax.config import resolve_path
from bertjax.data import parallel
from bertjax.data.text import resolve_files
from bertjax.files import named_errors

BUILTIN_CORPUS = "builtin:python-docs"  # Python's reference documentation (pydoc_data)


def write_builtin_corpus(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Writes the Python reference documentation that ships with CPython, one topic per file."""
    from pydoc_data.topics import topics

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in sorted(topics.items()):
        path = out_dir / f"{name}.txt"
        with named_errors(path.name, out_dir):  # a full disk, named
            path.write_text(text)
        paths.append(path)
    return paths


def corpus_files(spec: str, workdir: pathlib.Path) -> list[str]:
    """The files of `config.data.corpus`: comma-separated files or globs, or `BUILTIN_CORPUS`
    (written to `workdir/corpus`)."""
    if not spec:
        raise ValueError(
            "no training data: set config.data.corpus (text files or globs, comma-separated, or "
            f"{BUILTIN_CORPUS!r}) or config.data.dir (a folder made by `bertjax prepare`)"
        )
    if spec == BUILTIN_CORPUS:
        return [str(p) for p in write_builtin_corpus(workdir / "corpus")]
    if (pairs := parallel.builtin_files(spec, workdir)) is not None:  # the ko-en pairs
        return pairs
    return [part.strip() for part in spec.split(",") if part.strip()]


def resolve_corpus(spec: str, workdir: pathlib.Path) -> list[pathlib.Path]:
    """The text files of `config.data.corpus` (see `corpus_files`), each checked to exist; a
    `gs://` or `s3://` file, folder or glob is read through this host's cache."""
    paths = []
    for part in corpus_files(spec, workdir):
        paths += storage.local_files(part) if storage.is_remote(part) else [resolve_path(part)]
    return resolve_files(paths)
