"""The run spec: one field swaps the family; the resolved config is checked, frozen and kept.

**Swapping the family.** `--config.model.family=NAME` on any pretraining or fine-tuning config
(`swap_family`, called by `bertjax.config.load_config`) keeps the shared sizes (`SHARED`) and
takes everything else the family needs from its registry entry (`Family.run_defaults`: its model
fields, objective, tokenizer kind, instance builder, masking rates, ...). ml_collections keeps no
record of who set a value, so the rule is by value:

  - a field the config file holds at its *own* family's default (the family the file was written
    for) is that family's default, and becomes the new family's default;
  - a field whose value differs from that default, and every other `--config.*` override (applied
    after the swap), is an explicit choice and kept;
  - a field the new family does not have is dropped when it holds the default (or is a shared
    size, such as the heads of a recurrent family), and refused, naming it, when it does not.

Fine-tuning configs swap only the model group (the task decides the rest). `check` then refuses a
combination that cannot work (`objective=mlm_nsp` with `family=gpt`) before any data work.

**The spec of a run.** `freeze` is the whole config with `config.model` replaced by the frozen
model config the run trains (values computed from the data, such as the vocabulary size, go
there, never back into the ConfigDict). `record` writes it to `WORKDIR/run_config.json`; `begin`
refuses, before anything is written, a rerun of the workdir whose config differs in anything
but the fields in `RESUME_FIELDS` (more steps, evaluation, logging, checkpoint interval, ...),
which are allowed and appended to `WORKDIR/run_history.jsonl`. `bertjax config show` prints it.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import logging
import pathlib
from collections.abc import Mapping
from typing import Any

import ml_collections

from bertjax.models.registry import family_of, get_family, model_config

log = logging.getLogger(__name__)

RUN_CONFIG = "run_config.json"  # the frozen resolved config of the latest run of a workdir
HISTORY = "run_history.jsonl"  # one line per rerun that changed an allowed field
LEGACY_MODEL_CONFIG = "config.json"  # a workdir's model group (all a workdir held before)

# Sizes every family shares: a swap keeps them whatever they hold.
SHARED = tuple(
    f"model.{name}"
    for name in (
        "vocab_size",
        "hidden_size",
        "num_layers",
        "num_heads",
        "intermediate_size",
        "max_position_embeddings",
    )
)
COMPUTED = ("model.eos_token_id",)  # set from the trained vocabulary: never an explicit choice

# Fields a rerun of a workdir may change (they change neither the model, its data nor the
# optimisation it resumes): dotted keys, or a group ending in ".".
RESUME_FIELDS = (
    "train.num_steps",
    "train.num_epochs",
    "train.log_every",
    "train.eval_every",
    "train.eval_batches",
    "train.peak_tflops",
    "train.max_bad_steps",
    "train.watchdog_seconds",
    "train.grad_accum_steps",  # the same full-batch gradient in fewer or more micro-batches
    "train.profile_steps",
    "train.early_stop.",  # when to stop: evaluation settings
    # recovering from divergence (README, "When things go wrong"): a lower peak learning rate,
    # longer warmup or tighter clipping, then the same command resumes the last good checkpoint
    "optim.learning_rate",
    "optim.warmup_steps",
    "optim.warmup_fraction",
    "optim.grad_clip_norm",
    "checkpoint.every_steps",
    "checkpoint.keep",
    "checkpoint.async_save",
    "data.worker_count",
    "data.prefetch",
    "eval_only",
    "distributed.",  # N-to-M process resume
    "mesh.",  # the same arrays laid out over other devices
)
MISSING = object()


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> leaf of a nested mapping (a ConfigDict or a dict)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping | ml_collections.ConfigDict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _set(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
    *groups, leaf = key.split(".")
    node = config
    for group in groups:
        if group not in node:
            node[group] = ml_collections.ConfigDict()
        node = node[group]
    with node.ignore_type():
        node[leaf] = value


def _delete(config: ml_collections.ConfigDict, key: str) -> None:
    """Deletes a field, and its group when that is left empty (e.g. ELECTRA's `rtd`)."""
    *groups, leaf = key.split(".")
    parents = [config]
    for group in groups:
        parents.append(parents[-1][group])
    del parents[-1][leaf]
    for parent, group, node in reversed(list(zip(parents, groups, parents[1:], strict=False))):
        if not node.keys():
            del parent[group]


def swap_family(config: ml_collections.ConfigDict, source: str) -> ml_collections.ConfigDict:
    """`config` (written for family `source`) with `config.model.family`'s defaults: see the
    module docstring for which fields are kept, swapped, dropped or refused.

    Raises:
      ValueError: a field the new family does not have holds a value other than its default.
    """
    target, old = get_family(config.model.family), get_family(source)
    new_defaults, old_defaults = target.run_defaults(config), old.run_defaults(config)
    pretraining = "task" not in config
    keys = [k for k in {**old_defaults, **new_defaults} if pretraining or k.startswith("model.")]
    flat, out = flatten(config), copy.deepcopy(config)
    for key in keys:
        value = flat.get(key, MISSING)
        explicit = value is not MISSING and (
            key in SHARED or old_defaults.get(key, MISSING) != value
        )
        if key in new_defaults:
            if not explicit or key in COMPUTED:
                _set(out, key, new_defaults[key])
        elif value is not MISSING:
            if explicit and key not in (*COMPUTED, *SHARED):
                raise ValueError(
                    f"config.{key}={value!r} is a setting of family {source!r} that "
                    f"config.model.family={target.name!r} does not have; remove it"
                )
            _delete(out, key)
    return out


def check(config: ml_collections.ConfigDict) -> None:
    """Refuses, before any data work, a config whose parts cannot work together: the family,
    and for pretraining the objective and instance builder (`bertjax.objectives.OBJECTIVES`).
    Raises ValueError naming both fields and what would work."""
    from bertjax import objectives

    family = get_family(config.model.get("family", "bert"))
    if "task" in config:
        return
    name = config.get("objective", "mlm_nsp")
    entry = objectives.get_objective(name)
    if family.name not in entry.families:
        fits = [n for n, e in objectives.OBJECTIVES.items() if family.name in e.families]
        raise ValueError(
            f"config.objective={name!r} does not train config.model.family={family.name!r} "
            f"(it trains {', '.join(entry.families)}); objectives for {family.name!r}: "
            f"{', '.join(fits)}"
        )
    instances = config.data.get("instances", "nsp_pairs")
    if instances not in entry.instances:
        raise ValueError(
            f"config.data.instances={instances!r} does not fit config.objective={name!r}: "
            f"it reads {', '.join(entry.instances)}"
        )


def freeze(config: ml_collections.ConfigDict, model: Any) -> ml_collections.FrozenConfigDict:
    """The resolved config of a run: every group of `config`, with `model` (the frozen model
    config the run trains, values computed from the data included) as `config.model`."""
    resolved = config.to_dict()
    resolved["model"] = {"family": family_of(model).name, **dataclasses.asdict(model)}
    return ml_collections.FrozenConfigDict(resolved)


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples become lists), so stored and fresh values compare."""
    return json.loads(json.dumps(value))


def document(config: ml_collections.ConfigDict, model: Any) -> dict[str, Any]:
    """The `run_config.json` document: the resolved config, and the requested values of the
    fields the run resolved otherwise (from the data or `init_from`), to compare reruns with."""
    resolved = _plain(freeze(config, model).to_dict())
    flat = flatten(resolved)
    requested = {
        k: v for k, v in flatten(_plain(config.to_dict())).items() if flat.get(k, MISSING) != v
    }
    return {"config": resolved, "requested": requested}


def allowed_on_resume(key: str) -> bool:
    return any(key == f or (f.endswith(".") and key.startswith(f)) for f in RESUME_FIELDS)


def changes(config: ml_collections.ConfigDict, stored: Mapping[str, Any]) -> dict[str, tuple]:
    """Dotted key -> (stored, now) of the fields `config` requests differently from a stored
    `run_config.json` document. Fields only one side has (added or removed since) are skipped."""
    before = {**flatten(stored["config"]), **stored.get("requested", {})}
    now = flatten(_plain(config.to_dict()))
    return {k: (before[k], v) for k, v in now.items() if k in before and before[k] != v}


def _refuse(workdir: pathlib.Path, differ: Mapping[str, tuple]) -> None:
    shown = ", ".join(f"config.{k}={new!r} (was {old!r})" for k, (old, new) in differ.items())
    raise ValueError(
        f"{workdir} holds a run of another config: {shown}; rerun with the workdir's values or "
        "use a new --workdir (a rerun may change only steps, evaluation, logging, "
        "checkpointing, the learning-rate schedule, workers and processes)"
    )


def begin(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> None:
    """The start of a run: `check`s the config and, for a workdir that holds a run, refuses
    (before anything is written) a config that differs outside `RESUME_FIELDS`."""
    check(config)
    path = pathlib.Path(workdir) / RUN_CONFIG
    if path.is_file():
        differ = changes(config, json.loads(path.read_text()))
        refused = {k: v for k, v in differ.items() if not allowed_on_resume(k)}
        if refused:
            _refuse(pathlib.Path(workdir), refused)


def check_model(workdir: pathlib.Path, model: Any) -> None:
    """Refuses a run whose model differs from that of a workdir written before `run_config.json`
    (its `config.json` holds the model group only)."""
    if (workdir / RUN_CONFIG).is_file() or not (workdir / LEGACY_MODEL_CONFIG).is_file():
        return
    # the model group as `interop.model_dir` writes it (read here without it: model_dir imports
    # the data and config modules, and `bertjax.config` imports this one)
    document = json.loads((workdir / LEGACY_MODEL_CONFIG).read_text(encoding="utf-8"))
    if not isinstance(document, dict) or "model" not in document:
        return  # not a bertjax workdir's model config
    try:
        _, stored = model_config({"family": document.get("family", "bert"), **document["model"]})
    except (TypeError, ValueError):
        return
    new = {"family": family_of(model).name, **dataclasses.asdict(model)}
    old = {"family": family_of(stored).name, **dataclasses.asdict(stored)}
    differ = {
        f"model.{k}": (old.get(k), v)
        for k, v in new.items()
        if old.get(k, MISSING) != v and not allowed_on_resume(f"model.{k}")
    }
    if differ:
        _refuse(workdir, differ)


def record(
    config: ml_collections.ConfigDict, model: Any, workdir: str | pathlib.Path, write: bool = True
) -> None:
    """After `begin`, once the model is resolved: `check_model`, then (with `write`: process 0)
    writes the run's resolved config to `workdir/run_config.json` and appends the allowed changes
    of a rerun to `workdir/run_history.jsonl` (and logs them)."""
    workdir = pathlib.Path(workdir)
    check_model(workdir, model)
    path = workdir / RUN_CONFIG
    if not write:
        return
    if path.is_file():
        differ = changes(config, json.loads(path.read_text()))
        if differ:
            log.info(
                "resuming %s with %s",
                workdir,
                ", ".join(f"config.{k}={new!r} (was {old!r})" for k, (old, new) in differ.items()),
            )
            line = {
                "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "changed": {k: list(v) for k, v in differ.items()},
            }
            with open(workdir / HISTORY, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document(config, model), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def show(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config a run of `config` starts from, checked, with `config.model` completed by its
    family's fields (values computed from the data come at the run's start)."""
    check(config)
    family = get_family(config.model.get("family", "bert"))
    resolved = _plain(config.to_dict())
    defaults = {
        k[len("model.") :]: v
        for k, v in family.run_defaults(config).items()
        if k.startswith("model.")
    }
    resolved["model"] = {**_plain(defaults), **resolved["model"]}
    return resolved


def show_workdir(path: str | pathlib.Path) -> dict[str, Any]:
    """`bertjax config show WORKDIR`: the resolved config of a workdir's latest run (its
    `run_config.json`, which has the values computed from the data)."""
    path = pathlib.Path(path)
    if not (path / RUN_CONFIG).is_file():
        raise FileNotFoundError(f"{path} has no {RUN_CONFIG} (a workdir of a run started)")
    return json.loads((path / RUN_CONFIG).read_text())["config"]


__all__ = ["begin", "check", "freeze", "record", "show", "show_workdir", "swap_family"]
