"""Layers shared by the model families: dense, LayerNorm, attention, MLP, the layer stack.

Every parameter carries one logical axis name per dimension (`nn.with_logical_partitioning`);
activations are pinned at layer boundaries with `nn.with_logical_constraint`. The mapping from
logical names to mesh axes lives only in the config (`config.mesh.logical_axis_rules`).

A family's config dataclass is passed to these layers as `config`; they read only the fields they
need (`dtype`, `param_dtype`, `initializer_range`, `layer_norm_eps`, `hidden_size`, `num_heads`,
`intermediate_size`, `hidden_act`, `attention_dropout`, `attention_impl`, `num_layers`,
`scan_layers`, `remat_policy`), so GPT, ELECTRA or a new family reuse them unchanged.

Logical axes used:
  parameters: vocab, embed, heads, kv, mlp, position, token_type, norm, classes, layers
  activations: act_batch, act_length, act_embed, act_heads, act_kv, act_mlp, act_vocab
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def normal_init(config: Any, names: tuple[str, ...]):
    """Normal(0, config.initializer_range) with logical axis `names`."""
    return nn.with_logical_partitioning(nn.initializers.normal(config.initializer_range), names)


def word_embedding(
    config: Any, name: str, *, features: int | None = None, stddev: float | None = None
) -> nn.Embed:
    """The word embedding: an `nn.Embed` [vocab_size, features (default hidden_size)] with
    logical axes ("vocab", "embed"), N(0, stddev (default config.initializer_range))."""
    stddev = config.initializer_range if stddev is None else stddev
    return nn.Embed(
        config.vocab_size,
        config.hidden_size if features is None else features,
        dtype=config.dtype,
        param_dtype=config.param_dtype,
        embedding_init=nn.with_logical_partitioning(
            nn.initializers.normal(stddev), ("vocab", "embed")
        ),
        name=name,
    )


def token_and_position_tables(module: nn.Module, config: Any, *, word: str, position: str):
    """The word embedding (an `nn.Embed` named `word`) and the learned position table
    [max_position_embeddings, hidden] (the param `position`) of `module`, called inside its
    compact method."""
    embed = word_embedding(config, word)
    table = module.param(
        position,
        normal_init(config, ("position", "embed")),
        (config.max_position_embeddings, config.hidden_size),
        config.param_dtype,
    )
    return embed, table


def zeros_init(names: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def ones_init(names: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.ones_init(), names)


# `config.hidden_act` -> the function: exact (erf) GELU, its tanh approximation, swish (SiLU,
# Marian's opus-mt models), ReLU
ACTIVATIONS = {
    "gelu": functools.partial(nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(nn.gelu, approximate=True),
    "swish": nn.swish,
    "relu": nn.relu,
}


def activation(config: Any):
    """The activation function named by `config.hidden_act` (`ACTIVATIONS`)."""
    return ACTIVATIONS[config.hidden_act]


def layer_norm(config: Any, name: str) -> nn.LayerNorm:
    """LayerNorm with float32 statistics whatever the compute dtype, output in the compute dtype."""
    return nn.LayerNorm(
        epsilon=config.layer_norm_eps,
        dtype=config.dtype,
        param_dtype=config.param_dtype,
        force_float32_reductions=True,
        scale_init=ones_init(("norm",)),
        bias_init=zeros_init(("norm",)),
        name=name,
    )


class Dense(nn.Module):
    """A dense layer over the last `len(in_axes)` dims whose kernel is created at its true shape.

    (Flax's DenseGeneral initialises multi-dimensional kernels flat, which breaks per-dimension
    logical constraints; this keeps one logical name per real dimension.)
    """

    config: Any
    features: tuple[int, ...]
    kernel_axes: tuple[str, ...]  # logical names: input dims then output dims

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        n_in = len(self.kernel_axes) - len(self.features)
        shape = (*x.shape[x.ndim - n_in :], *self.features)
        kernel = self.param("kernel", normal_init(cfg, self.kernel_axes), shape, cfg.param_dtype)
        bias_axes = self.kernel_axes[n_in:]
        bias = self.param("bias", zeros_init(bias_axes), self.features, cfg.param_dtype)
        contract = (tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in)))
        y = jax.lax.dot_general(
            jnp.asarray(x, cfg.dtype), jnp.asarray(kernel, cfg.dtype), (contract, ((), ()))
        )
        return y + jnp.asarray(bias, cfg.dtype)


def dense(config: Any, features, axes: tuple[str, ...], name: str) -> Dense:
    """A `Dense` with `features` (an int or a tuple) and logical kernel `axes`."""
    features = (features,) if isinstance(features, int) else tuple(features)
    return Dense(config, features, axes, name=name)


def segment_positions(attention_mask: Array) -> Array:
    """Position ids [batch, length] that restart at 0 at the start of every segment.

    `attention_mask` holds segment numbers: 1 for the tokens of an ordinary row (0 for padding),
    or 1, 2, ... for the instances packed into one row. Padding keeps its absolute position, so
    an ordinary row gets 0, 1, 2, ... everywhere, as in BERT.
    """
    index = jnp.arange(attention_mask.shape[1], dtype=jnp.int32)[None, :]
    previous = jnp.pad(attention_mask[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
    starts = jax.lax.cummax(jnp.where(attention_mask != previous, index, 0), axis=1)
    return jnp.where(attention_mask > 0, index - starts, index)


def segment_mask(attention_mask: Array, *, causal: bool = False) -> Array:
    """Which keys each query sees, bool [batch, 1, length, length], from segment numbers [batch,
    length] (see `segment_positions`): the keys of its own segment (and, if `causal`, only those
    at or before it). A padding query sees every real key, as in BERT, so an ordinary row's mask
    is the usual padding mask."""
    query, key = attention_mask[:, :, None], attention_mask[:, None, :]
    mask = (key > 0) & ((query == key) | (query == 0))
    if causal:
        length = attention_mask.shape[1]
        mask = mask & jnp.tril(jnp.ones((length, length), bool))[None]
    return mask[:, None]


def attention(
    query: Array,
    key: Array,
    value: Array,
    attention_mask: Array,
    *,
    implementation: str,
    causal: bool = False,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
) -> Array:
    """Scaled dot-product attention with a padding (and optionally causal) mask.

    Args:
      query, key, value: [batch, length, heads, head_dim].
      attention_mask: [batch, length], 1 for real tokens and 0 for padding, or segment numbers
        1, 2, ... of a packed row (`segment_mask`: attention stays inside each segment).
      implementation: "xla" (`masked_attention`, explicit products) or "cudnn"
        (`jax.nn.dot_product_attention`'s flash attention). cuDNN uses the key lengths (real
        tokens per row), so it needs right-padded rows of one segment each, as unpacked batches
        are, and has no dropout.
      causal: each query sees only the keys at or before its position (decoders).
      dropout_rate, dropout_rng: dropout on the attention probabilities (training only).

    Returns:
      [batch, length, heads, head_dim].
    """
    if implementation == "cudnn" and dropout_rng is None:  # one segment per row (config checks)
        lengths = (attention_mask > 0).sum(axis=-1).astype(jnp.int32)
        return jax.nn.dot_product_attention(
            query,
            key,
            value,
            key_value_seq_lengths=lengths,
            is_causal=causal,
            implementation="cudnn",
        )
    mask = segment_mask(attention_mask, causal=causal)
    return masked_attention(query, key, value, mask, dropout_rate, dropout_rng)


def masked_attention(
    query: Array,
    key: Array,
    value: Array,
    mask: Array,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
) -> Array:
    """Softmax(q k^T / sqrt(d)) v over the keys `mask` allows, computed heads first.

    The products run on [batch, heads, length, head_dim] operands (batch dimensions leading):
    XLA's CPU backend runs them as batched matrix products, faster than the [batch, length,
    heads, head_dim] einsums of `jax.nn.dot_product_attention`'s "xla" path
    (`benchmarks/attention_cpu.py`). Logits and softmax are float32 whatever the input dtype.

    Args:
      query: [batch, q_length, heads, head_dim]; key, value: [batch, k_length, heads, head_dim].
      mask: bool, broadcastable to [batch, heads, q_length, k_length]: which keys each query sees.
      dropout_rate, dropout_rng: dropout on the probabilities when `dropout_rng` is given.

    Returns:
      [batch, q_length, heads, head_dim].
    """
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (query, key, value))
    logits = jnp.matmul(q, k.transpose(0, 1, 3, 2), preferred_element_type=jnp.float32)
    bias = jnp.where(mask, 0.0, -1e10)  # added, not selected: XLA's CPU backend fuses it better
    logits = logits * query.shape[-1] ** -0.5 + bias
    probs = jax.nn.softmax(logits, axis=-1)
    if dropout_rate > 0.0 and dropout_rng is not None:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
        probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
    return jnp.matmul(probs.astype(value.dtype), v).transpose(0, 2, 1, 3)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a padding (or causal) mask and an output projection.

    Incremental decoding (causal only): when the "cache" collection is mutable, keys, values and
    the key mask of every call are appended to a cache (`cached_key`, `cached_value` [batch,
    max_length, heads, head_dim], `cached_mask` [batch, max_length], `cache_index` []) and the
    queries attend to everything cached so far. The first such call, on a [batch, max_length]
    input, only creates the (zero) cache; `jax.eval_shape` of it gives its shapes for free.
    """

    config: Any
    causal: bool = False

    @nn.compact
    def __call__(self, x: Array, attention_mask: Array, *, deterministic: bool) -> Array:
        """[batch, length, hidden] -> [batch, length, hidden]."""
        cfg = self.config
        heads = (cfg.num_heads, cfg.hidden_size // cfg.num_heads)
        q = dense(cfg, heads, ("embed", "heads", "kv"), "query")(x)
        k = dense(cfg, heads, ("embed", "heads", "kv"), "key")(x)
        v = dense(cfg, heads, ("embed", "heads", "kv"), "value")(x)
        q, k, v = (
            nn.with_logical_constraint(t, ("act_batch", "act_length", "act_heads", "act_kv"))
            for t in (q, k, v)
        )
        if self.causal and self.is_mutable_collection("cache"):
            out = self._cached(q, k, v, attention_mask)
        else:
            use_dropout = not deterministic and cfg.attention_dropout > 0.0
            out = attention(
                q,
                k,
                v,
                attention_mask,
                implementation=cfg.attention_impl,
                causal=self.causal,
                dropout_rate=cfg.attention_dropout if use_dropout else 0.0,
                dropout_rng=self.make_rng("dropout") if use_dropout else None,
            )
        out = nn.with_logical_constraint(out, ("act_batch", "act_length", "act_heads", "act_kv"))
        return dense(cfg, cfg.hidden_size, ("heads", "kv", "embed"), "out")(out)

    def _cached(self, q: Array, k: Array, v: Array, attention_mask: Array) -> Array:
        """Appends k, v, mask [batch, n, ...] to the cache; q attends to the cache (causally)."""
        ready = self.has_variable("cache", "cached_key")
        key = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
        value = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
        mask = self.variable("cache", "cached_mask", jnp.zeros, attention_mask.shape, jnp.int32)
        index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
        if not ready:  # creating the cache: its length is the input's
            return jnp.zeros_like(q)
        i, n = index.value, q.shape[1]
        key.value = jax.lax.dynamic_update_slice(key.value, k, (0, i, 0, 0))
        value.value = jax.lax.dynamic_update_slice(value.value, v, (0, i, 0, 0))
        mask.value = jax.lax.dynamic_update_slice(
            mask.value, attention_mask.astype(jnp.int32), (0, i)
        )
        index.value = i + n
        key_pos = jnp.arange(key.value.shape[1])[None, :]
        query_pos = i + jnp.arange(n)[:, None]
        visible = (key_pos <= query_pos)[None, None] & (mask.value > 0)[:, None, None, :]
        return masked_attention(q, key.value, value.value, visible)


class Mlp(nn.Module):
    """The position-wise feed-forward block: dense, GELU, dense."""

    config: Any

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """[batch, length, hidden] -> [batch, length, hidden]."""
        cfg = self.config
        h = dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "wi")(x)
        h = activation(cfg)(h)
        h = nn.with_logical_constraint(h, ("act_batch", "act_length", "act_mlp"))
        return dense(cfg, cfg.hidden_size, ("mlp", "embed"), "wo")(h)


