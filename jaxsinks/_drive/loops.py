"""The drivers: `scan` (a fixed number of steps) and `while_loop` (until a condition fails)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import jax
import numpy as np

from .._core.errors import ConfigError
from .._core.record import flatten_sinks
from .._core.types import PyTree
from .._io.progress import Progress
from . import checkpoint as checkpoints
from . import ending, live, plan, programs, segments

State = TypeVar("State")


def scan(
    step: Callable[[State], State],
    state: State,
    sinks: PyTree,
    *,
    steps: int,
    frame: Callable[[State], PyTree] | PyTree | None = None,
    mask: Callable[[State], Any] | PyTree | None = None,
    dt: Any = None,
    t0: Any = 0.0,
    time: Callable[[State], Any] | None = None,
    step0: int = 0,
    record_initial: bool = False,
    progress: Progress | bool | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool | Literal["auto"] = False,
) -> tuple[State, PyTree]:
    """Take `steps` steps of `step` in one compiled `lax.scan`, recording into `sinks`, and close
    them.

    Step ``n`` is the state after ``n - step0`` steps: the initial state is step `step0`, the
    first step's result step ``step0 + 1``, the last ``step0 + steps``. After every step the state
    is offered to every sink as that step, and each records it where its own schedule fires
    (``every=10``: steps 10, 20, ...). ``frame(state)`` is computed only on steps where a sink
    records. The sinks are threaded through the loop and closed when it returns; if anything
    raises (also a ``KeyboardInterrupt``), they are ended first, keeping their committed frames
    readable, and the error says how each run ended.

    Args:
        step: the step function, ``state -> state`` (same structure, shapes and dtypes).
        state: the initial state, any pytree of arrays.
        sinks: a sink, or a pytree (tuple, list, dict) of sinks, each with its own schedule.
        steps: how many steps to take (an int >= 0; part of the compiled program).
        frame: what is recorded: ``state -> frame``, or a pytree of such functions shaped like
            `sinks` (one per sink; None records the state itself). Default: the state itself.
        mask: for per-system sinks, ``state -> bool[systems]`` selecting the rows recorded
            (e.g. the converged systems); or a pytree of such functions (and Nones) like `sinks`.
        dt: the time step: step ``n`` is at time ``t0 + (n - step0) * dt``. Needed by time
            schedules (`Interval`, `Times`), unless `time` is given.
        t0: the time of the initial state (with `dt`).
        time: ``state -> time``, for a state that carries its own time (instead of `dt`).
        step0: the step number of the initial state (e.g. when continuing a run).
        record_initial: offer the initial state to the sinks too, as step `step0` at time `t0`
            (as py-pde's trackers record t=0); each sink's schedule still decides (``Every(n)``
            records it).
        progress: True for a progress bar over the steps (drawn when standard error is a
            terminal), or a `jaxsinks.Progress`. It moves a hundred times per run, from a host
            callback, and ends full with "done: N steps".
        checkpoint: a local folder where the loop keeps a checkpoint of its carry (the state,
            every sink's arrays, the step), so that a crashed or killed run can be resumed with
            ``resume=True``. The loop then runs in compiled segments of `checkpoint_every` steps
            and, at the start and after each segment, waits until every run has committed the
            frames its sink flushed and saves the carry (written atomically; each Zarr run's
            metadata names the loop and step of its newest checkpoint). `HostBuffer` sinks, and
            sharded or ring Zarr sinks, cannot be checkpointed (`CheckpointError`). Default
            None: no checkpoints, one compiled loop.
        checkpoint_every: steps between checkpoints (None: only at the start and the end).
        resume: True to continue from the newest checkpoint in `checkpoint`: pass the same
            arguments as the interrupted call (the same `steps`, `step0`, `t0`, `dt`; `state`
            gives only the structure), streaming sinks reopened with ``mode="a"`` (each run is
            rewound to the checkpoint's committed count and its later frames recorded again)
            and new DeviceBuffers (restored from the checkpoint). The stores end as an
            uninterrupted call with the same `checkpoint_every` leaves them, bit for bit. A
            `CheckpointError` lists every mismatch before anything is changed. ``"auto"``:
            resume when there is a checkpoint, else start afresh. False (default): start
            afresh, replacing any checkpoint in the folder.

    Returns:
        ``(state, sinks)``: the final state and the closed sinks, in the structure given. A
        `DeviceBuffer` is readable (`read`, or its device arrays, e.g. for a loss); a streaming
        sink's run is committed (`jaxsinks.open` reads it). Inside `jax.grad` or `jax.jit` the
        loop is traced into the caller's program and the sinks are returned unclosed; only
        DeviceBuffers are allowed there.

    Raises:
        ConfigError: when an argument is not what is described above (checked before anything
            runs), or when `step` changes the state's structure, shapes or dtypes.
        FrameError: when the frame `frame` makes does not fit a sink (found while tracing,
            before anything runs).
        TransformError: for a streaming sink when called inside a JAX transformation (it can
            only be closed on the host, after it).
        CheckpointError: when a checkpoint cannot be read or written, or does not match this
            call (`resume`).
        SinkOverflowError, WriteError, OutOfRangeError: from closing the sinks (see
            `jaxsinks.close`); the committed frames stay readable.

    Errors raised by `step`, `frame` or the loop at run time pass through, with notes on what
    each sink committed.
    """
    owner = "jaxsinks.scan"
    spec = _prepare(owner, step, sinks, frame, mask, dt, t0, time, step0, record_initial)
    count = plan.check_count(owner, "steps", steps)
    assert count is not None
    plan.check_last_step(owner, "steps", count, spec.step0)
    settings = checkpoints.check_settings(owner, checkpoint, checkpoint_every, resume)
    keeper = _keeper(owner, settings, spec)
    bar = plan.as_progress(owner, progress, count, "steps")
    the_plan = spec.plan(cond=None, length=count, bounded=False, tick=plan.tick_every(bar, count))

    def whole(bar_id: int) -> programs.Ready[tuple[Any, ...]]:
        return programs.scan_program(the_plan, state, spec.flat, *spec.arrays, np.int32(bar_id))

    launch: Callable[[int], programs.Ready[tuple[Any, ...]]] = whole
    sinks_held = list(spec.flat)
    if keeper is not None:
        end = spec.step0 + count
        launch = segments.scan(keeper, the_plan, state, sinks_held, end, spec.arrays)

    outcome, closed = ending.drive(
        owner,
        launch,
        sinks_held,
        spec.treedef,
        bar,
        lambda o: f"done: {o.taken} steps",
        step0=spec.step0,
        steps=count,
        checkpointed=keeper is not None,
        own_bar=progress is True,
    )
    return outcome.state, closed


def while_loop(
    cond: Callable[[State], Any],
    step: Callable[[State], State],
    state: State,
    sinks: PyTree,
    *,
    max_steps: int | None = None,
    frame: Callable[[State], PyTree] | PyTree | None = None,
    mask: Callable[[State], Any] | PyTree | None = None,
    dt: Any = None,
    t0: Any = 0.0,
    time: Callable[[State], Any] | None = None,
    step0: int = 0,
    record_initial: bool = False,
    progress: Progress | bool | None = None,
    stop_reason: str = "stopped",
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool | Literal["auto"] = False,
) -> tuple[State, PyTree, Any]:
    """Step while ``cond(state)`` holds, in one compiled `lax.while_loop`, recording into
    `sinks`, and close them.

    As `scan` (the same arguments, step numbering, recording and closing), in the argument order
    of `jax.lax.while_loop`: `cond` first. The loop checks ``cond`` before each step and stops
    when it is false or after `max_steps` steps. Not reverse-differentiable (as
    `lax.while_loop`): use `scan` under `jax.grad`.

    Args:
        cond: ``state -> bool`` (a scalar): whether to take another step.
        step: the step function, ``state -> state``.
        state: the initial state.
        sinks: a sink or a pytree of sinks.
        max_steps: the most steps to take (None: no bound). It is an argument of the compiled
            program: changing it does not recompile.
        frame: as for `scan`.
        mask: as for `scan`.
        dt: as for `scan`.
        t0: as for `scan`.
        time: as for `scan`.
        step0: as for `scan`.
        record_initial: as for `scan`.
        progress: as for `scan`, over `max_steps` steps; when `cond` stops the loop early the
            bar ends full at the step reached with ``f"{stop_reason} at step {n}"`` (e.g.
            "converged at step 1117"), or "reached max_steps=N".
        stop_reason: what `cond` turning false means, for the progress bar (e.g. "converged").
        checkpoint: as for `scan`; a segment also ends when `cond` turns false.
        checkpoint_every: as for `scan`.
        resume: as for `scan` (pass the same `max_steps`).

    Returns:
        ``(state, sinks, steps)``: the final state, the closed sinks, and the number of steps
        taken (an int; an array when called inside a JAX transformation).

    It raises what `scan` raises, for the same reasons.
    """
    owner = "jaxsinks.while_loop"
    plan.check_function(owner, "cond", cond, "a function state -> bool")
    spec = _prepare(owner, step, sinks, frame, mask, dt, t0, time, step0, record_initial)
    bound = plan.check_count(owner, "max_steps", max_steps, optional=True)
    plan.check_last_step(owner, "max_steps", bound, spec.step0)
    if not isinstance(stop_reason, str):
        raise ConfigError(f"`{owner}` needs `stop_reason` to be a str; got {stop_reason!r}.")
    settings = checkpoints.check_settings(owner, checkpoint, checkpoint_every, resume)
    limit = np.int32(0 if bound is None else bound)
    keeper = _keeper(owner, settings, spec)
    bar = plan.as_progress(owner, progress, bound, "steps")
    the_plan = spec.plan(
        cond=cond, length=None, bounded=bound is not None, tick=plan.tick_every(bar, bound)
    )

    def whole(bar_id: int) -> programs.Ready[tuple[Any, ...]]:
        return programs.while_program(
            the_plan, state, spec.flat, *spec.arrays, np.int32(bar_id), limit
        )

    launch: Callable[[int], programs.Ready[tuple[Any, ...]]] = whole
    sinks_held = list(spec.flat)
    if keeper is not None:
        launch = segments.while_loop(keeper, the_plan, state, sinks_held, limit, spec.arrays)

    def reason(outcome: ending.Outcome) -> str:
        if outcome.still_going:
            return f"reached max_steps={bound}"
        return f"{stop_reason} at step {spec.step0 + outcome.taken}"

    outcome, closed = ending.drive(
        owner,
        launch,
        sinks_held,
        spec.treedef,
        bar,
        reason,
        step0=spec.step0,
        checkpointed=keeper is not None,
        own_bar=progress is True,
    )
    return outcome.state, closed, outcome.taken


class _Spec:
    """The checked arguments shared by both drivers."""

    def __init__(
        self,
        step: Callable[[Any], Any],
        flat: list[Any],
        treedef: Any,
        groups: tuple[plan.Group, ...],
        time: Callable[[Any], Any] | None,
        uses_dt: bool,
        record_initial: bool,
        step0: int,
        t0: Any,
        dt: Any,
    ) -> None:
        self.step, self.flat, self.treedef, self.groups = step, flat, treedef, groups
        self.time, self.uses_dt, self.record_initial = time, uses_dt, record_initial
        self.step0 = step0
        real = jax.dtypes.canonicalize_dtype(np.float64)  # JAX's default float
        self.arrays = (np.int32(step0), _real(t0, real), _real(0.0 if dt is None else dt, real))

    def plan(self, *, cond: Any, length: int | None, bounded: bool, tick: int) -> plan.Plan:
        return plan.Plan(
            step=self.step,
            cond=cond,
            treedef=self.treedef,
            groups=self.groups,
            time=self.time,
            uses_dt=self.uses_dt,
            record_initial=self.record_initial,
            length=length,
            bounded=bounded,
            tick=tick,
        )


def _keeper(
    owner: str, settings: checkpoints.Settings | None, spec: _Spec
) -> checkpoints.Keeper | None:
    """The keeper of a checkpointed call (its sinks checked), None without `checkpoint`. It
    resumes or saves the first checkpoint once the loop is traced (`segments`)."""
    if settings is None:
        return None
    return checkpoints.Keeper(owner, settings, spec.flat, spec.arrays, spec.record_initial)


def _real(value: Any, dtype: np.dtype) -> Any:
    """A time argument of the compiled program: numbers as numpy scalars of `dtype` (JAX's
    default float; no device transfer in Python per call), JAX arrays (perhaps traced, e.g. under
    grad) as they are."""
    if isinstance(value, jax.Array):
        return value
    return np.asarray(value, dtype=dtype)


def _prepare(
    owner: str,
    step: Any,
    sinks: Any,
    frame: Any,
    mask: Any,
    dt: Any,
    t0: Any,
    time: Any,
    step0: Any,
    record_initial: Any,
) -> _Spec:
    """Check what both drivers take; raise a ConfigError naming the first bad argument."""
    plan.check_function(owner, "step", step, "a function state -> state")
    flat, treedef = flatten_sinks(owner, sinks)
    frames = plan.per_sink(owner, "frame", frame, treedef, "a function state -> frame")
    masks = plan.per_sink(owner, "mask", mask, treedef, "a function state -> bool[systems]")
    plan.check_masks(owner, flat, mask, masks)
    if dt is not None:
        plan.check_scalar(owner, "dt", dt)
    plan.check_scalar(owner, "t0", t0)
    uses_dt, time_fn = plan.check_time(owner, flat, dt, time)
    first = plan.check_step0(owner, step0)
    if not isinstance(record_initial, bool):
        raise ConfigError(f"`{owner}` needs `record_initial` to be a bool; got {record_initial!r}.")
    live.check_sinks(owner, sinks, flat)  # an ended or older sink: refused before anything runs
    return _Spec(
        step,
        flat,
        treedef,
        plan.groups(flat, frames, masks),
        time_fn,
        uses_dt,
        record_initial,
        first,
        t0,
        dt,
    )
