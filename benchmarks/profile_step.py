"""Where a jitted step's time goes: a `jax.profiler` trace, summed by the model's op names.

Compiles the real pretraining step (`train_throughput.build`: masking, forward, backward, update)
or, with `--forward`, the encoder's forward (`Model(BERT, cfg)`, no heads), runs `--steps` steps
under `jax.profiler.trace` and matches the trace's events to the compiled HLO's instructions, whose
metadata names the module and operation each came from. Prints the most expensive instructions
and the time per model scope (layers folded together; `bwd` marks the backward pass):

  python benchmarks/profile_step.py --config configs/mini.py --batch 32 --seq 128
  python benchmarks/profile_step.py --config configs/mini.py --batch 128 --seq 128 --forward

On a CPU the events are the XLA thunks; on a GPU, its kernels (named after their fusions).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib
import re
import tempfile
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from bertjax.models import Model
from bertjax.models.bert import BERT, bert_model_config

try:
    from benchmarks import common, train_throughput
except ImportError:  # run as a script: this folder is on sys.path
    import common
    import train_throughput

INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]+)\"", re.M)


def compiled_step(args: argparse.Namespace, config):
    """(compiled function, its arguments) for the training step or the encoder forward."""
    if not args.forward:
        with tempfile.TemporaryDirectory() as tmp:
            _, steps, batch, _ = train_throughput.build(
                config, common.write_vocab(config.model.vocab_size, tmp)
            )
        state = steps.init_state(jax.random.key(args.seed))
        return train_throughput.compile_train_step(steps, state, batch), [state, batch]
    cfg = bert_model_config(config.model)
    local = common.synthetic_batch(
        np.random.default_rng(args.seed), args.batch, args.seq, cfg.vocab_size
    )
    inputs = {k: local[k] for k in BERT.fields_for(cfg)}
    model = Model(BERT, cfg)  # the bare encoder: backbone, no heads
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(args.seed), inputs))
    return jax.jit(model.apply).lower(params, inputs).compile(), [params, inputs]


def scope(op_name: str) -> str:
    """'jit(train_step)/transpose(jvp(Model))/backbone/encoder/layer_2/mlp/wi/dot_general'
    -> 'bwd backbone/encoder/layer_*/mlp' (heads: 'heads/mlm/...'); ops outside the model keep
    their last two parts."""
    direction = "bwd " if "transpose(" in op_name else ""
    parts = op_name.split("/")
    model = next((i for i, p in enumerate(parts) if re.search(r"^(?:\w+\()*Model\)*$", p)), None)
    if model is None:
        return direction + "/".join(parts[-2:])
    inside = [re.sub(r"layer_\d+", "layer_*", p) for p in parts[model + 1 : -1]]
    return direction + "/".join(inside[:4] or ["(model)"])


def profile(
    compiled, arguments: list[Any], steps: int, trace_dir: str, *, donates_state: bool
) -> tuple[dict[str, float], dict[str, str]]:
    """Microseconds per step of each HLO instruction seen in the trace, and each one's op name."""

    def run():
        nonlocal arguments
        out = compiled(*arguments)
        if donates_state:  # the train step donates its state: carry the new one forward
            arguments = [out[0], *arguments[1:]]
        return out

    jax.block_until_ready(run())  # warm-up
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(steps):
            out = run()
        jax.block_until_ready(out)
    trace = max(pathlib.Path(trace_dir).rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    events = json.loads(gzip.decompress(trace.read_bytes()))
    events = events["traceEvents"] if isinstance(events, dict) else events
    known = dict(INSTRUCTION.findall(compiled.as_text()))
    totals: collections.Counter = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and event.get("name") in known:
            totals[event["name"]] += event.get("dur", 0) / steps
    return {name: float(us) for name, us in totals.items()}, known


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser)
    parser.add_argument("--forward", action="store_true", help="the encoder forward, not a step")
    parser.add_argument("--top", type=int, default=15, help="instructions to list")
    args = common.parse_args(parser, argv)
    config = common.load_benchmark_config(args, accelerator=jax.devices()[0].platform != "cpu")
    compiled, arguments = compiled_step(args, config)
    with tempfile.TemporaryDirectory() as trace_dir:
        per_op, op_names = profile(
            compiled, arguments, args.steps, trace_dir, donates_state=not args.forward
        )
    total = sum(per_op.values()) or 1.0
    by_scope: collections.Counter = collections.Counter()
    for name, us in per_op.items():
        by_scope[scope(op_names[name])] += us
    print(f"{'ms/step':>9} {'share':>6}  instruction: op")
    for name, us in sorted(per_op.items(), key=lambda item: -item[1])[: args.top]:
        print(f"{us / 1e3:9.1f} {100 * us / total:5.1f}%  {name}: {op_names[name][-90:]}")
    print(f"\n{'ms/step':>9} {'share':>6}  scope")
    for key, us in by_scope.most_common(20):
        print(f"{us / 1e3:9.1f} {100 * us / total:5.1f}%  {key}")
    return {"total_ms": total / 1e3, "ops_ms": per_op, "scopes_ms": dict(by_scope)}


if __name__ == "__main__":
    main()
