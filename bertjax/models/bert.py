"""The BERT family: token + segment + position embeddings and a post-LayerNorm encoder.

`BertConfig` is the architecture (the `config.model` group); `BertBackbone` returns
`sequence_output`, `pooled_output` (tanh(dense) of each [CLS]) and the word embedding (for the
tied MLM decoder). Heads live in `bertjax.models.heads`; the Hugging Face converter in
`bertjax.interop.hf_bert`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax.models import heads
from bertjax.models.layers import (
    LayerStack,
    Mlp,
    SelfAttention,
    dense,
    gather_positions,
    layer_norm,
    normal_init,
    segment_positions,
    token_and_position_tables,
)
from bertjax.models.registry import (
    FILL_MASK_STEP,
    FINETUNE_STEP,
    Family,
    check_positive,
    fail,
    model_config,
    register,
)

Array = jax.Array

ATTENTION_IMPLS = ("xla", "cudnn")
HIDDEN_ACTS = ("gelu", "gelu_tanh")
REMAT_POLICIES = ("none", "full", "dots")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture and numerics of a BERT encoder. Field names follow `config.model`."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"  # "gelu" (exact, erf) as in BERT, or "gelu_tanh"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"  # storage dtype
    attention_impl: str = "xla"  # "xla" anywhere, "cudnn" flash attention on NVIDIA GPUs
    scan_layers: bool = False  # stack layers with nn.scan (faster compile for deep models)
    remat_policy: str = "none"  # "none", "full" (recompute each layer) or "dots" (save matmuls)
    entity_vocab_size: int = 0  # 0: off; 2: an entity embedding (entity or not) per token

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def __post_init__(self):
        validate_transformer(self)
        if not isinstance(self.entity_vocab_size, int) or self.entity_vocab_size < 0:
            fail(
                "entity_vocab_size",
                self.entity_vocab_size,
                "must be a non-negative integer (0: off, 2: entity or not)",
            )


def validate_transformer(cfg: Any) -> None:
    """Checks the fields every Transformer family shares; raises naming the field."""
    check_positive(
        cfg,
        (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "max_position_embeddings",
        ),
    )
    if getattr(cfg, "type_vocab_size", 1) <= 0:
        fail("type_vocab_size", cfg.type_vocab_size, "must be a positive integer")
    if cfg.hidden_size % cfg.num_heads:
        fail(
            "hidden_size",
            cfg.hidden_size,
            f"must be divisible by config.model.num_heads={cfg.num_heads}",
        )
    for name in ("hidden_dropout", "attention_dropout"):
        value = getattr(cfg, name)
        if not 0.0 <= value < 1.0:
            fail(name, value, "must be in [0, 1)")
    if cfg.attention_impl not in ATTENTION_IMPLS:
        fail("attention_impl", cfg.attention_impl, f"allowed values are {ATTENTION_IMPLS}")
    if cfg.attention_impl == "cudnn" and cfg.attention_dropout > 0:
        fail(
            "attention_dropout",
            cfg.attention_dropout,
            "cuDNN flash attention has no dropout on the attention probabilities; "
            "set config.model.attention_dropout=0.0 or config.model.attention_impl='xla'",
        )
    if cfg.attention_impl == "cudnn" and cfg.dtype not in ("bfloat16", "float16"):
        fail(
            "dtype",
            cfg.dtype,
            "cuDNN flash attention computes in bfloat16 or float16; "
            "set config.model.dtype='bfloat16' or config.model.attention_impl='xla'",
        )
    if cfg.hidden_act not in HIDDEN_ACTS:
        fail("hidden_act", cfg.hidden_act, f"allowed values are {HIDDEN_ACTS}")
    if cfg.remat_policy not in REMAT_POLICIES:
        fail("remat_policy", cfg.remat_policy, f"allowed values are {REMAT_POLICIES}")
    for name in ("dtype", "param_dtype"):
        if getattr(cfg, name) not in DTYPES:
            fail(name, getattr(cfg, name), f"allowed values are {DTYPES}")
    if not 0 <= getattr(cfg, "pad_token_id", 0) < cfg.vocab_size:
        fail("pad_token_id", cfg.pad_token_id, f"must be in [0, vocab_size={cfg.vocab_size})")


class Embeddings(nn.Module):
    """Token + segment + learned position (+ entity) embeddings, then LayerNorm and dropout."""

    config: BertConfig

    @nn.compact
    def __call__(
        self,
        input_ids: Array,
        token_type_ids: Array,
        attention_mask: Array,
        entity_ids: Array | None = None,
        *,
        deterministic: bool,
    ):
        """[batch, length] ids -> [batch, length, hidden] embeddings (and the word-embedding module).

        Positions count from each segment's start (`segment_positions`), so the instances of a
        packed row each start at 0; for an ordinary row they are 0, 1, 2, ... With
        `config.entity_vocab_size > 0` the row `entity_ids` [batch, length] (zeros when None) of
        the `entity_embeddings` table is added too.
        """
        cfg = self.config
        word, position = token_and_position_tables(
            self, cfg, word="word_embeddings", position="position_embeddings"
        )
        token_type = self.param(
            "token_type_embeddings",
            normal_init(cfg, ("token_type", "embed")),
            (cfg.type_vocab_size, cfg.hidden_size),
            cfg.param_dtype,
        )
        x = word(input_ids)
        x = x + jnp.asarray(position, cfg.dtype)[segment_positions(attention_mask)]
        x = x + jnp.asarray(token_type, cfg.dtype)[token_type_ids]
        if cfg.entity_vocab_size:
            entity = self.param(
                "entity_embeddings",
                normal_init(cfg, ("entity", "embed")),
                (cfg.entity_vocab_size, cfg.hidden_size),
                cfg.param_dtype,
            )
            if entity_ids is None:
                entity_ids = jnp.zeros_like(input_ids)
            x = x + jnp.asarray(entity, cfg.dtype)[entity_ids]
        x = layer_norm(cfg, "layer_norm")(x)
        x = nn.Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)
        return nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed")), word


class EncoderLayer(nn.Module):
    """One post-LayerNorm Transformer layer: x = LN(x + Attn(x)); x = LN(x + MLP(x))."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: Array, attention_mask: Array, deterministic: bool):
        cfg = self.config
        dropout = nn.Dropout(cfg.hidden_dropout)
        h = SelfAttention(cfg, name="attention")(x, attention_mask, deterministic=deterministic)
        x = layer_norm(cfg, "attention_layer_norm")(x + dropout(h, deterministic=deterministic))
        h = Mlp(cfg, name="mlp")(x)
        x = layer_norm(cfg, "mlp_layer_norm")(x + dropout(h, deterministic=deterministic))
        x = nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))
        return x, None  # (carry, output) so the same module serves nn.scan


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
        return jnp.tanh(dense(cfg, cfg.hidden_size, ("embed", "mlp"), "dense")(cls))


