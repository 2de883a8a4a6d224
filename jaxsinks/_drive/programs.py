"""programs: the compiled loops the drivers run. Pure JAX: step, record, thread the sinks.

Step ``n`` is the state after ``n - step0`` steps (the initial state is step `step0`), at time
``t0 + (n - step0) * dt`` or ``time(state)``. After each step every `Group` of sinks gets one
`jaxsinks.record` call with a lazy frame: ``frame(state)`` is evaluated (under `lax.cond`) only on
steps where one of the group's sinks records.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from .._core.errors import ConfigError
from .._core.record import record
from .._core.sink import Sink
from .._io.callback import raise_if_interrupted
from .._io.progress import Progress
from .plan import LAST_STEP, Group, Plan

_BARS: dict[int, Progress] = {}  # id -> the progress bar a running program advances
_BAR_IDS = itertools.count(1)
_BARS_LOCK = threading.Lock()
T = TypeVar("T")


def ready(program: Callable[..., T], *args: Any) -> Callable[[], T]:
    """``program(*args)`` (a jitted loop), traced and compiled now, to be run by calling the
    result: an error of tracing or compiling (a step or frame that does not fit, a Ctrl-C
    meanwhile) is raised here, before anything runs, and any error of the call comes from running
    it. The compiled program is cached, so the call compiles nothing more; a signature compiled
    before is not traced again (tracing and lowering cost about 1 ms per call). Inside a JAX
    transformation (traced arguments) it is traced into the caller's program here; nothing runs.
    """
    leaves, treedef = jax.tree.flatten(args)
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        out = program(*args)
        return lambda: out
    key = _signature(program, treedef, leaves)
    with _COMPILED_LOCK:
        known = key is not None and key in _COMPILED
    if not known:
        program.trace(*args).lower().compile()  # type: ignore[attr-defined]
        if key is not None:
            with _COMPILED_LOCK:
                _COMPILED[key] = None
                while len(_COMPILED) > _COMPILED_MAX:
                    del _COMPILED[next(iter(_COMPILED))]  # the oldest
    return lambda: program(*args)


#: Signatures `ready` has compiled (oldest first; a bounded set, as dict keys).
_COMPILED: dict[Any, None] = {}
_COMPILED_MAX = 256
_COMPILED_LOCK = threading.Lock()


def _signature(program: Any, treedef: Any, leaves: list[Any]) -> Any:
    """What `program`'s compiled code depends on: the arguments' structure, their types (shape,
    dtype, weak type) and the static ones themselves; None if one cannot be hashed."""
    try:
        key = (program, treedef, tuple(_leaf_type(x) for x in leaves))
        hash(key)
    except TypeError:
        return None
    return key


def _leaf_type(x: Any) -> Any:
    """`x`'s abstract type (its value does not matter to the compiled code), or `x` itself for
    a static argument (a plan), which does."""
    if isinstance(x, jax.Array):
        return x.aval, x.sharding
    if isinstance(x, (np.ndarray, np.generic)):
        return x.shape, x.dtype
    if isinstance(x, (bool, int, float, complex)):
        return type(x)
    return x


def scan_program(
    plan: Plan,
    state: Any,
    sinks: list[Sink],
    step0: ArrayLike,
    t0: ArrayLike,
    dt: ArrayLike,
    bar: ArrayLike,
) -> Callable[[], tuple[Any, list[Sink], jax.Array]]:
    """`plan.length` steps of `plan.step` with recording, `ready` to run: the call returns
    ``(state, sinks, steps taken)``. The whole loop as one `scan_segment` from `step0`."""
    run = ready(scan_segment, plan, state, sinks, step0, step0, t0, dt, bar)

    def taken() -> tuple[Any, list[Sink], jax.Array]:
        state, sinks, n = run()
        return state, sinks, n - step0

    return taken


def while_program(
    plan: Plan,
    state: Any,
    sinks: list[Sink],
    step0: ArrayLike,
    t0: ArrayLike,
    dt: ArrayLike,
    bar: ArrayLike,
    max_steps: ArrayLike,
) -> Callable[[], tuple[Any, list[Sink], jax.Array, jax.Array]]:
    """`plan.step` while `plan.cond` holds (and, if bounded, for at most `max_steps` steps) with
    recording, `ready` to run: the call returns ``(state, sinks, steps taken, whether cond still
    holds)``. The whole loop as one `while_segment` from `step0`."""
    last = np.int32(LAST_STEP)
    run = ready(while_segment, plan, state, sinks, step0, step0, t0, dt, bar, max_steps, last)

    def taken() -> tuple[Any, list[Sink], jax.Array, jax.Array]:
        state, sinks, n, go = run()
        return state, sinks, n - step0, go

    return taken


@functools.partial(jax.jit, static_argnames=("plan",))
def scan_segment(
    plan: Plan,
    state: Any,
    sinks: list[Sink],
    start: jax.Array,
    step0: jax.Array,
    t0: jax.Array,
    dt: jax.Array,
    bar: jax.Array,
) -> tuple[Any, list[Sink], jax.Array]:
    """`plan.length` steps of `plan.step` with recording, from the state of step `start` (the
    whole loop, or a checkpointed loop's segment): ``(state, sinks, step reached)``."""
    sinks = _begin(plan, state, sinks, step0, t0, dt)
    body = _stepper(plan, step0, t0, dt, bar)
    (n, state, sinks), _ = lax.scan(
        lambda carry, _: (body(carry), None), (start, state, sinks), None, length=plan.length
    )
    return state, sinks, n


@functools.partial(jax.jit, static_argnames=("plan",))
def while_segment(
    plan: Plan,
    state: Any,
    sinks: list[Sink],
    start: jax.Array,
    step0: jax.Array,
    t0: jax.Array,
    dt: jax.Array,
    bar: jax.Array,
    max_steps: jax.Array,
    stop: jax.Array,
) -> tuple[Any, list[Sink], jax.Array, jax.Array]:
    """`plan.step` while `plan.cond` holds (and, if bounded, for at most `max_steps` steps after
    `step0`), from the state of step `start` and at most up to step `stop` (the whole loop, or a
    checkpointed loop's segment), with recording: ``(state, sinks, step reached, whether cond
    still holds)``."""
    assert plan.cond is not None
    sinks = _begin(plan, state, sinks, step0, t0, dt)

    def going(carry: tuple[jax.Array, Any, list[Sink]]) -> jax.Array:
        n, state, _ = carry
        go = _cond(plan, state) & (n < stop)
        return go & (n - step0 < max_steps) if plan.bounded else go

    body = _stepper(plan, step0, t0, dt, bar)
    n, state, sinks = lax.while_loop(going, body, (start, state, sinks))
    return state, sinks, n, _cond(plan, state)


def _begin(
    plan: Plan, state: Any, sinks: list[Sink], step0: jax.Array, t0: jax.Array, dt: jax.Array
) -> list[Sink]:
    """Check that `plan.step` keeps the state's structure; record the initial state if asked."""
    _check_step(plan, state)
    if plan.record_initial:
        sinks = record_all(plan, sinks, step0, state, step0, t0, dt)
    return sinks


def _stepper(
    plan: Plan, step0: jax.Array, t0: jax.Array, dt: jax.Array, bar: jax.Array
) -> Callable[[tuple[jax.Array, Any, list[Sink]]], tuple[jax.Array, Any, list[Sink]]]:
    """The loop body: one step, the state offered to every sink as step ``n + 1``, a tick."""

    def body(carry: tuple[jax.Array, Any, list[Sink]]) -> tuple[jax.Array, Any, list[Sink]]:
        n, state, sinks = carry
        state = plan.step(state)
        n = n + 1
        sinks = record_all(plan, sinks, n, state, step0, t0, dt)
        _tick(plan, bar, n - step0)
        return n, state, sinks

    return body


def record_all(
    plan: Plan,
    sinks: list[Sink],
    n: jax.Array,
    state: Any,
    step0: jax.Array,
    t0: jax.Array,
    dt: jax.Array,
) -> list[Sink]:
    """Offer `state`, as step `n`, to every group of sinks; returns the sinks in the same order."""
    out = list(sinks)
    for group in plan.groups:
        part = record(
            [out[i] for i in group.sinks],
            step=n,
            time=_time(plan, group, n, state, step0, t0, dt),
            frame=_frame(group, state),
            mask=None if group.mask is None else group.mask(state),
        )
        for i, sink in zip(group.sinks, part):
            out[i] = sink
    return out


def _frame(group: Group, state: Any) -> Any:
    """The group's frame: the state itself (passed as it is: nothing to compute), or a function
    of no arguments that `record` calls only on steps where a sink of the group records."""
    if group.frame is None:
        return (lambda: state) if callable(state) else state
    make = group.frame
    return lambda: make(state)


def _time(
    plan: Plan,
    group: Group,
    n: jax.Array,
    state: Any,
    step0: jax.Array,
    t0: jax.Array,
    dt: jax.Array,
) -> Any:
    if plan.time is not None:
        return plan.time(state)
    if not plan.uses_dt:
        return None
    dtype = group.time_dtype
    return t0.astype(dtype) + (n - step0).astype(dtype) * dt.astype(dtype)


def _cond(plan: Plan, state: Any) -> jax.Array:
    assert plan.cond is not None
    go = jnp.asarray(plan.cond(state))
    if go.shape != () or go.dtype != jnp.bool_:
        raise ConfigError(
            "`jaxsinks.while_loop` needs `cond` to return a scalar bool (whether to take another "
            f"step); it returned {go.dtype}{list(go.shape)}. Reduce it, e.g. with jnp.any or "
            "jnp.all."
        )
    return go


def _check_step(plan: Plan, state: Any) -> None:
    """A ConfigError at trace time if `step` changes the state's structure, shapes or dtypes."""
    owner = "jaxsinks.scan" if plan.cond is None else "jaxsinks.while_loop"
    out = jax.eval_shape(plan.step, state)
    before, after = jax.tree.structure(state), jax.tree.structure(out)
    if cast(Any, before) != after:  # what lax.scan checks (the text of a treedef may differ)
        raise ConfigError(
            f"`{owner}` needs `step` to return a state like the one it takes; it takes {before} "
            f"but returns {after}."
        )
    paths = jax.tree_util.tree_flatten_with_path(state)[0]
    for (path, x), y in zip(paths, jax.tree.leaves(out)):
        x = jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
        if (x.shape, x.dtype) != (y.shape, y.dtype):
            raise ConfigError(
                f"`{owner}` needs `step` to return a state like the one it takes; the leaf "
                f"state{jax.tree_util.keystr(path)} goes in as {x.dtype}{list(x.shape)} and "
                f"comes out as {y.dtype}{list(y.shape)}."
            )


def _tick(plan: Plan, bar: jax.Array, done: jax.Array) -> None:
    """Every `plan.tick` steps, advance the progress bar from a host callback."""
    if plan.tick:
        lax.cond(
            done % plan.tick == 0,
            lambda: jax.debug.callback(_advance, bar, done),
            lambda: None,
        )


def _advance(bar: Any, done: Any) -> None:
    with _BARS_LOCK:
        progress = _BARS.get(int(bar))
    if progress is not None:
        progress.update_to(int(done))
    raise_if_interrupted()  # a Ctrl-C ends the loop here too (`interrupt_aborts`)


def register_bar(bar: Progress | None) -> int:
    """An id the compiled program advances `bar` by (0 for no bar)."""
    if bar is None:
        return 0
    with _BARS_LOCK:
        bar_id = next(_BAR_IDS)
        _BARS[bar_id] = bar
    return bar_id


def release_bar(bar_id: int) -> None:
    with _BARS_LOCK:
        _BARS.pop(bar_id, None)
