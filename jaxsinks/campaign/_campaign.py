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

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .._core.deprecation import deprecated_arguments
from .._core.errors import (
    ConfigError,
    StoreError,
    StoreExistsError,
    StoreNotFoundError,
)
from .._io import tsio
from .._io import writer as _writer
from .._io.layout import ATTRS_KEY
from .._io.location import Location, parse
from .._read.index import show
from .._read.reader import Run
from .._sinks.zarr_sink import ZarrSink
from . import _tables
from ._config import FinishEntry, RunConfig
from ._entry import (
    CAMPAIGN_SCHEMA_VERSION,
    MANIFEST_KEY,
    RUN_ID,
    STATUSES,
    RunEntry,
    check_entry,
    check_params,
    check_run_id,
    check_version,
    entry_key,
    now,
    params_match,
    run_key,
    write_entry,
)


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
        return cls(location, _header(doc, f"The campaign manifest {location}/{MANIFEST_KEY}"))

    def to_config(self) -> dict[str, Any]:
        """A JSON-able dict from which `from_config` reopens this campaign in any process."""
        return {"root": self.location.kvstore}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Campaign:
        """Reopen the campaign that `to_config` described.

        Raises:
            ConfigError: if `config` is not a dict with exactly the key ``"root"``.
        """
        if not isinstance(config, dict) or list(config) != ["root"]:
            got = list(config) if isinstance(config, dict) else show(config)
            raise ConfigError(
                "`config` must be a dict made by Campaign.to_config, with exactly the key 'root' "
                f"(the campaign root); got {got}. Rebuild it with Campaign.to_config."
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
            **options: `ZarrSink.create`'s options ``every``, ``chunk``, ``chunks_per_shard``,
                ``codec``, ``field_config``, ``per_system``, ``once``, ``ragged``,
                ``capacity``, ``overflow``, ``attrs``, ``time_dtype`` and
                ``max_inflight_bytes`` (the store and mode are the campaign's; ``table``,
                ``mesh`` and ``axis`` are not available in a campaign).

        Raises:
            StoreExistsError: if the campaign already has a run `run_id`.
            ConfigError: if `params` is not JSON, or an option is invalid.
        """
        return self.run_config(run_id, params=params, **options).create(frame, progress=progress)

    def mark_failed(self, run_id: str, reason: str) -> RunEntry:
        """Record run `run_id` as failed with `reason` (e.g. a stale run whose process died).

        A sink of that run still open in this process then closes as a plain `ZarrSink`, leaving
        the entry failed.

        Raises:
            ConfigError: if the campaign has no run `run_id` (listing its run ids); nothing is
                written then.
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
        """The entry of run `run_id` (its committed count read live from the run while it runs,
        and after it failed).

        Raises:
            ConfigError: if `run_id` is not a run id, or the campaign has no run `run_id` (the
                message lists its run ids).
        """
        raw = tsio.read_bytes(self.location.kvstore, entry_key(check_run_id(run_id)))
        if raw is None:
            ids = self.run_ids()
            known = (
                f"its runs are {ids if len(ids) <= 20 else ids[:20] + ['...']}"
                + ("" if len(ids) <= 20 else f" ({len(ids)} in all)")
                if ids
                else "it has no runs yet"
            )
            raise ConfigError(
                f"`run_id` is '{run_id}', but the campaign at {self.location} has no run "
                f"'{run_id}'; {known}. Pass one of those ids (campaign.run_ids() lists them), or "
                "create the run with campaign.create_run."
            )
        return self._live([self._parse_entry(raw, run_id)])[0]

    def run_ids(self) -> list[str]:
        """The ids of every run with an entry, sorted.

        Only ``entries/<run_id>.json`` files of a valid run id count: another file there (a
        macOS ``._<id>.json``, an editor's backup) is not a run's entry, and is left out.
        """
        return run_ids_of(tsio.list_keys(self.location.child("entries")))

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
            params: keep runs whose parameters include these: the same values of the same JSON
                type, so ``{"x": 1}`` selects neither a run with ``x`` ``True`` nor one with
                ``1.0`` (``==`` makes them equal; here they are three values).
            where: keep runs for which ``where(entry)`` is true.

        Raises:
            ConfigError: for a `status` not among those, `params` that are not JSON, or a
                `where` that is not callable.
        """
        wanted = _statuses(status)
        wanted_params = None if params is None else check_params(params, "params")
        if where is not None and not callable(where):
            raise ConfigError(
                f"`where` must be a function of a RunEntry returning a bool, or None; got "
                f"{type(where).__name__} {show(where)}."
            )
        ids = self.run_ids()

        raws = tsio.read_all(self.location.kvstore, [entry_key(i) for i in ids])
        # None: removed since it was listed
        stored = [self._parse_entry(raw, i) for i, raw in zip(ids, raws) if raw is not None]
        entries = self._live(stored)
        out = []
        for e in entries:
            if wanted is not None and e.status not in wanted:
                continue
            if wanted_params is not None and not params_match(e.params, wanted_params):
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
        doc = check_entry(check_version(doc, what), run_id, what)
        names = [f.name for f in dataclasses.fields(RunEntry) if f.name != "store"]
        return RunEntry(**{n: doc[n] for n in names}, store=self.location.child(run_key(run_id)))

    def _live(self, entries: list[RunEntry]) -> list[RunEntry]:
        """`entries`, the running and failed ones as their runs stand (`_as_run_stands`), from
        their runs' metadata read concurrently."""
        unfinished = [i for i, e in enumerate(entries) if e.status != "closed"]
        keys = [f"{run_key(entries[i].run_id)}/zarr.json" for i in unfinished]
        out = list(entries)
        for i, raw in zip(unfinished, tsio.read_all(self.location.kvstore, keys)):
            out[i] = _as_run_stands(entries[i], raw)
        return out

    # ------------------------------------------------------------------------- reading

    def open_run(self, run_id: str) -> Run:
        """The run `run_id`, for reading (`jaxsinks.Run`).

        Raises:
            ConfigError: if the campaign has no run `run_id` (listing its run ids).
        """
        return self.entry(run_id).open()

    def frames(
        self, fields: str | Iterable[str] | None = None, **selection: Any
    ) -> Iterator[dict[str, Any]]:
        """Every frame of the selected runs (run by run, in order) as a dict.

        Each frame holds the `fields` (default: all of each run's fields), ``step``, ``time``
        (and ``system``) and ``run`` (the run id). A field named like one of those columns is
        under its stored name, as in `to_xarray`: ``run_`` for a field ``run`` (``time_`` for
        ``time``), beside the ``run`` column; ``run__`` if a field ``run_`` is there too.
        `selection` is passed to `runs` (``status=``, ``params=``, ``where=``).

        Raises:
            FieldNotFoundError: (a `KeyError`) before any frame, listing every selected run that
                lacks one of `fields`, with its fields.
        """
        names = _tables.field_list(fields)  # refused before any entry is read
        return _tables.frames(self.runs(**selection), names)

    def to_xarray(self, fields: Iterable[str] | None = None, **selection: Any) -> Any:
        """The selected runs' frames of `fields` as one `xarray.Dataset`, concatenated along
        ``frame``.

        Coordinates along ``frame``: ``run`` (the run id), ``step``, ``time``, ``system`` (of
        per-system runs, as in `Run.to_xarray`), and ``param_<key>`` for each scalar parameter
        that every selected run has. A field named like a coordinate or the dimension ``frame``
        is the variable of its stored name: ``run_`` for a field ``run``, ``frame_`` for
        ``frame``, ``time_`` for ``time``, ``param_T_`` for ``param_T`` beside a parameter
        ``T``; its first part takes another ``_`` while that name is taken (``param_T__`` beside
        a parameter ``T_``, ``run__`` beside a field ``run_``), so every field and coordinate
        keeps its own name, the same whichever `fields` are selected. A ``param_<key>``
        coordinate has the dtype pandas gives such a column: bool, int64, float64 (ints beside
        floats become floats) or str when every run's value is of that kind, else object,
        keeping each value as it is (``True`` beside ``1``, or ``1`` beside ``"a"``: no value
        becomes a string). The fields must have the same shape, dtype and axis names in every
        selected run, and the runs must all be per-system or all not.

        Args:
            fields: field names (default: those of the first run). Ragged fields are not supported.
            **selection: passed to `runs` (``status=``, ``params=``, ``where=``).

        Raises:
            SchemaMismatchError: listing every run whose field differs from the first run's, and
                per-system runs beside runs that are not.
            ConfigError: if no run is selected.
        """
        entries = self.runs(**selection)
        if not entries:
            raise ConfigError(
                f"No run of the campaign at {self.location} matches {selection or 'the selection'}."
            )
        return _tables.to_xarray(entries, fields, str(self.location))


def _header(doc: Any, what: str) -> dict[str, Any]:
    """The header of the manifest `doc` (described by `what`, naming its file); a StoreError if
    this jaxsinks does not read its version, or it is damaged (`attrs` not a JSON object)."""
    doc = check_version(doc, what)
    header = {k: doc.get(k) for k in ("schema_version", "kind", "created", "attrs")}
    if not isinstance(header["attrs"], (dict, type(None))):
        raise StoreError(
            f"{what} is damaged: its 'attrs' must be a JSON object (the campaign's attributes), "
            f"but it is {type(header['attrs']).__name__} {show(header['attrs'])}. Restore the file "
            "from a copy, or set its 'attrs' to an object ({} for none)."
        )
    return header


def _statuses(status: str | Iterable[str] | None) -> set[str] | None:
    if status is None:
        return None
    wanted: list[Any]
    try:
        wanted = [status] if isinstance(status, str) else list(status)
    except TypeError:  # not iterable
        wanted = [status]
    bad = [s for s in wanted if not isinstance(s, str) or s not in STATUSES]
    if bad:
        raise ConfigError(
            f"`status` must be one of {list(STATUSES)} or an iterable of them; got "
            f"{show(status)}, with {show(bad)} not among them."
        )
    return set(wanted)


def run_ids_of(keys: Iterable[str]) -> list[str]:
    """The run ids that the keys under a campaign's ``entries/`` name, sorted: those of
    ``<run_id>.json`` files whose name is a valid run id (`check_run_id`), and no others."""
    ids = (k.removesuffix(".json") for k in keys if k.endswith(".json"))
    return sorted(i for i in ids if RUN_ID.fullmatch(i))


def _as_run_stands(entry: RunEntry, raw: bytes | None) -> RunEntry:
    """A running or failed entry with the committed count read from its run's metadata `raw`,
    and a running one with the run's final status if its entry was not finished (a failed one
    stays failed: its sink, still open, may go on committing after `Campaign.mark_failed`). The
    entry as it is where the run's metadata is missing or unreadable (a run killed while
    created)."""
    if raw is None:
        return entry
    try:
        meta = json.loads(raw)["attributes"][ATTRS_KEY]
        committed = meta.get("committed", 0)
    except (ValueError, KeyError, TypeError, AttributeError):
        return entry
    if isinstance(committed, bool) or not isinstance(committed, int) or committed < 0:
        return entry
    if entry.status == "failed":
        return dataclasses.replace(entry, committed=committed)
    status = {"closed": "closed", "failed": "failed"}.get(meta.get("status"), "running")
    return dataclasses.replace(entry, committed=committed, status=status)
