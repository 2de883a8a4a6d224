"""programs: the compiled loops the drivers run. Pure JAX: step, record, thread the sinks.

Step ``n`` is the state after ``n - step0`` steps (the initial state is step `step0`), at time
``t0 + (n - step0) * dt`` or ``time(state)``. After each step every `Group` of sinks gets one
`jaxsinks.record` call with a lazy frame: ``frame(state)`` is evaluated (under `lax.cond`) only on
steps where one of the group's sinks records.
"""

from __future__ import annotations

import functools
import itertools
import operator
import threading
from collections.abc import Callable
from typing import Any, Generic, NoReturn, TypeVar, cast

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


class Ready(Generic[T]):
    """A compiled loop, ready to run (`ready`): calling it runs the program and returns its
    outputs.

    Attributes:
        traced: the loop was traced into the caller's program (the driver was called inside a
            JAX transformation with traced arguments): calling it returns the tracers, and
            nothing runs.
        host_calls: whether the program may call the host (a flush, a progress tick, any
            callback in the user's functions; `_calls_host`): the driver guards its run against a
            Ctrl-C (`interrupt_aborts`), which nothing in a program without host calls could see.
    """

    __slots__ = ("_run", "host_calls", "traced")

    def __init__(self, run: Callable[[], T], *, traced: bool, host_calls: bool) -> None:
        self._run, self.traced, self.host_calls = run, traced, host_calls

    def __call__(self) -> T:
        return self._run()


def ready(program: Callable[..., T], *args: Any) -> Ready[T]:
    """``program(*args)`` (a jitted loop), traced and compiled now, to be run by calling the
    result: an error of tracing or compiling (a step or frame that does not fit, a Ctrl-C
    meanwhile) is raised here, before anything runs, and any error of the call comes from running
    it. The compiled program is cached, so the call compiles nothing more; a signature compiled
    before is not traced again (tracing and lowering cost about 1 ms per call), and whether its
    program calls the host is remembered with it. Inside a JAX transformation (traced arguments)
    it is traced into the caller's program here; nothing runs.
    """
    leaves, treedef = jax.tree.flatten(args)
    key = _signature(program, treedef, leaves)
    if key is None:  # traced arguments
        out = program(*args)
        return Ready(lambda: out, traced=True, host_calls=False)
    try:
        with _COMPILED_LOCK:
            host_calls = _COMPILED.get(key)  # the key is hashed here only
    except TypeError:  # an argument that cannot be hashed: compiled on every call
        key, host_calls = None, None
    if host_calls is None:
        traced = program.trace(*args)  # type: ignore[attr-defined]
        host_calls = _calls_host(traced.jaxpr)
        traced.lower().compile()
        if key is not None:
            with _COMPILED_LOCK:
                _COMPILED[key] = host_calls
                while len(_COMPILED) > _COMPILED_MAX:
                    del _COMPILED[next(iter(_COMPILED))]  # the oldest
    return Ready(lambda: program(*args), traced=False, host_calls=host_calls)


#: Signatures `ready` has compiled (oldest first; a bounded dict), each with whether its program
#: calls the host.
_COMPILED: dict[Any, bool] = {}
_COMPILED_MAX = 256
_COMPILED_LOCK = threading.Lock()


def _signature(program: Any, treedef: Any, leaves: list[Any]) -> Any:
    """What `program`'s compiled code depends on: the arguments' structure, their types (shape,
    dtype, weak type, sharding) and the static ones themselves (perhaps unhashable); None if one
    is traced. Each leaf is described by its type's describer (`_describer`)."""
    try:
        types = tuple([_DESCRIBERS[type(x)](x) for x in leaves])
    except KeyError:  # a type seen for the first time
        for x in leaves:
            _describer(type(x))
        return _signature(program, treedef, leaves)
    except _Traced:
        return None
    return (program, treedef, types)


def _calls_host(jaxpr: Any) -> bool:
    """Whether a traced program may call the host: it has an effect (jaxsinks' flushes, a
    progress tick, `io_callback`, `jax.debug.callback`, ...), or a `jax.pure_callback` (which
    has none), also in a nested jaxpr (a loop's body, a branch, a jitted function)."""
    if jaxpr.effects:
        return True
    for eqn in getattr(jaxpr, "jaxpr", jaxpr).eqns:  # a ClosedJaxpr's Jaxpr, or the Jaxpr
        if eqn.primitive.name == "pure_callback":
            return True
        for value in eqn.params.values():
            for inner in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(getattr(inner, "jaxpr", inner), "eqns") and _calls_host(inner):
                    return True
    return False


