"""Dynamic masked-LM masking: a pure, jittable function run inside the train step on the device.

Every step draws a fresh mask for the batch (RoBERTa-style dynamic masking), so the input pipeline only
ships token ids, segments, the attention mask and word starts; nothing about masking is precomputed.

Per sequence, with `n_real` real tokens ([CLS], [SEP] and padding excluded):

* `k = min(max_predictions, max(1, round(mask_rate * n_real)))` positions are chosen (0 when
  `n_real == 0`). `round` is Python's: half to even ("banker's"), on the float64 product, as in
  the original BERT data generator. It is evaluated on the host into a `[length + 1]` table, so the
  rounding never depends on device float arithmetic.
* Without whole-word masking the choice is a uniformly random k-subset of the real tokens: exactly k.
* With whole-word masking the pieces of a word are taken together. Words are visited in random
  order and a word is taken when it still fits (taken pieces + its pieces <= k); a word that does not
  fit is skipped and the visit goes on. So the count can fall slightly below k, never above (to 0
  in the rare sequence whose words are all longer than k), and no word left out would still fit. This is the greedy rule of Google's original implementation,
  evaluated in parallel (see `_greedy_fit`).
* Each chosen position independently (per piece, as original BERT, also under whole-word masking)
  becomes [MASK] with probability 0.8, a random id from `candidate_ids` with probability 0.1 (which
  may happen to equal the original id), and stays unchanged with probability 0.1.

Everything is row-wise along the batch, so with the batch sharded over devices each device masks its
own rows; the random bits come from `jax.random` (partitionable threefry), so a sharded run gives the
same result as an unsharded one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

MASK_PROB = 0.8  # share of chosen positions replaced by [MASK]
RANDOM_PROB = 0.1  # share replaced by a random candidate id; the rest stay unchanged


def random_candidates(vocab_tokens: Sequence[str]) -> np.ndarray:
    """Ids that a random replacement may take: every token not of the form `[...]`.

    This drops [PAD], [UNK], [CLS], [SEP], [MASK] and the [unusedN] slots of BERT vocabularies.

    Args:
      vocab_tokens: the vocabulary, token i at index i (e.g. the lines of vocab.txt).

    Returns:
      int32 [num_candidates], ascending.
    """
    ids = [
        i
        for i, token in enumerate(vocab_tokens)
        if not (len(token) >= 2 and token.startswith("[") and token.endswith("]"))
    ]
    if not ids:
        raise ValueError("random_candidates: the vocabulary has no token outside [...] forms")
    return np.asarray(ids, dtype=np.int32)


def num_to_predict_table(length: int, mask_rate: float, max_predictions: int) -> np.ndarray:
    """k for every possible count of real tokens.

    Args:
      length: sequence length L.
      mask_rate: share of real tokens to choose, in (0, 1].
      max_predictions: upper bound on k.

    Returns:
      int32 [L + 1]; entry n is `min(max_predictions, max(1, round(mask_rate * n)))`, 0 for n = 0,
      with Python's half-to-even `round` on the float64 product.
    """
    table = [0] + [min(max_predictions, max(1, round(mask_rate * n))) for n in range(1, length + 1)]
    return np.asarray(table, dtype=np.int32)


def mask_batch(
    rng: Array,
    batch: Mapping[str, Array],
    *,
    candidate_ids: Array,
    mask_id: int,
    cls_id: int,
    sep_id: int,
    pad_id: int,
    max_predictions: int,
    unmaskable_ids: tuple[int, ...] = (),
    mask_rate: float = 0.15,
    whole_word_masking: bool = False,
    mask_token_prob: float = MASK_PROB,
    random_token_prob: float = RANDOM_PROB,
) -> dict[str, Array]:
    """Chooses and corrupts masked-LM positions for a batch. Pure and jittable.

    Bind the keyword arguments with `functools.partial` (the ids and sizes are static) and pass
    `candidate_ids` as a device array; under `jax.jit` nothing crosses to the host.

    Args:
      rng: a PRNG key, e.g. `jax.random.fold_in(rng, step)`.
      batch: int32 `input_ids`, `token_type_ids`, `attention_mask` [batch, length] and bool
        `word_starts` [batch, length] (True at the first piece of each word; False at special
        tokens, padding and '##' continuation pieces). Other fields pass through unchanged.
      candidate_ids: int32 [num_candidates], the ids a random replacement may take (see
        `random_candidates`).
      mask_id, cls_id, sep_id, pad_id: ids of [MASK], [CLS], [SEP] and [PAD].
      max_predictions: width P of the gathered MLM head; 1 <= P <= length.
      unmaskable_ids: other ids never chosen, like [CLS] and [SEP] (the entity markers `[ENT]`
        and `[/ENT]`: predicting them would only teach where entities are marked).
      mask_rate: share of real tokens to choose, in (0, 1].
      whole_word_masking: choose all pieces of a word together (`word_starts` marks the words; a
        piece right after a special token always starts a word).
      mask_token_prob, random_token_prob: shares of the chosen positions replaced by [MASK] and by
        a random candidate (BERT: 0.8 and 0.1; ELECTRA: 1.0 and 0.0); the rest stay unchanged.

    Returns:
      The batch with `input_ids` [batch, length] replaced by the corrupted ids, plus
      `masked_positions` int32 [batch, P] (ascending, padded with 0), `masked_ids` int32 [batch, P]
      (original ids there, 0 in padding) and `masked_weights` float32 [batch, P] (1.0 real, 0.0
      padding).
    """
    input_ids = batch["input_ids"]
    length = input_ids.shape[1]
    _check_args(length, max_predictions, mask_rate, candidate_ids)
    if min(mask_token_prob, random_token_prob) < 0 or mask_token_prob + random_token_prob > 1:
        raise ValueError(
            f"config.data.mask_token_prob={mask_token_prob} and config.data.random_token_prob="
            f"{random_token_prob} are invalid: both >= 0 with a sum <= 1"
        )
    order_rng, action_rng, replace_rng = jax.random.split(rng, 3)

    eligible = (
        (batch["attention_mask"] > 0)
        & (input_ids != cls_id)
        & (input_ids != sep_id)
        & (input_ids != pad_id)
    )  # [batch, length]
    for token_id in unmaskable_ids:
        eligible &= input_ids != token_id
    table = jnp.asarray(num_to_predict_table(length, mask_rate, max_predictions))
    k = table[eligible.sum(axis=1)]  # [batch]
    chosen = _choose(
        order_rng, eligible, batch["word_starts"], k, max_predictions, whole_word_masking
    )

    # [MASK], random candidate or unchanged (BERT: 80/10/10); decided independently per position.
    action = jax.random.uniform(action_rng, input_ids.shape)
    pick = jax.random.randint(replace_rng, input_ids.shape, 0, candidate_ids.shape[0])
    random_ids = jnp.asarray(candidate_ids, input_ids.dtype)[pick]
    mask = jnp.asarray(mask_id, input_ids.dtype)
    corrupted = jnp.where(action < mask_token_prob, mask, input_ids)
    is_random = (action >= mask_token_prob) & (action < mask_token_prob + random_token_prob)
    corrupted = jnp.where(is_random, random_ids, corrupted)

    positions, weights = _positions(chosen, max_predictions)
    masked_ids = jnp.take_along_axis(input_ids, positions, axis=1)
    return {
        **batch,
        "input_ids": jnp.where(chosen, corrupted, input_ids),
        "masked_positions": positions,
        "masked_ids": jnp.where(weights, masked_ids, 0).astype(jnp.int32),
        "masked_weights": weights.astype(jnp.float32),
    }


def _check_args(length: int, max_predictions: int, mask_rate: float, candidate_ids) -> None:
    if not 1 <= max_predictions <= length:
        raise ValueError(
            f"config.data.max_predictions={max_predictions} is invalid: must be in [1, {length}] "
            f"(the sequence length)"
        )
    if not 0.0 < mask_rate <= 1.0:
        raise ValueError(f"config.data.mask_rate={mask_rate} is invalid: must be in (0, 1]")
    if np.ndim(candidate_ids) != 1 or np.shape(candidate_ids)[0] == 0:
        raise ValueError(
            f"candidate_ids must be a non-empty 1-D array, got shape {np.shape(candidate_ids)}"
        )


def _choose(
    rng: Array,
    eligible: Array,
    word_starts: Array,
    k: Array,
    max_predictions: int,
    whole_word_masking: bool,
) -> Array:
    """Which positions to predict.

    Tokens are grouped into words (each real token is its own word without whole-word masking), the
    words are visited in a random order and taken while they fit in k.

    Args:
      rng: PRNG key for the visiting order.
      eligible: bool [batch, length], real tokens.
      word_starts: bool [batch, length].
      k: int32 [batch], pieces to choose per sequence.
      max_predictions: upper bound on k.
      whole_word_masking: group pieces into words by `word_starts`.

    Returns:
      bool [batch, length], True at chosen positions.
    """
    batch_size, length = eligible.shape
    after_special = jnp.pad(~eligible[:, :-1], ((0, 0), (1, 0)), constant_values=True)
    starts = eligible & (word_starts | after_special) if whole_word_masking else eligible
    word = jnp.cumsum(starts, axis=1, dtype=jnp.int32) - 1  # [batch, length], word of each piece
    slot = jnp.where(eligible, word, length)  # `length` is out of range: dropped by the scatter
    # Word w's piece count; words that do not exist (w >= number of words) have 0 pieces. Scatters
    # are vmapped, so their batch dimension stays a batching dimension that sharding keeps split.
    lengths = jax.vmap(lambda s: jnp.zeros(length, jnp.int32).at[s].add(1, mode="drop"))(slot)

    order = jnp.argsort(jax.random.uniform(rng, (batch_size, length)), axis=1)  # visiting order
    visited = jnp.take_along_axis(lengths, order, axis=1)  # [batch, words] piece counts in order
    if whole_word_masking:
        taken = _greedy_fit(visited, k, max_predictions)
    else:  # All words have one piece: the first k of them.
        taken = jnp.cumsum(visited, axis=1) <= k[:, None]
    word_taken = jax.vmap(lambda o, t: jnp.zeros(length, bool).at[o].set(t))(order, taken)
    return eligible & jnp.take_along_axis(word_taken, jnp.maximum(word, 0), axis=1)


def _greedy_fit(lengths: Array, k: Array, max_predictions: int) -> Array:
    """Visits words in order and takes each one that still fits: `count + lengths[w] <= k`.

    The count after word w is `f_w(count)` with `f_w(s) = s + lengths[w] if s + lengths[w] <= k else
    s`. Counts live in [0, max_predictions], so every f_w is a lookup table over those states; composing
    tables is associative, so all prefix compositions come from one parallel
    `jax.lax.associative_scan` (log depth) instead of a sequential loop over words.

    Args:
      lengths: int32 [batch, words], piece counts in visiting order (0 for padding words).
      k: int32 [batch], the budget; at most `max_predictions`.
      max_predictions: bound on k, so the tables have `max_predictions + 1` states.

    Returns:
      bool [batch, words], True where the word is taken.
    """
    states = jnp.arange(max_predictions + 1, dtype=jnp.int32)
    after = states + lengths[..., None]  # [batch, words, states]
    maps = jnp.where(after <= k[:, None, None], after, states)

    def compose(first: Array, then: Array) -> Array:  # then ∘ first, as tables
        return jnp.take_along_axis(then, first, axis=-1)

    prefix = jax.lax.associative_scan(compose, maps, axis=1)  # f_w ∘ ... ∘ f_0
    count_before = jnp.pad(prefix[:, :-1, 0], ((0, 0), (1, 0)))  # start from count 0
    return count_before + lengths <= k[:, None]


def _positions(chosen: Array, max_predictions: int) -> tuple[Array, Array]:
    """The chosen positions, ascending, padded to a fixed width.

    Args:
      chosen: bool [batch, length], at most `max_predictions` True per row.
      max_predictions: P.

    Returns:
      positions int32 [batch, P] (0 in padding) and bool weights [batch, P] (True where real).
    """
    length = chosen.shape[1]
    key = jnp.where(chosen, jnp.arange(length, dtype=jnp.int32), length)
    smallest = jnp.sort(key, axis=1)[:, :max_predictions]  # ascending; top_k would not shard
    weights = smallest < length
    return jnp.where(weights, smallest, 0), weights
