"""Parameter layouts written before the model registry, mapped onto today's tree.

Model directories, workdirs and training checkpoints of that time hold the parameters under
`bert`, `mlm_head`, `nsp_head`, `classifier` and `qa_outputs` (no `family` in config.json: BERT);
a fine-tuned tagger's head was saved as `classifier`. Both the model-directory readers
(`bertjax.interop.model_dir`, `bertjax.interop.finetuned_dir`) and the checkpoint restore
(`bertjax.training.checkpoints`) map them here, so neither imports the other.
"""

from __future__ import annotations

from typing import Any

Params = dict[str, Any]

# parameter subtrees of the pre-registry layout -> (head name today, wrapped in a `dense`)
LEGACY_HEADS = {
    "mlm_head": ("mlm", False),
    "nsp_head": ("nsp", True),
    "classifier": ("classifier", True),
    "qa_outputs": ("span", True),
}


def upgrade_params(params: Params) -> Params:
    """Maps a parameter tree of the pre-registry layout (`bert`, `mlm_head`, ...) to
    `{"backbone": ..., "heads": {...}}`; a tree already in that layout is returned unchanged.
    The leaves keep their order, so optimizer states of the old layout map the same way."""
    if "bert" not in params:
        return params
    heads = {}
    for old, tree in params.items():
        if old == "bert":
            continue
        if old not in LEGACY_HEADS:
            raise ValueError(f"unknown parameter subtree {old!r} in a pre-registry checkpoint")
        name, wrap = LEGACY_HEADS[old]
        heads[name] = {"dense": tree} if wrap else tree
    return {"backbone": params["bert"], **({"heads": heads} if heads else {})}


def upgrade_task_heads(kind: str, params: Params) -> Params:
    """`params` of a fine-tuned model of task `kind` with today's head names (a tagger written
    before the registry has its head under `classifier`)."""
    heads = dict(params.get("heads", {}))
    if kind == "tagging" and "classifier" in heads:
        heads["tagger"] = heads.pop("classifier")
    return {**params, "heads": heads}
