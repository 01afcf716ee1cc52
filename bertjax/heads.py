"""Fine-tuning models: BERT with a sequence-classification, token-classification or QA head.

Each model holds the encoder as the submodule "bert" (so its parameters load from pretraining and
transformers checkpoints unchanged) and one fresh dense head with logical axes ("embed",
"classes"). All return a small dict of float32 logits.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax.config import BertConfig
from bertjax.model import BertEncoder, _dense

Array = jax.Array


class BertForSequenceClassification(nn.Module):
    """Classifies (or, with `num_labels == 1`, scores) a sequence from the pooled [CLS] state."""

    config: BertConfig
    num_labels: int

    @nn.compact
    def __call__(
        self,
        input_ids: Array,
        token_type_ids: Array,
        attention_mask: Array,
        *,
        deterministic: bool = True,
    ) -> dict[str, Array]:
        """Runs BERT and the head.

        Args:
          input_ids, token_type_ids, attention_mask: [batch, length] integer arrays.
          deterministic: False enables dropout (needs a "dropout" rng).

        Returns:
          `logits` float32 [batch, num_labels] (a regression model's score is `logits[:, 0]`).
        """
        cfg = self.config
        out = BertEncoder(cfg, name="bert")(
            input_ids, token_type_ids, attention_mask, deterministic=deterministic
        )
        x = nn.Dropout(cfg.hidden_dropout)(out["pooled_output"], deterministic=deterministic)
        logits = _dense(cfg, self.num_labels, ("embed", "classes"), "classifier")(x)
        return {"logits": logits.astype(jnp.float32)}


class BertForTokenClassification(nn.Module):
    """Tags every token from its final hidden state."""

    config: BertConfig
    num_labels: int

    @nn.compact
    def __call__(
        self,
        input_ids: Array,
        token_type_ids: Array,
        attention_mask: Array,
        *,
        deterministic: bool = True,
    ) -> dict[str, Array]:
        """Runs BERT and the head.

        Returns:
          `logits` float32 [batch, length, num_labels].
        """
        cfg = self.config
        out = BertEncoder(cfg, name="bert")(
            input_ids, token_type_ids, attention_mask, deterministic=deterministic
        )
        x = nn.Dropout(cfg.hidden_dropout)(out["sequence_output"], deterministic=deterministic)
        logits = _dense(cfg, self.num_labels, ("embed", "classes"), "classifier")(x)
        logits = nn.with_logical_constraint(logits, ("act_batch", "act_length", None))
        return {"logits": logits.astype(jnp.float32)}


class BertForQuestionAnswering(nn.Module):
    """Scores every token as the start and as the end of the answer span."""

    config: BertConfig

    @nn.compact
    def __call__(
        self,
        input_ids: Array,
        token_type_ids: Array,
        attention_mask: Array,
        *,
        deterministic: bool = True,
    ) -> dict[str, Array]:
        """Runs BERT and the span head.

        Returns:
          `start_logits` and `end_logits`, float32 [batch, length]; padding positions get a very
          low score.
        """
        cfg = self.config
        out = BertEncoder(cfg, name="bert")(
            input_ids, token_type_ids, attention_mask, deterministic=deterministic
        )
        x = nn.Dropout(cfg.hidden_dropout)(out["sequence_output"], deterministic=deterministic)
        logits = _dense(cfg, 2, ("embed", "classes"), "qa_outputs")(x).astype(jnp.float32)
        logits = jnp.where(attention_mask[..., None] > 0, logits, -1e9)  # [batch, length, 2]
        return {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}
