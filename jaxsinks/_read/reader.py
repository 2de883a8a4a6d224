"""open: read a recorded run back, lazily, as numpy, or as xarray."""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .._core.errors import (
    ConfigError,
    FieldNotFoundError,
    ReadIndexError,
    StoreError,
    StoreNotFoundError,
)
from .._core.trajectory import Trajectory
from .._io import tsio
from .._io import zarr_writer as _zarr_writer
from .._io.layout import ATTRS_KEY, SCHEMA_VERSION
from .._io.location import Location, parse


def open(store: Any) -> Run:  # noqa: A001 - the public name mirrors zarr.open
    """Open the run at `store` (a path, URL or kvstore spec) for reading.

    The run holds exactly the committed frames: after a crash, the frames whose writes were still
    in flight are not part of it.

    Raises:
        StoreNotFoundError: if there is no run at `store`.
        StoreError: if `store` holds something else, or a run written by a newer jaxsinks.
    """
    location = parse(store)
    raw = tsio.read_bytes(location.kvstore, "zarr.json")
    if raw is None:
        raise StoreNotFoundError(f"There is no jaxsinks run at {location} (no zarr.json there).")
    try:
        attrs = json.loads(raw).get("attributes", {})
    except (ValueError, AttributeError):
        raise StoreError(f"{location}/zarr.json is not valid Zarr JSON metadata.") from None
    meta = attrs.get(ATTRS_KEY)
    if not isinstance(meta, dict):
        raise StoreError(
            f"{location} is a Zarr group but not a jaxsinks run (no '{ATTRS_KEY}' attributes)."
        )
    version = meta.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise StoreError(
            f"{location} was written with jaxsinks schema version {version}; this jaxsinks reads "
            f"versions up to {SCHEMA_VERSION}. Upgrade jaxsinks to read it."
        )
    if meta.get("status") == "creating":
        raise StoreNotFoundError(
            f"There is no jaxsinks run at {location} yet: its creation "
            + (
                "is under way."
                if _zarr_writer.holder(meta) is not None
                else "was interrupted (its process died); "
                "creating a run there (any mode) replaces the remains."
            )
        )
    if meta.get("status") == "open" and _zarr_writer.holder(meta) is None:
        meta = dict(meta, status="interrupted")
    user = {k: v for k, v in attrs.items() if k != ATTRS_KEY}
    return Run(location, meta, user, _physical_frames(meta))


def _physical_frames(meta: dict[str, Any]) -> np.ndarray:
    committed = int(meta.get("committed", 0))
    capacity = meta.get("capacity")
    if meta.get("overflow") == "ring" and capacity:
        first = max(int(meta.get("valid_from", 0)), committed - capacity)
        return np.arange(first, committed) % capacity
    return np.arange(committed)


