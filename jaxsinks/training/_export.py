"""export_training: runs' frames (or each frame's points) shuffled once into a chunked Zarr store.

A training loop that wants N random frames (or N random points of a frame) should not read whole
frames and throw most away. Shuffling once, at export, with a deterministic seed per sample makes
every contiguous chunk a uniform random subset, so drawing N random items is reading one random
chunk of about N items (noether's ``ZarrStoreWriter`` layout, for recorded trajectories).

One store, a Zarr v3 hierarchy::

    zarr.json                     root group; attributes["jaxsinks_export"] is the manifest,
                                  written last; until then attributes["jaxsinks_export_partial"]
                                  marks an incomplete export (which mode="w" may replace)
    frames/<field>                by="frames": all selected runs' frames, concatenated and shuffled
    frames/{run,frame,step,time}  with one permutation; chunks of `sample_size` frames; `system`
    frames/system                 too if some run is per-system (-1 for the other runs' frames)
    samples/<run_id>/<field>      by="points": one group per run; each frame's points shuffled by
    samples/<run_id>/{step,time}  its own permutation (seeded by run id and frame), shared by
    samples/<run_id>/system       every field of the frame; chunks of (1, sample_size) points;
                                  `system` for a per-system run

Each group's attributes hold the stored size of every chunk, so a sampler can report its read
amplification (bytes read / bytes needed) without asking the store. As usual in Zarr, a chunk whose
values all equal the fill value (NaN for floats, bfloat16 and complex included; 0 for integers: e.g.
the ``run`` column of a one-run export) is not stored; it reads as those values and counts as 0
bytes read.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
from collections.abc import Iterable
from typing import Any, cast

import numpy as np

from .._core.errors import ConfigError, OutOfRangeError, StoreError, StoreExistsError
from .._core.frame import node_names
from .._core.types import EXPORT_BY, ExportBy, Mode
from .._io import tsio
from .._io.codecs import Blosc, Codec, check_codec, narrowing_range
from .._io.layout import ATTRS_KEY, array_metadata, group_metadata
from .._io.location import Location, parse
from .._io.runs import zarr_attrs
from ..campaign._campaign import MANIFEST_KEY
from ._set import (
    EXPORT_COLUMNS,
    EXPORT_KEY,
    EXPORT_SCHEMA_VERSION,
    NO_SYSTEM,
    SYSTEM_COLUMN,
    TrainingSet,
    positive_int,
)
from ._set import Sample as Sample  # re-exported: jaxsinks imports it from here
from ._sources import Source, export_fields, select_sources, storage_targets

DEFAULT_CODEC = Blosc("zstd", 5, "shuffle")
#: Frames read and written at once by the points export (about this many bytes of a field).
BLOCK_BYTES = 32 * 2**20
#: The root group attribute of an export still being written (replaced by the manifest at the end).
PARTIAL_KEY = "jaxsinks_export_partial"
#: The top-level names an export writes beside its root ``zarr.json``.
EXPORT_GROUPS = ("frames/", "samples/")


# ------------------------------------------------------------------------- pure functions


def shuffle_permutation(seed: int, sample_id: str, n: int) -> np.ndarray:
    """The permutation of `n` items of the sample `sample_id`: a pure function of its arguments.

    Seeded by `seed` and a SHA-256 of `sample_id` (not Python's salted ``hash``), so it is the
    same in every process and on every machine with the same numpy.
    """
    words = np.frombuffer(hashlib.sha256(sample_id.encode()).digest()[:16], dtype="<u4")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *words.tolist()])))
    return rng.permutation(n)


def out_of_range_rows(values: np.ndarray, target: np.dtype) -> np.ndarray:
    """Per leading index of `values`, whether some value does not fit `target` (finite values
    beyond its range; NaN or inf for an integer target). Values that round into range fit."""
    rows = values.shape[0]
    bounds = narrowing_range(values.dtype, target)
    if bounds is None or rows == 0:
        return np.zeros(rows, bool)
    flat = values.reshape(rows, math.prod(values.shape[1:]))
    if np.iscomplexobj(flat):  # the bounds hold for each part
        flat = np.concatenate([flat.real, flat.imag], axis=1)
    lo, hi = bounds
    with np.errstate(invalid="ignore"):
        beyond = (flat < lo) | (flat > hi)
    if np.issubdtype(values.dtype, np.inexact):
        finite = np.isfinite(flat)
        beyond = ~finite | beyond if np.issubdtype(target, np.integer) else finite & beyond
    return cast(np.ndarray, beyond.any(axis=1))  # 2-d, so an array (numpy types a bool too)


# ------------------------------------------------------------------------------ export


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
        mode: ``"w-"`` (fail if `dest` is not empty) or ``"w"`` (replace an earlier training
            export there; anything else at `dest` is refused, never deleted).

    The frames export holds one field of every selected frame in host memory at a time; the
    points export one block of about 32 MiB per field.

    Raises:
        ConfigError: an argument is invalid; `dtype` would drop information (complex to real,
            anything but bool to bool, floating to integer); `dest` overlaps a store `source`
            reads (it is inside it, or holds it).
        StoreExistsError: `dest` is not empty (mode "w-"), or holds something other than a
            training export (mode "w").
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
    sample_size = positive_int(sample_size, "sample_size")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"`seed` must be an int >= 0; got {seed!r}.")
    codec = check_codec(codec, "export_training")
    sources, stores = select_sources(source)
    names = export_fields(sources, by, fields)
    per_system = any(s.run.per_system for s in sources)
    reserved = (*EXPORT_COLUMNS, SYSTEM_COLUMN) if per_system else EXPORT_COLUMNS
    nodes = dict(zip(names, node_names(names, reserved=reserved)))
    targets = storage_targets(sources[0].run, names, dtype)
    location = parse(dest)
    check_no_overlap(location, stores)
    check_replaceable(location, mode)
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
                "node": nodes[n],
            }
            for n in names
        },
        "samples": [{"id": s.sample_id, "frames": len(s.run), "params": s.params} for s in sources],
    }
    try:
        tsio.write_bytes(location.kvstore, "zarr.json", group_metadata({PARTIAL_KEY: {"by": by}}))
        if by == "frames":
            manifest["chunk"], manifest["columns"] = _write_frames(
                location, sources, nodes, targets, sample_size, int(seed), codec
            )
        else:
            for entry, s in zip(manifest["samples"], sources):
                entry["points"], entry["chunk"] = _write_points(
                    location, s, nodes, targets, sample_size, int(seed), codec
                )
        tsio.write_bytes(location.kvstore, "zarr.json", group_metadata({EXPORT_KEY: manifest}))
    except BaseException:
        _remove(location)
        raise
    return TrainingSet.open(location)


def _store_path(location: Location) -> tuple[dict[str, Any], str]:
    """`location`'s kvstore spec without its path, and the path (real, for a local directory)."""
    spec = copy.deepcopy(location.kvstore)
    path = str(spec.pop("path", ""))
    if location.driver == "file":
        path = os.path.realpath(path).rstrip("/") + "/"
    return spec, path


def check_no_overlap(dest: Location, stores: list[Location]) -> None:
    """A ConfigError if `dest` is one of `stores` (what the source reads), inside one, or holds
    one: replacing or writing it would delete or change the runs being exported."""
    spec, path = _store_path(dest)
    for store in stores:
        other, inner = _store_path(store)
        if other != spec:
            continue
        if path.startswith(inner) or inner.startswith(path):
            how = "is" if path == inner else "is inside" if path.startswith(inner) else "holds"
            raise ConfigError(
                f"`dest` {dest} {how} {store}, which `source` reads: writing the export there "
                "would change or delete the runs being exported. Choose a `dest` outside the "
                "campaign and its runs (and not holding them)."
            )


def check_replaceable(location: Location, mode: str) -> None:
    """A StoreExistsError unless `location` may take a new export in `mode`: ``"w-"`` needs it
    empty; ``"w"`` needs it empty or an export (complete or partial) and nothing else."""
    keys = tsio.list_keys(location.kvstore)
    if not keys:
        return
    export, held = _contents(location, keys)
    if mode == "w-":
        remedy = (
            "Pass mode='w' to replace it, or choose another dest."
            if export
            else "Choose another dest (mode='w' replaces only a training export)."
        )
        raise StoreExistsError(f"`dest` {location} is not empty: it holds {held}. {remedy}")
    if not export:
        raise StoreExistsError(
            f"`dest` {location} holds {held}, not a training export; mode='w' replaces only an "
            "earlier training export (or an empty directory), so nothing was deleted. Choose "
            "another dest, or remove what is there yourself if it is no longer needed."
        )


def _contents(location: Location, keys: list[str]) -> tuple[bool, str]:
    """Whether the non-empty store at `location` (with `keys`) is a training export (complete or
    partial, with nothing else beside it), and what it holds, in words."""
    attrs = zarr_attrs(tsio.read_bytes(location.kvstore, "zarr.json"))
    if EXPORT_KEY in attrs or PARTIAL_KEY in attrs:
        export = "a training export" if EXPORT_KEY in attrs else "an incomplete training export"
        others = [k for k in keys if k != "zarr.json" and not _export_key(k)]
        if not others:
            return True, export
        return False, f"{export} and, beside it, {_files(others)}"
    if MANIFEST_KEY in keys:
        return False, f"a campaign (its {MANIFEST_KEY})"
    if ATTRS_KEY in attrs:
        return False, "a jaxsinks run"
    return False, _files(keys)


def _export_key(key: str) -> bool:
    """Whether `key` may be one an export wrote: under ``frames/`` or ``samples/``, a Zarr node's
    ``zarr.json`` or a chunk (``.../c/...``); a user's file kept there is not."""
    parts = key.split("/")
    return key.startswith(EXPORT_GROUPS) and (parts[-1] == "zarr.json" or "c" in parts[2:-1])


def _files(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in sorted(keys)[:3])
    if len(keys) == 1:
        return f"the file {shown}"
    return f"{len(keys)} files ({shown}{', ...' if len(keys) > 3 else ''})"


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
            f"removed. Export '{name}' with a wider dtype (dtype={{'{name}': "
            f"'{'complex128' if target.kind == 'c' else 'float32'}'}}) or "
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
    sources: list[Source],
    nodes: dict[str, str],
    targets: dict[str, np.dtype],
    sample_size: int,
    seed: int,
    codec: Codec,
) -> tuple[int, list[str]]:
    """Write the frames export; its chunk (frames) and the columns written beside the fields."""
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
    if any(s.run.per_system for s in sources):  # which system each frame is: kept traceable
        columns[SYSTEM_COLUMN] = np.concatenate(
            [
                np.full(len(s.run), NO_SYSTEM, np.int32) if s.run.systems is None else s.run.systems
                for s in sources
            ]
        ).astype(np.int32)
    group = Location(location.child("frames"))
    sizes = {}
    for name, node in nodes.items():
        values = _narrow(
            np.concatenate([s.run[name][:] for s in sources]), targets[name], name, where
        )
        dims = ("frame", *sources[0].run[name].dims[1:])
        sizes[node] = _write_shuffled(group, node, values[perm], chunk, dims, codec)
    for name, values in columns.items():
        sizes[name] = _write_shuffled(group, name, values[perm], chunk, ("frame",), codec)
    _write_groups(location, "frames", list(nodes.values()), {"chunk_bytes": sizes})
    return chunk, list(columns)


