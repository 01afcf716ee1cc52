"""The Marian family: the Transformer encoder-decoder in the layout of transformers'
`MarianMTModel` (the original Transformer of "Attention is all you need").

Post-LayerNorm encoder and decoder layers, fixed sinusoidal positions (Marian's layout: the sines
in the first half of each vector, the cosines in the second), one word embedding shared by the
encoder, the decoder and the LM head (scaled by sqrt(hidden_size) with `scale_embedding`), causal
decoder self-attention with a key/value cache, cross-attention to the encoder, and the LM head's
`final_logits_bias`.

The backbone follows the seq2seq protocol of `bertjax.models.seq2seq_decoding`: with all four
input fields it runs the encoder and the decoder (teacher forcing); without `decoder_input_ids` it
only encodes (`encoder_output`); given `encoder_output` instead of `input_ids` it only decodes
(with a mutable "cache": one step of incremental decoding). `cross_attention` [batch, target,
source] is the mean over heads of the last decoder layer's cross-attention.

With `encoder="bert"` the encoder is a bertjax BERT (`BertBackbone`, parameters under
`backbone/bert`): the warm start of Rothe et al. (2020), a pretrained BERT encoder with a fresh
decoder (`bertjax.interop.hf_marian.warm_start_params`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bertjax.models.bert import (
    ATTENTION_IMPLS,
    DTYPES,
    REMAT_POLICIES,
    BertBackbone,
    BertConfig,
    EncoderLayer,
)
from bertjax.models.layers import (
    ACTIVATIONS,
    LayerStack,
    Mlp,
    SelfAttention,
    dense,
    layer_norm,
    normal_init,
    word_embedding,
    zeros_init,
)
from bertjax.models.registry import Family, check_positive, fail, register

Array = jax.Array

ENCODERS = ("marian", "bert")


@dataclasses.dataclass(frozen=True)
class MarianConfig:
    """Architecture and numerics of a Marian encoder-decoder. Field names follow `config.model`."""

    vocab_size: int = 58101  # one vocabulary shared by source and target (and the LM head)
    hidden_size: int = 512  # d_model
    num_layers: int = 6  # encoder layers
    decoder_layers: int = 6
    num_heads: int = 8  # attention heads of the encoder and the decoder
    intermediate_size: int = 2048  # the encoder's feed-forward width
    decoder_intermediate_size: int = 2048
    max_position_embeddings: int = 512  # the longest source and target
    hidden_act: str = "swish"  # opus-mt's; "gelu", "gelu_tanh", "relu"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.0
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    scale_embedding: bool = True  # word embeddings times sqrt(hidden_size)
    pad_token_id: int = -1  # padding and the decoder's start token; -1: the last id (Marian's)
    eos_token_id: int = 0  # </s>: ends every source and target
    encoder: str = "marian"  # "marian", or "bert": a BERT encoder (warm start from init_from)
    type_vocab_size: int = 2  # the BERT encoder's segment embedding (encoder="bert" only)
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: str = "xla"  # the only one: cross-attention returns its weights
    scan_layers: bool = False
    remat_policy: str = "none"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def __post_init__(self):
        check_positive(
            self,
            (
                "vocab_size",
                "hidden_size",
                "num_layers",
                "decoder_layers",
                "num_heads",
                "intermediate_size",
                "decoder_intermediate_size",
                "max_position_embeddings",
                "type_vocab_size",
            ),
        )
        if self.hidden_size % self.num_heads:
            fail(
                "hidden_size", self.hidden_size, f"must be divisible by num_heads={self.num_heads}"
            )
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                fail(name, getattr(self, name), "must be in [0, 1)")
        for name, allowed in (
            ("hidden_act", tuple(ACTIVATIONS)),
            ("encoder", ENCODERS),
            ("attention_impl", ATTENTION_IMPLS[:1]),
            ("remat_policy", REMAT_POLICIES),
            ("dtype", DTYPES),
            ("param_dtype", DTYPES),
        ):
            if getattr(self, name) not in allowed:
                fail(name, getattr(self, name), f"allowed values are {allowed}")
        if not -1 <= self.pad_token_id < self.vocab_size:
            fail("pad_token_id", self.pad_token_id, f"must be -1 (the last id) or in [0, {self.vocab_size})")  # fmt: skip
        if not 0 <= self.eos_token_id < self.vocab_size:
            fail("eos_token_id", self.eos_token_id, f"must be in [0, vocab_size={self.vocab_size})")

    @property
    def pad_id(self) -> int:
        """The pad (and decoder start) id: `pad_token_id`, or the last id when it is -1."""
        return self.vocab_size - 1 if self.pad_token_id == -1 else self.pad_token_id

    def stack(self, part: str):
        """The config a `LayerStack` of `part` ("encoder" or "decoder") reads: its depth and width."""
        if part == "encoder":
            return self
        return dataclasses.replace(
            self, num_layers=self.decoder_layers, intermediate_size=self.decoder_intermediate_size
        )

    def bert(self) -> BertConfig:
        """The `BertConfig` of the encoder when `encoder="bert"`."""
        names = {f.name for f in dataclasses.fields(BertConfig)} - {"entity_vocab_size"}
        values = {n: getattr(self, n) for n in names if hasattr(self, n)}
        values.update(hidden_act=_bert_act(self.hidden_act), pad_token_id=self.pad_id)
        return BertConfig(**values)


def _bert_act(act: str) -> str:
    if act not in ("gelu", "gelu_tanh"):
        fail("hidden_act", act, "encoder='bert' needs BERT's 'gelu' or 'gelu_tanh'")
    return act


def sinusoids(length: int, width: int) -> np.ndarray:
    """Marian's fixed positions, float32 [length, width]: position p, feature j has angle
    p / 10000^(2 floor(j/2) / width); the sines of the even j fill the first half, the cosines of
    the odd j the second."""
    j = np.arange(width)
    angles = np.arange(length)[:, None] / np.power(10000, 2 * (j // 2) / width)[None, :]
    half = (width + 1) // 2
    out = np.empty((length, width))
    out[:, :half] = np.sin(angles[:, 0::2])
    out[:, half:] = np.cos(angles[:, 1::2])
    return out.astype(np.float32)


class Projection(nn.Module):
    """The kernel [hidden, heads, head_dim] and bias of a dense projection, returned unapplied
    (the cross-attention applies them inside `lax.cond`, where modules cannot run)."""

    config: MarianConfig

    @nn.compact
    def __call__(self) -> tuple[Array, Array]:
        cfg = self.config
        heads = (cfg.num_heads, cfg.head_dim)
        kernel = self.param(
            "kernel",
            normal_init(cfg, ("embed", "heads", "kv")),
            (cfg.hidden_size, *heads),
            cfg.param_dtype,
        )
        bias = self.param("bias", zeros_init(("heads", "kv")), heads, cfg.param_dtype)
        return jnp.asarray(kernel, cfg.dtype), jnp.asarray(bias, cfg.dtype)


class CrossAttention(nn.Module):
    """Multi-head attention of the decoder states to the encoder output (the memory).

    While decoding (mutable "cache"), the memory's keys and values are computed at the first
    step and read from the cache (`cross_key`, `cross_value` [batch, source, heads, head_dim])
    afterwards.
    """

    config: MarianConfig

    @nn.compact
    def __call__(self, x: Array, memory: Array, memory_mask: Array, *, deterministic: bool):
        """x [batch, target, hidden], memory [batch, source, hidden], memory_mask [batch, source]
        -> ([batch, target, hidden], attention probabilities float32 [batch, target, source],
        the mean over heads)."""
        cfg = self.config
        q = dense(cfg, (cfg.num_heads, cfg.head_dim), ("embed", "heads", "kv"), "query")(x)
        k, v = self._memory_kv(memory)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        logits = jnp.where(memory_mask[:, None, None, :] > 0, logits * cfg.head_dim**-0.5, -1e10)
        probs = jax.nn.softmax(logits, axis=-1)
        weights = probs
        if not deterministic and cfg.attention_dropout > 0.0:
            weights = nn.Dropout(cfg.attention_dropout)(probs, deterministic=False)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)
        out = nn.with_logical_constraint(out, ("act_batch", "act_length", "act_heads", "act_kv"))
        out = dense(cfg, cfg.hidden_size, ("heads", "kv", "embed"), "out")(out)
        return out, probs.mean(axis=1)

    def _memory_kv(self, memory: Array) -> tuple[Array, Array]:
        key_kernel, key_bias = Projection(self.config, name="key")()
        value_kernel, value_bias = Projection(self.config, name="value")()
        dtype = self.config.dtype

        def project():
            m = jnp.asarray(memory, dtype)
            k = jnp.einsum("bsh,hnd->bsnd", m, key_kernel) + key_bias
            return k, jnp.einsum("bsh,hnd->bsnd", m, value_kernel) + value_bias

        if not self.is_mutable_collection("cache"):
            return project()
        ready = self.has_variable("cache", "cross_key")
        shape = (*memory.shape[:2], self.config.num_heads, self.config.head_dim)
        key = self.variable("cache", "cross_key", jnp.zeros, shape, dtype)
        value = self.variable("cache", "cross_value", jnp.zeros, shape, dtype)
        filled = self.variable("cache", "cross_filled", lambda: jnp.zeros((), bool))
        if not ready:  # creating the cache
            return project()
        k, v = jax.lax.cond(filled.value, lambda: (key.value, value.value), project)
        key.value, value.value, filled.value = k, v, jnp.ones((), bool)
        return k, v


class DecoderLayer(nn.Module):
    """One post-LayerNorm decoder layer: x = LN(x + SelfAttn(x)); x = LN(x + CrossAttn(x,
    memory)); x = LN(x + MLP(x))."""

    config: MarianConfig

    @nn.compact
    def __call__(self, carry, masks, deterministic: bool):
        """carry: (x [batch, target, hidden], the previous layer's cross-attention); masks:
        (decoder mask [batch, target], memory [batch, source, hidden], memory mask [batch,
        source]). Returns ((x, this layer's cross-attention), None), so `LayerStack` (unrolled or
        scanned) carries the last layer's attention out."""
        cfg = self.config
        x, _ = carry
        decoder_mask, memory, memory_mask = masks
        dropout = nn.Dropout(cfg.hidden_dropout)
        h = SelfAttention(cfg, causal=True, name="attention")(
            x, decoder_mask, deterministic=deterministic
        )
        x = layer_norm(cfg, "attention_layer_norm")(x + dropout(h, deterministic=deterministic))
        h, probs = CrossAttention(cfg, name="cross_attention")(
            x, memory, memory_mask, deterministic=deterministic
        )
        x = layer_norm(cfg, "cross_attention_layer_norm")(
            x + dropout(h, deterministic=deterministic)
        )
        h = Mlp(cfg, name="mlp")(x)
        x = layer_norm(cfg, "mlp_layer_norm")(x + dropout(h, deterministic=deterministic))
        x = nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))
        return (x, probs), None


