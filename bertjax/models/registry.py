"""The model-family registry and the one model module that joins a backbone and its heads.

A family (`Family`) is what `config.model.family` names: its frozen config dataclass, its backbone
module, the heads it supports, the input fields it reads, its forward FLOPs, and its Hugging Face
converter. `Model(family, config, heads)` runs the backbone and the requested heads; its
parameters are `{"backbone": ..., "heads": {name: ...}}`, so fine-tuning loads the backbone and
starts its heads fresh. Models take a mapping of named inputs and return a dict of named outputs.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax

Array = jax.Array
HeadSpec = tuple[str, tuple[tuple[str, Any], ...]]  # (head name, sorted keyword arguments)


@dataclasses.dataclass(frozen=True, eq=False)
class Family:
    """One model family.

    Attributes:
      name: the value of `config.model.family`.
      config_cls: frozen dataclass of the architecture; validates itself in `__post_init__`,
        raising ValueError that names `config.model.<field>`.
      backbone: Linen module class, `backbone(config)(inputs, deterministic=) -> dict` with at
        least `sequence_output` [batch, length, hidden].
      heads: head name -> Linen module class, `head(config, **kwargs)(features, inputs,
        deterministic=) -> dict of named outputs` (features: the backbone's outputs).
      input_fields: the batch fields the backbone reads (those in `optional_fields` only when
        present).
      forward_flops: (config, seq_len) -> matmul FLOPs of one backbone forward pass on one sequence.
      hf: import path of the Hugging Face converter module (`bertjax.interop.hf_*`), or None.
      stack_paths: where in the parameters the backbone's `LayerStack`s are (for relayouts
        between unrolled and scanned layers; a path absent from a tree is skipped); () for none.
      pretraining_heads: the heads a pretrained model directory of the family holds (and
        `load_pretrained` builds and export writes), e.g. ("mlm", "nsp") or ("lm",).
      head_roles: head name -> the backbone role it reads, for a backbone that holds more than
        one network (ELECTRA: `{"mlm": "generator"}`). `Model` calls the backbone once per role
        its run heads need, with `role=`; heads not named here (and a run with no heads) read
        the backbone called without `role`, its default network.
      optional_fields: input field -> the config field that turns it on (non-zero), e.g.
        `{"entity_ids": "entity_vocab_size"}`; the backbone reads such a field when given.
      defaults: what a run of the family needs beyond its model fields, as dotted config keys ->
        value (or a function of the config being resolved, e.g. a width that follows
        `model.hidden_size`): at least `objective`, `data.tokenizer`, `data.instances`; a
        `model.` key overrides the config dataclass's default. One field swaps the family
        (`--config.model.family=NAME`, `bertjax.spec`) by taking these.
      next_steps: what the end of a pretraining run suggests trying with a model of the family,
        as (what it does, command) pairs; `{model}` is the model directory, `{workdir}` the
        pretraining workdir. Each command works for the family (a test runs them).
    """

    name: str
    config_cls: type
    backbone: type[nn.Module]
    heads: Mapping[str, type[nn.Module]]
    input_fields: tuple[str, ...]
    forward_flops: Callable[[Any, int], float]
    hf: str | None = None
    stack_paths: tuple[tuple[str, ...], ...] = (("backbone", "encoder"),)
    pretraining_heads: tuple[str, ...] = ()
    head_roles: Mapping[str, str] = dataclasses.field(default_factory=dict)
    optional_fields: Mapping[str, str] = dataclasses.field(default_factory=dict)
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    next_steps: tuple[tuple[str, str], ...] = ()

    def fields_for(self, config: Any) -> tuple[str, ...]:
        """The input fields a model of `config` is fed: optional ones only when turned on."""
        on = {k for k, flag in self.optional_fields.items() if getattr(config, flag, 0)}
        return tuple(f for f in self.input_fields if f not in self.optional_fields or f in on)

    def run_defaults(self, config: Any) -> dict[str, Any]:
        """Dotted config key -> this family's default for a run of `config`: every model field
        (`model.<field>`, the config dataclass's default unless `defaults` names it) and the
        `defaults` (callables evaluated on `config`)."""
        out = {
            f"model.{f.name}": f.default
            for f in dataclasses.fields(self.config_cls)
            if f.default is not dataclasses.MISSING
        }
        out.update({k: v(config) if callable(v) else v for k, v in self.defaults.items()})
        return out

    def converter(self):
        """The Hugging Face converter module; raises when the family has none."""
        if self.hf is None:
            raise ValueError(f"model family {self.name!r} has no Hugging Face converter")
        return importlib.import_module(self.hf)


FAMILIES: dict[str, Family] = {}

# `Family.next_steps` entries shared by the families.
FILL_MASK_STEP = (
    "Try its masked-LM head:",
    'bertjax fill-mask {model} "The capital of France is [MASK]."',
)
FINETUNE_STEP = (
    "Fine-tune it on SST-2 (2,000 sentences, one epoch: minutes on a CPU):",
    "bertjax finetune --config configs/finetune/sst2_quick.py --workdir {workdir}-sst2 "
    "--config.init_from={model}",
)


def register(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    """The registered family `name`; raises naming `config.model.family` and the choices."""
    if name not in FAMILIES:
        raise ValueError(
            f"config.model.family={name!r} is invalid: allowed values are {tuple(FAMILIES)}"
        )
    return FAMILIES[name]


def fail(field: str, value: Any, allowed: str) -> None:
    """Raises the ValueError every config check uses: field, value and what is allowed."""
    raise ValueError(f"config.model.{field}={value!r} is invalid: {allowed}")


def check_positive(config: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or value <= 0:
            fail(name, value, "must be a positive integer")


def model_config(model: Mapping[str, Any]) -> tuple[Family, Any]:
    """(family, frozen config) from the `config.model` group; unknown fields are errors."""
    values = dict(model.to_dict() if hasattr(model, "to_dict") else model)
    family = get_family(values.pop("family", "bert"))
    known = {f.name for f in dataclasses.fields(family.config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"config.model has unknown fields {unknown} for family {family.name!r}; "
            f"known fields: {sorted(known)}"
        )
    return family, family.config_cls(**values)


def head_spec(name: str, **kwargs: Any) -> HeadSpec:
    return (name, tuple(sorted(kwargs.items())))


class HeadSet(nn.Module):
    """The heads of a model, as submodules named by head (parameters `heads/<name>`)."""

    family: Family
    config: Any
    specs: tuple[HeadSpec, ...]

    @nn.compact
    def __call__(self, features, inputs, *, deterministic: bool, only) -> dict[str, Array]:
        """`features`: backbone role (None: the default) -> the backbone's outputs there."""
        out: dict[str, Array] = {}
        for name, kwargs in self.specs:
            if only is None or name in only:
                head = self.family.heads[name](self.config, **dict(kwargs), name=name)
                role = self.family.head_roles.get(name)
                out.update(head(features[role], inputs, deterministic=deterministic))
        return out


class Model(nn.Module):
    """A family's backbone plus named heads: `{"backbone": ..., "heads": {name: ...}}`.

    Attributes:
      family: the `Family`.
      config: its frozen config.
      heads: `head_spec`s of the heads to build (all are created at init).
    """

    family: Family
    config: Any
    heads: tuple[HeadSpec, ...] = ()

    @nn.compact
    def __call__(
        self,
        inputs: Mapping[str, Array],
        *,
        deterministic: bool = True,
        only: tuple[str, ...] | None = None,
    ) -> dict[str, Array]:
        """Runs the backbone and the heads.

        Args:
          inputs: named [batch, ...] arrays; the backbone reads `family.input_fields`, heads read
            what they need (e.g. `masked_positions`).
          deterministic: False enables dropout (needs a "dropout" rng).
          only: names of the heads to run (None: all).

        Returns:
          The backbone's array outputs (`sequence_output`, `pooled_output`, ...; those of its
          default role when that ran) and every run head's outputs (e.g. `mlm_logits`, `logits`).
        """
        run = [name for name, _ in self.heads if only is None or name in only]
        roles = dict.fromkeys(self.family.head_roles.get(name) for name in run) or {None: None}
        backbone = self.family.backbone(self.config, name="backbone")
        features = {
            role: backbone(inputs, deterministic=deterministic, **({"role": role} if role else {}))
            for role in roles
        }
        main = features.get(None, next(iter(features.values())))
        out = {k: v for k, v in main.items() if isinstance(v, jax.Array)}
        if self.heads:
            out.update(
                HeadSet(self.family, self.config, self.heads, name="heads")(
                    features, inputs, deterministic=deterministic, only=only
                )
            )
        return out


def family_of(config: Any) -> Family:
    """The registered family whose config dataclass `config` is."""
    for family in FAMILIES.values():  # the exact class: a family's config may extend another's
        if type(config) is family.config_cls:
            return family
    raise ValueError(f"{type(config).__name__} is the config of no registered model family")
