"""Translating with an encoder-decoder model directory (`bertjax translate`).

`translate(model_dir, texts, beams=...)` tokenises the sources with the model's SentencePiece
tokenizer (`source.spm`; `</s>` appended as Marian does), decodes greedily or with beam search
(`models.seq2seq_decoding.translate_ids`, the decoder starting from `<pad>`) and detokenises.
`scores` gives sacrebleu's BLEU and chrF against references; `draw_attention` draws the attention
of the recurrent model (or the Transformer's cross-attention) as heatmaps, source tokens across,
target tokens down.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from bertjax.data.tokenizer import special_token_ids
from bertjax.interop.formats import load_pretrained
from bertjax.interop.model_dir import load_model_tokenizer, vocab_file
from bertjax.models import seq2seq_decoding

MAX_LEN = 128  # the longest translation by default (tokens, </s> included)


def translate(
    model_dir: str | pathlib.Path,
    texts: Sequence[str],
    *,
    beams: int = 1,
    max_len: int = MAX_LEN,
    length_penalty: float = 1.0,
    with_attention: bool = False,
) -> list[dict[str, Any]]:
    """Translates `texts` with the encoder-decoder model at `model_dir`.

    Args:
      model_dir: a bertjax model directory or pretraining workdir of an encoder-decoder family
        (`rnn_seq2seq`, `marian`) with its SentencePiece tokenizer.
      texts: source sentences.
      beams: 1 is greedy; more is beam search.
      max_len: the most target tokens per sentence (`</s>` included).
      length_penalty: beam search's length normalisation exponent.
      with_attention: also return each translation's attention.

    Returns:
      Per text: `source`, `translation` (detokenised), `source_tokens` and `target_tokens`
      (the pieces) and, with `with_attention`, `attention` float32 [target, source] (None for a
      model without attention, `attention="none"`).
    """
    model, params = load_pretrained(model_dir)
    if "decoder_input_ids" not in model.family.input_fields:
        raise ValueError(
            f"{model_dir} is a {model.family.name!r} model; translate needs an encoder-decoder "
            "(rnn_seq2seq, marian)"
        )
    tokenizer = load_model_tokenizer(model_dir)
    special = special_token_ids(tokenizer, str(vocab_file(model_dir)))
    if "pad" not in special or "eos" not in special:
        raise ValueError(f"{model_dir}'s tokenizer is not a Marian SentencePiece tokenizer")
    limit = getattr(model.config, "max_position_embeddings", None)
    max_len = min(max_len, limit) if limit else max_len
    sources = [tokenizer.encode(t).ids for t in texts]
    attends = getattr(model.config, "attention", "") != "none"  # the bottleneck model has none
    targets, attention = seq2seq_decoding.translate_ids(
        model,
        params,
        sources,
        start_id=special["pad"],
        eos_id=special["eos"],
        pad_id=special["pad"],
        max_len=max_len,
        beams=beams,
        length_penalty=length_penalty,
        with_attention=with_attention and attends,
    )
    results = []
    for index, (text, source, target) in enumerate(zip(texts, sources, targets, strict=True)):
        result = {
            "source": text,
            "translation": tokenizer.decode(target, skip_special_tokens=True),
            "source_tokens": [tokenizer.id_to_token(i) for i in source],
            "target_tokens": [tokenizer.id_to_token(i) for i in target],
        }
        if with_attention:
            result["attention"] = np.asarray(attention[index]) if attends else None
        results.append(result)
    return results


def scores(translations: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """sacrebleu's corpus BLEU and chrF (default signatures) of detokenised text."""
    if len(translations) != len(references):
        raise ValueError(
            f"{len(references)} references for {len(translations)} translations: one a line"
        )
    from bertjax.objectives.seq2seq_eval import scores as sacrebleu_scores

    return sacrebleu_scores(list(translations), list(references))


def draw_attention(results: Sequence[dict], path: str | pathlib.Path, limit: int = 8) -> None:
    """Writes the attention of the first `limit` translations as heatmaps into one PNG: source
    tokens across, target tokens (with `</s>`) down, one panel per sentence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in results if r.get("attention") is not None][:limit]
    if not shown:
        raise ValueError("the model has no attention to draw (attention='none')")
    fig, axes = plt.subplots(len(shown), 1, figsize=(8, 4 * len(shown)), squeeze=False)
    for ax, result in zip(axes[:, 0], shown, strict=True):
        weights = result["attention"]
        rows = [*result["target_tokens"], "</s>"][: weights.shape[0]]
        ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(weights.shape[1]), result["source_tokens"][: weights.shape[1]])
        ax.set_yticks(range(len(rows)), rows)
        ax.tick_params(axis="x", labelrotation=90)
        ax.set_xlabel("source")
        ax.set_ylabel("target")
        ax.set_title(result["translation"][:80])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
