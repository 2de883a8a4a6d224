"""Preallocated rows of frames with step, time and system columns, and where each write goes.

`Columns` is the storage shared by every device-side sink (a `DeviceBuffer`'s whole contents, a
`ZarrSink`'s staging block). It holds ``rows + 1`` slots: the last one is the *trash* slot that
skipped writes go to, so that no write ever needs a data-dependent shape or a read of the old slot.

Steps (and the sinks' counters) are int32 on the device. A concrete step outside that range is a
`FrameError`; a traced step of a wider integer dtype keeps its dtype until it is stored, so that
schedules see its value, and is stored saturated: `put` and `scatter` say so, and the sink sets
`Flag.STEP_OUT_OF_RANGE`, which the host raises on (`jaxsinks._core.sink.check_columns`). Times
are alike: a concrete time beyond the sink's `time_dtype` is a `FrameError`; a traced one of a
wider dtype is stored as inf and sets `Flag.TIME_OUT_OF_RANGE`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import slots as _slots
from .errors import FrameError
from .flags import Flag
from .frame import FrameSpec
from .pytree import pytree_dataclass, replace, static

#: The range of int32, the dtype of steps and of every count kept on the device (frames recorded,
#: staged or flushed); capacities and schedule periods must fit it too.
INT32 = np.iinfo(np.int32)


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
    ) -> tuple[Columns, jax.Array]:
        """Write one frame at `index` (the trash slot to skip it); also the flag bits of its step
        outside int32 (stored saturated) or its time beyond the time dtype (`out_of_range`)."""
        w = self.write_once
        step, step_beyond = stored_step(step)
        time, time_beyond = stored_time(time, self.time.dtype)
        return replace(
            self,
            leaves=tuple(
                _slots.put(b, v, index, write_once=w) for b, v in zip(self.leaves, leaves)
            ),
            step=_slots.put(self.step, step, index, write_once=False),
            time=_slots.put(self.time, time, index, write_once=w),
        ), out_of_range(step_beyond, time_beyond, index != self.trash)

    def scatter(
        self, dest: jax.Array, leaves: list[jax.Array], step: jax.Array, time: jax.Array
    ) -> tuple[Columns, jax.Array]:
        """Write row ``i`` of every leaf to slot ``dest[i]`` (the trash slot to skip it); also
        the flag bits of a written row's step or time out of range (as `put`)."""
        w = self.write_once
        size = dest.shape[0]
        assert self.system is not None  # rows are scattered in per-system columns only
        step, step_beyond = (jnp.broadcast_to(x, (size,)) for x in stored_step(step))
        time, time_beyond = (
            jnp.broadcast_to(x, (size,)) for x in stored_time(time, self.time.dtype)
        )
        return replace(
            self,
            leaves=tuple(
                _slots.scatter(b, v, dest, write_once=w) for b, v in zip(self.leaves, leaves)
            ),
            step=_slots.scatter(self.step, step, dest, write_once=False),
            time=_slots.scatter(self.time, time, dest, write_once=w),
            system=_slots.scatter(
                self.system, jnp.arange(size, dtype=jnp.int32), dest, write_once=False
            ),
        ), out_of_range(step_beyond, time_beyond, dest != self.trash)

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
    """`step` as an integer array of `shape`, or a FrameError naming it.

    A concrete step is checked against the int32 range and returned as int32. A traced step of a
    wider integer dtype (int64 with x64, uint32) keeps its dtype, so that schedules see its
    value; `stored_step` narrows it where it is stored.
    """
    beyond = None if isinstance(step, jax.core.Tracer) else _first_beyond_int32(step)
    if beyond is not None:
        raise FrameError(
            f"`step` is {beyond}, outside the range of int32 [{INT32.min}, {INT32.max}]: steps are "
            "stored as int32. Count steps from a later origin (pass step - step0), or record "
            "every k-th step as step // k."
        )
    try:
        arr = jnp.asarray(step)
    except (TypeError, ValueError):  # None, a string: no array at all
        raise FrameError(
            f"`step` must be an integer scalar{_or_shape(shape)}; got {step!r:.40}. Pass the "
            "loop's step counter, e.g. step=i."
        ) from None
    if not jnp.issubdtype(arr.dtype, jnp.integer) or arr.shape not in {(), shape}:
        raise FrameError(
            f"`step` must be an integer scalar{_or_shape(shape)}; got {arr.dtype}{list(arr.shape)}."
        )
    if isinstance(arr, jax.core.Tracer) and not fits_int32(arr.dtype):
        return arr
    return arr.astype(jnp.int32)


