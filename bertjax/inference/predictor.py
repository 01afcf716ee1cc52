"""Task predictions of a fine-tuned model: `predictor(path)(inputs)` and `bertjax predict`.

The model is a fine-tuning workdir (or its `model/`): `finetune.json` gives the task kind, the
label names and the task config the featurizer needs (max_len, doc_stride, columns, ...). Inputs
are featurized by the task's own featurizer, run through the trainer's `predict_step` in batches
of one shape, and turned into one record per input by the task's `records` (its evaluation
post-processing plus what a user needs: probabilities, entity offsets, answer spans).
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import pathlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO

import ml_collections

from bertjax import tasks
from bertjax.inference.batches import predict_features
from bertjax.inference.runtime import build_runtime
from bertjax.interop import model_dir
from bertjax.interop.finetuned_dir import (
    MODEL_DIR,
    TASK_FILE,
    finetuned_workdir,
    load_finetuned_params,
    read_task_file,
)
from bertjax.tasks.common import report_data_stats

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "tsv")


class Predictor:
    """Predictions of a fine-tuned model, one record per input.

    `Predictor(path)(["a text", ...])` returns, per input: classification `{"label",
    "probabilities"}`, regression `{"score"}`, tagging `{"tokens", "tags", "entities"}` (each
    entity `{"type", "text", "start", "end"}`, character offsets into the input text), QA
    `{"id", "answer", "start", "end", "score"}` (inputs are `(question, context)` pairs or
    `{"question", "context"}` dicts). Classification inputs may be `(text_a, text_b)` pairs or
    a text with a tab between the two.

    Attributes:
      kind: the task kind.
      task_cfg: the fine-tuning task config (from `finetune.json`).
      task: the task object (featurizer, post-processing).
      tokenizer: the model's tokenizer.
      runtime: the compiled steps and placed parameters.
      stats: featurizer counts summed over every call (truncations, windows, ...).
    """

    def __init__(self, path: str | pathlib.Path, *, batch_size: int = 32):
        root = finetuned_workdir(path)
        if root is None:
            raise FileNotFoundError(
                f"{path} is not a fine-tuned model: expected a fine-tuning workdir (with "
                f"{TASK_FILE} and {MODEL_DIR}/) or its {MODEL_DIR}/"
            )
        saved = read_task_file(root)
        self.root, self.kind = root, saved["kind"]
        self.task_cfg = ml_collections.ConfigDict(saved["task"])
        self.module = tasks.task_module(self.kind)
        self.task = self.module.make_task(self.task_cfg, saved["label_names"])
        self.tokenizer = model_dir.load_model_tokenizer(root / MODEL_DIR)
        cfg, params = load_finetuned_params(root)
        self.runtime = build_runtime(
            cfg, self.task.heads, params, batch_size=batch_size, seq_len=self.task_cfg.max_len
        )
        self.stats: collections.Counter = collections.Counter()

    def __call__(self, inputs: Sequence[Any]) -> list[dict[str, Any]]:
        """Records of raw inputs (texts, pairs, QA questions), in order."""
        examples = [self.module.from_input(x, i) for i, x in enumerate(inputs)]
        return self.predict_examples(examples)

    def predict_examples(self, examples: Sequence, progress=None) -> list[dict[str, Any]]:
        """Records of examples as the task's reader gives them, in order."""
        if not examples:
            return []
        features = self.task.featurize(self.task_cfg, examples, self.tokenizer, training=False)
        self.stats.update(features.stats)
        outputs = predict_features(
            self.runtime.steps,
            self.runtime.params,
            features,
            batch_size=self.runtime.batch_size,
            input_fields=self.runtime.input_fields,
            progress=progress,
        )
        return self.task.records(self.task_cfg, examples, features, outputs)

    def stream(
        self, examples: Iterable, *, chunk_size: int = 1024, progress=None
    ) -> Iterator[dict[str, Any]]:
        """Records of a long (lazy) sequence of examples, `chunk_size` examples at a time."""
        iterator = iter(examples)
        while chunk := list(itertools.islice(iterator, chunk_size)):
            yield from self.predict_examples(chunk, progress=progress)

    def read(self, path: str | pathlib.Path) -> Iterable:
        """The examples of an input file in the formats fine-tuning reads (labels optional)."""
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"--input {path} does not exist")
        return self.module.read(self.task_cfg, path, "predict")

    def report(self) -> None:
        """Logs the featurizer's warnings (truncated inputs, ...) summed over all calls."""
        report_data_stats("input", self.stats, self.task_cfg)


def predictor(path: str | pathlib.Path, *, batch_size: int = 32) -> Predictor:
    """A `Predictor` for a fine-tuned workdir or its `model/` (see `Predictor`)."""
    return Predictor(path, batch_size=batch_size)


class RecordWriter:
    """Writes records as JSONL (one object a line) or TSV (a header of the first record's keys;
    values that are not strings or numbers as JSON)."""

    def __init__(self, out: TextIO, fmt: str):
        if fmt not in FORMATS:
            raise ValueError(f"--format={fmt!r} is invalid: allowed values are {FORMATS}")
        self.out, self.fmt, self.columns = out, fmt, None

    def write(self, record: dict[str, Any]) -> None:
        if self.fmt == "jsonl":
            self.out.write(json.dumps(record, ensure_ascii=False) + "\n")
            return
        if self.columns is None:
            self.columns = list(record)
            self.out.write("\t".join(self.columns) + "\n")
        self.out.write("\t".join(_cell(record.get(c)) for c in self.columns) + "\n")


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value.replace("\t", " ").replace("\n", " ")
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return " ".join(value)
    return json.dumps(value, ensure_ascii=False)


def output_format(out: str | pathlib.Path | None, fmt: str | None) -> str:
    """`fmt`, else "tsv" for an `.tsv` output file, else "jsonl"."""
    if fmt:
        return fmt
    return "tsv" if out is not None and str(out).lower().endswith(".tsv") else "jsonl"


def predict_file(
    model: Predictor,
    examples: Iterable,
    out: str | pathlib.Path | None = None,
    *,
    fmt: str | None = None,
    chunk_size: int = 1024,
    progress: bool = True,
) -> int:
    """Streams predictions of `examples` (e.g. `model.read(path)`) to `out` (stdout if None),
    writing each chunk as it is done. Returns the number of records written."""
    from tqdm import tqdm

    fmt = output_format(out, fmt)
    handle = sys.stdout if out is None else open(out, "w", encoding="utf-8")  # noqa: SIM115
    bar = tqdm(desc="predict", unit="feature", disable=not progress, file=sys.stderr)
    try:
        writer, count = RecordWriter(handle, fmt), 0
        for record in model.stream(examples, chunk_size=chunk_size, progress=bar):
            writer.write(record)
            count += 1
        handle.flush()
    finally:
        bar.close()
        if out is not None:
            handle.close()
    model.report()
    return count
