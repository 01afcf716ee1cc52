"""BERT in Flax Linen: embeddings, self-attention, MLP, post-LN encoder layer, encoder, pooler, heads.

Every parameter carries one logical axis name per dimension (`nn.with_logical_partitioning`);
activations are pinned at layer boundaries with `nn.with_logical_constraint`. The mapping from
logical names to mesh axes lives only in the config (`config.mesh.logical_axis_rules`).

Logical axes used:
  parameters: vocab, embed, heads, kv, mlp, position, token_type, norm, classes, layers
  activations: act_batch, act_length, act_embed, act_heads, act_kv, act_mlp, act_vocab
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax.config import BertConfig

Array = jax.Array


def _init(cfg: BertConfig, names: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(cfg.initializer_range), names)


def _zeros(names: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def _ones(names: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.ones_init(), names)


def _activation(cfg: BertConfig):
    return functools.partial(nn.gelu, approximate=cfg.hidden_act == "gelu_tanh")


def _layer_norm(cfg: BertConfig, name: str) -> nn.LayerNorm:
    # Statistics in float32 whatever the compute dtype; output cast back to the compute dtype.
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        force_float32_reductions=True,
        scale_init=_ones(("norm",)),
        bias_init=_zeros(("norm",)),
        name=name,
    )


class Dense(nn.Module):
    """A dense layer over the last `len(in_axes)` dims whose kernel is created at its true shape.

    (Flax's DenseGeneral initialises multi-dimensional kernels flat, which breaks per-dimension
    logical constraints; this keeps one logical name per real dimension.)
    """

    config: BertConfig
    features: tuple[int, ...]
    kernel_axes: tuple[str, ...]  # logical names: input dims then output dims

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        n_in = len(self.kernel_axes) - len(self.features)
        shape = (*x.shape[x.ndim - n_in :], *self.features)
        kernel = self.param("kernel", _init(cfg, self.kernel_axes), shape, cfg.param_dtype)
        bias_axes = self.kernel_axes[n_in:]
        bias = self.param("bias", _zeros(bias_axes), self.features, cfg.param_dtype)
        contract = (tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in)))
        y = jax.lax.dot_general(
            jnp.asarray(x, cfg.dtype), jnp.asarray(kernel, cfg.dtype), (contract, ((), ()))
        )
        return y + jnp.asarray(bias, cfg.dtype)


def _dense(cfg: BertConfig, features, axes: tuple[str, ...], name: str) -> Dense:
    features = (features,) if isinstance(features, int) else tuple(features)
    return Dense(cfg, features, axes, name=name)


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


class Embeddings(nn.Module):
    """Token + segment + learned position embeddings, then LayerNorm and dropout."""

    config: BertConfig

    @nn.compact
    def __call__(
        self, input_ids: Array, token_type_ids: Array, attention_mask: Array, *, deterministic: bool
    ):
        """[batch, length] ids -> [batch, length, hidden] embeddings (and the word-embedding module).

        Positions count from each segment's start (`segment_positions`), so the instances of a
        packed row each start at 0; for an ordinary row they are 0, 1, 2, ...
        """
        cfg = self.config
        word = nn.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            dtype=cfg.dtype,
            param_dtype=cfg.param_dtype,
            embedding_init=_init(cfg, ("vocab", "embed")),
            name="word_embeddings",
        )
        position = self.param(
            "position_embeddings",
            _init(cfg, ("position", "embed")),
            (cfg.max_position_embeddings, cfg.hidden_size),
            cfg.param_dtype,
        )
        token_type = self.param(
            "token_type_embeddings",
            _init(cfg, ("token_type", "embed")),
            (cfg.type_vocab_size, cfg.hidden_size),
            cfg.param_dtype,
        )
        x = word(input_ids)
        x = x + jnp.asarray(position, cfg.dtype)[segment_positions(attention_mask)]
        x = x + jnp.asarray(token_type, cfg.dtype)[token_type_ids]
        x = _layer_norm(cfg, "layer_norm")(x)
        x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
        return nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed")), word


def segment_mask(attention_mask: Array) -> Array:
    """Which keys each query sees, bool [batch, 1, length, length], from segment numbers [batch,
    length] (see `segment_positions`): the keys of its own segment. A padding query sees every
    real key, as in BERT, so an ordinary row's mask is the usual padding mask."""
    query, key = attention_mask[:, :, None], attention_mask[:, None, :]
    return ((key > 0) & ((query == key) | (query == 0)))[:, None]


