"""The host side of a ZarrSink: create or reopen a run, write flushed blocks, commit in order.

Three stages, so that the compiled loop waits for as little as possible:

1. A flush (the device's `io_callback`) copies the block into a preallocated, pre-touched host
   buffer from a small pool (one memcpy, no page faults) and returns. When every buffer is busy it
   waits: back-pressure when the disk is slower than the loop.
2. A writer thread issues the TensorStore writes for each block, in order, waits until TensorStore
   has copied it (the write's ``copy`` future), and returns the buffer to the pool. It waits when
   more than ``max_inflight_bytes`` are not yet durable.
3. A committer thread waits for each block's ``commit`` futures in order and only then records the
   new committed frame count in the group attributes: the count never covers data that is not
   durable.

Host memory is bounded by the pool plus ``max_inflight_bytes``. A failure is kept, later blocks are
skipped, and `finish` (called by `jaxsinks.close`) raises it with the count of frames safely
committed.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import itertools
import json
import logging
import queue
import threading
from typing import Any

import numpy as np

from . import _tsio as tsio
from ._errors import (
    OutOfRangeError,
    SchemaMismatchError,
    StoreError,
    StoreExistsError,
    WriteError,
)
from ._flags import Flag
from ._layout import ATTRS_KEY, SCHEMA_VERSION, Layout, group_metadata
from ._location import Location

log = logging.getLogger("jaxsinks")

MODES = ("w-", "w", "a")
DEFAULT_MAX_INFLIGHT_BYTES = 256 * 2**20
#: Host buffers per run, each one flush block: enough to double-buffer and absorb jitter.
POOL_BLOCKS = 3

_REGISTRY: dict[int, Writer] = {}
_CLOSED: set[int] = set()
_IDS = itertools.count(1)
_REGISTRY_LOCK = threading.Lock()


@dataclasses.dataclass
class _Pending:
    start: int  # the block's first frame
    end: int  # the frame count once this block is committed
    futures: list[Any]  # TensorStore commit futures
    nbytes: int


class Writer:
    """Writes one run. Created by `create_run`; used by flush callbacks and `jaxsinks.close`."""

    def __init__(
        self,
        location: Location,
        layout: Layout,
        arrays: dict[str, Any],
        *,
        frames: int,
        committed: int,
        meta: dict[str, Any],
        user_attrs: dict[str, Any],
        capacity: int | None,
        ring: bool,
        max_inflight_bytes: int,
    ) -> None:
        self.location = location
        self.layout = layout
        self.arrays = arrays
        self.frames = frames  # the arrays' current length along the frame axis
        self.committed = committed
        self.meta = meta
        self.user_attrs = user_attrs
        self.capacity = capacity
        self.ring = ring
        self.max_inflight_bytes = max_inflight_bytes
        self.valid_from = int(meta.get("valid_from", 0))
        self.error: BaseException | None = None
        self.failed_at: int | None = None  # the first frame that could not be stored
        self.blocks_written = 0
        self._pending: collections.deque[_Pending] = collections.deque()
        self._inflight = 0
        self._stopping = False
        self._cond = threading.Condition()
        self._meta_lock = threading.Lock()
        self._free: queue.SimpleQueue[dict[str, np.ndarray]] = queue.SimpleQueue()
        self._allocated = 0
        self._blocks: queue.SimpleQueue[tuple[int, int, dict[str, np.ndarray]] | None] = queue.SimpleQueue()
        with _REGISTRY_LOCK:
            self.id = next(_IDS)
            _REGISTRY[self.id] = self
        self._writer_thread = threading.Thread(
            target=self._write_loop, name=f"jaxsinks-write-{self.id}", daemon=True
        )
        self._commit_thread = threading.Thread(
            target=self._commit_loop, name=f"jaxsinks-commit-{self.id}", daemon=True
        )
        self._writer_thread.start()
        self._commit_thread.start()

    # ------------------------------------------------------------------------------ writing

    def submit(self, offset: int, n: int, values: list[np.ndarray]) -> None:
        """Queue frames ``offset:offset + n``: the first `n` rows of each of `values`, one array
        per ``layout.arrays`` entry. Copies them, so `values` may be reused once this returns.
        """
        if n <= 0 or self._skips(offset):
            return
        buffers = self._buffer()
        for (name, buf), value in zip(buffers.items(), values):
            np.copyto(buf[:n], value[:n], casting="no")
        self.blocks_written += 1
        self._blocks.put((offset, n, buffers))

    def _skips(self, offset: int) -> bool:
        """Whether a block at `offset` comes after a failure (so it would leave a gap)."""
        return self.failed_at is not None and offset >= self.failed_at

    def _buffer(self) -> dict[str, np.ndarray]:
        """A free host buffer set; a new one while the pool is not full, else wait for one."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        if self._allocated < POOL_BLOCKS:
            self._allocated += 1
            buffers = {}
            for a in self.layout.arrays:
                buf = np.empty((self.layout.block, *a.shape), a.dtype)
                buf.fill(0)  # touch every page now, not during a flush
                buffers[a.name] = buf
            return buffers
        return self._free.get()

    def _write_loop(self) -> None:
        while (item := self._blocks.get()) is not None:
            offset, n, buffers = item
            try:
                self._write(offset, n, buffers)
            finally:
                self._free.put(buffers)

    def _write(self, offset: int, n: int, values: dict[str, np.ndarray]) -> None:
        """Write frames ``offset:offset + n`` (the first `n` rows of each array in `values`).

        Returns once TensorStore no longer reads `values`; waits for older commits first if more
        than ``max_inflight_bytes`` are in flight. Failures are kept, not raised.
        """
        if self._skips(offset):
            return
        try:
            start = self._position(offset, n)
            if start + n > self.frames:
                self._resize(self._grown(start + n))
            writes = [tsio.write_rows(self.arrays[k], start, v[:n]) for k, v in values.items()]
            for w in writes:
                w.copy.result()
        except Exception as err:  # noqa: BLE001 - kept and raised by finish()
            self.fail(StoreError(f"Writing frames {offset}..{offset + n} to {self.location} failed: "
                                 f"{tsio.clean_message(err)}"), at=offset)
            return
        nbytes = sum(int(v[:n].nbytes) for v in values.values())
        with self._cond:
            self._pending.append(_Pending(offset, offset + n, [w.commit for w in writes], nbytes))
            self._inflight += nbytes
            self._cond.notify_all()
            while self._inflight > self.max_inflight_bytes and self._pending and self.failed_at is None:
                self._cond.wait()

    def _grown(self, needed: int) -> int:
        """The next array length: at least `needed`, doubling so that resizes are rare.

        Arrays may be longer than the committed frames while a run is open (the extra frames read
        as the fill value); `finish` trims them to the committed count.
        """
        grown = max(needed, 2 * self.frames)
        return min(grown, self.capacity) if self.ring and self.capacity else grown

    def _resize(self, frames: int) -> None:
        names = list(self.arrays)
        resized = tsio.resize([self.arrays[k] for k in names], frames, self.location.kvstore)
        self.arrays = dict(zip(names, resized))
        self.frames = frames

    def _position(self, offset: int, n: int) -> int:
        """Where frame `offset` goes in the arrays; for a ring, first retire what it overwrites."""
        if not self.ring:
            return offset
        assert self.capacity is not None
        if offset + n > self.capacity and offset + n - self.capacity > self.valid_from:
            self.valid_from = offset + n - self.capacity
            self._write_attrs()  # durable before the old frames are overwritten
        return offset % self.capacity

    def fail(self, err: BaseException, *, at: int) -> None:
        """Keep the first failure, at frame `at`; later blocks are skipped, earlier ones commit."""
        with self._cond:
            if self.error is None:
                self.error = err
                log.error("jaxsinks: %s (raised at close)", err)
            self.failed_at = at if self.failed_at is None else min(self.failed_at, at)
            self._cond.notify_all()

    def _commit_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return
                items = [self._pending[0]]
                # Blocks already durable behind the first one share one metadata write.
                items += itertools.takewhile(
                    lambda p: all(f.done() for f in p.futures), itertools.islice(self._pending, 1, None)
                )
            durable = self.committed
            for item in items:
                try:
                    for future in item.futures:
                        future.result()
                except Exception as err:  # noqa: BLE001 - kept and raised by finish()
                    self.fail(StoreError(f"Committing frames {item.start}..{item.end} to "
                                         f"{self.location} failed: {tsio.clean_message(err)}"), at=item.start)
                    break
                if self.failed_at is not None and item.end > self.failed_at:
                    break
                durable = item.end
            if durable > self.committed:
                self.committed = durable
                try:
                    self._write_attrs()
                except StoreError as err:
                    self.fail(err, at=durable)
            with self._cond:
                for item in items:
                    self._pending.popleft()
                    self._inflight -= item.nbytes
                self._cond.notify_all()

    # ------------------------------------------------------------------------------ metadata

    def attributes(self, status: str) -> dict[str, Any]:
        meta = dict(self.meta, committed=self.committed, status=status)
        if self.ring:
            meta["valid_from"] = self.valid_from
        return {ATTRS_KEY: meta, **self.user_attrs}

    def _write_attrs(self, status: str = "open") -> None:
        with self._meta_lock:
            tsio.write_bytes(self.location.kvstore, "zarr.json", group_metadata(self.attributes(status)))

    def stop(self) -> None:
        """Wait for the queued and in-flight writes and stop both threads (no final metadata)."""
        self._blocks.put(None)
        self._writer_thread.join()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._commit_thread.join()

    def finish(self) -> int:
        """Wait until every write is durable, record the final count, and raise any kept failure.

        Returns:
            The number of frames committed.
        Raises:
            WriteError: naming the store and the count of frames safely committed.
        """
        self.stop()
        with _REGISTRY_LOCK:
            _REGISTRY.pop(self.id, None)
            _CLOSED.add(self.id)
        if self.error is None:
            try:
                if not self.ring and self.frames != self.committed:
                    self._resize(self.committed)
                self._write_attrs("closed")
            except StoreError as err:
                self.error = err
        if self.error is not None:
            try:
                self._write_attrs("failed")
            except StoreError:
                pass
            kind = OutOfRangeError if isinstance(self.error, OutOfRangeError) else WriteError
            raise kind(
                f"{self.error} {self.committed} frames of {self.location} are committed and "
                "readable; later frames were not stored.",
                self.committed,
            ) from None
        return self.committed


