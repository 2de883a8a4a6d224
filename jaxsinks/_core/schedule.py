"""Schedules: when a sink records. Pure functions of (state, step, time), evaluated inside jit.

Every schedule is a frozen, hashable dataclass (it is static metadata of the sink that uses it) with

* ``init() -> state``: the schedule's initial state, a pytree of arrays carried in the sink;
* ``__call__(state, step, time) -> (fire, state)``: whether to record at this step, and the new
  state;
* ``to_json() -> dict``: a description stored with the recording.

Simulation-time schedules follow py-pde's trackers: they record at the first step whose time
reaches each requested time, store the step's actual time, and, when one step jumps past several
requested times, record once and move past all of them.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .errors import ConfigError
from .types import PyTree


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


@dataclasses.dataclass(frozen=True)
class Every(Schedule):
    """Record every `n`-th step, starting at step `start`: steps ``start, start + n, ...``."""

    n: int
    start: int = 0

    def __post_init__(self) -> None:
        _check_int("Every", "n", self.n, minimum=1)
        _check_int("Every", "start", self.start, minimum=0)

    def __call__(self, state, step, time):
        fire = (step >= self.start) & ((step - self.start) % self.n == 0)
        return fire, state

    def to_json(self):
        """A JSON description, stored with recordings."""
        return {"type": "every", "n": self.n, "start": self.start}


@dataclasses.dataclass(frozen=True)
class Interval(Schedule):
    """Record whenever the simulation time reaches ``start + k * dt`` (k = 0, 1, 2, ...)."""

    dt: float
    start: float = 0.0
    needs_time: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_float("Interval", "dt", self.dt)
        _check_float("Interval", "start", self.start, positive=False)

    def init(self):
        """The index ``k`` of the next requested time ``start + k * dt``."""
        return jnp.zeros((), jnp.int32)

    def __call__(self, state, step, time):
        k = state
        fire = time >= self._time(k, time.dtype)
        passed = jnp.floor((time - self.start) / self.dt).astype(jnp.int32) + 1
        nxt = jnp.maximum(k + 1, passed)
        nxt = jnp.where(self._time(nxt, time.dtype) <= time, nxt + 1, nxt)  # guard rounding
        return fire, jnp.where(fire, nxt, k)

    def _time(self, k: jax.Array, dtype: Any) -> jax.Array:
        return self.start + k.astype(dtype) * self.dt

    def to_json(self):
        """A JSON description, stored with recordings."""
        return {"type": "interval", "dt": self.dt, "start": self.start}


@dataclasses.dataclass(frozen=True)
class Times(Schedule):
    """Record at the first step whose time reaches each of the strictly increasing `times`."""

    times: tuple[float, ...]
    needs_time: ClassVar[bool] = True

    def __init__(self, times: Sequence[float] | np.ndarray) -> None:
        values = np.asarray(times, dtype=np.float64).reshape(-1) if len(times) else np.zeros(0)
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
        object.__setattr__(self, "times", tuple(float(t) for t in values))

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
        """The index of the next requested time."""
        return jnp.zeros((), jnp.int32)

    def __call__(self, state, step, time):
        times = jnp.asarray(self.times, dtype=time.dtype)
        i = state
        n = len(self.times)
        fire = (i < n) & (time >= times[jnp.minimum(i, n - 1)])
        passed = jnp.searchsorted(times, time, side="right").astype(jnp.int32)
        return fire, jnp.where(fire, passed, i)

    def to_json(self):
        """A JSON description, stored with recordings."""
        return {"type": "times", "times": list(self.times)}


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

    @property
    def needs_time(self) -> bool:  # type: ignore[override]
        """Whether `record` must be given ``time=`` (set ``uses_time=False`` for step-only
        predicates)."""
        return self.uses_time

    def __call__(self, state, step, time):
        fire = jnp.asarray(self.predicate(step, time))
        if fire.shape != () or fire.dtype != jnp.bool_:
            raise ConfigError(
                "The `When` predicate must return a scalar bool; it returned "
                f"{fire.dtype}{list(fire.shape)}. Reduce it with jnp.any/jnp.all or compare it."
            )
        return fire, state

    def to_json(self):
        """A JSON description (the predicate by name), stored with recordings."""
        name = getattr(self.predicate, "__qualname__", type(self.predicate).__name__)
        return {"type": "when", "predicate": name}


def as_schedule(every: int | Schedule | None) -> Schedule:
    """A schedule from an int (``Every(n)``), a `Schedule`, or None (every step)."""
    if every is None:
        return Every(1)
    if isinstance(every, Schedule):
        return every
    if isinstance(every, (int, np.integer)) and not isinstance(every, bool):
        return Every(int(every))
    raise ConfigError(
        f"`every` must be an int or a schedule (Every, Interval, Times, When); got "
        f"{type(every).__name__}."
    )


def _check_int(owner: str, name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"`{owner}` needs `{name}` to be an int >= {minimum}; got {value!r}.")


def _check_float(owner: str, name: str, value: Any, *, positive: bool = True) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > 0 or not positive)
    if not ok:
        kind = "a finite number > 0" if positive else "a finite number"
        raise ConfigError(f"`{owner}` needs `{name}` to be {kind}; got {value!r}.")
