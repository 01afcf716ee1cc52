"""Sentence embeddings of any encoder: `Embedder(path)(texts)` and `bertjax embed`.

The model is a bertjax model directory, a pretraining workdir, a fine-tuning workdir (its
`model/`) or a transformers directory. Texts are tokenized with the model's tokenizer
(`[CLS] text [SEP]`, cut to `max_len`), sorted by length, padded to a few bucket lengths (one
compile each; rows return to input order) and
pooled on the device: the `[CLS]` state, the mean of the real tokens' states (what
sentence-transformers' MiniLM models use) or the pooler output; optionally L2-normalised.
"""

from __future__ import annotations

import functools
import itertools
import json
import pathlib
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from bertjax import sharding
from bertjax.data.text import TextFile
from bertjax.inference.runtime import build_runtime
from bertjax.interop import finetuned_dir, formats, model_dir
from bertjax.models.predict import predict_step

POOLINGS = ("cls", "mean", "pooler")
MIN_BUCKET = 8  # shortest padded length, and the step of the shortest buckets
BUCKETS_PER_DOUBLING = 4  # 8, 16, 24, ..., 64, 80, 96, ...: at most 25% padding from 32 on


def pool(outputs, attention_mask, *, pooling: str, normalize: bool):
    """Pools the backbone's outputs into one vector per sequence.

    Args:
      outputs: `sequence_output` [batch, length, hidden] and `pooled_output` [batch, hidden].
      attention_mask: int [batch, length], 1 on real tokens.
      pooling: "cls", "mean" (over real tokens) or "pooler".
      normalize: divide each vector by its L2 norm.

    Returns:
      float32 [batch, hidden].
    """
    states = outputs["sequence_output"].astype(jnp.float32)
    if pooling == "cls":
        vectors = states[:, 0]
    elif pooling == "mean":
        mask = attention_mask.astype(jnp.float32)[..., None]
        vectors = jnp.sum(states * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1e-9)
    else:
        vectors = outputs["pooled_output"].astype(jnp.float32)
    if normalize:
        norm = jnp.linalg.norm(vectors, axis=-1, keepdims=True)
        vectors = vectors / jnp.maximum(norm, 1e-12)
    return vectors


def embed_step(params, batch, *, model, pooling: str, normalize: bool):
    """The trainer's `predict_step`, then `pool`: float32 [batch, hidden]."""
    outputs = predict_step(params, batch, model=model)
    return pool(outputs, batch["attention_mask"], pooling=pooling, normalize=normalize)


def encoder_dir(path: str | pathlib.Path) -> pathlib.Path:
    """The model directory of `path`: a fine-tuning workdir's `model/`, else `path` itself."""
    root = finetuned_dir.finetuned_workdir(path)
    return root / finetuned_dir.MODEL_DIR if root is not None else pathlib.Path(path)