class Run:
    """A recorded run (or a selection of its frames), read lazily through TensorStore.

    ``run["positions"]`` is a lazy `FieldView`; ``run[10:20]`` and `extract_time_range` are
    runs over a subset of frames. ``len(run)``, `steps`, `times` and `systems` describe the frames.
    """

    def __init__(
        self,
        location: Location,
        meta: dict[str, Any],
        attrs: dict[str, Any],
        frames: np.ndarray,
        cache: dict[str, Any] | None = None,
    ) -> None:
        self.location = location
        self.meta = meta
        self.attrs = attrs
        self._frames = frames
        self._cache = cache if cache is not None else {}

    # ---------------------------------------------------------------------------- description

    @property
    def fields(self) -> tuple[str, ...]:
        """The names of the recorded fields (pytree paths joined with ``/``)."""
        return tuple(f["name"] for f in self.meta["schema"]["fields"])

    @property
    def committed(self) -> int:
        """Frames committed to the run (all of it, not just this selection)."""
        return int(self.meta.get("committed", 0))

    @property
    def status(self) -> str:
        """How the run stands when it was opened.

        ``"closed"``: closed cleanly. ``"failed"``: closed after a write error. ``"open"``: its
        writer is still alive (still recording). ``"interrupted"``: its writer died or ended
        without recording its end (a crash, a kill, a write fault while closing). In every case
        the run holds exactly `committed` frames.
        """
        return str(self.meta.get("status"))

    @property
    def schedule(self) -> dict[str, Any]:
        """The JSON description of the schedule the run was recorded with."""
        return dict(self.meta.get("schedule", {}))

    @property
    def per_system(self) -> bool:
        """Whether each frame is one system's row (recorded by a per-system sink)."""
        return self.meta["schema"].get("per_system") is not None

    def __len__(self) -> int:
        return int(self._frames.shape[0])

    def __repr__(self) -> str:
        return (
            f"Run({self.location}, frames={len(self)}, fields={list(self.fields)}, "
            f"status={self.status!r})"
        )

    # --------------------------------------------------------------------------------- columns

    @property
    def steps(self) -> np.ndarray:
        """The step of each selected frame (int32)."""
        return self._column("step")

    @property
    def times(self) -> np.ndarray:
        """The simulation time of each selected frame (NaN where none was recorded)."""
        return self._column("time")

    @property
    def systems(self) -> np.ndarray | None:
        """The system index of each frame of a per-system run; None otherwise."""
        return self._column("system") if self.per_system else None

    def describe(self) -> dict[str, Any]:
        """What `jaxsinks info` shows: the run's status and, per field, its layout and sizes.

        Returns a JSON-able dict: ``store``, ``frames`` (of this selection), ``committed``,
        ``status``, ``schedule``, ``attrs``, ``logical_bytes``, ``stored_bytes`` and ``fields``: a
        list of dicts with ``name``, ``shape`` (one frame), ``dtype`` (stored), ``source_dtype``,
        ``chunks``, ``shards`` (None when unsharded), ``codecs`` (names), ``dims``,
        ``logical_bytes`` (frames x frame bytes at the stored dtype) and ``stored_bytes`` (the
        array's keys, i.e. compressed chunks plus metadata). Stored bytes are those of the
        whole run, including frames outside the selection.
        """
        schema = {f["name"]: f for f in self.meta["schema"]["fields"]}
        fields = []
        for name in self.fields:
            array = self._array(name)
            meta = array.array.spec().to_json()["metadata"]
            codecs = meta.get("codecs", [])
            grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
            chunks, shards = grid, None
            if codecs and codecs[0]["name"] == "sharding_indexed":
                shards, chunks = grid, codecs[0]["configuration"]["chunk_shape"]
                codecs = codecs[0]["configuration"]["codecs"]
            dtype = np.dtype(meta["data_type"])
            shape = tuple(array.array.shape[1:])
            entries = len(self)
            if self.ragged and name in self.ragged["fields"]:
                entries = int(self.meta.get("committed_atoms", 0))
            fields.append(
                {
                    "name": name,
                    "shape": list(shape),
                    "dtype": dtype.name,
                    "source_dtype": schema[name]["dtype"],
                    "chunks": list(chunks),
                    "shards": None if shards is None else list(shards),
                    "codecs": [c["name"] for c in codecs],
                    "dims": list(array.dims),
                    "logical_bytes": entries * int(np.prod(shape, dtype=np.int64)) * dtype.itemsize,
                    "stored_bytes": tsio.stored_bytes(self.location.child(name)),
                }
            )
        return {
            "store": str(self.location),
            "frames": len(self),
            "committed": self.committed,
            "status": self.status,
            "schedule": self.schedule,
            "attrs": dict(self.attrs),
            "logical_bytes": sum(f["logical_bytes"] for f in fields),
            "stored_bytes": tsio.stored_bytes(self.location.kvstore),
            "fields": fields,
        }

    def _pointers(self) -> tuple[np.ndarray, np.ndarray]:
        """For ragged runs: every stored frame's counts, and its first atom (CSR row pointers).

        Computed once from the count field; nothing else stored is read.
        """
        key = "ragged:pointers"
        if key not in self._cache:
            assert self.ragged is not None  # only ragged runs have pointers
            count = self.ragged["count"]
            counts = self._array(count).read_physical(slice(0, self.committed))
            per_frame = counts.reshape(counts.shape[0], -1).sum(axis=1, dtype=np.int64)
            self._cache[key] = (counts, np.concatenate([[0], np.cumsum(per_frame)]))
        return self._cache[key]

    def _column(self, name: str) -> np.ndarray:
        key = f"column:{name}"
        if key not in self._cache:
            self._cache[key] = self._array(name).read_physical(slice(0, None))
        return self._cache[key][self._frames]

    # --------------------------------------------------------------------------------- fields

    @property
    def ragged(self) -> dict[str, Any] | None:
        """``{"count": ..., "fields": [...]}`` if some fields are stored CSR-style, else None."""
        return self.meta["schema"].get("ragged")

    def __getitem__(self, key: str | slice | np.ndarray | list[int]) -> Any:
        if isinstance(key, str):
            if key not in self.fields:
                raise FieldNotFoundError(
                    f"The run at {self.location} has no field '{key}'; its fields are "
                    f"{list(self.fields)}."
                )
            if self.ragged is not None and key in self.ragged["fields"]:
                return RaggedView(self._array(key), self._frames, self._pointers())
            return FieldView(self._array(key), self._frames)
        selected = _select_frames(key, len(self), "the run's frames")
        if selected.ndim != 1:
            raise ConfigError(
                "Select frames of a run with a slice or a 1-d array of frame indices (run[i:i + 1] "
                f"for frame i; run['field'][i] for its values); got {_show(key)}."
            )
        return Run(self.location, self.meta, self.attrs, self._frames[selected], self._cache)

    def __contains__(self, name: object) -> bool:
        return name in self.fields

    def _array(self, name: str) -> _StoredArray:
        key = f"array:{name}"
        if key not in self._cache:
            spec = self.location.child(name)
            self._cache[key] = _StoredArray(name, tsio.open_array(spec), spec)
        return self._cache[key]

    def extract_time_range(self, t_start: float | None = None, t_end: float | None = None) -> Run:
        """The frames with ``t_start <= time <= t_end`` (either bound may be None)."""
        for name, bound in (("t_start", t_start), ("t_end", t_end)):
            number = isinstance(bound, (int, float, np.integer, np.floating)) and not isinstance(
                bound, bool
            )
            if bound is not None and (not number or np.isnan(bound)):
                raise ConfigError(
                    f"`{name}` must be a number (not NaN) or None; got {_show(bound)}."
                )
        times = self.times
        keep = np.ones(times.shape, bool)
        if t_start is not None:
            keep &= times >= t_start
        if t_end is not None:
            keep &= times <= t_end
        return self[np.flatnonzero(keep)]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Frames in order, as dicts of field values plus ``step`` and ``time`` (and ``system``)."""
        return self.iter_frames()

    def iter_frames(self, fields: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Like iterating the run, with only `fields` (default: all); reads a chunk at a time."""
        if isinstance(fields, str):
            fields = (fields,)
        elif fields is not None and not isinstance(fields, Iterable):
            raise ConfigError(
                f"`fields` must be field names (an iterable of str) or None; got {_show(fields)}."
            )
        names = self.fields if fields is None else tuple(fields)
        missing = [n for n in names if n not in self.fields]
        if missing:
            raise FieldNotFoundError(
                f"The run at {self.location} has no field {missing[0]!r}; its fields are "
                f"{list(self.fields)}."
            )
        block = int(self.meta["schema"].get("chunk", 64))
        for start in range(0, len(self), block):
            part = self[start : start + block]
            columns = {"step": part.steps, "time": part.times}
            if self.per_system:
                columns["system"] = part.systems
            values = {name: part[name][:] for name in names}  # ragged: a list per frame
            for i in range(len(part)):
                frame = {name: v[i] for name, v in values.items()}
                frame.update({k: v[i] for k, v in columns.items()})
                yield frame

    # ------------------------------------------------------------------------------- exports

    def to_numpy(self) -> Trajectory:
        """All selected frames as a `Trajectory` whose frames are nested dicts of numpy arrays."""
        frames: dict[str, Any] = {}
        for name in self.fields:
            node = frames
            *parents, leaf = name.split("/")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = self[name][:]
        return Trajectory(frames, self.steps, self.times, self.systems)

    def to_xarray(self) -> Any:
        """The selected frames as an `xarray.Dataset` (fields as variables; step, time coords)."""
        import xarray as xr

        ragged = set(self.ragged["fields"]) if self.ragged else set()
        data_vars = {
            name: (self._array(name).dims, self[name][:])
            for name in self.fields
            if name not in ragged
        }
        coords: dict[str, tuple[str, Any]] = {
            "step": ("frame", self.steps),
            "time": ("frame", self.times),
        }
        if self.per_system:
            coords["system"] = ("frame", self.systems)
        if ragged:  # the selected frames' atoms, concatenated, with the frame each belongs to
            views = {name: self[name] for name in sorted(ragged)}
            first = next(iter(views.values()))
            coords["atom_frame"] = (
                "atom",
                np.repeat(np.arange(len(self)), first.atoms_per_frame()),
            )
            for name, view in views.items():
                data_vars[name] = (self._array(name).dims, view.concatenated())
        return xr.Dataset(data_vars, coords=coords, attrs=dict(self.attrs))


