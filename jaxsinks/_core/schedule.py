"""Schedules: when a sink records. Pure functions of (state, step, time), evaluated inside jit.

Every schedule is a frozen, hashable dataclass (it is static metadata of the sink that uses it) with

* ``init() -> state``: the schedule's initial state, a pytree of arrays carried in the sink;
* ``__call__(state, step, time) -> (fire, state)``: whether to record at this step, and the new
  state;
* ``to_json() -> dict``: a description stored with the recording.

Simulation-time schedules follow py-pde's trackers: they record at the first step whose time
reaches each requested time, store the step's actual time, and, when one step jumps past several
requested times, record once and move past all of them.

"Reaches" allows for rounding: a time accumulated step by step (``t += dt``) in float32 drifts
below the exact multiple it stands for (0.099999994 for ten steps of 0.01), and an exact
comparison would record one step late, or miss the last time of a run. A time ``t`` reaches a
requested time ``T`` when ``t >= T - tol``, where by default ``tol`` is the most rounding that
adding up steps of size ``h`` (the time since the previous call) from 0 in the time's dtype can
make, ``eps * T**2 / (4 * h)``, and never more than half a step, ``h / 2`` (see
`auto_tolerance`, and docs/concepts/schedules.md for what it does over long runs).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .columns import INT32
from .errors import ConfigError
from .types import PyTree, as_int

#: The most requested times an `Interval` counts: its index is an int32, and 2**30 is exact in
#: float32 (the bound its quotient is clipped to, so that the index never wraps).
MAX_INDEX = 2**30


class Schedule(abc.ABC):
    """Base class of schedules."""

    #: Whether the schedule reads the simulation time (so `record` must be given ``time=``).
    needs_time: ClassVar[bool] = False

    def init(self) -> PyTree:
        """The initial schedule state (a pytree of arrays; empty for stateless schedules)."""
        return ()

    @abc.abstractmethod
    def __call__(self, state: PyTree, step: jax.Array, time: jax.Array) -> tuple[jax.Array, PyTree]:
        """``(fire, new_state)`` for the step `step` at simulation time `time`."""

    @abc.abstractmethod
    def to_json(self) -> dict[str, Any]:
        """A JSON description of the schedule."""

    def check_time_dtype(self, owner: str, dtype: np.dtype) -> None:
        """A ConfigError from `owner` if the times this schedule requests cannot be told apart
        in the sink's time dtype `dtype` (none for schedules that do not request times)."""
        del owner, dtype  # schedules that request no times have nothing to check


@dataclasses.dataclass(frozen=True)
class Every(Schedule):
    """Record every `n`-th step, starting at step `start`: steps ``start, start + n, ...``."""

    n: int
    start: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", _check_int("Every", "n", self.n, minimum=1))
        object.__setattr__(self, "start", _check_int("Every", "start", self.start, minimum=0))

    def __call__(self, state, step, time):
        fire = (step >= self.start) & ((step - self.start) % self.n == 0)
        return fire, state

    def to_json(self):
        """A JSON description, stored with recordings."""
        return {"type": "every", "n": self.n, "start": self.start}


