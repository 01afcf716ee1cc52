"""One training step of bertjax's bidirectional recurrent stack against `torch.nn.LSTM`/`GRU`.

Both sides get the same sizes, the same right-padded batch of ragged rows (lengths uniform in
[length/2, length]) and the same toy loss (mean square of the outputs over real tokens), and take
one Adam step: forward + backward + update. Timed side by side in one process, interleaved, the
median of `--steps` steps after `--warmup` untimed ones (JAX: after compilation,
`block_until_ready`).

  bertjax     `RnnEncoder` under `jax.jit` (both directions in one `lax.scan`; padding masked)
  torch packed  `pack_padded_sequence(enforce_sorted=False)`: the same function as bertjax
  torch padded  the padded batch as is: less exact (the backward direction reads padding first)
                but what many users run

  python benchmarks/rnn_step.py --cell lstm --layers 2 --rnn_size 256 --batch 32 --length 128

Model FLOPs are 3 x `forward_flops_per_sequence` of the stack (no output projection), padding
included.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np


def median_ms(steps: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, float]:
    """Median milliseconds per call of each step, timed interleaved (one call of each in turn),
    so that load from other processes falls on all of them alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def jax_step(args, x: np.ndarray, mask: np.ndarray) -> Callable[[], None]:
    """A jitted Adam step of `RnnEncoder`, compiled, as a no-argument callable."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    from bertjax.models.rnn import RnnEncoder

    cfg = _rnn_config(args)
    model = RnnEncoder(cfg)
    x, mask = jnp.asarray(x), jnp.asarray(mask)
    params = jax.jit(model.init, static_argnames="deterministic")(
        jax.random.key(0), x, mask, deterministic=True
    )
    params = nn.meta.unbox(params)
    optimizer = optax.adam(1e-3)

    def loss_fn(p):
        out, _ = model.apply(p, x, mask, deterministic=True)
        return jnp.sum(out.astype(jnp.float32) ** 2) / jnp.sum(mask)

    @jax.jit
    def step(p, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    state = [params, optimizer.init(params)]
    start = time.perf_counter()
    jax.block_until_ready(step(*state))
    print(f"jax compile + first step: {time.perf_counter() - start:.1f} s")

    def run():
        state[0], state[1], loss = step(*state)
        jax.block_until_ready(loss)

    return run


def torch_step(args, x: np.ndarray, lengths: np.ndarray, packed: bool) -> Callable[[], None]:
    """An Adam step of a bidirectional torch LSTM/GRU, packed or padded, as a callable."""
    import torch

    kind = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[args.cell]
    rnn = kind(x.shape[-1], args.rnn_size, args.layers, batch_first=True, bidirectional=True)
    optimizer = torch.optim.Adam(rnn.parameters(), lr=1e-3)
    inputs, lens = torch.from_numpy(x), torch.from_numpy(lengths)
    real = (torch.arange(x.shape[1])[None] < lens[:, None]).float()[..., None]
    utils = torch.nn.utils.rnn

    def run():
        optimizer.zero_grad(set_to_none=True)
        if packed:
            seq = utils.pack_padded_sequence(inputs, lens, batch_first=True, enforce_sorted=False)
            out, _ = rnn(seq)
            out, _ = utils.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        else:
            out, _ = rnn(inputs)
        loss = ((out * real) ** 2).sum() / real.sum()
        loss.backward()
        optimizer.step()

    return run


def _rnn_config(args):
    from bertjax.models.rnn import RnnConfig

    size = args.embedding_size
    return RnnConfig(
        vocab_size=8,
        hidden_size=size,
        embedding_size=size,
        cell=args.cell,
        num_layers=args.layers,
        rnn_size=args.rnn_size,
        hidden_dropout=0.0,
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm", choices=("lstm", "gru"))
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rnn_size", type=int, default=256)
    parser.add_argument("--embedding_size", type=int, default=256, help="input features")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: its default")
    args = parser.parse_args(argv)

    import jax
    import torch

    from bertjax.models.rnn import forward_flops_per_sequence

    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    lengths = rng.integers(args.length // 2, args.length + 1, size=args.batch).astype(np.int64)
    lengths[0] = args.length
    mask = (np.arange(args.length)[None] < lengths[:, None]).astype(np.int32)
    x = rng.normal(size=(args.batch, args.length, args.embedding_size)).astype(np.float32)
    x *= mask[..., None]

    cfg = _rnn_config(args)
    projection = 2 * 2 * cfg.rnn_size * cfg.hidden_size * (args.length + 1)
    flops = 3 * args.batch * (forward_flops_per_sequence(cfg, args.length) - projection)
    steps = {
        "bertjax (jit)": jax_step(args, x, mask),
        "torch packed": torch_step(args, x, lengths, packed=True),
        "torch padded": torch_step(args, x, lengths, packed=False),
    }
    print(
        f"Bi{args.cell.upper()} x{args.layers}, rnn {args.rnn_size}, in {args.embedding_size}, "
        f"batch {args.batch}, length {args.length}; {jax.devices()[0].platform}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"jax {jax.__version__}; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'':16}{'ms/step':>10}{'seq/s':>10}{'GFLOP/s':>10}")
    for name, ms in median_ms(steps, args.warmup, args.steps).items():
        print(f"{name:16}{ms:10.1f}{args.batch / ms * 1e3:10.1f}{flops / ms / 1e6:10.2f}")


if __name__ == "__main__":
    main()
