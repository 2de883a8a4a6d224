"""StreamSink: frames staged in a device block and streamed to a host writer (Zarr, CSV).

The sink holds one staging block of ``block`` frames (a chunk, or a shard when sharded) on the
device. When a write fills it, a `lax.cond` hands the whole block to the host writer through a
host call (`jaxsinks._io.callback`: XLA's buffer handed over without a copy), which returns
``[frames accepted, flags]``, added into the sink's ``flushed`` counter and ``flags``. That data
dependency is what keeps the flush alive under `grad` (an unused callback result would be
dropped). Device memory is one block.
Subclasses (`ZarrSink`, `CsvSink`) differ only in how they create their host writer.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_batching import custom_vmap

from .._core import sharding as _sharding
from .._core.columns import (
    as_mask,
    as_step,
    as_time,
    row_destinations,
    single_destination,
    status,
)
from .._core.deprecation import renamed_property
from .._core.errors import (
    ConfigError,
    JaxsinksError,
    StaleSinkError,
    StoreError,
    TransformError,
)
from .._core.flags import Flag
from .._core.pytree import pytree_dataclass, replace, static
from .._core.sink import (
    RecordOptions,
    Sink,
    check_columns,
    empty_state,
    first_time,
    host_int,
    overflow_error,
)
from .._core.types import Stale
from .._io import writer as _writer
from .._io.callback import host_call
from .._io.codecs import inexact_integers
from .._io.layout import ArrayLayout, Layout, make_layout
from .._io.progress import Progress


@pytree_dataclass
class StreamSink(Sink):
    """Base class of sinks that stage frames on the device and stream them to a host writer.

    Besides the recorder state every sink has (see `Sink`: ``columns`` is the staging block,
    ``recorded`` every frame recorded, ``flags`` OVERFLOW, OUT_OF_RANGE, WRITE_FAILED), a
    streaming sink carries:

    Attributes:
        staged: frames (per-system: rows) staged in the block, not yet flushed.
        flushed: frames handed to the writer so far: the stored offset of the block's first frame.
        writer: the id of the host writer (an array, so sinks of one configuration share one
            compiled program).
        layout: the static layout of the stored arrays; `block` frames are flushed at a time.
    """

    staged: jax.Array
    flushed: jax.Array
    writer: jax.Array
    layout: Layout = static()
    shard: _sharding.ShardInfo | None = static(default=None)
    closed: bool = static(default=False)
    #: Whether reading the sink raises for a step or time stored out of its range
    #: (`check_columns`); if not, close raises it, once the frames are committed.
    reads_check_columns: ClassVar[bool] = False

    @classmethod
    def _empty(
        cls,
        writer: _writer.HostWriter,
        options: RecordOptions,
        layout: Layout,
        *,
        shard: _sharding.ShardInfo | None = None,
        mesh: Any = None,
    ):
        """An empty sink streaming to `writer`, continuing from its committed count.

        A sharded sink (`shard`) holds one such sink per shard, stacked and placed on `mesh`.
        """
        batch_size = options.batch_size
        staging = layout.block + (batch_size - 1 if batch_size else 0)
        sink = cls(
            **empty_state(options, staging, write_once=False, recorded=writer.committed),
            staged=jnp.zeros((), jnp.int32),
            flushed=jnp.asarray(writer.committed, jnp.int32),
            writer=jnp.asarray(writer.id, jnp.int32),
            layout=layout,
            shard=shard,
        )
        return sink if shard is None else _sharding.stack(sink, shard, mesh)

    @property
    def partition_spec(self) -> Any:
        """For a sharded sink, its `shard_map` in/out spec (``P(axis)``); None otherwise."""
        return None if self.shard is None else self.shard.spec()

    def _enter(self) -> StreamSink:
        return self if self.shard is None else _sharding.enter(self, self.shard)

    def _leave(self) -> StreamSink:
        return self if self.shard is None else _sharding.leave(self)

    @property
    def block(self) -> int:
        """Frames (per-system: rows) per flush: the size of the staging block."""
        return self.layout.block

    count = renamed_property("staged", old="count", meaning="frames staged in the block")

    # ------------------------------------------------------------------------- device side

    def _append(self, frame, *, step, time, mask, enabled):
        if self.closed or not isinstance(self.writer, jax.core.Tracer):
            self._writer_or_raise("record")  # caught at trace time, or now for eager writes
        leaves = [lax.stop_gradient(x) for x in self.frame_spec.check(frame)]
        shape = () if self.batch_size is None else (self.batch_size,)
        step = as_step(step, shape=shape)
        time = lax.stop_gradient(as_time(time, self.time_dtype, shape=shape))
        mask = as_mask(mask, shape)
        if self.shard is not None:  # one stored frame: its shards recorded at one step
            for name, value in (("step", step), ("time", time), ("mask", mask)):
                _sharding.check_same_on_every_shard(self.shard, name, value)
        wanted = mask & enabled
        sink = self
        if self.once:
            wanted, seen = first_time(wanted, self.seen)
            sink = replace(self, seen=seen)
        axis = None if self.shard is None else self.shard.axis
        return _recorder(self.layout, self.batch_size, axis)(sink, leaves, step, time, wanted)

    # --------------------------------------------------------------------------- host side

    def close(self, *, stale: Stale = "raise") -> Self:
        """Flush the staged frames, wait until everything is durable, and finish the run.

        Prefer `jaxsinks.close`, which closes every sink of a pytree and raises afterwards.

        Raises:
            StaleSinkError: if this is not the newest value of the sink (nothing is written and
                the run stays open for the newest one), or if flushes from older values were
                refused during the run (raised after the run is closed).
            WriteError: if a write failed (naming the frames safely committed).
            SinkOverflowError: if ``overflow="error"`` and frames did not fit `capacity`.
        """
        kind = type(self).__name__
        parts = {0: self} if self.shard is None else _sharding.host_parts(self)
        writer = self._writer_or_raise("close")
        for shard, part in parts.items():
            why = older_than_writer(writer, shard, host_int(part.flushed, kind), int(part.flags))
            if why is not None:
                if stale == "close":
                    return self._close_flushed(writer)
                raise StaleSinkError(
                    f"This {kind} is an older value of its sink: {why}. Nothing was written and "
                    "the run stays open. Close the sink returned by the last call (thread the "
                    "returned sink through every call). If that value is lost (an exception, or a "
                    "sink closed over in a jitted function instead of passed to it), "
                    "jaxsinks.close(sinks, stale='close') closes the run at the frames its writer "
                    "has."
                )
        try:
            closed = self._finish(writer, parts)
        except JaxsinksError as err:
            writer.closed_by_sink(err)
            raise
        writer.closed_by_sink(None)
        return closed

    def _close_flushed(self, writer: _writer.HostWriter) -> Self:
        """Close the run at what `writer` has, from an older value: the flushed blocks commit,
        this value's staged frames are not stored (`jaxsinks.close` with ``stale="close"``)."""
        try:
            writer.finish()
        except JaxsinksError as err:
            writer.closed_by_sink(err)
            raise
        writer.closed_by_sink(None)
        return replace(self, closed=True)

    def _finish(self, writer: _writer.HostWriter, parts: Mapping[int, StreamSink]) -> Self:
        """Flush the staged tail of each part, finish the writer, and raise what it kept."""
        kind = type(self).__name__
        flags, recorded = 0, 0
        for part in parts.values():
            flags |= int(part.flags)
            recorded = max(recorded, host_int(part.recorded, kind))
        flags |= self._flush_tail(writer, parts)
        stale = writer.stale_error()
        try:
            writer.finish()
        except JaxsinksError as err:
            if stale is not None:
                err.add_note(str(stale))
            raise
        if stale is not None:
            raise stale
        for part in parts.values() if not self.reads_check_columns else ():
            check_columns(part, kind, f"the frames are committed to {writer.description}")
        if self.overflow == "error" and flags & Flag.OVERFLOW:
            raise overflow_error(kind, self.capacity, recorded, f"are in {writer.description}")
        return replace(
            self,
            staged=jnp.zeros_like(self.staged),
            flushed=self.flushed + self.staged,
            flags=jnp.full_like(self.flags, flags),
            closed=True,
        )

    def flush_staged(self) -> None:
        """Hand the frames staged in this value to its writer, where it is still the newest value
        (a driver whose loop raised does this before it ends the run as interrupted)."""
        kind = type(self).__name__
        writer = self._writer_or_raise("flush")
        parts = {0: self} if self.shard is None else _sharding.host_parts(self)
        newest = {
            shard: part
            for shard, part in parts.items()
            if older_than_writer(writer, shard, host_int(part.flushed, kind), int(part.flags))
            is None
        }
        self._flush_tail(writer, newest)

    def _flush_tail(self, writer: _writer.HostWriter, parts: Mapping[int, StreamSink]) -> int:
        """Hand each part's staged frames to `writer`, with a device flush's checks; returns the
        flags those checks raised."""
        kind, flags = type(self).__name__, 0
        for shard, part in parts.items():
            n = host_int(part.staged, kind)
            if n:
                leaves, steps, times, systems = part.columns.take(np.arange(n))
                offset = host_int(part.flushed, kind)
                ack = _host_tail(
                    writer, self.layout, offset, n, leaves, steps, times, systems, shard
                )
                flags |= int(ack[1])
        return flags

    def _writer_or_raise(self, action: str) -> _writer.HostWriter:
        """The live host writer of this sink, or a clear error if it has ended (host side)."""
        kind = type(self).__name__
        ended = "closed" if self.closed else None
        if ended is None:
            part = self if self.shard is None else next(iter(_sharding.host_parts(self).values()))
            writer_id = host_int(part.writer, kind)
            writer = _writer.REGISTRY.get(writer_id)
            if writer is not None:
                return writer
            ended = _writer.REGISTRY.ended(writer_id)
            if ended is None:
                raise StoreError(
                    f"This {kind}'s writer is not open in this process; a sink cannot "
                    f"{action} in another process than the one that created it."
                )
        why = "was already closed" if ended == "closed" else ended
        raise StaleSinkError(
            f"Cannot {action} this {kind}: its run {why}. Nothing was written. A sink is a value: "
            "after `jaxsinks.close(sink)` record into a new sink (ZarrSink.create(..., mode='a') "
            "continues the run), and close each sink once, with the value the last call returned."
        )

    def _repr_size(self) -> str:
        return f"block={self.block}, capacity={self.capacity}"


