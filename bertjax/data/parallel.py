"""Parallel data for translation: (source, target) sentence pairs from files.

Two forms, by `config.data.reader` (`read_pairs`'s options):
  * tables: `.tsv` (tab-separated, first line the header, no quoting: a quote is text, as in the
    GLUE TSVs), `.csv` (the csv module's quoting) or `.jsonl` (one object a line), with the
    columns `source_column` and `target_column`;
  * `aligned=True`: files taken two at a time, a source file and its target file, line i of one
    the translation of line i of the other.

A row without both texts (a missing column, an empty cell, a line that is not JSON, a row with
another number of cells than the header) is skipped and counted; the first few are logged by
file and line and all of them are counted in the preparation's statistics
(`rows_skipped_bad`).

`write_korsts_pairs` is the ko-en preparation step of the shared data (`KORSTS_CORPUS`).
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import pathlib
from collections.abc import Iterator, Mapping, Sequence

from bertjax.config import resolve_path
from bertjax.data.text import TextFile

log = logging.getLogger(__name__)

SHOWN_BAD_ROWS = 5  # bad rows logged by file and line, per file (all are counted)
OPTIONS = ("source_column", "target_column", "aligned")
TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl")


class BadRows:
    """Counts skipped rows and logs the first `SHOWN_BAD_ROWS` of each file."""

    def __init__(self, stats=None):
        self.stats = stats
        self.by_file: dict[str, int] = {}

    def skip(self, path, line: int, why: str) -> None:
        n = self.by_file.get(str(path), 0) + 1
        self.by_file[str(path)] = n
        if self.stats is not None:
            self.stats.rows_skipped_bad += 1
        if n <= SHOWN_BAD_ROWS:
            log.warning("%s:%d: %s; row skipped", path, line, why)

    def summary(self) -> None:
        for path, n in self.by_file.items():
            if n > SHOWN_BAD_ROWS:
                log.warning("%s: %d bad rows skipped in all", path, n)


def check_options(options: Mapping) -> dict:
    """`config.data.reader` with its defaults; raises naming an unknown field."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"config.data.reader has unknown fields {unknown}; known: {OPTIONS}")
    return {"source_column": "source", "target_column": "target", "aligned": False, **options}


def read_pairs(paths: Sequence, options: Mapping, stats=None) -> Iterator[tuple[str, str]]:
    """The (source, target) pairs of `paths`, in order; bad rows skipped (see the module).

    Args:
      paths: table files, or with `options["aligned"]` source and target files alternately.
      options: `config.data.reader` (`OPTIONS`).
      stats: a `text.Statistics` whose `rows_skipped_bad` counts the skipped rows, or None.
    """
    options = check_options(options)
    bad = BadRows(stats)
    paths = [pathlib.Path(p) for p in paths]
    if options["aligned"]:
        if len(paths) % 2:
            raise ValueError(
                f"config.data.reader.aligned=True takes files in pairs (source, target); "
                f"got {len(paths)}: {[str(p) for p in paths]}"
            )
        for source, target in zip(paths[::2], paths[1::2], strict=True):
            yield from _aligned(source, target, bad)
    else:
        for path in paths:
            yield from _table(path, options["source_column"], options["target_column"], bad)
    bad.summary()


def _aligned(source: pathlib.Path, target: pathlib.Path, bad: BadRows):
    with TextFile(source, "a parallel source file") as fs, TextFile(target, "its target") as ft:
        for line, (s, t) in enumerate(itertools.zip_longest(fs, ft), start=1):
            if s is None or t is None:
                longer, shorter = (target, source) if s is None else (source, target)
                raise ValueError(
                    f"{longer} has more lines than {shorter} (line {line}): aligned files "
                    "(config.data.reader.aligned) need one line per pair"
                )
            s, t = s.strip(), t.strip()
            if s and t:
                yield s, t
            else:
                bad.skip(source if not s else target, line, "empty line")


