"""Translation with an encoder-decoder family (`marian`, `rnn_seq2seq`): greedy and beam search,
jitted, batched, one `lax.while_loop` over the decoder's "cache" collection.

`translate_ids(model, params, src_ids, ...)` encodes the sources once (a model call without
`decoder_input_ids`, `only=()`: the memory arrays, leading dim batch), then decodes one token per
step (a call on the memory, `attention_mask` and `decoder_input_ids` [rows, 1] with a mutable
"cache", whose shapes come from `jax.eval_shape` of one call on [rows, max_len]). Beam search
keeps `beams` rows per source (the memory repeated) and reorders the cache by gathering every
cache array with `rows` = batch * beams along its row axis (axis 1 under a scanned layer stack,
whose first axis is the layer).

The search is that of transformers' `generate` for `MarianMTModel` (`do_sample=False`, its
default `early_stopping=False`), so outputs equal it token for token (tests): the pad token
(Marian's decoder start) is never generated (`bad_words_ids=[[pad]]`, as opus-mt's generation
configs set), the last step may only produce end-of-sequence (Marian's `forced_eos_token_id`);
beam search keeps the `beams` best running hypotheses of the `2 * beams` best continuations, and
the `beams` best finished ones scored `sum_logprobs / length**length_penalty` (length: the tokens
generated, end-of-sequence included), and stops a source when no running hypothesis can beat its
worst finished one at the current length.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

NEG = -1.0e9  # transformers' "impossible" score
BATCH = 32  # sources decoded per call (the last call is padded to it: one compile per length)
LENGTH_MULTIPLE = 8  # sources are padded to a multiple of this (fewer compiles)


def _constrain(scores: Array, step: Array, *, max_len: int, eos_id: int, pad_id: int) -> Array:
    """[rows, vocab] scores at `step` (0-based) with pad banned and, at the last step, only
    end-of-sequence left (score 0, as transformers' ForcedEOSTokenLogitsProcessor)."""
    vocab = jnp.arange(scores.shape[-1])
    scores = jnp.where(vocab == pad_id, -jnp.inf, scores)
    forced = jnp.where(vocab == eos_id, 0.0, -jnp.inf).astype(scores.dtype)
    return jnp.where(step == max_len - 1, forced[None], scores)


def _decoder(params, src, mask, *, model, beams: int, max_len: int):
    """(step function, zero cache) for `beams` rows per source.

    The step function maps (cache, tokens [rows]) to (logits float32 [rows, vocab],
    cross-attention [rows, source] or None, cache).
    """
    memory = model.apply({"params": params}, {"input_ids": src, "attention_mask": mask}, only=())
    memory = {k: jnp.repeat(v, beams, axis=0) for k, v in memory.items()}
    mask = jnp.repeat(mask, beams, axis=0)
    rows = mask.shape[0]

    def step(cache, tokens):
        inputs = {**memory, "attention_mask": mask, "decoder_input_ids": tokens[:, None]}
        out, variables = model.apply(
            {"params": params, "cache": cache}, inputs, only=("lm",), mutable=["cache"]
        )
        attention = out.get("cross_attention")
        attention = None if attention is None else attention[:, -1]
        return out["lm_logits"][:, -1].astype(jnp.float32), attention, variables["cache"]

    full = {**memory, "attention_mask": mask}
    full["decoder_input_ids"] = jnp.zeros((rows, max_len), jnp.int32)
    shapes = jax.eval_shape(
        lambda: model.apply({"params": params}, full, only=("lm",), mutable=["cache"])[1]
    )
    return step, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])


def _greedy(params, src, mask, *, model, max_len, start_id, eos_id, pad_id, with_attention):
    """[batch, source] -> (tokens [batch, max_len] (pad after end-of-sequence), cross-attention
    [batch, max_len, source] or None)."""
    step, cache = _decoder(params, src, mask, model=model, beams=1, max_len=max_len)
    batch, length = src.shape
    attention = jnp.zeros((batch, max_len, length), jnp.float32) if with_attention else None
    tokens = jnp.full((batch, max_len), pad_id, jnp.int32)
    last = jnp.full((batch,), start_id, jnp.int32)
    carry = (jnp.zeros((), jnp.int32), cache, last, tokens, jnp.zeros((batch,), bool), attention)

    def cond(carry):
        t, _, _, _, done, _ = carry
        return (t < max_len) & ~jnp.all(done)

    def body(carry):
        t, cache, last, tokens, done, attention = carry
        logits, weights, cache = step(cache, last)
        scores = _constrain(logits, t, max_len=max_len, eos_id=eos_id, pad_id=pad_id)
        token = jnp.where(done, pad_id, jnp.argmax(scores, axis=-1).astype(jnp.int32))
        tokens = tokens.at[:, t].set(token)
        if with_attention:
            attention = attention.at[:, t].set(weights)
        return t + 1, cache, token, tokens, done | (token == eos_id), attention

    _, _, _, tokens, _, attention = jax.lax.while_loop(cond, body, carry)
    return tokens, attention


