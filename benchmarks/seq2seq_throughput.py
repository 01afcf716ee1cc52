"""One Transformer encoder-decoder training step of bertjax (`marian`) against
`transformers.MarianMTModel` at the same size, on the CPU.

Both sides get the config's model (layers, widths, heads, vocabulary, swish, tied embeddings;
dropout as configured) and the same batch of random translation pairs (`synthetic.seq2seq_batch`:
random source and target lengths, right-padded) and take one AdamW step of target cross-entropy
(label smoothing off on both sides): forward + backward + update. bertjax runs its real jitted
pretraining step (`compile_steps` with the `seq2seq` objective); transformers runs
`MarianMTModel(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, labels)` with
SDPA attention and torch AdamW under the same schedule. Timed side by side in one process,
interleaved, the median of `--steps` steps after `--warmup` untimed ones (JAX after compilation,
on `block_until_ready`):

  python benchmarks/seq2seq_throughput.py --config configs/seq2seq/ko_en_transformer.py \
      --batch 32 --seq 48

Model FLOPs per pair are the seq2seq objective's `flops_per_sequence` at `--seq` (source and
target alike): 3 x (encoder + decoder matmuls + the LM head on every target position).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Sequence

import jax
import numpy as np

from bertjax.data import synthetic
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


def transformers_step(config, batch: dict[str, np.ndarray]) -> Callable[[], None]:
    """A `MarianMTModel` AdamW step on the same batch, as a no-argument callable."""
    import torch
    import transformers

    from bertjax.interop import hf_marian

    _, cfg = model_config(config.model)
    hf_config = transformers.MarianConfig(**hf_marian.config_to_hf(cfg), attn_implementation="sdpa")
    model = transformers.MarianMTModel(hf_config).train()
    optimizer, scheduler = torch_peer.make_optimizer(model, config, "cpu")
    inputs = {k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()}

    def run():
        optimizer.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip_norm)
        optimizer.step()
        scheduler.step()

    return run


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = common.REPO / "configs" / "seq2seq" / "ko_en_transformer.py"
    parser.add_argument("--config", default=str(default))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=48, help="source and target length")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    args, extra = parser.parse_known_args(argv)
    overrides = [item for item in extra if item.startswith("--config.")]
    if len(overrides) != len(extra):
        parser.error(f"unrecognized arguments: {' '.join(set(extra) - set(overrides))}")

    import torch

    from bertjax.config import load_config

    config = load_config(args.config, overrides)
    config.seq2seq.label_smoothing = 0.0  # MarianMTModel's loss has none
    config.data.max_seq_len = config.data.max_target_len = args.seq
    config.train.global_batch_size = args.batch
    config.train.num_steps = max(1000, 2 * config.optim.warmup_steps)
    family, cfg = model_config(config.model)
    rs = np.random.default_rng(0)
    batch = synthetic.seq2seq_batch(rs, args.batch, args.seq, args.seq, cfg.vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        objective = make_objective(config, common.write_vocab(cfg.vocab_size, tmp))
    flops = args.batch * objective.flops_per_sequence(family, cfg, args.seq)
    steps = {
        "bertjax (jit)": train_throughput.step_callable(config, batch),
        "transformers": transformers_step(config, batch),
    }
    print(
        f"Marian L{cfg.num_layers}+{cfg.decoder_layers} H{cfg.hidden_size} A{cfg.num_heads} "
        f"F{cfg.intermediate_size} V{cfg.vocab_size}, batch {args.batch}, source and target "
        f"{args.seq}, {flops / args.batch / 1e9:.2f} GFLOP/pair; {jax.devices()[0].platform}, "
        f"{os.cpu_count()} CPUs, jax {jax.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); load average {os.getloadavg()[0]:.1f}"
    )
    times = median_ms(steps, args.warmup, args.steps)
    print(f"{'':16}{'ms/step':>10}{'pairs/s':>10}{'GFLOP/s':>10}")
    for name, ms in times.items():
        print(f"{name:16}{ms:10.1f}{args.batch / ms * 1e3:10.1f}{flops / ms / 1e6:10.2f}")
    return times


if __name__ == "__main__":
    main()
