"""Campaign: many runs under one root, each recording its own entry; the manifest is assembled.

Layout of a campaign root (any store: a local path, ``memory://``, ``s3://``, ...)::

    manifest.json             the header (schema version, created, attrs) and, after
                              `Campaign.consolidate`, a snapshot of every entry
    entries/<run_id>.json     one per run, written only by the process recording that run
    runs/<run_id>/            the run itself: a jaxsinks Zarr group (`jaxsinks.open`)

Concurrent writers never share an object: each run writes its own entry ("running" at create,
"closed" or "failed" at close), and a key's write is atomic in every TensorStore kvstore. Listing
reads the entries, which are the source of truth; the consolidated manifest is a snapshot for
other readers, and two consolidations racing both write a complete, valid snapshot.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from .._core.deprecation import deprecated_arguments
from .._core.errors import (
    ConfigError,
    SchemaMismatchError,
    StoreError,
    StoreExistsError,
    StoreNotFoundError,
)
from .._core.frame import stored_name
from .._io import tsio
from .._io import writer as _writer
from .._io.layout import ATTRS_KEY
from .._io.location import Location, parse
from .._read.reader import Run
from .._sinks.zarr_sink import ZarrSink
from ._config import FinishEntry, RunConfig
from ._entry import (
    CAMPAIGN_SCHEMA_VERSION,
    STATUSES,
    RunEntry,
    check_params,
    check_run_id,
    check_version,
    entry_key,
    now,
    write_entry,
)

MANIFEST_KEY = "manifest.json"


@dataclasses.dataclass(frozen=True)
class Campaign:
    """Many runs under one root, each its own Zarr group, listed by a manifest.

    Create one with `Campaign.create`, open it with `Campaign.open` (or, in a worker process,
    `Campaign.from_config`), add runs with `create_run` and read them with `runs`, `open_run`,
    `frames` and `to_xarray`. Picklable.

    Attributes:
        location: the root.
        header: the manifest's header: ``schema_version``, ``created`` and ``attrs``.
    """

    location: Location
    header: dict[str, Any]

    @classmethod
    def create(
        cls, root: Any, *, attrs: dict[str, Any] | None = None, exist_ok: bool = False
    ) -> Campaign:
        """Create an empty campaign at `root` (a path, URL or kvstore spec).

        Args:
            root: where the campaign lives.
            attrs: JSON attributes of the whole campaign (e.g. what the sweep is about).
            exist_ok: open the campaign already at `root` instead of failing.

        Raises:
            StoreExistsError: if `root` holds a campaign (without `exist_ok`) or anything else.
        """
        location = parse(root)
        attrs = check_params(attrs, "attrs")
        if tsio.read_bytes(location.kvstore, MANIFEST_KEY) is not None:
            if exist_ok:
                return cls.open(location)
            raise StoreExistsError(
                f"A campaign already exists at {location}. Open it with Campaign.open, "
                "pass exist_ok=True, or choose another root."
            )
        if tsio.list_keys(location.kvstore):
            raise StoreExistsError(
                f"{location} is not empty and holds no campaign manifest. Choose an "
                "empty or new root for the campaign."
            )
        header = {
            "schema_version": CAMPAIGN_SCHEMA_VERSION,
            "kind": "jaxsinks.campaign",
            "created": now(),
            "attrs": attrs,
        }
        campaign = cls(location, header)
        campaign._write_manifest([])
        return campaign

    @classmethod
    def open(cls, root: Any) -> Campaign:  # noqa: A003 - mirrors jaxsinks.open
        """Open the campaign at `root`.

        Raises:
            StoreNotFoundError: if there is no campaign at `root`.
            StoreError: if its manifest was written by a newer jaxsinks (naming both versions).
        """
        location = parse(root)
        raw = tsio.read_bytes(location.kvstore, MANIFEST_KEY)
        if raw is None:
            raise StoreNotFoundError(
                f"There is no campaign at {location} (no {MANIFEST_KEY} there). "
                "Create one with Campaign.create."
            )
        try:
            doc = json.loads(raw)
        except ValueError:
            raise StoreError(f"{location}/{MANIFEST_KEY} is not valid JSON.") from None
        doc = check_version(doc, f"The campaign manifest {location}/{MANIFEST_KEY}")
        header = {k: doc.get(k) for k in ("schema_version", "kind", "created", "attrs")}
        return cls(location, header)

    def to_config(self) -> dict[str, Any]:
        """A JSON-able dict from which `from_config` reopens this campaign in any process."""
        return {"root": self.location.kvstore}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Campaign:
        """Reopen the campaign that `to_config` described."""
        if not isinstance(config, dict) or "root" not in config:
            raise ConfigError(
                f"`config` must be a dict made by Campaign.to_config; got {config!r:.80}."
            )
        return cls.open(config["root"])

    @property
    def attrs(self) -> dict[str, Any]:
        """The campaign's JSON attributes."""
        return dict(self.header.get("attrs") or {})

    def __repr__(self) -> str:
        return f"Campaign({self.location})"

    # ------------------------------------------------------------------------- writing

    @deprecated_arguments("Campaign.run_config", renamed={"fields": "field_config"})
    def run_config(
        self, run_id: str, *, params: dict[str, Any] | None = None, **options: Any
    ) -> RunConfig:
        """The `RunConfig` of a new run: its id, its parameters and `ZarrSink.create` options."""
        return RunConfig(
            root=self.location.kvstore, run_id=run_id, params=params or {}, options=options
        )

    @deprecated_arguments("Campaign.create_run", renamed={"fields": "field_config"})
    def create_run(
        self,
        run_id: str,
        frame: Any,
        *,
        params: dict[str, Any] | None = None,
        progress: Any = None,
        **options: Any,
    ) -> ZarrSink:
        """Create the run `run_id` and return its sink; `jaxsinks.close` finishes its entry.

        Args:
            run_id: unique in the campaign: letters, digits and ``._=+-``.
            frame: an example frame, as for `ZarrSink.create`.
            params: the run's parameters (JSON), for filtering and for the manifest.
            progress: a `Progress` bar for this run.
            **options: any `ZarrSink.create` option but `store` and `mode` (``every``,
                ``chunk``, ``codec``, ``field_config``, ...).

        Raises:
            StoreExistsError: if the campaign already has a run `run_id`.
            ConfigError: if `params` is not JSON, or an option is invalid.
        """
        return self.run_config(run_id, params=params, **options).create(frame, progress=progress)

    def mark_failed(self, run_id: str, reason: str) -> RunEntry:
        """Record run `run_id` as failed with `reason` (e.g. a stale run whose process died).

        A sink of that run still open in this process then closes as a plain `ZarrSink`, leaving
        the entry failed.
        """
        entry = self.entry(run_id)
        _writer.REGISTRY.detach_where(
            _writer.ON_CLOSE,
            lambda hook: (
                isinstance(hook, FinishEntry)
                and (hook.entry.run_id, hook.entry.store) == (run_id, entry.store)
            ),
        )
        failed = dataclasses.replace(entry, status="failed", closed=now(), error=str(reason))
        write_entry(self.location, failed)
        return failed

    def consolidate(self) -> dict[str, Any]:
        """Write ``manifest.json`` with every entry as listed now, and return it.

        Safe to call from several processes: each writes a complete snapshot in one atomic write.
        Listing never depends on it: the entries stay the source of truth.
        """
        return self._write_manifest(self.runs())

    def _write_manifest(self, entries: list[RunEntry]) -> dict[str, Any]:
        doc = dict(self.header, consolidated=now(), runs=[e.to_json() for e in entries])
        tsio.write_bytes(
            self.location.kvstore, MANIFEST_KEY, json.dumps(doc, indent=1, allow_nan=False).encode()
        )
        return doc

    # ------------------------------------------------------------------------- listing

    def entry(self, run_id: str) -> RunEntry:
        """The entry of run `run_id` (its committed count read live while it runs).

        Raises:
            KeyError: if the campaign has no run `run_id`.
        """
        raw = tsio.read_bytes(self.location.kvstore, entry_key(check_run_id(run_id)))
        if raw is None:
            raise KeyError(f"The campaign at {self.location} has no run '{run_id}'.")
        return self._parse_entry(raw, run_id)

    def run_ids(self) -> list[str]:
        """The ids of every run with an entry, sorted."""
        keys = tsio.list_keys(self.location.child("entries"))
        return sorted(k.removesuffix(".json") for k in keys if k.endswith(".json") and "/" not in k)

    def runs(
        self,
        *,
        status: str | Iterable[str] | None = None,
        params: dict[str, Any] | None = None,
        where: Callable[[RunEntry], bool] | None = None,
    ) -> list[RunEntry]:
        """The runs of the campaign, sorted by id, optionally filtered.

        Args:
            status: keep runs with this status (or one of these): ``"running"``, ``"closed"``,
                ``"failed"``. A crashed run stays ``"running"``; its entry's `stale` is True.
            params: keep runs whose parameters include these (equal values).
            where: keep runs for which ``where(entry)`` is true.
        """
        wanted = _statuses(status)
        ids = self.run_ids()
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, max(1, len(ids)))) as pool:
            raws = list(
                pool.map(lambda i: tsio.read_bytes(self.location.kvstore, entry_key(i)), ids)
            )
        entries = [self._parse_entry(raw, i) for i, raw in zip(ids, raws) if raw is not None]
        out = []
        for e in entries:
            if wanted is not None and e.status not in wanted:
                continue
            if params is not None and not all(
                k in e.params and e.params[k] == v for k, v in params.items()
            ):
                continue
            if where is not None and not where(e):
                continue
            out.append(e)
        return out

    def __len__(self) -> int:
        return len(self.run_ids())

    def _parse_entry(self, raw: bytes, run_id: str) -> RunEntry:
        what = f"The entry {self.location}/{entry_key(run_id)}"
        try:
            doc = json.loads(raw)
        except ValueError:
            raise StoreError(f"{what} is not valid JSON.") from None
        doc = check_version(doc, what)
        names = [f.name for f in dataclasses.fields(RunEntry) if f.name != "store"]
        missing = [n for n in names if n not in doc]
        if missing:
            raise StoreError(f"{what} lacks the keys {missing}; it was not written by jaxsinks.")
        entry = RunEntry(**{n: doc[n] for n in names}, store=self.location.child(f"runs/{run_id}"))
        return _live(entry) if entry.status == "running" else entry

    # ------------------------------------------------------------------------- reading

    def open_run(self, run_id: str) -> Run:
        """The run `run_id`, for reading (`jaxsinks.Run`)."""
        return self.entry(run_id).open()

    def frames(
        self, fields: Iterable[str] | None = None, **selection: Any
    ) -> Iterator[dict[str, Any]]:
        """Every frame of the selected runs (run by run, in order) as a dict.

        Each frame holds the `fields` (default: all of each run's fields), ``step``, ``time``
        (and ``system``) and ``run`` (the run id). `selection` is passed to `runs`
        (``status=``, ``params=``, ``where=``).
        """
        names = None if fields is None else list(fields)
        for entry in self.runs(**selection):
            run = entry.open()
            chosen = run.fields if names is None else names
            missing = [n for n in chosen if n not in run.fields]
            if missing:
                raise KeyError(
                    f"Run '{entry.run_id}' has no fields {missing}; its fields are "
                    f"{list(run.fields)}."
                )
            for frame in run.iter_frames(chosen):
                frame["run"] = entry.run_id
                yield frame

    def to_xarray(self, fields: Iterable[str] | None = None, **selection: Any) -> Any:
        """The selected runs' frames of `fields` as one `xarray.Dataset`, concatenated along
        ``frame``.

        Coordinates along ``frame``: ``run`` (the run id), ``step``, ``time``, and ``param_<key>``
        for each scalar parameter that every selected run has. The fields must have the same shape,
        dtype and axis names in every selected run.

        Args:
            fields: field names (default: those of the first run). Ragged fields are not supported.
            **selection: passed to `runs` (``status=``, ``params=``, ``where=``).

        Raises:
            SchemaMismatchError: listing every run whose field differs from the first run's.
        """
        import xarray as xr

        entries = self.runs(**selection)
        if not entries:
            raise ConfigError(
                f"No run of the campaign at {self.location} matches {selection or 'the selection'}."
            )
        runs = [e.open() for e in entries]
        names = list(runs[0].fields) if fields is None else list(fields)
        _check_agree(entries, runs, names)
        parts = []
        for entry, run in zip(entries, runs):
            # a field named like a coordinate (`time`, `run`) is `time_`, `run_`, as in a run
            nodes = {n: stored_name(run._nodes[n], ("run",)) for n in names}
            data = {nodes[name]: (run[name].dims, run[name][:]) for name in names}
            coords = {
                "run": ("frame", np.full(len(run), entry.run_id, dtype=object)),
                "step": ("frame", run.steps),
                "time": ("frame", run.times),
            }
            parts.append(xr.Dataset(data, coords=coords))
        dataset = xr.concat(
            parts, dim="frame", data_vars="all", coords="different", compat="equals", join="exact"
        )
        for key in _shared_scalar_params(entries):
            values = np.concatenate([np.full(len(r), e.params[key]) for e, r in zip(entries, runs)])
            dataset = dataset.assign_coords({f"param_{key}": ("frame", values)})
        dataset.attrs["campaign"] = str(self.location)
        return dataset


