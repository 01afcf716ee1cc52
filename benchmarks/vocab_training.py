"""WordPiece vocabulary training: reproducibility, Hangul, [UNK] rate and pieces per word.

Trains a vocabulary three ways, each twice in its own fresh process, and scores it on held-out
text of the same corpus:

  before         the trainer as bertjax called it up to commit 909b732: `tokenizers`'
                 WordPieceTrainer as is (limit_alphabet=1000 over all characters), BERT's
                 normalizer (lowercasing strips accents through NFD, splitting Hangul into jamo)
  nfc-upstream   the same trainer with the Hangul-keeping normalizer (keep_hangul) only, to show
                 what the 1000-character alphabet limit alone does to Korean
  after          `bertjax.tokenizer.train_wordpiece` now: keep_hangul, a fixed alphabet (every
                 Hangul syllable seen plus the 1000 most frequent other characters) and the
                 `##` pieces given ids in sorted order, so both runs give the same bytes

  python benchmarks/vocab_training.py                      # ko-wikipedia, 10 files, 32,000
  python benchmarks/vocab_training.py --corpus builtin     # Python docs, 4,320 (README's corpus)

Prints a table and one JSON line (also written to --json).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import pathlib
import re
import sys
import tempfile
import time
from importlib import metadata

try:
    from benchmarks import common
except ImportError:  # run as a script: this folder is on sys.path
    import common

VARIANTS = ("before", "nfc-upstream", "after")
JAMO = re.compile("[\u1100-\u11ff]")  # conjoining jamo: what NFD makes of a syllable


def corpus_files(name: str, train_files: int) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    """(training files, held-out files) of `name`."""
    if name == "builtin":
        from bertjax.data.corpus import write_builtin_corpus

        topics = write_builtin_corpus(pathlib.Path(tempfile.mkdtemp()) / "corpus")
        return [p for i, p in enumerate(topics) if i % 10], topics[::10]
    root = pathlib.Path(os.environ.get("BERTJAX_DATA", common.REPO.parent / "shared" / "data"))
    files = sorted((root / "ko-wikipedia" / "AA").glob("wiki_*"))
    if len(files) < train_files + 2:
        raise FileNotFoundError(f"{root}/ko-wikipedia/AA has {len(files)} files; set BERTJAX_DATA")
    return files[:train_files], files[-2:]


def train(variant: str, files: list[str], out: str, vocab_size: int) -> float:
    """Trains one vocabulary into `out`; returns the seconds it took. Runs in a fresh process."""
    import tokenizers

    from bertjax.data import tokenizer as tok

    start = time.perf_counter()
    if variant == "after":
        tok.train_wordpiece(files, out, vocab_size=vocab_size)
        return time.perf_counter() - start
    keep_hangul = variant == "nfc-upstream"
    model = tokenizers.models.WordPiece(unk_token="[UNK]")
    options = dict(lowercase=True, strip_accents=None, handle_chinese_chars=True)
    tokenizer = tok._build_tokenizer(model, **options, keep_hangul=keep_hangul)
    trainer = tokenizers.trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        limit_alphabet=1000,
        special_tokens=list(tok.SPECIAL_TOKENS.values()),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train(files, trainer)
    vocab = tokenizer.get_vocab()
    pathlib.Path(out).mkdir(parents=True, exist_ok=True)
    tok._write_vocab(sorted(vocab, key=vocab.__getitem__), pathlib.Path(out) / tok.VOCAB_NAME)
    config = {**options, "keep_hangul": keep_hangul}
    (pathlib.Path(out) / tok.CONFIG_NAME).write_text(json.dumps(config))
    return time.perf_counter() - start


def train_fresh(variant: str, files: list[str], out: str, vocab_size: int) -> float:
    """`train` in a new interpreter, so each run has its own hash seeds."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(train, variant, files, out, vocab_size).result()