@dataclasses.dataclass(frozen=True)
class Interval(Schedule):
    """Record whenever the simulation time reaches ``start + k * dt`` (k = 0, 1, 2, ...).

    A time ``t`` reaches a requested time ``T`` when ``t >= T - tol``. With ``tol=None`` (the
    default) the tolerance is the most rounding that accumulating the time from 0 step by step
    can make, ``eps * T**2 / (4 * h)`` for steps of size ``h`` in a dtype with
    machine epsilon ``eps``, and never more than half a step (`auto_tolerance`). A requested
    time that a step's exact time equals is then recorded at that step, not one late: in float32
    with ``t += dt`` for runs up to about 4000 steps. A step whose exact time lies within the
    tolerance below ``T`` (a fraction ``eps * n**2 / 4`` of a step, for ``T`` about ``n`` steps
    from 0) records it one step early, as any step it drifted past ``T`` does: in float32 none
    in the first 500 steps, 1 in 1000 up to step 1000, 1 in 60 up to step 3000 (measured, see
    docs/concepts/schedules.md); in float64 a fraction below 6e-5 of a step up to 10**6 steps.
    Pass a number (``0 <= tol < dt``) for a fixed absolute tolerance; ``tol=0`` compares
    exactly.
    """

    dt: float
    start: float = 0.0
    tol: float | None = None
    needs_time: ClassVar[bool] = True

    def __post_init__(self) -> None:
        # Python numbers: a numpy scalar would be written as no JSON (run metadata, RunConfig)
        # and, as a float32, would not be weakly typed against a float64 time under x64.
        object.__setattr__(self, "dt", _check_float("Interval", "dt", self.dt))
        start = _check_float("Interval", "start", self.start, positive=False)
        object.__setattr__(self, "start", start)
        _check_tol("Interval", self.tol, below=self.dt, what=f"the interval dt={self.dt}")
        object.__setattr__(self, "tol", _python_number(self.tol))

    def init(self):
        """The index ``k`` of the next requested time ``start + k * dt``, and the previous
        time (``-inf`` before the first call)."""
        return jnp.zeros((), jnp.int32), _no_previous_time()

    def __call__(self, state, step, time):
        k, previous = state
        tol = self._tolerance(self._time(k, time.dtype), time, previous)
        fire = time >= self._time(k, time.dtype) - tol
        # The first index not reached: by the division, then one up or down where it rounded.
        quotient = jnp.floor((time + tol - self.start) / self.dt)
        passed = jnp.clip(quotient, -1, MAX_INDEX).astype(jnp.int32) + 1  # never wraps
        nxt = jnp.maximum(k + 1, passed)
        nxt = jnp.where(self._time(nxt, time.dtype) - tol <= time, nxt + 1, nxt)
        below = (nxt - 1 > k) & (self._time(nxt - 1, time.dtype) - tol > time)
        nxt = jnp.where(below, nxt - 1, nxt)  # not reached: recorded by a later step
        return fire, (jnp.where(fire, nxt, k), time.astype(previous.dtype))

    def _time(self, k: jax.Array, dtype: Any) -> jax.Array:
        return self.start + k.astype(dtype) * self.dt

    def check_time_dtype(self, owner: str, dtype: np.dtype) -> None:
        """`start`, `dt` and ``start + dt`` must be finite, and ``dt > 0`` and ``start + dt >
        start``, in `dtype`: else the requested times collapse into one (e.g. ``dt=1e-50`` is 0
        in float32, so every step would record)."""
        with np.errstate(over="ignore"):
            start, dt, first = (
                np.asarray(v, dtype) for v in (self.start, self.dt, self.start + self.dt)
            )
        if not (np.isfinite(first) and np.isfinite(start) and dt > 0 and first > start):
            _times_collapse(
                owner,
                dtype,
                f"the times of {self}, start={self.start} and start + dt={self.start + self.dt}, "
                f"are {start} and {first} (dt is {dt})",
            )

    def _tolerance(self, target: jax.Array, time: jax.Array, previous: jax.Array) -> jax.Array:
        if self.tol is not None:
            return jnp.asarray(self.tol, time.dtype)
        return auto_tolerance(target, time, previous.astype(time.dtype))

    def to_json(self):
        """A JSON description, stored with recordings (``tol`` only when one was given)."""
        out = {"type": "interval", "dt": self.dt, "start": self.start}
        return out if self.tol is None else {**out, "tol": self.tol}


