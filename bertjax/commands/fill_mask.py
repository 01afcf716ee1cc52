"""`bertjax fill-mask MODEL TEXT`: top-k predictions of the MLM head for each [MASK] in TEXT."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

import numpy as np

HELP = "Predict the tokens behind each [MASK] in a text with a model's masked-LM head."
MASK = "[MASK]"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"{HELP} MODEL is a bertjax model directory or a transformers BERT directory; the text is "
        "tokenized with its vocab.txt (lowercasing as its tokenizer config says). For each [MASK] "
        "the top-k tokens are printed with their probabilities, as transformers' fill-mask "
        "pipeline reports them (score, token, token_str, sequence)."
    )
    parser.add_argument("model", metavar="MODEL", help="bertjax or transformers model directory")
    parser.add_argument("text", metavar="TEXT", help=f"text with at least one {MASK}")
    parser.add_argument("--top-k", type=int, default=5, help="predictions per mask (default 5)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON: a list of predictions for one mask, a list of such lists for several",
    )


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
    from bertjax.interop import model_dir

    path_ = pathlib.Path(path)
    for root in (path_, path_.parent):
        if (root / "finetune.json").is_file():
            raise ValueError(
                f"{path} is a fine-tuned model: it has a task head, no masked-LM head; "
                f"use `bertjax predict {root}`"
            )
    if model_dir.detect_format(path_) == "hf":
        heads = model_dir.load_partial(path_)[2]
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


def run(args: argparse.Namespace) -> int:
    from bertjax.interop.model_dir import load_model_tokenizer, load_pretrained

    try:
        check_mask_head(args.model)
        tokenizer = load_model_tokenizer(args.model)
        model, params = load_pretrained(args.model)
        results = fill_mask(model, params, tokenizer, args.text, top_k=args.top_k)
    except (ValueError, OSError, ImportError) as e:
        print(f"bertjax fill-mask: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
        return 0
    for i, predictions in enumerate(results, 1):
        print(f"{MASK} {i} of {len(results)}:")
        for p in predictions:
            print(f"  {p['score']:.4f}  {p['token_str']:<15}  {p['sequence']}")
    return 0
