"""segments: a checkpointed driver's loop, run as compiled segments with a checkpoint after each.

The segments are `programs.scan_segment` and `programs.while_segment`: the drivers' loop bodies
started from any step. A segment ends at the next multiple of ``checkpoint_every`` steps after
`step0`, so a resumed loop runs the same segments (the same compiled programs, from the same
carry) as an uninterrupted one, and records the same bytes. The first segment is traced and
compiled before the first checkpoint is saved (or a resumed run rewound): an error of tracing
changes nothing. The driver (`ending.drive`) sees the newest sinks: the list it holds is updated
after each segment, so an error ends the sinks from there. The initial state is offered (with
``record_initial``) by the first segment of the loop, also one of no steps, and only once: the
checkpoint says whether it was (a loop resumed from its step-`step0` checkpoint does not offer
it again).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from .._core.sink import Sink
from . import programs
from .checkpoint import Keeper, next_boundary
from .plan import Plan


def scan(
    keeper: Keeper, plan: Plan, state: Any, sinks: list[Sink], end: int, arrays: tuple[Any, ...]
) -> Callable[[int], programs.Ready[tuple[Any, ...]]]:
    """The launcher of a checkpointed `scan` to step `end` (see `_launcher`)."""
    step0, t0, dt = arrays

    def program(bar: np.int32, n: int, state: Any, current: list[Sink]) -> tuple[Any, ...]:
        stop = next_boundary(keeper.settings, keeper.step0, n, end)
        part = dataclasses.replace(plan, length=stop - n, record_initial=_initial(keeper, plan))
        return programs.scan_segment, (part, state, current, np.int32(n), step0, t0, dt, bar)

    def segment(bar: np.int32, n: int, state: Any, current: list[Sink]) -> tuple[Any, ...]:
        run, args = program(bar, n, state, current)
        state, current, reached = run(*args)
        return int(reached), state, current, None

    return _launcher(keeper, plan, state, sinks, end, lambda n, go: n < end, program, segment)


def while_loop(
    keeper: Keeper,
    plan: Plan,
    state: Any,
    sinks: list[Sink],
    limit: np.int32,
    arrays: tuple[Any, ...],
) -> Callable[[int], programs.Ready[tuple[Any, ...]]]:
    """The launcher of a checkpointed `while_loop` (at most `limit` steps after `step0` when
    `plan.bounded`; see `_launcher`)."""
    step0, t0, dt = arrays
    end = keeper.step0 + int(limit) if plan.bounded else programs.LAST_STEP

    def program(bar: np.int32, n: int, state: Any, current: list[Sink]) -> tuple[Any, ...]:
        stop = np.int32(next_boundary(keeper.settings, keeper.step0, n, end))
        part = dataclasses.replace(plan, record_initial=_initial(keeper, plan))
        args = (part, state, current, np.int32(n), step0, t0, dt, bar, limit, stop)
        return programs.while_segment, args

    def segment(bar: np.int32, n: int, state: Any, current: list[Sink]) -> tuple[Any, ...]:
        run, args = program(bar, n, state, current)
        state, current, reached, go = run(*args)
        return int(reached), state, current, go

    def going(n: int, go: Any) -> bool:
        return (go is None or bool(go)) and n < end

    last = end if plan.bounded else None
    return _launcher(keeper, plan, state, sinks, last, going, program, segment, first_always=True)


def _initial(keeper: Keeper, plan: Plan) -> bool:
    """Whether the next segment offers the initial state to the sinks: asked, and no segment
    has yet (a checkpoint says whether the loop it saved had)."""
    return plan.record_initial and not keeper.initial


def _launcher(
    keeper: Keeper,
    plan: Plan,
    state: Any,
    sinks: list[Sink],
    end: int | None,
    going: Callable[[int, Any], bool],
    program: Callable[..., tuple[Any, ...]],
    segment: Callable[..., tuple[Any, ...]],
    *,
    first_always: bool = False,
) -> Callable[[int], programs.Ready[tuple[Any, ...]]]:
    """``launch(bar_id)``, for `ending.drive`: traces and compiles the first segment, resumes or
    saves the first checkpoint (`Keeper.start`), and returns the loop of segments ready to run.
    `program(bar, n, state, sinks)` is the segment from step `n` (the jitted loop and its
    arguments), `segment` runs it. `sinks` is updated in place to the newest sink values (what
    `ending` ends if anything raises). A segment runs while `going(n, go)`, and also once when
    `first_always` (`while_loop`: to evaluate `cond`) or while the initial state is still to be
    recorded (`scan(steps=0)`).
    """

    def launch(bar_id: int) -> programs.Ready[tuple[Any, ...]]:
        bar = np.int32(bar_id)

        def prepare(n: int, carry: Any, current: list[Sink]) -> None:
            run, args = program(bar, n, carry, current)
            programs.ready(run, *args)

        start_state, start_sinks, start = keeper.start(state, end, prepare)
        sinks[:] = start_sinks

        def run() -> tuple[Any, ...]:
            n, carry, current, go, ran = start, start_state, list(start_sinks), None, False
            while going(n, go) or (first_always and not ran) or _initial(keeper, plan):
                ran = True
                n, carry, current, go = segment(bar, n, carry, current)
                carry, current = jax.block_until_ready((carry, current))
                sinks[:] = current  # what `ending` ends if anything raises from here on
                keeper.initial = True
                keeper.save(n, carry, current)
            return (carry, current, n) if go is None else (carry, current, n, go)

        return programs.Ready(run, traced=False, host_calls=True)

    return launch