class _StoredArray:
    """One opened zarr array of a run."""

    def __init__(self, name: str, array: Any, spec: dict[str, Any]) -> None:
        self.name = name
        self.array = array
        self.spec = spec
        labels = array.domain.labels
        self.dims = tuple(label or f"{name}_{i}" for i, label in enumerate(labels))

    def read_physical(self, index: Any) -> np.ndarray:
        return np.asarray(tsio.read_rows(self.array, index, self.spec))


class FieldView:
    """A lazy view of one field over a run's frames: index it to read (``view[10:20, 0]``)."""

    def __init__(self, stored: _StoredArray, frames: np.ndarray) -> None:
        self._stored = stored
        self._frames = frames

    @property
    def name(self) -> str:
        """The field's name."""
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

    def __len__(self) -> int:
        return len(self._frames)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, index: Any) -> np.ndarray:
        """Read ``field[index]`` exactly as numpy indexes ``np.asarray(field)[index]`` (ints,
        negative ints, slices with any step, ``...`` and ``None`` anywhere, integer arrays and
        boolean masks), reading only the box of stored values the index touches.

        Raises:
            ReadIndexError: (an IndexError) for an index out of range or one numpy refuses, and
                for a 0-d boolean index, which is not supported.
        """
        shape = self.shape
        plan, rel = _plan(index, shape, self.name)
        rows, part = _frame_rows(plan[0][1], self._frames)
        if plan[0][0] is not None:
            rel[plan[0][0]] = part
        boxes, extents = [], [len(rows)]
        for axis in range(1, len(shape)):
            where, kind = plan[axis]
            box, rel_part = _box(kind, shape[axis])
            boxes.append(box)
            extents.append(box.stop - box.start)
            if where is not None:
                rel[where] = rel_part
        if 0 in extents:
            block = np.zeros(extents, self.dtype)
        else:
            block = self._read(rows, tuple(boxes))
        try:
            return block[tuple(rel)]
        except (IndexError, ValueError, TypeError) as err:  # not expected: the plan checked it
            raise ReadIndexError(
                f"Field '{self.name}' of shape {shape} cannot be indexed with {_show(index)}: "
                f"{err}."
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
        self, stored: _StoredArray, frames: np.ndarray, pointers: tuple[np.ndarray, np.ndarray]
    ) -> None:
        self._stored = stored
        self._frames = frames
        self._counts, self._ptr = pointers

    @property
    def name(self) -> str:
        """The field's name."""
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
            _select_frames(index, len(self), f"ragged field '{self.name}' (by frame only)")
        ]
        if np.ndim(physical) == 0:
            return self._read_frame(int(physical))
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


