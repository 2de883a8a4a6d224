"""The one registry of this process's host writers, by id.

A sink carries its writer's id (an int leaf), never the writer itself: the host side looks the
writer up here. Ids are monotonic and never reused, so an id in an old sink value can always be
told apart from a newer writer's. A writer is *live* from `add` until `retire`; after that only
how it ended is kept (for the errors about old sink values). Things that belong to a writer but
outlive it (a HostBuffer's host memory, a campaign run's close hook) are *attached* to its id
under a key. One lock guards it all.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

W = TypeVar("W")


class Registry(Generic[W]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._live: dict[int, W] = {}
        self._ended: dict[int, str] = {}  # id -> how it ended ("closed", or why it was retired)
        self._attached: dict[tuple[int, str], Any] = {}

    def add(self, writer: W) -> int:
        """Register `writer` as live; returns its new id."""
        with self._lock:
            writer_id = next(self._ids)
            self._live[writer_id] = writer
            return writer_id

    def get(self, writer_id: int) -> W | None:
        """The live writer with this id, or None if it ended or never existed."""
        with self._lock:
            return self._live.get(writer_id)

    def find(self, predicate: Callable[[W], bool]) -> W | None:
        """A live writer for which `predicate` holds, or None."""
        with self._lock:
            return next((w for w in self._live.values() if predicate(w)), None)

    def live(self) -> list[W]:
        with self._lock:
            return list(self._live.values())

    def retire(self, writer_id: int, why: str) -> None:
        """The writer with this id is no longer live; `why` is how it ended."""
        with self._lock:
            self._live.pop(writer_id, None)
            self._ended[writer_id] = why

    def ended(self, writer_id: int) -> str | None:
        """How the writer with this id ended ("closed", or why it was retired), or None."""
        with self._lock:
            return self._ended.get(writer_id)

    def attach(self, writer_id: int, key: str, value: Any) -> None:
        with self._lock:
            self._attached[writer_id, key] = value

    def attached(self, writer_id: int, key: str) -> Any:
        """What is attached to this id under `key`, or None."""
        with self._lock:
            return self._attached.get((writer_id, key))

    def detach(self, writer_id: int, key: str) -> Any:
        """Remove and return what is attached to this id under `key` (None if nothing)."""
        with self._lock:
            return self._attached.pop((writer_id, key), None)

    def detach_where(self, key: str, predicate: Callable[[Any], bool]) -> list[Any]:
        """Remove and return everything attached under `key` for which `predicate` holds."""
        with self._lock:
            found = [k for k, v in self._attached.items() if k[1] == key and predicate(v)]
            return [self._attached.pop(k) for k in found]
