"""The two-phase recipe: phase 2 starts from the whole train state of a phase-1 workdir.

NVIDIA's and MLPerf's BERT recipes pretrain at length 128, then continue at 512 (data prepared at
512 with its own `max_predictions`) from phase 1's parameters *and* optimizer moments. Here phase 2
is its own command on its own workdir:

    bertjax pretrain --config configs/two_phase/bert_large_phase1.py --workdir P1 ...
    bertjax pretrain --config configs/two_phase/bert_large_phase2.py --workdir P2 \\
        --config.init_from=P1 ...

`config.init_train_state=True` (with `config.init_from` a pretraining workdir) loads the newest
checkpoint of that workdir whole: parameters, optimizer moments, step and PRNG key. What restarts
is `config.train.reset_step`: True (NVIDIA's `run_pretraining.py --phase2`, which sets the
optimizer's step to 0 and gives phase 2 its own warmup and length) sets the step and every
optimizer step count to 0, so phase 2's schedule (`config.optim`, `config.train.num_steps`) runs
from its start; False continues the step count and the schedule (`train.num_steps` then counts
both phases). The model, vocabulary and tokenizer come from `init_from` as for any continued
pretraining. The phase-1 step taken over is recorded in `workdir/init_state.json`; a rerun of
phase 2 resumes from phase 2's own checkpoints as usual.
"""

from __future__ import annotations

import json
import logging
import pathlib

import jax
import ml_collections
import numpy as np

from bertjax.config import resolve_path
from bertjax.training import checkpoints

log = logging.getLogger(__name__)

FILENAME = "init_state.json"


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises naming the fields when `config.init_train_state` has no workdir to start from."""
    if config.get("init_train_state", False) and not config.init_from:
        raise ValueError(
            "config.init_train_state=True starts from a pretraining workdir's train state: set "
            "config.init_from=PHASE1_WORKDIR"
        )


def reset_step(state):
    """`state` with the step and every optimizer step count (`count` fields: Adam/LAMB bias
    correction and the learning-rate schedule) set to 0; moments and parameters kept."""

    def zero_counts(path, leaf):
        name = getattr(path[-1], "name", None) if path else None
        return _zeros_like(leaf) if name == "count" else leaf

    opt_state = jax.tree_util.tree_map_with_path(zero_counts, state.opt_state)
    return state.replace(step=_zeros_like(state.step), opt_state=opt_state)


def _zeros_like(x: jax.Array) -> jax.Array:
    return jax.device_put(np.zeros(x.shape, x.dtype), x.sharding)


def initial_state(
    config: ml_collections.ConfigDict, workdir: pathlib.Path, steps
) -> tuple[object, dict] | None:
    """The phase-1 train state to start from (None unless `config.init_train_state`), with the
    data position of this run's data (its start).

    Raises:
      FileNotFoundError: `config.init_from` holds no readable checkpoint (naming the field).
    """
    if not config.get("init_train_state", False):
        return None
    source = resolve_path(config.init_from) / "checkpoints" if config.init_from else None
    if source is None or not source.is_dir():
        raise FileNotFoundError(
            f"config.init_train_state=True loads the train state of a pretraining workdir, but "
            f"config.init_from={config.init_from!r} has no checkpoints/ folder"
        )
    manager = checkpoints.checkpoint_manager(source, config.checkpoint)
    try:
        restored = checkpoints.restore_train_state(
            manager, steps.state_shardings, steps.abstract_state
        )
    finally:
        manager.close()
    if restored is None:
        raise FileNotFoundError(f"config.init_from={config.init_from!r}: no readable checkpoint")
    state, position = restored
    reset = bool(config.train.reset_step)
    if reset:
        state = reset_step(state)
    log.info(
        "phase 2: the train state of step %d of %s (parameters and optimizer moments); %s",
        position["step"],
        config.init_from,
        "step and schedule restart at 0" if reset else "step and schedule continue",
    )
    start = int(state.step)
    if jax.process_index() == 0:
        record = {"init_from": str(config.init_from), "step": int(position["step"])}
        record.update(reset_step=reset, start_step=start)
        (pathlib.Path(workdir) / FILENAME).write_text(json.dumps(record, indent=1))
    # the data position of this run's data: its start (see `start_step`)
    return state, {"step": start, "examples_consumed": start * config.train.global_batch_size}


def start_step(workdir: pathlib.Path) -> int:
    """The step this workdir's training started at (phase 2 without reset: phase 1's last)."""
    path = pathlib.Path(workdir) / FILENAME
    return json.loads(path.read_text())["start_step"] if path.exists() else 0
