"""`bertjax generate MODEL PROMPT`: continue a prompt with a causal model (GPT)
(`bertjax.inference.generate`)."""

from __future__ import annotations

import argparse
import json
import sys

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


def run(args: argparse.Namespace) -> int:
    from bertjax.inference.generate import generate_text

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
