"""`bertjax translate MODEL (--text T ... | --input FILE [--out FILE])`: translate with an
encoder-decoder model (`bertjax.inference.translate`)."""

from __future__ import annotations

import argparse
import pathlib
import sys

HELP = "Translate sentences with an encoder-decoder model (rnn_seq2seq, marian)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"{HELP} MODEL is a bertjax model directory or pretraining workdir. Translations are "
        "printed one a line (or written to --out); with --references, BLEU and chrF "
        "(sacrebleu) go to stderr."
    )
    parser.add_argument("model", metavar="MODEL", help="model directory or workdir")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", nargs="+", help="sentences to translate")
    source.add_argument("--input", metavar="FILE", help="a file of sentences, one a line")
    parser.add_argument("--out", metavar="FILE", help="write the translations here")
    parser.add_argument("--beam", type=int, default=1, help="beam size (default 1: greedy)")
    parser.add_argument("--max-len", type=int, default=128, help="target tokens (default 128)")
    parser.add_argument("--length-penalty", type=float, default=1.0, help="beam search's")
    parser.add_argument("--references", metavar="FILE", help="reference translations, one a line")
    parser.add_argument("--attention-png", metavar="FILE", help="draw the attention (heatmaps)")


def _lines(path: str) -> list[str]:
    return pathlib.Path(path).read_text(encoding="utf-8").splitlines()


def run(args: argparse.Namespace) -> int:
    from bertjax.inference import translate as translate_lib

    try:
        texts = args.text or _lines(args.input)
        results = translate_lib.translate(
            args.model,
            texts,
            beams=args.beam,
            max_len=args.max_len,
            length_penalty=args.length_penalty,
            with_attention=bool(args.attention_png),
        )
        translations = [r["translation"] for r in results]
        metrics = (
            translate_lib.scores(translations, _lines(args.references)) if args.references else {}
        )
        if args.attention_png:
            translate_lib.draw_attention(results, args.attention_png)
    except (ValueError, OSError) as e:
        print(f"bertjax translate: error: {e}", file=sys.stderr)
        return 2
    text = "".join(t + "\n" for t in translations)
    if args.out:
        pathlib.Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    if metrics:
        print(f"BLEU {metrics['bleu']:.2f}  chrF {metrics['chrf']:.2f}", file=sys.stderr)
    return 0