def stored_step(step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`step` as the int32 the step column holds, and where it did not fit (it is then the
    nearest int32: saturated, never wrapped)."""
    if fits_int32(step.dtype):
        return step.astype(jnp.int32), jnp.zeros(step.shape, jnp.bool_)
    info = jnp.iinfo(step.dtype)
    lo = jnp.asarray(max(int(info.min), int(INT32.min)), step.dtype)
    hi = jnp.asarray(min(int(info.max), int(INT32.max)), step.dtype)
    return jnp.clip(step, lo, hi).astype(jnp.int32), (step < lo) | (step > hi)


def fits_int32(dtype: Any) -> bool:
    """Whether every value of the integer `dtype` fits int32."""
    info = jnp.iinfo(dtype)
    return bool(info.min >= INT32.min and info.max <= INT32.max)


def _first_beyond_int32(step: Any) -> Any:
    """The first value of the concrete integer `step` outside the int32 range, or None."""
    if isinstance(step, int):  # Python ints are unbounded (and bools fit)
        return None if INT32.min <= step <= INT32.max else step
    if not _wide_integer(getattr(step, "dtype", None)):
        return None  # no value to check (a device array is not read), or not an integer
    values = np.asarray(step)
    beyond = (values < INT32.min) | (values > INT32.max)
    return values[beyond].flat[0] if np.any(beyond) else None


def _wide_integer(dtype: Any) -> bool:
    return dtype is not None and jnp.issubdtype(dtype, jnp.integer) and not fits_int32(dtype)


def as_time(time: Any, dtype: Any, *, shape: tuple[int, ...] = ()) -> jax.Array:
    """`time` as an array of the sink's time `dtype` (NaN when None), or a FrameError.

    A concrete time beyond the range of `dtype` is a FrameError. A traced (weakly typed) time of
    a wider dtype keeps its dtype, so that schedules see its value; `stored_time` narrows it where
    it is stored.
    """
    if time is None:
        return jnp.full((), jnp.nan, dtype)
    beyond = None if isinstance(time, jax.core.Tracer) else _first_beyond_time(time, dtype)
    if beyond is not None:
        raise FrameError(
            f"`time` is {beyond}, beyond the range of the sink's time dtype {np.dtype(dtype)} "
            f"(largest {float(jnp.finfo(dtype).max):.6g}): it would be stored as inf. Create the "
            "sink with a wider `time_dtype` (e.g. time_dtype='float64' with jax_enable_x64 on), "
            "or rescale the times."
        )
    arr = _real_array(time)
    weak = getattr(arr, "weak_type", False) or isinstance(time, (int, float))
    if arr.shape not in {(), shape}:
        raise FrameError(f"`time` must be a scalar{_or_shape(shape)}; got shape {list(arr.shape)}.")
    if arr.dtype != dtype and not weak:
        raise FrameError(
            f"`time` has dtype {arr.dtype}, but the sink stores times as {np.dtype(dtype)}. "
            + _time_dtype_remedy(arr.dtype, np.dtype(dtype))
        )
    if isinstance(arr, jax.core.Tracer) and not fits_time(arr.dtype, dtype):
        return arr
    return arr.astype(dtype)


def _real_array(time: Any) -> jax.Array:
    """`time` as an array of an integer or floating dtype, or a FrameError naming `time`."""
    try:
        arr = jnp.asarray(time)
    except (TypeError, ValueError):
        arr = None
    if arr is None or not (
        jnp.issubdtype(arr.dtype, jnp.integer) or jnp.issubdtype(arr.dtype, jnp.floating)
    ):
        got = type(time).__name__ if arr is None else f"dtype {arr.dtype}"
        raise FrameError(
            f"`time` must be a real number (a float or int scalar or array); got {got}. Pass the "
            "simulation time as a number, e.g. time=t (not a string, and not complex)."
        )
    return arr


def _time_dtype_remedy(given: Any, dtype: np.dtype) -> str:
    """How to pass a time of dtype `given` to a sink storing `dtype`: convert it, or, for a
    floating `given` (the only kind `time_dtype` takes), create the sink with it."""
    convert = f"Pass a {dtype} time (e.g. `t.astype(jnp.{dtype})`)"
    if jnp.issubdtype(given, jnp.floating):
        return f"{convert}, or create the sink with `time_dtype={np.dtype(given)}`."
    return f"{convert}: `time_dtype` must be a floating dtype."


def stored_time(time: jax.Array, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """`time` as the `dtype` the time column holds, and where a finite time did not fit (it is
    then stored as inf)."""
    stored = time.astype(dtype)
    if fits_time(time.dtype, dtype):
        return stored, jnp.zeros(time.shape, jnp.bool_)
    return stored, jnp.isfinite(time) & ~jnp.isfinite(stored)


def fits_time(source: Any, dtype: Any) -> bool:
    """Whether every finite value of the `source` dtype is finite as the float `dtype`."""
    if jnp.issubdtype(source, jnp.floating):
        return bool(jnp.finfo(source).max <= jnp.finfo(dtype).max)
    if jnp.issubdtype(source, jnp.integer):
        return bool(float(jnp.iinfo(source).max) <= float(jnp.finfo(dtype).max))
    return True


def _first_beyond_time(time: Any, dtype: Any) -> Any:
    """The first finite value of the concrete `time` beyond the range of the float `dtype`, or
    None. A device array of a float dtype no wider than `dtype` is not read (it fits)."""
    largest = jnp.finfo(dtype).max
    if isinstance(time, jax.Array) and jnp.issubdtype(time.dtype, jnp.floating):
        if jnp.finfo(time.dtype).max <= largest:
            return None
    try:
        values = np.asarray(time)
    except (TypeError, ValueError, OverflowError):
        return None  # as_time reports what it is
    if not any(jnp.issubdtype(values.dtype, kind) for kind in (jnp.integer, jnp.floating)):
        return None
    wide = values.astype(np.float64)
    beyond = np.isfinite(wide) & (np.abs(wide) > float(largest))
    return values[beyond].flat[0] if np.any(beyond) else None


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


def out_of_range(step: jax.Array, time: jax.Array, written: jax.Array) -> jax.Array:
    """The flag bits of the `written` rows whose `step` or `time` did not fit its column:
    `Flag.STEP_OUT_OF_RANGE`, `Flag.TIME_OUT_OF_RANGE`."""
    return jnp.where(
        jnp.any(step & written), jnp.int32(Flag.STEP_OUT_OF_RANGE), jnp.int32(0)
    ) | jnp.where(jnp.any(time & written), jnp.int32(Flag.TIME_OUT_OF_RANGE), jnp.int32(0))


def status(dropped: jax.Array, out_of_range: jax.Array) -> jax.Array:
    """The flag bits of a write: `Flag.OVERFLOW` if frames were `dropped`, and the bits of the
    columns `out_of_range` (see `Columns.put`)."""
    return jnp.where(dropped, jnp.int32(Flag.OVERFLOW), jnp.int32(0)) | out_of_range