def check_progress(progress: Any) -> Progress | None:
    """`progress` if it is a `jaxsinks.Progress` or None, else a ConfigError."""
    if progress is not None and not isinstance(progress, Progress):
        raise ConfigError(f"`progress` must be a jaxsinks.Progress; got {type(progress).__name__}.")
    return progress


def row_layout(options: RecordOptions, block: int) -> Layout:
    """The layout of a sink that writes plain rows (CSV, host memory): `block` frames a flush
    (at least one batch of a per-system sink), no codec, no per-field options."""
    return make_layout(
        options.spec,
        chunk=max(block, options.batch_size or 1),
        chunks_per_shard=None,
        codec=None,
        field_config=None,
        time_dtype=np.dtype(options.time_dtype),
        batch_size=options.batch_size,
    )


def older_than_writer(
    writer: _writer.HostWriter, shard: int, flushed: int, flags: int
) -> str | None:
    """Why a value of a streaming sink whose `shard` has `flushed` frames (and `flags`) is older
    than the newest its `writer` accepted, or None: the rule of `close` and the drivers."""
    if not writer.expects(shard, flushed):
        return (
            f"its staged frames start at frame {flushed}, but {writer.description} has "
            f"{writer.next_offset(shard)} frames flushed from a newer value"
        )
    if flags & Flag.STALE:
        return f"flushes from it to {writer.description} were already refused"
    return None


