"""A HostBuffer's host memory: preallocated arrays of `capacity` frames, filled by the writer
pipeline a block at a time, and found again by the writer id a sink carries.

The arrays live in this process until `release` (or the process ends). `HostMemory.renew` hands the
same arrays to a new pipeline under a new id (`HostBuffer.zero`); the old id is then marked, so
that an older sink value naming it gets a clear error from `lookup` rather than a wait for frames
that will never come.
"""

from __future__ import annotations

import threading

import numpy as np

from .._core.errors import StaleSinkError, StoreError
from . import writer as _writer
from .layout import Layout
from .progress import Progress

#: Under these keys a writer id holds its host memory (kept after close until released) and,
#: once `HostMemory.renew` handed the memory to a new id, a mark (`jaxsinks._io.registry`).
_KEY = "host memory"
_ZEROED = "zeroed"

#: How often a wait for frames checks that the pipeline that should deliver them is still running.
_POLL_S = 0.05
#: Why a memory's old id was retired by `HostMemory.renew` (shown by errors about older values).
ZEROED_WHY = "was emptied by HostBuffer.zero() (or drain()), which forgot its frames"


class HostMemory(_writer.HostWriter):
    """Preallocated host arrays of `capacity` frames, filled a block at a time by the pipeline.

    Frame ``i`` of the run is at row ``i % capacity`` (for ``"error"`` and ``"drop"`` buffers the
    device never sends more than `capacity` frames, so that is row ``i``).
    """

    def __init__(
        self,
        layout: Layout,
        *,
        capacity: int,
        progress: Progress | None,
        arrays: list[np.ndarray] | None = None,
    ) -> None:
        self.capacity = capacity
        self.arrays = (
            arrays
            if arrays is not None
            else [np.empty((capacity, *a.shape), a.dtype) for a in layout.arrays]
        )
        self._stored = threading.Condition()
        super().__init__(
            layout,
            description=f"host memory ({capacity} frames)",
            committed=0,
            max_inflight_bytes=_writer.DEFAULT_MAX_INFLIGHT_BYTES,
            progress=progress,
        )
        _writer.REGISTRY.attach(self.id, _KEY, self)

    def _issue(self, offset, n, values, shard):
        rows = (offset + np.arange(n)) % self.capacity
        for array, value in zip(self.arrays, values.values()):
            array[rows] = value[:n]
        return [], sum(v[:n].nbytes for v in values.values()), None

    def _record_committed(self) -> None:
        with self._stored:
            self._stored.notify_all()

    def wait_for(self, frames: int) -> None:
        """Block until the first `frames` frames sent by the device are in the host arrays.

        Returns early if a write failed (`error` says which). Never waits for frames that cannot
        come: once the pipeline has stopped (the buffer was closed or released), frames it has
        not stored are a `StoreError`.
        """
        with self._stored:
            while self.committed < frames and self.failed_at is None:
                if not self._commit_thread.is_alive():
                    break  # stopped: `committed` is final
                self._stored.wait(timeout=_POLL_S)
            committed, failed = self.committed, self.failed_at is not None
        if committed < frames and not failed:
            raise StoreError(
                f"This HostBuffer value counts {frames} frames sent to {self.description}, but its "
                f"pipeline has stopped with {committed} stored: frames {committed}..{frames} never "
                "reached host memory. Read the buffer the last call returned, before releasing it."
            )

    def next_frame(self) -> int:
        """The frames sent to this memory so far (accepted blocks, stored or on their way): the
        next block must start there. Rows hold frames up to it, wrapped at `capacity`."""
        return self.next_offset(0)

    def rows(self, start: int, stop: int) -> list[np.ndarray]:
        """Copies of frames ``start:stop`` (at most `capacity` of them), one array per layout
        array."""
        rows = np.arange(start, stop) % self.capacity
        return [array[rows] for array in self.arrays]

    def renew(self) -> HostMemory:
        """The same host arrays under a new id with an empty pipeline; this id is retired.

        The pipeline must be idle (every frame sent by the device stored). Flushes, reads and
        closes that still name this id are refused with a clear error.
        """
        progress, self.progress = self.progress, None  # the bar carries on with the new pipeline
        renewed = HostMemory(
            self.layout, capacity=self.capacity, progress=progress, arrays=self.arrays
        )
        renewed.refused = list(self.refused)  # stale flushes so far are still raised at close
        _writer.REGISTRY.attach(self.id, _ZEROED, True)  # first: `_memory` reads in reverse
        _writer.REGISTRY.detach(self.id, _KEY)
        if _writer.REGISTRY.get(self.id) is not None:
            self.discard(ZEROED_WHY)
        return renewed


def lookup(writer_id: int) -> HostMemory:
    """The host memory of the sink whose writer id is `writer_id`.

    Raises:
        StaleSinkError: the id was retired by `HostMemory.renew` (an older value of the buffer).
        StoreError: the memory was released.
    """
    memory = _writer.REGISTRY.attached(writer_id, _KEY)
    if _writer.REGISTRY.attached(writer_id, _ZEROED):  # after: `renew` marks, then detaches
        raise StaleSinkError(
            f"This HostBuffer value {ZEROED_WHY}. Read or drain a buffer before zeroing it, "
            "and carry on with the buffer zero() returned (a sink is a value: thread the "
            "returned one)."
        )
    if memory is None:
        raise StoreError(
            "This HostBuffer's host memory was released (HostBuffer.release); its frames are "
            "gone. Read, save or drain it before releasing it."
        )
    return memory


def release(writer_id: int) -> None:
    """Free the host memory of `writer_id`, stopping its pipeline if it still runs (nothing if it
    was released already)."""
    memory = _writer.REGISTRY.detach(writer_id, _KEY)
    if memory is not None and _writer.REGISTRY.get(writer_id) is not None:
        memory.finish()
