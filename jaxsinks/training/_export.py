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
values all equal the fill value (NaN for floats, bfloat16 and complex included; 0 for integers: e.g.
the ``run`` column of a one-run export) is not stored; it reads as those values and counts as 0
bytes read.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import Any, cast

import numpy as np

from .._core.errors import ConfigError, OutOfRangeError, StoreError, StoreExistsError
from .._core.frame import node_names
from .._core.types import EXPORT_BY, ExportBy, Mode
from .._io import tsio
from .._io.codecs import Blosc, Codec, check_codec, narrowing_range
from .._io.layout import array_metadata, group_metadata
from .._io.location import Location, parse
from ._set import EXPORT_COLUMNS, EXPORT_KEY, EXPORT_SCHEMA_VERSION, TrainingSet, positive_int
from ._set import Sample as Sample  # re-exported: jaxsinks imports it from here
from ._sources import Source, export_fields, select_sources, storage_targets

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
    sample_size = positive_int(sample_size, "sample_size")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"`seed` must be an int >= 0; got {seed!r}.")
    codec = check_codec(codec, "export_training")
    sources = select_sources(source)
    names = export_fields(sources, by, fields)
    nodes = dict(zip(names, node_names(names, reserved=EXPORT_COLUMNS)))
    targets = storage_targets(sources[0].run, names, dtype)
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
                "node": nodes[n],
            }
            for n in names
        },
        "samples": [{"id": s.sample_id, "frames": len(s.run), "params": s.params} for s in sources],
    }
    try:
        if by == "frames":
            manifest["chunk"] = _write_frames(
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
    sources: list[Source],
    nodes: dict[str, str],
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
    for name, node in nodes.items():
        values = _narrow(
            np.concatenate([s.run[name][:] for s in sources]), targets[name], name, where
        )
        dims = ("frame", *sources[0].run[name].dims[1:])
        sizes[node] = _write_shuffled(group, node, values[perm], chunk, dims, codec)
    for name, values in columns.items():
        sizes[name] = _write_shuffled(group, name, values[perm], chunk, ("frame",), codec)
    _write_groups(location, "frames", list(nodes.values()), {"chunk_bytes": sizes})
    return chunk


def _write_shuffled(
    group: Location, name: str, values: np.ndarray, chunk: int, dims: tuple[str, ...], codec: Codec
) -> list[int]:
    spec = group.child(name)
    meta = array_metadata(values.shape, values.dtype, (chunk, *values.shape[1:]), codec, dims)
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
            meta = array_metadata(shape, shuffled.dtype, (1, chunk, *values.shape[2:]), codec, dims)
            node = nodes[name]
            arrays[node] = _write_array(group.child(node), meta, a, shuffled, arrays.get(node))
    sizes = {
        n: _chunk_sizes(group.child(n), (frames, math.ceil(points / chunk))).tolist()
        for n in nodes.values()
    }
    for name, values in (("step", run.steps), ("time", run.times)):
        meta = array_metadata(values.shape, values.dtype, (max(1, frames),), codec, ("frame",))
        _write_array(group.child(name), meta, 0, values)
    _write_groups(
        location, f"samples/{source.sample_id}", list(nodes.values()), {"chunk_bytes": sizes}
    )
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
