"""One GPT training step of bertjax against `transformers.GPT2LMHeadModel` at the same size.

Both sides get the config's decoder (layers, widths, vocabulary, positions; dropout as configured),
the same batch of full `lm_blocks` rows (random ids, every token real, one document per row) and
take one AdamW step of next-token cross-entropy: forward + backward + update. bertjax runs its real
jitted pretraining step (`compile_steps` with the `causal_lm` objective); transformers runs
`GPT2LMHeadModel(input_ids, labels=input_ids)` with SDPA attention and torch AdamW under the same
schedule. Timed side by side in one process, interleaved, the median of `--steps` steps after
`--warmup` untimed ones (JAX after compilation, on `block_until_ready`):

  python benchmarks/gpt_step.py --config configs/gpt/mini.py --batch 16 --seq 128

Model FLOPs per sequence are the causal-LM objective's `flops_per_sequence`: 3 x (the decoder's
matmuls + the tied LM head on every position), causal attention counted as computed (the full
S x S square on XLA; see `bertjax.models.gpt.forward_flops`). Both sides do that work.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Sequence

import jax
import numpy as np

from bertjax.models import model_config
from bertjax.objectives import make_objective

try:
    from benchmarks import common, torch_peer, train_throughput
    from benchmarks.rnn_step import median_ms
except ImportError:  # run as a script: this folder is on sys.path
    import common
    import torch_peer
    import train_throughput
    from rnn_step import median_ms


def lm_batch(rs: np.random.Generator, batch: int, length: int, vocab_size: int) -> np.ndarray:
    """Full blocks of random ids in [1, vocab_size) (0 is <|endoftext|> in a trained BPE)."""
    return rs.integers(1, vocab_size, size=(batch, length), dtype=np.int32)


def transformers_step(config, ids: np.ndarray) -> Callable[[], None]:
    """A `GPT2LMHeadModel` AdamW step on the same batch, as a no-argument callable."""
    import torch
    import transformers

    from bertjax.interop import hf_gpt2

    _, cfg = model_config(config.model)
    hf_config = transformers.GPT2Config(**hf_gpt2.config_to_hf(cfg), attn_implementation="sdpa")
    model = transformers.GPT2LMHeadModel(hf_config).train()
    optimizer, scheduler = torch_peer.make_optimizer(model, config, "cpu")
    inputs = torch.from_numpy(ids.astype(np.int64))

    def run():
        optimizer.zero_grad(set_to_none=True)
        loss = model(input_ids=inputs, labels=inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip_norm)
        optimizer.step()
        scheduler.step()

    return run


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(common.REPO / "configs" / "gpt" / "mini.py"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    args, extra = parser.parse_known_args(argv)
    args.overrides = [item for item in extra if item.startswith("--config.")]
    if len(args.overrides) != len(extra):
        parser.error(f"unrecognized arguments: {' '.join(set(extra) - set(args.overrides))}")

    import torch

    from bertjax.config import load_config

    config = load_config(args.config, args.overrides)
    config.model.vocab_size = args.vocab_size
    config.model.eos_token_id = 0  # as in a BPE trained here
    config.data.max_seq_len = args.seq
    config.train.global_batch_size = args.batch
    config.train.num_steps = max(1000, 2 * config.optim.warmup_steps)
    ids = lm_batch(np.random.default_rng(0), args.batch, args.seq, args.vocab_size)
    local = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    family, cfg = model_config(config.model)
    with tempfile.TemporaryDirectory() as tmp:
        objective = make_objective(config, common.write_vocab(cfg.vocab_size, tmp))
    flops = args.batch * objective.flops_per_sequence(family, cfg, args.seq)
    steps = {
        "bertjax (jit)": train_throughput.step_callable(config, local),
        "transformers": transformers_step(config, ids),
    }
    print(
        f"GPT L{cfg.num_layers} H{cfg.hidden_size} A{cfg.num_heads} V{cfg.vocab_size}, batch "
        f"{args.batch}, length {args.seq}, {flops / args.batch / 1e9:.2f} GFLOP/sequence; "
        f"{jax.devices()[0].platform}, {os.cpu_count()} CPUs, jax {jax.__version__}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads); load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    times = median_ms(steps, args.warmup, args.steps)
    print(f"{'':16}{'ms/step':>10}{'seq/s':>10}{'GFLOP/s':>10}")
    for name, ms in times.items():
        print(f"{name:16}{ms:10.1f}{args.batch / ms * 1e3:10.1f}{flops / ms / 1e6:10.2f}")
    return times


if __name__ == "__main__":
    main()
