"""Training checkpoints: the train state and the data position, with an orbax CheckpointManager.

WORKDIR/checkpoints/<step>/{state,data}: `state` is the whole TrainState (params, optimizer
state, step, rng), saved by all processes together, each writing its own shards; `data` is the
input position as JSON. orbax writes each step into a temporary folder and renames it when
complete, so a checkpoint cut off half-written is never listed or loaded.

The data position is stored as the number of examples consumed by the whole job
(step x global_batch_size). The input pipeline cuts one process-independent example order into
global batches, so on restore with any number of processes P each process continues at
examples_consumed / P of its own stream: checkpoints move between process counts (elastic).

With `config.checkpoint.best_metric` set, the checkpoint with the best evaluation of that metric
is kept as well as the last `keep` (orbax preservation policies: LatestN or BestN).

A checkpoint that cannot be read (a truncated or lost file) is renamed `<step>.unreadable` (left
on disk, out of orbax's listing, so keep-last deletion can never count it against a good one) and
the next older one is restored, with a warning; none readable is an error naming the folder.

In a `gs://` workdir (staged by `storage.Mirror`) the checkpoints are written by orbax straight
to the bucket (tensorstore's gcs driver, every process its own shards), not staged;
`storage.checkpoint_directory` maps the staged `checkpoints/` to its URL.

A checkpoint that cannot be written (a read-only, missing or full folder) stops the run at that
step with `SaveFailed`, one line naming the folder and the cause: each save first writes a small
probe file (a few KiB, fsynced), errors of orbax's background writer are checked after every step
(`check_saves`), and the good checkpoints stay. There is no retry: a folder that refuses a write
rarely accepts the next one, and rerunning the same command resumes.

Checkpoints written before the model registry (parameters under `bert`, `mlm_head`, ...) hold the
same leaves in the same order; `restore_train_state` maps them onto the new tree by position.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from bertjax import files, storage
from bertjax.interop.legacy import upgrade_params

logger = logging.getLogger(__name__)

UNREADABLE_SUFFIX = ".unreadable"  # a checkpoint folder that failed to restore, renamed


class CheckpointMismatch(ValueError):
    """A readable checkpoint whose tree does not fit the model (a config error, not damage)."""


def checkpoint_manager(
    directory: str | pathlib.Path, options: Mapping[str, Any]
) -> ocp.CheckpointManager:
    """An orbax CheckpointManager for `config.checkpoint`: keeps the last `keep` and, with
    `best_metric` set, the best by that metric (`best_mode` "max" or "min"); async writes."""
    _ignore_abandoned_callbacks()
    policies = ocp.checkpoint_managers
    keep = [policies.LatestN(n=int(options["keep"]))]
    metric, best_fn = options.get("best_metric", ""), None
    if metric:
        best_fn = lambda metrics: float(metrics[metric])  # noqa: E731
        reverse = options["best_mode"] == "min"
        keep.append(
            policies.BestN(
                get_metric_fn=best_fn, reverse=reverse, n=1, keep_checkpoints_without_metrics=False
            )
        )
    return ocp.CheckpointManager(
        storage.checkpoint_directory(directory),
        options=ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep),
            best_fn=best_fn,
            best_mode=options.get("best_mode", "max"),
            enable_async_checkpointing=bool(options["async_save"]),
            create=True,
        ),
    )


EXIT_SAVE_FAILED = 6  # a checkpoint could not be written; the good ones are kept
_pending: dict[int, int] = {}  # id(manager) -> the step of the save in flight
_operations: dict[int, str] = {}  # id(manager) -> orbax's operation id of the save in flight


class SaveFailed(RuntimeError):
    """A checkpoint could not be written: the run stops at that step (exit status `exit_code`:
    `EXIT_SAVE_FAILED`, or `files.EXIT_DISK_FULL` when the disk is full)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _ignore_abandoned_callbacks() -> None:
    """Drops the `RuntimeError: Event loop is closed` tracebacks that follow a failed restore
    or save, and only those: orbax stops at the first failed read or write and closes its event
    loop while tensorstore finishes the others in its own threads; each then calls back into the
    closed loop, and Python prints the error as "unraisable" (no object), hundreds of times. The
    failure itself reaches bertjax as an exception. Installed once, with the first checkpoint
    manager (the callbacks come before the save's error is noticed); every other unraisable
    error still goes to the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "bertjax_abandoned", False):
        return

    def hook(unraisable) -> None:
        closed = str(unraisable.exc_value) == "Event loop is closed"
        if not (unraisable.exc_type is RuntimeError and closed and unraisable.object is None):
            previous(unraisable)

    hook.bertjax_abandoned = True
    sys.unraisablehook = hook


def _save_failed(manager: ocp.CheckpointManager, step: int | None, err: BaseException):
    """`err` while saving `step` as one line naming the folder, the cause and what is kept."""
    directory = epath.Path(manager.directory)
    kept = [s for s in _listed_steps(directory) if s != step]
    keeps = f"the checkpoints of steps {kept} are kept" if kept else "no checkpoint was kept"
    which = "a checkpoint" if step is None else f"the checkpoint of step {step}"
    full = files.as_disk_full(err)
    if full is not None:
        return SaveFailed(f"{which}: {full} ({keeps} in {directory})", files.EXIT_DISK_FULL)
    cause = (str(err).splitlines() or [""])[0][:300]
    return SaveFailed(
        f"cannot save {which} in {directory} ({type(err).__name__}: {cause}); stopped there, "
        f"{keeps}: make the folder writable and rerun the same command to resume",
        EXIT_SAVE_FAILED,
    )


def _listed_steps(directory: epath.Path) -> list[int]:
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _probe(directory: pathlib.Path, step: int) -> None:
    """Writes, fsyncs and removes a small file in `directory`: a read-only, missing or full
    folder fails here at once, not in orbax's background writer."""
    probe = directory / f".bertjax-probe-{step}"
    try:
        with probe.open("wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def check_saves(manager: ocp.CheckpointManager) -> None:
    """Raises `SaveFailed` when a background (async) save has failed; cheap, called every step."""
    try:
        manager.check_for_errors()
    except Exception as err:  # noqa: BLE001 - orbax re-raises the writer's error
        _release_waiting_writers(manager)
        raise _save_failed(manager, _pending.get(id(manager)), err) from err


def wait_for_saves(manager: ocp.CheckpointManager) -> None:
    """Waits for the save in flight; a failure is `SaveFailed`."""
    try:
        manager.wait_until_finished()
    except Exception as err:  # noqa: BLE001
        _release_waiting_writers(manager)
        raise _save_failed(manager, _pending.get(id(manager)), err) from err


def close(manager: ocp.CheckpointManager, *, failing: bool = False) -> None:
    """Closes `manager` after the save in flight, leaving no orbax thread behind.

    Args:
      failing: the run is already stopping on another error: a failed save is logged (to the
        workdir's log.txt only) instead of raised, so the run's own error stays the one line.

    Raises:
      SaveFailed: the save in flight failed (unless `failing`).
    """
    try:
        manager.close()
    except Exception as err:  # noqa: BLE001 - the writer's error, re-raised by orbax
        _release_waiting_writers(manager)
        failed = _save_failed(manager, _pending.get(id(manager)), err)
        if not failing:
            raise failed from err
        logger.warning("while stopping: %s", failed, extra={"log_only": True})
    finally:
        _pending.pop(id(manager), None)
        _operations.pop(id(manager), None)


def _release_waiting_writers(manager: ocp.CheckpointManager) -> None:
    """Lets orbax's writer threads of a failed async save end now instead of in five minutes.

    Each waits for the signals that the step's and the item's folders were created, up to
    orbax's coordination timeout (300 s, also at interpreter exit: they are not daemon threads),
    and a save whose folder could not be made never sends them. Sent here once the failure is
    known, they meet the missing folder and end at once (their errors go to the log). Needs
    orbax's signalling internals; without them (another orbax version) this does nothing and
    the threads time out.
    """
    operation = _operations.pop(id(manager), None)
    if operation is None:
        return
    try:
        from orbax.checkpoint._src.futures import future, signaling_client, synchronization

        client = signaling_client.get_signaling_client()
        for signal in synchronization.HandlerAwaitableSignal:  # the step's and the item's folder
            if signal != synchronization.HandlerAwaitableSignal.AWAITABLE_SIGNALS_CONTRACT:
                contract = future.AwaitableSignalsContract
                key = contract.get_unique_awaitable_singal_key(signal, operation)
                client.key_value_set(key, "bertjax: the save failed", allow_overwrite=True)
    except (ImportError, AttributeError, TypeError) as err:
        logger.debug("could not release orbax's writer threads: %s", err)


def _operation_id() -> str | None:
    """orbax's id of the latest save operation (its writer threads' signals carry it)."""
    try:
        from orbax.checkpoint._src.futures import synchronization

        return synchronization.OperationIdGenerator.get_current_operation_id()
    except (ImportError, AttributeError):
        return None


def save_train_state(
    manager: ocp.CheckpointManager,
    step: int,
    state: Any,
    global_batch_size: int,
    *,
    metrics: Mapping[str, float] | None = None,
) -> None:
    """Starts saving the train state and data position of `step` (returns before the write ends).

    Args:
      metrics: the evaluation of this step, which ranks it for `best_metric` (None: not ranked).
    """
    position = {"step": int(step), "examples_consumed": int(step) * int(global_batch_size)}
    check_saves(manager)
    try:
        if jax.process_index() == 0 and not storage.is_remote(manager.directory):
            _probe(pathlib.Path(manager.directory), step)
        _pending[id(manager)] = int(step)
        manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(position)
            ),
            metrics=None if metrics is None else {k: float(v) for k, v in metrics.items()},
            force=True,
        )
        _operations[id(manager)] = _operation_id()
    except Exception as err:  # noqa: BLE001 - OSError, tensorstore and orbax errors alike
        raise _save_failed(manager, step, err) from err


