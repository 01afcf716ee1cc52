"""The recurrent encoder family `rnn`: a bidirectional LSTM or GRU stack, the pre-BERT baseline.

Embeddings (word + optional segment), dropout, `num_layers` bidirectional recurrent layers with
dropout between them, then one output projection to `hidden_size` (the width the heads expect).

Padding: rows are right-padded (real tokens first, `attention_mask` 1 for real tokens). The
forward direction keeps its state over padding and emits zeros there; the backward direction
reads each row reversed within its own length (a per-row index gather), so it starts at the row's
last real token. This is what `torch.nn.utils.rnn.pack_padded_sequence` computes, and the
parameters are torch's (`weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}` and
`_reverse`, gate order LSTM i, f, g, o and GRU r, z, n), so `params_from_torch` loads a
`torch.nn.LSTM`/`torch.nn.GRU(bidirectional=True)` and gives its outputs.

Both directions of a layer run in one `jax.lax.scan` over time (a leading direction axis of 2).
Gate pre-activations from the inputs are one matmul over the whole sequence before the scan; the
scan does only the recurrent matmul and the cell. Cell arithmetic and the carried state are
float32 whatever `dtype` is; matmuls run in `dtype`.

Logical axes used:
  parameters: vocab, embed, token_type (as BERT), and
    rnn_in     input features of a recurrent layer (embedding_size, or 2 x rnn_size) and of
               the output projection (2 x rnn_size)
    rnn_gates  the gate index (4 for LSTM, 3 for GRU)
    rnn_hidden the state unit a gate row produces (rnn_size)
    rnn_state  the previous state a recurrent kernel reads (rnn_size)
  activations: act_batch, act_length, act_embed
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bertjax.models.bert import DTYPES, HIDDEN_ACTS
from bertjax.models.heads import ENCODER_HEADS
from bertjax.models.registry import (
    FILL_MASK_STEP,
    FINETUNE_STEP,
    Family,
    check_positive,
    fail,
    register,
)

Array = jax.Array

CELLS = {"lstm": 4, "gru": 3}  # cell -> number of gates
POOLINGS = ("final", "mean", "max")
ACT = ("act_batch", "act_length", "act_embed")


@dataclasses.dataclass(frozen=True)
class RnnConfig:
    """Architecture and numerics of a bidirectional recurrent encoder (`config.model`)."""

    vocab_size: int = 30522
    hidden_size: int = 256  # output projection width: what the heads see
    cell: str = "lstm"  # "lstm" or "gru"
    num_layers: int = 2
    rnn_size: int = 256  # state size per direction
    type_vocab_size: int = 2  # segment embeddings for sentence pairs; 0: none
    embedding_size: int = 256  # == hidden_size to tie an MLM decoder with `word_embeddings.attend`
    hidden_dropout: float = 0.1  # on the embeddings, between recurrent layers, and in the heads
    hidden_act: str = "gelu"  # the MLM head's activation ("gelu" or "gelu_tanh")
    layer_norm_eps: float = 1e-12  # the MLM head's LayerNorm
    pooling: str = "final"  # "final" states, masked "mean" or masked "max" of the top layer
    initializer_range: float = 0.02  # stddev of the embeddings and the output projection
    pad_token_id: int = 0  # id of [PAD] for the data and heads; `attention_mask` marks padding
    dtype: str = "float32"  # compute dtype of the matmuls
    param_dtype: str = "float32"  # storage dtype

    @property
    def num_gates(self) -> int:
        return CELLS[self.cell]

    def __post_init__(self):
        validate(self)


def validate(cfg: RnnConfig) -> None:
    """Checks an `RnnConfig`; raises ValueError naming the field and the allowed values."""
    check_positive(cfg, ("vocab_size", "hidden_size", "num_layers", "rnn_size", "embedding_size"))
    if not isinstance(cfg.type_vocab_size, int) or cfg.type_vocab_size < 0:
        fail("type_vocab_size", cfg.type_vocab_size, "must be an integer >= 0 (0: no segments)")
    if cfg.cell not in CELLS:
        fail("cell", cfg.cell, f"allowed values are {tuple(CELLS)}")
    if cfg.pooling not in POOLINGS:
        fail("pooling", cfg.pooling, f"allowed values are {POOLINGS}")
    if not 0.0 <= cfg.hidden_dropout < 1.0:
        fail("hidden_dropout", cfg.hidden_dropout, "must be in [0, 1)")
    if cfg.hidden_act not in HIDDEN_ACTS:
        fail("hidden_act", cfg.hidden_act, f"allowed values are {HIDDEN_ACTS}")
    if not cfg.initializer_range > 0:
        fail("initializer_range", cfg.initializer_range, "must be positive")
    for name in ("dtype", "param_dtype"):
        if getattr(cfg, name) not in DTYPES:
            fail(name, getattr(cfg, name), f"allowed values are {DTYPES}")
    if not 0 <= cfg.pad_token_id < cfg.vocab_size:
        fail("pad_token_id", cfg.pad_token_id, f"must be in [0, vocab_size={cfg.vocab_size})")


def _normal(cfg: RnnConfig, names: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(cfg.initializer_range), names)


def _torch_uniform(cfg: RnnConfig, names: tuple[str, ...]):
    """torch's default recurrent init, U(-1/sqrt(rnn_size), 1/sqrt(rnn_size)), for all four
    tensors of a direction."""
    limit = cfg.rnn_size**-0.5

    def init(key, shape, dtype):
        return jax.random.uniform(key, shape, dtype, -limit, limit)

    return nn.with_logical_partitioning(init, names)


def reverse_index(lengths: Array, length: int) -> Array:
    """Per-row positions that reverse each row within its own length, [batch, length].

    Row b maps t -> lengths[b] - 1 - t for t < lengths[b] and keeps padding in place, so
    gathering with it twice is the identity and the reversed real tokens stay first.
    """
    t = jnp.arange(length, dtype=jnp.int32)[None, :]
    lengths = lengths[:, None]
    return jnp.where(t < lengths, lengths - 1 - t, t)


def _gather_time(x: Array, index: Array) -> Array:
    """x [batch, length, ...] gathered along length by index [batch, length]."""
    index = index.reshape(index.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index, axis=1)


def _lstm_cell(carry: tuple[Array, Array], xg: Array, hg: Array) -> tuple[Array, Array]:
    """One LSTM step. carry (h, c) [..., rnn]; xg, hg [..., 4, rnn] gate pre-activations from the
    input and the state (each with its bias), gates in torch's order i, f, g, o."""
    gates = xg + hg
    i, f, o = (jax.nn.sigmoid(gates[..., k, :]) for k in (0, 1, 3))
    c = f * carry[1] + i * jnp.tanh(gates[..., 2, :])
    return o * jnp.tanh(c), c