class Embedder:
    """One vector per text from an encoder's hidden states.

    Attributes:
      pooling, normalize, max_len: as passed (max_len capped by the model's positions; 0: the
        sentence-transformers `max_seq_length` of the directory, else the model's limit).
      tokenizer: the model's tokenizer.
      runtime: the compiled steps and placed backbone parameters.
    """

    def __init__(
        self,
        path: str | pathlib.Path,
        *,
        pooling: str = "mean",
        normalize: bool = False,
        batch_size: int = 32,
        max_len: int = 0,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"--pooling={pooling!r} is invalid: allowed values are {POOLINGS}")
        source = encoder_dir(path)
        cfg, params = formats.load_params(source, with_heads=False)
        self.tokenizer = model_dir.load_model_tokenizer(source)
        limit = getattr(cfg, "max_position_embeddings", None)  # None: any length (recurrent)
        max_len = max_len or sentence_transformers_max_len(source)
        if limit is None:
            self.max_len = max_len if max_len > 0 else 512
        else:
            self.max_len = min(max_len, limit) if max_len > 0 else limit
        self.pooling, self.normalize = pooling, normalize
        self.runtime = build_runtime(
            cfg, (), {"backbone": params["backbone"]}, batch_size=batch_size, seq_len=MIN_BUCKET
        )
        steps = self.runtime.steps
        inputs = {k: sharding.batch_sharding(steps.mesh, 2) for k in self.runtime.input_fields}
        step = functools.partial(
            embed_step, model=self.runtime.model, pooling=pooling, normalize=normalize
        )
        self._step = sharding.in_mesh(
            jax.jit(
                step,
                in_shardings=(steps.param_shardings, inputs),
                out_shardings=NamedSharding(steps.mesh, PartitionSpec()),
            ),
            steps.mesh,
            steps.rules,
        )

    @property
    def dim(self) -> int:
        return int(self.runtime.model.config.hidden_size)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), hidden] vectors, in order."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        batch = self.runtime.batch_size
        ids = self._encode(texts)
        # Longest first, so each batch pads to its own bucket; rows go back to input order.
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = np.empty((len(ids), self.dim), np.float32)
        for start in range(0, len(ids), batch):
            index = order[start : start + batch]
            out[index] = self._embed_batch([ids[i] for i in index], batch)[: len(index)]
        return out

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        """`[CLS] text [SEP]` ids of each text, cut to `max_len` (the final [SEP] kept)."""
        encodings = self.tokenizer.encode_batch(texts)
        out = []
        for encoding in encodings:
            ids = encoding.ids
            out.append(ids if len(ids) <= self.max_len else ids[: self.max_len - 1] + ids[-1:])
        return out

    def _embed_batch(self, rows: list[list[int]], batch: int) -> np.ndarray:
        length = bucket_length(max(len(r) for r in rows), self.max_len)
        pad = self.runtime.model.config.pad_token_id
        arrays = {
            "input_ids": np.full((batch, length), pad, np.int32),
            "token_type_ids": np.zeros((batch, length), np.int32),
            "attention_mask": np.zeros((batch, length), np.int32),
        }
        for i, r in enumerate(rows):
            arrays["input_ids"][i, : len(r)] = r
            arrays["attention_mask"][i, : len(r)] = 1
        arrays["attention_mask"][len(rows) :, 0] = 1  # filler rows: one token, no NaN
        local = {k: v for k, v in arrays.items() if k in self.runtime.input_fields}
        out = self._step(self.runtime.params, sharding.global_batch(local, self.runtime.steps.mesh))
        return np.asarray(jax.device_get(out))


def sentence_transformers_max_len(path: pathlib.Path) -> int:
    """The `max_seq_length` of a sentence-transformers directory (its `sentence_bert_config.json`:
    what the model was trained and is used at, 256 for all-MiniLM-L6-v2), else 0."""
    config = pathlib.Path(path) / "sentence_bert_config.json"
    if not config.is_file():
        return 0
    return int(json.loads(config.read_text(encoding="utf-8")).get("max_seq_length") or 0)


def bucket_length(n: int, max_len: int) -> int:
    """The padded length of a batch whose longest row has `n` tokens, at most `max_len`.

    `n` rounded up to a multiple of its step: the largest power of two (at least `MIN_BUCKET`)
    that is at most `n / BUCKETS_PER_DOUBLING`. From 32 tokens on a batch pads at most 25% beyond
    its longest row (power-of-two buckets padded up to 100%: 44% more encoder positions than
    sentence-transformers' pad-to-the-longest on 10,000 ko-wikipedia sentences), at the cost of 4
    shapes (compiles) per doubling: 16 up to 256 (benchmarks/RESULTS.md, inference).
    """
    step = MIN_BUCKET
    while step * 2 * BUCKETS_PER_DOUBLING <= n:
        step *= 2
    return min(-(-n // step) * step, max_len)


def read_lines(path: str | pathlib.Path) -> Iterable[str]:
    """The lines of a text file (newline removed), lazily; every line is one text."""
    with TextFile(path, "an --input file") as f:
        for line in f:
            yield line.rstrip("\r\n")


def embed_file(
    model: Embedder,
    input_path: str | pathlib.Path,
    out_path: str | pathlib.Path,
    *,
    chunk_size: int = 4096,
    progress: bool = True,
) -> tuple[int, int]:
    """Embeds every line of `input_path` into the `.npy` file `out_path` (float32 [lines,
    hidden], row i = line i), `chunk_size` lines at a time. Returns the array's shape."""
    from tqdm import tqdm

    input_path = pathlib.Path(input_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"--input {input_path} does not exist")
    with open(input_path, "rb") as f:  # lines as TextFile splits them
        n = sum(1 for _ in f)
    shape = (n, model.dim)
    out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.float32, shape=shape)
    lines, row = iter(read_lines(input_path)), 0
    with tqdm(total=n, desc="embed", unit="text", disable=not progress) as bar:
        while chunk := list(itertools.islice(lines, chunk_size)):
            out[row : row + len(chunk)] = model(chunk)
            row += len(chunk)
            bar.update(len(chunk))
    out.flush()
    del out
    return shape
