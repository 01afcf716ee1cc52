"""Continuing prompts with a causal model (GPT) of a model directory (`bertjax generate`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bertjax.data.tokenizer import END_OF_TEXT
from bertjax.interop.formats import load_pretrained
from bertjax.interop.model_dir import load_model_tokenizer
from bertjax.models.decoding import generate


def generate_text(
    model_path: str,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Continues each prompt with the model at `model_path` (one batch, left-padded).

    Returns:
      Per prompt: `prompt`, `text` (the continuation) and `tokens` (its ids).
    """
    tokenizer = load_model_tokenizer(model_path)
    eos_id = tokenizer.token_to_id(END_OF_TEXT)
    if eos_id is None:
        raise ValueError(f"{model_path} has no {END_OF_TEXT} token: not a causal LM tokenizer")
    model, params = load_pretrained(model_path)
    if "lm" not in model.family.heads:
        raise ValueError(f"{model_path} is a {model.family.name!r} model; generate needs a GPT")
    ids = [tokenizer.encode(p, add_special_tokens=False).ids for p in prompts]
    new = generate(
        model,
        params,
        ids,
        eos_id=eos_id,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
    )
    return [
        {"prompt": p, "text": tokenizer.decode(t), "tokens": t}
        for p, t in zip(prompts, new, strict=True)
    ]
