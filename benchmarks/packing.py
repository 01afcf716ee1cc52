"""Sequence packing, before and after: padding, and instances and real tokens per second.

For a prepared dataset (`bertjax prepare`, or `benchmarks/prepare_data.py --out DIR`) this reports
the share of real tokens in the rows with and without `config.data.pack_sequences`, and times the
real pretraining job's step (`bertjax.training.pretrain.setup`: its input pipeline, masking inside
the jitted step) on both. Rows per second stay the same shape of work; what packing buys is
instances and real tokens per row. Prints one table:

  python benchmarks/prepare_data.py --max-seq-len 512 --out /tmp/prep512
  python benchmarks/packing.py --data /tmp/prep512/prepared --config configs/mini.py --batch 8 \
      --config.data.max_predictions=76
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import jax

from bertjax import sharding
from bertjax.config import load_config
from bertjax.data.shards import load_metadata
from bertjax.training.pretrain import setup

try:
    from benchmarks import common
except ImportError:  # run as a script: this folder is on sys.path
    import common

COLUMNS = (
    ("packing", "packing", 0),
    ("rows", "rows (train)", 0),
    ("real_token_share", "real tokens / positions", 3),
    ("instances_per_row", "instances / row", 3),
    ("step_ms", "step ms", 1),
    ("rows_per_s", "rows/s", 2),
    ("instances_per_s", "instances/s", 2),
    ("real_tokens_per_s", "real tokens/s", 0),
)


def measure(args: argparse.Namespace, packed: bool, workdir: str) -> dict[str, Any]:
    """Builds the pretraining job on `args.data` and times `args.steps` steps after warm-up."""
    metadata = load_metadata(args.data)
    config = load_config(args.config, args.overrides)
    config.data.update(
        dir=str(args.data),
        vocab=metadata["vocab_file"],
        max_seq_len=metadata["max_seq_len"],
        pack_sequences=packed,
        max_pack_size=args.max_pack_size,
    )
    config.train.update(global_batch_size=args.batch, num_steps=10**6, seed=args.seed)
    config.model.dtype = common.resolve_dtype(args.dtype, jax.devices()[0].platform != "cpu")
    job = setup(config, workdir)
    state, instances, real_tokens = job.state, 0.0, 0
    timed = 0.0
    for step in range(args.warmup + args.steps):
        started = time.perf_counter()
        local = next(job.train_iter)  # host work (reading, packing) is inside the timing
        batch = sharding.global_batch(local, job.steps.mesh)
        state, metrics = job.steps.train_step(state, batch)
        jax.block_until_ready(metrics)
        if step >= args.warmup:
            timed += time.perf_counter() - started
            weights = local.get("nsp_weights")
            instances += float(len(local["input_ids"]) if weights is None else weights.sum())
            real_tokens += int((local["attention_mask"] > 0).sum())
    rows, train_rows = args.steps * args.batch, len(job.train_source)
    job.close()
    return {
        "packing": f"max {args.max_pack_size}" if packed else "off",
        "rows": train_rows,
        "real_token_share": real_tokens / (rows * metadata["max_seq_len"]),
        "instances_per_row": instances / rows,
        "step_ms": 1e3 * timed / args.steps,
        "rows_per_s": rows / timed,
        "instances_per_s": instances / timed,
        "real_tokens_per_s": real_tokens / timed,
    }


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a prepared dataset folder")
    parser.add_argument("--config", default=str(common.REPO / "configs" / "mini.py"))
    parser.add_argument("--batch", type=int, default=8, help="rows per step")
    parser.add_argument("--max_pack_size", type=int, default=3)
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = common.parse_args(parser, argv)
    rows = []
    for packed in (False, True):
        with tempfile.TemporaryDirectory() as workdir:
            rows.append(measure(args, packed, workdir))
    rows[1]["speedup"] = rows[1]["instances_per_s"] / rows[0]["instances_per_s"]
    print(common.table(rows, COLUMNS))
    print(
        f"packing: {rows[1]['speedup']:.2f}x instances/s; {common.environment()['versions']}, "
        f"device {jax.devices()[0].device_kind}"
    )
    return rows


if __name__ == "__main__":
    main()
