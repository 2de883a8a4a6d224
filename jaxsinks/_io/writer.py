"""The host side of a streaming sink: a pipeline from the flush callback to durable storage.

Three stages, so that the compiled loop waits for as little as possible:

1. A flush (the device's host callback, `jaxsinks._io.callback`) copies the block into a host
   buffer set (one memcpy) and returns. At most `POOL_BLOCKS` sets per shard are between a flush
   and their write; a flush waits while all are (back-pressure when the storage is slower than
   the loop). A set is reused once nothing else references it (pre-touched: no page faults).
2. A writer thread hands each block, in order, to the store-specific `_issue` (TensorStore writes
   for a Zarr run, formatted rows for a CSV log). `_issue` may leave references to the buffer
   set with the store (a Zarr run's writes reference it instead of copying it, until their
   commit; a ``memory://`` store keeps it as its value): the set is reused only once its arrays'
   reference counts say that nothing holds them, so a store never sees its data change. It
   waits while more than ``max_inflight_bytes`` are not yet durable.
3. A committer thread waits for each block to be durable, in order, and only then records the new
   committed count (`_record_committed`): the count never covers data that is not durable. It
   records at most once per `commit_interval` seconds (a Zarr run: `COMMIT_INTERVAL`), so that
   the blocks of a fast loop share one metadata write; it records at once when the writer waits
   on ``max_inflight_bytes``, when someone waits for the count (`wait_committed`), and at close.
   Between records, once ``sync_bytes`` (a local Zarr run: `SYNC_BYTES`) more have been written,
   it makes them durable (`_sync`) without recording them, so that the disk writes them back
   steadily and neither the next record nor close waits for a long backlog.

The frames in flight are bounded by the pool plus ``max_inflight_bytes`` (host memory is that,
up to `POOL_BLOCKS` more sets kept for reuse, and a working set of TensorStore and the allocator:
docs/reliability.md). A failure is kept with
the frame it happened at; later blocks are skipped (they would leave a gap), earlier ones still
commit, and `finish` (called by `jaxsinks.close`) raises it with the count of frames safely
committed.
"""

from __future__ import annotations

import abc
import atexit
import collections
import dataclasses
import itertools
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._core.errors import ConfigError, OutOfRangeError, StaleSinkError, WriteError
from .._core.flags import Flag
from .._core.types import as_int
from .layout import Layout
from .registry import Registry

log = logging.getLogger("jaxsinks")

DEFAULT_MAX_INFLIGHT_BYTES = 256 * 2**20


def check_inflight_bytes(owner: str, value: Any) -> int:
    """`value` as a positive int (`max_inflight_bytes`), or a ConfigError naming it."""
    number = as_int(value)
    if number is None or number <= 0:
        raise ConfigError(
            f"`{owner}` needs `max_inflight_bytes` to be a positive int (the bytes of flushed "
            f"blocks that may be written but not yet durable; default {DEFAULT_MAX_INFLIGHT_BYTES},"
            f" 256 MiB); got {value!r}. There is no unbounded setting: pass a larger number to let "
            "more wait for the storage."
        )
    return number


#: Host buffer sets per shard between a flush and its write, each one flush block: enough to
#: double-buffer and absorb jitter. As many written sets are kept for reuse.
POOL_BLOCKS = 3
#: Seconds a Zarr run's committer waits after recording the committed count before it records it
#: again (`HostWriter.commit_interval`). Each record rewrites and fsyncs the run's ``zarr.json``:
#: with a 16 MiB block every 70 ms that cost the loop 2-9% (docs/benchmarks.md). The blocks that
#: become durable meanwhile are still bounded by ``max_inflight_bytes``.
COMMIT_INTERVAL = 0.5
#: Bytes written between records after which a local Zarr run's committer makes them durable
#: without waiting for the next record (`HostWriter.sync_bytes`): close then waits for one block's
#: write-back instead of half a second's, and with a 16 MiB block synced as it is written the
#: streaming benchmark ran 4-8% faster with all cores computing in two of three paired runs (a tie
#: in the third; docs/benchmarks.md).
SYNC_BYTES = 8 * 2**20


