"""Sharded sinks: one staging block per device, each flushed by that device to its own region.

A frame split along its leading axis over a mesh axis (an ensemble spread over devices) is
recorded inside `shard_map` without gathering it: every leaf of a sharded sink has a leading
axis with one entry per shard, placed on the mesh with ``P(axis)``, so that inside `shard_map`
each device holds its own sink. Each device's flush passes its `lax.axis_index` to the host
writer, which writes that device's part of the frames into its own, chunk-aligned region.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .errors import ConfigError, TransformError
from .types import PyTree


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """Static: the mesh axis a sink's frames are split over, and how many shards it has."""

    axis: str
    count: int

    def spec(self) -> PartitionSpec:
        """The `shard_map` spec of a sharded sink (every leaf split on its leading axis)."""
        return PartitionSpec(self.axis)


def shard_info(owner: str, mesh: Any, axis: Any) -> ShardInfo | None:
    """The `ShardInfo` for ``mesh=``/``axis=`` arguments, or None; ConfigErrors name the problem."""
    if mesh is None and axis is None:
        return None
    if not isinstance(mesh, Mesh) or not isinstance(axis, str):
        raise ConfigError(
            f"`{owner}` needs both `mesh` (a jax.sharding.Mesh) and `axis` (the name of the mesh "
            f"axis the frames' leading axis is split over); got mesh={type(mesh).__name__}, "
            f"axis={axis!r}."
        )
    if axis not in mesh.shape:
        raise ConfigError(
            f"`{owner}` got axis={axis!r}, which is not an axis of the mesh {dict(mesh.shape)}."
        )
    others = {name: size for name, size in mesh.shape.items() if name != axis and size > 1}
    if others:
        raise ConfigError(
            f"`{owner}` records frames split over mesh axis '{axis}' only; the mesh also has axes "
            f"{others}, whose devices would write the same frames again. Use a mesh of one axis."
        )
    return ShardInfo(axis, int(mesh.shape[axis]))


def local_frame(owner: str, frame: PyTree, shard: ShardInfo) -> PyTree:
    """One device's part of the example `frame` (its leading axis divided by the shard count)."""

    def part(leaf: Any) -> jax.ShapeDtypeStruct:
        shape = tuple(np.shape(leaf))
        if not shape or shape[0] % shard.count:
            raise ConfigError(
                f"`{owner}` splits every field of the frame along its leading axis over "
                f"{shard.count} shards of mesh axis '{shard.axis}', but a field has shape "
                f"{list(shape)}. Give every field a leading (ensemble) axis divisible by "
                f"{shard.count}."
            )
        return jax.ShapeDtypeStruct(
            (shape[0] // shard.count, *shape[1:]),
            jax.numpy.asarray(leaf).dtype if not hasattr(leaf, "dtype") else leaf.dtype,
        )

    return jax.tree.map(part, frame)


def stack(tree: PyTree, shard: ShardInfo, mesh: Mesh) -> PyTree:
    """`tree` repeated once per shard along a new leading axis, placed with ``P(axis)``."""
    sharding = NamedSharding(mesh, shard.spec())
    return jax.tree.map(
        lambda x: jax.device_put(
            np.broadcast_to(np.asarray(x), (shard.count, *np.shape(x))), sharding
        ),
        tree,
    )


def local_shards(mesh: Mesh, shard: ShardInfo) -> tuple[int, ...]:
    """The shard indices this process's devices hold."""
    devices = np.asarray(mesh.devices).reshape(-1)
    return tuple(i for i, d in enumerate(devices) if d.process_index == jax.process_index())


def enter(tree: PyTree, shard: ShardInfo) -> PyTree:
    """Inside `shard_map`: the device's own sink, without the leading shard axis of 1."""
    leaves = jax.tree.leaves(tree)
    if leaves and leaves[0].shape[:1] != (1,):
        raise TransformError(
            f"This sink is sharded over mesh axis '{shard.axis}' ({shard.count} shards): record it "
            f"inside shard_map, with in_specs and out_specs P('{shard.axis}') for the sink "
            "(sink.partition_spec), so that each device holds its own part."
        )
    return jax.tree.map(lambda x: x[0], tree)


def leave(tree: PyTree) -> PyTree:
    """The inverse of `enter`."""
    return jax.tree.map(lambda x: x[None], tree)


def host_parts(tree: PyTree) -> dict[int, PyTree]:
    """Host side: each shard this process holds, as numpy, keyed by shard index."""
    leaves, treedef = jax.tree.flatten(tree)
    parts: dict[int, list[np.ndarray]] = {}
    for leaf in leaves:
        for piece in leaf.addressable_shards:
            index = piece.index[0].start or 0
            parts.setdefault(index, []).append(np.asarray(piece.data)[0])
    return {i: jax.tree.unflatten(treedef, ls) for i, ls in sorted(parts.items())}


def zeros_like(aval: Any) -> jax.Array:
    """Zeros of the abstract value `aval` (from `jax.eval_shape`), varying over the same mesh axes
    inside `shard_map`, so that a `lax.cond` branch returning them matches one computing it."""
    zeros = jax.numpy.zeros(aval.shape, aval.dtype)
    axes = _varying_axes(aval)
    return jax.lax.pcast(zeros, tuple(sorted(axes)), to="varying") if axes else zeros


def vary_like(new: PyTree, old: PyTree) -> PyTree:
    """`new`, each leaf made to vary over the mesh axes its leaf in `old` varies over (inside
    `shard_map`), so that it can replace `old` in a loop carry. A schedule's new state computed
    from a time the same on every device does not vary, while the state of a sharded sink does."""

    def like(x: Any, before: Any) -> Any:
        missing = _varying_axes(jax.typeof(before)) - _varying_axes(jax.typeof(x))
        return jax.lax.pcast(x, tuple(sorted(missing)), to="varying") if missing else x

    return jax.tree.map(like, new, old)


def check_same_on_every_shard(shard: ShardInfo, name: str, value: Any) -> None:
    """A TransformError if `value` (the `step`, `time` or `mask` given to `record`) may differ
    between the devices of mesh axis ``shard.axis``: the shards of one stored frame must be
    recorded at the same step. JAX tells from the value's type inside `shard_map` (unless it was
    called with ``check_vma=False``, which turns that tracking off)."""
    if value is None or shard.axis not in _varying_axes(jax.typeof(value)):
        return
    remedy = {
        "step": "Pass a step that is the same on every device (e.g. the loop counter), or "
        f"reduce it with `jax.lax.pmin(step, '{shard.axis}')`",
        "time": "Pass a time that is the same on every device (e.g. computed from replicated "
        f"values, with a time step reduced by `jax.lax.pmin(dt, '{shard.axis}')`)",
        "mask": f"Reduce it over the devices, e.g. `jax.lax.pmax(mask, '{shard.axis}')` (any) or "
        f"`jax.lax.pmin(mask, '{shard.axis}')` (all)",
    }[name]
    raise TransformError(
        f"`{name}` differs between the devices of mesh axis '{shard.axis}' (it varies over "
        f"that axis inside shard_map), but this sink is sharded over '{shard.axis}': every "
        "device must record the same frames at the same steps, or a stored frame would mix "
        f"parts of different steps. {remedy}."
    )


def _varying_axes(aval: Any) -> frozenset[str]:
    """The manual mesh axes `aval` varies over: ``manual_axis_type.varying`` in the JAX versions
    tested (0.10.2 to 0.12), ``vma`` in some others; none outside `shard_map`."""
    manual = getattr(aval, "manual_axis_type", None)
    return frozenset(getattr(manual, "varying", None) or getattr(aval, "vma", None) or ())