@atexit.register
def _stop_unclosed_writers() -> None:
    """At interpreter exit, commit what is in flight for runs that were never closed."""
    with _REGISTRY_LOCK:
        writers = list(_REGISTRY.values())
    for writer in writers:
        writer.stop()
        log.warning(
            "jaxsinks: the run at %s was not closed; %d frames are committed, and frames still "
            "staged on the device were not stored. Call jaxsinks.close(sinks) when recording ends.",
            writer.location, writer.committed,
        )


def lookup(writer_id: int) -> Writer | None:
    """The live writer with this id, or None if it was closed or never existed."""
    with _REGISTRY_LOCK:
        return _REGISTRY.get(writer_id)


def was_closed(writer_id: int) -> bool:
    with _REGISTRY_LOCK:
        return writer_id in _CLOSED


def host_flush(writer_id: Any, offset: Any, n: Any, bad: Any, *values: np.ndarray) -> np.ndarray:
    """The io_callback target: write a block; return ``[frames accepted, flags]`` (int32).

    `bad` holds one bool per field: whether it has values out of its storage dtype's range. Such a
    block is not written (nothing is stored as inf); the failure is raised at close.
    """
    writer = lookup(int(writer_id))
    n = int(n)
    if writer is None:
        log.error("jaxsinks: a ZarrSink whose run was closed was flushed again; %d frames dropped", n)
        return np.array([n, Flag.WRITE_FAILED], np.int32)
    offset = int(offset)
    fields = writer.layout.fields
    bad_fields = [a for a, b in zip(fields, np.asarray(bad)) if b]
    if bad_fields and writer.error is None:
        names = ", ".join(f"'{a.name}' ({a.dtype.name})" for a in bad_fields)
        writer.fail(OutOfRangeError(
            f"Frames {offset}..{offset + n} hold finite values out of the range of the storage "
            f"dtype of {names}; they were not stored (not as inf). Store those fields with a "
            "wider dtype (fields={name: FieldConfig(dtype='float32')}) or rescale them.",
            writer.committed,
        ), at=offset)
    writer.submit(offset, n, values)
    flags = 0
    if writer.error is not None:
        flags |= Flag.WRITE_FAILED
        if isinstance(writer.error, OutOfRangeError):
            flags |= Flag.OUT_OF_RANGE
    return np.array([n, flags], np.int32)