# ----------------------------------------------------------------------------- numpy indexing


def _plan(index: Any, shape: tuple[int, ...], name: str) -> tuple[list[tuple[Any, Any]], list[Any]]:
    """How numpy reads `index` for an array of `shape`: for each axis, ``(where, kind)`` (the
    position in `rel` that indexes it, None for axes an Ellipsis or the end covers; and what
    selects along it: ``("all",)``, ``("int", i)``, ``("slice", range)`` or ``("array", ints)``,
    all checked and non-negative), and `rel`: the index, item by item, with each kept as it is
    (None, Ellipsis) or to be replaced by its part relative to the box that is read.
    """
    items = list(index) if isinstance(index, tuple) else [index]
    kinds = [_kind(item, index, name) for item in items]
    consumed = sum(k[1] for k in kinds if k[0] != "none" and k[0] != "ellipsis")
    ellipses = sum(1 for k in kinds if k[0] == "ellipsis")
    if ellipses > 1:
        raise ReadIndexError(
            f"An index can only have a single ellipsis ('...'); got {_show(index)}."
        )
    if consumed > len(shape):
        raise ReadIndexError(
            f"Too many indices for field '{name}': it has {len(shape)} axes (frames first, "
            f"shape {shape}) but {_show(index)} indexes {consumed}."
        )
    plan: list[tuple[Any, Any]] = []
    rel: list[Any] = []
    arrays: list[tuple[int, ...]] = []
    for kind in kinds:
        tag = kind[0]
        if tag == "none":
            rel.append(None)
        elif tag == "ellipsis":
            rel.append(Ellipsis)
            plan.extend((None, ("all",)) for _ in range(len(shape) - consumed))
        elif tag == "int":
            axis, n = len(plan), shape[len(plan)]
            if not -n <= kind[2] < n:
                raise ReadIndexError(
                    f"Index {kind[2]} is out of range for axis {axis} of field '{name}', "
                    f"of size {n} (shape {shape})."
                )
            plan.append((len(rel), ("int", kind[2] % n)))
            rel.append(None)
        elif tag == "slice":
            axis, n = len(plan), shape[len(plan)]
            plan.append((len(rel), ("slice", range(*kind[2].indices(n)))))
            rel.append(None)
        elif tag == "bool":
            mask = kind[2]
            axis = len(plan)
            if mask.shape != shape[axis : axis + mask.ndim]:
                raise ReadIndexError(
                    f"A boolean index of shape {mask.shape} does not match axes "
                    f"{axis}..{axis + mask.ndim - 1} of field '{name}' (shape {shape}): a mask "
                    "must have the shape of the axes it selects."
                )
            for part in mask.nonzero():
                plan.append((len(rel), ("array", part)))
                rel.append(None)
                arrays.append(part.shape)
        else:  # "array"
            plan.append((len(rel), ("array", kind[2])))
            rel.append(None)
            arrays.append(kind[2].shape)
    plan.extend((None, ("all",)) for _ in range(len(shape) - len(plan)))
    try:
        selected = math.prod(np.broadcast_shapes(*arrays))
    except ValueError:
        raise ReadIndexError(
            f"Shape mismatch: the index arrays of {_show(index)} cannot be broadcast together "
            f"(shapes {arrays})."
        ) from None
    for axis, (where, kind) in enumerate(plan):
        if kind[0] != "array":
            continue
        ints, n = kind[1], shape[axis]
        if selected == 0:  # numpy checks no index array when they select nothing
            plan[axis] = (where, ("nothing", ints))
            continue
        if ints.size and (ints.min() < -n or ints.max() >= n):
            bad = ints[(ints < -n) | (ints >= n)].flat[0]
            raise ReadIndexError(
                f"Index {bad} is out of range for axis {axis} of field '{name}', of size "
                f"{n} (shape {shape})."
            )
        plan[axis] = (where, ("array", np.where(ints < 0, ints + n, ints)))
    return plan, rel