def _gather(x: Array, index: Array) -> Array:
    """x [batch, beams, ...] at index [batch, k] along the beams -> [batch, k, ...]."""
    return jax.vmap(lambda row, i: row[i])(x, index)


def _reorder(cache, index: Array, rows: int):
    """Every cache array with `rows` rows (axis 0; axis 1 under a scanned layer stack) gathered
    at `index` [rows]."""

    def pick(path, x):
        axis = 1 if any(getattr(k, "key", None) == "layers" for k in path) else 0
        if x.ndim > axis and x.shape[axis] == rows:
            return jnp.take(x, index, axis=axis)
        return x

    return jax.tree_util.tree_map_with_path(pick, cache)


def _beam(params, src, mask, *, model, beams, max_len, start_id, eos_id, pad_id, length_penalty, with_attention):  # fmt: skip
    """Beam search: [batch, source] -> (the best finished hypothesis per source [batch, max_len],
    its cross-attention [batch, max_len, source] or None)."""
    step, cache = _decoder(params, src, mask, model=model, beams=beams, max_len=max_len)
    batch, length = src.shape
    keep = 2 * beams  # continuations looked at per step: enough to keep `beams` running
    penalty = jnp.asarray(
        np.arange(1, max_len + 1, dtype=np.float64) ** length_penalty, jnp.float32
    )
    attn_shape = (batch, beams, max_len, length)
    state = {
        "t": jnp.zeros((), jnp.int32),
        "cache": cache,
        "running": jnp.full((batch, beams, max_len), pad_id, jnp.int32),
        "running_scores": jnp.full((batch, beams), NEG, jnp.float32).at[:, 0].set(0.0),
        "running_attention": jnp.zeros(attn_shape, jnp.float32) if with_attention else None,
        "finished": jnp.full((batch, beams, max_len), pad_id, jnp.int32),
        "scores": jnp.full((batch, beams), NEG, jnp.float32),
        "is_finished": jnp.zeros((batch, beams), bool),
        "attention": jnp.zeros(attn_shape, jnp.float32) if with_attention else None,
        "improvable": jnp.ones((batch, 1), bool),
        "all_stopped": jnp.zeros((), bool),
    }

    def cond(s):
        return (s["t"] < max_len) & jnp.any(s["improvable"]) & ~s["all_stopped"]

    def body(s):
        t = s["t"]
        last = s["running"][:, :, jnp.maximum(t - 1, 0)].reshape(-1)
        last = jnp.where(t == 0, start_id, last)
        logits, weights, cache = step(s["cache"], last)
        logp = _constrain(
            jax.nn.log_softmax(logits), t, max_len=max_len, eos_id=eos_id, pad_id=pad_id
        )
        vocab = logp.shape[-1]
        logp = logp.reshape(batch, beams, vocab) + s["running_scores"][:, :, None]
        top_scores, top_index = jax.lax.top_k(logp.reshape(batch, beams * vocab), keep)
        source_beam, token = top_index // vocab, top_index % vocab
        top_seqs = _gather(s["running"], source_beam).at[:, :, t].set(token)
        top_attn = None
        if with_attention:
            now = _gather(weights.reshape(batch, beams, length), source_beam)
            top_attn = _gather(s["running_attention"], source_beam).at[:, :, t].set(now)
        stopped = (token == eos_id) | (t + 1 >= max_len)
        new = _advance_running(top_scores, top_seqs, top_attn, source_beam, stopped, beams)
        new.update(_update_finished(s, top_scores, top_seqs, top_attn, stopped, penalty[t], beams))
        index = (new.pop("source_beam") + jnp.arange(batch)[:, None] * beams).reshape(-1)
        new["cache"] = _reorder(cache, index, batch * beams)
        best = new["running_scores"][:, :1] / penalty[t]
        worst = jnp.where(new["is_finished"], jnp.min(new["scores"], axis=1, keepdims=True), NEG)
        new["improvable"] = s["improvable"] & jnp.any(best > worst, axis=-1, keepdims=True)
        new["all_stopped"] = jnp.all(stopped)
        return {**s, **new, "t": t + 1}

    s = jax.lax.while_loop(cond, body, state)
    return s["finished"][:, 0], None if s["attention"] is None else s["attention"][:, 0]


def _advance_running(top_scores, top_seqs, top_attn, source_beam, stopped, beams) -> dict:
    """The `beams` best continuations that have not stopped: the next running hypotheses."""
    scores = top_scores + stopped.astype(jnp.float32) * NEG
    index = jax.lax.top_k(scores, beams)[1]
    return {
        "running": _gather(top_seqs, index),
        "running_scores": _gather(scores, index),
        "running_attention": None if top_attn is None else _gather(top_attn, index),
        "source_beam": _gather(source_beam, index),
    }


