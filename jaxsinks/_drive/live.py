"""live: the host check, before a driver compiles or runs anything, that each streaming sink it
was given can still record.

A streaming sink records through its host writer. A value whose writer has ended (the value from
before ``jaxsinks.close``, or one passed to an earlier driver call, which closes its sinks), or an
older value of a sink whose writer has accepted frames from a newer one, would have every flush
refused: the loop would run to its end only to raise at close. The drivers refuse such a sink
first, by the rule the sink itself applies when it is closed (`StreamSink.close`): nothing is run
or written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from .._core import sharding as _sharding
from .._core.errors import StaleSinkError, StoreError
from .._core.record import is_sink
from .._core.sink import Sink
from .._io import writer as _writer
from .._sinks.stream import StreamSink, older_than_writer


def check_sinks(owner: str, sinks: Any, flat: Sequence[Sink]) -> None:
    """Raise `StaleSinkError` for the first streaming sink of `flat` (the flattened `sinks`) that
    cannot record: its writer has ended, or it is older than the value its writer expects
    (`StoreError` for a sink of another process's writer). Sinks traced inside a transformation
    are left to the driver, which refuses streaming sinks there."""
    streaming = [
        (i, s)
        for i, s in enumerate(flat)
        if isinstance(s, StreamSink) and not isinstance(s.writer, jax.core.Tracer)
    ]
    if not streaming:
        return
    whole = [(s.writer, s.flushed, s.flags) for _, s in streaming if s.shard is None]
    counters = iter(jax.device_get(whole))  # one transfer for all unsharded sinks
    for i, sink in streaming:
        if sink.shard is None:
            parts = {0: next(counters)}
        else:  # the shards this process holds
            parts = _sharding.host_parts((sink.writer, sink.flushed, sink.flags))
        if any(np.ndim(x) for part in parts.values() for x in part):
            continue  # a vmapped stack of sinks: no single count (refused where it is used)
        refusal = _refusal(sink, parts)
        if refusal is not None:
            error, why = refusal
            raise error(f"`{owner}` was given, as {_path(sinks, i)}, {why}")


def _refusal(sink: StreamSink, parts: dict[int, Any]) -> tuple[type[StoreError], str] | None:
    """Why `sink` (its counters per shard: writer id, flushed, flags) cannot record, and the
    error to raise; None when it can."""
    kind = type(sink).__name__
    writer_id = int(next(iter(parts.values()))[0])
    writer = None if sink.closed else _writer.REGISTRY.get(writer_id)
    if writer is None:
        ended = "closed" if sink.closed else _writer.REGISTRY.ended(writer_id)
        if ended is None:
            return StoreError, (
                f"a {kind} whose writer is not open in this process: a sink records only in the "
                "process that created it. Nothing was run."
            )
        store = _writer.REGISTRY.attached(writer_id, _writer.DESCRIPTION)
        run = "its run" if store is None else f"its run {store}"
        if ended == "closed":
            why = "was already closed (a driver closes its sinks when its loop ends, as "
            why += "jaxsinks.close does)"
        else:
            why = ended
        return StaleSinkError, (
            f"a {kind} whose writer has ended: {run} {why}. Nothing was run or written, and the "
            f"run's committed frames are unchanged. {_remedy(kind, ended)}"
        )
    for shard, (_, flushed, flags) in parts.items():
        what = older_than_writer(writer, shard, int(flushed), int(flags))
        if what is None:
            continue
        return StaleSinkError, (
            f"an older value of a {kind}: {what}. Nothing was run or written, and the run stays "
            "open for its newest value. Pass the sinks the previous call returned (thread the "
            "returned sinks through every call)."
        )
    return None


def _remedy(kind: str, ended: str) -> str:
    """What to pass instead of a sink whose writer ended (`ended`: how)."""
    if kind == "HostBuffer":
        if ended != "closed":
            return "Pass the HostBuffer that zero() (or drain()) returned."
        return (
            "Read the closed HostBuffer the previous call returned, and record further frames "
            "into a new HostBuffer (or into the empty one its zero() returns)."
        )
    return (
        "Pass the sinks the previous call returned if it did not close them; to record more "
        f"frames into this run, create the sink again with mode='a' ({kind}.create(..., "
        "mode='a') continues the run) and pass that."
    )


def _path(sinks: Any, index: int) -> str:
    """How the sink at `index` of the flattened `sinks` is reached, e.g. ``sinks['traj']``."""
    paths = jax.tree_util.tree_flatten_with_path(sinks, is_leaf=is_sink)[0]
    return f"`sinks{jax.tree_util.keystr(paths[index][0])}`"
