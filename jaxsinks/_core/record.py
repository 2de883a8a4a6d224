"""record: apply every sink's schedule and append the frame where it fires. Pure; runs in jit."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from .columns import as_step, as_time
from .errors import ConfigError, FrameError
from .pytree import replace
from .schedule import fire_and_state
from .sharding import vary_like, zeros_like
from .sink import Sink
from .types import PyTree


def is_sink(x: Any) -> bool:
    """Whether `x` is a jaxsinks sink (used as `is_leaf` when mapping over a pytree of sinks)."""
    return isinstance(x, Sink)


def flatten_sinks(what: str, sinks: PyTree, *, empty_ok: bool = False) -> tuple[list[Sink], Any]:
    """The sinks of the pytree `sinks` and its treedef, or a ConfigError from `what` (e.g.
    ``"record"``) naming whatever else it holds, or (unless `empty_ok`) saying it holds no sink."""
    flat, treedef = jax.tree_util.tree_flatten(sinks, is_leaf=is_sink)
    others = sorted({type(s).__name__ for s in flat if not is_sink(s)})
    if others:
        raise ConfigError(
            f"`{what}` takes a sink or a pytree of sinks, but `sinks` also holds {others}. Pass "
            "only jaxsinks sinks (DeviceBuffer, ZarrSink, CsvSink, HostBuffer)."
        )
    if not flat and not empty_ok:
        raise ConfigError(
            f"`{what}` was given no sinks (got no sink in {type(sinks).__name__}). Pass a sink "
            "or a pytree of sinks, e.g. the ones ZarrSink.create returned."
        )
    return flat, treedef


def record(
    sinks: PyTree,
    *,
    step: Any,
    frame: PyTree | Callable[[], PyTree],
    time: Any = None,
    mask: Any = None,
) -> PyTree:
    """Record `frame` into every sink whose schedule fires at this step. Pure and jittable.

    Args:
        sinks: a sink, or a pytree (tuple, list, dict, ...) of sinks.
        step: the integer step number.
        frame: the frame, or a function of no arguments returning it; a function is only called
            (under `lax.cond`) when at least one sink records, so a costly frame costs nothing on
            the other steps. With an unbatched `step` and step schedules, that predicate stays
            unbatched under `vmap`.
        time: the simulation time; needed by time schedules (`Interval`, `Times`).
        mask: a bool array with one entry per system, selecting the rows that per-system sinks
            append (e.g. the converged systems). Whole-frame sinks recorded beside them ignore
            it; with no per-system sink among `sinks` it is a `ConfigError`.

    Returns:
        The sinks, with the same structure, after recording.
    """
    flat, treedef = flatten_sinks("record", sinks)
    if mask is not None and not any(s.per_system for s in flat):
        raise ConfigError(
            "`mask` selects rows for per-system sinks, but none of the sinks given is per-system. "
            "Create the sink with `per_system=True`, or drop `mask`."
        )
    step = as_step(step)
    flat = [sink._enter() for sink in flat]

    fired = []
    for sink in flat:
        if sink.schedule.needs_time and time is None:
            raise ConfigError(
                f"The schedule {sink.schedule} needs the simulation time, but `record` was called "
                "without `time=`. Pass the current time."
            )
        shape = () if sink.batch_size is None else (sink.batch_size,)
        sink_time = as_time(time, sink.time_dtype, shape=shape)
        fire, state = fire_and_state(
            sink.schedule, sink.schedule_state, step, _scalar_time(sink_time)
        )
        state = vary_like(state, sink.schedule_state)
        fired.append((replace(sink, schedule_state=state), fire))

    if callable(frame):
        writes = [_writes_any(fire, mask if s.per_system else None) for s, fire in fired]
        frame = _lazy_frame(frame, jnp.any(jnp.stack(writes)))

    out = [
        sink._append(
            frame, step=step, time=time, mask=mask if sink.per_system else None, enabled=fire
        )._leave()
        for sink, fire in fired
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


def _lazy_frame(make: Callable[[], PyTree], needed: jax.Array) -> PyTree:
    """``make()`` when `needed`, else zeros of its shape; the cond keeps the cost off other
    steps."""
    _check_takes_no_arguments(make)
    shapes = jax.eval_shape(make)
    return lax.cond(needed, make, lambda: jax.tree.map(zeros_like, shapes))


def _check_takes_no_arguments(make: Callable[..., Any]) -> None:
    """A FrameError if the callable `frame` cannot be called with no arguments (errors raised
    while it runs are its own, and pass through unchanged)."""
    try:
        signature = inspect.signature(make)
    except (TypeError, ValueError):  # no signature to read (some builtins): let the call tell
        return
    try:
        signature.bind()
    except TypeError as err:
        raise FrameError(
            f"`frame` is callable, so it must take no arguments and return the frame, but its "
            f"signature is {signature} ({err}). Pass `frame=lambda: {{...}}`, or the frame itself."
        ) from None


def _writes_any(fire: jax.Array, mask: Any) -> jax.Array:
    if mask is None:
        return fire
    return fire & jnp.any(jnp.asarray(mask))


def _scalar_time(time: jax.Array) -> jax.Array:
    """Schedules see one time: the earliest, when per-system times are given."""
    return time if time.ndim == 0 else jnp.min(time)
