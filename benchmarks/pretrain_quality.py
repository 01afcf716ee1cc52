"""Held-out MLM accuracy of a short BERT-mini pretraining run against the unigram baseline.

Trains `configs/mini.py` (L4/H256/A4) with the bert-base-uncased vocabulary on the real corpora
`$BERTJAX_DATA/pretrain-*` through `bertjax.training.pretrain.pretrain` (prepare, train, final
eval), then compares the final held-out MLM accuracy with the accuracy of always predicting the most
frequent token. That token is the mode of the train split's tokens ([CLS], [SEP], [PAD], [UNK],
[MASK] excluded); its accuracy is its frequency among the eval split's real tokens (all but [CLS],
[SEP], [PAD]), since every masked position is a real token chosen uniformly within its sequence (up
to the `max_predictions` cap and per-sequence rounding). Prints one result line:

  python benchmarks/pretrain_quality.py                       # 600 steps, batch 32, seq 128
  python benchmarks/pretrain_quality.py --steps 100 --workdir /tmp/quality
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import tempfile
import time

import numpy as np

from bertjax.config import load_config
from bertjax.data.shards import load_metadata, shard_filename
from bertjax.data.tokenizer import load_tokenizer, read_vocab, special_token_ids
from bertjax.training.pretrain import pretrain

REPO = pathlib.Path(__file__).resolve().parents[1]
CORPORA = ("pretrain-gutenberg", "pretrain-british-novels", "pretrain-wikipedia-sample")


def data_root() -> pathlib.Path:
    """The shared real-data folder: $BERTJAX_DATA or ../shared/data beside the repo."""
    return pathlib.Path(os.environ.get("BERTJAX_DATA", REPO.parent / "shared" / "data"))


def token_counts(data_dir: pathlib.Path, split: str, vocab_size: int) -> np.ndarray:
    """Occurrences of every id in a prepared split's `input_ids` (padding included, as id 0).

    Returns:
      int64 [vocab_size].
    """
    shards = len(load_metadata(data_dir)["splits"][split]["shards"])
    counts = np.zeros(vocab_size, np.int64)
    for index in range(shards):
        ids = np.load(data_dir / split / shard_filename("input_ids", index), mmap_mode="r")
        counts += np.bincount(np.asarray(ids, np.int64).ravel(), minlength=vocab_size)
    return counts


def unigram_baseline(data_dir: pathlib.Path, vocab: pathlib.Path) -> dict[str, float]:
    """Accuracy on the eval split of always predicting the train split's most frequent token."""
    tokens = read_vocab(vocab)
    specials = special_token_ids(load_tokenizer(vocab), str(vocab))
    train = token_counts(data_dir, "train", len(tokens))
    held = token_counts(data_dir, "eval", len(tokens))
    held[[specials["pad"], specials["cls"], specials["sep"]]] = 0  # never masked
    train[list(specials.values())] = 0  # never the prediction
    mode = int(np.argmax(train))
    return {
        "baseline_token": tokens[mode],
        "baseline_accuracy": float(held[mode] / max(held.sum(), 1)),
        "train_tokens": int(train.sum()),
        "eval_tokens": int(held.sum()),
    }


def make_config(args: argparse.Namespace):
    """configs/mini.py (or --config) sized for a CPU run: one eval and one checkpoint, at the end."""
    config = load_config(args.config)
    if args.corpus:
        config.data.corpus = args.corpus
    else:
        root = pathlib.Path(args.data)
        config.data.corpus = ",".join(str(root / name) for name in CORPORA)
        config.data.vocab = str(root / "vocab" / "bert-base-uncased-vocab.txt")
        config.model.vocab_size = len(read_vocab(config.data.vocab))
    config.model.max_position_embeddings = max(args.seq, 64)
    config.data.max_seq_len = args.seq
    config.data.max_predictions = max(1, round(0.15 * args.seq))
    config.optim.learning_rate = args.lr
    config.optim.warmup_steps = max(1, args.steps // 10)
    config.train.update(
        global_batch_size=args.batch,
        num_steps=args.steps,
        log_every=max(1, min(50, args.steps)),
        eval_every=0,
        eval_batches=args.eval_batches,
    )
    config.checkpoint.update(every_steps=args.steps, keep=1, async_save=False)
    return config


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "mini.py"))
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps")
    parser.add_argument("--batch", type=int, default=32, help="global batch size")
    parser.add_argument("--seq", type=int, default=128, help="sequence length")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--eval_batches", type=int, default=20, help="held-out batches")
    parser.add_argument("--data", default=str(data_root()), help="folder with pretrain-*, vocab")
    parser.add_argument(
        "--corpus", default="", help="use this config.data.corpus instead (own vocab trained)"
    )
    parser.add_argument("--workdir", default="", help="default: a temporary folder")
    args = parser.parse_args(argv)

    config = make_config(args)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(args.workdir or tmp)
        started = time.perf_counter()
        last = pretrain(config, workdir)
        seconds = time.perf_counter() - started
        vocab = pathlib.Path(load_metadata(workdir / "data")["vocab_file"])
        baseline = unigram_baseline(workdir / "data", vocab)
    result = {
        "steps": args.steps,
        "batch": args.batch,
        "seq": args.seq,
        "eval_mlm_accuracy": last["eval_mlm_accuracy"],
        "eval_mlm_loss": last["eval_mlm_loss"],
        "eval_nsp_accuracy": last["eval_nsp_accuracy"],
        "train_loss": last["loss"],
        "wall_seconds": seconds,
        **baseline,
    }
    if not all(math.isfinite(v) for v in result.values() if isinstance(v, float)):
        raise SystemExit(f"non-finite result: {result}")
    print(json.dumps(result))
    print(
        f"steps {args.steps} batch {args.batch} seq {args.seq}: held-out MLM accuracy "
        f"{result['eval_mlm_accuracy']:.4f} vs unigram baseline {result['baseline_accuracy']:.4f} "
        f"(always {result['baseline_token']!r}); wall {seconds:.0f} s"
    )
    return result


if __name__ == "__main__":
    main()
