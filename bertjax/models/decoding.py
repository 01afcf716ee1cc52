"""Autoregressive generation for causal families (GPT): one jitted loop with a key/value cache.

`generate(model, params, prompts, ...)` takes token-id prompts of any lengths, left-pads them
into one batch, fills the cache with the prompts in one pass, then decodes token by token in a
`lax.while_loop` until every row has produced `eos_id` or `max_new_tokens`. Temperature 0 is
greedy; otherwise tokens are sampled after temperature, top-k and top-p (nucleus) filtering,
with a key folded from `seed` and the step, so a seed gives the same text every time.

The cache is the model's flax "cache" collection (`layers.SelfAttention`): its shapes come
from `jax.eval_shape` of one call on a [batch, prompt + new] input, so nothing is computed to
create it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def filter_logits(logits: Array, *, temperature: float, top_k: int, top_p: float) -> Array:
    """Scaled and filtered logits [batch, vocab]: excluded tokens get -inf.

    Args:
      logits: float32 [batch, vocab].
      temperature: > 0; the logits are divided by it.
      top_k: keep the k most likely tokens (0: all).
      top_p: keep the smallest set of most likely tokens whose probability reaches p (1.0: all).
    """
    logits = logits / temperature
    if top_k > 0:
        kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        ordered = jnp.sort(logits, axis=-1)[:, ::-1]
        before = jnp.cumsum(jax.nn.softmax(ordered, axis=-1), axis=-1) - jax.nn.softmax(ordered)
        # the smallest logit still kept: tokens whose preceding mass is below p
        cutoff = jnp.min(jnp.where(before < top_p, ordered, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return logits


def _next_token(logits: Array, rng: Array, *, temperature, top_k, top_p) -> Array:
    """[batch, vocab] -> [batch] int32 token ids."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    return jax.random.categorical(rng, filtered).astype(jnp.int32)


def _decode(params, ids, mask, rng, *, model, max_new_tokens, eos_id, sampling):
    """The jitted loop: prompts [batch, P] (left-padded) -> new tokens [batch, max_new_tokens]
    (eos_id after a row's end) and the number of new tokens per row [batch]."""
    batch, prompt_len = ids.shape
    total = prompt_len + max_new_tokens

    def run(cache, inputs):
        out, variables = model.apply(
            {"params": params, "cache": cache}, inputs, only=("lm",), mutable=["cache"]
        )
        return out["lm_logits"][:, -1], variables["cache"]

    full = {"input_ids": jnp.zeros((batch, total), jnp.int32)}
    full["attention_mask"] = jnp.ones((batch, total), jnp.int32)
    shapes = jax.eval_shape(
        lambda: model.apply({"params": params}, full, only=("lm",), mutable=["cache"])[1]
    )
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])
    logits, cache = run(cache, {"input_ids": ids, "attention_mask": mask})
    tokens = jnp.full((batch, max_new_tokens), eos_id, jnp.int32)
    done = jnp.zeros((batch,), bool)
    lengths = jnp.zeros((batch,), jnp.int32)

    def cond(carry):
        step, _, _, _, done, _ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        step, cache, logits, tokens, done, lengths = carry
        token = _next_token(logits, jax.random.fold_in(rng, step), **sampling)
        token = jnp.where(done, eos_id, token)
        tokens = tokens.at[:, step].set(token)
        lengths = lengths + (~done & (token != eos_id))
        done = done | (token == eos_id)
        step_inputs = {
            "input_ids": token[:, None],
            "attention_mask": jnp.ones((batch, 1), jnp.int32),
        }
        logits, cache = run(cache, step_inputs)
        return step + 1, cache, logits, tokens, done, lengths

    carry = (jnp.zeros((), jnp.int32), cache, logits, tokens, done, lengths)
    _, _, _, tokens, _, lengths = jax.lax.while_loop(cond, body, carry)
    return tokens, lengths


@functools.lru_cache(maxsize=16)
def _compiled(model, max_new_tokens: int, eos_id: int, sampling: tuple):
    return jax.jit(
        functools.partial(
            _decode,
            model=model,
            max_new_tokens=max_new_tokens,
            eos_id=eos_id,
            sampling=dict(sampling),
        )
    )


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Prompts of any lengths -> (ids, attention_mask) int32 [batch, longest], left-padded."""
    longest = max(len(p) for p in prompts)
    ids = np.full((len(prompts), longest), pad_id, np.int32)
    mask = np.zeros((len(prompts), longest), np.int32)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, longest - len(prompt) :] = prompt
            mask[row, longest - len(prompt) :] = 1
    return ids, mask


def generate(
    model,
    params,
    prompts: Sequence[Sequence[int]],
    *,
    eos_id: int,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[list[int]]:
    """Continues each prompt until `eos_id` or `max_new_tokens`.

    Args:
      model: a causal `Model` with an "lm" head (e.g. `load_pretrained` of a GPT directory).
      params: its parameters.
      prompts: token ids per prompt; an empty prompt starts from `eos_id` (GPT-2's
        unconditional start).
      eos_id: the end-of-text id: generation of a row stops there (it is not returned).
      max_new_tokens: the most tokens generated per prompt.
      temperature: 0 is greedy (argmax); > 0 samples from softmax(logits / temperature).
      top_k: sample among the k most likely tokens (0: all).
      top_p: sample among the most likely tokens whose probability reaches p (1.0: all).
      seed: the sampling seed.

    Returns:
      The new tokens of each prompt, without the prompt and without `eos_id`.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    if temperature < 0 or top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(
            f"temperature={temperature} must be >= 0, top_k={top_k} >= 0, top_p={top_p} in (0, 1]"
        )
    prompts = [list(p) or [eos_id] for p in prompts]
    limit = model.config.max_position_embeddings
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > limit:
        raise ValueError(
            f"prompt ({longest} tokens) + max_new_tokens={max_new_tokens} exceed the model's "
            f"{limit} positions"
        )
    ids, mask = left_pad(prompts, eos_id)
    sampling = (("temperature", float(temperature)), ("top_k", int(top_k)), ("top_p", float(top_p)))
    decode = _compiled(model, int(max_new_tokens), int(eos_id), sampling)
    tokens, lengths = jax.device_get(decode(params, ids, mask, jax.random.key(seed)))
    return [row[:n].tolist() for row, n in zip(tokens, lengths, strict=True)]
