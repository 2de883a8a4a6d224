"""export_training: runs' frames (or each frame's points) shuffled once into a chunked Zarr store.

A training loop that wants N random frames (or N random points of a frame) should not read whole
frames and throw most away. Shuffling once, at export, with a deterministic seed per sample makes
every contiguous chunk a uniform random subset, so drawing N random items is reading one random
chunk of about N items (noether's ``ZarrStoreWriter`` layout, for recorded trajectories).

One store, a Zarr v3 hierarchy::

    zarr.json                     root group; attributes["jaxsinks_export"] is the manifest,
                                  written last (a store without it is an incomplete export)
    frames/<field>                by="frames": all selected runs' frames, concatenated and shuffled
    frames/{run,frame,step,time}  with one permutation; chunks of `sample_size` frames
    samples/<run_id>/<field>      by="points": one group per run; each frame's points shuffled by
    samples/<run_id>/{step,time}  its own permutation (seeded by run id and frame), shared by
                                  every field of the frame; chunks of (1, sample_size) points

Each group's attributes hold the stored size of every chunk, so a sampler can report its read
amplification (bytes read / bytes needed) without asking the store. As usual in Zarr, a chunk whose
values all equal the fill value (NaN for floats, 0 otherwise: e.g. the ``run`` column of a one-run
export) is not stored; it reads as those values and counts as 0 bytes read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any, cast

import numpy as np

from .._core.errors import (
    ConfigError,
    OutOfRangeError,
    SchemaMismatchError,
    StoreError,
    StoreExistsError,
    StoreNotFoundError,
)
from .._core.types import EXPORT_BY, ExportBy, Mode
from .._io import tsio
from .._io.codecs import Blosc, Codec, check_codec, codec_chain, narrowing_range
from .._io.layout import group_metadata
from .._io.location import Location, parse
from .._read.reader import Run
from ..campaign._campaign import Campaign
from ..campaign._entry import RunEntry, check_run_id

EXPORT_SCHEMA_VERSION = 1
EXPORT_KEY = "jaxsinks_export"
DEFAULT_CODEC = Blosc("zstd", 5, "shuffle")
#: Frames read and written at once by the points export (about this many bytes of a field).
BLOCK_BYTES = 32 * 2**20


# ------------------------------------------------------------------------- pure functions


def shuffle_permutation(seed: int, sample_id: str, n: int) -> np.ndarray:
    """The permutation of `n` items of the sample `sample_id`: a pure function of its arguments.

    Seeded by `seed` and a SHA-256 of `sample_id` (not Python's salted ``hash``), so it is the
    same in every process and on every machine with the same numpy.
    """
    words = np.frombuffer(hashlib.sha256(sample_id.encode()).digest()[:16], dtype="<u4")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *words.tolist()])))
    return rng.permutation(n)


def array_metadata(
    shape: tuple[int, ...],
    chunk: tuple[int, ...],
    dtype: np.dtype,
    codec: Codec,
    dims: tuple[str, ...],
) -> dict[str, Any]:
    """The zarr v3 metadata (TensorStore ``zarr3`` form) of one exported array."""
    if np.issubdtype(dtype, np.floating):
        fill: Any = "NaN"
    else:
        fill = False if dtype == np.bool_ else 0
    return {
        "shape": list(shape),
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunk)}},
        "chunk_key_encoding": {"name": "default"},
        "fill_value": fill,
        "codecs": codec_chain(codec, dtype, None),
        "dimension_names": list(dims),
    }


def out_of_range_rows(values: np.ndarray, target: np.dtype) -> np.ndarray:
    """Per leading index of `values`, whether some value does not fit `target` (finite values
    beyond its range; NaN or inf for an integer target). Values that round into range fit."""
    rows = values.shape[0]
    bounds = narrowing_range(values.dtype, target)
    if bounds is None or rows == 0:
        return np.zeros(rows, bool)
    flat = values.reshape(rows, -1)
    lo, hi = bounds
    with np.errstate(invalid="ignore"):
        beyond = (flat < lo) | (flat > hi)
    if np.issubdtype(values.dtype, np.inexact):
        finite = np.isfinite(flat)
        beyond = ~finite | beyond if np.issubdtype(target, np.integer) else finite & beyond
    return cast(np.ndarray, beyond.any(axis=1))  # 2-d, so an array (numpy types a bool too)


# ------------------------------------------------------------------------------ export


@dataclasses.dataclass(frozen=True)
class _Source:
    sample_id: str
    run: Run
    params: dict[str, Any]


def export_training(
    source: Any,
    dest: Any,
    *,
    by: ExportBy = "frames",
    fields: Iterable[str] | None = None,
    sample_size: int = 4096,
    seed: int = 0,
    dtype: Any = None,
    codec: Codec = DEFAULT_CODEC,
    mode: Mode = "w-",
) -> TrainingSet:
    """Write a shuffled training export of `source` at `dest` and return it, opened.

    Args:
        source: a `Campaign` (its closed runs), a list of `RunEntry` (e.g.
            ``campaign.runs(params=...)``), a mapping of sample ids to `Run`s, or one `Run`.
        dest: where to write the export (a path, URL or kvstore spec).
        by: ``"frames"``: every selected frame, shuffled across runs with one permutation, so a
            chunk is a uniform random subset of all of them; ``"points"``: for point-cloud fields
            (frame shape ``(points, ...)``), each frame's points shuffled by their own permutation
            (seeded by run id and frame), shared by the fields, so a chunk is a uniform random
            subset of one frame's points.
        fields: the fields to export (default: by="frames", every fixed-shape field of the first
            run; by="points", every field with a leading point axis of the same length).
        sample_size: how many items a reader draws at once; the chunk along the shuffled axis
            (capped by the number of items).
        seed: the base seed (an int >= 0); the same seed gives the same bytes.
        dtype: a storage dtype for every floating field (e.g. ``"float16"``), or a dict of
            dtypes by field name. Values out of its range raise `OutOfRangeError`; nothing is
            stored as inf.
        codec: the compression codec (default: Blosc zstd level 5 with byte shuffle).
        mode: ``"w-"`` (fail if `dest` is not empty) or ``"w"`` (replace what is there).

    The frames export holds one field of every selected frame in host memory at a time; the
    points export one block of about 32 MiB per field.

    Raises:
        OutOfRangeError: a value does not fit its storage dtype (naming field, run and frame);
            the partial export is removed.
        SchemaMismatchError: the runs' fields differ in shape or dtype.
    """
    if by not in EXPORT_BY:
        raise ConfigError(f"`by` must be one of {list(EXPORT_BY)}; got {by!r}.")
    if mode not in ("w-", "w"):
        raise ConfigError(
            f"`mode` must be 'w-' (fail if dest exists) or 'w' (replace it); got {mode!r}."
        )
    sample_size = _positive_int(sample_size, "sample_size")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"`seed` must be an int >= 0; got {seed!r}.")
    codec = check_codec(codec, "export_training")
    sources = _sources(source)
    names = _fields(sources, by, fields)
    targets = _targets(sources[0].run, names, dtype)
    location = parse(dest)
    if mode == "w-" and tsio.list_keys(location.kvstore):
        raise StoreExistsError(
            f"{location} is not empty. Pass mode='w' to replace it, or choose another dest."
        )
    if mode == "w":
        tsio.delete_all(location.kvstore)
    manifest: dict[str, Any] = {
        "schema_version": EXPORT_SCHEMA_VERSION,
        "by": by,
        "seed": int(seed),
        "sample_size": sample_size,
        "fields": {
            n: {
                "shape": list(sources[0].run[n].shape[1 if by == "frames" else 2 :]),
                "dtype": targets[n].name,
                "source_dtype": sources[0].run[n].dtype.name,
            }
            for n in names
        },
        "samples": [{"id": s.sample_id, "frames": len(s.run), "params": s.params} for s in sources],
    }
    try:
        if by == "frames":
            manifest["chunk"] = _write_frames(
                location, sources, names, targets, sample_size, int(seed), codec
            )
        else:
            for entry, s in zip(manifest["samples"], sources):
                entry["points"], entry["chunk"] = _write_points(
                    location, s, names, targets, sample_size, int(seed), codec
                )
        tsio.write_bytes(location.kvstore, "zarr.json", group_metadata({EXPORT_KEY: manifest}))
    except BaseException:
        _remove(location)
        raise
    return TrainingSet.open(location)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"`{name}` must be an int >= 1; got {value!r}.")
    return int(value)


def _sources(source: Any) -> list[_Source]:
    if isinstance(source, Campaign):
        source = source.runs(status="closed")
    if isinstance(source, Run):
        out = [_Source("run", source, {})]
    elif isinstance(source, Mapping):
        out = [_Source(check_run_id(k), v, {}) for k, v in source.items()]
        bad = [s.sample_id for s in out if not isinstance(s.run, Run)]
        if bad:
            raise ConfigError(
                f"`source` maps sample ids to jaxsinks.Run objects; {bad} are not runs."
            )
    elif isinstance(source, Iterable) and not isinstance(source, (str, bytes)):
        items = list(source)
        bad = [type(e).__name__ for e in items if not isinstance(e, RunEntry)]
        if bad:
            raise ConfigError(
                f"`source` as a list must hold RunEntry objects (from campaign.runs()); got {bad}."
            )
        out = [_Source(e.run_id, e.open(), e.params) for e in items]
    else:
        raise ConfigError(
            "`source` must be a Campaign, a list of RunEntry, a dict of sample id -> Run, or a "
            f"Run; got {type(source).__name__}."
        )
    out = [s for s in out if len(s.run)]
    if not out:
        raise ConfigError("`source` selects no frames to export (no runs, or only empty ones).")
    return out


def _fields(sources: list[_Source], by: str, fields: Iterable[str] | None) -> list[str]:
    first = sources[0].run
    ragged = set(first.ragged["fields"]) if first.ragged else set()
    if fields is None:
        names = [n for n in first.fields if n not in ragged]
        if by == "points":
            names = [n for n in names if len(first[n].shape) > 1]
            lengths = {first[n].shape[1] for n in names}
            if len(lengths) > 1:
                raise ConfigError(
                    "by='points' needs fields sharing one point axis; the run's fields have point "
                    f"axes of lengths {sorted(lengths)}. Name the point-cloud fields with `fields`."
                )
    else:
        names = [fields] if isinstance(fields, str) else list(fields)
    if not names:
        raise ConfigError(
            f"There is no field to export by {by!r}; the runs' fields are {list(first.fields)}."
        )
    problems = []
    for s in sources:
        run = s.run
        for n in names:
            if n not in run.fields:
                problems.append(f"run '{s.sample_id}' has no field '{n}'")
            elif run.ragged and n in run.ragged["fields"]:
                raise ConfigError(
                    f"Field '{n}' is ragged; export_training takes fields of a fixed shape."
                )
            elif by == "points" and len(run[n].shape) < 2:
                raise ConfigError(
                    f"by='points' needs fields with a point axis; '{n}' has frames of shape "
                    f"{list(run[n].shape[1:])}."
                )
            else:
                shape = run[n].shape[1:] if by == "frames" else run[n].shape[2:]
                want = first[n].shape[1:] if by == "frames" else first[n].shape[2:]
                if (shape, run[n].dtype) != (want, first[n].dtype):
                    problems.append(
                        f"'{n}' is {run[n].dtype.name}{list(run[n].shape[1:])} in run "
                        f"'{s.sample_id}' but {first[n].dtype.name}{list(first[n].shape[1:])} in "
                        f"'{sources[0].sample_id}'"
                    )
        if by == "points" and not problems:
            lengths = {run[n].shape[1] for n in names}
            if len(lengths) > 1:
                problems.append(f"run '{s.sample_id}' has point axes of lengths {sorted(lengths)}")
    if problems:
        raise SchemaMismatchError("Cannot export these runs together: " + "; ".join(problems) + ".")
    return names


def _targets(run: Run, names: list[str], dtype: Any) -> dict[str, np.dtype]:
    def parse_dtype(value: Any, where: str) -> np.dtype:
        try:
            return np.dtype(value)
        except TypeError:
            raise ConfigError(f"`{where}` is {value!r}, which is not a dtype.") from None

    out = {n: run[n].dtype for n in names}
    if isinstance(dtype, Mapping):
        unknown = sorted(set(dtype) - set(names))
        if unknown:
            raise ConfigError(
                f"`dtype` names fields that are not exported: {unknown}; exported: {names}."
            )
        out.update({n: parse_dtype(d, f"dtype[{n!r}]") for n, d in dtype.items()})
    elif dtype is not None:
        target = parse_dtype(dtype, "dtype")
        out.update({n: target for n in names if np.issubdtype(out[n], np.floating)})
    return out


def _narrow(values: np.ndarray, target: np.dtype, name: str, where: Any) -> np.ndarray:
    """`values` as `target`, or an OutOfRangeError naming the first offending item via `where`."""
    bad = out_of_range_rows(values, target)
    if bad.any():
        i = int(np.argmax(bad))
        row = values[i]
        finite = row[np.isfinite(row)] if np.issubdtype(row.dtype, np.inexact) else row
        worst = float(np.abs(finite).max()) if finite.size else float("nan")
        raise OutOfRangeError(
            f"Field '{name}' has values out of the range of {target.name} at {where(i)} (largest "
            f"magnitude {worst:.6g}); nothing was stored as inf and the partial export was "
            f"removed. Export '{name}' with a wider dtype (dtype={{'{name}': 'float32'}}) or "
            "rescale it.",
            0,
        )
    return values.astype(target, copy=False)


def _write_array(
    spec: dict[str, Any],
    metadata: dict[str, Any],
    start: int,
    values: np.ndarray,
    array: Any = None,
) -> Any:
    array = tsio.create_array(spec, metadata) if array is None else array
    with tsio.translated("write to", spec):
        tsio.write_rows(array, start, values).result()
    return array


def _write_frames(
    location: Location,
    sources: list[_Source],
    names: list[str],
    targets: dict[str, np.dtype],
    sample_size: int,
    seed: int,
    codec: Codec,
) -> int:
    lengths = [len(s.run) for s in sources]
    total = sum(lengths)
    chunk = min(sample_size, total)
    perm = shuffle_permutation(seed, "frames", total)
    origin = np.repeat(np.arange(len(sources), dtype=np.int32), lengths)
    frame = np.concatenate([np.arange(n, dtype=np.int32) for n in lengths])

    def where(i: int) -> str:
        return f"frame {int(frame[i])} of run '{sources[int(origin[i])].sample_id}'"

    columns = {
        "run": origin,
        "frame": frame,
        "step": np.concatenate([s.run.steps for s in sources]),
        "time": np.concatenate([s.run.times for s in sources]),
    }
    group = Location(location.child("frames"))
    sizes = {}
    for name in names:
        values = _narrow(
            np.concatenate([s.run[name][:] for s in sources]), targets[name], name, where
        )
        dims = ("frame", *sources[0].run[name].dims[1:])
        sizes[name] = _write_shuffled(group, name, values[perm], chunk, dims, codec)
    for name, values in columns.items():
        sizes[name] = _write_shuffled(group, name, values[perm], chunk, ("frame",), codec)
    _write_groups(location, "frames", names, {"chunk_bytes": sizes})
    return chunk


def _write_shuffled(
    group: Location, name: str, values: np.ndarray, chunk: int, dims: tuple[str, ...], codec: Codec
) -> list[int]:
    spec = group.child(name)
    meta = array_metadata(values.shape, (chunk, *values.shape[1:]), values.dtype, codec, dims)
    _write_array(spec, meta, 0, values)
    grid = _chunk_sizes(spec, (math.ceil(values.shape[0] / chunk),))
    return grid.tolist()


def _write_points(
    location: Location,
    source: _Source,
    names: list[str],
    targets: dict[str, np.dtype],
    sample_size: int,
    seed: int,
    codec: Codec,
) -> tuple[int, int]:
    run = source.run
    frames, points = len(run), run[names[0]].shape[1]
    chunk = min(sample_size, points)
    group = Location(location.child(f"samples/{source.sample_id}"))
    per_frame = max(run[n].dtype.itemsize * math.prod(run[n].shape[1:]) for n in names)
    block = max(1, BLOCK_BYTES // max(1, per_frame))
    arrays: dict[str, Any] = {}
    for a in range(0, frames, block):
        b = min(frames, a + block)
        perms = np.stack(
            [shuffle_permutation(seed, f"{source.sample_id}/{f}", points) for f in range(a, b)]
        )
        for name in names:
            values = run[name][a:b]
            values = _narrow(
                values,
                targets[name],
                name,
                lambda i: f"frame {a + i} of run '{source.sample_id}'",  # noqa: B023 - called at once
            )
            index = perms.reshape(perms.shape + (1,) * (values.ndim - 2))
            shuffled = np.take_along_axis(values, index, axis=1)
            shape = (frames, *values.shape[1:])
            dims = ("frame", "point", *run[name].dims[2:])
            meta = array_metadata(shape, (1, chunk, *values.shape[2:]), shuffled.dtype, codec, dims)
            arrays[name] = _write_array(group.child(name), meta, a, shuffled, arrays.get(name))
    sizes = {
        n: _chunk_sizes(group.child(n), (frames, math.ceil(points / chunk))).tolist() for n in names
    }
    for name, values in (("step", run.steps), ("time", run.times)):
        meta = array_metadata(values.shape, (max(1, frames),), values.dtype, codec, ("frame",))
        _write_array(group.child(name), meta, 0, values)
    _write_groups(location, f"samples/{source.sample_id}", names, {"chunk_bytes": sizes})
    return points, chunk


def _chunk_sizes(spec: dict[str, Any], grid: tuple[int, ...]) -> np.ndarray:
    """The stored bytes of every chunk of the array at `spec` (0 for chunks never written)."""
    sizes = np.zeros(grid, np.int64)
    local = Location(spec).local_path
    for key in tsio.list_keys(spec):
        parts = key.split("/")
        if parts[0] != "c":
            continue
        index = tuple(int(p) for p in parts[1 : 1 + len(grid)])
        if local is not None:
            sizes[index] = (local / key).stat().st_size
        else:
            sizes[index] = len(tsio.read_bytes(spec, key) or b"")
    return sizes


def _write_groups(location: Location, group: str, names: list[str], attrs: dict[str, Any]) -> None:
    """The group's zarr.json (with `attrs`), its parents', and those of nested field names."""
    parts = group.split("/")
    for i in range(1, len(parts)):
        tsio.write_bytes(location.child("/".join(parts[:i])), "zarr.json", group_metadata({}))
    for name in names:
        parents = name.split("/")[:-1]
        for i in range(1, len(parents) + 1):
            tsio.write_bytes(
                location.child(f"{group}/{'/'.join(parents[:i])}"), "zarr.json", group_metadata({})
            )
    tsio.write_bytes(location.child(group), "zarr.json", group_metadata(attrs))


def _remove(location: Location) -> None:
    try:
        tsio.delete_all(location.kvstore)
    except StoreError:
        pass


# ----------------------------------------------------------------------------- reading


@dataclasses.dataclass(frozen=True)
class Sample:
    """A random sample drawn by `TrainingSet.sample`.

    Attributes:
        data: the values by field name, ``n`` along the first axis. A frames export also gives
            ``run`` (run ids), ``frame`` (the frame index in its run), ``step`` and ``time``.
        sample_id: the run the points come from (a points export); None for a frames export.
        frame: the frame the points come from (a points export); None for a frames export.
        chunk: the index of the chunk read (along the shuffled axis).
        bytes_read: stored (compressed) bytes of the chunks read.
        bytes_needed: bytes of the values returned (uncompressed, at the stored dtype).
    """

    data: dict[str, np.ndarray]
    sample_id: str | None
    frame: int | None
    chunk: int
    bytes_read: int
    bytes_needed: int

    @property
    def amplification(self) -> float:
        """The read amplification: ``bytes_read / bytes_needed`` (below 1 when compression wins)."""
        return self.bytes_read / self.bytes_needed if self.bytes_needed else math.inf


class TrainingSet:
    """A training export written by `export_training`: draw random samples with `sample`.

    Attributes:
        location: where it is stored.
        manifest: the export's manifest (``by``, ``seed``, ``sample_size``, ``fields``,
            ``samples`` with ids, frame counts and parameters, ...).
    """

    def __init__(self, location: Location, manifest: dict[str, Any]) -> None:
        self.location = location
        self.manifest = manifest
        self._arrays: dict[str, Any] = {}
        self._groups: dict[str, dict[str, Any]] = {}

    @classmethod
    def open(cls, store: Any) -> TrainingSet:  # noqa: A003
        """Open the export at `store`.

        Raises:
            StoreNotFoundError: if there is no complete export there.
            StoreError: if it was written by a newer jaxsinks (naming both versions).
        """
        location = parse(store)
        raw = tsio.read_bytes(location.kvstore, "zarr.json")
        if raw is None:
            raise StoreNotFoundError(
                f"There is no training export at {location} (no zarr.json there)."
            )
        manifest = json.loads(raw).get("attributes", {}).get(EXPORT_KEY)
        if not isinstance(manifest, dict):
            raise StoreNotFoundError(
                f"{location} is not a complete jaxsinks training export (no "
                f"'{EXPORT_KEY}' manifest). Export it again with export_training."
            )
        version = manifest.get("schema_version")
        if not isinstance(version, int) or version > EXPORT_SCHEMA_VERSION:
            raise StoreError(
                f"The export at {location} was written with export schema version {version}; "
                f"this jaxsinks reads versions up to {EXPORT_SCHEMA_VERSION}. Upgrade jaxsinks."
            )
        return cls(location, manifest)

    @property
    def by(self) -> str:
        """``"frames"`` or ``"points"``: what was shuffled."""
        return str(self.manifest["by"])

    @property
    def fields(self) -> tuple[str, ...]:
        """The exported fields."""
        return tuple(self.manifest["fields"])

    @property
    def sample_ids(self) -> tuple[str, ...]:
        """The runs the export holds."""
        return tuple(s["id"] for s in self.manifest["samples"])

    def __len__(self) -> int:
        """The number of exported frames."""
        return sum(int(s["frames"]) for s in self.manifest["samples"])

    def __repr__(self) -> str:
        return (
            f"TrainingSet({self.location}, by={self.by!r}, frames={len(self)}, "
            f"fields={list(self.fields)})"
        )

    def chunk_size(self, sample_id: str | None = None) -> int:
        """Items per chunk along the shuffled axis (of run `sample_id`, for a points export)."""
        if self.by == "frames":
            return int(self.manifest["chunk"])
        return int(self._sample(sample_id)["chunk"])

    def _sample(self, sample_id: str | None) -> dict[str, Any]:
        for s in self.manifest["samples"]:
            if s["id"] == sample_id:
                return s
        raise KeyError(
            f"The export at {self.location} has no run {sample_id!r}; it has "
            f"{list(self.sample_ids)}."
        )

    def _array(self, path: str) -> tuple[Any, dict[str, Any]]:
        if path not in self._arrays:
            spec = self.location.child(path)
            self._arrays[path] = (tsio.open_array(spec), spec)
        return self._arrays[path]

    def _chunk_bytes(self, group: str) -> dict[str, Any]:
        if group not in self._groups:
            raw = tsio.read_bytes(self.location.child(group), "zarr.json")
            if raw is None:
                raise StoreError(f"The export at {self.location} lacks the group '{group}'.")
            self._groups[group] = json.loads(raw)["attributes"]["chunk_bytes"]
        return self._groups[group]

    def _read(self, path: str, index: tuple[Any, ...]) -> np.ndarray:
        array, spec = self._array(path)
        return np.asarray(tsio.read_rows(array, index, spec))

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> Sample:
        """Draw `n` random frames (or points of one random frame) by reading one random chunk.

        A frames export reads ``n`` frames from a random chunk; a points export picks a run (with
        probability proportional to its frames), a frame, and a chunk of its points. `n` must not
        exceed the chunk (the `sample_size` exported with); a last chunk shorter than `n` is
        never drawn, so with ``n`` equal to the sample size, make the item count a multiple of it
        to use every item. The shuffle is done once: the same chunks come back across epochs.

        Args:
            n: how many frames or points.
            rng: a numpy Generator, or a seed for one (None: fresh entropy).
        """
        n = _positive_int(n, "n")
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        if self.by == "frames":
            return self._sample_frames(n, rng)
        return self._sample_points(n, rng)

    def _pick_chunk(
        self, n: int, items: int, chunk: int, rng: np.random.Generator, what: str
    ) -> int:
        if n > chunk:
            raise ConfigError(
                f"`n` = {n} is more than a chunk of this export ({chunk} {what}): one sample is "
                f"one chunk. Export with sample_size >= {n}, or draw several samples."
            )
        lengths = np.minimum(chunk, items - chunk * np.arange(math.ceil(items / chunk)))
        return int(rng.choice(np.flatnonzero(lengths >= n)))

    def _sample_frames(self, n: int, rng: np.random.Generator) -> Sample:
        total, chunk = len(self), self.chunk_size()
        c = self._pick_chunk(n, total, chunk, rng, "frames")
        rows = (slice(c * chunk, c * chunk + n),)
        sizes = self._chunk_bytes("frames")
        data = {
            name: self._read(f"frames/{name}", rows)
            for name in (*self.fields, "run", "frame", "step", "time")
        }
        ids = np.asarray(self.sample_ids, dtype=object)
        needed = sum(v.nbytes for v in data.values())
        data["run"] = ids[data["run"]]
        return Sample(data, None, None, c, sum(int(sizes[k][c]) for k in sizes), needed)

    def _sample_points(self, n: int, rng: np.random.Generator) -> Sample:
        samples = self.manifest["samples"]
        frames = np.array([s["frames"] for s in samples], dtype=np.float64)
        s = samples[int(rng.choice(len(samples), p=frames / frames.sum()))]
        f = int(rng.integers(s["frames"]))
        chunk = int(s["chunk"])
        c = self._pick_chunk(n, int(s["points"]), chunk, rng, "points")
        group = f"samples/{s['id']}"
        index = (f, slice(c * chunk, c * chunk + n))
        data = {name: self._read(f"{group}/{name}", index) for name in self.fields}
        sizes = self._chunk_bytes(group)
        read = sum(int(sizes[name][f][c]) for name in self.fields)
        return Sample(data, s["id"], f, c, read, sum(v.nbytes for v in data.values()))
