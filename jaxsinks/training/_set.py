"""Reading a training export: `TrainingSet` draws random samples (one chunk each) as `Sample`s."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

from .._core.errors import ConfigError, StoreError, StoreNotFoundError
from .._io import tsio
from .._io.layout import check_schema_version
from .._io.location import Location, parse

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
        check_schema_version(manifest, f"The export at {location}", "export", EXPORT_SCHEMA_VERSION)
        return cls(location, manifest)

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
        """
        n = positive_int(n, "n")
        if not isinstance(rng, np.random.Generator):
            if rng is not None and (
                isinstance(rng, bool) or not isinstance(rng, (int, np.integer)) or rng < 0
            ):
                raise ConfigError(
                    "`rng` must be a numpy Generator (np.random.default_rng(...)), an int seed "
                    f">= 0, or None for fresh entropy; got {type(rng).__name__} {rng!r}. Pass "
                    "one of those."
                )
            rng = np.random.default_rng(None if rng is None else int(rng))
        if self.by == "frames":
            return self._sample_frames(n, rng)
        return self._sample_points(n, rng)

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