def best_checkpoint(manager: ocp.CheckpointManager) -> dict | None:
    """`{"step", "checkpoint", <metric>...}` of the best ranked checkpoint, or None."""
    step = manager.best_step()
    metrics = None if step is None else manager.metrics(step)
    if not metrics:
        return None
    return {"step": int(step), "checkpoint": str(manager.directory / str(step)), **metrics}


def _newest_readable(
    manager: ocp.CheckpointManager, restore: Callable[[int], Any], *, rename: bool = True
):
    """(step, restore(step)) of the newest checkpoint that reads, skipping unreadable newer ones
    with a warning (`rename`: renamed `<step>.unreadable`). None without checkpoints.

    Raises:
      ValueError: there are checkpoints, but none can be read.
    """
    failed = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            return step, restore(step)
        except CheckpointMismatch:
            raise
        except Exception as err:  # noqa: BLE001 - tensorstore, orbax and JSON errors alike
            path = epath.Path(manager.directory) / str(step)
            logger.warning(
                "checkpoint %s is unreadable (%s: %s)%s; trying the one before",
                path,
                type(err).__name__,
                (str(err).splitlines() or [""])[0][:300],
                f", renamed {path.name}{UNREADABLE_SUFFIX}" if rename else "",
            )
            failed.append(str(path))
            if rename:
                if jax.process_index() == 0:
                    path.rename(path.with_name(path.name + UNREADABLE_SUFFIX))
                multihost_utils.sync_global_devices(f"bertjax_unreadable_{step}")
                manager.reload()
    if failed:
        raise ValueError(
            f"no readable checkpoint in {manager.directory}: {failed} failed to restore (see the "
            "warnings above); move the folder away to start over"
        )
    return None


