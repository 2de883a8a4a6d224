"""close: the host-side end of a recording, for any pytree of sinks."""

from __future__ import annotations

import jax

from .errors import ConfigError, JaxsinksError
from .record import flatten_sinks
from .types import STALE, PyTree, Stale


def close(sinks: PyTree, *, stale: Stale = "raise") -> PyTree:
    """Finish every sink in `sinks` on the host, then raise the first error if any failed.

    For a `ZarrSink`: flush the staged frames, wait until everything is durable, record the
    committed frame count, and raise any error deferred from a flush. For a `DeviceBuffer`:
    raise if it overflowed under ``overflow="error"``. Every sink is closed before anything is
    raised, so no sink loses frames because another failed.

    Args:
        sinks: a pytree of sinks: the values the last call returned.
        stale: for a value of a streaming sink older than its writer's (the newest value was
            lost: an exception, or a sink closed over in a jitted function instead of passed to
            it, whose later calls were refused): ``"raise"`` (the default) raises
            `StaleSinkError` and leaves the run open for the newest value; ``"close"`` closes the
            run at the frames its writer has: every block flushed so far commits; the frames
            staged in that value, and in flushes refused as stale, are not stored.

    Returns:
        The closed sinks, in the same structure.
    """
    if stale not in STALE:
        raise ConfigError(f"`close` needs `stale` to be one of {list(STALE)}; got {stale!r}.")
    flat, treedef = flatten_sinks("close", sinks, empty_ok=True)
    out, errors = [], []
    for sink in flat:
        try:
            out.append(sink.close(stale=stale))
        except JaxsinksError as err:
            errors.append(err)
            out.append(sink)
    raise_first(errors)
    return jax.tree_util.tree_unflatten(treedef, out)


def raise_first(errors: list[JaxsinksError]) -> None:
    """Raise the first of the errors of closing several sinks, noting the others (if any)."""
    if errors:
        first = errors[0]
        for other in errors[1:]:
            first.add_note(f"Another sink also failed: {type(other).__name__}: {other}")
        raise first
