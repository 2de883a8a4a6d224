"""What every sink has in common: a schedule, and a pure append that `record` drives."""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Self, TypeVar, cast

import jax
import jax.numpy as jnp
import numpy as np

from .columns import INT32, Columns
from .errors import ConfigError, FrameError, SinkOverflowError, StaleSinkError, TransformError
from .flags import Flag
from .frame import FrameSpec
from .pytree import pytree_dataclass, static
from .schedule import Schedule, as_schedule
from .types import MODES, OVERFLOW_POLICIES, Mode, Overflow, PyTree, Stale, as_bool, as_int

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class RecordOptions:
    """How a sink records, validated once by `RecordOptions.check` for every sink's `create`.

    A static field of the sink (hashable: sinks of one configuration share one compiled program).
    """

    spec: FrameSpec  #: one frame's (or, per system, one row's) spec
    batch_size: int | None  #: systems per frame for per-system sinks, else None
    capacity: int | None  #: frames (rows) kept; None: unbounded (streaming sinks only)
    overflow: Overflow
    schedule: Schedule
    once: bool  #: per-system: record each system at most once
    time_dtype: Any

    @classmethod
    def check(
        cls,
        owner: str,
        frame: PyTree,
        *,
        capacity: Any,
        overflow: Any,
        every: Any,
        per_system: Any,
        once: Any,
        time_dtype: Any,
    ) -> RecordOptions:
        """The options of `owner` (e.g. ``"ZarrSink.create"``), or a ConfigError naming the
        argument that is wrong, what was expected and what was got."""
        if capacity is not None:
            capacity = check_capacity(owner, "capacity", capacity)
        overflow = check_overflow(owner, overflow)
        if capacity is None and overflow != "error":
            raise ConfigError(
                f"`{owner}` got overflow={overflow!r} without a `capacity`: it says what happens "
                "to frames beyond `capacity`, and with none the sink is unbounded and never "
                f"overflows. Give a `capacity` for overflow={overflow!r}, or leave `overflow` out."
            )
        per_system, once = as_bool(per_system), as_bool(once)
        if not isinstance(per_system, bool):
            raise ConfigError(f"`{owner}` needs `per_system` to be a bool; got {per_system!r}.")
        spec, batch_size = split_spec(frame, per_system)
        schedule, time_dtype = as_schedule(every, owner), check_time_dtype(owner, time_dtype)
        schedule.check_time_dtype(owner, time_dtype)
        return cls(
            spec=spec,
            batch_size=batch_size,
            capacity=capacity,
            overflow=overflow,
            schedule=schedule,
            once=check_once(owner, once, per_system),
            time_dtype=time_dtype,
        )


