"""export_training: runs' frames (or each frame's points) shuffled once into a chunked Zarr store.

A training loop that wants N random frames (or N random points of a frame) should not read whole
frames and throw most away. Shuffling once, at export, with a deterministic seed per sample makes
every contiguous chunk a uniform random subset, so drawing N random items is reading one random
chunk of about N items (noether's ``ZarrStoreWriter`` layout, for recorded trajectories).

One store, a Zarr v3 hierarchy::

    zarr.json                     root group; attributes["jaxsinks_export"] is the manifest
                                  (its "export_id" a hash of it and of every array), written
                                  last; until then attributes["jaxsinks_export_partial"]
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

import hashlib
import json
import math
import os
from collections.abc import Iterable
from typing import Any, cast

import jax.numpy as jnp
import numpy as np

from .._core.errors import ConfigError, OutOfRangeError, StoreError, StoreExistsError
from .._core.frame import node_names
from .._core.types import EXPORT_BY, ExportBy, Mode
from .._io import tsio
from .._io.codecs import (
    Blosc,
    Codec,
    check_codec,
    inexact_integers,
    is_float,
    narrowing_range,
)
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
    """Per leading index of `values`, whether some value is one `target` does not hold (see
    `unheld`)."""
    return cast(np.ndarray, unheld(values, converted(values, target)).any(axis=1))


def converted(values: np.ndarray, target: np.dtype) -> np.ndarray:
    """`values` as `target`, without numpy's warnings for values it does not hold (`unheld` says
    which those are)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(target, copy=False)