def _gru_cell(carry: tuple[Array], xg: Array, hg: Array) -> tuple[Array]:
    """One GRU step. carry (h,) [..., rnn]; xg, hg [..., 3, rnn] in torch's order r, z, n; the
    reset gate scales the state's candidate term W_hn h + b_hn, as torch does."""
    r = jax.nn.sigmoid(xg[..., 0, :] + hg[..., 0, :])
    z = jax.nn.sigmoid(xg[..., 1, :] + hg[..., 1, :])
    n = jnp.tanh(xg[..., 2, :] + r * hg[..., 2, :])
    return ((1.0 - z) * n + z * carry[0],)


CELL_FNS: dict[str, Callable] = {"lstm": _lstm_cell, "gru": _gru_cell}


def run_recurrence(
    cell: str, xg: Array, mask: Array, w_hh: Array, b_hh: Array, dtype: Any
) -> tuple[Array, Array]:
    """Scans a cell over time for a stack of independent directions.

    Args:
      cell: "lstm" or "gru".
      xg: [dirs, batch, length, gates, rnn] input gate pre-activations (float32, bias included).
      mask: [batch, length] bool, real tokens first; the state holds still over padding.
      w_hh: [dirs, rnn_state, gates, rnn] recurrent kernels; b_hh: [dirs, gates, rnn].
      dtype: compute dtype of the recurrent matmul (accumulated in float32).

    Returns:
      outputs [dirs, batch, length, rnn] (float32, zero at padding) and the final h [dirs,
      batch, rnn]: the state after each row's last real step.
    """
    dirs, batch, _, _, rnn = xg.shape
    cell_fn = CELL_FNS[cell]
    w_hh = jnp.asarray(w_hh, dtype)
    b_hh = jnp.asarray(b_hh, jnp.float32)[:, None]  # [dirs, 1, gates, rnn]

    def step(carry, inputs):
        xg_t, m_t = inputs  # [dirs, batch, gates, rnn], [batch]
        h = jnp.asarray(carry[0], dtype)
        hg = jnp.einsum("dbs,dsgr->dbgr", h, w_hh, preferred_element_type=jnp.float32) + b_hh
        new = cell_fn(carry, xg_t, hg)
        keep = m_t[None, :, None]
        carry = tuple(jnp.where(keep, n, o) for n, o in zip(new, carry, strict=True))
        return carry, jnp.where(keep, new[0], 0.0)

    zeros = jnp.zeros((dirs, batch, rnn), jnp.float32)
    init = (zeros, zeros) if cell == "lstm" else (zeros,)
    time_major = (jnp.moveaxis(xg, 2, 0), jnp.moveaxis(mask, 1, 0))
    carry, ys = jax.lax.scan(step, init, time_major)
    return jnp.moveaxis(ys, 0, 2), carry[0]


