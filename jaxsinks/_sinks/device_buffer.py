"""DeviceBuffer: frames recorded into preallocated device memory (the seeds' GPUBuffer)."""

from __future__ import annotations

from typing import Any, cast, final

import jax
import jax.numpy as jnp
import numpy as np

from .._core.columns import (
    as_mask,
    as_step,
    as_time,
    row_destinations,
    single_destination,
    status,
)
from .._core.deprecation import deprecated_arguments, renamed_property
from .._core.pytree import pytree_dataclass, replace
from .._core.schedule import Schedule
from .._core.sink import (
    RecordOptions,
    Sink,
    check_buffer_overflow,
    check_capacity,
    empty_state,
    first_time,
    host_int,
)
from .._core.trajectory import Trajectory
from .._core.types import Overflow, PyTree, Stale


@final
@pytree_dataclass
class DeviceBuffer(Sink):
    """A fixed-capacity recording in device memory: an immutable pytree updated by pure writes.

    Create it with `DeviceBuffer.create`, carry it through `lax.scan`, `fori_loop` or `while_loop`,
    write with `write` or `jaxsinks.record`, and read it on the host with `read`. Writes compile to
    one in-place slot update, and reverse-mode gradients through the recorded frames cost the same
    as through stacked scan outputs (see docs/design.md).

    Its state is the recorder state every sink has (see `Sink`): ``columns`` holds the
    preallocated frame rows, ``recorded`` counts every frame (row) recorded so far, including any
    that did not fit, ``flags`` holds status bits such as OVERFLOW. The buffer adds no fields of
    its own.

    Attributes:
        capacity: how many frames the buffer holds.
        overflow: what happens past capacity: ``"error"``, ``"drop"`` or ``"ring"``.
    """

    count = renamed_property("recorded", old="count", meaning="every frame recorded")

    @classmethod
    @deprecated_arguments("DeviceBuffer.create", positional=("capacity",))
    def create(
        cls,
        frame: PyTree,
        *,
        capacity: int,
        overflow: Overflow = "error",
        every: int | Schedule | None = None,
        per_system: bool = False,
        once: bool = False,
        time_dtype: Any = jnp.float32,
    ) -> DeviceBuffer:
        """An empty buffer for frames like `frame`.

        Args:
            frame: an example frame: a pytree of arrays or `jax.ShapeDtypeStruct`s. Only shapes
                and dtypes are used.
            capacity: how many frames (for per-system buffers: rows) the buffer holds.
            overflow: past capacity, ``"error"`` keeps the first `capacity` frames and makes
                `read` raise; ``"drop"`` keeps the first `capacity` silently (the OVERFLOW flag is
                still set); ``"ring"`` keeps the newest `capacity`.
            every: the schedule `jaxsinks.record` follows: an int n (every n-th step) or a
                `Schedule`. Defaults to every step. `write` ignores it.
            per_system: if true, every leaf of `frame` has a leading system axis, and each record
                appends the rows selected by a mask (e.g. the converged systems) as separate
                entries, with their system index.
            once: with `per_system`, record each system at most once: the first time the mask
                selects it (e.g. when it first converges). No host sync: a per-system ``seen``
                array is part of the state.
            time_dtype: the dtype of the time column.
        """
        capacity = check_capacity("DeviceBuffer.create", "capacity", capacity)
        options = RecordOptions.check(
            "DeviceBuffer.create",
            frame,
            capacity=capacity,
            overflow=overflow,
            every=every,
            per_system=per_system,
            once=once,
            time_dtype=time_dtype,
        )
        return cls(**empty_state(options, capacity, write_once=options.overflow != "ring"))

    # ---------------------------------------------------------------- device side (pure, jittable)

    def _append(self, frame, *, step, time, mask, enabled):
        leaves = self.frame_spec.check(frame)
        ring = self.overflow == "ring"
        dtype = self.time_dtype
        seen = self.seen
        if self.batch_size is None:
            enabled = as_mask(mask, ()) & enabled
            slot, recorded, dropped = single_destination(
                self.recorded, enabled, self.capacity, ring=ring
            )
            columns, beyond = self.columns.put(slot, leaves, as_step(step), as_time(time, dtype))
        else:
            shape = (self.batch_size,)
            selected = as_mask(mask, shape) & enabled
            if self.once:
                selected, seen = first_time(selected, seen)
            dest, recorded, dropped = row_destinations(
                self.recorded, selected, self.capacity, ring=ring
            )
            columns, beyond = self.columns.scatter(
                dest, leaves, as_step(step, shape=shape), as_time(time, dtype, shape=shape)
            )
        flags = self.flags | status(dropped, beyond)
        return replace(self, columns=columns, recorded=recorded, flags=flags, seen=seen)

    @property
    def capacity(self) -> int:
        """How many frames (rows) the buffer holds."""
        return cast(int, self.options.capacity)  # RecordOptions.check was given an int

    @property
    def size(self) -> jax.Array:
        """How many frames the buffer holds now (at most `capacity`); usable inside jit."""
        return jnp.minimum(self.recorded, self.capacity)

    @property
    def is_full(self) -> jax.Array:
        """Whether the buffer holds `capacity` frames (a bool array; usable inside jit)."""
        return self.recorded >= self.capacity

    @property
    def frames(self) -> PyTree:
        """The frame slots in slot order, each leaf of leading size `capacity` (see `valid`).

        On a stack of buffers (vmapped outside `vmap`), the stack axes come first.
        """
        return self.spec.unflatten([self._slots(leaf) for leaf in self.columns.leaves])

    @property
    def steps(self) -> jax.Array:
        """The step column in slot order."""
        return self._slots(self.columns.step)

    @property
    def times(self) -> jax.Array:
        """The time column in slot order."""
        return self._slots(self.columns.time)

    @property
    def valid(self) -> jax.Array:
        """A bool array over the slots: which ones hold a recorded frame (usable inside jit)."""
        return jnp.arange(self.capacity, dtype=self.recorded.dtype) < self.size[..., None]

    def _slots(self, column: jax.Array) -> jax.Array:
        """`column` without the trash slot; the slot axis follows any stack axes."""
        stack = (slice(None),) * self.recorded.ndim
        return column[(*stack, slice(0, self.capacity))]

    # ------------------------------------------------------------------------------- host side

    def __len__(self) -> int:
        return min(host_int(self.recorded, "DeviceBuffer"), self.capacity)

    def read(self, *, check: bool = True) -> Trajectory:
        """The recorded frames as numpy arrays, oldest first.

        Raises:
            SinkOverflowError: if ``overflow="error"`` and more frames were recorded than fit (the
                kept frames are still in the buffer: ``read(check=False)`` returns them).
        """
        recorded = host_int(self.recorded, "DeviceBuffer")
        if check:
            self.check()
        n = min(recorded, self.capacity)
        if self.overflow == "ring" and recorded > self.capacity:
            order = (recorded + np.arange(self.capacity)) % self.capacity
        else:
            order = np.arange(n)
        leaves, steps, times, systems = self.columns.take(order)
        return Trajectory(self.spec.unflatten(leaves), steps, times, systems)

    def check(self) -> None:
        """Raise `SinkOverflowError` if frames were lost under ``overflow="error"``, or a
        `FrameError` if a traced `step` or `time` recorded was out of its column's range."""
        check_buffer_overflow(self, "DeviceBuffer")

    def close(self, *, stale: Stale = "raise") -> DeviceBuffer:
        """Host side: check the buffer (see `check`) and return it; used by `jaxsinks.close`.
        (`stale` is for streaming sinks: a device buffer has no older values to refuse.)"""
        self.check()
        return self

    def drain(self) -> tuple[Trajectory, DeviceBuffer]:
        """``(read(), zero())``: the recorded frames, and an empty buffer to carry on with."""
        return self.read(), self.zero()

    def zero(self) -> DeviceBuffer:
        """An empty buffer with the same configuration and schedule state.

        On a stack of buffers (vmapped outside `vmap`), a stack of empty buffers of that shape.
        """
        empty = replace(
            self, **empty_state(self.options, self.capacity, write_once=self.columns.write_once)
        )
        stack = jnp.shape(self.recorded)
        empty = jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, stack + leaf.shape), empty)
        return replace(empty, schedule_state=self.schedule_state)