def _remat(cfg: Any, layer_cls):
    if cfg.remat_policy == "none":
        return layer_cls
    policy = None if cfg.remat_policy == "full" else jax.checkpoint_policies.checkpoint_dots
    return nn.remat(layer_cls, policy=policy, prevent_cse=not cfg.scan_layers, static_argnums=(3,))


class LayerStack(nn.Module):
    """`config.num_layers` layers of `layer_cls`, unrolled (`layer_{i}`) or scanned (`layers`,
    `config.scan_layers`), each rematerialised by `config.remat_policy`.

    `layer_cls(config)` is called as `layer(x, attention_mask, deterministic) -> (x, None)`.
    """

    config: Any
    layer_cls: Any

    @nn.compact
    def __call__(self, x: Array, attention_mask: Array, *, deterministic: bool) -> Array:
        cfg = self.config
        layer_cls = _remat(cfg, self.layer_cls)
        if cfg.scan_layers:
            stack = nn.scan(
                layer_cls,
                variable_axes={"params": 0, "cache": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast),
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x, _ = stack(cfg, name="layers")(x, attention_mask, deterministic)
            return x
        for i in range(cfg.num_layers):
            x, _ = layer_cls(cfg, name=f"layer_{i}")(x, attention_mask, deterministic)
        return x


def gather_positions(x: Array, positions: Array) -> Array:
    """[batch, length, hidden], [batch, n] -> [batch, n, hidden]."""
    return jnp.take_along_axis(x, positions[..., None].astype(jnp.int32), axis=1)


def _tree_map(fn, *trees):
    if isinstance(trees[0], Mapping):
        return {k: _tree_map(fn, *(t[k] for t in trees)) for k in trees[0]}
    return fn(*trees)


def _replace_at(params: Mapping, path: tuple[str, ...], value: Any) -> dict:
    if not path:
        return value
    return {**params, path[0]: _replace_at(params[path[0]], path[1:], value)}


def _at(params: Mapping, path: tuple[str, ...]) -> Any:
    for name in path:
        params = params[name]
    return params


def _present(params: Mapping, path: tuple[str, ...]) -> bool:
    for name in path:
        if not isinstance(params, Mapping) or name not in params:
            return False
        params = params[name]
    return True


def stack_layer_params(params: Mapping, paths: Sequence[tuple[str, ...]], num_layers: int) -> dict:
    """Host parameters of unrolled `LayerStack`s at `paths` (`layer_{i}`) -> their scanned
    layout (`layers`, a leading layer axis); a path absent from `params` is skipped."""
    for path in paths:
        if _present(params, path):
            stack = _at(params, path)
            count = sum(1 for k in stack if k.startswith("layer_")) or num_layers  # stacks differ
            layers = [stack[f"layer_{i}"] for i in range(count)]
            stacked = _tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *layers)
            params = _replace_at(params, path, {"layers": stacked})
    return dict(params)


def unstack_layer_params(
    params: Mapping, paths: Sequence[tuple[str, ...]], num_layers: int
) -> dict:
    """The inverse of `stack_layer_params`."""
    for path in paths:
        if _present(params, path):
            stacked = _at(params, path)["layers"]
            count = len(jax.tree.leaves(stacked)[0])  # each stack's own depth
            layers = {
                f"layer_{i}": _tree_map(lambda x, i=i: np.asarray(x)[i], stacked)
                for i in range(count)
            }
            params = _replace_at(params, path, layers)
    return dict(params)
