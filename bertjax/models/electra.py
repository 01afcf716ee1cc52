"""The ELECTRA family (Clark et al., 2020): a generator and a discriminator over shared embeddings.

Both networks are BERT encoders (`bert.Embeddings`, `bert.EncoderLayer`); the embeddings have their
own width `embedding_size`, projected to each network's hidden size where it differs (as ELECTRA
and ALBERT). The generator is `generator_fraction` of the discriminator's width (hidden size,
heads, MLP) at the same depth, with the masked-LM head; the discriminator has the per-token
replaced-token-detection head (`rtd`).

One backbone module holds both: parameters `{"embeddings", "discriminator", "generator"}` (and
`generator_embeddings` when `tie_embeddings=False`). It runs the network named by `role`; the
default, "discriminator", is what fine-tuning and `Model` without pretraining heads run, so a
fine-tuned ELECTRA is its discriminator. `Family.head_roles` sends the `mlm` head to the
generator. The pretraining objective is `bertjax.objectives.rtd`; the converter
`bertjax.interop.hf_electra`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax.models import heads
from bertjax.models.bert import BertConfig, Embeddings, EncoderLayer
from bertjax.models.layers import LayerStack, activation, dense
from bertjax.models.registry import FILL_MASK_STEP, FINETUNE_STEP, Family, fail, register

Array = jax.Array
ROLES = ("discriminator", "generator")


@dataclasses.dataclass(frozen=True)
class ElectraConfig(BertConfig):
    """ELECTRA's architecture: BERT's fields (those of the discriminator; defaults ELECTRA-Small)
    plus the embedding width and the generator's size."""

    hidden_size: int = 256
    num_layers: int = 12
    num_heads: int = 4
    intermediate_size: int = 1024
    embedding_size: int = 128  # E: width of the embedding tables, projected to each hidden size
    generator_fraction: float = 0.25  # generator width / discriminator's (hidden, heads, MLP)
    tie_embeddings: bool = True  # the generator reads the discriminator's embedding tables

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.embedding_size, int) or self.embedding_size <= 0:
            fail("embedding_size", self.embedding_size, "must be a positive integer")
        if not 0.0 < self.generator_fraction <= 1.0:
            fail("generator_fraction", self.generator_fraction, "must be in (0, 1]")
        g = self.network("generator")
        if g.hidden_size % g.num_heads:
            fail(
                "generator_fraction",
                self.generator_fraction,
                f"gives a generator of hidden size {g.hidden_size} and {g.num_heads} heads; "
                "the hidden size must be divisible by the heads",
            )

    def network(self, role: str) -> BertConfig:
        """The BERT view of one network ("discriminator" or "generator"; "embeddings": the
        embedding tables, `hidden_size=embedding_size`), for the shared layers."""
        if role not in (*ROLES, "embeddings"):
            raise ValueError(f"role={role!r} is invalid: allowed values are {ROLES}")
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(BertConfig)}
        if role == "generator":
            f = self.generator_fraction
            fields.update(
                hidden_size=max(1, round(self.hidden_size * f)),
                num_heads=max(1, round(self.num_heads * f)),
                intermediate_size=max(1, round(self.intermediate_size * f)),
            )
        elif role == "embeddings":
            fields.update(hidden_size=self.embedding_size, num_heads=1)
        return BertConfig(**fields)


class Encoder(nn.Module):
    """One network: the embedding projection (when E != H) and the layer stack."""

    config: BertConfig  # the network's view (`ElectraConfig.network`)

    @nn.compact
    def __call__(self, x: Array, attention_mask: Array, *, deterministic: bool) -> Array:
        """[batch, length, embedding] -> [batch, length, hidden]."""
        cfg = self.config
        if x.shape[-1] != cfg.hidden_size:
            x = dense(cfg, cfg.hidden_size, ("embed", "mlp"), "embeddings_project")(x)
            x = nn.with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))
        return LayerStack(cfg, EncoderLayer, name="encoder")(
            x, attention_mask, deterministic=deterministic
        )