def _statuses(status: str | Iterable[str] | None) -> set[str] | None:
    if status is None:
        return None
    wanted = {status} if isinstance(status, str) else set(status)
    bad = sorted(wanted - set(STATUSES))
    if bad:
        raise ConfigError(f"`status` must be among {list(STATUSES)}; got {bad}.")
    return wanted


def _live(entry: RunEntry) -> RunEntry:
    """A running entry with the committed count (and final status) read from the run itself."""
    raw = tsio.read_bytes(entry.store, "zarr.json")
    if raw is None:
        return entry
    try:
        meta = json.loads(raw)["attributes"][ATTRS_KEY]
    except (ValueError, KeyError, TypeError):
        return entry
    status = {"closed": "closed", "failed": "failed"}.get(meta.get("status"), "running")
    return dataclasses.replace(entry, committed=int(meta.get("committed", 0)), status=status)


def _ragged(run: Run) -> set[str]:
    return set(run.ragged["fields"]) if run.ragged else set()


def _check_agree(entries: list[RunEntry], runs: list[Run], names: list[str]) -> None:
    first: dict[str, tuple[str, Any]] = {}
    problems = []
    for entry, run in zip(entries, runs):
        for name in names:
            if name not in run.fields:
                problems.append(f"run '{entry.run_id}' has no field '{name}'")
                continue
            if name in _ragged(run):
                raise ConfigError(
                    f"Field '{name}' of run '{entry.run_id}' is ragged; to_xarray across runs "
                    "takes only fields of a fixed shape."
                )
            view = run[name]
            got = (view.shape[1:], view.dtype.name, view.dims)
            want = first.setdefault(name, (entry.run_id, got))
            if got != want[1]:
                problems.append(
                    f"field '{name}' is {_describe(got)} in run '{entry.run_id}' but "
                    f"{_describe(want[1])} in run '{want[0]}'"
                )
    if problems:
        raise SchemaMismatchError(
            "The selected runs' schemas do not agree: "
            + "; ".join(problems)
            + ". Select runs of one schema (status=, params=, where=) or fewer fields."
        )


def _describe(spec: tuple[Any, ...]) -> str:
    shape, dtype, dims = spec
    return f"{dtype}{list(shape)} with axes {list(dims)}"


def _shared_scalar_params(entries: list[RunEntry]) -> list[str]:
    keys = set.intersection(*(set(e.params) for e in entries))
    scalar = (bool, int, float, str)
    return sorted(k for k in keys if all(isinstance(e.params[k], scalar) for e in entries))
