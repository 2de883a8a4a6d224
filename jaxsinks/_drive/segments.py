"""segments: a checkpointed driver's loop, run as compiled segments with a checkpoint after each.

The segments are `programs.scan_segment` and `programs.while_segment`: the drivers' loop bodies
started from any step. A segment ends at the next multiple of ``checkpoint_every`` steps after
`step0`, so a resumed loop runs the same segments (the same compiled programs, from the same
carry) as an uninterrupted one, and records the same bytes. The driver (`ending.drive`) sees
the newest sinks: the list it holds is updated after each segment, so an error ends the sinks
from there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from .._core.sink import Sink
from . import ending, programs
from .checkpoint import Keeper, next_boundary
from .plan import Plan


def scan(
    keeper: Keeper,
    plan: Plan,
    state: Any,
    sinks: list[Sink],
    start: int,
    end: int,
    arrays: tuple[Any, ...],
) -> Callable[[int], tuple[Any, ...]]:
    """The launcher of a checkpointed `scan` from step `start` to step `end`; it updates `sinks`
    in place to the newest sink values."""
    step0, t0, dt = arrays

    def segment(bar: np.int32, n: int, state: Any, current: list[Sink]) -> tuple[Any, ...]:
        stop = next_boundary(keeper.settings, keeper.step0, n, end)
        part = dataclasses.replace(
            plan, length=stop - n, record_initial=plan.record_initial and n == keeper.step0
        )
        state, current, _ = programs.scan_segment(
            part, state, current, np.int32(n), step0, t0, dt, bar
        )
        return stop, state, current, None

    return _launcher(keeper, state, sinks, start, lambda n, go: n < end, segment)


def while_loop(
    keeper: Keeper,
    plan: Plan,
    state: Any,
    sinks: list[Sink],
    start: int,
    limit: np.int32,
    arrays: tuple[Any, ...],
) -> Callable[[int], tuple[Any, ...]]:
    """The launcher of a checkpointed `while_loop` from step `start` (at most `limit` steps after
    `step0` when `plan.bounded`); it updates `sinks` in place to the newest sink values."""
    step0, t0, dt = arrays
    end = keeper.step0 + int(limit) if plan.bounded else programs.LAST_STEP

    def segment(bar: np.int32, n: int, state: Any, current: list[Sink]) -> tuple[Any, ...]:
        stop = next_boundary(keeper.settings, keeper.step0, n, end)
        part = dataclasses.replace(plan, record_initial=plan.record_initial and n == keeper.step0)
        state, current, reached, go = programs.while_segment(
            part, state, current, np.int32(n), step0, t0, dt, bar, limit, np.int32(stop)
        )
        return int(reached), state, current, go

    def going(n: int, go: Any) -> bool:
        return (go is None or bool(go)) and n < end

    return _launcher(keeper, state, sinks, start, going, segment, first_always=True)


def _launcher(
    keeper: Keeper,
    state: Any,
    sinks: list[Sink],
    start: int,
    going: Callable[[int, Any], bool],
    segment: Callable[..., tuple[Any, ...]],
    *,
    first_always: bool = False,
) -> Callable[[int], tuple[Any, ...]]:
    def launch(bar_id: int) -> tuple[Any, ...]:
        n, current, go, ran = start, list(sinks), None, False
        bar, carry = np.int32(bar_id), state
        try:
            while going(n, go) or (first_always and not ran):
                ran = True
                n, carry, current, go = segment(bar, n, carry, current)
                carry, current = jax.block_until_ready((carry, current))
                sinks[:] = current  # what `ending` ends if anything raises from here on
                keeper.save(n, carry, current)
        except BaseException as err:
            if ran and not ending._ran(err):  # e.g. a checkpoint that could not be written
                for note in ending.end_after_error(keeper.owner, sinks, err):
                    err.add_note(note)
            raise
        taken = np.int32(n - keeper.step0)
        return (carry, current, taken) if go is None else (carry, current, taken, go)

    return launch