class BiRnnLayer(nn.Module):
    """One bidirectional recurrent layer with torch's parameters per direction.

    Parameters, prefixed "forward_" or "backward_": w_ih [in, gates, rnn], w_hh [rnn, gates,
    rnn], b_ih and b_hh [gates, rnn] (torch's weight_ih etc. transposed and split by gate).
    """

    config: RnnConfig

    def _direction(self, name: str, features: int) -> dict[str, Array]:
        cfg, g, r = self.config, self.config.num_gates, self.config.rnn_size
        shapes = {
            "w_ih": ((features, g, r), ("rnn_in", "rnn_gates", "rnn_hidden")),
            "w_hh": ((r, g, r), ("rnn_state", "rnn_gates", "rnn_hidden")),
            "b_ih": ((g, r), ("rnn_gates", "rnn_hidden")),
            "b_hh": ((g, r), ("rnn_gates", "rnn_hidden")),
        }
        return {
            key: self.param(f"{name}_{key}", _torch_uniform(cfg, names), shape, cfg.param_dtype)
            for key, (shape, names) in shapes.items()
        }

    @nn.compact
    def __call__(self, x: Array, mask: Array, rev: Array) -> tuple[Array, Array]:
        """Runs both directions.

        Args:
          x: [batch, length, in] inputs.
          mask: [batch, length] bool, real tokens first.
          rev: [batch, length] `reverse_index` of the rows.

        Returns:
          outputs [batch, length, 2 * rnn] (forward then backward, zero at padding, float32)
          and final states [batch, 2 * rnn]: forward at the last real token, backward at the first.
        """
        cfg = self.config
        fwd, bwd = (self._direction(name, x.shape[-1]) for name in ("forward", "backward"))
        stacked = {k: jnp.stack([fwd[k], bwd[k]]) for k in fwd}
        x = jnp.asarray(x, cfg.dtype)
        both = jnp.stack([x, _gather_time(x, rev)])  # [2, batch, length, in]
        w_ih = jnp.asarray(stacked["w_ih"], cfg.dtype)
        xg = jnp.einsum("dbli,digr->dblgr", both, w_ih, preferred_element_type=jnp.float32)
        xg = xg + jnp.asarray(stacked["b_ih"], jnp.float32)[:, None, None]
        ys, final = run_recurrence(cfg.cell, xg, mask, stacked["w_hh"], stacked["b_hh"], cfg.dtype)
        outputs = jnp.concatenate([ys[0], _gather_time(ys[1], rev)], axis=-1)
        return outputs, jnp.concatenate([final[0], final[1]], axis=-1)


