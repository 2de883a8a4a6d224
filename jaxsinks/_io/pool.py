"""The host buffers of a writer: preallocated, pre-touched block buffers that flushes copy into,
reused once nothing but the pool references them (see `jaxsinks._io.writer`)."""

from __future__ import annotations

import collections
import math
import sys
import threading

import numpy as np

from .layout import Layout

#: Blocks per writer (per shard) that flushes may queue for the writer thread, each in a host
#: buffer of the pool: enough to double-buffer and absorb jitter; allocated when the writer
#: starts. A writer whose store reads its buffers until they are durable
#: (`HostWriter.references_values`) has up to `MAX_HELD_BLOCKS` more, for the blocks in flight,
#: allocated by the writer thread when none is free (`Pool.spare`), not by a flush.
POOL_BLOCKS = 3
#: At most this many extra buffers for blocks in flight (fewer if ``max_inflight_bytes`` holds
#: fewer).
MAX_HELD_BLOCKS = 16

Buffers = dict[str, np.ndarray]


def block_bytes(layout: Layout) -> int:
    """The bytes of one block's host buffers: every array, `layout.block` frames."""
    return sum(layout.block * a.dtype.itemsize * math.prod(a.shape) for a in layout.arrays)


def pool_size(layout: Layout, shards: int, max_inflight_bytes: int, held: bool) -> int:
    """How many buffer sets a writer's pool may hold: `POOL_BLOCKS` per shard, plus, when its
    store reads the buffers until they are durable (`held`), one per block that can be in flight
    (``max_inflight_bytes`` and the block that crosses it), at most `MAX_HELD_BLOCKS`.
    """
    if not held:
        return POOL_BLOCKS * shards
    inflight = max_inflight_bytes // max(1, block_bytes(layout)) + 1
    return POOL_BLOCKS * shards + min(inflight, MAX_HELD_BLOCKS)


def _new_buffers(layout: Layout) -> Buffers:
    """One block's host buffers, every page touched now (not during a flush)."""
    buffers = {}
    for a in layout.arrays:
        buffers[a.name] = np.empty((layout.block, *a.shape), a.dtype)
        buffers[a.name].fill(0)
    return buffers


def _references(buffers: Buffers) -> int:
    """The largest reference count of the arrays of `buffers`. Every view of an array (held by a
    TensorStore write still reading it, or by a memory store keeping it as the stored value)
    references it, so this is the count of a fresh set (`Pool`) exactly when nothing else
    holds any of them.
    """
    return max(sys.getrefcount(array) for array in buffers.values())


class Pool:
    """At most `limit` sets of one block's host buffers, reused once nothing else references them.

    `take` hands out a free set (allocating one while fewer than `limit` exist, else waiting for
    one); `give` takes it back. A set given back while something still references its arrays
    (a write still reading it, a memory store keeping it as the stored value) is held until that
    reference goes; when every set is taken or held, the oldest held set is forgotten (whatever
    references it keeps it alive) and a new one allocated, so the pool never waits on a store.
    """

    def __init__(self, layout: Layout, limit: int) -> None:
        self.layout = layout
        self.limit = limit
        self._cond = threading.Condition()
        self._free: list[Buffers] = []
        self._held: collections.deque[Buffers] = collections.deque()
        self._count = 0  # sets free, taken or held
        self._unshared = 0  # `_references` of a set that nothing else references

    def fill(self, count: int) -> None:
        """Allocate sets until the pool has `count` (at most `limit`)."""
        while True:
            with self._cond:
                if self._count >= min(count, self.limit):
                    return
                self._count += 1
            self.give(self._allocate())

    def spare(self) -> None:
        """Allocate a set now if none is free and fewer than `limit` exist, so that the next
        `take` (in a flush, which the loop waits for) need not allocate one."""
        with self._cond:
            if self._free or self._count >= self.limit or self._released() is not None:
                return
            self._count += 1
        self.give(self._allocate())

    def take(self) -> Buffers:
        """A free set: a reused one, a new one while there are fewer than `limit`, else wait."""
        with self._cond:
            while True:
                if self._free:
                    return self._free.pop()
                if (buffers := self._released()) is not None:
                    self._held.remove(buffers)
                    return buffers
                if self._count < self.limit:
                    self._count += 1
                    break
                if self._held:
                    self._held.popleft()  # still referenced: its holder keeps it alive
                    self._count -= 1
                    continue
                self._cond.wait()
        return self._allocate()

    def _released(self) -> Buffers | None:
        """A held set that nothing references any more (call with `_cond` held)."""
        return next((b for b in self._held if _references(b) <= self._unshared), None)

    def give(self, buffers: Buffers) -> None:
        """Take back a set: free if nothing else references it, else held until then."""
        with self._cond:
            if _references(buffers) <= self._unshared:
                self._free.append(buffers)
            else:
                self._held.append(buffers)
            self._cond.notify()

    def _allocate(self) -> Buffers:
        """A new set, already counted in `_count` (which a failure gives back)."""
        try:
            buffers = _new_buffers(self.layout)
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise
        unshared = _references(buffers)
        with self._cond:
            self._unshared = max(self._unshared, unshared)
        return buffers