class _Traced(Exception):
    """Raised by the describer of a tracer: the arguments are traced."""


def _traced(x: Any) -> NoReturn:
    raise _Traced


#: How `_signature` describes a leaf, by its type (a few types: each looked up once).
_DESCRIBERS: dict[type, Callable[[Any], Any]] = {}


def _describer(cls: type) -> Callable[[Any], Any]:
    """How `_signature` describes a leaf of type `cls`: a tracer raises `_Traced`; a JAX array by
    its abstract type and sharding (not its value); a numpy array or scalar by its shape and
    dtype; a Python number by its type; anything else (a static argument) by itself."""
    describe: Callable[[Any], Any]
    if issubclass(cls, jax.core.Tracer):
        describe = _traced
    elif issubclass(cls, jax.Array):
        describe = operator.attrgetter("aval", "sharding")
    elif issubclass(cls, (np.ndarray, np.generic)):
        describe = operator.attrgetter("shape", "dtype")
    elif issubclass(cls, (bool, int, float, complex)):
        describe = type
    else:
        describe = _itself
    _DESCRIBERS[cls] = describe
    return describe


def _itself(x: Any) -> Any:
    return x


def scan_program(
    plan: Plan,
    state: Any,
    sinks: list[Sink],
    step0: ArrayLike,
    t0: ArrayLike,
    dt: ArrayLike,
    bar: ArrayLike,
) -> Ready[tuple[Any, list[Sink], jax.Array]]:
    """`plan.length` steps of `plan.step` with recording, `ready` to run: the call returns
    ``(state, sinks, step reached)``. The whole loop as one `scan_segment` from `step0` (passed
    once: each scalar the program uses is one more transfer to the device per call)."""
    return ready(scan_segment, plan, state, sinks, None, step0, t0, dt, bar)


def while_program(
    plan: Plan,
    state: Any,
    sinks: list[Sink],
    step0: ArrayLike,
    t0: ArrayLike,
    dt: ArrayLike,
    bar: ArrayLike,
    max_steps: ArrayLike,
) -> Ready[tuple[Any, list[Sink], jax.Array, jax.Array]]:
    """`plan.step` while `plan.cond` holds (and, if bounded, for at most `max_steps` steps) with
    recording, `ready` to run: the call returns ``(state, sinks, step reached, whether cond still
    holds)``. The whole loop as one `while_segment` from `step0`, up to the last step an int32
    holds (a constant of the program: each scalar the program uses is one more transfer to the
    device per call)."""
    return ready(while_segment, plan, state, sinks, None, step0, t0, dt, bar, max_steps, None)


@functools.partial(jax.jit, static_argnames=("plan",))
def scan_segment(
    plan: Plan,
    state: Any,
    sinks: list[Sink],
    start: jax.Array | None,
    step0: jax.Array,
    t0: jax.Array,
    dt: jax.Array,
    bar: jax.Array,
) -> tuple[Any, list[Sink], jax.Array]:
    """`plan.length` steps of `plan.step` with recording, from the state of step `start` (None:
    `step0`; the whole loop, or a checkpointed loop's segment): ``(state, sinks, step
    reached)``."""
    start = step0 if start is None else start
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
    start: jax.Array | None,
    step0: jax.Array,
    t0: jax.Array,
    dt: jax.Array,
    bar: jax.Array,
    max_steps: jax.Array,
    stop: jax.Array | None,
) -> tuple[Any, list[Sink], jax.Array, jax.Array]:
    """`plan.step` while `plan.cond` holds (and, if bounded, for at most `max_steps` steps after
    `step0`), from the state of step `start` (None: `step0`) and at most up to step `stop` (None:
    `LAST_STEP`; the whole loop, or a checkpointed loop's segment), with recording: ``(state,
    sinks, step reached, whether cond still holds)``."""
    assert plan.cond is not None
    start = step0 if start is None else start
    last = LAST_STEP if stop is None else stop
    sinks = _begin(plan, state, sinks, step0, t0, dt)

    def going(carry: tuple[jax.Array, Any, list[Sink]]) -> jax.Array:
        n, state, _ = carry
        go = _cond(plan, state) & (n < last)
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
    if not bar_id:
        return  # no bar
    with _BARS_LOCK:
        _BARS.pop(bar_id, None)
