"""Model families behind one registry (`config.model.family`), shared layers, heads.

`get_family(name)` gives a `Family`; `model_config(config.model)` validates the config group into
the family's frozen dataclass; `Model(family, config, heads)` is the module every job runs.
"""

from bertjax.models import bert, electra, gpt, marian, rnn, rnn_seq2seq  # noqa: E402,F401  (registers the families)
from bertjax.models.registry import (
    FAMILIES,
    Family,
    HeadSet,
    Model,
    get_family,
    head_spec,
    model_config,
    register,
)

__all__ = [
    "FAMILIES",
    "Family",
    "HeadSet",
    "Model",
    "get_family",
    "head_spec",
    "model_config",
    "register",
]