def attention(
    query: Array,
    key: Array,
    value: Array,
    attention_mask: Array,
    *,
    implementation: str,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
) -> Array:
    """Scaled dot-product attention with a padding mask: the single entry point of the model.

    Args:
      query, key, value: [batch, length, heads, head_dim].
      attention_mask: [batch, length], 1 for real tokens and 0 for padding, or segment numbers
        1, 2, ... of a packed row (`segment_mask`: attention stays inside each segment).
      implementation: "xla" or "cudnn" (passed to `jax.nn.dot_product_attention`). cuDNN uses the
        key lengths (real tokens per row), so it needs right-padded rows of one segment each, as
        unpacked BERT batches are.
      dropout_rate, dropout_rng: dropout on the attention probabilities (training only). Neither
        fused implementation has it, so that case is computed explicitly, with softmax in float32.

    Returns:
      [batch, length, heads, head_dim].
    """
    if dropout_rate > 0.0 and dropout_rng is not None:
        scale = query.shape[-1] ** -0.5
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
        logits = jnp.where(segment_mask(attention_mask), logits * scale, -1e10)
        probs = jax.nn.softmax(logits, axis=-1)
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
        probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0).astype(value.dtype)
        return jnp.einsum("bhqk,bkhd->bqhd", probs, value)
    if implementation == "cudnn":  # one segment per row (packing needs "xla"; config checks)
        lengths = (attention_mask > 0).sum(axis=-1).astype(jnp.int32)
        return jax.nn.dot_product_attention(
            query, key, value, key_value_seq_lengths=lengths, implementation="cudnn"
        )
    return jax.nn.dot_product_attention(
        query, key, value, mask=segment_mask(attention_mask), implementation=implementation
    )


class SelfAttention(nn.Module):
    """Multi-head self-attention with a padding mask and an output projection."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array, attention_mask: Array, *, deterministic: bool) -> Array:
        """[batch, length, hidden] -> [batch, length, hidden]."""
        cfg = self.config
        heads = (cfg.num_heads, cfg.head_dim)
        q = _dense(cfg, heads, ("embed", "heads", "kv"), "query")(x)
        k = _dense(cfg, heads, ("embed", "heads", "kv"), "key")(x)
        v = _dense(cfg, heads, ("embed", "heads", "kv"), "value")(x)
        q, k, v = (
            nn.with_logical_constraint(t, ("act_batch", "act_length", "act_heads", "act_kv"))
            for t in (q, k, v)
        )
        use_dropout = not deterministic and cfg.attention_dropout > 0.0
        out = attention(
            q,
            k,
            v,
            attention_mask,
            implementation=cfg.attention_impl,
            dropout_rate=cfg.attention_dropout if use_dropout else 0.0,
            dropout_rng=self.make_rng("dropout") if use_dropout else None,
        )
        out = nn.with_logical_constraint(out, ("act_batch", "act_length", "act_heads", "act_kv"))
        return _dense(cfg, cfg.hidden_size, ("heads", "kv", "embed"), "out")(out)


class Mlp(nn.Module):
    """The position-wise feed-forward block: dense, GELU, dense."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """[batch, length, hidden] -> [batch, length, hidden]."""
        cfg = self.config
        h = _dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "wi")(x)
        h = _activation(cfg)(h)
        h = nn.with_logical_constraint(h, ("act_batch", "act_length", "act_mlp"))
        return _dense(cfg, cfg.hidden_size, ("mlp", "embed"), "wo")(h)


class EncoderLayer(nn.Module):
    """One post-LayerNorm Transformer layer: x = LN(x + Attn(x)); x = LN(x + MLP(x))."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array, attention_mask: Array, deterministic: bool):
        cfg = self.config
        dropout = nn.Dropout(cfg.hidden_dropout)
        h = SelfAttention(cfg, name="attention")(x, attention_mask, deterministic=deterministic)
        x = _layer_norm(cfg, "attention_layer_norm")(x + dropout(h, deterministic=deterministic))
        h = Mlp(cfg, name="mlp")(x)
        x = _layer_norm(cfg, "mlp_layer_norm")(x + dropout(h, deterministic=deterministic))
        x = nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))
        return x, None  # (carry, output) so the same module serves nn.scan


def _remat(cfg: BertConfig, layer_cls):
    if cfg.remat_policy == "none":
        return layer_cls
    policy = None if cfg.remat_policy == "full" else jax.checkpoint_policies.checkpoint_dots
    return nn.remat(layer_cls, policy=policy, prevent_cse=not cfg.scan_layers, static_argnums=(3,))