@pytree_dataclass
class Sink(abc.ABC):
    """Base class of sinks: frozen dataclass pytrees whose arrays are leaves and whose
    configuration is the static `options`.

    A sink records either whole frames, or, when *per-system*, the rows of a frame whose leaves
    share a leading system axis (``batch_size`` rows per frame, selected by a mask).

    The fields below are every sink's recorder state, declared once here; a concrete sink is
    ``@final`` and adds only its own fields (a streaming sink: ``staged``, ``flushed``,
    ``writer``).

    Attributes:
        columns: the rows (frames plus step, time and system columns): all of a `DeviceBuffer`'s
            frames, or a streaming sink's staging block.
        recorded: frames (per-system: rows) recorded so far in total, including any that did not
            fit `capacity` (for a streaming sink that continues a run: counted from the frames
            the run had).
        flags: status bits (`jaxsinks.Flag`).
        seen: for per-system sinks with ``once=True``, which systems were recorded already.
        schedule_state: the state of the schedule.
        options: the static `RecordOptions`.
    """

    columns: Columns
    recorded: jax.Array
    flags: jax.Array
    seen: jax.Array | None
    schedule_state: PyTree
    options: RecordOptions = static()

    @property
    def spec(self) -> FrameSpec:
        """The shapes and dtypes of what one record stores: a whole frame, or for a per-system
        sink one system's row (without the system axis; see `frame_spec`)."""
        return self.options.spec

    @property
    def batch_size(self) -> int | None:
        """The systems per frame of a per-system sink; None for a whole-frame sink."""
        return self.options.batch_size

    @property
    def capacity(self) -> int | None:
        """The most frames (per-system: rows) the sink holds; None: unbounded."""
        return self.options.capacity

    @property
    def overflow(self) -> Overflow:
        """What happens past `capacity`: ``"error"``, ``"drop"`` or ``"ring"``."""
        return self.options.overflow

    @property
    def schedule(self) -> Schedule:
        """When `record` stores a frame (`Every`, `Interval`, `Times`, `When`)."""
        return self.options.schedule

    @property
    def once(self) -> bool:
        """Whether a per-system sink records each system at most once."""
        return self.options.once

    @property
    def per_system(self) -> bool:
        """Whether each record stores the selected rows of a batch rather than a whole frame."""
        return self.batch_size is not None

    @property
    def time_dtype(self) -> Any:
        """The dtype of the sink's time column."""
        return self.columns.time.dtype

    @property
    def frame_spec(self) -> FrameSpec:
        """The spec of the frames `write` and `record` take (with the system axis if any)."""
        return self.spec if self.batch_size is None else self.spec.batched(self.batch_size)

    def __repr__(self) -> str:
        fields = ", ".join(str(f) for f in self.spec.fields)
        kind = f", per_system={self.batch_size}" if self.per_system else ""
        return (
            f"{type(self).__name__}({self._repr_size()}, overflow={self.overflow!r}, "
            f"schedule={self.schedule}{kind}, fields=[{fields}])"
        )

    def _repr_size(self) -> str:
        return f"capacity={self.capacity}"

    @abc.abstractmethod
    def _append(
        self, frame: PyTree, *, step: Any, time: Any, mask: Any, enabled: jax.Array
    ) -> Self:
        """Append `frame` (its rows selected by `mask`) if `enabled`; pure."""

    @abc.abstractmethod
    def close(self, *, stale: Stale = "raise") -> Self:
        """Host side: finish the sink (flush, wait, check) and return it.

        `stale`: what to do when this is an older value of a streaming sink (see
        `jaxsinks.close`); a sink without a host writer has no older values and ignores it.
        """

    def write(self, frame: PyTree, *, step: Any, time: Any = None, mask: Any = None) -> Self:
        """Append `frame` now, whatever the schedule says. Pure: returns the new sink.

        Args:
            frame: a pytree matching the sink's frame spec.
            step: the integer step of this frame.
            time: the simulation time (a scalar; or, for per-system sinks, one per system).
            mask: for per-system sinks, a bool array with one entry per system selecting the rows
                to append (all when None); for whole-frame sinks, a scalar bool.
        """
        inner = self._enter()
        return inner._append(
            frame, step=step, time=time, mask=mask, enabled=jnp.ones((), bool)
        )._leave()

    def _enter(self) -> Self:
        """The sink as one device sees it (sharded sinks drop their shard axis in shard_map)."""
        return self

    def _leave(self) -> Self:
        """The inverse of `_enter`."""
        return self


def empty_state(
    options: RecordOptions, rows: int, *, write_once: bool, recorded: Any = 0
) -> dict[str, Any]:
    """The fields `Sink` declares, for an empty sink of `options` with `rows` rows (plus the trash
    slot), its `recorded` counter starting at `recorded` (a streaming sink continuing a run)."""
    return {
        "columns": Columns.allocate(
            options.spec,
            rows,
            time_dtype=options.time_dtype,
            per_system=options.batch_size is not None,
            write_once=write_once,
        ),
        "recorded": jnp.asarray(recorded, jnp.int32),
        "flags": jnp.zeros((), jnp.int32),
        "seen": jnp.zeros((options.batch_size,), bool) if options.once else None,
        "schedule_state": options.schedule.init(),
        "options": options,
    }


def first_time(wanted: jax.Array, seen: jax.Array) -> tuple[jax.Array, jax.Array]:
    """For ``once=True`` sinks: keep only systems never recorded before; mark them as seen."""
    wanted = wanted & ~seen
    return wanted, seen | wanted


def check_once(owner: str, once: Any, per_system: bool) -> bool:
    """`once` as a bool, or a ConfigError if it is asked of a whole-frame sink."""
    if not isinstance(once, bool):
        raise ConfigError(f"`{owner}` needs `once` to be a bool; got {once!r}.")
    if once and not per_system:
        raise ConfigError(
            f"`{owner}` got once=True without per_system=True: `once` records each system once "
            "(e.g. when it first converges), so it needs per-system rows."
        )
    return once


def split_spec(frame: PyTree, per_system: bool) -> tuple[FrameSpec, int | None]:
    """The row spec of a sink created from the example `frame`, and its batch size."""
    spec = FrameSpec.from_example(frame)
    if not per_system:
        return spec, None
    return spec.unbatched()


def check_capacity(owner: str, name: str, value: Any) -> int:
    """`value` as a positive int that fits the device's int32 counts, or a ConfigError naming the
    argument."""
    number = as_int(value)
    if number is None or number <= 0:
        raise ConfigError(
            f"`{owner}` needs `{name}` to be a positive int (a number of frames); got {value!r}."
        )
    if number > INT32.max:
        raise ConfigError(
            f"`{owner}` needs `{name}` to be at most {INT32.max}: frames are counted as int32 on "
            f"the device; got {number}. Pass a smaller `{name}`."
        )
    return number


def check_overflow(owner: str, overflow: Any) -> Overflow:
    """`overflow` if it names a policy, else a ConfigError listing them."""
    return _one_of(owner, "overflow", overflow, OVERFLOW_POLICIES)