class BertBackbone(nn.Module):
    """The BERT body: embeddings, encoder, pooler."""

    config: BertConfig

    @nn.compact
    def __call__(self, inputs: Mapping[str, Array], *, deterministic: bool = True):
        """Runs the encoder.

        Args:
          inputs: `input_ids`, `attention_mask` [batch, length] (the mask may hold the segment
            numbers of packed rows, see `layers.segment_mask`), optional `token_type_ids`
            (default 0), `entity_ids` (in {0, 1}, default 0; read when
            `config.entity_vocab_size > 0`) and `nsp_positions` [batch, k] (where the pooler reads in packed rows;
            default position 0).
          deterministic: False enables dropout (needs a "dropout" rng).

        Returns:
          `sequence_output` [batch, length, hidden], `pooled_output` [batch, hidden] (or
          [batch, k, hidden]) and `word_embeddings` (the nn.Embed, for the tied MLM decoder).
        """
        cfg = self.config
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        token_type_ids = inputs.get("token_type_ids")
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x, word = Embeddings(cfg, name="embeddings")(
            input_ids,
            token_type_ids,
            attention_mask,
            inputs.get("entity_ids"),
            deterministic=deterministic,
        )
        x = LayerStack(cfg, EncoderLayer, name="encoder")(
            x, attention_mask, deterministic=deterministic
        )
        pooled = Pooler(cfg, name="pooler")(x, inputs.get("nsp_positions"))
        return {"sequence_output": x, "pooled_output": pooled, "word_embeddings": word}


def forward_flops(cfg: BertConfig, seq_len: int) -> float:
    """Matmul FLOPs of one encoder forward pass on one sequence of `seq_len` tokens.

      2 * N_enc * S        encoder weights (N_enc = L * (4 H^2 + 2 H I)), per token
    + 4 * L * S^2 * H      attention scores QK^T and the weighted sum AV
    + 2 * H^2              the pooler on [CLS]
    """
    h, layers, inter = cfg.hidden_size, cfg.num_layers, cfg.intermediate_size
    encoder_params = layers * (4 * h * h + 2 * h * inter)
    return float(2 * encoder_params * seq_len + 4 * layers * seq_len * seq_len * h + 2 * h * h)


BERT = register(
    Family(
        name="bert",
        config_cls=BertConfig,
        backbone=BertBackbone,
        heads=heads.ENCODER_HEADS,
        # entity_ids is optional: the data path emits it only for entity_vocab_size > 0
        input_fields=("input_ids", "token_type_ids", "attention_mask", "entity_ids"),
        optional_fields={"entity_ids": "entity_vocab_size"},
        forward_flops=forward_flops,
        hf="bertjax.interop.hf_bert",
        pretraining_heads=("mlm", "nsp"),
        defaults={
            "objective": "mlm_nsp",
            "data.tokenizer": "wordpiece",
            "data.instances": "nsp_pairs",
            "data.lowercase": True,
            "data.mask_token_prob": 0.8,
            "data.random_token_prob": 0.1,
        },
        next_steps=(FILL_MASK_STEP, FINETUNE_STEP),
    )
)


def bert_model_config(model: Mapping[str, Any]) -> BertConfig:
    """The `BertConfig` of a `config.model` group (or a dict of its fields); unknown fields are
    errors naming them."""
    values = dict(model.to_dict() if hasattr(model, "to_dict") else model)
    values.setdefault("family", "bert")
    return model_config(values)[1]
