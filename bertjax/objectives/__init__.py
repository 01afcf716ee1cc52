"""Pretraining objectives behind one protocol (`base.Objective`), picked by `config.objective`.

A new objective is one module with a `make_objective(config, vocab_path)` plus an entry here
naming the model families and instance builders it works with (checked before any data work,
`bertjax.spec`; a contract test runs one step of every declared pair).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class ObjectiveEntry:
    """A registered objective.

    Attributes:
      module: the module with `make_objective(config, vocab_path, **kwargs)`.
      kwargs: keyword arguments of its `make_objective`.
      families: the model families (`config.model.family`) it trains: they have its heads.
      instances: the instance builders (`config.data.instances`) whose batches it reads.
    """

    module: str
    kwargs: Mapping[str, Any]
    families: tuple[str, ...]
    instances: tuple[str, ...]


# config.objective -> its entry
OBJECTIVES = {
    "mlm_nsp": ObjectiveEntry(
        "bertjax.objectives.mlm_nsp", {"nsp": True}, ("bert", "rnn"), ("nsp_pairs",)
    ),
    "mlm": ObjectiveEntry(
        "bertjax.objectives.mlm_nsp", {"nsp": False}, ("bert", "rnn"), ("nsp_pairs",)
    ),
    "seq2seq": ObjectiveEntry(
        "bertjax.objectives.seq2seq", {}, ("rnn_seq2seq", "marian"), ("parallel_pairs",)
    ),
    "causal_lm": ObjectiveEntry("bertjax.objectives.causal_lm", {}, ("gpt",), ("lm_blocks",)),
    # ELECTRA: generator MLM + replaced-token detection
    "rtd": ObjectiveEntry("bertjax.objectives.rtd", {}, ("electra",), ("nsp_pairs",)),
    # ELECTRA with the generator rewarded for fooling the discriminator (policy gradient)
    "rtd_adversarial": ObjectiveEntry(
        "bertjax.objectives.rtd_adversarial", {}, ("electra",), ("nsp_pairs",)
    ),
}


def get_objective(name: str) -> ObjectiveEntry:
    """The registered objective `name`; raises naming `config.objective` and the choices."""
    if name not in OBJECTIVES:
        raise ValueError(
            f"config.objective={name!r} is invalid: allowed values are {tuple(OBJECTIVES)}"
        )
    return OBJECTIVES[name]


def make_objective(config, vocab_path):
    """The objective named by `config.objective`, built for the config and its vocabulary."""
    entry = get_objective(config.get("objective", "mlm_nsp"))
    return importlib.import_module(entry.module).make_objective(config, vocab_path, **entry.kwargs)