def out_of_range(xp: Any, values: Any, layout: ArrayLayout, real: Any = None) -> Any:
    """Per row of `values` (numpy or jax.numpy, as `xp`), whether it does not fit `layout.dtype`.

    A finite value beyond the storage dtype's range is out of range; so is a NaN or inf bound for
    an integer dtype, and an integer that a float storage dtype does not hold exactly
    (`ArrayLayout.rounds`: 257 as bfloat16). Values that fit (after rounding, for float fields)
    are not. For a ragged field, `real` (its `ArrayLayout.real_atoms`, per row) leaves out the
    padding: it is never stored. Fields stored as recorded, or widened, cost nothing; a rounding
    integer field costs a cast there and back and a comparison per value.
    """
    rng = layout.narrowing
    rows = values.shape[0]
    if rng is None and not layout.rounds:
        return xp.zeros((rows,), bool)
    if real is not None:  # 0 fits every storage dtype
        real = real.reshape(real.shape + (1,) * (values.ndim - real.ndim))
        values = xp.where(real, values, xp.zeros((), values.dtype))
    flat = values.reshape(rows, -1)
    if layout.rounds:  # integers as floats: each held exactly (inf is not: the range too)
        with np.errstate(over="ignore"):
            stored = flat.astype(layout.dtype)
        return xp.any(inexact_integers(xp, flat, stored), axis=1)
    assert rng is not None  # an integer field whose range a float does not hold also rounds
    if xp.iscomplexobj(flat):  # complex: each part must fit (real and imaginary side by side)
        flat = xp.concatenate([xp.real(flat), xp.imag(flat)], axis=1)
    lo, hi = (xp.asarray(bound, dtype=flat.dtype) for bound in rng)
    with np.errstate(invalid="ignore"):  # NaN compares quietly (ml_dtypes' bfloat16 warns)
        beyond = (flat < lo) | (flat > hi)
    if jnp.issubdtype(layout.source_dtype, jnp.inexact):  # jnp: bfloat16 too (numpy: not inexact)
        finite = xp.isfinite(flat)
        beyond = ~finite | beyond if jnp.issubdtype(layout.dtype, jnp.integer) else finite & beyond
    return xp.any(beyond, axis=1)


