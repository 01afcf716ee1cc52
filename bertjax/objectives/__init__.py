"""Pretraining objectives behind one protocol (`base.Objective`), picked by `config.objective`.

A new objective is one module with a `make_objective(config, vocab_path)` plus a name here.
"""

from __future__ import annotations

import importlib

# config.objective -> (module, keyword arguments of its make_objective)
OBJECTIVES = {
    "mlm_nsp": ("bertjax.objectives.mlm_nsp", {"nsp": True}),
    "mlm": ("bertjax.objectives.mlm_nsp", {"nsp": False}),
    "causal_lm": ("bertjax.objectives.causal_lm", {}),
    "rtd": ("bertjax.objectives.rtd", {}),  # ELECTRA: generator MLM + replaced-token detection
    # ELECTRA with the generator rewarded for fooling the discriminator (policy gradient)
    "rtd_adversarial": ("bertjax.objectives.rtd_adversarial", {}),
}


def make_objective(config, vocab_path):
    """The objective named by `config.objective`, built for the config and its vocabulary."""
    name = config.get("objective", "mlm_nsp")
    if name not in OBJECTIVES:
        raise ValueError(
            f"config.objective={name!r} is invalid: allowed values are {tuple(OBJECTIVES)}"
        )
    module, kwargs = OBJECTIVES[name]
    return importlib.import_module(module).make_objective(config, vocab_path, **kwargs)