def restore_train_state(
    manager: ocp.CheckpointManager, state_shardings: Any, abstract_state: Any
) -> tuple[Any, dict] | None:
    """Restores the newest readable checkpoint onto `state_shardings`, or None if there is none.

    Returns:
      (the train state, the data position `{"step", "examples_consumed"}`).
    """
    target = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        abstract_state,
        state_shardings,
    )

    def restore(step: int):
        try:
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()
                ),
            )
            return restored, restored["state"]
        except ValueError as err:  # a tree of another layout: the pre-registry parameter names
            return _restore_legacy(manager, step, target, err)

    found = _newest_readable(manager, restore)
    if found is None:
        return None
    step, (restored, state) = found
    logger.info("restored checkpoint of step %d from %s", step, manager.directory)
    return state, dict(restored["data"])


def _restore_legacy(manager, step: int, target: Any, error: Exception):
    """Restores a checkpoint of the pre-registry layout: reads it as saved, renames its
    parameter trees (`upgrade_params`, in the params and in every optimizer moment), and takes
    each leaf of `target` from the same path there."""
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
            raise CheckpointMismatch(
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


def latest_params(directory: str | pathlib.Path, step: int | None = None) -> Any:
    """Params of the latest checkpoint in `directory`, or of checkpoint `step` (on the host, no
    optimizer state)."""
    _ignore_abandoned_callbacks()
    manager = ocp.CheckpointManager(pathlib.Path(directory).absolute())
    args = ocp.args.Composite(state=ocp.args.StandardRestore(None))
    restore = lambda step: manager.restore(step, args=args)  # noqa: E731
    if step is None:
        found = _newest_readable(manager, restore, rename=False)
    elif step in manager.all_steps():
        found = step, restore(step)
    else:
        found = None
    steps = manager.all_steps()
    manager.close()
    if found is None:
        wanted = "no complete checkpoint" if step is None else f"no checkpoint {step} (has {steps})"
        raise FileNotFoundError(f"{directory} holds {wanted}")
    return upgrade_params(found[1]["state"]["params"])
