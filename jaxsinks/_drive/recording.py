"""recording: a context manager that closes a recording's sinks however the block ends.

Sinks are immutable pytrees, so the context manager cannot see the sinks a jitted call returns
unless they are handed back: the block assigns them to ``rec.sinks`` after every call, and on
exit, normal or not (an exception, Ctrl-C's `KeyboardInterrupt`), `jaxsinks.close` flushes what
the device still stages and finishes every run::

    with jaxsinks.recording(sink) as rec:
        for _ in range(calls):
            rec.sinks = run_chunk(rec.sinks)
    run = jaxsinks.open(path)  # every frame of the completed calls, status "closed"
"""

from __future__ import annotations

import dataclasses
import types
from typing import Literal

from .._core.close import close
from .._core.record import flatten_sinks
from .._core.types import PyTree
from .ending import close_after_error


@dataclasses.dataclass
class Recording:
    """The live handle of `jaxsinks.recording`: assign the sinks each jitted call returns.

    Attributes:
        sinks: the sinks of the recording. Assign the sinks returned by each jitted call
            (``rec.sinks = run_chunk(rec.sinks)``); on exit they are closed and replaced by the
            closed sinks.
        closed: whether the sinks were closed (successfully or not) on exit.
        close_error: the error `close` raised on exit while another exception was propagating
            (that exception is re-raised, with this one chained); None otherwise.
    """

    sinks: PyTree
    closed: bool = False
    close_error: BaseException | None = None

    def __enter__(self) -> Recording:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: types.TracebackType | None,
    ) -> Literal[False]:
        self.closed = True
        if error is None:
            self.sinks = close(self.sinks)
            return False
        try:
            self.sinks, notes = close_after_error("jaxsinks.recording", self.sinks, error)
            for note in notes:
                error.add_note(note)
        except Exception as close_error:  # noqa: BLE001 - chained to the user's error, not swallowed
            self.close_error = close_error
            error.add_note(
                "jaxsinks.recording: closing the sinks after this "
                f"{kind.__name__ if kind else 'error'} also failed: {type(close_error).__name__}: "
                f"{close_error}"
            )
            if error.__context__ is None:
                error.__context__ = close_error
        return False  # re-raise the user's exception


def recording(sinks: PyTree) -> Recording:
    """A context manager that closes `sinks` when its block ends, normally or by an exception.

    Use it so that a Ctrl-C (`KeyboardInterrupt`) or any error during a long run still flushes
    the frames the device holds and finishes the store cleanly (status ``"closed"``). Sinks are
    immutable: assign the sinks each jitted call returns to ``rec.sinks``::

        with jaxsinks.recording((traj, energies)) as rec:
            while not done:
                rec.sinks, state = run_chunk(rec.sinks, state)

    On exit, `jaxsinks.close` runs on ``rec.sinks`` (the sinks of the last completed call) and
    ``rec.sinks`` becomes the closed sinks. An exception raised in the block is re-raised after
    the close; if the close fails too, its error is attached to that exception (as a note and as
    its ``__context__``) and kept in ``rec.close_error``, never swallowed. Without an exception,
    a close error is raised as usual. The same as ``try: ... finally: jaxsinks.close(sinks)``.

    Args:
        sinks: a sink, or a pytree (tuple, dict, ...) of sinks.

    Returns:
        A `Recording` whose ``sinks`` attribute the block updates.
    """
    flatten_sinks("jaxsinks.recording", sinks)
    return Recording(sinks)