@dataclasses.dataclass(frozen=True)
class Times(Schedule):
    """Record at the first step whose time reaches each of the strictly increasing `times`.

    `times` is any iterable of numbers or a 1-D array (a single number is one time). A time ``t``
    reaches a requested time ``T`` when ``t >= T - tol``, with the same default tolerance as
    `Interval`, and with the same effect: ``eps * T**2 / (4 * h)`` for steps of
    size ``h``, never more than half a step. Pass a number (``0 <= tol`` and smaller than the
    smallest gap between the times) for a fixed absolute tolerance; ``tol=0`` compares exactly.
    """

    times: tuple[float, ...]
    tol: float | None = None
    needs_time: ClassVar[bool] = True

    def __init__(
        self, times: Iterable[float] | np.ndarray | float, tol: float | None = None
    ) -> None:
        values = _as_times(times)
        if values.size == 0:
            raise ConfigError("`Times` needs at least one time; got an empty sequence.")
        if not np.all(np.isfinite(values)):
            raise ConfigError(f"`Times` needs finite times; got {values.tolist()}.")
        if np.any(np.diff(values) <= 0):
            bad = int(np.argmax(np.diff(values) <= 0))
            raise ConfigError(
                "`Times` needs strictly increasing times; got "
                f"times[{bad}] = {values[bad]} followed by times[{bad + 1}] = {values[bad + 1]}. "
                "Sort the times and remove duplicates."
            )
        gaps = np.diff(values)
        below = float(np.min(gaps)) if gaps.size else math.inf
        _check_tol("Times", tol, below=below, what=f"the smallest gap between the times, {below}")
        object.__setattr__(self, "times", tuple(float(t) for t in values))
        object.__setattr__(self, "tol", None if tol is None else float(tol))

    def check_time_dtype(self, owner: str, dtype: np.dtype) -> None:
        """Every time must be finite, and stay strictly increasing, in `dtype`."""
        with np.errstate(over="ignore"):
            cast = np.asarray(self.times, dtype)
        bad = np.flatnonzero(~np.isfinite(cast))
        if bad.size:
            i = int(bad[0])
            _times_collapse(owner, dtype, f"times[{i}] = {self.times[i]} is {cast[i]}")
        bad = np.flatnonzero(np.diff(cast) <= 0)
        if bad.size:
            i = int(bad[0])
            _times_collapse(
                owner,
                dtype,
                f"times[{i}] = {self.times[i]} and times[{i + 1}] = {self.times[i + 1]} are both "
                f"{cast[i]}",
            )

    @classmethod
    def geometric(cls, first: float, last: float, num: int) -> Times:
        """`num` geometrically spaced times from `first` to `last` (both > 0), inclusive."""
        _check_float("Times.geometric", "first", first)
        _check_float("Times.geometric", "last", last)
        _check_int("Times.geometric", "num", num, minimum=2)
        if last <= first:
            raise ConfigError(
                f"`Times.geometric` needs last > first; got first={first}, last={last}."
            )
        return cls(np.geomspace(first, last, num))

    def init(self):
        """The index of the next requested time, and the previous time (``-inf`` before the
        first call)."""
        return jnp.zeros((), jnp.int32), _no_previous_time()

    def __call__(self, state, step, time):
        i, previous = state
        times = jnp.asarray(self.times, dtype=time.dtype)
        if self.tol is not None:
            tol = jnp.asarray(self.tol, time.dtype)
        else:
            tol = auto_tolerance(times, time, previous.astype(time.dtype))
        reached = time >= times - tol
        index = jnp.arange(len(self.times), dtype=jnp.int32)
        fire = jnp.any(reached & (index == i))
        # The next requested time: the first one after `i` not reached (n when none is left).
        unreached = jnp.where((index > i) & ~reached, index, len(self.times))
        return fire, (jnp.where(fire, jnp.min(unreached), i), time.astype(previous.dtype))

    def to_json(self):
        """A JSON description, stored with recordings (``tol`` only when one was given)."""
        out = {"type": "times", "times": list(self.times)}
        return out if self.tol is None else {**out, "tol": self.tol}