class RnnEncoder(nn.Module):
    """`num_layers` bidirectional layers, dropout between them (not after the last, as torch)."""

    config: RnnConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array, *, deterministic: bool) -> tuple[Array, Array]:
        """[batch, length, embedding] inputs, [batch, length] mask -> outputs [batch, length,
        2 * rnn] (in `dtype`, zero at padding) and the top layer's final states [batch, 2 * rnn]."""
        cfg = self.config
        mask = mask > 0
        rev = reverse_index(mask.sum(axis=1, dtype=jnp.int32), mask.shape[1])
        final = None
        for k in range(cfg.num_layers):
            if k > 0:
                x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
            x, final = BiRnnLayer(cfg, name=f"layer_{k}")(x, mask, rev)
            x = nn.with_logical_constraint(jnp.asarray(x, cfg.dtype), ACT)
        return x, final


def pool(outputs: Array, final: Array, mask: Array, pooling: str) -> Array:
    """[batch, length, features] outputs, [batch, features] final states, [batch, length] mask
    -> [batch, features]: the final states, or the mean or max over each row's real tokens
    (every row needs one; a row of padding only pools to 0 for "mean", the dtype's min for "max")."""
    if pooling == "final":
        return final
    real = (mask > 0)[..., None]
    if pooling == "mean":
        count = jnp.maximum(real.sum(axis=1), 1).astype(jnp.float32)
        return (jnp.where(real, outputs, 0).sum(axis=1, dtype=jnp.float32) / count).astype(
            outputs.dtype
        )
    return jnp.where(real, outputs, jnp.finfo(outputs.dtype).min).max(axis=1)


