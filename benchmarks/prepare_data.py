"""Benchmark `bertjax.data.pretraining.prepare` on the real pretraining corpora.

Measures wall time and peak resident memory (this process and, separately, the largest worker
process) for the ~39 MB of `$BERTJAX_DATA/pretrain-*` at length 128 with the bert-base-uncased
vocabulary, and prints one result line.

    python benchmarks/prepare_data.py [--num-workers N] [--documents-per-file] [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import resource
import tempfile
import time

from bertjax.data import pretraining as pretraining_data

REPO = pathlib.Path(__file__).resolve().parents[1]
CORPORA = ("pretrain-gutenberg", "pretrain-british-novels", "pretrain-wikipedia-sample")


def data_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("BERTJAX_DATA", REPO.parent / "shared" / "data"))


def peak_rss_mib() -> tuple[float, float]:
    """Peak RSS of this process and of the largest finished child, in MiB (Linux: KiB units)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--documents-per-file", action="store_true")
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    root = data_dir()
    files = [root / name for name in CORPORA]
    corpus_bytes = sum(p.stat().st_size for p in pretraining_data.resolve_files(files))
    vocab = root / "vocab" / "bert-base-uncased-vocab.txt"
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(args.out or tmp) / "prepared"
        start = time.perf_counter()
        metadata = pretraining_data.prepare(
            files,
            vocab,
            out,
            max_seq_len=args.max_seq_len,
            num_workers=args.num_workers,
            documents_per_file=args.documents_per_file,
            overwrite=True,
        )
        wall = time.perf_counter() - start
    own, child = peak_rss_mib()
    splits = metadata["splits"]
    instances = sum(s["num_examples"] for s in splits.values())
    tokens = sum(s["num_tokens"] for s in splits.values())
    random_next = sum(s["num_random_next"] for s in splits.values())
    workers = args.num_workers if args.num_workers is not None else os.cpu_count()
    print(
        f"RESULT prepare_data: corpus={corpus_bytes / 1e6:.1f}MB L={args.max_seq_len} "
        f"workers={workers} documents_per_file={args.documents_per_file} wall={wall:.1f}s "
        f"peak_rss_main={own:.0f}MiB peak_rss_worker={child:.0f}MiB "
        f"peak_rss_sum_bound={own + child * max(workers or 1, 1):.0f}MiB "
        f"instances={instances} train={splits['train']['num_examples']} "
        f"eval={splits['eval']['num_examples']} tokens={tokens} "
        f"tokens_per_s={tokens / wall:.0f} MB_per_s={corpus_bytes / 1e6 / wall:.2f} "
        f"nsp_random={random_next / max(instances, 1):.3f} "
        f"real_token_share={tokens / max(instances * args.max_seq_len, 1):.4f}"
    )


if __name__ == "__main__":
    main()
