"""ending: run a compiled loop on the host, then close its sinks; end them when anything raises.

The loop is traced and compiled first (`programs.ready`): an error there (a step or frame that
does not fit, a Ctrl-C) is raised with the sinks untouched. The newest sink values exist only once
the loop has returned. If running it raises (a failing host callback, a ``KeyboardInterrupt``, a
checkpoint that could not be written), the driver holds the newest values it has (those it was
given, or a checkpointed loop's after its last segment): each streaming sink's writer is ended as
it stands, after the staged frames of a value that is still the newest are flushed to it. The
blocks flushed commit, the frames staged on the device by the loop are lost with it, the run reads
as ``"interrupted"`` (readable, resumable with ``mode="a"``) and its close hook gets the error (a
campaign marks the run failed). What happened to each run is added to the error's notes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import jax

from .._core.close import close, raise_first
from .._core.errors import JaxsinksError, StaleSinkError, TransformError
from .._core.record import flatten_sinks
from .._core.sink import Sink
from .._io.callback import interrupt_aborts
from .._io.progress import Progress
from .._sinks.stream import StreamSink
from . import programs


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a driven loop returned: the host's view of the compiled program's outputs."""

    state: Any
    sinks: list[Sink]
    taken: Any  # steps taken (an int; an array when traced)
    still_going: Any  # while_loop: whether `cond` still held (max_steps stopped it)
    traced: bool  # called inside a JAX transformation: nothing was run, nothing can be closed


def drive(
    owner: str,
    launch: Callable[[int], programs.Ready[tuple[Any, ...]]],
    sinks: list[Sink],
    treedef: Any,
    bar: Progress | None,
    reason: Callable[[Outcome], str],
    *,
    step0: int,
    steps: int | None = None,
    checkpointed: bool = False,
    own_bar: bool = False,
) -> tuple[Outcome, Any]:
    """Run the loop ``launch(bar_id)()``, wait for it, finish `bar`, close the sinks.

    ``launch(bar_id)`` traces and compiles the loop (and resumes or saves a checkpointed loop's
    first checkpoint) and returns it ready to run: an error there (a step or frame that does not
    fit, a Ctrl-C) is raised with the sinks untouched (fix the call and pass them again). Once the
    loop runs, any error ends the sinks (`end_after_error`). The loop returns ``(state, sinks,
    step reached[, whether cond still holds])``; the steps taken are `steps` when the host knows
    them (`scan`), else the step reached less `step0`, counted on the host. Returns the outcome
    and the closed sinks (in the structure of `treedef`). Inside a JAX transformation the sinks
    are returned as they are, and streaming sinks are refused (they can only be closed on the
    host, after it). A Ctrl-C ends the loop at its next host call (`interrupt_aborts`, around the
    run of a loop that calls the host, and around the launch of a `checkpointed` one too).
    `own_bar`: the driver made `bar`, so it closes it also when tracing fails.
    """
    bar_id = programs.register_bar(bar)
    try:
        if checkpointed:
            with interrupt_aborts():
                run = _launch(launch, bar_id, bar, own_bar)
                return _run(owner, run, sinks, treedef, bar, reason, step0, steps)
        run = _launch(launch, bar_id, bar, own_bar)
        if not run.host_calls:  # nothing in the program can see a Ctrl-C before it returns
            return _run(owner, run, sinks, treedef, bar, reason, step0, steps)
        with interrupt_aborts():  # a Ctrl-C ends the one long loop at the flush it lands in
            return _run(owner, run, sinks, treedef, bar, reason, step0, steps)
    finally:
        programs.release_bar(bar_id)


def _launch(
    launch: Callable[[int], programs.Ready[tuple[Any, ...]]],
    bar_id: int,
    bar: Progress | None,
    own_bar: bool,
) -> programs.Ready[tuple[Any, ...]]:
    try:
        return launch(bar_id)
    except BaseException:
        if own_bar and bar is not None:
            bar.close()
        raise  # found while tracing or compiling: nothing ran, the sinks are as they were


def _run(
    owner: str,
    run: programs.Ready[tuple[Any, ...]],
    sinks: list[Sink],
    treedef: Any,
    bar: Progress | None,
    reason: Callable[[Outcome], str],
    step0: int,
    steps: int | None,
) -> tuple[Outcome, Any]:
    try:
        out = run()
    except BaseException as err:
        _fail(owner, err, sinks, bar)
    # traced into the caller's program (all of a jitted call's outputs are, or none): nothing ran
    if run.traced or isinstance(out[2], jax.core.Tracer):
        _refuse_streaming(owner, sinks)
        state, traced, reached, *rest = out
        outcome = Outcome(state, traced, reached - step0, rest[0] if rest else None, traced=True)
        return outcome, jax.tree_util.tree_unflatten(treedef, outcome.sinks)
    latest = sinks
    try:
        outcome = _outcome(out, step0, steps)
        latest = outcome.sinks
        if bar is not None:
            bar.finish(reason(outcome), position=outcome.taken)
        return outcome, jax.tree_util.tree_unflatten(treedef, close(latest))
    except BaseException as err:
        _fail(owner, err, latest, bar)


