"""Instance builders, picked by `config.data.instances` (see `base` for what one provides).

A new builder is one module here plus a line in `BUILDERS`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# config.data.instances -> module
BUILDERS = {
    "nsp_pairs": "bertjax.data.instances.nsp_pairs",  # BERT: [CLS] A [SEP] B [SEP], MLM + NSP
    "lm_blocks": "bertjax.data.instances.lm_blocks",  # GPT: documents cut into token blocks
    "parallel_pairs": "bertjax.data.instances.parallel_pairs",  # seq2seq: (source, target) ids
}


def get(name: str) -> ModuleType:
    """The builder module registered as `name`.

    Raises:
      ValueError: `name` is not registered, naming config.data.instances and the allowed values.
    """
    if name not in BUILDERS:
        raise ValueError(
            f"config.data.instances={name!r} is invalid: allowed values are {tuple(BUILDERS)}"
        )
    return importlib.import_module(BUILDERS[name])