def _write_shuffled(
    group: Location, name: str, values: np.ndarray, chunk: int, dims: tuple[str, ...], codec: Codec
) -> list[int]:
    spec = group.child(name)
    meta = array_metadata(
        values.shape, values.dtype, _chunk_shape(chunk, values.shape), codec, dims
    )
    _write_array(spec, meta, 0, values)
    grid = _chunk_sizes(spec, (math.ceil(values.shape[0] / chunk),))
    return grid.tolist()


def _write_points(
    location: Location,
    source: Source,
    nodes: dict[str, str],
    targets: dict[str, np.dtype],
    sample_size: int,
    seed: int,
    codec: Codec,
) -> tuple[int, int]:
    run, names = source.run, list(nodes)
    frames, points = len(run), run[names[0]].shape[1]
    chunk = max(1, min(sample_size, points))
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
            chunks = (1, *_chunk_shape(chunk, values.shape[1:]))
            meta = array_metadata(shape, shuffled.dtype, chunks, codec, dims)
            node = nodes[name]
            arrays[node] = _write_array(group.child(node), meta, a, shuffled, arrays.get(node))
    sizes = {
        n: _chunk_sizes(group.child(n), (frames, math.ceil(points / chunk))).tolist()
        for n in nodes.values()
    }
    columns = [("step", run.steps), ("time", run.times)]
    if run.systems is not None:
        columns.append((SYSTEM_COLUMN, run.systems.astype(np.int32)))
    for name, values in columns:
        meta = array_metadata(values.shape, values.dtype, (max(1, frames),), codec, ("frame",))
        _write_array(group.child(name), meta, 0, values)
    _write_groups(
        location, f"samples/{source.sample_id}", list(nodes.values()), {"chunk_bytes": sizes}
    )
    return points, chunk


def _chunk_shape(chunk: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """`chunk` items along the first axis of `shape`, whole along the others: at least 1 along
    each (Zarr has no empty chunks; an axis of length 0 takes a chunk of 1)."""
    return (max(1, chunk), *(max(1, d) for d in shape[1:]))


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
