"""`bertjax generate MODEL PROMPT`: continue a prompt with a causal model (GPT)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

HELP = "Continue a text with a causal language model (a GPT model directory or workdir)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"{HELP} MODEL is a bertjax GPT model directory, a training workdir or a transformers "
        "GPT-2 directory. Decoding stops at <|endoftext|> or after --max-new-tokens; "
        "temperature 0 is greedy."
    )
    parser.add_argument("model", metavar="MODEL", help="bertjax or transformers GPT directory")
    parser.add_argument("prompt", metavar="PROMPT", help="the text to continue ('' starts fresh)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="default 64")
    parser.add_argument("--temperature", type=float, default=1.0, help="0: greedy (default 1)")
    parser.add_argument("--top-k", type=int, default=0, help="sample among k tokens (0: all)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus mass (1: all)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print JSON: prompt, text, tokens")


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
    from bertjax.data.tokenizer import END_OF_TEXT
    from bertjax.interop.model_dir import load_model_tokenizer, load_pretrained
    from bertjax.models.decoding import generate

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


def run(args: argparse.Namespace) -> int:
    try:
        (result,) = generate_text(
            args.model,
            [args.prompt],
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
        )
    except (ValueError, OSError) as e:
        print(f"bertjax generate: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else result["prompt"] + result["text"])
    return 0
