"""Lazy views of a run's stored arrays: `FieldView` reads a fixed-shape field like numpy,
`RaggedView` a CSR-stored field frame by frame; both read only what is indexed."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .._core.errors import ReadIndexError
from .._io import tsio
from .index import frame_rows, plan_index, read_box, select_frames, show


class StoredArray:
    """One opened zarr array of a run."""

    def __init__(self, name: str, array: Any, spec: dict[str, Any]) -> None:
        self.name = name
        self.array = array
        self.spec = spec
        labels = array.domain.labels
        self.dims = tuple(label or f"{name}_{i}" for i, label in enumerate(labels))

    def read_physical(self, index: Any) -> np.ndarray:
        """The stored values at `index` (physical frame or atom rows first), as numpy."""
        return np.asarray(tsio.read_rows(self.array, index, self.spec))


class FieldView:
    """A lazy view of one field over a run's frames: index it to read (``view[10:20, 0]``).

    `check`, if given, is called with the physical frames of every read once it is done, and
    raises if they no longer held the frames the view claims (a live ring run: `LiveRing`).
    """

    def __init__(
        self,
        stored: StoredArray,
        frames: np.ndarray,
        check: Callable[[np.ndarray], Any] | None = None,
    ) -> None:
        self._stored = stored
        self._frames = frames
        self._check = check

    @property
    def name(self) -> str:
        """The field's stored name: its name, or for a field named like a column (``time``)
        the name it is stored under (``time_``)."""
        return self._stored.name

    @property
    def shape(self) -> tuple[int, ...]:
        """``(frames, *frame_shape)`` over the selected frames."""
        return (len(self._frames), *self._stored.array.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        """The stored dtype."""
        return np.dtype(self._stored.array.dtype.numpy_dtype)

    @property
    def dims(self) -> tuple[str, ...]:
        """The axis names (``frame`` first), as stored in the zarr ``dimension_names``."""
        return self._stored.dims

    @property
    def ndim(self) -> int:
        """The number of axes, ``len(view.shape)``."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """The number of values over the selected frames, as numpy's ``size``."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """The bytes that reading the whole view (``view[...]``) returns."""
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return len(self._frames)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if copy is False:  # numpy 2's protocol: say so rather than copy silently
            raise ValueError(
                f"Field '{self.name}' is read from the store: it cannot become an array without a "
                "copy. Use np.asarray(view) (or view[...]) without copy=False."
            )
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __bool__(self) -> bool:
        raise ValueError(
            f"The truth value of field '{self.name}' ({len(self)} frames) is ambiguous, as a numpy "
            "array's is: use len(view) for its frames, or read it (view[:]) and use .any() or "
            ".all()."
        )

    def __getitem__(self, index: Any) -> np.ndarray:
        """Read ``field[index]`` exactly as numpy indexes ``np.asarray(field)[index]`` (ints,
        negative ints, slices with any step, ``...`` and ``None`` anywhere, integer arrays and
        boolean masks), reading only the box of stored values the index touches.

        Raises:
            ReadIndexError: (an IndexError) for an index out of range or one numpy refuses, and
                for a 0-d boolean index, which is not supported.
            StoreError: if the run is a ring still being written whose writer has overwritten
                some of the frames read since the run was opened.
        """
        shape = self.shape
        plan, rel = plan_index(index, shape, self.name)
        rows, part = frame_rows(plan[0][1], self._frames)
        if plan[0][0] is not None:
            rel[plan[0][0]] = part
        boxes, extents = [], [len(rows)]
        for axis in range(1, len(shape)):
            where, kind = plan[axis]
            box, rel_part = read_box(kind, shape[axis])
            boxes.append(box)
            extents.append(box.stop - box.start)
            if where is not None:
                rel[where] = rel_part
        if 0 in extents:
            block = np.zeros(extents, self.dtype)
        else:
            block = self._read(rows, tuple(boxes))
            if self._check is not None:
                self._check(rows)
        try:
            return block[tuple(rel)]
        except (IndexError, ValueError, TypeError) as err:  # not expected: the plan checked it
            raise ReadIndexError(
                f"Field '{self.name}' of shape {shape} cannot be indexed with {show(index)}: {err}."
            ) from None

    def _read(self, rows: np.ndarray, boxes: tuple[slice, ...]) -> np.ndarray:
        """Stored `rows` (physical frames, in this order) of the box `boxes` of the other axes."""
        unique, inverse = np.unique(rows, return_inverse=True)
        if unique.size == unique[-1] - unique[0] + 1:  # contiguous: one slice
            block = self._stored.read_physical((slice(int(unique[0]), int(unique[-1]) + 1), *boxes))
        else:
            block = self._stored.read_physical((unique, *boxes))
        if unique.size == rows.size and np.array_equal(unique, rows):
            return block
        return block[inverse.reshape(-1)]

    def __repr__(self) -> str:
        return f"FieldView({self.name!r}, shape={self.shape}, dtype={self.dtype})"


