"""Device mesh, logical-axis sharding, sharded init, and the host-to-device border.

The mesh has three axes, any of which may be 1:
  data   : pure data parallelism (parameters replicated);
  fsdp   : data parallelism with parameters and optimizer state sharded (ZeRO-3 style);
  tensor : tensor (model) parallelism over heads, MLP and vocabulary.
Logical axis names in the model map to these through `config.mesh.logical_axis_rules`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over both data-parallel axes

Rules = Sequence[tuple[str, Any]]


def make_mesh(mesh_config: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a ("data", "fsdp", "tensor") mesh from `config.mesh`.

    One axis may be -1, meaning "all remaining devices". Raises ValueError naming the fields when
    the product does not equal the device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = {axis: int(mesh_config[axis]) for axis in MESH_AXES}
    free = [axis for axis, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ValueError(f"config.mesh: only one of {free} may be -1")
    bad = [axis for axis, size in sizes.items() if size == 0 or size < -1]
    if bad:
        raise ValueError(f"config.mesh.{bad[0]}={sizes[bad[0]]}: must be a positive size or -1")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if free:
        if len(devices) % fixed:
            raise ValueError(
                f"config.mesh: {len(devices)} devices are not divisible by the fixed axes "
                f"{ {a: s for a, s in sizes.items() if s != -1} }"
            )
        sizes[free[0]] = len(devices) // fixed
    if math.prod(sizes.values()) != len(devices):
        raise ValueError(
            f"config.mesh: data={sizes['data']} x fsdp={sizes['fsdp']} x tensor={sizes['tensor']} "
            f"= {math.prod(sizes.values())} devices, but {len(devices)} are available"
        )
    shape = tuple(sizes[axis] for axis in MESH_AXES)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def logical_rules(mesh_config: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The logical-to-mesh rules from `config.mesh.logical_axis_rules`, as tuples."""
    return tuple(
        (name, tuple(target) if isinstance(target, list) else target)
        for name, target in mesh_config["logical_axis_rules"]
    )


def logical_specs(boxed_tree: Any) -> Any:
    """Logical PartitionSpecs of a tree of `nn.LogicallyPartitioned` values (None elsewhere)."""
    return nn.get_partition_spec(boxed_tree)


def mesh_shardings(boxed_tree: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for a tree of boxed (logically partitioned) values or their shapes."""
    return nn.logical_to_mesh_sharding(logical_specs(boxed_tree), mesh, rules)


def sharded_init(
    init_fn: Callable[[jax.Array], Any], mesh: Mesh, rules: Rules
) -> tuple[Callable, Any, Any]:
    """Prepares `init_fn` to create its tree already sharded, so no full copy sits on one device.

    Shardings come from `jax.eval_shape` of the init through the logical rules.

    Args:
      init_fn: rng -> tree of boxed (`nn.LogicallyPartitioned`) arrays, e.g. a `model.init`.
      mesh, rules: the device mesh and logical-axis rules.

    Returns:
      (jitted rng -> unboxed sharded tree, the unboxed abstract tree, the tree of NamedShardings).
    """
    abstract = jax.eval_shape(init_fn, jax.random.key(0))
    shardings = mesh_shardings(abstract, mesh, rules)
    unboxed_init = lambda rng: nn.meta.unbox(init_fn(rng))
    jitted = in_mesh(jax.jit(unboxed_init, out_shardings=shardings), mesh, rules)
    return jitted, nn.meta.unbox(abstract), shardings


def in_mesh(fn: Callable, mesh: Mesh, rules: Rules) -> Callable:
    """Wraps `fn` (a jitted step) to run with `mesh` and the logical-axis rules in effect, so the
    model's `nn.with_logical_constraint` calls resolve to mesh axes."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return fn(*args, **kwargs)

    return wrapped


def jit_train_step(
    step: Callable, state_shardings: Any, batch_shardings: Any, mesh: Mesh, rules: Rules
) -> Callable:
    """Jits `step(state, batch) -> (state, metrics)` for `mesh`: the state keeps its shardings and
    is donated (updated in place), the batch comes in on `batch_shardings`, the metrics (scalars)
    come out replicated. Runs with the mesh and logical rules in effect (`in_mesh`); the jitted
    function is `.__wrapped__` (for `lower().compile()`)."""
    jitted = jax.jit(
        step,
        in_shardings=(state_shardings, batch_shardings),
        out_shardings=(state_shardings, NamedSharding(mesh, PartitionSpec())),
        donate_argnums=(0,),
    )
    return in_mesh(jitted, mesh, rules)


def host_to_global(tree: Any, shardings: Any) -> Any:
    """Places a tree of full host arrays (the same in every process, e.g. loaded weights) onto
    `shardings`. Each process fills only its own shards, so this works across processes where
    `jax.device_put` of a host array onto a multi-process sharding does not."""
    return jax.tree.map(
        lambda x, s: jax.make_array_from_callback(
            np.shape(x), s, lambda index: np.asarray(x)[index]
        ),
        tree,
        shardings,
    )


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a batch array: leading (batch) dimension over the data-parallel axes."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """The host-to-device border: process-local numpy batches become global jax arrays.

    Each process passes its own slice ([local_batch, ...]); the result is one global array per
    field ([global_batch, ...]) sharded over the data-parallel axes. Works on one process and many.
    """
    return {
        name: jax.make_array_from_process_local_data(
            batch_sharding(mesh, np.ndim(x)), np.asarray(x)
        )
        for name, x in local_batch.items()
    }