# ---------------------------------------------------------------------------------- creation


def create_run(
    location: Location,
    layout: Layout,
    *,
    mode: str,
    meta: dict[str, Any],
    user_attrs: dict[str, Any],
    capacity: int | None,
    ring: bool,
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
) -> Writer:
    """Create (``"w-"``, ``"w"``) or reopen (``"a"``) the run at `location` and return its writer."""
    kv = location.kvstore
    existing = tsio.read_bytes(kv, "zarr.json")
    if mode == "a" and existing is not None:
        return _reopen(location, layout, existing, meta, user_attrs, capacity, ring, max_inflight_bytes)
    if mode == "w-" and (existing is not None or tsio.list_keys(kv)):
        raise StoreExistsError(
            f"A store already exists at {location}. Pass mode='w' to overwrite it, mode='a' to "
            "append to the run in it, or choose another path."
        )
    if mode == "w":
        tsio.delete_all(kv)
    meta = dict(meta, schema_version=SCHEMA_VERSION, schema=layout.schema())
    try:
        arrays = {a.name: tsio.create_array(location.child(a.name), a.metadata(0)) for a in layout.arrays}
        for group in layout.groups:
            tsio.write_bytes(location.child(group), "zarr.json", group_metadata({}))
        writer = Writer(location, layout, arrays, frames=0, committed=0, meta=meta,
                        user_attrs=user_attrs, capacity=capacity, ring=ring,
                        max_inflight_bytes=max_inflight_bytes)
        writer._write_attrs()
    except StoreError:
        _remove_partial(kv)
        raise
    return writer


