"""Reading a training export: `TrainingSet` draws random samples (one chunk each) as `Sample`s."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

from .._core.errors import ConfigError, StoreError, StoreNotFoundError
from .._core.types import EXPORT_BY
from .._io import tsio
from .._io.layout import check_schema_version
from .._io.location import Location, parse
from .._io.runs import zarr_attrs

#: The version of the export manifest this jaxsinks writes (and the newest it reads).
EXPORT_SCHEMA_VERSION = 1
#: The root group attribute that holds the manifest; written last, so an export without it is
#: incomplete.
EXPORT_KEY = "jaxsinks_export"
#: The export's own per-frame columns; a field of one of these names is stored renamed.
EXPORT_COLUMNS = ("run", "frame", "step", "time")
#: The column an export of per-system runs adds (and then reserves as a name, as a run does; a
#: frames export lists its columns in the manifest's ``columns``).
SYSTEM_COLUMN = "system"
#: A frame's ``system`` in a frames export that has the column, for a run that is not per-system.
NO_SYSTEM = -1


def positive_int(value: Any, name: str) -> int:
    """`value` as an int if it is one >= 1, else a ConfigError naming the argument `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(
            f"`{name}` must be an int >= 1 (a number of items); got {type(value).__name__} "
            f"{value!r}. Pass a positive int."
        )
    return int(value)


@dataclasses.dataclass(frozen=True)
class Sample:
    """A random sample drawn by `TrainingSet.sample`.

    Attributes:
        data: the values by field name, ``n`` along the first axis (a field named like one of the
            columns below is under its stored name, ``time_`` for ``time``: `TrainingSet.nodes`).
            A frames export also gives ``run`` (run ids), ``frame`` (the frame index in its run),
            ``step`` and ``time``, and, if some exported run is per-system, ``system`` (the
            frame's system; -1 for a frame of a run that is not per-system).
        sample_id: the run the points come from (a points export); None for a frames export.
        frame: the frame the points come from (a points export); None for a frames export.
        chunk: the index of the chunk read (along the shuffled axis); the items are a uniform
            random subset of it.
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

    def __init__(
        self, location: Location, manifest: dict[str, Any], generation: bytes = b""
    ) -> None:
        self.location = location
        self.manifest = manifest
        self._generation = generation  # the root zarr.json's as opened: unchanged, the same export
        self._arrays: dict[str, Any] = {}
        self._groups: dict[str, dict[str, Any]] = {}

    @classmethod
    def open(cls, store: Any) -> TrainingSet:  # noqa: A003
        """Open the export at `store`.

        Raises:
            StoreNotFoundError: if there is no complete export there.
            StoreError: if it was written by a newer jaxsinks (naming both versions), or its
                ``zarr.json`` or manifest is damaged (naming the file and what is wrong).
        """
        location = parse(store)
        raw, generation = tsio.read_versioned(location.kvstore, "zarr.json")
        if raw is None:
            raise StoreNotFoundError(
                f"There is no training export at {location} (no zarr.json there)."
            )
        manifest = stored_manifest(location, raw)
        if manifest is None:
            raise StoreNotFoundError(
                f"{location} is not a complete jaxsinks training export (no "
                f"'{EXPORT_KEY}' manifest). Export it again with export_training."
            )
        check_schema_version(manifest, f"The export at {location}", "export", EXPORT_SCHEMA_VERSION)
        return cls(location, check_manifest(location, manifest), generation)

    def check_current(self) -> None:
        """Raise unless the export at `location` is still the one opened: `sample` calls it after
        reading, so that no sample of an export replaced (or removed) since is returned.

        Raises:
            StoreError: the export was removed, is being rewritten or was replaced by another
                (another identity, ``export_id``) since it was opened; reopen it.
        """
        changed, raw, generation = tsio.read_if_changed(
            self.location.kvstore, "zarr.json", self._generation
        )
        if not changed:
            return
        now = None if raw is None else stored_manifest(self.location, raw)
        if now is not None and now.get("export_id") == self.manifest.get("export_id"):
            self._generation = generation  # rewritten alike (the same export again)
            return
        what = (
            "was removed"
            if raw is None
            else "no longer holds a complete export (it may be being replaced)"
            if now is None
            else "was replaced by another export"
        )
        raise StoreError(
            f"The training export at {self.location} {what} since this TrainingSet opened it, "
            "so what was just read may belong to another export (other runs, frames or "
            "fields); nothing read is returned. Open it again with "
            "jaxsinks.TrainingSet.open(...) once the new export is complete."
        )

    @property
    def by(self) -> str:
        """``"frames"`` or ``"points"``: what was shuffled."""
        return str(self.manifest["by"])

    @property
    def fields(self) -> tuple[str, ...]:
        """The exported fields, as recorded (a sample holds each under its stored name, `nodes`)."""
        return tuple(self.manifest["fields"])

    @property
    def nodes(self) -> tuple[str, ...]:
        """The exported fields' array names, the keys of `Sample.data`: a field whose name is one
        of the export's own columns (``run``, ``frame``, ``step``, ``time``, and ``system`` if
        some run is per-system; or under one of them) is stored with a trailing ``_`` (``time``
        as ``time_``), as in a run."""
        return tuple(f.get("node", n) for n, f in self.manifest["fields"].items())

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
        """Items per chunk along the shuffled axis (of run `sample_id`, for a points export).

        Raises:
            ConfigError: `sample_id` is not one of `sample_ids` (or not given, for a points
                export).
        """
        if self.by == "frames" and sample_id is None:
            return int(self.manifest["chunk"])
        for s in self.manifest["samples"]:
            if s["id"] == sample_id:
                return int(s["chunk"] if self.by == "points" else self.manifest["chunk"])
        raise ConfigError(
            f"`sample_id` is {sample_id!r}, but the export at {self.location} has no such run; "
            f"its runs are {list(self.sample_ids)}. Pass one of those"
            + (
                " (each run of a points export has its own chunk size)."
                if self.by == "points"
                else ", or None."
            )
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
            sizes = zarr_attrs(raw).get("chunk_bytes")
            if not isinstance(sizes, dict):
                raise damaged(
                    self.location, f"{group}/zarr.json", "has no 'chunk_bytes' attribute object"
                )
            self._groups[group] = sizes
        return self._groups[group]

    def _read(self, path: str, index: tuple[Any, ...]) -> np.ndarray:
        array, spec = self._array(path)
        return np.asarray(tsio.read_rows(array, index, spec))

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> Sample:
        """Draw `n` random frames (or points of one random frame) by reading one random chunk.

        A frames export reads a random chunk and returns `n` of its frames, a uniform random
        subset; a points export picks a run, a frame, and a chunk of its points, then `n` of them.
        Every item is equally likely to be drawn, except those in a chunk holding fewer than `n`
        items, which is never drawn (the last chunk, when the item count is not a multiple of the
        `sample_size` exported with; a run of a points export with fewer than `n` points). So
        with ``n`` equal to the sample size, make the item count a multiple of it to use every
        item. The shuffle is done once: the same chunks come back across epochs.

        Args:
            n: how many frames or points (an int >= 1, at most the sample size).
            rng: a numpy Generator, an int seed (>= 0) for one, or None (fresh entropy).

        Raises:
            ConfigError: `n` or `rng` is not one of those, or no chunk holds `n` items.
            StoreError: the export was replaced (or removed) since it was opened
                (`check_current`); reopen it with `TrainingSet.open`.
        """
        n = positive_int(n, "n")
        rng = generator(rng)
        try:
            sample = (
                self._sample_frames(n, rng) if self.by == "frames" else self._sample_points(n, rng)
            )
        except Exception:
            self.check_current()  # a replaced export reads as anything: say so first
            raise
        self.check_current()
        return sample

    def _too_many(self, n: int, largest: int, what: str) -> ConfigError:
        return ConfigError(
            f"`n` = {n} is more than a chunk of this export ({largest} {what}): one sample is "
            f"one chunk. Export with sample_size >= {n}, or draw several samples."
        )

    def _read_items(
        self,
        paths: dict[str, str],
        start: tuple[int, ...],
        length: int,
        n: int,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        """`n` items, a uniform random subset, of the chunk of `length` items at `start` (the
        last index along the shuffled axis) of the arrays at `paths` (by data key). The chunk is
        read whole, once: a chunk is the unit that is stored (and decompressed) anyway."""
        *lead, first = start
        index = (*lead, slice(first, first + length))
        data = {key: self._read(path, tuple(index)) for key, path in paths.items()}
        if n == length:  # the whole chunk: already in a random order
            return data
        picks = rng.choice(length, size=n, replace=False)
        return {key: values[picks] for key, values in data.items()}

    def _sample_frames(self, n: int, rng: np.random.Generator) -> Sample:
        total, chunk = len(self), self.chunk_size()
        if n > chunk:
            raise self._too_many(n, chunk, "frames")
        lengths = chunk_lengths(total, chunk)
        # A chunk in proportion to its length: each frame then has the same chance n / total.
        weights = np.where(lengths >= n, lengths, 0).astype(np.float64)
        c = int(rng.choice(len(lengths), p=weights / weights.sum()))
        columns = tuple(self.manifest.get("columns", EXPORT_COLUMNS))
        paths = {name: f"frames/{name}" for name in (*self.nodes, *columns)}
        data = self._read_items(paths, (c * chunk,), int(lengths[c]), n, rng)
        sizes = self._chunk_bytes("frames")
        ids = np.asarray(self.sample_ids, dtype=object)
        needed = sum(v.nbytes for v in data.values())
        data["run"] = ids[data["run"]]
        return Sample(data, None, None, c, sum(int(sizes[k][c]) for k in sizes), needed)

    def _sample_points(self, n: int, rng: np.random.Generator) -> Sample:
        samples = self.manifest["samples"]
        lengths = [chunk_lengths(int(s["points"]), int(s["chunk"])) for s in samples]
        largest = max((int(ls.max()) for ls in lengths if ls.size), default=0)
        if largest == 0:
            raise ConfigError(
                f"This export holds no points to draw: the frames of its runs "
                f"{list(self.sample_ids)} have 0 points each (a point axis of length 0). Export "
                "runs whose point-cloud fields have points, or by='frames'."
            )
        if n > largest:
            raise self._too_many(n, largest, "points")
        # A run by the points it has in chunks of >= n points (times its frames), then a frame,
        # then a chunk by its length: each of those points has the same chance.
        usable = [np.where(ls >= n, ls, 0).astype(np.float64) for ls in lengths]
        weights = np.array([s["frames"] * u.sum() for s, u in zip(samples, usable)])
        r = int(rng.choice(len(samples), p=weights / weights.sum()))
        s, chunk = samples[r], int(samples[r]["chunk"])
        f = int(rng.integers(s["frames"]))
        c = int(rng.choice(len(usable[r]), p=usable[r] / usable[r].sum()))
        group = f"samples/{s['id']}"
        paths = {name: f"{group}/{name}" for name in self.nodes}
        data = self._read_items(paths, (f, c * chunk), int(lengths[r][c]), n, rng)
        sizes = self._chunk_bytes(group)
        read = sum(int(sizes[name][f][c]) for name in self.nodes)
        return Sample(data, s["id"], f, c, read, sum(v.nbytes for v in data.values()))


def chunk_lengths(items: int, chunk: int) -> np.ndarray:
    """The number of items in each chunk of `chunk` items along an axis of `items`."""
    return np.minimum(chunk, items - chunk * np.arange(math.ceil(items / chunk)))


def generator(rng: Any) -> np.random.Generator:
    """`rng` (a numpy Generator, an int seed >= 0, or None for fresh entropy) as a Generator, or
    a ConfigError."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is not None and (
        isinstance(rng, bool) or not isinstance(rng, (int, np.integer)) or rng < 0
    ):
        raise ConfigError(
            "`rng` must be a numpy Generator (np.random.default_rng(...)), an int seed >= 0, or "
            f"None for fresh entropy; got {type(rng).__name__} {rng!r}. Pass one of those."
        )
    return np.random.default_rng(None if rng is None else int(rng))


def stored_manifest(location: Location, raw: bytes) -> dict[str, Any] | None:
    """The manifest in the root ``zarr.json`` bytes `raw` of the export at `location`; None if it
    has none (an incomplete export, or no export), a StoreError if the file is not JSON."""
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    attrs = doc.get("attributes", {}) if isinstance(doc, dict) else None
    if not isinstance(attrs, dict):
        raise damaged(location, "zarr.json", "is not a JSON object with an 'attributes' object")
    manifest = attrs.get(EXPORT_KEY)
    return manifest if isinstance(manifest, dict) else None


def check_manifest(location: Location, manifest: dict[str, Any]) -> dict[str, Any]:
    """`manifest` (of the export at `location`) if it says soundly what the export holds, else a
    StoreError naming each entry that is not."""

    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    by, fields, samples = (manifest.get(k) for k in ("by", "fields", "samples"))
    problems = []
    if by not in EXPORT_BY:
        problems.append(f"'by' is {by!r} (expected one of {list(EXPORT_BY)})")
    if not isinstance(fields, dict) or not all(isinstance(f, dict) for f in fields.values()):
        problems.append("'fields' is not an object of field descriptions by name")
    if not isinstance(samples, list) or not samples:
        problems.append("'samples' is not a non-empty list of runs")
    else:
        keys = ("id", "frames", "points", "chunk") if by == "points" else ("id", "frames")
        bad = [
            i
            for i, s in enumerate(samples)
            if not isinstance(s, dict)
            or not isinstance(s.get("id"), str)
            or not all(count(s.get(k)) for k in keys[1:])
        ]
        if bad:
            problems.append(f"'samples' {bad[:5]} do not each give {list(keys)}")
    if by == "frames" and not (count(manifest.get("chunk")) and manifest["chunk"] > 0):
        problems.append(f"'chunk' is {manifest.get('chunk')!r} (expected a count of frames)")
    if problems:
        raise damaged(
            location,
            "zarr.json",
            f"has a damaged manifest ('{EXPORT_KEY}'): " + "; ".join(problems),
        )
    return manifest


def damaged(location: Location, key: str, problem: str) -> StoreError:
    """The error for an export (at `location`) whose file `key` is damaged (`problem`)."""
    return StoreError(
        f"The training export at {location} is damaged: its file '{key}' {problem}. jaxsinks "
        "cannot tell what it holds, so it does not read it. Export it again (export_training "
        f"with mode='w'), or restore '{key}' from a copy."
    )