def held_out_lines(files: list[pathlib.Path], max_lines: int) -> list[str]:
    lines = []
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith(("<doc", "</doc")):
                lines.append(line)
    return lines[:max_lines]


def score(vocab_path: pathlib.Path, lines: list[str]) -> dict[str, float]:
    """Pieces per word, [UNK] rate and how two Korean words come out, on `lines`."""
    from bertjax.data import tokenizer as tok

    tokenizer = tok.load_tokenizer(vocab_path)
    vocab = tok.read_vocab(vocab_path)
    encodings = tokenizer.encode_batch(lines, add_special_tokens=False)
    pieces = sum(len(e.tokens) for e in encodings)
    unk = sum(e.tokens.count("[UNK]") for e in encodings)
    words = sum(
        len(tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(s)))
        for s in lines
    )
    example = tokenizer.encode("제임스는 책을 샀다", add_special_tokens=False).tokens
    return {
        "vocab_tokens": len(vocab),
        "jamo_tokens": sum(bool(JAMO.search(t)) for t in vocab),
        "held_out_words": words,
        "pieces_per_word": pieces / words,
        "unk_rate": unk / pieces,
        "unk_word_rate": unk / words,  # an unknown word is one [UNK]
        "example": " ".join(example),
        "example_code_points": sum(len(t.removeprefix("##")) for t in example),
    }


def run_variant(variant, train_paths, lines, vocab_size, work) -> dict:
    files = [str(p) for p in train_paths]
    digests, seconds = [], []
    for run in range(2):
        out = work / f"{variant}-{run}"
        seconds.append(train_fresh(variant, files, str(out), vocab_size))
        digests.append(hashlib.sha256((out / "vocab.txt").read_bytes()).hexdigest())
    first, second = (
        (work / f"{variant}-{r}" / "vocab.txt").read_text().splitlines() for r in (0, 1)
    )
    return {
        "variant": variant,
        "train_s": min(seconds),
        "identical": digests[0] == digests[1],
        "tokens_only_in_one_run": len(set(first) ^ set(second)),
        **score(work / f"{variant}-0" / "vocab.txt", lines),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=("ko-wikipedia", "builtin"), default="ko-wikipedia")
    parser.add_argument(
        "--train-files", type=int, default=10, help="ko-wikipedia files to train on"
    )
    parser.add_argument("--vocab-size", type=int, help="default 32000 (ko) or 4320 (builtin)")
    parser.add_argument("--held-out-lines", type=int, default=5000)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    vocab_size = args.vocab_size or (32000 if args.corpus == "ko-wikipedia" else 4320)
    train_paths, held_out = corpus_files(args.corpus, args.train_files)
    lines = held_out_lines(held_out, args.held_out_lines)
    with tempfile.TemporaryDirectory() as work:
        rows = [
            run_variant(v, train_paths, lines, vocab_size, pathlib.Path(work))
            for v in args.variants
        ]
    megabytes = sum(p.stat().st_size for p in train_paths) / 2**20
    result = {
        "corpus": args.corpus,
        "train_mb": round(megabytes, 1),
        "vocab_size": vocab_size,
        "held_out_lines": len(lines),
        "rows": rows,
        "environment": {**common.environment(), "tokenizers": metadata.version("tokenizers")},
    }
    columns = [
        ("variant", "variant", 0),
        ("train_s", "train s", 1),
        ("identical", "2 runs same bytes", 0),
        ("tokens_only_in_one_run", "tokens in one run only", 0),
        ("vocab_tokens", "tokens", 0),
        ("jamo_tokens", "jamo tokens", 0),
        ("pieces_per_word", "pieces/word", 3),
        ("unk_rate", "[UNK]/pieces", 4),
        ("unk_word_rate", "[UNK] words", 4),
        ("example", "제임스는 책을 샀다", 0),
        ("example_code_points", "code points", 0),
    ]
    print(common.table(rows, columns))
    print(json.dumps(result, ensure_ascii=False))
    if args.json:
        common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