class MarianBackbone(nn.Module):
    """The Marian body: shared embedding, encoder stack, decoder stack."""

    config: MarianConfig

    @nn.compact
    def __call__(self, inputs: Mapping[str, Array], *, deterministic: bool = True):
        """Encodes, decodes, or both (see the module docstring).

        Args:
          inputs: `input_ids`, `attention_mask` [batch, source] (the source, right-padded);
            `decoder_input_ids`, optional `decoder_attention_mask` [batch, target] (the target
            shifted right behind the start token; mask default 1); or, to decode only,
            `encoder_output` [batch, source, hidden] with `attention_mask` instead of `input_ids`.
          deterministic: False enables dropout (needs a "dropout" rng).

        Returns:
          `encoder_output` [batch, source, hidden] (when it encoded); when it decoded,
          `sequence_output` [batch, target, hidden] and `cross_attention` float32 [batch,
          target, source]; `word_embeddings` (the shared nn.Embed, for the tied LM head).
        """
        cfg = self.config
        shared = word_embedding(cfg, "shared")
        out = {"word_embeddings": shared}
        memory = inputs.get("encoder_output")
        if memory is None:
            memory = self._encode(shared, inputs, deterministic)
            out["encoder_output"] = memory
        if "decoder_input_ids" not in inputs:
            return out
        ids = inputs["decoder_input_ids"]
        mask = inputs.get("decoder_attention_mask")
        mask = jnp.ones_like(ids) if mask is None else mask
        x = self._embed(shared, ids, self._decoder_positions(ids.shape[1]), deterministic)
        attention = jnp.zeros((*ids.shape, memory.shape[1]), jnp.float32)
        x, attention = LayerStack(cfg.stack("decoder"), DecoderLayer, name="decoder")(
            (x, attention), (mask, memory, inputs["attention_mask"]), deterministic=deterministic
        )
        return {**out, "sequence_output": x, "cross_attention": attention}

    def _embed(self, shared: nn.Embed, ids: Array, positions: Array, deterministic: bool):
        cfg = self.config
        scale = math.sqrt(cfg.hidden_size) if cfg.scale_embedding else 1.0
        table = jnp.asarray(sinusoids(cfg.max_position_embeddings, cfg.hidden_size), cfg.dtype)
        x = shared(ids) * scale + table[positions]
        x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
        return nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))

    def _encode(self, shared: nn.Embed, inputs: Mapping[str, Array], deterministic: bool):
        cfg = self.config
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if cfg.encoder == "bert":
            bert = BertBackbone(cfg.bert(), name="bert")
            return bert({"input_ids": ids, "attention_mask": mask}, deterministic=deterministic)[
                "sequence_output"
            ]
        x = self._embed(shared, ids, jnp.arange(ids.shape[1])[None], deterministic)
        return LayerStack(cfg.stack("encoder"), EncoderLayer, name="encoder")(
            x, mask, deterministic=deterministic
        )

    def _decoder_positions(self, length: int) -> Array:
        """[1, length] positions; while decoding, offset by the tokens decoded so far."""
        index = jnp.arange(length, dtype=jnp.int32)[None]
        if not self.is_mutable_collection("cache"):
            return index
        ready = self.has_variable("cache", "position")
        seen = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
        start = seen.value
        if ready:
            seen.value = start + length
        return jnp.minimum(start + index, self.config.max_position_embeddings - 1)


