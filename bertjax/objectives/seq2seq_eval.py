"""BLEU and chrF of held-out translations (host side of the `seq2seq` objective's evaluation).

The first `eval_translations` pairs of the eval split are translated greedily
(`seq2seq_decoding.translate_ids`) and scored with sacrebleu's corpus BLEU and chrF (default
signatures) on detokenised text: the translations and the references are the tokenizer's
decoding of the ids (the reference is the prepared target, so a target cut to
`data.max_target_len` is scored cut).
"""

from __future__ import annotations

import jax
import numpy as np
import sacrebleu

from bertjax.data import tokenizer as tokenizer_lib
from bertjax.models import seq2seq_decoding


def scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """sacrebleu's corpus BLEU and chrF (default signatures) of detokenised text."""
    return {
        "bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
        "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score,
    }


def eval_pairs(source, n: int) -> tuple[list[list[int]], list[list[int]]]:
    """Source ids (`</s>` included) and target ids (without `</s>`) of the first n pairs."""
    sources, targets = [], []
    for index in range(min(n, len(source))):
        example = source[index]
        sources.append(example["input_ids"][example["attention_mask"] > 0].tolist())
        labels = example["labels"]
        targets.append(labels[labels >= 0][:-1].tolist())
    return sources, targets


def bleu_chrf(objective, model, params, source) -> dict[str, float]:
    """`scores` of greedy translations of the first `objective.eval_translations` pairs."""
    tok = objective.tokenizer
    special = tokenizer_lib.special_token_ids(tok, objective.vocab_path)
    sources, targets = eval_pairs(source, objective.eval_translations)
    hypotheses, _ = seq2seq_decoding.translate_ids(
        model,
        jax.device_get(params),
        sources,
        start_id=special["pad"],
        eos_id=special["eos"],
        pad_id=special["pad"],
        max_len=objective.max_decode_len,
    )
    decode = lambda ids: tok.decode([int(i) for i in np.asarray(ids)], skip_special_tokens=True)
    return scores([decode(h) for h in hypotheses], [decode(t) for t in targets])