def _rows(path: pathlib.Path, bad: BadRows) -> Iterator[tuple[int, dict]]:
    """(line, row as a dict) of a table file."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(
            f"{path}: a parallel table is {', '.join(TABLE_SUFFIXES)}; for a source file and "
            "its target file set config.data.reader.aligned=True"
        )
    with TextFile(path, "a parallel table") as f:
        if suffix == ".jsonl":
            for line, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as e:
                    bad.skip(path, line, f"not JSON ({e.msg})")
                    continue
                if isinstance(row, dict):
                    yield line, row
                else:
                    bad.skip(path, line, "not a JSON object")
            return
        reader = csv.reader(f) if suffix == ".csv" else (t.rstrip("\r\n").split("\t") for t in f)
        header = next(reader, None) or []
        for line, cells in enumerate(reader, start=2):
            if cells == [""] or not cells:
                continue
            if len(cells) != len(header):
                bad.skip(path, line, f"{len(cells)} cells, the header has {len(header)}")
                continue
            yield line, dict(zip(header, cells, strict=True))


def _table(path: pathlib.Path, source_column: str, target_column: str, bad: BadRows):
    for line, row in _rows(path, bad):
        missing = [c for c in (source_column, target_column) if c not in row]
        if missing:
            bad.skip(path, line, f"no column {missing[0]!r} (config.data.reader)")
            continue
        s, t = (str(row[c] or "").strip() for c in (source_column, target_column))
        if s and t:
            yield s, t
        else:
            bad.skip(path, line, f"empty {source_column if not s else target_column!r}")


# ---------------------------------------------------------------------------------------------
# The shared ko-en data: KorSTS is a row-for-row Korean translation of STS-B
# ---------------------------------------------------------------------------------------------

KORSTS_CORPUS = "builtin:korsts-ko-en"  # config.data.corpus: "<this>/train" or "<this>/dev"
KORSTS_FILES = {  # split -> (Korean table, English table) under $BERTJAX_DATA
    "train": ("kornlu/KorSTS/sts-train.tsv", "glue-stsb/train.tsv"),
    "dev": ("kornlu/KorSTS/sts-dev.tsv", "glue-stsb/dev.tsv"),
}
KORSTS_KEYS = (("genre", "genre"), ("filename", "filename"), ("year", "year"), ("id", "old_index"))


def write_korsts_pairs(out_dir: pathlib.Path) -> dict[str, dict[str, int]]:
    """Writes `out_dir/{train,dev}.tsv` (columns `ko`, `en`): each KorSTS row's sentence1 and
    sentence2 paired with those of its STS-B row.

    The rows must match on genre, filename, year and id (STS-B's `old_index`); a row that does
    not is skipped and named by file and line. Duplicate pairs are dropped, and dev pairs that
    are also training pairs. Returns the counts per split.
    """
    root = resolve_path("$BERTJAX_DATA")
    out_dir.mkdir(parents=True, exist_ok=True)
    seen: set[tuple[str, str]] = set()
    counts = {}
    for split, (ko_name, en_name) in KORSTS_FILES.items():
        ko_path, en_path = root / ko_name, root / en_name
        bad = BadRows()
        ko_rows, en_rows = list(_rows(ko_path, bad)), list(_rows(en_path, bad))
        if len(ko_rows) != len(en_rows):
            raise ValueError(f"{ko_path} has {len(ko_rows)} rows, {en_path} {len(en_rows)}")
        pairs, mismatched, duplicates = [], 0, 0
        for (line, ko), (_, en) in zip(ko_rows, en_rows, strict=True):
            if any(ko[k].strip() != en[e].strip() for k, e in KORSTS_KEYS):
                mismatched += 1
                bad.skip(ko_path, line, f"its genre/filename/year/id differ from {en_path}'s row")
                continue
            for column in ("sentence1", "sentence2"):
                pair = (ko[column].strip(), en[column].strip())
                if not all(pair) or any("\t" in t or "\n" in t for t in pair):
                    continue
                if pair in seen:
                    duplicates += 1
                    continue
                seen.add(pair)
                pairs.append(pair)
        bad.summary()
        text = "".join(f"{ko}\t{en}\n" for ko, en in pairs)
        (out_dir / f"{split}.tsv").write_text("ko\ten\n" + text, encoding="utf-8")
        counts[split] = {"pairs": len(pairs), "mismatched": mismatched, "duplicates": duplicates}
        log.info("%s: %s", out_dir / f"{split}.tsv", counts[split])
    return counts


def builtin_files(spec: str, workdir: pathlib.Path) -> list[str] | None:
    """The files of a builtin parallel corpus (`KORSTS_CORPUS/train` or `/dev`, written to
    `workdir/corpus/korsts-ko-en` once), or None when `spec` names none."""
    if not spec.startswith(KORSTS_CORPUS + "/"):
        return None
    split = spec[len(KORSTS_CORPUS) + 1 :]
    if split not in KORSTS_FILES:
        raise ValueError(f"{spec!r}: the splits of {KORSTS_CORPUS} are {tuple(KORSTS_FILES)}")
    out = workdir / "corpus" / "korsts-ko-en"
    if not all((out / f"{s}.tsv").is_file() for s in KORSTS_FILES):
        write_korsts_pairs(out)
    return [str(out / f"{split}.tsv")]
