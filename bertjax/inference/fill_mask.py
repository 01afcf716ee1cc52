"""Top-k predictions of a model's masked-LM head for each [MASK] in a text (`bertjax fill-mask`)."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from bertjax.interop import formats, model_dir
from bertjax.interop.formats import load_pretrained
from bertjax.interop.model_dir import load_model_tokenizer

MASK = "[MASK]"


def fill_mask_file(
    model_path: str | pathlib.Path, text: str, *, top_k: int = 5
) -> list[list[dict[str, Any]]]:
    """`fill_mask` with the model and tokenizer of a model directory (any registered format);
    refused for a model without a trained masked-LM head (`check_mask_head`)."""
    check_mask_head(str(model_path))
    tokenizer = load_model_tokenizer(model_path)
    model, params = load_pretrained(model_path)
    return fill_mask(model, params, tokenizer, text, top_k=top_k)


def fill_mask(model, params, tokenizer, text: str, *, top_k: int = 5) -> list[list[dict[str, Any]]]:
    """Top-k predictions for each [MASK] in `text`.

    Args:
      model: A model with the MLM head (e.g. from `bertjax.load_pretrained`).
      params: Its unboxed parameters.
      tokenizer: A `tokenizers.Tokenizer` that keeps [MASK] whole and adds [CLS] ... [SEP].
      text: The input; must contain at least one [MASK].
      top_k: Predictions per mask.

    Returns:
      One list per mask, in text order, of `top_k` dicts with `score` (the softmax probability),
      `token` (id), `token_str` and `sequence` (the text with this mask filled in; with several
      masks special tokens are kept, as in transformers' pipeline).
    """
    import jax

    mask_id = tokenizer.token_to_id(MASK)
    if mask_id is None:
        raise ValueError(f"the vocabulary has no {MASK} token")
    encoding = tokenizer.encode(text)
    ids = np.asarray(encoding.ids, np.int32)
    positions = np.flatnonzero(ids == mask_id)
    if positions.size == 0:
        raise ValueError(f"the text has no {MASK} token: {text!r}")
    limit = getattr(model.config, "max_position_embeddings", None)  # None: recurrent, any length
    if limit is not None and ids.size > limit:
        raise ValueError(f"the text is {ids.size} tokens long; the model takes at most {limit}")
    inputs = {
        "input_ids": ids[None],
        "token_type_ids": np.asarray(encoding.type_ids, np.int32)[None],
        "attention_mask": np.asarray(encoding.attention_mask, np.int32)[None],
        "masked_positions": positions[None],
    }
    out = model.apply({"params": params}, inputs, only=("mlm",))
    probs = np.asarray(jax.nn.softmax(out["mlm_logits"][0], axis=-1))  # [masks, vocab]
    results = []
    for position, row in zip(positions, probs, strict=True):
        top = np.argsort(-row, kind="stable")[:top_k]
        predictions = []
        for token in top:
            filled = ids.copy()
            filled[position] = token
            predictions.append(
                {
                    "score": float(row[token]),
                    "token": int(token),
                    "token_str": tokenizer.decode([int(token)]),
                    "sequence": tokenizer.decode(
                        filled.tolist(), skip_special_tokens=positions.size == 1
                    ),
                }
            )
        results.append(predictions)
    return results


def check_mask_head(path: str) -> None:
    """Raises unless the model at `path` holds a trained masked-LM head: a fine-tuned model has
    a task head instead, and a head `import-hf` initialised fresh would answer at random."""
    path_ = pathlib.Path(path)
    for root in (path_, path_.parent):
        if (root / "finetune.json").is_file():
            raise ValueError(
                f"{path} is a fine-tuned model: it has a task head, no masked-LM head; "
                f"use `bertjax predict {root}`"
            )
    if formats.detect_format(path_) == "hf":
        heads = formats.load_partial(path_)[2]
        untrained, source = ([] if "mlm" in heads else ["mlm"]), path
    else:
        untrained, source = model_dir.fresh_heads(path_), "import-hf"
    if "mlm" in untrained:
        raise ValueError(
            f"{path} has no trained masked-LM head ({source} initialised it fresh: the "
            "checkpoint has none), so its predictions would be random; train it first, e.g. "
            f"bertjax pretrain --config configs/base.py --config.init_from={path} "
            "--config.objective=mlm ... (README: Continued pretraining)"
        )