def _kind(item: Any, index: Any, name: str) -> tuple[Any, ...]:
    """``(tag, axes consumed, value)`` of one index item; a ReadIndexError for what numpy
    refuses."""
    if item is None:
        return ("none", 0)
    if item is Ellipsis:
        return ("ellipsis", 0)
    if isinstance(item, slice):
        bounds = (item.start, item.stop, item.step)
        if any(
            b is not None and (isinstance(b, (bool, np.bool_)) or not hasattr(b, "__index__"))
            for b in bounds
        ):
            raise ReadIndexError(
                f"Slice bounds must be integers or None; got {_show(item)} in {_show(index)}."
            )
        start, stop, step = (None if b is None else operator.index(b) for b in bounds)
        if step == 0:
            raise ReadIndexError(f"A slice step cannot be zero ({_show(index)}).")
        return ("slice", 1, slice(start, stop, step))
    if isinstance(item, (bool, np.bool_)):
        raise ReadIndexError(_SCALAR_BOOL.format(item=_show(item), name=name))
    if isinstance(item, (int, np.integer)):
        return ("int", 1, int(item))
    if isinstance(item, (str, bytes)) or not (
        isinstance(item, (list, tuple)) or hasattr(item, "__array__")
    ):
        if hasattr(item, "__index__"):
            return ("int", 1, operator.index(item))
        raise ReadIndexError(_NOT_AN_INDEX.format(item=_show(item), name=name))
    try:
        array = np.asarray(item)
    except (ValueError, TypeError):
        raise ReadIndexError(
            f"{_show(item)} is not a valid index for field '{name}': index lists must be "
            "rectangular lists of integers or booleans."
        ) from None
    if array.dtype == np.bool_:
        if array.ndim == 0:
            raise ReadIndexError(_SCALAR_BOOL.format(item=_show(item), name=name))
        return ("bool", array.ndim, array)
    if array.size == 0 and isinstance(item, (list, tuple)):
        array = array.astype(np.intp)  # numpy reads an empty list as an empty integer index
    if array.dtype.kind not in "iu":
        raise ReadIndexError(_NOT_AN_INDEX.format(item=_show(item), name=name))
    if array.ndim == 0:
        return ("int", 1, int(array))
    return ("array", 1, array.astype(np.int64))


