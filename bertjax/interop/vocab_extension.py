"""Extending a trained model's vocabulary: new tokens appended, their rows initialised from the
pieces they were split into before.

Old ids are unchanged, so on inputs of old tokens the backbone and the MLM logits of the old
tokens are exactly those of the original model until training moves them.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import tokenizers

from bertjax.data.tokenizer import CONTINUATION_PREFIX

logger = logging.getLogger(__name__)

WORD_EMBEDDING = ("backbone", "embeddings", "word_embeddings", "embedding")
MLM_BIAS = ("heads", "mlm", "output_bias")


def read_extra_tokens(
    path: str | pathlib.Path, vocab: Sequence[str], tokenizer: tokenizers.Tokenizer
) -> list[str]:
    """The new tokens of `config.data.extra_vocab`: one a line, blank lines skipped.

    A word is normalized as the tokenizer normalizes text (e.g. lowercased), so that it can
    match; a `##` piece keeps its prefix. Tokens already in `vocab` and repeats are dropped
    (with a warning).

    Raises:
      ValueError: a token with whitespace inside (naming the file and line).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config.data.extra_vocab: {path} does not exist")
    known, tokens, dropped = set(vocab), [], 0
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        token = line.strip()
        if not token:
            continue
        if any(c.isspace() for c in token):
            raise ValueError(f"{path}:{line_no}: token {token!r} has whitespace inside")
        if not token.startswith(CONTINUATION_PREFIX) and tokenizer.normalizer is not None:
            token = tokenizer.normalizer.normalize_str(token)
        if token in known:
            dropped += 1
            continue
        known.add(token)
        tokens.append(token)
    if dropped:
        logger.warning("%s: %d tokens already in the vocabulary were skipped", path, dropped)
    return tokens


def token_pieces(tokenizer: tokenizers.Tokenizer, token: str) -> list[int]:
    """Ids of the pieces the old vocabulary splits `token` into ([UNK] if none)."""
    ids = tokenizer.encode(token.removeprefix(CONTINUATION_PREFIX), add_special_tokens=False).ids
    return ids or [tokenizer.token_to_id("[UNK]")]


def extend_params(
    params: dict[str, Any], tokenizer: tokenizers.Tokenizer, tokens: Sequence[str]
) -> tuple[dict[str, Any], list[list[int]]]:
    """Appends one word-embedding row (and MLM output bias, when the tree has it) per token.

    Each new row is the mean of the rows of the token's pieces under the old vocabulary.

    Args:
      params: unboxed host params `{"backbone": ..., "heads": {...}}` (unscanned or scanned:
        the embedding is outside the layers).
      tokenizer: the old vocabulary's tokenizer.
      tokens: the new tokens, in id order after the old vocabulary.

    Returns:
      (params with `[V + len(tokens), H]` embedding and `[V + len(tokens)]` bias, the piece ids
      each new token was initialised from).
    """
    pieces = [token_pieces(tokenizer, t) for t in tokens]
    out = _copy_path(params, WORD_EMBEDDING)
    table = np.asarray(_get(params, WORD_EMBEDDING))
    new_rows = np.stack([table[p].mean(0) for p in pieces]).astype(table.dtype)
    _set(out, WORD_EMBEDDING, np.concatenate([table, new_rows]))
    if _has(params, MLM_BIAS):
        out = _copy_path(out, MLM_BIAS)
        bias = np.asarray(_get(params, MLM_BIAS))
        new_bias = np.array([bias[p].mean() for p in pieces], bias.dtype)
        _set(out, MLM_BIAS, np.concatenate([bias, new_bias]))
    return out, pieces


def _has(tree, path) -> bool:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _set(tree, path, value) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def _copy_path(tree, path):
    """A copy of `tree` with fresh dicts along `path` (the leaves shared)."""
    out = dict(tree)
    node = out
    for key in path[:-1]:
        node[key] = dict(node[key])
        node = node[key]
    return out
