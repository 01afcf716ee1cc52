"""Training checkpoints: the train state and the data position, with an orbax CheckpointManager.

WORKDIR/checkpoints/<step>/{state,data}: `state` is the whole TrainState (params, optimizer
state, step, rng), saved by all processes together, each writing its own shards; `data` is the
input position as JSON. orbax writes each step into a temporary folder and renames it when
complete, so a checkpoint cut off half-written is never listed or loaded.

The data position is stored as the number of examples consumed by the whole job
(step x global_batch_size). The input pipeline cuts one process-independent example order into
global batches, so on restore with any number of processes P each process continues at
examples_consumed / P of its own stream: checkpoints move between process counts (elastic).

Checkpoints written before the model registry (parameters under `bert`, `mlm_head`, ...) hold the
same leaves in the same order; `restore_train_state` maps them onto the new tree by position.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

logger = logging.getLogger(__name__)


def checkpoint_manager(
    directory: str | pathlib.Path, options: Mapping[str, Any]
) -> ocp.CheckpointManager:
    """An orbax CheckpointManager for `config.checkpoint` (keep the last `keep`, async writes)."""
    return ocp.CheckpointManager(
        pathlib.Path(directory).absolute(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=int(options["keep"]),
            enable_async_checkpointing=bool(options["async_save"]),
            create=True,
        ),
    )


def save_train_state(
    manager: ocp.CheckpointManager, step: int, state: Any, global_batch_size: int
) -> None:
    """Starts saving the train state and data position of `step` (returns before the write ends)."""
    position = {"step": int(step), "examples_consumed": int(step) * int(global_batch_size)}
    manager.save(
        int(step),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(position)
        ),
    )


def restore_train_state(
    manager: ocp.CheckpointManager, state_shardings: Any, abstract_state: Any
) -> tuple[Any, dict] | None:
    """Restores the latest complete checkpoint onto `state_shardings`, or None if there is none.

    Returns:
      (the train state, the data position `{"step", "examples_consumed"}`).
    """
    step = manager.latest_step()
    if step is None:
        return None
    target = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        abstract_state,
        state_shardings,
    )
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()
            ),
        )
        state = restored["state"]
    except ValueError as err:  # a tree of another layout: the pre-registry parameter names
        restored, state = _restore_by_position(manager, step, target, err)
    logger.info("restored checkpoint of step %d from %s", step, manager.directory)
    return state, dict(restored["data"])


def _restore_by_position(manager, step: int, target: Any, error: Exception):
    """Restores a checkpoint of the pre-registry layout: reads it as saved, renames its
    parameter trees (`upgrade_params`, in the params and in every optimizer moment), and takes
    each leaf of `target` from the same path there."""
    from bertjax.interop.model_dir import upgrade_params

    restored = manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(None), data=ocp.args.JsonRestore()),
    )
    raw = _upgrade_dicts(restored["state"], upgrade_params)
    paths, treedef = jax.tree_util.tree_flatten_with_path(target)
    placed = []
    for path, leaf in paths:
        array = _at_path(raw, path)
        if array is None or np.shape(array) != leaf.shape:
            raise ValueError(
                f"checkpoint {manager.directory}/{step} does not fit this model at "
                f"{jax.tree_util.keystr(path)}: {error}"
            ) from error
        placed.append(
            jax.make_array_from_callback(
                leaf.shape, leaf.sharding, lambda i, a=array, t=leaf: np.asarray(a, t.dtype)[i]
            )
        )
    logger.warning("checkpoint %d has the pre-registry layout; its parameters were renamed", step)
    return restored, jax.tree.unflatten(treedef, placed)


def _upgrade_dicts(tree: Any, upgrade) -> Any:
    if isinstance(tree, dict):
        return upgrade({k: _upgrade_dicts(v, upgrade) for k, v in tree.items()})
    if isinstance(tree, list | tuple):
        return [_upgrade_dicts(v, upgrade) for v in tree]
    return tree


def _at_path(tree: Any, path) -> Any:
    """The entry of a restored (dicts and lists) tree at a key path of the target pytree."""
    for key in path:
        name = getattr(key, "name", getattr(key, "key", getattr(key, "idx", None)))
        try:
            tree = tree[name]
        except (KeyError, IndexError, TypeError):
            return None
    return tree


def latest_params(directory: str | pathlib.Path) -> Any:
    """Params of the latest checkpoint in `directory` (on the host, no optimizer state)."""
    from bertjax.interop.model_dir import upgrade_params

    manager = ocp.CheckpointManager(pathlib.Path(directory).absolute())
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"{directory} holds no complete checkpoint")
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(None)))
    manager.close()
    return upgrade_params(restored["state"]["params"])