class RaggedView:
    """A lazy view of a ragged field: each frame's systems at their true number of atoms.

    ``view[i]`` is, for a per-system run, one array of shape ``(atoms, ...)``; for a whole-frame
    run, a list with one such array per system. ``view[a:b]`` is a list of those.
    """

    def __init__(
        self, stored: StoredArray, frames: np.ndarray, pointers: tuple[np.ndarray, np.ndarray]
    ) -> None:
        self._stored = stored
        self._frames = frames
        self._counts, self._ptr = pointers

    @property
    def name(self) -> str:
        """The field's stored name: its name, or for a field named like a column (``time``)
        the name it is stored under (``time_``)."""
        return self._stored.name

    @property
    def counts(self) -> np.ndarray:
        """The atom count of every system of every selected frame (the count field)."""
        return self._counts[self._frames]

    def atoms_per_frame(self) -> np.ndarray:
        """The number of stored atoms of each selected frame (summed over its systems)."""
        return self._ptr[self._frames + 1] - self._ptr[self._frames]

    def __len__(self) -> int:
        return len(self._frames)

    def _read_frame(self, physical: int) -> Any:
        start, stop = int(self._ptr[physical]), int(self._ptr[physical + 1])
        atoms = self._stored.read_physical(slice(start, stop))
        counts = self._counts[physical]
        if np.ndim(counts) == 0:
            return atoms
        return np.split(atoms, np.cumsum(counts)[:-1])

    def __getitem__(self, index: Any) -> Any:
        physical = self._frames[
            select_frames(index, len(self), f"ragged field '{self.name}' (by frame only)")
        ]
        if np.ndim(physical) == 0:
            return self._read_frame(int(physical))
        if np.ndim(physical) != 1:
            raise ReadIndexError(
                f"Ragged field '{self.name}' is indexed by frame with an int, a slice or a 1-D "
                f"list of frames (its frames are lists, not one array); got {show(index)}, which "
                f"selects frames of shape {np.shape(physical)}. Index with a 1-D array, e.g. "
                "`view[np.ravel(index)]`."
            )
        return [self._read_frame(int(p)) for p in physical]

    def concatenated(self) -> np.ndarray:
        """The selected frames' atoms, concatenated (what is stored, for these frames)."""
        parts = [
            self._stored.read_physical(slice(int(self._ptr[p]), int(self._ptr[p + 1])))
            for p in self._frames
        ]
        if parts:
            return np.concatenate(parts)
        return np.zeros((0, *self._stored.array.shape[1:]), self._stored.array.dtype.numpy_dtype)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(
            f"Field '{self.name}' is ragged (systems of different sizes): index it (view[i]) to "
            "get each system's atoms, or use view.concatenated()."
        )

    def __repr__(self) -> str:
        return f"RaggedView({self.name!r}, frames={len(self)})"
