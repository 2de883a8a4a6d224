"""Reading a run stored as a long table (``table="long"``, see `jaxsinks._io.long_table`).

A long run stores each frame (or system row) of ``k`` scalar fields as ``k`` consecutive rows of
the arrays ``step``, ``time``, ``system``, ``name`` and ``value``. `LongFieldView` reads one field
back frame by frame, as a `FieldView` of a wide run does, so that ``run["energy"]``, `Run.steps`
and plots work alike; `tidy_dataset` gives the table itself, with the names decoded.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from .views import FieldView, StoredArray

#: The stored arrays of a long run, in the table's column order.
LONG_ARRAYS = ("step", "time", "system", "name", "value")


class LongFieldView(FieldView):
    """A lazy view of one field of a long run: its value in each selected frame, read from every
    ``rows``-th entry of the ``value`` array and returned in the field's recorded dtype."""

    def __init__(
        self,
        value: StoredArray,
        frames: np.ndarray,
        *,
        name: str,
        index: int,
        rows: int,
        dtype: np.dtype,
    ) -> None:
        super().__init__(value, frames)
        self._name, self._index, self._rows, self._dtype = name, index, rows, dtype

    @property
    def name(self) -> str:
        return self._name

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self._frames),)

    @property
    def dtype(self) -> np.dtype:
        """The field's dtype as recorded (the ``value`` column holds it exactly)."""
        return self._dtype

    @property
    def dims(self) -> tuple[str, ...]:
        return ("frame",)

    def _read(self, rows: np.ndarray, boxes: tuple[slice, ...]) -> np.ndarray:
        return frame_rows_of(self._stored, rows, self._rows, self._index).astype(self._dtype)

    def __repr__(self) -> str:
        return f"LongFieldView({self.name!r}, shape={self.shape}, dtype={self.dtype})"


def frame_rows_of(stored: StoredArray, frames: np.ndarray, rows: int, index: int) -> np.ndarray:
    """Entry `index` of each of `frames` (physical frames, in this order) of a long table's
    array `stored`, whose frames are `rows` rows each: one contiguous read when the frames are."""
    if frames.size == 0:
        return np.zeros((0,), np.dtype(stored.array.dtype.numpy_dtype))
    unique, inverse = np.unique(frames, return_inverse=True)
    if unique.size == unique[-1] - unique[0] + 1:
        block = stored.read_physical(slice(int(unique[0]) * rows, (int(unique[-1]) + 1) * rows))
        block = block[index::rows]
    else:
        block = stored.read_physical((unique * rows + index,))
    if unique.size == frames.size and np.array_equal(unique, frames):
        return block
    return block[inverse.reshape(-1)]


def field_view(run: Any, name: str) -> LongFieldView:
    """``run[name]`` of a long run."""
    table = run.meta["schema"]["table"]
    index = table["names"].index(name)
    dtype = run.meta["schema"]["fields"][index]["dtype"]
    return LongFieldView(
        run._array("value"),
        run._frames,
        name=name,
        index=index,
        rows=len(table["names"]),
        dtype=np.dtype(jnp.dtype(dtype)),  # jnp: bfloat16 too
    )


def tidy_dataset(run: Any) -> Any:
    """The selected frames of a long run as its table: an `xarray.Dataset` along ``row`` with
    ``value`` as the variable and ``step``, ``time``, ``system`` and ``name`` (the field names,
    decoded) as coordinates; ``.to_dataframe()`` makes it a pandas table of those columns."""
    import xarray as xr

    names = run.meta["schema"]["table"]["names"]
    k, frames = len(names), run._frames
    per_frame = frames[:, None] * k + np.arange(k)
    rows = per_frame.reshape(-1)
    columns = {}
    for array in LONG_ARRAYS:
        stored = run._array(array)
        if rows.size and np.array_equal(rows, np.arange(rows[0], rows[0] + rows.size)):
            columns[array] = stored.read_physical(slice(int(rows[0]), int(rows[-1]) + 1))
        else:
            parts = [frame_rows_of(stored, frames, k, j) for j in range(k)]
            columns[array] = np.stack(parts, axis=1).reshape(-1) if parts else np.zeros(0)
    coords = {c: ("row", columns[c]) for c in LONG_ARRAYS[:3]}
    coords["name"] = ("row", np.asarray(names, dtype=str)[columns["name"].astype(np.int64)])
    return xr.Dataset({"value": ("row", columns["value"])}, coords=coords, attrs=dict(run.attrs))