@dataclasses.dataclass(frozen=True)
class When(Schedule):
    """Record whenever ``predicate(step, time)`` is true; it must return a scalar bool."""

    predicate: Callable[[jax.Array, jax.Array], jax.Array]
    uses_time: bool = True

    def __post_init__(self) -> None:
        if not callable(self.predicate):
            raise ConfigError(
                f"`When` needs a callable predicate(step, time) -> bool; got "
                f"{type(self.predicate).__name__}."
            )
        if not isinstance(self.uses_time, bool):
            raise ConfigError(f"`When` needs `uses_time` to be a bool; got {self.uses_time!r}.")

    @property
    def needs_time(self) -> bool:  # type: ignore[override]
        """Whether `record` must be given ``time=`` (set ``uses_time=False`` for step-only
        predicates)."""
        return self.uses_time

    def __call__(self, state, step, time):
        return self.predicate(step, time), state

    def to_json(self):
        """A JSON description (the predicate by name), stored with recordings."""
        name = getattr(self.predicate, "__qualname__", type(self.predicate).__name__)
        return {"type": "when", "predicate": name}


def fire_and_state(
    schedule: Schedule, state: PyTree, step: jax.Array, time: jax.Array
) -> tuple[jax.Array, PyTree]:
    """``schedule(state, step, time)``, or a ConfigError naming `schedule` when it breaks the
    contract a custom `Schedule` must keep: a scalar bool `fire`, and a new state with the same
    structure, shapes and dtypes as `state` (it is carried through the loop)."""
    fire, new = schedule(state, step, time)
    fire = jnp.asarray(fire)
    if fire.shape != () or fire.dtype != jnp.bool_:
        raise ConfigError(
            f"The schedule {schedule} must return a scalar bool as `fire`; it returned "
            f"{fire.dtype}{list(fire.shape)}. Reduce it with jnp.any/jnp.all, or compare it "
            "(an int is not read as a bool: 2 is not 'true')."
        )
    (before, given), (after, returned) = _avals(state), _avals(new)
    if before != after or not all(map(_carries, given, returned)):
        shown = lambda avals: [a.str_short() for a in avals]  # noqa: E731
        raise ConfigError(
            f"The schedule {schedule} must return a new state with the structure, shapes and "
            f"dtypes of its state (it is carried through the loop); it was given "
            f"{shown(given)} with structure {before} and returned {shown(returned)} with "
            f"structure {after}. Cast the new state to the dtypes `init` gives (e.g. "
            "`x.astype(old.dtype)`)."
        )
    return fire, new


def _avals(tree: PyTree) -> tuple[Any, list[Any]]:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, [jax.typeof(x) for x in leaves]


def _carries(given: Any, returned: Any) -> bool:
    """Whether a loop carrying the state leaf `given` accepts `returned` in its place: the same
    shape and dtype, or any dtype for a weakly typed `given` (a Python number in `init`)."""
    return given.shape == returned.shape and (given.weak_type or given.dtype == returned.dtype)


def as_schedule(every: int | Schedule | None, owner: str = "create") -> Schedule:
    """A schedule from an int (``Every(n)``), a `Schedule`, or None (every step); a ConfigError
    from `owner` (e.g. ``"ZarrSink.create"``) naming `every` if it is none of them."""
    if every is None:
        return Every(1)
    if isinstance(every, Schedule):
        return every
    number = as_int(every)
    if number is not None:
        _check_int32(owner, "every", number)
        return Every(number)
    raise ConfigError(
        f"`every` must be an int or a schedule (Every, Interval, Times, When); got "
        f"{type(every).__name__}."
    )


def auto_tolerance(target: jax.Array, time: jax.Array, previous: jax.Array) -> jax.Array:
    """The default tolerance for reaching `target` at `time`, after a call at `previous`.

    Adding up steps of size ``h = time - previous`` from 0 rounds the sum ``s`` at each step by
    at most ``eps * |s| / 2``: over the ``|target| / h`` steps to `target`, at most
    ``eps * target**2 / (4 * h)`` (the ulp-level rounding of the step and of the requested time
    is left out: with it, a time one ulp below a requested one could pass it under jit's fused
    arithmetic). The tolerance is that bound, and never more than half a step (the
    bound passes ``h / 2`` from about ``|target| > 4096 * h`` in float32; past it a drifted time
    can be a step off either way). It is 0 on the first call (``previous = -inf``) and whenever
    the time did not advance.
    """
    h = time - previous
    h = jnp.where((h > 0) & jnp.isfinite(h), h, jnp.inf)
    eps = jnp.finfo(time.dtype).eps
    return jnp.minimum(h / 2, eps * jnp.square(target) / (4 * h))


