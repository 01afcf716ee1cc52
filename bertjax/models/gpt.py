"""The GPT family (GPT-2 layout): token + learned position embeddings, pre-LayerNorm causal
decoder blocks, a final LayerNorm, and the LM head tied to the token embedding.

`GptConfig` is the architecture (the `config.model` group with `family="gpt"`); `GptBackbone`
returns `sequence_output`, `pooled_output` (the state of each row's last real token, for the
sequence classifier) and the token embedding (for the tied LM head). Incremental decoding with a
key/value cache is in `bertjax.models.decoding`; the Hugging Face converter in
`bertjax.interop.hf_gpt2`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax.models import heads
from bertjax.models.bert import validate_transformer
from bertjax.models.layers import (
    LayerStack,
    Mlp,
    SelfAttention,
    layer_norm,
    segment_positions,
    token_and_position_tables,
)
from bertjax.models.registry import FINETUNE_STEP, Family, fail, register

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class GptConfig:
    """Architecture and numerics of a GPT-2 style decoder. Field names follow `config.model`."""

    vocab_size: int = 50257
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 1024
    hidden_act: str = "gelu_tanh"  # GPT-2's "gelu_new"
    hidden_dropout: float = 0.1  # embeddings and residual branches (GPT-2's embd/resid_pdrop)
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    eos_token_id: int = 50256  # <|endoftext|>: between documents, and where generation stops
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: str = "xla"  # "xla" anywhere, "cudnn" (causal flash attention, NVIDIA)
    scan_layers: bool = False
    remat_policy: str = "none"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def __post_init__(self):
        validate_transformer(self)
        if not 0 <= self.eos_token_id < self.vocab_size:
            fail("eos_token_id", self.eos_token_id, f"must be in [0, vocab_size={self.vocab_size})")


class DecoderBlock(nn.Module):
    """One pre-LayerNorm block: x += Attn(LN(x)); x += MLP(LN(x))."""

    config: GptConfig

    @nn.compact
    def __call__(self, x: Array, attention_mask: Array, deterministic: bool):
        cfg = self.config
        dropout = nn.Dropout(cfg.hidden_dropout)
        h = layer_norm(cfg, "ln_1")(x)
        h = SelfAttention(cfg, causal=True, name="attention")(
            h, attention_mask, deterministic=deterministic
        )
        x = x + dropout(h, deterministic=deterministic)
        h = Mlp(cfg, name="mlp")(layer_norm(cfg, "ln_2")(x))
        x = x + dropout(h, deterministic=deterministic)
        x = nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))
        return x, None  # (carry, output) so the same module serves nn.scan


class GptBackbone(nn.Module):
    """The GPT body: embeddings, decoder blocks, final LayerNorm."""

    config: GptConfig

    @nn.compact
    def __call__(self, inputs: Mapping[str, Array], *, deterministic: bool = True):
        """Runs the decoder.

        Args:
          inputs: `input_ids` and `attention_mask` [batch, length] (1 real, 0 padding; rows may
            be left-padded, or hold segment numbers 1, 2, ... of documents that attend only
            within themselves). Positions count real tokens from each segment's start. While
            decoding (mutable "cache"), each call continues the rows of the previous ones.
          deterministic: False enables dropout (needs a "dropout" rng).

        Returns:
          `sequence_output` [batch, length, hidden] (after the final LayerNorm),
          `pooled_output` [batch, hidden] (at each row's last real token) and
          `word_embeddings` (the nn.Embed, for the tied LM head).
        """
        cfg = self.config
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        word, position = token_and_position_tables(self, cfg, word="wte", position="wpe")
        positions = self._positions(attention_mask)
        x = word(input_ids) + jnp.asarray(position, cfg.dtype)[positions]
        x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
        x = nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))
        x = LayerStack(cfg, DecoderBlock, name="decoder")(
            x, attention_mask, deterministic=deterministic
        )
        x = layer_norm(cfg, "ln_f")(x)
        index = jnp.arange(x.shape[1], dtype=jnp.int32)
        last = jnp.max(jnp.where(attention_mask > 0, index, 0), axis=1)  # [batch]
        pooled = jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
        return {"sequence_output": x, "pooled_output": pooled, "word_embeddings": word}

    def _positions(self, attention_mask: Array) -> Array:
        """[batch, length] position ids; while decoding, offset by the real tokens seen so far."""
        if not self.is_mutable_collection("cache"):
            return segment_positions(attention_mask)
        ready = self.has_variable("cache", "real_tokens")
        seen = self.variable("cache", "real_tokens", jnp.zeros, attention_mask.shape[:1], jnp.int32)
        real = (attention_mask > 0).astype(jnp.int32)
        positions = seen.value[:, None] + jnp.maximum(jnp.cumsum(real, axis=1) - 1, 0)
        if ready:
            seen.value = seen.value + real.sum(axis=1)
        return jnp.minimum(positions, self.config.max_position_embeddings - 1)


class LmHead(nn.Module):
    """Next-token logits from the final states, decoded by the tied token embedding (no bias)."""

    config: GptConfig

    @nn.compact
    def __call__(self, features, inputs, *, deterministic: bool):
        """Returns `lm_logits`, float32 [batch, length, vocab]."""
        logits = features["word_embeddings"].attend(features["sequence_output"])
        logits = nn.with_logical_constraint(logits, ("act_batch", "act_length", "act_vocab"))
        return {"lm_logits": logits.astype(jnp.float32)}


def forward_flops(cfg: GptConfig, seq_len: int) -> float:
    """Matmul FLOPs of one decoder forward pass on one sequence of `seq_len` tokens (the LM
    head is the objective's).

      2 * N_dec * S        block weights (N_dec = L * (4 H^2 + 2 H I)), per token
    + 4 * L * S^2 * H      attention scores and weighted sum, counted as computed: XLA computes
                           the full S x S square and masks it; cuDNN's causal kernel skips the
                           blocks above the diagonal, about half
    """
    h, layers, inter = cfg.hidden_size, cfg.num_layers, cfg.intermediate_size
    blocks = layers * (4 * h * h + 2 * h * inter)
    attention = 4 * layers * seq_len * seq_len * h * (0.5 if cfg.attention_impl == "cudnn" else 1)
    return float(2 * blocks * seq_len + attention)


GENERATE_STEP = (
    "Continue a text with it:",
    'bertjax generate {model} "The for statement" --max-new-tokens 40 --temperature 0.8 --top-k 40',
)

GPT_HEADS = {"lm": LmHead, "classifier": heads.SequenceClassifier}

GPT = register(
    Family(
        name="gpt",
        config_cls=GptConfig,
        backbone=GptBackbone,
        heads=GPT_HEADS,
        input_fields=("input_ids", "attention_mask"),
        forward_flops=forward_flops,
        hf="bertjax.interop.hf_gpt2",
        pretraining_heads=("lm",),
        defaults={
            "objective": "causal_lm",
            "data.tokenizer": "byte_bpe",
            "data.instances": "lm_blocks",
            "data.lowercase": False,
            "data.mask_token_prob": 0.8,  # unused by causal_lm; the same keys as the encoders
            "data.random_token_prob": 0.1,
            # <|endoftext|> of a trained byte-level BPE: set from the tokenizer at the run's start
            "model.eos_token_id": 0,
        },
        stack_paths=(("backbone", "decoder"),),
        next_steps=(GENERATE_STEP, FINETUNE_STEP),
    )
)
