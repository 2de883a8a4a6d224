"""open: read a recorded run back, lazily, as numpy, or as xarray."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .._core.errors import (
    ConfigError,
    FieldNotFoundError,
    StoreError,
    StoreNotFoundError,
)
from .._core.frame import nested, unreserved_names
from .._core.trajectory import Trajectory
from .._io import tsio
from .._io.layout import ATTRS_KEY, check_schema_version
from .._io.location import Location, parse
from .._io.long_table import LONG_SCHEMA_VERSION
from .._io.runs import check_committed, check_run_meta, holder
from .index import select_frames, show
from .live_ring import live_ring
from .long_view import field_view, tidy_dataset
from .views import FieldView, RaggedView, StoredArray

__all__ = ["FieldView", "RaggedView", "Run", "open"]


def open(store: Any) -> Run:  # noqa: A001 - the public name mirrors zarr.open
    """Open the run at `store` (a path, URL or kvstore spec) for reading.

    The run holds exactly the committed frames: after a crash, the frames whose writes were still
    in flight are not part of it. A run still being written holds the frames committed when it
    was opened; a ring (``overflow="ring"``) whose writer has since overwritten some of them (a
    live writer, or one that resumed it with ``mode="a"``) raises a `StoreError` naming them when
    they are read, never returning other frames' values.

    Raises:
        StoreNotFoundError: if there is no run at `store`.
        StoreError: if `store` holds something else, or a run written by a newer jaxsinks.
    """
    location = parse(store)
    raw = tsio.read_bytes(location.kvstore, "zarr.json")
    if raw is None:
        raise StoreNotFoundError(f"There is no jaxsinks run at {location} (no zarr.json there).")
    try:
        doc = json.loads(raw)
        attrs, node = doc.get("attributes", {}), doc.get("node_type", "node")
    except (ValueError, AttributeError):
        raise StoreError(f"{location}/zarr.json is not valid Zarr JSON metadata.") from None
    meta = attrs.get(ATTRS_KEY) if isinstance(attrs, dict) else None
    if not isinstance(meta, dict):
        hint = (
            " If it is a field of a run, open the run's folder and index the field by name "
            "(js.open(run)['x'])."
            if node == "array"
            else ""
        )
        raise StoreError(
            f"{location} is a Zarr {node} but not a jaxsinks run (no '{ATTRS_KEY}' attributes)."
            + hint
        )
    # the newest schema: version 2 added long tables (wide runs are still written as version 1)
    check_schema_version(meta, str(location), "jaxsinks", LONG_SCHEMA_VERSION)
    if meta.get("status") == "creating":
        raise StoreNotFoundError(
            f"There is no jaxsinks run at {location} yet: its creation "
            + (
                "is under way."
                if holder(meta) is not None
                else "was interrupted (its process died); "
                "creating a run there (any mode) replaces the remains."
            )
        )
    check_run_meta(meta, location)
    if meta.get("status") == "open" and holder(meta) is None:
        meta = dict(meta, status="interrupted")
    user = {k: v for k, v in attrs.items() if k != ATTRS_KEY}
    return Run(location, meta, user)


def _frames_needed(meta: dict[str, Any]) -> int:
    """How many frames the arrays of the run `meta` describes must hold: its committed count, or
    for a ring the slots its committed frames went to (computed, never listed: a damaged count
    must not allocate before it is compared with the arrays)."""
    committed = int(meta.get("committed", 0))
    capacity = meta.get("capacity")
    if meta.get("overflow") == "ring" and capacity:
        return min(committed, int(capacity))
    return committed


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
        frames: np.ndarray | None = None,
        cache: dict[str, Any] | None = None,
    ) -> None:
        """`frames`: the selected physical frames; None for all the committed ones, once the step
        column is checked to hold them (a StoreError if the metadata counts more)."""
        self.location = location
        self.meta = meta
        self.attrs = attrs
        self._cache = cache if cache is not None else {}
        if frames is None:
            self._array("step")
            frames = _physical_frames(meta)
        self._frames = frames
        self._live = live_ring(location, meta)  # None unless a ring its writer may overwrite

    # ---------------------------------------------------------------------------- description

    @property
    def fields(self) -> tuple[str, ...]:
        """The names of the recorded fields (pytree paths joined with ``/``), as recorded: a field
        ``time`` is ``time`` here, though it is stored (and shown by `iter_frames` and
        `to_xarray`) as ``time_`` beside the run's own ``time`` column (`times`)."""
        return tuple(self._nodes)

    @property
    def _nodes(self) -> dict[str, str]:
        """Each field's name -> the store node it is in (`stored_name`)."""
        return {f.get("field", f["name"]): f["name"] for f in self.meta["schema"]["fields"]}

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
        the run holds exactly `committed` frames (an open ring: those its writer has not
        overwritten since; reading an overwritten one raises a `StoreError`).
        """
        return str(self.meta.get("status"))

    @property
    def schedule(self) -> dict[str, Any]:
        """The JSON description of the schedule the run was recorded with.

        Raises:
            StoreError: if the run's metadata holds something else there (it was damaged or
                edited); its frames are read as usual.
        """
        schedule = self.meta.get("schedule", {})
        if not isinstance(schedule, dict):
            raise StoreError(
                f"The run at {self.location} has damaged metadata: in its zarr.json's "
                f"'{ATTRS_KEY}' attributes, schedule is {schedule!r} (expected a JSON object "
                "describing the schedule), so the schedule it was recorded with is unknown. Its "
                "frames can still be read (js.open(run)['field'], run.steps); restore its "
                "zarr.json from a copy to see the schedule."
            )
        return dict(schedule)

    @property
    def per_system(self) -> bool:
        """Whether each frame is one system's row (recorded by a per-system sink)."""
        return self.meta["schema"].get("per_system") is not None

    @property
    def table(self) -> str:
        """``"long"`` for a run stored as a long table of scalar fields (``table="long"``: one
        row per frame or system, and field; `to_xarray` gives that table), else ``"wide"``."""
        return "wide" if self._long is None else "long"

    @property
    def _long(self) -> dict[str, Any] | None:
        """The run's long table (field names, value dtype), or None for a wide run."""
        return self.meta["schema"].get("table")

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
        ``status``, ``table`` (``"wide"``, or ``"long"``: then ``fields`` describes the table's
        ``name`` and ``value`` arrays), ``schedule``, ``attrs``, ``logical_bytes``,
        ``stored_bytes`` and ``fields``: a list of dicts with ``name``, ``shape`` (one frame),
        ``dtype`` (stored), ``source_dtype``, ``chunks``, ``shards`` (None when unsharded),
        ``codecs`` (names), ``dims``, ``logical_bytes`` (frames x frame bytes at the stored
        dtype) and ``stored_bytes`` (the array's keys, i.e. compressed chunks plus metadata).
        Stored bytes are those of the whole run, including frames outside the selection.
        """
        schema = {f["name"]: f for f in self.meta["schema"]["fields"]}
        ragged = self._ragged_nodes
        fields = []
        nodes = (
            self._nodes.items() if self._long is None else [("name", "name"), ("value", "value")]
        )
        for name, node in nodes:
            array = self._array(node)
            meta = array.array.spec().to_json()["metadata"]
            codecs = meta.get("codecs", [])
            grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
            chunks, shards = grid, None
            if codecs and codecs[0]["name"] == "sharding_indexed":
                shards, chunks = grid, codecs[0]["configuration"]["chunk_shape"]
                codecs = codecs[0]["configuration"]["codecs"]
            dtype = np.dtype(meta["data_type"])
            shape = tuple(array.array.shape[1:])
            entries = len(self) * (1 if self._long is None else len(self._long["names"]))
            if node in ragged:  # the selected frames' atoms
                entries = int(self[name].atoms_per_frame().sum())
            fields.append(
                {
                    "name": name,
                    "shape": list(shape),
                    "dtype": dtype.name,
                    "source_dtype": schema[node]["dtype"] if node in schema else dtype.name,
                    "chunks": list(chunks),
                    "shards": None if shards is None else list(shards),
                    "codecs": [c["name"] for c in codecs],
                    "dims": list(array.dims),
                    "logical_bytes": entries * int(np.prod(shape, dtype=np.int64)) * dtype.itemsize,
                    "stored_bytes": tsio.stored_bytes(self.location.child(node)),
                }
            )
        return {
            "store": str(self.location),
            "frames": len(self),
            "committed": self.committed,
            "status": self.status,
            "table": self.table,
            "schedule": self.schedule,
            "attrs": dict(self.attrs),
            "logical_bytes": sum(f["logical_bytes"] for f in fields),
            "stored_bytes": tsio.stored_bytes(self.location.kvstore),
            "fields": fields,
        }

    def _axis_names(self) -> set[str]:
        """The dimensions of `to_xarray`'s Dataset, which no variable may be named: every
        field's axes (``frame``, or ``atom`` for a ragged field, then its own)."""
        return {dim for node in self._nodes.values() for dim in self._array(node).dims}

    def _pointers(self) -> tuple[np.ndarray, np.ndarray]:
        """For ragged runs: every stored frame's counts, and its first atom (CSR row pointers).

        Computed once from the count field; nothing else stored is read.
        """
        key = "ragged:pointers"
        if key not in self._cache:
            stored = self.meta["schema"]["ragged"]
            assert stored is not None  # only ragged runs have pointers
            count = stored["count"]  # its node
            counts = self._array(count).read_physical(slice(0, self.committed))
            per_frame = counts.reshape(counts.shape[0], math.prod(counts.shape[1:])).sum(
                axis=1, dtype=np.int64
            )
            self._cache[key] = (counts, np.concatenate([[0], np.cumsum(per_frame)]))
        return self._cache[key]

    def _column(self, name: str) -> np.ndarray:
        """The column `name` of the selected frames, read once (all of it) and cached.

        The cache holds the column and the first frame from which it was read intact: every
        frame for a finished run; for a live ring, the writer's first valid frame as read just
        after the column (`LiveRing.check`). A selection that starts before it reads again,
        and that read raises if its frames were overwritten meanwhile.
        """
        key = f"column:{name}"
        entry = self._cache.get(key)
        if entry is None or (self._live is not None and self._first_frame() < entry[1]):
            column = self._array(name).read_physical(slice(0, None))
            if name == "step":
                self._check_step_chunks(column)
            if self._long is not None:  # a long table's frames are len(names) rows each
                column = column[:: len(self._long["names"])]
            entry = (column, 0 if self._live is None else self._live.check(self._frames))
            self._cache[key] = entry
        return entry[0][self._frames]

    def _check_step_chunks(self, column: np.ndarray) -> None:
        """A StoreError if a chunk of the step column that holds committed frames is missing.

        TensorStore reads a missing chunk as the fill value (-1 for steps); so only chunks read
        as -1 are looked for, and only they are listed: a run whose steps are not -1 pays
        nothing. Runs written before every chunk was stored (no ``fill_chunks`` entry) left out
        chunks of steps all -1, so they are not checked."""
        if self.meta.get("fill_chunks") != "stored":
            return
        needed = _frames_needed(self.meta) * (1 if self._long is None else len(self._long["names"]))
        suspect = np.flatnonzero(column[:needed] == -1)
        if not suspect.size:
            return
        array = self._array("step").array
        grid = array.spec().to_json()["metadata"]["chunk_grid"]["configuration"]["chunk_shape"][0]
        keys = set(tsio.list_keys(self.location.child("step")))
        missing = sorted({int(i) for i in suspect // grid if f"c/{int(i)}" not in keys})
        if missing:
            first, last = missing[0] * grid, min(needed, (missing[-1] + 1) * grid) - 1
            raise StoreError(
                f"The run at {self.location} is damaged: {len(missing)} chunk file(s) of its "
                f"`step` array holding committed entries {first}..{last} are missing (deleted or "
                f"lost: c/{missing[0]}{'' if len(missing) == 1 else ' ...'}), so those frames "
                "would read as step -1 and as fill values. Restore the run's folder from a copy; "
                "the other frames can be read with zarr-python directly."
            )

    def _first_frame(self) -> int:
        """The first selected frame of a live ring, counted from the run's first recorded frame
        (`committed` for an empty selection)."""
        assert self._live is not None
        frames = self._live.frames(self._frames)
        return int(frames.min()) if frames.size else self.committed

    # --------------------------------------------------------------------------------- fields

    @property
    def ragged(self) -> dict[str, Any] | None:
        """``{"count": ..., "fields": [...]}`` if some fields are stored CSR-style, else None."""
        stored = self.meta["schema"].get("ragged")
        if stored is None:
            return None
        names = {node: name for name, node in self._nodes.items()}
        return {"count": names[stored["count"]], "fields": [names[n] for n in stored["fields"]]}

    @property
    def _ragged_nodes(self) -> set[str]:
        """The nodes of the ragged fields."""
        stored = self.meta["schema"].get("ragged")
        return set(stored["fields"]) if stored else set()

    def __getitem__(self, key: str | slice | np.ndarray | list[int]) -> Any:
        if isinstance(key, str):
            self._field_names(key)  # a FieldNotFoundError unless the run has it
            if self._long is not None:
                return field_view(self, key)
            node = self._nodes[key]
            if node in self._ragged_nodes:
                return RaggedView(self._array(node), self._frames, self._pointers())
            check = None if self._live is None else self._live.check
            return FieldView(self._array(node), self._frames, check)
        selected = select_frames(key, len(self), "the run's frames")
        if selected.ndim != 1:
            raise ConfigError(
                "Select frames of a run with a slice or a 1-d array of frame indices (run[i:i + 1] "
                f"for frame i; run['field'][i] for its values); got {show(key)}."
            )
        return Run(self.location, self.meta, self.attrs, self._frames[selected], self._cache)

    def __contains__(self, name: object) -> bool:
        return name in self.fields

    def _array(self, name: str) -> StoredArray:
        """The stored array of node `name` (a field's node, or a column)."""
        key = f"array:{name}"
        if key not in self._cache:
            spec = self.location.child(name)
            array = tsio.open_array(spec)
            schema = self.meta["schema"]
            ragged = {f["name"] for f in schema["fields"] if f.get("ragged")}
            if name not in ragged:  # an array of frames (of rows, k a frame, in a long table)
                rows = len(schema["table"]["names"]) if "table" in schema else 1
                check_committed(self.location, _frames_needed(self.meta), array.shape[0], rows)
            self._cache[key] = StoredArray(name, array, spec)
        return self._cache[key]

    def extract_time_range(self, t_start: float | None = None, t_end: float | None = None) -> Run:
        """The frames with ``t_start <= time <= t_end`` (either bound may be None)."""
        for name, bound in (("t_start", t_start), ("t_end", t_end)):
            number = isinstance(bound, (int, float, np.integer, np.floating)) and not isinstance(
                bound, bool
            )
            if bound is not None and (not number or np.isnan(bound)):
                raise ConfigError(
                    f"`{name}` must be a number (not NaN) or None; got {show(bound)}."
                )
        times = self.times
        keep = np.ones(times.shape, bool)
        if t_start is not None:
            keep &= times >= t_start
        if t_end is not None:
            keep &= times <= t_end
        return self[np.flatnonzero(keep)]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Frames in order, as dicts of field values plus ``step`` and ``time`` (and ``system``).

        A field named like one of those columns is under its stored name (``time_`` for a field
        ``time``, ``time_/x`` for ``time/x``), beside the column.
        """
        return self.iter_frames()

    def iter_frames(self, fields: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Like iterating the run, with only `fields` (default: all); reads a chunk at a time."""
        return self._frames_of(self._field_names(fields), columns=True)

    def items(self, fields: Iterable[str] | None = None) -> Iterator[tuple[float, dict[str, Any]]]:
        """``(time, frame)`` pairs in order, like py-pde's ``storage.items()``: `time` a float,
        `frame` a dict of the values of `fields` (default: all). Reads a chunk at a time.

        The frame holds the fields only; `iter_frames` gives each frame's ``step`` (and
        ``system``) too.

        Raises:
            ConfigError: if some selected frame has no time (the run was recorded without
                ``time=``); iterate it with `iter_frames` instead.
        """
        names = self._field_names(fields)
        times = self.times
        missing = np.flatnonzero(np.isnan(times))
        if missing.size:
            raise ConfigError(
                f"The run at {self.location} has no time for {missing.size} of its {len(self)} "
                f"selected frames (the first at frame {int(missing[0])}: it was recorded without "
                "`time=`), so `items()` cannot pair frames with times. Iterate it with "
                "`run.iter_frames()`, whose frames hold their `step`."
            )
        return zip(times.tolist(), self._frames_of(names, columns=False))

    def _field_names(self, fields: Iterable[str] | None) -> tuple[str, ...]:
        """`fields` (one name, names, or None for all) as names of this run's fields."""
        if isinstance(fields, str):
            fields = (fields,)
        elif fields is not None and not isinstance(fields, Iterable):
            raise ConfigError(
                f"`fields` must be field names (an iterable of str) or None; got {show(fields)}."
            )
        names = self.fields if fields is None else tuple(fields)
        missing = [n for n in names if n not in self.fields]
        if missing:
            raise FieldNotFoundError(
                f"The run at {self.location} has no field {missing[0]!r}; its fields are "
                f"{list(self.fields)}."
            )
        return names

    def _frames_of(self, names: tuple[str, ...], *, columns: bool) -> Iterator[dict[str, Any]]:
        """The selected frames' values of `names` (plus, with `columns`, step, time and
        system, and the fields under their nodes' names), one dict per frame, reading a chunk of
        frames at a time."""
        block = int(self.meta["schema"].get("chunk", 64))
        nodes = self._nodes if columns else {name: name for name in names}
        for start in range(0, len(self), block):
            part = self[start : start + block]
            values = {nodes[name]: part[name][:] for name in names}  # ragged: a list per frame
            if columns:
                values.update(step=part.steps, time=part.times)
                if self.per_system:
                    values["system"] = part.systems
            for i in range(len(part)):
                yield {name: v[i] for name, v in values.items()}

    # ------------------------------------------------------------------------------- exports

    def to_numpy(self) -> Trajectory:
        """All selected frames as a `Trajectory` whose frames are nested dicts of numpy arrays."""
        frames = nested({name: self[name][:] for name in self.fields})
        return Trajectory(frames, self.steps, self.times, self.systems)

    def to_xarray(self) -> Any:
        """The selected frames as an `xarray.Dataset`, with `time` as an index.

        Fields are variables over the ``frame`` dimension (and their own named axes; ragged
        fields over an ``atom`` dimension, with the ``atom_frame`` coordinate). ``step``, ``time``
        (and ``system``, for per-system runs) are coordinates along ``frame``. When every
        selected frame has a time, ``time`` is an indexed coordinate, so selecting by time works
        as it does on a time dimension: ``ds.sel(time=2.5)``, ``ds.sel(time=t, method="nearest")``
        or ``ds.sel(time=slice(1.0, 2.0))``. ``frame`` stays the dimension (``ds.isel(frame=3)``,
        ``ds.mean("frame")``), because times need not be unique: a per-system run repeats each
        time once per system (``sel(time=t)`` gives them all; for ``method="nearest"``, select
        one system first, ``ds.isel(frame=ds.system == 0)``). A run recorded without times has a
        ``time`` coordinate of NaN and no index. A field named like a column is the variable of its
        stored name (``time_`` for a field ``time``); one named like a dimension or a coordinate
        of the Dataset (``frame``, a field's named axis; ``atom`` and ``atom_frame`` of a ragged
        run) is renamed so too (``frame_``, or ``frame__`` beside a field ``frame_``): ``frame``
        stays a bare dimension.

        A long run (`table` ``"long"``) gives its table instead: ``value`` along a ``row``
        dimension, with the coordinates ``step``, ``time``, ``system`` and ``name`` (the field
        names as strings); ``run.to_xarray().to_dataframe()`` is the tidy pandas table.
        """
        if self._long is not None:
            return tidy_dataset(self)
        import xarray as xr

        ragged = self._ragged_nodes
        coords: dict[str, tuple[str, Any]] = {
            "step": ("frame", self.steps),
            "time": ("frame", self.times),
        }
        if self.per_system:
            coords["system"] = ("frame", self.systems)
        fields = {node: name for name, node in self._nodes.items()}
        if ragged:  # the selected frames' atoms, concatenated, with the frame each belongs to
            first = self[fields[min(ragged)]]
            coords["atom_frame"] = (
                "atom",
                np.repeat(np.arange(len(self)), first.atoms_per_frame()),
            )
        # a field named like a coordinate or a dimension (`frame`, a field's own axis) is not
        # one: `frame_`, ...
        reserved = {"frame", *coords, *self._axis_names()}
        data_vars: dict[str, Any] = {}
        for node, var in unreserved_names(fields, reserved).items():
            view = self[fields[node]]
            values = view.concatenated() if node in ragged else view[:]
            data_vars[var] = (self._array(node).dims, values)
        dataset = xr.Dataset(data_vars, coords=coords, attrs=dict(self.attrs))
        if not np.isnan(self.times).any():
            dataset = dataset.set_xindex("time")
        return dataset
