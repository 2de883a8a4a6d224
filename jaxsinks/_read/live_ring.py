"""Reading a ring run while its writer still records: `LiveRing` checks, after each read, that
the ring slots read still held the frames the run claims.

A ring (``overflow="ring"``) keeps its newest ``capacity`` frames, frame ``f`` in slot
``f % capacity``. Before a block overwrites the slots of older frames, the writer durably records
the first frame still valid (``valid_from`` in the run's metadata). So a read of some slots
returned the frames the run was opened with if, once the read is done, ``valid_from`` is still at
most the first of them: the writer had not yet retired any of them, let alone overwritten it.
Every ring run is checked, whatever its status when opened: a closed or interrupted ring can be
resumed (``mode="a"``) while it is read, and the resumed writer overwrites its oldest slots. Each
checked read costs one read of the run's metadata; runs that are not rings pay nothing.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .._core.errors import StoreError
from .._io import tsio
from .._io.layout import ATTRS_KEY
from .._io.location import Location
from .._io.runs import ROOT


def live_ring(location: Location, meta: dict[str, Any]) -> LiveRing | None:
    """The check of reads of the run `meta` describes if it is a ring (which a writer, live or
    resumed later, may overwrite), else None."""
    if meta.get("overflow") == "ring" and meta.get("capacity"):
        return LiveRing(location, meta)
    return None


class LiveRing:
    """The frames of a live ring run as it was opened, and the check that a read got them."""

    def __init__(self, location: Location, meta: dict[str, Any]) -> None:
        self.location = location
        self.committed = int(meta.get("committed", 0))
        self.capacity = int(meta["capacity"])
        self.run_id = meta.get("run_id")

    def frames(self, slots: np.ndarray) -> np.ndarray:
        """The frame (counted from the run's first recorded frame) that each ring slot of
        `slots` held when the run was opened: the one of the newest `capacity` frames that
        goes there."""
        first = self.committed - self.capacity
        return first + (np.asarray(slots, np.int64) - first) % self.capacity

    def valid_from(self) -> int:
        """The first frame the ring holds now, read from the run's metadata.

        Raises:
            StoreError: if the run was deleted, or replaced by another run, since it was opened.
        """
        raw = tsio.read_bytes(self.location.kvstore, ROOT)
        try:
            meta = json.loads(raw).get("attributes", {}).get(ATTRS_KEY) if raw else None
        except (ValueError, AttributeError):
            meta = None
        if (
            not isinstance(meta, dict)
            or meta.get("overflow") != "ring"
            or meta.get("run_id") != self.run_id
            or meta.get("capacity") != self.capacity
            or int(meta.get("committed", 0)) < self.committed
        ):
            raise StoreError(
                f"The ring run at {self.location} was deleted or replaced while it was read, so "
                "the frames just read may belong to another run. Open it again with `js.open`."
            )
        return int(meta.get("valid_from", 0))

    def check(self, slots: np.ndarray) -> int:
        """Call after reading the ring slots `slots`: raise unless none of their frames was
        retired by the writer before the read was done. Returns the first frame still valid,
        as read (every frame from there on was read intact).

        Raises:
            StoreError: naming the frames that the writer overwrote (or was about to overwrite)
                since the run was opened, and what to do instead.
        """
        now = self.valid_from()
        frames = self.frames(slots)
        if frames.size and int(frames.min()) < now:
            first, last = int(frames.min()), int(frames[frames < now].max())
            which = f"frame {first}" if first == last else f"frames {first}..{last}"
            raise StoreError(
                f"The ring run at {self.location} is still being written, and its writer "
                f"overwrote {which} (counted from the run's first recorded frame) since the run "
                f"was opened, before or while it was read: the ring keeps only the newest "
                f"{self.capacity} frames, now from frame {now} on. Nothing read from it is "
                "returned. Open the run again with `js.open` for its newest frames, or read it "
                "after it is closed."
            )
        return now
