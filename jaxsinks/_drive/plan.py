"""plan: the drivers' arguments checked on the host and turned into a static, hashable `Plan`.

A `Plan` is what the compiled program depends on besides its array arguments: the user's
functions, the sinks' pytree structure, which sinks share a frame (recorded by one
`jaxsinks.record` call, so a shared frame is computed once) and the scan length. Equal plans
share one compiled program: calling a driver again with the same functions does not retrace.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from .._core.errors import ConfigError
from .._core.sink import Sink
from .._core.types import PyTree
from .._io.progress import Progress

#: How many times per run a driver advances a progress bar (one host callback each).
TICKS = 100
#: Steps between progress ticks when the number of steps is not known in advance.
UNBOUNDED_TICK = 100
#: The most steps a loop may reach: step numbers are int32 in the compiled loop.
LAST_STEP = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Group:
    """Sinks recorded by one `jaxsinks.record` call: same frame, mask and time dtype.

    Attributes:
        sinks: their positions among the flattened sinks.
        frame: ``state -> frame``, or None for the state itself.
        mask: ``state -> bool[systems]`` for per-system sinks, or None.
        time_dtype: the time dtype of these sinks (the driver's time is computed in it).
    """

    sinks: tuple[int, ...]
    frame: Callable[[Any], PyTree] | None
    mask: Callable[[Any], Any] | None
    time_dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class Plan:
    """The static part of a driven loop (hashable: a static argument of the compiled program).

    Attributes:
        step: the user's ``state -> state``.
        cond: for `while_loop`, ``state -> bool``; None for `scan`.
        treedef: the pytree structure of the sinks.
        groups: the `jaxsinks.record` calls made after each step.
        time: ``state -> time``, or None.
        uses_dt: whether the time is ``t0 + (step - step0) * dt``.
        record_initial: whether the initial state is offered to the sinks as step `step0`.
        length: for `scan`, the number of steps.
        bounded: for `while_loop`, whether `max_steps` bounds the loop.
        tick: advance the progress bar every `tick` steps (0: never).
    """

    step: Callable[[Any], Any]
    cond: Callable[[Any], Any] | None
    treedef: Any
    groups: tuple[Group, ...]
    time: Callable[[Any], Any] | None
    uses_dt: bool
    record_initial: bool
    length: int | None
    bounded: bool
    tick: int

    @property
    def has_time(self) -> bool:
        """Whether the sinks are given a time (else their time column holds NaN)."""
        return self.uses_dt or self.time is not None


def check_function(owner: str, name: str, value: Any, what: str) -> Callable[..., Any]:
    """`value` if it is callable, else a ConfigError saying what it should be."""
    if not callable(value):
        raise ConfigError(f"`{owner}` needs `{name}` to be {what}; got {_kind(value)}.")
    return value


def per_sink(
    owner: str, name: str, value: Any, treedef: Any, what: str
) -> tuple[Callable[[Any], Any] | None, ...]:
    """`value` (None, one function, or a pytree of functions and Nones shaped like the sinks)
    as one function (or None) per sink, or a ConfigError naming `name`."""
    count = treedef.num_leaves
    if value is None or callable(value):
        return (value,) * count
    leaves, structure = jax.tree_util.tree_flatten(
        value, is_leaf=lambda x: x is None or callable(x)
    )
    if structure != treedef:
        raise ConfigError(
            f"`{owner}` needs `{name}` to be {what}, or a pytree of them shaped like `sinks` (one "
            f"per sink, None for the default); `sinks` is {treedef} but `{name}` is {structure}."
        )
    bad = sorted({_kind(x) for x in leaves if x is not None and not callable(x)})
    if bad:
        raise ConfigError(
            f"`{owner}` needs every entry of `{name}` to be {what} or None; got {bad}."
        )
    return tuple(leaves)


def groups(
    sinks: Sequence[Sink],
    frames: Sequence[Callable[[Any], Any] | None],
    masks: Sequence[Callable[[Any], Any] | None],
) -> tuple[Group, ...]:
    """Group the sinks that share a frame function, a mask and a time dtype, in first-seen order.

    A mask applies only to per-system sinks (`jaxsinks.record` ignores it for the others).
    """
    found: dict[tuple[Any, ...], list[int]] = {}
    for i, (sink, frame, mask) in enumerate(zip(sinks, frames, masks)):
        key = (frame, mask if sink.per_system else None, np.dtype(sink.time_dtype))
        found.setdefault(key, []).append(i)
    return tuple(
        Group(tuple(idx), frame, mask, dtype) for (frame, mask, dtype), idx in found.items()
    )


def check_masks(owner: str, sinks: Sequence[Sink], mask: Any, masks: Sequence[Any]) -> None:
    """A ConfigError if a mask is given where no sink is per-system (one shared `mask`), or for a
    sink that is not per-system (a pytree of masks)."""
    if mask is None:
        return
    if callable(mask):
        if not any(s.per_system for s in sinks):
            raise ConfigError(
                f"`{owner}` got `mask`, which selects the rows of per-system sinks, but none of "
                "the sinks is per-system. Create the sink with `per_system=True`, or drop `mask`."
            )
        return
    lone = [i for i, (s, m) in enumerate(zip(sinks, masks)) if m is not None and not s.per_system]
    if lone:
        raise ConfigError(
            f"`{owner}` got a mask for the sink(s) at {lone} (in flattened order), which are not "
            "per-system: a mask selects the rows of per-system sinks. Give those sinks None."
        )


def check_count(owner: str, name: str, value: Any, *, optional: bool = False) -> int | None:
    """`value` as an int >= 0 (or None when `optional`), else a ConfigError."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        extra = " or None" if optional else ""
        raise ConfigError(
            f"`{owner}` needs `{name}` to be an int >= 0{extra} (a number of steps); got {value!r}."
        )
    return int(value)


def check_step0(owner: str, value: Any) -> int:
    """The step number of the initial state: an int >= 0 that fits int32."""
    count = check_count(owner, "step0", value)
    assert count is not None
    if count >= LAST_STEP:
        raise ConfigError(f"`{owner}` needs `step0` to fit int32; got {value!r}.")
    return count


def check_last_step(owner: str, name: str, count: int | None, step0: int) -> None:
    """A ConfigError if the loop's last step, ``step0 + count``, would not fit int32 (the step
    numbers of the compiled loop)."""
    if count is not None and step0 + count > LAST_STEP:
        raise ConfigError(
            f"`{owner}` needs `step0 + {name}` (the number of the last step) to fit int32, at most "
            f"{LAST_STEP}; got step0={step0} and {name}={count}, {step0 + count} in all. Take at "
            f"most {LAST_STEP - step0} steps per call"
            + (" (or max_steps=None for no bound)" if name == "max_steps" else "")
            + ", and continue the run from the returned state with step0 = the step it reached."
        )


def check_scalar(owner: str, name: str, value: Any) -> Any:
    """`value` if it is a real number or a scalar real array (traced ones too), else a
    ConfigError; a Python number must be finite."""
    if isinstance(value, bool):
        raise ConfigError(f"`{owner}` needs `{name}` to be a real number; got {value!r}.")
    if isinstance(value, (int, float, np.integer, np.floating)):
        if not math.isfinite(value):
            raise ConfigError(f"`{owner}` needs `{name}` to be finite; got {value!r}.")
        return value
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    real = dtype is not None and (
        np.issubdtype(dtype, np.floating)
        or np.issubdtype(dtype, np.integer)
        or jax.dtypes.issubdtype(dtype, jax.numpy.floating)
    )
    if shape != () or not real:
        got = f"an array {dtype}{list(shape)}" if shape is not None else _kind(value)
        raise ConfigError(
            f"`{owner}` needs `{name}` to be a real number or a scalar real array; got {got}."
        )
    return value


def check_time(
    owner: str, sinks: Sequence[Sink], dt: Any, time: Any
) -> tuple[bool, Callable[[Any], Any] | None]:
    """Where the sinks' time comes from: ``(uses_dt, time function)``, or a ConfigError."""
    if dt is not None and time is not None:
        raise ConfigError(
            f"`{owner}` got both `dt` and `time`: give `dt` for the time t0 + n * dt of step n, "
            "or `time` (a function of the state) when the state carries its own time, not both."
        )
    if time is not None:
        check_function(owner, "time", time, "a function state -> time")
    needing = sorted({str(s.schedule) for s in sinks if s.schedule.needs_time})
    if needing and dt is None and time is None:
        raise ConfigError(
            f"`{owner}`: the schedule(s) {needing} record by simulation time, but neither `dt` "
            "nor `time` was given. Pass `dt=` (step n is at time t0 + (n - step0) * dt) or "
            "`time=` (a function of the state returning its time)."
        )
    return dt is not None, time


def as_progress(owner: str, progress: Any, total: int | None, desc: str) -> Progress | None:
    """The bar to drive: None/False (none), True (a new `Progress` over `total` steps), or the
    `Progress` given."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return Progress(total, desc=desc)
    if not isinstance(progress, Progress):
        raise ConfigError(
            f"`{owner}` needs `progress` to be True, False, None or a jaxsinks.Progress; got "
            f"{_kind(progress)}."
        )
    return progress


def tick_every(bar: Progress | None, total: int | None) -> int:
    """Steps between progress ticks: about `TICKS` per run; 0 when no bar is drawn."""
    if bar is None or not bar.enabled:
        return 0
    if total is None:
        return UNBOUNDED_TICK
    return max(1, total // TICKS)


def _kind(value: Any) -> str:
    """How an error message names a wrong value: its type, and the value when short."""
    text = repr(value)
    name = type(value).__name__
    return f"{name} {text}" if len(text) <= 40 and text != name else name