def _fail(owner: str, err: BaseException, latest: list[Sink], bar: Progress | None) -> NoReturn:
    """End the sinks after `err`, note how each run ended, and raise it (a Ctrl-C that reached
    us wrapped in a host callback's runtime error as a KeyboardInterrupt)."""
    interrupted = _is_interrupt(err)
    if bar is not None:
        why = "interrupted" if interrupted else f"stopped by {type(err).__name__}"
        bar.finish(why, complete=False)
    cause = KeyboardInterrupt(f"{owner}'s loop was interrupted (Ctrl-C)") if interrupted else err
    notes = end_after_error(owner, latest, cause)
    if interrupted and not isinstance(err, KeyboardInterrupt):
        stop = KeyboardInterrupt()
        for note in notes:
            stop.add_note(note)
        raise stop from err
    for note in notes:
        err.add_note(note)
    raise err


def end_after_error(owner: str, sinks: Sequence[Sink], cause: BaseException) -> list[str]:
    """End every streaming sink of `sinks` still open as interrupted, after flushing the staged
    frames of each value that is still the newest; one note per run saying how it ended."""
    why = type(cause).__name__
    notes = []
    for sink in sinks:
        if not isinstance(sink, StreamSink) or sink.closed or _is_traced(sink):
            continue
        try:
            writer = sink._writer_or_raise("close")
        except JaxsinksError:
            continue  # already closed (e.g. by `close` before it raised)
        extra = ""
        try:
            sink.flush_staged()
        except BaseException as err:  # noqa: BLE001 - a second Ctrl-C: the writer is ended below
            extra = f" (flushing its staged frames raised {type(err).__name__})"
        writer.discard(f"was ended by {owner} when its loop raised {why}")
        # its close hook runs with the loop's error (a campaign records the run as failed)
        writer.closed_by_sink(cause)
        lost = "" if writer.error is None else f" It had failed before: {writer.error}"
        notes.append(
            f"{owner} ended {writer.description} after the {why}: its {writer.committed} committed "
            "frames are readable (the run reads as interrupted; frames still staged on the "
            f"device were lost with the loop){extra}.{lost}"
        )
    return notes


def close_after_error(owner: str, sinks: Any, error: BaseException) -> tuple[Any, list[str]]:
    """Close `sinks` after `error` ended the code that held them (`jaxsinks.recording`'s block).

    A streaming sink whose value is older than what its writer accepted (a jitted call was cut
    short by `error` after it had flushed blocks; its newer sink value was lost with it) is
    closed at what its writer has: the flushed blocks commit and the run is closed, and the
    frames that call had staged on the device are lost. Other errors of the close are raised as
    `close` raises them. Returns the closed sinks (such a sink as it was given, closed on the
    host) and one note per run closed this way.
    """
    flat, treedef = flatten_sinks(owner, sinks)
    out, notes, errors = [], [], []
    why = "KeyboardInterrupt" if _is_interrupt(error) else type(error).__name__
    for sink in flat:
        try:
            out.append(sink.close())
            continue
        except StaleSinkError as err:
            stale: JaxsinksError = err
        except JaxsinksError as err:
            errors.append(err)
            out.append(sink)
            continue
        out.append(sink)
        if not isinstance(sink, StreamSink) or not _is_live(sink):
            errors.append(stale)  # refused flushes reported after the run closed
            continue
        writer = sink._writer_or_raise("close")
        try:
            out[-1] = sink.close(stale="close")
        except JaxsinksError as err:
            errors.append(err)
            continue
        notes.append(
            f"{owner} closed {writer.description} at its {writer.committed} committed frames "
            f"after the {why}: the jitted call it cut short had flushed blocks, and the frames "
            "it had staged on the device were lost with it."
        )
    raise_first(errors)
    return jax.tree_util.tree_unflatten(treedef, out), notes


def _outcome(out: tuple[Any, ...], step0: int, steps: int | None) -> Outcome:
    """The outputs of a loop that ran, once they are ready (its errors are raised here); the
    steps taken are `steps` if known, else counted from the step reached (on the host)."""
    state, sinks, reached, *rest = out
    still = rest[0] if rest else None
    state, sinks, reached, still = jax.block_until_ready((state, sinks, reached, still))
    taken = steps if steps is not None else int(reached) - step0
    return Outcome(state, sinks, taken, None if still is None else bool(still), traced=False)


def _refuse_streaming(owner: str, sinks: Sequence[Sink]) -> None:
    streaming = sorted({type(s).__name__ for s in sinks if isinstance(s, StreamSink)})
    if streaming:
        raise TransformError(
            f"`{owner}` was called inside a JAX transformation (jit, grad, vmap), where it cannot "
            f"close the streaming sinks {streaming}: closing waits for the host writer. Call "
            f"`{owner}` outside the transformation, or record with jaxsinks.record in your own "
            "loop and call jaxsinks.close afterwards. DeviceBuffers work inside (returned open)."
        )


def _is_live(sink: StreamSink) -> bool:
    """Whether the sink's host writer is still open."""
    try:
        sink._writer_or_raise("close")
    except JaxsinksError:
        return False
    return True


def _is_traced(sink: Sink) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(sink))


def _is_interrupt(err: BaseException) -> bool:
    """A KeyboardInterrupt, or a runtime error of a host callback that got one (Ctrl-C lands in
    whatever Python code runs, often a callback of the compiled loop)."""
    if isinstance(err, KeyboardInterrupt):
        return True
    runtime = getattr(jax.errors, "JaxRuntimeError", None)
    return runtime is not None and isinstance(err, runtime) and "KeyboardInterrupt" in str(err)
