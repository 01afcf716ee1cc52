"""Benchmark Korean morpheme pre-tokenization (`pretokenizer="morpheme"`) on ko-wikipedia.

Prints one line per measurement: the analyzers' speed on single sentences (MeCab-ko, and
kiwipiepy where importable), then, for each pre-tokenizer, WordPiece vocabulary training and
`bertjax.data.prepare.prepare` (its spawn workers) on the first `--files` files of
`$BERTJAX_DATA/ko-wikipedia/AA`.

    python benchmarks/korean_morpheme.py [--files 2] [--sentences 5000] [--num-workers 2]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import tempfile
import time

from bertjax.data import tokenizer
from bertjax.data.prepare import prepare

REPO = pathlib.Path(__file__).resolve().parents[1]


def wiki_files(n: int) -> list[pathlib.Path]:
    root = pathlib.Path(os.environ.get("BERTJAX_DATA", REPO.parent / "shared" / "data"))
    return sorted((root / "ko-wikipedia" / "AA").glob("wiki_*"))[:n]


def sentences(path: pathlib.Path, n: int) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("<"):
            out.extend(s for s in re.split(r"(?<=[.!?])\s+", line.strip()) if s)
    return out[:n]


def analyzers(sents: list[str]) -> None:
    import mecab_ko

    tagger = mecab_ko.Tagger()
    runs = {"mecab-ko": lambda s: tagger.parse(s)}
    try:
        import kiwipiepy

        kiwi = kiwipiepy.Kiwi(num_workers=-1)  # one thread, like one prepare worker
        runs["kiwipiepy " + kiwipiepy.__version__] = kiwi.tokenize
    except ImportError:
        pass
    for name, analyze in runs.items():
        analyze("준비")
        start = time.perf_counter()
        for s in sents:
            analyze(s)
        seconds = time.perf_counter() - start
        chars = sum(map(len, sents))
        print(
            f"analyzer {name}: {len(sents) / seconds:,.0f} sentences/s, {chars / seconds:,.0f} chars/s"
        )


def pipeline(
    files: list[pathlib.Path], pretokenizer: str, workers: int, work: pathlib.Path
) -> None:
    start = time.perf_counter()
    vocab = tokenizer.train_wordpiece(
        files, work / pretokenizer, vocab_size=16000, lowercase=False, pretokenizer=pretokenizer
    )
    trained = time.perf_counter() - start
    start = time.perf_counter()
    meta = prepare(files, vocab, work / f"data-{pretokenizer}", num_workers=workers, seed=0)
    seconds = time.perf_counter() - start
    mb = sum(f.stat().st_size for f in files) / 1e6
    print(
        f"{pretokenizer}: vocab {trained:.1f} s; prepare ({workers} workers) {seconds:.1f} s, "
        f"{mb / seconds:.2f} MB/s, {meta['splits']['train']['num_tokens']:,} train tokens"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2, help="ko-wikipedia files (~1 MB each)")
    parser.add_argument("--sentences", type=int, default=5000)
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args()
    files = wiki_files(args.files)
    analyzers(sentences(files[0], args.sentences))
    with tempfile.TemporaryDirectory() as tmp:
        for pretokenizer in tokenizer.PRETOKENIZERS:
            pipeline(files, pretokenizer, args.num_workers, pathlib.Path(tmp))


if __name__ == "__main__":
    main()