def _as_times(times: Any) -> np.ndarray:
    """The requested `times` of `Times` as a 1-D float64 array: from an iterable of real numbers
    (a list, tuple, generator) or an array of at most one dimension (a scalar is one time)."""
    if (
        isinstance(times, Iterable)
        and not isinstance(times, (str, bytes, Mapping))
        and not hasattr(times, "__array__")
    ):
        times = list(times)  # a generator or other iterator: read it once
    try:
        raw = np.asarray(times)
    except (TypeError, ValueError):
        raw = np.asarray(None)  # reported below, as not numbers
    if raw.dtype.kind not in "iuf" or raw.ndim > 1:
        raise ConfigError(
            "`Times` needs `times` to be real numbers: a sequence, iterable or 1-D array of them "
            f"(or one number); got {type(times).__name__} of dtype {raw.dtype} and shape "
            f"{list(raw.shape)}. Pass e.g. Times([0.5, 1.0, 2.0])."
        )
    return raw.astype(np.float64).reshape(-1)


def _no_previous_time() -> jax.Array:
    return jnp.full((), -jnp.inf, dtype=jnp.result_type(float))


def _times_collapse(owner: str, dtype: np.dtype, what: str) -> None:
    raise ConfigError(
        f"`{owner}` stores times as {dtype} (`time_dtype`), where {what}: the schedule could not "
        "record at the times it requests. Pass a wider `time_dtype` (float64 needs "
        "jax_enable_x64), or request times that the time dtype can tell apart."
    )


def _check_tol(owner: str, tol: Any, *, below: float, what: str) -> None:
    if tol is None:
        return
    ok = isinstance(tol, (int, float, np.integer, np.floating)) and not isinstance(tol, bool)
    if not (ok and _finite(tol) and 0 <= tol < below):
        raise ConfigError(
            f"`{owner}` needs `tol` to be None (the default tolerance for accumulated time "
            f"steps) or a number >= 0 and smaller than {what}; got {tol!r}. Pass tol=None, or "
            "tol=0 for exact comparisons."
        )


def _check_int(owner: str, name: str, value: Any, *, minimum: int) -> int:
    """`value` as a Python int >= `minimum` that fits int32, or a ConfigError naming it."""
    number = as_int(value)
    if number is None or number < minimum:
        raise ConfigError(f"`{owner}` needs `{name}` to be an int >= {minimum}; got {value!r}.")
    _check_int32(owner, name, number)
    return number


def _check_int32(owner: str, name: str, value: int) -> None:
    if value > INT32.max:
        raise ConfigError(
            f"`{owner}` needs `{name}` to be at most {INT32.max}: steps and counts are int32 on "
            f"the device; got {value!r}. Pass a smaller `{name}` (or record with `Times` or "
            "`When` for steps this far apart)."
        )


def _check_float(owner: str, name: str, value: Any, *, positive: bool = True) -> Any:
    """`value` as a Python int or float (finite, and > 0 if `positive`), or a ConfigError
    naming it."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and _finite(value) and (value > 0 or not positive)
    if not ok:
        kind = "a finite number > 0" if positive else "a finite number"
        raise ConfigError(f"`{owner}` needs `{name}` to be {kind}; got {value!r}.")
    return _python_number(value)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float64
        return False


def _python_number(value: Any) -> Any:
    """A numpy scalar as the Python int or float it holds; anything else as it is."""
    return value.item() if isinstance(value, (np.integer, np.floating)) else value