def real_atoms(xp: Any, layout: Layout, leaves: list[Any]) -> list[Any]:
    """Per field of `layout`, for a ragged one the mask of its real atoms in `leaves` (one array
    of rows per field: `ArrayLayout.real_atoms` of the rows' counts); None for any other field."""
    if layout.ragged is None:
        return [None] * len(layout.fields)
    names = [a.name for a in layout.fields]
    count = leaves[names.index(layout.ragged.count)]
    return [a.real_atoms(xp, count) if a.ragged_axes else None for a in layout.fields]


def _stage(sink: StreamSink, leaves, step, time, wanted) -> StreamSink:
    """Append the wanted frame (or rows) to the staging block, within `capacity`."""
    room: jax.Array | None = None
    if sink.capacity is not None and sink.overflow != "ring":  # bounded
        room = sink.capacity - sink.flushed - sink.staged
    if sink.batch_size is None:
        fits = wanted if room is None else wanted & (room > 0)
        slot, staged, _ = single_destination(sink.staged, fits, sink.columns.rows, ring=False)
        columns, beyond = sink.columns.put(slot, leaves, step, time)
    else:
        fits = wanted
        if room is not None:
            fits = wanted & (jnp.cumsum(wanted, dtype=jnp.int32) <= room)
        dest, staged, _ = row_destinations(sink.staged, fits, sink.columns.rows, ring=False)
        columns, beyond = sink.columns.scatter(dest, leaves, step, time)
    flags = sink.flags | status(jnp.any(wanted & ~fits), beyond)
    recorded = sink.recorded + jnp.sum(wanted, dtype=jnp.int32)
    return replace(sink, columns=columns, staged=staged, flags=flags, recorded=recorded)


#: Compiled recorders kept, one per sink configuration (layout, batch size, shard axis): bounded,
#: so that a long session creating many differently shaped sinks does not keep them all.
RECORDER_CACHE_SIZE = 64