def _update_finished(s, top_scores, top_seqs, top_attn, stopped, penalty, beams) -> dict:
    """The `beams` best finished hypotheses: the old ones and those of the best `beams`
    continuations that just stopped, scored with the length penalty."""
    just = stopped & (jnp.arange(top_scores.shape[1]) < beams)[None]
    scores = top_scores / penalty
    scores = scores + (~s["improvable"]).astype(jnp.float32) * NEG
    scores = scores + (~just).astype(jnp.float32) * NEG
    merged = jnp.concatenate([s["scores"], scores], axis=1)
    index = jax.lax.top_k(merged, beams)[1]
    out = {
        "finished": _gather(jnp.concatenate([s["finished"], top_seqs], axis=1), index),
        "scores": _gather(merged, index),
        "is_finished": _gather(jnp.concatenate([s["is_finished"], just], axis=1), index),
        "attention": None,
    }
    if top_attn is not None:
        out["attention"] = _gather(jnp.concatenate([s["attention"], top_attn], axis=1), index)
    return out


@functools.lru_cache(maxsize=16)
def _compiled(model, beams, max_len, start_id, eos_id, pad_id, length_penalty, with_attention):
    options = dict(
        model=model,
        max_len=max_len,
        start_id=start_id,
        eos_id=eos_id,
        pad_id=pad_id,
        with_attention=with_attention,
    )
    if beams == 1:
        return jax.jit(functools.partial(_greedy, **options))
    return jax.jit(functools.partial(_beam, beams=beams, length_penalty=length_penalty, **options))


def right_pad(rows: Sequence[Sequence[int]], pad_id: int, *, batch: int, multiple: int):
    """Rows of ids -> (ids, attention_mask) int32 [batch, length], right-padded; length the
    longest row rounded up to `multiple`, missing rows all padding."""
    length = -(-max(1, *(len(r) for r in rows)) // multiple) * multiple
    ids = np.full((batch, length), pad_id, np.int32)
    mask = np.zeros((batch, length), np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def translate_ids(
    model,
    params,
    src_ids: Sequence[Sequence[int]],
    *,
    start_id: int,
    eos_id: int,
    pad_id: int,
    max_len: int,
    beams: int = 1,
    length_penalty: float = 1.0,
    with_attention: bool = False,
) -> tuple[list[list[int]], list[np.ndarray] | None]:
    """Translates token-id sources with an encoder-decoder `Model` (an "lm" head).

    Args:
      model: a `Model` of an encoder-decoder family (seq2seq protocol) with the "lm" head.
      params: its parameters.
      src_ids: the source ids of each sentence (with their end-of-sequence, as tokenized).
      start_id: the decoder's start token (Marian: the pad id).
      eos_id: end of sequence: a hypothesis ends there.
      pad_id: padding; never generated.
      max_len: the most tokens generated per source, end-of-sequence included (the last step
        may only produce it), as transformers' `max_new_tokens`.
      beams: 1 is greedy; more is beam search with that many hypotheses.
      length_penalty: finished hypotheses are scored `sum_logprobs / length**length_penalty`.
      with_attention: also return the cross-attention of each generated token.

    Returns:
      (the target ids of each source, without the start and end tokens; with `with_attention`,
      float32 [len(target), len(source)] per source (each row the attention while generating
      that token, over the source tokens), else None).
    """
    if max_len < 1 or beams < 1:
        raise ValueError(f"max_len={max_len} and beams={beams} must be >= 1")
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max((len(ids) for ids in src_ids), default=0)
    if limit is not None and max(max_len, longest) > limit:
        raise ValueError(
            f"max_len={max_len} or the longest source ({longest} tokens) exceeds the model's "
            f"{limit} positions"
        )
    decode = _compiled(
        model, beams, max_len, start_id, eos_id, pad_id, float(length_penalty), with_attention
    )
    order = sorted(range(len(src_ids)), key=lambda i: len(src_ids[i]))  # similar lengths together
    targets: list = [None] * len(src_ids)
    attentions: list = [None] * len(src_ids)
    for start in range(0, len(order), BATCH):
        chunk = order[start : start + BATCH]
        ids, mask = right_pad(
            [src_ids[i] for i in chunk], pad_id, batch=BATCH, multiple=LENGTH_MULTIPLE
        )
        tokens, attention = jax.device_get(decode(params, ids, mask))
        for row, i in enumerate(chunk):
            out = tokens[row].tolist()
            n = out.index(eos_id) if eos_id in out else len(out)
            targets[i] = out[:n]
            if with_attention:
                attentions[i] = attention[row, :n, : len(src_ids[i])]
    return targets, attentions if with_attention else None