def check_mode(owner: str, mode: Any) -> Mode:
    """`mode` if it names a mode, else a ConfigError listing them."""
    return _one_of(owner, "mode", mode, MODES)


def _one_of(owner: str, name: str, value: Any, choices: tuple[T, ...]) -> T:
    if value not in choices:
        raise ConfigError(f"`{owner}` needs `{name}` to be one of {list(choices)}; got {value!r}.")
    return cast(T, value)


def check_time_dtype(owner: str, dtype: Any) -> Any:
    """`dtype` if it is a floating dtype JAX can hold, else a ConfigError."""
    try:  # np.dtype(None) is float64: None is refused, not read as that.
        canonical = None if dtype is None else jax.dtypes.canonicalize_dtype(dtype)
    except TypeError:
        canonical = None
    if canonical is None or not jnp.issubdtype(canonical, jnp.floating):
        raise ConfigError(f"`{owner}` needs `time_dtype` to be a floating dtype; got {dtype!r}.")
    if canonical != np.dtype(dtype):
        raise ConfigError(
            f"`{owner}` got `time_dtype={np.dtype(dtype)}`, which JAX cannot hold with the current "
            f"settings (enable jax_enable_x64 for 64-bit types, or pass time_dtype={canonical})."
        )
    return canonical


def host_int(value: jax.Array, what: str) -> int:
    """A sink counter as a Python int; a TransformError if the sink is a vmapped stack, a
    StaleSinkError if its arrays were donated (deleted)."""
    if isinstance(value, jax.Array) and value.is_deleted():
        raise StaleSinkError(
            f"This {what}'s arrays were deleted: the sink was donated to a jitted call "
            "(`donate_argnums`) or deleted, and the value that call returned is the one that "
            "holds its frames. Read or close the sink the call returned (nothing stored changed)."
        )
    if getattr(value, "ndim", 0) != 0:
        raise TransformError(
            f"This {what} is a stack of {value.shape} sinks (it was created or written under "
            "`jax.vmap`), so it has no single count. Index one replica first, e.g. "
            "`jax.tree.map(lambda x: x[i], sink)`, or record the whole ensemble into one sink "
            "(see the ensembles guide)."
        )
    return int(value)


def overflow_error(kind: str, capacity: int | None, recorded: int, kept: str) -> SinkOverflowError:
    """The error of a sink with ``overflow="error"`` that was given more frames than it holds;
    `kept` says where the first `capacity` frames are (e.g. ``"are kept"``)."""
    return SinkOverflowError(
        f"{kind} overflowed: its capacity is {capacity} frames but {recorded} were recorded; the "
        f"first {capacity} {kept}. Create it with a larger `capacity`, or with overflow='drop' "
        "or 'ring'."
    )


def check_buffer_overflow(sink: Sink, kind: str) -> None:
    """Raise `SinkOverflowError` if the in-memory buffer `sink` (a `DeviceBuffer` or a
    `HostBuffer`, named `kind`) lost frames under ``overflow="error"``, or a `FrameError` if
    it stored a step or time out of its column's range (`check_columns`); its frames are kept
    and readable."""
    recorded = host_int(sink.recorded, kind)
    check_columns(sink, kind)
    if sink.overflow == "error" and int(sink.flags) & Flag.OVERFLOW:
        raise overflow_error(
            kind, sink.capacity, recorded, "are kept (`read(check=False)` returns them)"
        )


def check_columns(
    sink: Sink, kind: str, kept: str = "the frames are kept: `read(check=False)` returns them"
) -> None:
    """Raise a `FrameError` naming `step` if `sink` (named `kind`) stored a traced step outside
    the int32 range (saturated to the nearest int32: `Flag.STEP_OUT_OF_RANGE`), or naming `time`
    if it stored a traced time beyond its time dtype (as inf: `Flag.TIME_OUT_OF_RANGE`); `kept`
    says where the frames are."""
    flags = int(sink.flags)
    if flags & Flag.STEP_OUT_OF_RANGE:
        raise FrameError(
            f"A `step` recorded into this {kind} inside jit was outside the range of int32 "
            f"[{INT32.min}, {INT32.max}]: steps are stored as int32, so it was stored as "
            f"{INT32.min} or {INT32.max} ({kept}). "
            "Count steps from a later origin (pass step - step0), or record every k-th step as "
            "step // k."
        )
    if flags & Flag.TIME_OUT_OF_RANGE:
        dtype = np.dtype(sink.time_dtype)
        raise FrameError(
            f"A `time` recorded into this {kind} inside jit was beyond the range of its time "
            f"dtype {dtype} (largest {float(jnp.finfo(dtype).max):.6g}), so it was stored as inf "
            f"({kept}). Create the sink with a wider `time_dtype` (e.g. time_dtype='float64' "
            "with jax_enable_x64 on), or rescale the times."
        )
