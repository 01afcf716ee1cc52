"""Zero- and few-shot classification with a causal LM: a template, a verbalizer, log-likelihood.

Each example is written into `template` (e.g. "Review: {text}\nSentiment:"), after optional
solved demonstrations (few-shot), and every label's verbalizer word (e.g. " positive") is scored
by the sum of its tokens' log-probabilities given that prompt; the most likely label wins.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def prompt_text(template: str, text: str, shots: Sequence[tuple[str, str]] = ()) -> str:
    """The prompt of one example: the solved `shots` (text, verbalized label) then the example."""
    solved = "".join(template.format(text=t) + word + "\n\n" for t, word in shots)
    return solved + template.format(text=text)


@functools.cache
def _log_probs(model):
    def fn(params, ids, mask):
        out = model.apply({"params": params}, {"input_ids": ids, "attention_mask": mask})
        logp = jax.nn.log_softmax(out["lm_logits"][:, :-1], axis=-1)
        return jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]  # [B, L - 1]

    return jax.jit(fn)


def score_choices(
    model,
    params,
    tokenizer,
    prompts: Sequence[str],
    choices: Sequence[str],
    *,
    batch_size: int = 32,
) -> np.ndarray:
    """Log-likelihood of each choice after each prompt.

    Args:
      model, params: a causal model with an "lm" head.
      tokenizer: its tokenizer (no special tokens are added).
      prompts: [N] prompt texts.
      choices: [C] continuations (verbalizer words, usually with a leading space).
      batch_size: sequences per forward pass.

    Returns:
      float32 [N, C]: sum over the choice's tokens of log p(token | prompt, earlier tokens).
    """
    limit = model.config.max_position_embeddings
    choice_ids = [tokenizer.encode(c, add_special_tokens=False).ids for c in choices]
    rows, spans = [], []
    for prompt in prompts:
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False).ids
        for ids in choice_ids:
            keep = limit - len(ids)
            rows.append(
                prompt_ids[max(0, len(prompt_ids) - keep) :] + ids
            )  # long prompts lose their start
            spans.append((len(rows[-1]) - len(ids), len(rows[-1])))
    length = max(len(r) for r in rows)
    scores = np.zeros(len(rows), np.float32)
    fn = _log_probs(model)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        ids = np.zeros((batch_size, length), np.int32)
        mask = np.zeros((batch_size, length), np.int32)
        for i, row in enumerate(chunk):
            ids[i, : len(row)], mask[i, : len(row)] = row, 1
        logp = np.asarray(fn(params, ids, mask))
        for i in range(len(chunk)):
            begin, end = spans[start + i]
            scores[start + i] = logp[i, begin - 1 : end - 1].sum()
    return scores.reshape(len(prompts), len(choices))


def classify(
    model,
    params,
    tokenizer,
    texts: Sequence[str],
    *,
    template: str,
    verbalizer: Mapping[str, str],
    shots: Sequence[tuple[str, str]] = (),
) -> list[str]:
    """The label of each text whose verbalizer word is most likely after its prompt.

    Args:
      template: with a `{text}` field, e.g. "Review: {text}\\nSentiment:".
      verbalizer: label -> the word the model should continue with, e.g. {"1": " positive"}.
      shots: (text, label) demonstrations put before every prompt (few-shot).
    """
    labels = list(verbalizer)
    solved = [(t, verbalizer[label]) for t, label in shots]
    prompts = [prompt_text(template, t, solved) for t in texts]
    scores = score_choices(model, params, tokenizer, prompts, [verbalizer[k] for k in labels])
    return [labels[i] for i in scores.argmax(axis=1)]