@functools.lru_cache(maxsize=RECORDER_CACHE_SIZE)
def _recorder(layout: Layout, batch_size: int | None, shard_axis: str | None = None):
    """Stage a frame and flush a full block, all under a `lax.cond` that skips steps recording
    nothing (a ZarrSink is never vmapped or differentiated, so the cond stays a cond). Wrapped so
    that `vmap` gives a clear error instead of JAX's message about effects in a vmapped cond.
    """
    block = layout.block
    leftover = (batch_size - 1) if batch_size else 0

    def flush(sink: StreamSink) -> StreamSink:
        shard = jnp.int32(0) if shard_axis is None else lax.axis_index(shard_axis).astype(jnp.int32)
        ack = _device_flush(sink, jnp.int32(block), shard)
        columns = sink.columns.shift(block, leftover) if leftover else sink.columns
        return replace(
            sink,
            columns=columns,
            staged=sink.staged - block,
            flushed=sink.flushed + ack[0],
            flags=sink.flags | ack[1],
        )

    def stage_and_flush(sink, leaves, step, time, wanted):
        sink = _stage(sink, leaves, step, time, wanted)
        return lax.cond(sink.staged >= block, flush, lambda s: s, sink)

    @custom_vmap
    def record(sink, leaves, step, time, wanted):
        return lax.cond(
            jnp.any(wanted), stage_and_flush, lambda s, *_: s, sink, leaves, step, time, wanted
        )

    @record.def_vmap
    def _no_vmap(axis_size, in_batched, *args):
        raise TransformError(
            "A ZarrSink (or any streaming sink) cannot be written under jax.vmap (its host writer "
            "flushes one store, and JAX cannot batch the flush). Vmap the step function instead "
            "and record the batched state: create the sink from an example frame with a leading "
            "replica axis, e.g. `frame = jax.vmap(make_frame)(states)`; or use a DeviceBuffer "
            "inside vmap."
        )

    return jax.jit(record)  # one compile per configuration, also for eager writes


def _device_flush(sink: StreamSink, n: jax.Array, shard: jax.Array) -> jax.Array:
    """Hand the first `n` staged frames to the host writer; returns ``[accepted, flags]``."""
    # Whole staging buffers go to the host, which takes the first `n` rows: no device-side copy.
    stored, bad = [], []
    rows = sink.columns.rows + 1
    leaves = [lax.stop_gradient(leaf) for leaf in sink.columns.leaves]
    for values, array, real in zip(
        leaves, sink.layout.fields, real_atoms(jnp, sink.layout, leaves)
    ):
        if array.narrowing is None and not array.rounds:
            bad.append(jnp.zeros((), bool))
            stored.append(values.astype(array.dtype))  # a widening cast (or none)
        else:
            beyond = out_of_range(jnp, values, array, real)
            bad.append(jnp.any(beyond & (jnp.arange(rows, dtype=jnp.int32) < n)))
            stored.append(values.astype(array.dtype))
    columns = [sink.columns.step, lax.stop_gradient(sink.columns.time)]
    if sink.columns.system is not None:
        columns.append(sink.columns.system)
    (ack,) = host_call(
        _host_flush,
        [jax.ShapeDtypeStruct((2,), jnp.int32)],
        sink.writer,
        shard,
        sink.flushed,
        n,
        jnp.stack(bad),
        *stored,
        *columns,
    )
    return ack


def _host_flush(*args: np.ndarray) -> tuple[np.ndarray]:
    return (_writer.host_flush(*args),)


def _host_tail(
    writer, layout: Layout, offset: int, n: int, leaves, steps, times, systems, shard: int = 0
) -> np.ndarray:
    """Flush the staged tail from the host at close, with the same checks as a device flush."""
    reals = real_atoms(np, layout, leaves)
    bad = np.array(
        [bool(np.any(out_of_range(np, *var))) for var in zip(leaves, layout.fields, reals)]
    )
    with np.errstate(over="ignore", invalid="ignore"):  # an out-of-range block is not written
        stored = [v.astype(a.dtype) for v, a in zip(leaves, layout.fields)]
    columns = [steps, times] + ([systems] if systems is not None else [])
    return _writer.host_flush(writer.id, shard, offset, n, bad, *stored, *columns)