def unheld(values: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """Which of `values` (flattened after the leading axis) `stored`, `values` cast to a storage
    dtype, does not hold: for a floating (or complex) storage dtype, a finite value that became
    inf (one that rounds into range is held: 65519 as float16 is 65504), an inf that did not stay
    inf (float8_e4m3fn has none: it would be NaN), and an integer that it does not hold exactly
    (float16 holds every integer up to 2048, bfloat16 up to 256); for an integer one, a value
    beyond its range, NaN or inf."""
    flat, kept = _rows(values), _rows(stored)
    if values.dtype == stored.dtype:
        return np.zeros(flat.shape, bool)
    if not is_float(stored.dtype) and stored.dtype.kind != "c":
        return _beyond(flat, stored.dtype)
    if values.dtype.kind in "biu":  # integers as floats: is each held exactly?
        return cast(np.ndarray, inexact_integers(np, flat, kept))
    return np.where(np.isfinite(flat), ~np.isfinite(kept), np.isinf(flat) & ~np.isinf(kept))


def _beyond(flat: np.ndarray, target: np.dtype) -> np.ndarray:
    """Which of `flat` lie beyond the range of the integer dtype `target` (NaN and inf too)."""
    bounds = narrowing_range(flat.dtype, target)
    if bounds is None:
        return np.zeros(flat.shape, bool)
    lo, hi = bounds
    with np.errstate(invalid="ignore"):
        beyond = (flat < lo) | (flat > hi)
    return cast(np.ndarray, beyond | ~np.isfinite(flat) if is_float(flat.dtype) else beyond)


def _rows(values: np.ndarray) -> np.ndarray:
    """`values` as a 2-d array: its leading axis, then everything else flattened."""
    return values.reshape(values.shape[0], math.prod(values.shape[1:]))


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
        dtype: a storage dtype for every floating field, bfloat16 ones included (e.g.
            ``"float16"``), or a dict of dtypes by field name (integer fields too). A value it
            does not hold raises `OutOfRangeError` before anything is stored: one beyond its
            range (a value that rounds into it is held), an inf for a dtype without inf
            (float8_e4m3fn), or an integer stored as a float that does not hold it exactly
            (float16 holds every integer only up to 2048, bfloat16 up to 256).
        codec: the compression codec (default: Blosc zstd level 5 with byte shuffle).
        mode: ``"w-"`` (fail if `dest` is not empty) or ``"w"`` (replace an earlier training
            export there; anything else at `dest` is refused, never deleted).

    The frames export holds one field of every selected frame in host memory at a time; the
    points export one block of about 32 MiB per field.

    The manifest's ``export_id`` is a hash of the manifest and of every array written: the same
    export again has the same one, any other export another, so a `TrainingSet` opened before
    `dest` was replaced refuses to sample from it.

    Raises:
        ConfigError: an argument is invalid (`dtype` not a numeric dtype, `fields` not field
            names); `dtype` would drop information (complex to real, anything but bool to bool,
            floating to integer); `source` names one sample id twice; `dest` overlaps a store
            `source` reads (it is inside it, or holds it; a list of entries reads their
            campaign).
        StoreExistsError: `dest` is not empty (mode "w-"), or holds something other than a
            training export (mode "w"), or is a file.
        OutOfRangeError: a value is not held by its storage dtype (naming field, run and
            frame); no partial export is left, and with mode "w" the earlier export is kept
            (values are checked before it is deleted).
        FieldNotFoundError: a run lacks a field to export (a `KeyError`, as `Campaign.frames`
            raises).
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
    if check_replaceable(location, mode):
        check_values(sources, targets)  # before deleting: a failed export keeps the earlier one
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
    digest = hashlib.sha256()
    try:
        tsio.write_bytes(location.kvstore, "zarr.json", group_metadata({PARTIAL_KEY: {"by": by}}))
        if by == "frames":
            manifest["chunk"], manifest["columns"] = _write_frames(
                location, sources, nodes, targets, sample_size, int(seed), codec, digest
            )
        else:
            for entry, s in zip(manifest["samples"], sources):
                entry["points"], entry["chunk"] = _write_points(
                    location, s, nodes, targets, sample_size, int(seed), codec, digest
                )
        manifest["export_id"] = export_id(manifest, digest.digest())
        tsio.write_bytes(location.kvstore, "zarr.json", group_metadata({EXPORT_KEY: manifest}))
    except BaseException:
        _remove(location)
        raise
    return TrainingSet.open(location)


def export_id(manifest: dict[str, Any], data: bytes) -> str:
    """The identity of an export: a hash of its `manifest` and of the `data` digest of every
    array it holds. Equal exports (same runs, arguments and seed) have one identity, so the same
    seed still gives the same bytes; any other export there has another one, by which an open
    `TrainingSet` sees that it was replaced."""
    text = json.dumps(manifest, sort_keys=True).encode()
    return hashlib.sha256(text + data).hexdigest()[:32]


def _store_path(location: Location) -> tuple[tuple[str, str], str]:
    """Which store `location` is in (its driver and bucket; options such as concurrency limits
    or credentials do not change what is stored where), and its path (real, for a local
    directory)."""
    spec = location.kvstore
    path = str(spec.get("path", ""))
    if location.driver == "file":
        path = os.path.realpath(path).rstrip("/") + "/"
    return (location.driver, str(spec.get("bucket", ""))), path


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


def check_replaceable(location: Location, mode: str) -> bool:
    """A StoreExistsError unless `location` may take a new export in `mode`: ``"w-"`` needs it
    empty; ``"w"`` needs it empty or an export (complete or partial) and nothing else. Whether it
    holds an export to replace."""
    local = location.local_path
    if local is not None and os.path.lexists(local) and not local.is_dir():
        raise StoreExistsError(
            f"`dest` {location} is a file, not a directory: an export is a directory of Zarr "
            "arrays, and jaxsinks does not replace or delete a file it did not write, in any "
            "mode. Choose another dest, or remove the file yourself if it is no longer needed."
        )
    keys = tsio.list_keys(location.kvstore)
    if not keys:
        return False
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
    return True


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
    """`values` as `target`, or an OutOfRangeError naming the first item (via `where`, given its
    leading index) that `target` does not hold."""
    stored = converted(values, target)
    bad = unheld(values, stored)
    rows = bad.any(axis=1)
    if rows.any():
        i = int(np.argmax(rows))
        raise _out_of_range(name, _rows(values)[i][bad[i]], target, where(i))
    return stored


def _out_of_range(name: str, values: np.ndarray, target: np.dtype, where: str) -> OutOfRangeError:
    """The error for field `name`, whose `values` (at `where`) `target` does not hold."""
    worst = values[int(np.argmax(np.abs(values)))].item()
    shown = str(worst) if isinstance(worst, int) else format(worst, ".6g")
    source = values.dtype
    wider = (
        "complex128"
        if source.kind == "c"
        else source.name
        if source.kind in "biu" or target.itemsize >= 4
        else "float32"
    )
    return OutOfRangeError(
        f"Field '{name}' has a value that {target.name} does not hold at {where}: {shown} "
        f"({_holds(source, target)}). The export stopped: nothing was stored as inf or NaN, no "
        "partial export is left at `dest`, and an earlier export there (mode='w') is kept, as "
        f"values are checked before it is replaced. Export '{name}' as a dtype that holds it "
        f"(dtype={{'{name}': '{wider}'}}), or rescale it.",
        0,
    )


def _holds(source: np.dtype, target: np.dtype) -> str:
    """What `target` holds, in words, of the values of `source`."""
    if not is_float(target) and target.kind != "c":
        info = np.iinfo(target)
        return f"{target.name} holds integers from {info.min} to {info.max}"
    finfo = jnp.finfo(target)
    parts = [f"finite magnitudes up to {float(finfo.max):.6g}"]
    if not np.isinf(converted(np.array([np.inf]), target)).all():
        parts.append("no inf")
    if source.kind in "biu":
        parts.append(f"every integer only up to {2 ** (finfo.nmant + 1)}")
    return f"{target.name} holds " + ", ".join(parts)


def check_values(sources: list[Source], targets: dict[str, np.dtype]) -> None:
    """An OutOfRangeError for the first value of `sources` that its storage dtype in `targets`
    does not hold, before anything is written (a replaced export is deleted only after this):
    each narrowed field is read block by block."""
    for source in sources:
        run = source.run
        names = [n for n, t in targets.items() if t != run[n].dtype]
        for a, b in frame_blocks(run, names):
            for name in names:
                _narrow(run[name][a:b], targets[name], name, _at(source, a))


def frame_blocks(run: Any, names: list[str]) -> list[tuple[int, int]]:
    """The frames of `run` in blocks of about `BLOCK_BYTES` of the largest of fields `names`."""
    per_frame = max((run[n].dtype.itemsize * math.prod(run[n].shape[1:]) for n in names), default=1)
    block = max(1, BLOCK_BYTES // max(1, per_frame))
    return [(a, min(len(run), a + block)) for a in range(0, len(run), block)]


def _at(source: Source, start: int) -> Any:
    """Where item i of a block of `source` starting at frame `start` is, in words."""
    return lambda i: f"frame {start + i} of run '{source.sample_id}'"


def _write_array(
    location: Location,
    path: str,
    metadata: dict[str, Any],
    start: int,
    values: np.ndarray,
    digest: Any,
    array: Any = None,
) -> Any:
    """Write `values` from row `start` of the array at `path` (created from `metadata` unless
    `array` is it, opened), and add them to `digest`, the hash of what the export holds."""
    spec = location.child(path)
    array = tsio.create_array(spec, metadata) if array is None else array
    with tsio.translated("write to", spec):
        tsio.write_rows(array, start, values).result()
    values = np.ascontiguousarray(values)
    digest.update(f"{path}[{start}:]{values.dtype.name}{list(values.shape)}".encode())
    digest.update(values.view(np.uint8) if values.size else b"")
    return array


def _write_frames(
    location: Location,
    sources: list[Source],
    nodes: dict[str, str],
    targets: dict[str, np.dtype],
    sample_size: int,
    seed: int,
    codec: Codec,
    digest: Any,
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
    sizes = {}
    for name, node in nodes.items():
        values = _narrow(
            np.concatenate([s.run[name][:] for s in sources]), targets[name], name, where
        )
        dims = ("frame", *sources[0].run[name].dims[1:])
        shuffled = values[perm]
        sizes[node] = _write_shuffled(location, node, shuffled, chunk, dims, codec, digest)
    for name, values in columns.items():
        shuffled = values[perm]
        sizes[name] = _write_shuffled(location, name, shuffled, chunk, ("frame",), codec, digest)
    _write_groups(location, "frames", list(nodes.values()), {"chunk_bytes": sizes})
    return chunk, list(columns)


def _write_shuffled(
    location: Location,
    name: str,
    values: np.ndarray,
    chunk: int,
    dims: tuple[str, ...],
    codec: Codec,
    digest: Any,
) -> list[int]:
    """Write the frames export's array `name` (in chunks of `chunk` frames); its chunks' sizes."""
    path = f"frames/{name}"
    meta = array_metadata(
        values.shape, values.dtype, _chunk_shape(chunk, values.shape), codec, dims
    )
    _write_array(location, path, meta, 0, values, digest)
    grid = _chunk_sizes(location.child(path), (math.ceil(values.shape[0] / chunk),))
    return grid.tolist()


def _write_points(
    location: Location,
    source: Source,
    nodes: dict[str, str],
    targets: dict[str, np.dtype],
    sample_size: int,
    seed: int,
    codec: Codec,
    digest: Any,
) -> tuple[int, int]:
    run, names = source.run, list(nodes)
    frames, points = len(run), run[names[0]].shape[1]
    chunk = max(1, min(sample_size, points))
    group = f"samples/{source.sample_id}"
    arrays: dict[str, Any] = {}
    for a, b in frame_blocks(run, names):
        perms = np.stack(
            [shuffle_permutation(seed, f"{source.sample_id}/{f}", points) for f in range(a, b)]
        )
        for name in names:
            values = _narrow(run[name][a:b], targets[name], name, _at(source, a))
            index = perms.reshape(perms.shape + (1,) * (values.ndim - 2))
            shuffled = np.take_along_axis(values, index, axis=1)
            shape = (frames, *values.shape[1:])
            dims = ("frame", "point", *run[name].dims[2:])
            chunks = (1, *_chunk_shape(chunk, values.shape[1:]))
            meta = array_metadata(shape, shuffled.dtype, chunks, codec, dims)
            node = nodes[name]
            arrays[node] = _write_array(
                location, f"{group}/{node}", meta, a, shuffled, digest, arrays.get(node)
            )
    sizes = {
        n: _chunk_sizes(
            location.child(f"{group}/{n}"), (frames, math.ceil(points / chunk))
        ).tolist()
        for n in nodes.values()
    }
    columns = [("step", run.steps), ("time", run.times)]
    if run.systems is not None:
        columns.append((SYSTEM_COLUMN, run.systems.astype(np.int32)))
    for name, values in columns:
        meta = array_metadata(values.shape, values.dtype, (max(1, frames),), codec, ("frame",))
        _write_array(location, f"{group}/{name}", meta, 0, values, digest)
    _write_groups(location, group, list(nodes.values()), {"chunk_bytes": sizes})
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
