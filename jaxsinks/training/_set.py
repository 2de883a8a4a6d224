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


def positive_int(value: Any, name: str) -> int:
    """`value` as an int if it is one >= 1, else a ConfigError naming the argument `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"`{name}` must be an int >= 1; got {value!r}.")
    return int(value)


@dataclasses.dataclass(frozen=True)
class Sample:
    """A random sample drawn by `TrainingSet.sample`.

    Attributes:
        data: the values by field name, ``n`` along the first axis (a field named like one of the
            columns below is under its stored name, ``time_`` for ``time``: `TrainingSet.nodes`).
            A frames export also gives ``run`` (run ids), ``frame`` (the frame index in its run),
            ``step`` and ``time``.
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
        of the export's own columns (``run``, ``frame``, ``step``, ``time``, or under one of them)
        is stored with a trailing ``_`` (``time`` as ``time_``), as in a run."""
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

        A frames export reads ``n`` frames from a random chunk; a points export picks a run (with
        probability proportional to its frames), a frame, and a chunk of its points. `n` must not
        exceed the chunk (the `sample_size` exported with); a last chunk shorter than `n` is
        never drawn, so with ``n`` equal to the sample size, make the item count a multiple of it
        to use every item. The shuffle is done once: the same chunks come back across epochs.

        Args:
            n: how many frames or points.
            rng: a numpy Generator, or a seed for one (None: fresh entropy).
        """
        n = positive_int(n, "n")
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
        data = {name: self._read(f"frames/{name}", rows) for name in (*self.nodes, *EXPORT_COLUMNS)}
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
        data = {name: self._read(f"{group}/{name}", index) for name in self.nodes}
        sizes = self._chunk_bytes(group)
        read = sum(int(sizes[name][f][c]) for name in self.nodes)
        return Sample(data, s["id"], f, c, read, sum(v.nbytes for v in data.values()))
