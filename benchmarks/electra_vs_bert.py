"""ELECTRA against BERT of the same (discriminator) size: step time and FLOPs, side by side.

Runs `train_throughput.measure` twice in one process on the same synthetic batches: the ELECTRA
config (generator + discriminator, objective `rtd`) and a BERT with the discriminator's hidden
size, depth, heads and MLP width (objective `mlm`, no NSP), then prints one table:

  python benchmarks/electra_vs_bert.py --config configs/electra/small.py --batch 32 --seq 128
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence

try:
    from benchmarks import common, train_throughput
except ImportError:  # run as a script: this folder is on sys.path
    import common
    import train_throughput

SHARED = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size")


def bert_args(args: argparse.Namespace) -> argparse.Namespace:
    """The same run as `args` with a BERT of the ELECTRA config's discriminator size."""
    from bertjax.config import load_config

    model = load_config(args.config, args.overrides).model
    bert = copy.copy(args)
    bert.config = str(common.REPO / "configs" / "base.py")
    bert.overrides = [
        *[o for o in args.overrides if not o.startswith("--config.model.")],
        "--config.objective=mlm",
        f"--config.model.max_position_embeddings={model.max_position_embeddings}",
        *[f"--config.model.{name}={model[name]}" for name in SHARED],
    ]
    return bert


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser)
    args = common.parse_args(parser, argv)
    rows = []
    for name, run in (("electra", args), ("bert", bert_args(args))):
        result = train_throughput.measure(run)
        result["name"] = name
        result["gflops_per_sequence"] = result["flops_per_sequence"] / 1e9
        rows.append(result)
    columns = [
        ("name", "model", 0),
        ("step_ms", "step ms", 1),
        ("seq_per_s", "seq/s", 1),
        ("gflops_per_sequence", "GFLOP/seq", 3),
        ("tflops_per_device", "TFLOP/s/dev", 3),
        ("compile_s", "compile s", 1),
    ]
    print(common.table(rows, columns))
    ratio = rows[0]["step_ms"] / rows[1]["step_ms"]
    flops = rows[0]["flops_per_sequence"] / rows[1]["flops_per_sequence"]
    print(f"ELECTRA / BERT: step time {ratio:.2f}x, FLOPs per sequence {flops:.2f}x")
    if args.json_out:
        common.write_json(args.json_out, {"runs": rows, "step_ratio": ratio, "flops_ratio": flops})
    return rows


if __name__ == "__main__":
    main()