class Encoder(nn.Module):
    """A stack of `num_layers` encoder layers, unrolled or scanned (`config.scan_layers`)."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array, attention_mask: Array, *, deterministic: bool) -> Array:
        cfg = self.config
        layer_cls = _remat(cfg, EncoderLayer)
        if cfg.scan_layers:
            stack = nn.scan(
                layer_cls,
                variable_axes={"params": 0},
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


class Pooler(nn.Module):
    """tanh(dense(hidden state of [CLS]))."""

    config: BertConfig

    @nn.compact
    def __call__(self, sequence_output: Array, cls_positions: Array | None = None) -> Array:
        """[batch, length, hidden] -> [batch, hidden] from position 0, or [batch, k, hidden] from
        `cls_positions` [batch, k] (the [CLS] of each instance of a packed row)."""
        cfg = self.config
        if cls_positions is None:
            cls = sequence_output[:, 0]
        else:
            cls = gather_positions(sequence_output, cls_positions)
        return jnp.tanh(_dense(cfg, cfg.hidden_size, ("embed", "mlp"), "dense")(cls))


class BertEncoder(nn.Module):
    """The BERT body: embeddings, encoder, pooler. Returns named outputs."""

    config: BertConfig

    @nn.compact
    def __call__(
        self,
        input_ids: Array,
        token_type_ids: Array,
        attention_mask: Array,
        *,
        cls_positions: Array | None = None,
        deterministic: bool = True,
    ) -> dict[str, Any]:
        """Runs the encoder.

        Args:
          input_ids, token_type_ids, attention_mask: [batch, length] integer arrays
            (`attention_mask` may hold the segment numbers of packed rows, see `segment_mask`).
          cls_positions: [batch, k] where the pooler reads, for packed rows; None: position 0.
          deterministic: False enables dropout (needs a "dropout" rng).

        Returns:
          `sequence_output` [batch, length, hidden], `pooled_output` [batch, hidden] (or
          [batch, k, hidden]) and `word_embeddings` (the nn.Embed, for the tied MLM decoder).
        """
        cfg = self.config
        x, word = Embeddings(cfg, name="embeddings")(
            input_ids, token_type_ids, attention_mask, deterministic=deterministic
        )
        x = Encoder(cfg, name="encoder")(x, attention_mask, deterministic=deterministic)
        return {
            "sequence_output": x,
            "pooled_output": Pooler(cfg, name="pooler")(x, cls_positions),
            "word_embeddings": word,
        }


class MlmHead(nn.Module):
    """dense + GELU + LayerNorm, then the decoder tied to the word embedding plus an output bias."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array, word_embeddings: nn.Embed) -> Array:
        """[batch, n, hidden] -> float32 logits [batch, n, vocab]."""
        cfg = self.config
        h = _dense(cfg, cfg.hidden_size, ("embed", "mlp"), "transform")(x)
        h = _activation(cfg)(h)
        h = _layer_norm(cfg, "layer_norm")(h)
        bias = self.param("output_bias", _zeros(("vocab",)), (cfg.vocab_size,), cfg.param_dtype)
        logits = word_embeddings.attend(h) + jnp.asarray(bias, cfg.dtype)
        logits = nn.with_logical_constraint(logits, ("act_batch", "act_length", "act_vocab"))
        return logits.astype(jnp.float32)


def gather_positions(x: Array, positions: Array) -> Array:
    """[batch, length, hidden], [batch, n] -> [batch, n, hidden]."""
    return jnp.take_along_axis(x, positions[..., None].astype(jnp.int32), axis=1)


class BertForPreTraining(nn.Module):
    """BERT with the masked-LM and next-sentence-prediction heads."""

    config: BertConfig

    @nn.compact
    def __call__(
        self,
        input_ids: Array,
        token_type_ids: Array,
        attention_mask: Array,
        *,
        masked_positions: Array | None = None,
        nsp_positions: Array | None = None,
        deterministic: bool = True,
    ) -> dict[str, Array]:
        """Runs BERT and both pretraining heads.

        Args:
          input_ids, token_type_ids, attention_mask: [batch, length].
          masked_positions: [batch, max_predictions] positions to predict. When given, the MLM head
            (and its vocab-sized projection) runs only there; otherwise on every token.
          nsp_positions: [batch, k], the [CLS] of each instance of a packed row; None: position 0.
          deterministic: False enables dropout.

        Returns:
          `sequence_output`, `pooled_output`, `mlm_logits` [batch, max_predictions or length, vocab]
          and `nsp_logits` [batch, 2] (or [batch, k, 2]), logits in float32.
        """
        cfg = self.config
        out = BertEncoder(cfg, name="bert")(
            input_ids,
            token_type_ids,
            attention_mask,
            cls_positions=nsp_positions,
            deterministic=deterministic,
        )
        x = out["sequence_output"]
        if masked_positions is not None:
            x = gather_positions(x, masked_positions)
        mlm_logits = MlmHead(cfg, name="mlm_head")(x, out["word_embeddings"])
        nsp = _dense(cfg, 2, ("embed", "classes"), "nsp_head")(out["pooled_output"])
        return {
            "sequence_output": out["sequence_output"],
            "pooled_output": out["pooled_output"],
            "mlm_logits": mlm_logits,
            "nsp_logits": nsp.astype(jnp.float32),
        }


class BertModel(nn.Module):
    """The bare encoder (no heads) with the same interface, e.g. for embeddings or parity checks."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, token_type_ids, attention_mask, *, deterministic: bool = True):
        """Returns `sequence_output` [batch, length, hidden] and `pooled_output` [batch, hidden]."""
        out = BertEncoder(self.config, name="bert")(
            input_ids, token_type_ids, attention_mask, deterministic=deterministic
        )
        return {"sequence_output": out["sequence_output"], "pooled_output": out["pooled_output"]}