@dataclasses.dataclass
class _Pending:
    shard: int  # which shard of a sharded sink wrote it (0 otherwise)
    start: int  # the block's first frame
    end: int  # the frame count once this block is durable
    waits: list[Any]  # futures: .result() returns once that part of the block is durable
    nbytes: int
    marker: Any  # store-specific state reached once the block is durable (e.g. atoms written)
    durable: bool = False  # set by the committer once it is (and counts towards the count)


class HostWriter(abc.ABC):
    """The pipeline shared by every streaming sink's host writer.

    Subclasses implement `_issue` (start writing a block), `_record_committed` (make the committed
    count durable) and `_finalize` (the last metadata at close).
    """

    def __init__(
        self,
        layout: Layout,
        *,
        description: str,
        committed: int,
        max_inflight_bytes: int,
        progress: Any = None,
        shards: tuple[int, ...] = (0,),
    ) -> None:
        self.layout = layout
        self.description = description
        self.committed = committed
        self.max_inflight_bytes = max_inflight_bytes
        self.progress = progress
        self.error: BaseException | None = None
        self.failed_at: int | None = None  # the first frame that could not be stored
        self.blocks_written = 0
        self._step_index = len(layout.fields)  # where the step column is in layout.arrays
        # Frames durable per shard this writer writes; the committed count is their minimum.
        self._durable = {shard: committed for shard in shards}
        # The offset each shard's next block must start at: a block from any other offset comes
        # from an older value of the sink (reused after later values were flushed) and is refused.
        self._next = {shard: committed for shard in shards}
        self.refused: list[str] = []  # what stale flushes were refused, for the error at close
        self._lock = threading.Lock()  # submit may run on several devices' callback threads
        self._pending: collections.deque[_Pending] = collections.deque()
        self._inflight = 0
        self._stopping = False
        self._waiting = 0  # callers of `wait_committed`: the committer records without delay
        self._uncounted: list[_Pending] = []  # durable blocks the committed count does not cover
        self._unsynced = 0  # bytes of them not made durable by `_sync` (committer thread only)
        self._recording = False  # the committed count is being written to the store
        self._cond = threading.Condition()
        # Buffer sets: a slot per set between a flush and its write; written sets kept for reuse.
        self._slots = threading.BoundedSemaphore(POOL_BLOCKS * len(shards))
        self._spares: collections.deque[dict[str, np.ndarray]] = collections.deque(
            maxlen=POOL_BLOCKS * len(shards)
        )
        self.buffer_sets = 0  # buffer sets allocated (the rest of the blocks reused one)
        self._blocks: queue.SimpleQueue[tuple[int, int, int, dict[str, np.ndarray]] | None] = (
            queue.SimpleQueue()
        )
        self.id = REGISTRY.add(self)
        REGISTRY.attach(self.id, DESCRIPTION, description)  # kept to name the store once ended
        self._writer_thread = threading.Thread(
            target=self._write_loop, name=f"jaxsinks-write-{self.id}", daemon=True
        )
        self._commit_thread = threading.Thread(
            target=self._commit_loop, name=f"jaxsinks-commit-{self.id}", daemon=True
        )
        self._writer_thread.start()
        self._commit_thread.start()

    # ------------------------------------------------------------------------- store hooks

    @abc.abstractmethod
    def _issue(
        self, offset: int, n: int, values: dict[str, np.ndarray], shard: int
    ) -> tuple[list[Any], int, Any]:
        """Start writing frames ``offset:offset + n`` (the first `n` rows of `values`) of `shard`.

        Never change `values`. Whatever keeps a reference to its arrays (or to views of them) may
        read them for as long as it holds it: the writer reuses them only when nothing does.
        Return with ``(waits, nbytes, marker)``: futures whose
        ``result()`` returns once their part is durable (``done()``, if they have it, says so
        without waiting), the bytes in flight, and a marker passed to `_on_durable`. Raise to fail
        the block.
        """

    @abc.abstractmethod
    def _record_committed(self) -> None:
        """Durably record `committed` (called by the committer thread, after the data)."""

    def _sync(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Make the blocks written so far durable, without recording the count (`sync_bytes`)."""

    def _on_durable(self, marker: Any) -> None:  # noqa: B027 - optional hook, no-op by default
        """A block with this marker is durable (before `_record_committed`)."""

    def _finalize(self, status: str) -> None:
        """The last metadata, with status ``"closed"`` or ``"failed"``."""
        self._record_committed()

    #: Set when the store no longer holds what this writer committed (deleted or replaced).
    lost: bool = False
    #: The least seconds between two records of the committed count (0: record each block).
    commit_interval: float = 0.0
    #: Bytes written between two records after which `_sync` runs (None: never between records).
    sync_bytes: int | None = None

    # ------------------------------------------------------------------------------ stages

    def submit(self, offset: int, n: int, values: Sequence[np.ndarray], shard: int = 0) -> None:
        """Queue frames ``offset:offset + n`` of `shard`: the first `n` rows of each of `values`,
        one array per ``layout.arrays`` entry. Copies them, so `values` may be reused once this
        returns. Thread-safe: each device of a sharded sink flushes from its own thread.
        """
        if n <= 0 or self._skips(offset):
            return
        buffers = self._buffer()
        try:
            for buf, value in zip(buffers.values(), values):
                np.copyto(buf[:n], value[:n], casting="no")
        except BaseException:  # e.g. a Ctrl-C: the block is not queued, its set is free again
            self._give_back(buffers)
            raise
        with self._lock:
            self.blocks_written += 1
        if self.progress is not None:
            self.progress.update_to(int(values[self._step_index][:n].max()) + 1)
        self._blocks.put((shard, offset, n, buffers))

    def accept(self, shard: int, offset: int, n: int) -> bool:
        """Claim frames ``offset:offset + n`` of `shard` if they are the next ones; else refuse
        them (a stale sink value) and remember why, for `stale_error`. Thread-safe.
        """
        with self._lock:
            expected = self._next[shard]
            if offset == expected:
                self._next[shard] = offset + n
                return True
            self.refused.append(
                f"frames {offset}..{offset + n} (the run expected frame {expected} next)"
            )
            first = len(self.refused) == 1
        if first:  # once per writer: a loop run on an old value would refuse every block
            log.error(
                "jaxsinks: a flush to %s from an older value of its sink was refused: it starts "
                "at frame %d but the run expected frame %d next (raised at close; later refused "
                "flushes are counted there, not logged)",
                self.description,
                offset,
                expected,
            )
        return False

    def unaccept(self, shard: int, offset: int, n: int) -> None:
        """Undo `accept` of frames ``offset:offset + n`` that could not be queued: the sink value
        that flushed them did not survive, and the previous one (whose staged frames start at
        `offset`) may still be closed."""
        with self._lock:
            if self._next[shard] == offset + n:
                self._next[shard] = offset

    def expects(self, shard: int, offset: int) -> bool:
        """Whether a block of `shard` starting at `offset` would be accepted."""
        with self._lock:
            return self._next[shard] == offset

    def next_offset(self, shard: int = 0) -> int:
        with self._lock:
            return self._next[shard]

    def rewind(self, offset: int = 0) -> None:
        """Expect every shard's next block at `offset` again (a buffer that forgot its frames)."""
        with self._lock:
            self._next = dict.fromkeys(self._next, offset)

    def stale_error(self) -> StaleSinkError | None:
        """The error for the stale flushes refused so far, or None."""
        if not self.refused:
            return None
        shown = "; ".join(self.refused[:3]) + (
            f"; and {len(self.refused) - 3} more" if len(self.refused) > 3 else ""
        )
        return StaleSinkError(
            f"{len(self.refused)} flush(es) to {self.description} came from an older value of its "
            f"sink and were refused: {shown}. Nothing they held was stored, and no stored frame "
            "was changed. A sink is a value: pass the sink returned by each call to the next call "
            "(thread the returned sink), and close the last one."
        )

    def _skips(self, offset: int) -> bool:
        """Whether a block at `offset` comes after a failure (so it would leave a gap)."""
        return self.failed_at is not None and offset >= self.failed_at

    def _buffer(self) -> dict[str, np.ndarray]:
        """A host buffer set for one block: a written set that nothing references any more, else a
        new one. Waits while `POOL_BLOCKS` sets per shard are between a flush and their write."""
        self._slots.acquire()
        try:
            with self._lock:
                for i, buffers in enumerate(self._spares):
                    if unreferenced(buffers):
                        del self._spares[i]
                        return buffers
                self.buffer_sets += 1
            buffers = {}
            for a in self.layout.arrays:
                buf = np.empty((self.layout.block, *a.shape), a.dtype)
                buf.fill(0)  # touch every page now, not during a later flush
                buffers[a.name] = buf
            return buffers
        except BaseException:
            self._slots.release()
            raise

    def _give_back(self, buffers: dict[str, np.ndarray]) -> None:
        """Keep a set to reuse once nothing holds it (the oldest kept is dropped); free its slot."""
        with self._lock:
            self._spares.append(buffers)
        self._slots.release()

    def _write_loop(self) -> None:
        while (item := self._blocks.get()) is not None:
            shard, offset, n, buffers = item
            try:
                self._write(shard, offset, n, buffers)
            except Exception as err:  # noqa: BLE001 - a defect here must fail the run, not end it
                self._crashed("writer", err, at=offset)
            finally:
                self._give_back(buffers)

    def _crashed(self, thread: str, err: Exception, *, at: int) -> None:
        """A defect in a writer thread: the run fails at frame `at`, never closes as complete."""
        log.exception("jaxsinks: the %s thread of %s failed", thread, self.description)
        self.fail(
            WriteError(
                f"jaxsinks' {thread} thread for {self.description} failed unexpectedly "
                f"({_message(err)}); this is a bug in jaxsinks, please report it.",
                self.committed,
            ),
            at=at,
        )

    def _write(self, shard: int, offset: int, n: int, values: dict[str, np.ndarray]) -> None:
        if self._skips(offset):
            return
        try:
            waits, nbytes, marker = self._issue(offset, n, values, shard)
        except Exception as err:  # noqa: BLE001 - kept and raised by finish()
            self.fail(
                WriteError(
                    f"Writing frames {offset}..{offset + n} to {self.description} "
                    f"failed: {_message(err)}",
                    self.committed,
                ),
                at=offset,
            )
            return
        with self._cond:
            self._pending.append(_Pending(shard, offset, offset + n, waits, nbytes, marker))
            self._inflight += nbytes
            self._cond.notify_all()
            while (  # until the blocks in flight are counted (durable ones too: see `_due`)
                self._inflight > self.max_inflight_bytes
                and (self._pending or self._uncounted)
                and self.failed_at is None
            ):
                self._cond.wait()

    def _commit_loop(self) -> None:
        try:
            self._commit_blocks()
        except Exception as err:  # noqa: BLE001 - a defect here must fail the run, not end it
            self._crashed("committer", err, at=self.committed)

    def _commit_blocks(self) -> None:
        recorded_at = -float("inf")
        while True:
            with self._cond:
                while not self._pending and not self._due(recorded_at):
                    if self._stopping and not self._uncounted:
                        return
                    self._cond.wait(self._until_due(recorded_at))
                # The oldest block, and the blocks behind it that are already durable.
                batch = list(itertools.islice(self._pending, 1))
                for item in itertools.islice(self._pending, 1, None):
                    if not all(_done(w) for w in item.waits):
                        break
                    batch.append(item)
            for item in batch:
                self._await_durable(item)
            with self._cond:
                for _ in batch:  # durable (or failed): counted once the count is recorded
                    self._uncounted.append(self._pending.popleft())
                due = self._due(recorded_at)
            self._unsynced += sum(item.nbytes for item in batch)
            if not due and self.sync_bytes is not None and self._unsynced >= self.sync_bytes:
                self._sync_uncounted()
            if due:
                self._unsynced = 0  # the record makes them durable
                recorded_at = time.monotonic()
                for item in self._uncounted:
                    if item.durable:
                        self._on_durable(item.marker)
                self._record()
                with self._cond:
                    self._inflight -= sum(item.nbytes for item in self._uncounted)
                    self._uncounted.clear()
                    self._cond.notify_all()

    def _await_durable(self, item: _Pending) -> None:
        """Wait until `item` is durable (a failure is kept: `fail`), then mark it durable."""
        if self._skips(item.start):
            return  # past a failure it can never commit: do not wait for it
        try:
            for wait in item.waits:
                wait.result()
        except Exception as err:  # noqa: BLE001 - kept and raised by finish()
            self.fail(
                WriteError(
                    f"Committing frames {item.start}..{item.end} to "
                    f"{self.description} failed: {_message(err)}",
                    self.committed,
                ),
                at=item.start,
            )
        if self.failed_at is None or item.end <= self.failed_at:
            self._durable[item.shard] = max(self._durable[item.shard], item.end)
            item.durable = True

    def _sync_uncounted(self) -> None:
        """Make the uncounted blocks durable ahead of their record (committer thread).

        A failure fails the run at the first of them: the count stays where it was recorded last.
        (A failed write-back is reported once: a later sync would not say it again.)
        """
        self._unsynced = 0
        with self._cond:
            first = min((item.start for item in self._uncounted), default=self.committed)
        try:
            self._sync()
        except Exception as err:  # noqa: BLE001 - kept and raised by finish()
            self.fail(
                WriteError(
                    f"Making frames {first}.. of {self.description} durable failed: "
                    f"{_message(err)}",
                    self.committed,
                ),
                at=first,
            )

    def _record(self) -> None:
        """Record the committed count: the least durable frame count over the shards, and never
        past a failure."""
        durable = min(self._durable.values())
        if self.failed_at is not None:
            durable = min(durable, self.failed_at)
        if durable <= self.committed:
            return
        with self._cond:  # `wait_committed` waits until the store says it too
            self._recording = True
            previous, self.committed = self.committed, durable
        try:
            self._record_committed()
        except Exception as err:  # noqa: BLE001 - kept and raised by finish()
            self.committed = previous  # the store still says `previous`: never claim more
            self.fail(
                WriteError(
                    f"Recording the committed count of {self.description} failed: {_message(err)}",
                    self.committed,
                ),
                at=previous,  # what it counts may not be durable: never counted later
            )
        finally:
            with self._cond:
                self._recording = False
                self._cond.notify_all()

    def _due(self, recorded_at: float) -> bool:
        """Whether the durable blocks not yet counted must be counted now (holding `_cond`): once
        `commit_interval` has passed since the last record, or at once when the writer is
        stopping or failed, waits on ``max_inflight_bytes``, or someone waits for the count."""
        return bool(self._uncounted) and (
            self._stopping
            or self._waiting > 0
            or self.failed_at is not None
            or self._inflight > self.max_inflight_bytes
            or time.monotonic() >= recorded_at + self.commit_interval
        )

    def _until_due(self, recorded_at: float) -> float | None:
        """Seconds until uncounted blocks are due by time (None: nothing to count)."""
        if not self._uncounted:
            return None
        return max(0.0, recorded_at + self.commit_interval - time.monotonic())

    def wait_committed(self, count: int, timeout: float | None = None) -> bool:
        """Wait until `count` frames are committed (the committer records them without its
        `commit_interval` delay); False if a failure or `timeout` came first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiting += 1
            self._cond.notify_all()
            try:
                while (self.committed < count or self._recording) and self.failed_at is None:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    self._cond.wait(left)
            finally:
                self._waiting -= 1
            return self.committed >= count

    def fail(self, err: BaseException, *, at: int) -> None:
        """Keep the first failure, at frame `at`; later blocks are skipped, earlier ones commit."""
        with self._cond:
            if self.error is None:
                self.error = err
                log.error("jaxsinks: %s (raised at close)", err)
            self.failed_at = at if self.failed_at is None else min(self.failed_at, at)
            self._cond.notify_all()

    @property
    def flags(self) -> int:
        """The flags a flush reports back to the device."""
        flags = 0
        if self.error is not None:
            flags |= Flag.WRITE_FAILED
            if isinstance(self.error, OutOfRangeError):
                flags |= Flag.OUT_OF_RANGE
        return flags

    # ------------------------------------------------------------------------------- ending

    def stop(self) -> None:
        """Wait for the queued and in-flight writes and stop both threads (no final metadata)."""
        self._blocks.put(None)
        self._writer_thread.join()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._commit_thread.join()
        if self.progress is not None:
            self.progress.close()

    def on_close(self, hook: Callable[[int, BaseException | None], None]) -> None:
        """Call ``hook(committed, error)`` once, when a sink's close has ended this writer: `error`
        is None, or the `JaxsinksError` that close raises (a campaign records its run's entry
        this way). A close refused because it came from an older sink value leaves it pending.
        """
        REGISTRY.attach(self.id, ON_CLOSE, hook)

    def closed_by_sink(self, error: BaseException | None) -> None:
        """A sink's close of this writer returned (`error` None) or raised `error`: run the
        `on_close` hook if the writer has ended."""
        if REGISTRY.get(self.id) is not None:
            return  # still live: the close came from an older value, the run stays open
        hook = REGISTRY.detach(self.id, ON_CLOSE)
        if hook is not None:
            hook(self.committed, error)

    def discard(self, why: str = "closed") -> None:
        """Stop the writer without final metadata (its run could not be created, it was replaced,
        or its loop raised); later flushes to it are refused. What it committed stays.
        """
        self.stop()
        REGISTRY.retire(self.id, why)
        self._release()

    def _release(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Let go of what the writer holds open (a file): after the final metadata (`finish`), or
        without it (`discard`). Called again after a release, it does nothing."""

    def finish(self) -> int:
        """Wait until every write is durable, record the final count, and raise any kept failure.

        Returns:
            The number of frames committed.
        Raises:
            WriteError: naming the store and the count of frames safely committed.
        """
        self.stop()
        REGISTRY.retire(self.id, "closed")
        try:
            self._finalize("closed" if self.error is None else "failed")
        except Exception as err:  # noqa: BLE001 - reported like any write failure
            if self.error is None:
                self.error = WriteError(
                    f"Closing {self.description} failed: {_message(err)}", self.committed
                )
        self._release()
        if self.error is not None and self.lost:
            raise WriteError(
                f"{self.error} {self.description} was deleted or replaced during the run: the "
                f"{self.committed} frames it had committed are no longer there, and nothing more "
                "was written.",
                0,
            ) from None
        if self.error is not None:
            kind = OutOfRangeError if isinstance(self.error, OutOfRangeError) else WriteError
            raise kind(
                f"{self.error} {self.committed} frames of {self.description} are committed and "
                "readable; later frames were not stored.",
                self.committed,
            ) from None
        return self.committed


def _done(wait: Any) -> bool:
    done = getattr(wait, "done", None)
    return bool(done()) if callable(done) else False


def unreferenced(buffers: dict[str, np.ndarray]) -> bool:
    """Whether nothing but `buffers` holds its arrays: no view of them, no write that references
    them (TensorStore holds a reference to the array it was given for as long as it may read it).
    Measured against a fresh dict's array, so it does not depend on how the interpreter counts."""
    probe = {"": np.empty(0)}
    base = max(sys.getrefcount(a) for a in probe.values())
    return all(sys.getrefcount(a) <= base for a in buffers.values())


def _message(err: BaseException) -> str:
    from .tsio import clean_message

    return clean_message(err)


#: Every host writer of this process (streaming sinks carry their writer's id).
REGISTRY: Registry[HostWriter] = Registry()
#: The key of a writer's `HostWriter.on_close` hook in the registry.
ON_CLOSE = "on close"
#: The registry key of the store a writer writes (`HostWriter.description`), kept after it ends.
DESCRIPTION = "description"
#: The registry key marking a writer whose ended run was flushed again (logged once).
ENDED_FLUSH = "flushed after its end"


@atexit.register
def _stop_unclosed_writers() -> None:
    """At interpreter exit, commit what is in flight for sinks that were never closed."""
    for writer in REGISTRY.live():
        writer.stop()
        log.warning(
            "jaxsinks: %s was not closed; %d frames are committed, and frames still staged on the "
            "device were not stored. Call jaxsinks.close(sinks) when recording ends.",
            writer.description,
            writer.committed,
        )


def host_flush(
    writer_id: Any, shard: Any, offset: Any, n: Any, bad: Any, *values: np.ndarray
) -> np.ndarray:
    """The flush callback's target: queue a block of `shard`; return ``[frames accepted, flags]``.

    `bad` holds one bool per field: whether it has values out of its storage dtype's range. Such a
    block is not written (nothing is stored as inf); the failure is raised at close.
    """
    writer = REGISTRY.get(int(writer_id))
    n, offset, shard = int(n), int(offset), int(shard)
    if writer is None:  # the sink was closed: this is an older value of it, reused
        if REGISTRY.attached(int(writer_id), ENDED_FLUSH) is None:  # logged once per run
            REGISTRY.attach(int(writer_id), ENDED_FLUSH, True)
            why = REGISTRY.ended(int(writer_id))
            log.error(
                "jaxsinks: a sink whose run %s was flushed again; its %d frames were not stored "
                "(close raises for it; its later flushes are not logged)",
                "was closed" if why in (None, "closed") else why,
                n,
            )
        return np.array([0, Flag.WRITE_FAILED | Flag.STALE], np.int32)
    if not writer.accept(shard, offset, n):
        return np.array([0, writer.flags | Flag.STALE], np.int32)
    bad_fields = [a for a, b in zip(writer.layout.fields, np.asarray(bad)) if b]
    if bad_fields and not writer._skips(offset):
        names = ", ".join(f"'{a.name}' ({a.dtype.name})" for a in bad_fields)
        writer.fail(
            OutOfRangeError(
                f"Frames {offset} to {offset + n - 1} hold values that the storage dtype of "
                f"{names} cannot hold (beyond its range, NaN or inf for an integer dtype, or an "
                "integer that a float dtype does not hold exactly: float16 holds every integer up "
                "to 2048, bfloat16 up to 256); they were not stored (nothing is stored as inf, "
                "rounded to another integer or wrapped around). Store those fields "
                "with a dtype that holds them (field_config={name: FieldConfig(dtype=...)}, e.g. "
                "the frame's own dtype) or rescale them.",
                writer.committed,
            ),
            at=offset,
        )
    try:
        writer.submit(offset, n, values, shard)
    except BaseException:  # e.g. Ctrl-C while waiting for a buffer: the block was not queued
        writer.unaccept(shard, offset, n)
        raise
    return np.array([n, writer.flags], np.int32)