class RnnBackbone(nn.Module):
    """The `rnn` family body: embeddings, bidirectional stack, pooling, projection to hidden."""

    config: RnnConfig

    def _embed(self, inputs: Mapping[str, Array], deterministic: bool) -> tuple[Array, nn.Embed]:
        cfg = self.config
        word = nn.Embed(
            cfg.vocab_size,
            cfg.embedding_size,
            dtype=cfg.dtype,
            param_dtype=cfg.param_dtype,
            embedding_init=_normal(cfg, ("vocab", "embed")),
            name="word_embeddings",
        )
        ids = inputs["input_ids"]
        x = word(ids)
        if cfg.type_vocab_size > 0:
            table = self.param(
                "token_type_embeddings",
                _normal(cfg, ("token_type", "embed")),
                (cfg.type_vocab_size, cfg.embedding_size),
                cfg.param_dtype,
            )
            types = inputs.get("token_type_ids")
            types = jnp.zeros_like(ids) if types is None else types
            x = x + jnp.asarray(table, cfg.dtype)[types]
        x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
        return nn.with_logical_constraint(x, ACT), word

    @nn.compact
    def __call__(self, inputs: Mapping[str, Array], *, deterministic: bool = True) -> dict:
        """Runs the encoder.

        Args:
          inputs: "input_ids", "attention_mask" (1 real, 0 padding; right-padded) and optionally
            "token_type_ids", all [batch, length] integers.
          deterministic: False enables dropout (needs a "dropout" rng).

        Returns:
          "sequence_output" [batch, length, hidden] (at padding: the projection's bias, the
          image of the stack's zeros), "pooled_output" [batch, hidden] (the projection of
          `pool` of the top layer) and "word_embeddings" (the nn.Embed; tying a decoder with
          `.attend` needs embedding_size == hidden_size).
        """
        cfg = self.config
        mask = inputs["attention_mask"]
        x, word = self._embed(inputs, deterministic)
        outputs, final = RnnEncoder(cfg, name="encoder")(x, mask, deterministic=deterministic)
        project = nn.Dense(
            cfg.hidden_size,
            dtype=cfg.dtype,
            param_dtype=cfg.param_dtype,
            kernel_init=_normal(cfg, ("rnn_in", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
            name="projection",
        )
        pooled = pool(outputs, jnp.asarray(final, cfg.dtype), mask, cfg.pooling)
        return {
            "sequence_output": nn.with_logical_constraint(project(outputs), ACT),
            "pooled_output": project(pooled),
            "word_embeddings": word,
        }


def params_from_torch(state_dict: Mapping[str, Any], cfg: RnnConfig) -> dict:
    """The "encoder" parameter subtree from a bidirectional `torch.nn.LSTM`/`torch.nn.GRU`.

    Args:
      state_dict: numpy arrays (`{k: v.numpy() for k, v in rnn.state_dict().items()}`) by
        torch's names: weight_ih_l{k}[_reverse]
        [gates * rnn, in], weight_hh_l{k}[_reverse] [gates * rnn, rnn], bias_ih_l{k}[_reverse],
        bias_hh_l{k}[_reverse] [gates * rnn], for k < cfg.num_layers.
      cfg: the config (cell, num_layers, rnn_size must match the torch module).

    Returns:
      {"layer_k": {"forward_w_ih": [in, gates, rnn], ...}} for `RnnBackbone`'s "encoder" (or an
      `RnnEncoder` on its own), in cfg.param_dtype.
    """
    g, r = cfg.num_gates, cfg.rnn_size
    as_array = lambda name: jnp.asarray(np.asarray(state_dict[name]), cfg.param_dtype)
    params = {}
    for k in range(cfg.num_layers):
        layer = {}
        for direction, suffix in (("forward", ""), ("backward", "_reverse")):
            w_ih, w_hh = (as_array(f"weight_{m}_l{k}{suffix}") for m in ("ih", "hh"))
            layer[f"{direction}_w_ih"] = w_ih.T.reshape(w_ih.shape[1], g, r)
            layer[f"{direction}_w_hh"] = w_hh.T.reshape(r, g, r)
            for m in ("ih", "hh"):
                layer[f"{direction}_b_{m}"] = as_array(f"bias_{m}_l{k}{suffix}").reshape(g, r)
        params[f"layer_{k}"] = layer
    return params


def forward_flops_per_sequence(cfg: RnnConfig, seq_len: int) -> float:
    """Matmul FLOPs (2 x multiply-adds) of one forward pass over one sequence of `seq_len`.

    Per token, layer and direction: 2 G R (in + R) for the input and recurrent kernels (G gates,
    R = rnn_size, in = embedding_size for layer 0 and 2 R above); then 2 (2 R) H per token for
    the output projection and once more for the pooled vector. Embedding lookups, the cell's
    elementwise arithmetic and biases are not counted; padding tokens are (the scan runs them).
    Training (forward + backward) is about 3x this.
    """
    g, r, h = cfg.num_gates, cfg.rnn_size, cfg.hidden_size
    recurrent = 0
    for k in range(cfg.num_layers):
        features = cfg.embedding_size if k == 0 else 2 * r
        recurrent += 2 * 2 * g * r * (features + r)  # two directions
    projection = 2 * 2 * r * h
    return float(seq_len * (recurrent + projection) + projection)


RNN = register(
    Family(
        name="rnn",
        config_cls=RnnConfig,
        backbone=RnnBackbone,
        heads=ENCODER_HEADS,
        input_fields=("input_ids", "token_type_ids", "attention_mask"),
        forward_flops=forward_flops_per_sequence,
        stack_paths=(),  # its own recurrent stack, no LayerStack to relayout
        pretraining_heads=("mlm", "nsp"),
        defaults={
            "objective": "mlm",
            "data.tokenizer": "wordpiece",
            "data.instances": "nsp_pairs",
            "data.lowercase": True,
            "data.mask_token_prob": 0.8,
            "data.random_token_prob": 0.1,
            # as wide as the output projection, so the MLM decoder ties to the embedding
            "model.embedding_size": lambda c: c["model"]["hidden_size"] or 256,
            "model.rnn_size": lambda c: c["model"]["hidden_size"] or 256,
        },
        next_steps=(FILL_MASK_STEP, FINETUNE_STEP),
    )
)
