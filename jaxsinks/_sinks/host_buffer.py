"""HostBuffer: frames offloaded from inside the compiled loop into a preallocated host-memory ring.

The seeds' HostMemory: for trajectories larger than device memory, without disk I/O during the
run. The device stages one block of frames (like every streaming sink); a full block is handed to
the host by the flush callback, which copies it into a pooled buffer, and the writer thread copies
it into preallocated host arrays of `capacity` frames. Device memory is one block; host memory is
`capacity` frames plus the pool. After (or during) the run the frames are read, drained, saved as
``.npz`` or written to a Zarr run.

The host arrays live in this process until `HostBuffer.release` (or the process ends): a sink
carries only the id of its host memory, so that buffers of one configuration share one compiled
program. `HostBuffer.zero` hands the same arrays to a new pipeline under a new id: older values of
the buffer then name a retired id, so reading, recording or closing them is a clear error rather
than a wait for frames that will never come (or a write over the new value's frames). The host
arrays and their pipeline are `jaxsinks._io.host_memory`'s; the ``.npz`` file `jaxsinks._io.npz`'s.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
from collections.abc import Iterable
from typing import Any, ClassVar, final

import jax
import jax.numpy as jnp
import numpy as np

from .._core.deprecation import deprecated_arguments
from .._core.errors import ConfigError, StaleSinkError, StoreError
from .._core.flags import Flag
from .._core.pytree import pytree_dataclass, replace
from .._core.schedule import Schedule
from .._core.sink import RecordOptions, check_buffer_overflow, check_capacity, host_int
from .._core.trajectory import Trajectory
from .._core.types import Overflow, Stale
from .._io import host_memory
from .._io import writer as _writer
from .._io.host_memory import HostMemory
from .._io.npz import npz_array, write_npz
from .._io.progress import Progress
from .stream import StreamSink, _host_tail, check_progress, row_layout

#: Default flush block: about this many bytes of frames (a HostBuffer has no Zarr chunks; the
#: block is only what each flush hands over, so it is smaller than ZarrSink's chunk target).
TARGET_BLOCK_BYTES = 4 * 2**20

#: What to do with an older value of a buffer whose frames are not all in host memory.
_READ_NEWEST = (
    "Read the newest value (the buffer the last call returned; a sink is a value: thread the "
    "returned one through every call), or read an older value before a newer one records on."
)
#: The arguments of `ZarrSink.create` that `HostBuffer.to_zarr` takes from the buffer itself.
_FIXED_OPTIONS = frozenset({"every", "per_system", "time_dtype"})


def refused_flush_error(flushed: int, recorded: int) -> StaleSinkError:
    """The error for reading a value whose flushes were refused (it has ``Flag.STALE``): of the
    `recorded` frames, its first `flushed` are in host memory, and some later ones never got
    there."""
    return StaleSinkError(
        "This HostBuffer value is an older value of its buffer: flushes from it to host memory "
        "were refused (a newer value had already flushed frames there from frame "
        f"{flushed} on, or the buffer was closed), so some of the {recorded} frames it recorded "
        "never reached host memory and a read would return a trajectory with frames missing. "
        f"Nothing was read. {_READ_NEWEST}"
    )


def overwritten_error(first: int, stop: int, sent: int, capacity: int) -> StaleSinkError | None:
    """The error for reading frames ``first:stop`` from host memory of `capacity` rows to which
    `sent` frames have been sent (frame ``i`` at row ``i % capacity``), if a newer frame has
    overwritten any of them (a ring wrapped past them); else None."""
    if first >= stop or first >= sent - capacity:
        return None
    return StaleSinkError(
        f"This HostBuffer value is an older value of its buffer: its frames {first}..{stop} were "
        f"in host memory rows that newer frames have since overwritten (overflow='ring' keeps the "
        f"newest {capacity} frames, and {sent} have been sent to it), so a read would return "
        f"another value's frames. Nothing was read. {_READ_NEWEST}"
    )


def check_zarr_options(
    options: Iterable[str], accepted: Iterable[str], deprecated: Iterable[str] = ()
) -> None:
    """Raise a ConfigError for `options` of `HostBuffer.to_zarr` that are not `accepted` (the
    keyword arguments of `ZarrSink.create`) or `deprecated` (old names it still takes): those
    the buffer fixes, then any unknown one."""
    options, accepted = set(options), set(accepted)
    fixed = sorted(_FIXED_OPTIONS & options)
    if fixed:
        raise ConfigError(
            f"`HostBuffer.to_zarr` got {fixed}, but the run takes the buffer's own schedule, "
            "per-system layout and time dtype (its frames were recorded with them). Drop "
            f"{fixed}; to record differently, create the HostBuffer so."
        )
    known = sorted(accepted - _FIXED_OPTIONS)
    unknown = sorted(options - accepted - set(deprecated))
    if unknown:
        close = {name: difflib.get_close_matches(name, known, n=1) for name in unknown}
        hints = [f"`{name}`: did you mean `{match[0]}`?" for name, match in close.items() if match]
        raise ConfigError(
            f"`HostBuffer.to_zarr` got unknown option(s) {unknown}. It takes these options of "
            f"`ZarrSink.create`: {', '.join(known)} (the store is its first argument; the frame, "
            "schedule, per-system layout and time dtype are the buffer's). Check the spelling"
            + (f" ({'; '.join(hints)})" if hints else "")
            + "; nothing was created."
        )


@final
@pytree_dataclass
class HostBuffer(StreamSink):
    """Records frames into host memory from inside compiled loops (see `HostBuffer.create`).

    Carry it through the loop like any sink; on the host, `read`, `drain`, `save_npz` or
    `to_zarr` it, before or after `jaxsinks.close`, and `release` its memory when done.
    """

    reads_check_columns: ClassVar[bool] = True  # `read` and `check` raise for it, not `close`

    @classmethod
    @deprecated_arguments("HostBuffer.create", renamed={"chunk": "block"})
    def create(
        cls,
        frame: Any,
        *,
        capacity: int,
        every: int | Schedule | None = None,
        block: int | None = None,
        per_system: bool = False,
        once: bool = False,
        overflow: Overflow = "error",
        time_dtype: Any = jnp.float32,
        progress: Progress | None = None,
    ) -> HostBuffer:
        """Preallocate host memory for `capacity` frames and return an empty sink that fills it.

        Args:
            frame: an example frame (arrays or `jax.ShapeDtypeStruct`s).
            capacity: the frames the host memory holds (rows, for per-system buffers).
            every: the schedule `jaxsinks.record` follows (an int n, or a `Schedule`).
            block: frames (per-system: rows) per flush, the size of the device staging block
                (`sink.block`); by default about 4 MiB of frames, at most `capacity`. Formerly
                `chunk` (still accepted, with a DeprecationWarning).
            per_system: record the rows of a batch selected by a mask (see `DeviceBuffer`).
            once: with `per_system`, record each system at most once.
            overflow: ``"error"`` (default; `read` and `close` raise), ``"drop"`` (keep the first
                `capacity`) or ``"ring"`` (keep the newest `capacity`).
            time_dtype: the dtype of the time column.
            progress: a `Progress` bar advanced at every flushed block.
        """
        owner = "HostBuffer.create"
        capacity = check_capacity(owner, "capacity", capacity)
        options = RecordOptions.check(
            owner,
            frame,
            capacity=capacity,
            overflow=overflow,
            every=every,
            per_system=per_system,
            once=once,
            time_dtype=time_dtype,
        )
        batch_size = options.batch_size
        if block is None:
            block = max(1, min(capacity, TARGET_BLOCK_BYTES // max(1, options.spec.nbytes)))
        block = check_capacity(owner, "block", block)
        if block > capacity or (batch_size is not None and max(block, batch_size) > capacity):
            raise ConfigError(
                f"`{owner}` needs the flush block (block={block}"
                + (f", and at least one batch of {batch_size} rows" if batch_size else "")
                + f") to fit in `capacity` ({capacity} frames). Give a smaller `block` or a larger "
                "`capacity`."
            )
        layout = row_layout(options, block)
        progress = check_progress(progress)
        try:
            memory = HostMemory(layout, capacity=capacity, progress=progress)
        except MemoryError:
            frame = sum(math.prod(a.shape) * a.dtype.itemsize for a in layout.arrays)
            raise ConfigError(
                f"`{owner}` could not allocate host memory for `capacity`={capacity} frames "
                f"({capacity * frame / 2**30:.1f} GiB at {frame} bytes a frame, step and time "
                "included): this machine has not that much free. Give a smaller `capacity`, "
                "drain the buffer during the run, or record to a ZarrSink."
            ) from None
        return cls._empty(memory, options, layout)

    # ------------------------------------------------------------------------------- host side

    def _memory(self) -> HostMemory:
        return host_memory.lookup(host_int(self.writer, "HostBuffer"))

    def __len__(self) -> int:
        total = host_int(self.flushed, "HostBuffer") + host_int(self.staged, "HostBuffer")
        assert self.capacity is not None  # a HostBuffer always has one
        return min(total, self.capacity)

    def read(self, *, check: bool = True) -> Trajectory:
        """The recorded frames as numpy arrays, oldest first: those in host memory and those
        still staged on the device. Works during the run (with the sink the last jitted call
        returned) and after `jaxsinks.close`.

        Raises:
            StaleSinkError: if this is an older value of the buffer whose frames are not all in
                host memory: its flushes were refused (a newer value had flushed first, or the
                buffer was closed), or, with ``overflow="ring"``, newer frames overwrote its rows.
            SinkOverflowError: if ``overflow="error"`` and more frames were recorded than fit
                (``read(check=False)`` returns the kept frames).
            WriteError: if copying a block into host memory failed.
        """
        memory = self._memory()
        flushed = host_int(self.flushed, "HostBuffer")
        staged = host_int(self.staged, "HostBuffer")
        if int(self.flags) & Flag.STALE:
            raise refused_flush_error(flushed, host_int(self.recorded, "HostBuffer"))
        if check:
            self.check()
        memory.wait_for(flushed)
        if memory.error is not None:
            raise memory.error
        assert self.capacity is not None  # a HostBuffer always has one
        start = max(0, flushed + staged - self.capacity)
        stored = memory.rows(min(start, flushed), flushed)
        # after the copy: a newer frame sent before it ended is counted by `next_frame`
        stale = overwritten_error(start, flushed, memory.next_frame(), self.capacity)
        if stale is not None:
            raise stale
        leaves, steps, times, systems = self.columns.take(
            np.arange(max(0, start - flushed), staged)
        )
        on_device = [*leaves, steps, times] + ([systems] if systems is not None else [])
        columns = [np.concatenate([a, b]) for a, b in zip(stored, on_device)]
        n_fields = len(self.spec.fields)
        frames = self.spec.unflatten(columns[:n_fields])
        system = columns[n_fields + 2] if self.batch_size is not None else None
        return Trajectory(frames, columns[n_fields], columns[n_fields + 1], system)

    def check(self) -> None:
        """Raise `SinkOverflowError` if frames were lost under ``overflow="error"``, or a
        `FrameError` if a traced `step` or `time` recorded was out of its column's range."""
        check_buffer_overflow(self, "HostBuffer")

    def close(self, *, stale: Stale = "raise") -> HostBuffer:
        """Move the staged frames to host memory and stop the pipeline; the frames stay readable.

        Prefer `jaxsinks.close`, which closes every sink of a pytree (and says what `stale` does).
        """
        self._memory()
        return super().close(stale=stale)

    def drain(self) -> tuple[Trajectory, HostBuffer]:
        """``(read(), zero())``: the recorded frames, and an empty buffer to carry on with."""
        return self.read(), self.zero()

    def zero(self) -> HostBuffer:
        """An empty buffer on the same host memory, its frames forgotten (not freed).

        This value and any older one can no longer be read, recorded into or closed (a
        `StaleSinkError` says so): read them first, or use `drain`. The empty buffer records
        again, also when this one was closed.

        Raises:
            WriteError: if copying a block into host memory failed (frames were lost).
        """
        memory = self._memory()
        memory.wait_for(host_int(self.flushed, "HostBuffer"))
        if memory.error is not None:
            raise memory.error
        renewed = memory.renew()
        seen = None if self.seen is None else jnp.zeros_like(self.seen)
        zero = jnp.zeros((), jnp.int32)
        return replace(
            self,
            staged=zero,
            flushed=zero,
            recorded=zero,
            flags=zero,
            seen=seen,
            writer=jnp.asarray(renewed.id, jnp.int32),
            closed=False,
        )

    def release(self) -> None:
        """Free the host memory (closing the sink first if it is still open)."""
        host_memory.release(host_int(self.writer, "HostBuffer"))

    def save_npz(self, path: Any, *, compressed: bool = False) -> None:
        """Save the frames as a ``.npz`` file (PySDE's NumpyStorage): one array per field, by its
        pytree path, plus ``step``, ``time`` and, for per-system buffers, ``system``. A field named
        like one of those is saved under its stored name (``time_`` for ``time``, as in a Zarr run).

        Each array keeps its dtype, except bfloat16 (a field, or the time column): numpy does not
        know it and would save raw bytes, so it is saved as float32, which holds every bfloat16
        value exactly (``.astype(jnp.bfloat16)`` gives the recorded values back bit for bit).

        Raises:
            StaleSinkError: for an older value whose frames are not all in host memory (`read`).
            StoreError: if the folder of `path` does not exist.
        """
        trajectory = self.read()
        names = [a.name for a in self.layout.fields]
        arrays = dict(zip(names, jax.tree.leaves(trajectory.frames)))
        arrays.update(step=trajectory.steps, time=trajectory.times)
        if trajectory.systems is not None:
            arrays["system"] = trajectory.systems
        saved: dict[str, Any] = {name: npz_array(a) for name, a in arrays.items()}
        try:
            write_npz(path, saved, compressed=compressed)
        except FileNotFoundError as err:
            raise StoreError(
                f"`HostBuffer.save_npz` could not write `path` {str(path)!r}: the folder "
                f"{os.path.dirname(err.filename or str(path))!r} does not exist. Create it "
                "first, or pass a path in an existing folder; the frames are still in the buffer."
            ) from None

    def to_zarr(self, store: Any, **options: Any) -> int:
        """Write the frames to a new Zarr run at `store` after the run; returns how many of the
        buffer's frames the run holds (with `capacity`, those a ZarrSink would have kept).

        `options` are those of `ZarrSink.create` (codec, chunk, field_config, mode, attrs,
        capacity, overflow, ...); the schedule, time dtype and per-system layout are this
        buffer's. The run keeps the frames a `ZarrSink` with those options would have kept: with
        a `capacity`, ``overflow="drop"`` writes the first frames that fit, ``"ring"`` the newest
        `capacity` (the buffer's frames are kept in host memory either way).

        Raises:
            ConfigError: if `options` names ``every``, ``per_system`` or ``time_dtype``, or an
                option `ZarrSink.create` does not take (nothing is created).
            StaleSinkError: for an older value whose frames are not all in host memory (`read`).
            SinkOverflowError: with ``overflow="error"`` (the default), if the frames do not fit
                `capacity`: the run is closed with the first frames that fit.
        """
        from .zarr_sink import ZarrSink

        parameters = inspect.signature(ZarrSink.create).parameters.values()
        check_zarr_options(
            options,
            [p.name for p in parameters if p.kind is p.KEYWORD_ONLY],
            getattr(ZarrSink.create, "deprecated_names", ()),  # taken, with a warning
        )

        trajectory = self.read()
        shape = lambda f: (self.batch_size, *f.shape) if self.batch_size else f.shape  # noqa: E731
        example = self.spec.unflatten(
            [jax.ShapeDtypeStruct(shape(f), f.dtype) for f in self.spec.fields]
        )
        sink = ZarrSink.create(
            store,
            example,
            every=self.schedule,
            per_system=self.batch_size is not None,
            time_dtype=self.time_dtype,
            **options,
        )
        writer = _writer.REGISTRY.get(host_int(sink.writer, "ZarrSink"))
        assert writer is not None
        leaves = jax.tree.leaves(trajectory.frames)
        start, total = writer.committed, len(trajectory)
        # as the ZarrSink would: a ring writes every frame and keeps the newest `capacity` (its
        # writer wraps), "drop" and "error" write the frames that fit (then "error" raises at close)
        kept = total
        if sink.capacity is not None and sink.overflow != "ring":
            kept = min(total, max(0, sink.capacity - start))
        for i in range(0, kept, sink.layout.block):
            rows = slice(i, min(i + sink.layout.block, kept))
            systems = None if trajectory.systems is None else trajectory.systems[rows]
            _host_tail(
                writer,
                sink.layout,
                start + i,
                rows.stop - rows.start,
                [v[rows] for v in leaves],
                trajectory.steps[rows],
                trajectory.times[rows],
                systems,
            )
        replace(  # the value that wrote those frames
            sink,
            flushed=jnp.asarray(start + kept, jnp.int32),
            recorded=jnp.asarray(start + total, jnp.int32),
            flags=jnp.asarray(Flag.OVERFLOW if kept < total else 0, jnp.int32),
        ).close()
        if sink.capacity is not None and sink.overflow == "ring":
            return min(total, sink.capacity)  # the newest frames: none of them was overwritten
        return kept