_SCALAR_BOOL = (
    "A scalar boolean index ({item}) is not supported when reading field '{name}'; use None to "
    "add an axis, or a boolean array over an axis."
)
_NOT_AN_INDEX = (
    "{item} is not a valid index for field '{name}': only integers, slices (':'), ellipsis "
    "('...'), None and integer or boolean arrays are."
)


def _frame_rows(kind: tuple[Any, ...], frames: np.ndarray) -> tuple[np.ndarray, Any]:
    """The physical rows to read for the frame axis, in order, and what then indexes them."""
    if kind[0] == "all":
        return frames, None
    if kind[0] == "int":
        return frames[kind[1] : kind[1] + 1], 0
    if kind[0] == "slice":
        return frames[np.arange(kind[1].start, kind[1].stop, kind[1].step)], slice(None)
    if kind[0] == "nothing":
        return frames[:0], kind[1]
    unique, inverse = np.unique(kind[1], return_inverse=True)
    return frames[unique], inverse.reshape(kind[1].shape)


def _box(kind: tuple[Any, ...], n: int) -> tuple[slice, Any]:
    """The box (a slice with step 1) to read along an axis of size `n`, and what then indexes it."""
    if kind[0] == "all":
        return slice(0, n), None
    if kind[0] == "int":
        return slice(kind[1], kind[1] + 1), 0
    if kind[0] == "slice":
        r = kind[1]
        if len(r) == 0:
            return slice(0, 0), slice(None)
        lo, hi = min(r[0], r[-1]), max(r[0], r[-1])
        start = 0 if r.step > 0 else hi - lo
        return slice(lo, hi + 1), slice(start, None, r.step)
    ints = kind[1]
    if kind[0] == "nothing" or ints.size == 0:
        return slice(0, 0), ints
    lo = int(ints.min())
    return slice(lo, int(ints.max()) + 1), ints - lo


def _select_frames(key: Any, n: int, what: str) -> np.ndarray:
    """``np.arange(n)[key]`` for a key along the frame axis only, with numpy's answer, or a
    ReadIndexError (numpy's IndexError, TypeError or ValueError, said of `what`)."""
    if isinstance(key, tuple) and len(key) == 1 and not isinstance(key[0], tuple):
        key = key[0]
    if (
        isinstance(key, tuple)
        or key is None
        or key is Ellipsis
        or isinstance(key, (bool, np.bool_))
    ):
        raise ReadIndexError(
            f"Index {what} with one int, slice, or integer or boolean array; got {_show(key)}."
        )
    try:
        return np.arange(n)[key]
    except (IndexError, TypeError, ValueError) as err:
        raise ReadIndexError(f"Cannot index {what} ({n}) with {_show(key)}: {err}.") from None


def _show(index: Any) -> str:
    text = repr(index)
    return text if len(text) <= 80 else text[:77] + "..."
