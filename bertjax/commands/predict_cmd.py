"""`bertjax predict MODEL`: a fine-tuned model's predictions for a file or texts given inline."""

from __future__ import annotations

import argparse
import contextlib
import sys

from bertjax.commands import add_strict_utf8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Predict with a fine-tuned model. MODEL is a fine-tuning workdir or its model/. Input: "
        "--input FILE in the format the task was fine-tuned on (labels optional; a .txt file "
        "holds one text per line, a tab between a pair), or --text (repeatable), or for QA "
        "--question/--context. Output: one record per input, in input order, as JSONL (default) "
        "or TSV: classification {label, probabilities}, regression {score}, tagging {tokens, "
        "tags, entities with character offsets}, QA {id, answer, start, end, score}."
    )
    parser.add_argument("model", metavar="MODEL", help="fine-tuning workdir or its model/")
    parser.add_argument("--input", help="input file (TSV/CSV/JSONL, CoNLL, SQuAD JSON or .txt)")
    parser.add_argument("--text", action="append", default=[], help="a text (repeatable)")
    parser.add_argument(
        "--text-b", action="append", default=[], help="second segment of each --text (pairs)"
    )
    parser.add_argument("--question", action="append", default=[], help="QA: a question")
    parser.add_argument(
        "--context", action="append", default=[], help="QA: its context (one for all questions)"
    )
    parser.add_argument("--out", help="output file (default: stdout); .tsv writes TSV")
    parser.add_argument("--format", choices=("jsonl", "tsv"), help="output format")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per step")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_strict_utf8(parser)


def inline_inputs(args: argparse.Namespace) -> list:
    """The raw inputs given on the command line (texts, pairs or QA questions)."""
    if args.question:
        if len(args.context) not in (1, len(args.question)):
            raise ValueError("give one --context for all questions or one per --question")
        contexts = args.context * len(args.question) if len(args.context) == 1 else args.context
        return list(zip(args.question, contexts, strict=True))
    if args.text_b:
        if len(args.text_b) != len(args.text):
            raise ValueError(f"{len(args.text)} --text but {len(args.text_b)} --text-b")
        return list(zip(args.text, args.text_b, strict=True))
    return list(args.text)


def run(args: argparse.Namespace) -> int:
    from bertjax import storage
    from bertjax.commands import setup_logging
    from bertjax.inference import Predictor, predict_file

    setup_logging()
    inline = inline_inputs(args)
    if bool(args.input) == bool(inline):
        print(
            "bertjax predict: error: give either --input FILE or --text/--question",
            file=sys.stderr,
        )
        return 2
    model = Predictor(storage.input_path(args.model), batch_size=args.batch_size)
    if args.input:
        examples = model.read(storage.input_path(args.input))
    else:
        examples = [model.module.from_input(x, i) for i, x in enumerate(inline)]
    with storage.output(args.out) if args.out else contextlib.nullcontext() as out:
        count = predict_file(model, examples, out, fmt=args.format, progress=not args.no_progress)
    if args.out:
        print(f"wrote {count} predictions to {args.out}", file=sys.stderr)
    return 0
