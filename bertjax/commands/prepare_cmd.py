"""`bertjax prepare`: turn text files into pretraining shards.

With `--config` (plus `--config.GROUP.FIELD=VALUE` overrides) it does the data work of `bertjax
pretrain` with the same config and the same code (`training.pretrain.prepare_data`): the
`config.data.tokenizer` kind trained on `config.data.corpus` into WORKDIR/tokenizer (unless
`config.data.vocab` is given) and the `config.data.instances` shards in WORKDIR/data, so any
kind of data (WordPiece or byte-level BPE, nsp_pairs or lm_blocks, entities, morphemes) is made
once; `bertjax pretrain` with the same workdir, or `--config.data.dir=WORKDIR/data`, uses it.
Without `--config`: files, a vocabulary and the flags below (MLM+NSP sentence pairs).
"""

from __future__ import annotations

import argparse
import json
import logging

from bertjax.commands import add_strict_utf8

# flag -> its default: set without --config only
LEGACY = {
    "files": [],
    "vocab": None,
    "out": None,
    "max_seq_len": 128,
    "short_seq_prob": 0.1,
    "eval_fraction": 0.01,
    "seed": 0,
    "num_workers": None,
    "documents_per_file": False,
    "shard_size": 1 << 16,
    "lowercase": None,
    "overwrite": False,
    "strict_utf8": False,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="pretraining config file (the data work of `pretrain`)")
    parser.add_argument("--workdir", help="with --config: WORKDIR/tokenizer and WORKDIR/data")
    parser.add_argument("files", nargs="*", help="text files, folders (*.txt) or glob patterns")
    parser.add_argument("--vocab", help="WordPiece vocab.txt or byte-level BPE vocab.json")
    parser.add_argument("--out", help="output folder (empty, or use --overwrite)")
    parser.add_argument("--max-seq-len", type=int, default=128, help="instance length L")
    parser.add_argument("--short-seq-prob", type=float, default=0.1, help="shorter-target rate")
    parser.add_argument("--eval-fraction", type=float, default=0.01, help="held-out documents")
    parser.add_argument("--seed", type=int, default=0, help="seed of all random choices")
    parser.add_argument("--num-workers", type=int, default=None, help="default: one per CPU")
    parser.add_argument(
        "--documents-per-file", action="store_true", help="each file is one document"
    )
    parser.add_argument("--shard-size", type=int, default=1 << 16, help="instances per shard")
    case = parser.add_mutually_exclusive_group()
    case.add_argument("--lowercase", dest="lowercase", action="store_true", default=None)
    case.add_argument("--cased", dest="lowercase", action="store_false")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier dataset")
    add_strict_utf8(parser)
    parser.epilog = (
        "Either --config CONFIG --workdir WORKDIR [--config.GROUP.FIELD=VALUE ...], or FILES "
        "--vocab VOCAB --out OUT [flags]."
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.config is not None:
        return run_config(args)
    missing = [name for name in ("files", "vocab", "out") if not getattr(args, name)]
    if missing or args.workdir:
        raise ValueError(
            "give either --config CONFIG --workdir WORKDIR, or FILES --vocab VOCAB --out OUT"
            + (f" (missing: {', '.join(missing)})" if missing else " (--workdir needs --config)")
        )
    from bertjax.data.prepare import prepare

    metadata = prepare(
        args.files,
        args.vocab,
        args.out,
        max_seq_len=args.max_seq_len,
        short_seq_prob=args.short_seq_prob,
        eval_fraction=args.eval_fraction,
        seed=args.seed,
        num_workers=args.num_workers,
        documents_per_file=args.documents_per_file,
        shard_size=args.shard_size,
        lowercase=args.lowercase,
        overwrite=args.overwrite,
    )
    print(json.dumps({"splits": metadata["splits"], "statistics": metadata["statistics"]}))
    return 0


def run_config(args: argparse.Namespace) -> int:
    """The data work of `bertjax pretrain --config ... --workdir ...`, nothing else."""
    refuse_legacy_flags(args, LEGACY, "config.data.corpus, config.data.vocab, config.data.*")
    if not args.workdir:
        raise ValueError("--config needs --workdir (the data goes to WORKDIR/data)")
    from bertjax import storage
    from bertjax.config import load_config
    from bertjax.data.run_data import check_config
    from bertjax.data.shards import load_metadata
    from bertjax.models import model_config
    from bertjax.training.pretrain import prepare_data
    from bertjax.training.trainer import check_config as check_run_config
    from bertjax.training.workdir import staged

    config = load_config(args.config, args.overrides)
    if config.init_from:
        raise ValueError(
            f"config.init_from={config.init_from!r}: the vocabulary comes from that model; "
            "`bertjax pretrain` prepares its data"
        )
    _, cfg = model_config(config.model)
    check_run_config(config)  # the checks pretrain makes before any data work
    check_config(config, cfg)  # the data fields against the model
    with staged(args.workdir) as workdir:  # a folder, or a bucket URL through a staging folder
        workdir.mkdir(parents=True, exist_ok=True)
        data_dir, vocab = prepare_data(config, workdir)
        metadata = load_metadata(data_dir)
        data_dir, vocab = (
            storage.staged_url(data_dir) or data_dir,
            storage.staged_url(vocab) or vocab,
        )
    summary = {"data": str(data_dir), "vocab": str(vocab), "instances": metadata["instances"]}
    print(json.dumps({**summary, "splits": metadata["splits"]}))
    return 0


def refuse_legacy_flags(args: argparse.Namespace, legacy: dict, instead: str) -> None:
    """One error naming every flag of the file mode (`legacy`: flag -> default) that is set
    together with --config."""
    given = [name for name, default in legacy.items() if getattr(args, name) != default]
    if given:
        flags = ", ".join("FILES" if n == "files" else "--" + n.replace("_", "-") for n in given)
        raise ValueError(
            f"{flags} cannot be combined with --config; set the config's fields instead "
            f"({instead}, as --config.GROUP.FIELD=VALUE)"
        )