class LmHead(nn.Module):
    """Next-token logits: the decoder states decoded by the shared embedding plus
    `final_logits_bias`."""

    config: MarianConfig

    @nn.compact
    def __call__(self, features, inputs, *, deterministic: bool):
        """Returns `lm_logits`, float32 [batch, target, vocab]."""
        cfg = self.config
        bias = self.param(
            "final_logits_bias", zeros_init(("vocab",)), (cfg.vocab_size,), cfg.param_dtype
        )
        logits = features["word_embeddings"].attend(features["sequence_output"])
        logits = logits + jnp.asarray(bias, cfg.dtype)
        logits = nn.with_logical_constraint(logits, ("act_batch", "act_length", "act_vocab"))
        return {"lm_logits": logits.astype(jnp.float32)}


def forward_flops(cfg: MarianConfig, seq_len: int) -> float:
    """Matmul FLOPs of one forward pass on a source and a target of `seq_len` tokens each (the
    LM head is the objective's).

      2 * N_enc * S + 4 * L_enc * S^2 * H          encoder (N_enc = L_enc (4 H^2 + 2 H I))
    + 2 * N_dec * S + 8 * L_dec * S^2 * H          decoder (N_dec = L_dec (8 H^2 + 2 H I_dec)):
                                                   self- and cross-attention scores and sums
    A BERT encoder (encoder="bert") has the same matmuls as Marian's.
    """
    h, s = cfg.hidden_size, seq_len
    encoder = cfg.num_layers * (4 * h * h + 2 * h * cfg.intermediate_size)
    decoder = cfg.decoder_layers * (8 * h * h + 2 * h * cfg.decoder_intermediate_size)
    attention = 4 * cfg.num_layers * s * s * h + 8 * cfg.decoder_layers * s * s * h
    return float(2 * (encoder + decoder) * s + attention)


TRANSLATE_STEP = (
    "Translate with it:",
    'bertjax translate {model} --text "..." --beam 4',
)

MARIAN = register(
    Family(
        name="marian",
        config_cls=MarianConfig,
        backbone=MarianBackbone,
        heads={"lm": LmHead},
        input_fields=("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask"),
        forward_flops=forward_flops,
        hf="bertjax.interop.hf_marian",
        stack_paths=(
            ("backbone", "encoder"),
            ("backbone", "decoder"),
            ("backbone", "bert", "encoder"),
        ),
        pretraining_heads=("lm",),
        defaults={
            "objective": "seq2seq",
            "data.tokenizer": "sentencepiece",
            "data.instances": "parallel_pairs",
            "data.lowercase": False,
        },
        next_steps=(TRANSLATE_STEP,),
    )
)
