"""Task predictions of a fine-tuned model: `predictor(path)(inputs)` and `bertjax predict`.

The model is a fine-tuning workdir (or its `model/`): `finetune.json` gives the task kind, the
label names and the task config the featurizer needs (max_len, doc_stride, columns, ...). Inputs
are featurized by the task's own featurizer, run through the trainer's `predict_step` longest
first in batches padded to a few bucket lengths (outputs back in input order), and turned into one record per input by the task's `records` (its evaluation
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

import jax
import ml_collections
import numpy as np

from bertjax import sharding, tasks
from bertjax.inference.batches import UNUSED_OUTPUTS
from bertjax.inference.embed import bucket_length
from bertjax.inference.runtime import Runtime, build_runtime
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


def not_finetuned_message(path: str | pathlib.Path) -> str:
    """Why `path` cannot predict: an unfinished fine-tuning run (checkpoints, no model yet: the
    same command resumes it) or not a fine-tuned model at all."""
    path = pathlib.Path(path)
    if (path / "data_stats.json").is_file() and not (path / TASK_FILE).is_file():
        return (
            f"{path} is an unfinished fine-tuning run (no {MODEL_DIR}/ yet): rerun the "
            "same `bertjax finetune` command to resume it, then predict"
        )
    return (
        f"{path} is not a fine-tuned model: expected a fine-tuning workdir (with "
        f"{TASK_FILE} and {MODEL_DIR}/) or its {MODEL_DIR}/"
    )


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
            raise FileNotFoundError(not_finetuned_message(path))
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
        outputs = predict_by_length(self.runtime, features, progress=progress)
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


def predict_by_length(runtime: Runtime, features, *, progress=None) -> dict[str, np.ndarray]:
    """The trainer's `predict_step` over `features`, longest first, each batch cut to a bucket
    length (`bucket_length`: few shapes, few compiles) and per-token outputs padded back.

    Args:
      runtime: the compiled steps and placed parameters.
      features: the featurized inputs, `arrays` int32 [N, max_len], padding on the right.
      progress: a tqdm-like bar to `update(rows)` after each batch, or None.

    Returns:
      {output name: float32 [N, ...]} in feature order, as `inference.batches.predict_features` gives
      them; per-token outputs ([N, max_len, ...]) hold -1e9 beyond each batch's bucket.
    """
    arrays = {k: v for k, v in features.arrays.items() if k in runtime.input_fields}
    n, max_len = arrays["input_ids"].shape
    lengths = np.asarray(features.arrays["attention_mask"]).sum(axis=1)
    order = np.argsort(-lengths, kind="stable")
    per_token = token_outputs(runtime, max_len)
    batch, outputs = runtime.batch_size, {}
    for start in range(0, n, batch):
        index = order[start : start + batch]
        rows = np.concatenate([index, np.full(batch - len(index), index[-1])])
        length = bucket_length(int(lengths[index[0]]), max_len)
        local = {k: v[rows, :length] for k, v in arrays.items()}
        out = runtime.steps.predict_step(
            runtime.params, sharding.global_batch(local, runtime.steps.mesh)
        )
        for k, v in jax.device_get(out).items():
            if k in UNUSED_OUTPUTS:
                continue
            if k not in outputs:
                shape = (n, max_len, *v.shape[2:]) if k in per_token else (n, *v.shape[1:])
                outputs[k] = np.full(shape, -1e9 if k in per_token else 0, np.float32)
            outputs[k][index, : v.shape[1] if k in per_token else None] = v[: len(index)]
        if progress is not None:
            progress.update(len(index))
    return outputs


def token_outputs(runtime: Runtime, max_len: int) -> frozenset[str]:
    """The names of the step's outputs with a length axis (axis 1 follows the input length)."""
    steps, shapes = runtime.steps, []
    eval_shape = sharding.in_mesh(jax.eval_shape, steps.mesh, steps.rules)
    for length in (max_len, max_len - 1):
        batch = {
            k: jax.ShapeDtypeStruct((runtime.batch_size, length), np.int32)
            for k in runtime.input_fields
        }
        # the jitted step inside `predict_step`'s mesh wrapper, traced for shapes only
        shapes.append(eval_shape(steps.predict_step.__wrapped__, runtime.params, batch))
    return frozenset(k for k, v in shapes[0].items() if v.shape[1:2] != shapes[1][k].shape[1:2])


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