class ElectraBackbone(nn.Module):
    """The shared embeddings and both networks; a call runs one of them (`role`)."""

    config: ElectraConfig

    @nn.compact
    def __call__(
        self, inputs: Mapping[str, Array], *, deterministic: bool = True, role: str = ROLES[0]
    ):
        """Runs the network `role` on `inputs`.

        Args:
          inputs: `input_ids`, `attention_mask` [batch, length], optional `token_type_ids`.
          deterministic: False enables dropout (needs a "dropout" rng).
          role: "discriminator" (the default: fine-tuning) or "generator".

        Returns:
          `sequence_output` [batch, length, hidden of `role`] and `word_embeddings` (the nn.Embed
          of its embedding tables, [vocab, embedding_size], for the tied MLM decoder).
        """
        cfg = self.config
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        token_type_ids = inputs.get("token_type_ids")
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        own = role == "generator" and not cfg.tie_embeddings
        x, word = Embeddings(
            cfg.network("embeddings"), name="generator_embeddings" if own else "embeddings"
        )(input_ids, token_type_ids, attention_mask, deterministic=deterministic)
        x = Encoder(cfg.network(role), name=role)(x, attention_mask, deterministic=deterministic)
        return {"sequence_output": x, "word_embeddings": word}


class RtdHead(nn.Module):
    """Replaced-token detection: dense + activation + dense to one logit per token."""

    config: ElectraConfig

    @nn.compact
    def __call__(self, features, inputs, *, deterministic: bool):
        """Returns `rtd_logits`, float32 [batch, length] (> 0: predicted replaced)."""
        cfg = self.config
        h = dense(cfg, cfg.hidden_size, ("embed", "mlp"), "dense")(features["sequence_output"])
        h = activation(cfg)(h)
        logits = dense(cfg, 1, ("mlp", "classes"), "dense_prediction")(h)[..., 0]
        logits = nn.with_logical_constraint(logits, ("act_batch", "act_length"))
        return {"rtd_logits": logits.astype(jnp.float32)}


class ElectraClassifier(nn.Module):
    """ELECTRA's sequence classifier on the [CLS] state: dropout, dense, GELU, dropout, dense.

    (BERT reads a tanh pooler instead; ELECTRA has no pooler.)
    """

    config: ElectraConfig
    num_labels: int

    @nn.compact
    def __call__(self, features, inputs, *, deterministic: bool):
        """Returns `logits` float32 [batch, num_labels] (a regression score is `logits[:, 0]`)."""
        cfg = self.config
        drop = nn.Dropout(cfg.hidden_dropout)
        x = drop(features["sequence_output"][:, 0], deterministic=deterministic)
        x = nn.gelu(dense(cfg, cfg.hidden_size, ("embed", "mlp"), "dense")(x), approximate=False)
        x = drop(x, deterministic=deterministic)
        logits = dense(cfg, self.num_labels, ("mlp", "classes"), "out_proj")(x)
        return {"logits": logits.astype(jnp.float32)}


def forward_flops(cfg: ElectraConfig, seq_len: int, role: str = ROLES[0]) -> float:
    """Matmul FLOPs of one forward pass of network `role` on one sequence of `seq_len` tokens:
    2 * N_enc * S + 4 * L * S^2 * H (as BERT, without a pooler) plus the embedding projection
    2 * S * E * H when E != H."""
    net = cfg.network(role)
    h, layers, inter = net.hidden_size, net.num_layers, net.intermediate_size
    encoder_params = layers * (4 * h * h + 2 * h * inter)
    project = 2 * seq_len * cfg.embedding_size * h if cfg.embedding_size != h else 0
    return float(2 * encoder_params * seq_len + 4 * layers * seq_len * seq_len * h + project)


ELECTRA = register(
    Family(
        name="electra",
        config_cls=ElectraConfig,
        backbone=ElectraBackbone,
        heads={
            "mlm": heads.MlmHead,
            "rtd": RtdHead,
            "classifier": ElectraClassifier,
            "tagger": heads.TokenClassifier,
            "span": heads.SpanHead,
        },
        input_fields=("input_ids", "token_type_ids", "attention_mask"),
        forward_flops=forward_flops,
        hf="bertjax.interop.hf_electra",
        pretraining_heads=("mlm", "rtd"),
        stack_paths=(
            ("backbone", "generator", "encoder"),
            ("backbone", "discriminator", "encoder"),
        ),
        head_roles={"mlm": "generator"},
        defaults={
            "objective": "rtd",
            "data.tokenizer": "wordpiece",
            "data.instances": "nsp_pairs",
            "data.lowercase": True,
            "data.mask_token_prob": 1.0,  # every chosen token becomes [MASK] before the generator
            "data.random_token_prob": 0.0,
            "rtd.discriminator_weight": 50.0,  # loss = generator MLM + this * discriminator BCE
            "rtd.mle_weight": 0.0,  # rtd_adversarial: weight of the generator's MLM loss
        },
        next_steps=(FILL_MASK_STEP, FINETUNE_STEP),
    )
)
