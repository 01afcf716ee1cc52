"""Translation pairs (sequence to sequence): the source and target ids of each parallel row.

Documents are (source, target) pairs read by `bertjax.data.parallel` (`read_documents`, with
`config.data.reader`); each side is tokenised with its side of the tokenizer (a SentencePiece
folder's `source.spm` and `target.spm`), ends with `</s>`, and is cut to `max_seq_len` source
and `max_target_len` target tokens (`</s>` kept last; counted as `pairs_truncated`).

Examples are the seq2seq protocol's fields (Marian's layout): the source `input_ids` and
`attention_mask` [S]; the decoder's input, the target shifted right after the start token
(`<pad>`, as Marian), `decoder_input_ids` and `decoder_attention_mask` [T]; and `labels` [T],
the target, -100 where there is no token.
"""

from __future__ import annotations

import numpy as np

from bertjax.data import parallel, tokenizer_kinds
from bertjax.data.instances.base import Worker

FIELDS = ("input_ids", "lengths", "target_ids", "target_lengths")
MIN_SENTENCES = 2  # a document is one pair: [source, target]
ENTITIES = False
PACKABLE = False
SPECIALS = ("eos", "pad")
EXAMPLE_FIELDS = (
    "input_ids",
    "attention_mask",
    "decoder_input_ids",
    "decoder_attention_mask",
    "labels",
)
IGNORE = -100  # labels where there is no target token


def read_documents(paths, stats, options):
    """Each pair of the parallel files as a document [source, target]."""
    for source, target in parallel.read_pairs(paths, options or {}, stats):
        yield [source, target]


def _target_tokenizer(worker: Worker):
    if "target" not in worker.cache:
        path = worker.settings.vocab_path
        kind = tokenizer_kinds.kind_of(path)
        sided = kind == "sentencepiece"  # Marian folders: one model per side
        worker.cache["target"] = (
            tokenizer_kinds.get(kind).load(path, side="target") if sided else worker.tokenizer
        )
    return worker.cache["target"]


def encode_side(tokenizer, texts: list[str], eos_id: int, max_len: int) -> tuple[list, list]:
    """Token ids of each text followed by `eos_id`, at most `max_len` of them (`eos_id` last),
    and whether each text was cut."""
    ids = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    cut = [len(i) >= max_len for i in ids]
    return [[*i[: max_len - 1], eos_id] for i in ids], cut


def build(chunk_index: int, documents: list[list[str]], worker: Worker) -> tuple[dict, dict]:
    """One chunk's pairs -> `FIELDS` arrays: ids padded with `<pad>`, lengths with `</s>`."""
    del chunk_index  # no random choices
    settings, eos, pad = worker.settings, worker.special["eos"], worker.special["pad"]
    source_len, target_len = settings.max_seq_len, settings.max_target_len
    if target_len < 2:
        raise ValueError(f"config.data.max_target_len={target_len} must be >= 2")
    src, src_cut = encode_side(worker.tokenizer, [d[0] for d in documents], eos, source_len)
    tgt, tgt_cut = encode_side(
        _target_tokenizer(worker), [d[1] for d in documents], eos, target_len
    )
    arrays = {
        "input_ids": _padded(src, source_len, pad, worker.ids_dtype),
        "lengths": np.array([len(s) for s in src], np.uint16),
        "target_ids": _padded(tgt, target_len, pad, worker.ids_dtype),
        "target_lengths": np.array([len(t) for t in tgt], np.uint16),
    }
    cut = sum(a or b for a, b in zip(src_cut, tgt_cut, strict=True))
    return arrays, {"documents": len(documents), "pairs_truncated": cut}


def _padded(rows: list[list[int]], length: int, pad: int, dtype) -> np.ndarray:
    out = np.full((len(rows), length), pad, dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def example(arrays, row: int, attention_mask: np.ndarray, source) -> dict[str, np.ndarray]:
    """The protocol's fields of one pair (see the module); `attention_mask` is the source's."""
    pad = int(source.metadata["special_ids"]["pad"])
    target = arrays["target_ids"][row].astype(np.int32)
    n = int(arrays["target_lengths"][row])
    decoder_input_ids = np.full(target.shape, pad, np.int32)
    decoder_input_ids[1:n] = target[: n - 1]
    decoder_attention_mask = np.zeros(target.shape, np.int32)
    decoder_attention_mask[:n] = 1
    labels = np.where(decoder_attention_mask > 0, target, IGNORE).astype(np.int32)
    return {
        "input_ids": arrays["input_ids"][row].astype(np.int32),
        "attention_mask": attention_mask,
        "decoder_input_ids": decoder_input_ids,
        "decoder_attention_mask": decoder_attention_mask,
        "labels": labels,
    }