def _reopen(location, layout, existing, meta, user_attrs, capacity, ring, max_inflight_bytes) -> Writer:
    attrs = json.loads(existing).get("attributes", {})
    stored = attrs.get(ATTRS_KEY)
    if stored is None:
        raise StoreError(f"{location} holds a Zarr group that is not a jaxsinks run; it cannot be appended to.")
    check_schema(stored.get("schema", {}), layout.schema(), location)
    before = (stored.get("capacity"), stored.get("overflow"))
    now = (meta.get("capacity"), meta.get("overflow"))
    if "ring" in (before[1], now[1]) and before != now:
        raise SchemaMismatchError(
            f"The run at {location} was recorded with capacity={before[0]} and overflow="
            f"{before[1]!r}; a ring run can only be appended to with the same settings (got "
            f"capacity={now[0]}, overflow={now[1]!r})."
        )
    committed = int(stored.get("committed", 0))
    arrays = {a.name: tsio.open_array(location.child(a.name), write=True) for a in layout.arrays}
    if ring:  # a ring's arrays stay at their length; frames are placed modulo the capacity
        frames = int(next(iter(arrays.values())).shape[0])
    else:  # drop anything written past the committed count before a crash
        arrays = dict(zip(arrays, tsio.resize(list(arrays.values()), committed, location.kvstore)))
        frames = committed
    merged = {k: v for k, v in attrs.items() if k != ATTRS_KEY}
    merged.update(user_attrs)
    meta = dict(stored, **meta)
    writer = Writer(location, layout, arrays, frames=frames, committed=committed, meta=meta,
                    user_attrs=merged, capacity=capacity, ring=ring,
                    max_inflight_bytes=max_inflight_bytes)
    writer._write_attrs()
    return writer


def check_schema(stored: dict[str, Any], wanted: dict[str, Any], location: Location) -> None:
    """Raise `SchemaMismatchError` listing every difference between two run schemas."""
    problems = []
    old = {f["name"]: f for f in stored.get("fields", [])}
    new = {f["name"]: f for f in wanted["fields"]}
    for name in sorted(set(old) | set(new)):
        if name not in new:
            problems.append(f"field '{name}' is stored but missing from the frame")
        elif name not in old:
            problems.append(f"field '{name}' is in the frame but not in the stored run")
        elif old[name] != new[name]:
            diffs = [f"{k} {old[name].get(k)} stored vs {new[name][k]} now" for k in new[name] if old[name].get(k) != new[name][k]]
            problems.append(f"field '{name}': " + ", ".join(diffs))
    for key in ("time_dtype", "per_system", "chunk", "chunks_per_shard"):
        if stored.get(key) != wanted[key]:
            problems.append(f"{key} is {stored.get(key)!r} in the stored run but {wanted[key]!r} now")
    if problems:
        raise SchemaMismatchError(
            f"Cannot append to the run at {location}: its frame schema differs: "
            + "; ".join(problems)
            + ". Record the same frame structure with the same options, or write a new run."
        )


def _remove_partial(kv: dict[str, Any]) -> None:
    try:
        tsio.delete_all(kv)
    except StoreError:
        pass
