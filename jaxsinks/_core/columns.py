"""Preallocated rows of frames with step, time and system columns, and where each write goes.

`Columns` is the storage shared by every device-side sink (a `DeviceBuffer`'s whole contents, a
`ZarrSink`'s staging block). It holds ``rows + 1`` slots: the last one is the *trash* slot that
skipped writes go to, so that no write ever needs a data-dependent shape or a read of the old slot.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import slots as _slots
from .errors import FrameError
from .frame import FrameSpec
from .pytree import pytree_dataclass, replace, static


@pytree_dataclass
class Columns:
    """Frame rows plus ``step``, ``time`` and (for per-system sinks) ``system`` columns."""

    leaves: tuple[jax.Array, ...]
    step: jax.Array
    time: jax.Array
    system: jax.Array | None
    rows: int = static()
    write_once: bool = static()

    @classmethod
    def allocate(
        cls, spec: FrameSpec, rows: int, *, time_dtype: Any, per_system: bool, write_once: bool
    ) -> Columns:
        """Zero-filled columns with `rows` usable slots plus the trash slot."""
        n = rows + 1
        return cls(
            leaves=tuple(spec.zeros((n,))),
            step=jnp.zeros((n,), jnp.int32),
            time=jnp.zeros((n,), time_dtype),
            system=jnp.zeros((n,), jnp.int32) if per_system else None,
            rows=rows,
            write_once=write_once,
        )

    @property
    def trash(self) -> int:
        """The index of the trash slot."""
        return self.rows

    def put(
        self, index: jax.Array, leaves: list[jax.Array], step: jax.Array, time: jax.Array
    ) -> Columns:
        """Write one frame at `index` (the trash slot to skip it)."""
        w = self.write_once
        return replace(
            self,
            leaves=tuple(
                _slots.put(b, v, index, write_once=w) for b, v in zip(self.leaves, leaves)
            ),
            step=_slots.put(self.step, step, index, write_once=False),
            time=_slots.put(self.time, time, index, write_once=w),
        )

    def scatter(
        self, dest: jax.Array, leaves: list[jax.Array], step: jax.Array, time: jax.Array
    ) -> Columns:
        """Write row ``i`` of every leaf to slot ``dest[i]`` (the trash slot to skip it)."""
        w = self.write_once
        size = dest.shape[0]
        assert self.system is not None  # rows are scattered in per-system columns only
        return replace(
            self,
            leaves=tuple(
                _slots.scatter(b, v, dest, write_once=w) for b, v in zip(self.leaves, leaves)
            ),
            step=_slots.scatter(self.step, jnp.broadcast_to(step, (size,)), dest, write_once=False),
            time=_slots.scatter(self.time, jnp.broadcast_to(time, (size,)), dest, write_once=w),
            system=_slots.scatter(
                self.system, jnp.arange(size, dtype=jnp.int32), dest, write_once=False
            ),
        )

    def shift(self, start: int, size: int) -> Columns:
        """Move rows ``start:start + size`` to the front (static sizes; after a block is
        flushed)."""
        move = lambda b: lax.dynamic_update_slice_in_dim(b, b[start : start + size], 0, 0)  # noqa: E731
        return replace(
            self,
            leaves=tuple(move(b) for b in self.leaves),
            step=move(self.step),
            time=move(self.time),
            system=None if self.system is None else move(self.system),
        )

    def take(
        self, order: np.ndarray
    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray | None]:
        """Host side: the rows at `order` as numpy arrays (leaves, step, time, system)."""
        get = lambda a: np.asarray(jax.device_get(a))[order]  # noqa: E731
        system = None if self.system is None else get(self.system)
        return [get(leaf) for leaf in self.leaves], get(self.step), get(self.time), system


def single_destination(
    count: jax.Array, enabled: jax.Array, rows: int, *, ring: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Where one frame goes: ``(slot, new_count, dropped)``.

    `count` is the number of frames recorded so far; a disabled write or one past `rows` (when not
    a ring) goes to the trash slot. `dropped` is true when an enabled write did not fit.
    """
    if ring:
        slot = jnp.where(enabled, count % rows, rows)
        dropped = jnp.zeros((), jnp.bool_)
    else:
        fits = count < rows
        slot = jnp.where(enabled & fits, count, rows)
        dropped = enabled & ~fits
    return slot, count + enabled.astype(jnp.int32), dropped


def row_destinations(
    count: jax.Array, mask: jax.Array, rows: int, *, ring: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Where the selected rows go, in order: ``(dest, new_count, dropped)``.

    Selected rows are appended in row order. Unselected rows, and rows that do not fit when not a
    ring, go to the trash slot. A ring keeps the newest `rows` of them.
    """
    rank = jnp.cumsum(mask, dtype=jnp.int32) - 1
    selected = jnp.sum(mask, dtype=jnp.int32)
    position = count + rank
    if ring:
        keep = mask & (rank >= selected - rows)
        dest = jnp.where(keep, position % rows, rows)
        dropped = jnp.zeros((), jnp.bool_)
    else:
        keep = mask & (position < rows)
        dest = jnp.where(keep, position, rows)
        dropped = jnp.any(mask & ~keep)
    return dest, count + selected, dropped


def as_step(step: Any, *, shape: tuple[int, ...] = ()) -> jax.Array:
    """`step` as an int32 array of `shape`, or a FrameError naming it."""
    arr = jnp.asarray(step)
    if not jnp.issubdtype(arr.dtype, jnp.integer) or arr.shape not in {(), shape}:
        raise FrameError(
            f"`step` must be an integer scalar{_or_shape(shape)}; got {arr.dtype}{list(arr.shape)}."
        )
    return arr.astype(jnp.int32)


def as_time(time: Any, dtype: Any, *, shape: tuple[int, ...] = ()) -> jax.Array:
    """`time` as an array of the sink's time `dtype` (NaN when None), or a FrameError."""
    if time is None:
        return jnp.full((), jnp.nan, dtype)
    arr = jnp.asarray(time)
    weak = getattr(arr, "weak_type", False) or isinstance(time, (int, float))
    if arr.shape not in {(), shape}:
        raise FrameError(f"`time` must be a scalar{_or_shape(shape)}; got shape {list(arr.shape)}.")
    if arr.dtype != dtype and not (weak and jnp.issubdtype(arr.dtype, jnp.number)):
        raise FrameError(
            f"`time` has dtype {arr.dtype}, but the sink stores times as {np.dtype(dtype)}. Pass a "
            f"{np.dtype(dtype)} time, or create the sink with `time_dtype={arr.dtype}`."
        )
    return arr.astype(dtype)


def as_mask(mask: Any, shape: tuple[int, ...]) -> jax.Array:
    """`mask` as a bool array of `shape` (all true when None), or a FrameError naming it."""
    if mask is None:
        return jnp.ones(shape, jnp.bool_)
    arr = jnp.asarray(mask)
    if arr.dtype != jnp.bool_ or arr.shape != shape:
        what = "a scalar bool" if shape == () else f"a bool array of shape {shape} (one per system)"
        raise FrameError(f"`mask` must be {what}; got {arr.dtype}{list(arr.shape)}.")
    return arr


def _or_shape(shape: tuple[int, ...]) -> str:
    return f" or an array of shape {shape}" if shape else ""
