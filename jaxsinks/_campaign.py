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
import datetime
import json
import math
import os
import pathlib
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from . import _tsio as tsio
from . import _writer
from ._codecs import Blosc, FieldConfig, Zstd
from ._errors import ConfigError, JaxsinksError, SchemaMismatchError, StoreError, StoreExistsError, StoreNotFoundError
from ._layout import ATTRS_KEY, Ragged
from ._location import Location, parse
from ._pytree import pytree_dataclass
from ._reader import Run
from ._reader import open as open_run
from ._schedule import Every, Interval, Times, When
from ._sink import host_int
from ._zarr_sink import ZarrSink

#: The version of the manifest and entry JSON this jaxsinks writes (and the newest it reads).
CAMPAIGN_SCHEMA_VERSION = 1
MANIFEST_KEY = "manifest.json"
STATUSES = ("running", "closed", "failed")
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]{0,127}")
#: Options of `ZarrSink.create` a campaign run takes (the store and mode are the campaign's).
RUN_OPTIONS = ("every", "chunk", "chunks_per_shard", "codec", "fields", "per_system", "once", "ragged",
               "capacity", "overflow", "attrs", "time_dtype", "max_inflight_bytes")
#: The option types `RunConfig.to_config` can write as JSON.
_CONFIG_TYPES = {t.__name__: t for t in (Blosc, Zstd, FieldConfig, Every, Interval, Times, Ragged)}


# --------------------------------------------------------------------------------- entries


@dataclasses.dataclass(frozen=True)
class RunEntry:
    """One run of a campaign, as listed by `Campaign.runs`.

    Attributes:
        run_id: the run's id, unique in its campaign.
        status: ``"running"``, ``"closed"`` or ``"failed"``. A process killed while recording
            leaves its run ``"running"``: see `alive` and `stale`.
        params: the run's parameters (JSON).
        schema: the run's frame schema (fields with shapes and dtypes, chunking).
        committed: the frames committed (for a running run, read live from the run itself).
        created: when the run was created (ISO 8601, UTC).
        closed: when it was closed or failed (None while running).
        error: why it failed (None otherwise).
        host, pid, boot_id, pid_start: the recording process, used by `alive`.
        store: the run's kvstore spec (open it with `open`).
    """

    run_id: str
    status: str
    params: dict[str, Any]
    schema: dict[str, Any]
    committed: int
    created: str
    closed: str | None
    error: str | None
    host: str
    pid: int
    boot_id: str | None
    pid_start: int | None
    store: dict[str, Any] = dataclasses.field(repr=False, compare=False)

    @property
    def alive(self) -> bool | None:
        """Whether the recording process is still alive: None if it ran on another host.

        On this host a process is dead if its pid is gone, is a zombie, or now belongs to a process
        started at another time (pid reuse), or if the machine rebooted since (Linux boot id).
        """
        return process_alive(self.host, self.pid, self.boot_id, self.pid_start)

    @property
    def stale(self) -> bool:
        """A ``"running"`` entry whose process is known to be dead (it crashed or was killed)."""
        return self.status == "running" and self.alive is False

    def open(self) -> Run:
        """The run, for reading (its committed frames)."""
        return open_run(Location(self.store))

    def to_json(self) -> dict[str, Any]:
        """The entry as stored (without the store spec, which follows from the campaign root)."""
        out = {"schema_version": CAMPAIGN_SCHEMA_VERSION}
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "store"})
        return out


def process_alive(host: str, pid: int, boot_id: str | None, pid_start: int | None) -> bool | None:
    """Whether process `pid` of `host` still runs; None when `host` is not this machine."""
    if host != socket.gethostname():
        return None
    if boot_id is not None and _boot_id() not in (None, boot_id):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc: the pid exists, which is all we can tell
    state, start = stat
    return state not in ("Z", "X") and (pid_start is None or start == pid_start)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """``(state, start time in clock ticks since boot)`` from Linux's ``/proc/<pid>/stat``."""
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return rest[0], int(rest[19])


def _boot_id() -> str | None:
    try:
        return pathlib.Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def _check_version(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise StoreError(f"{what} is not a JSON object; it was not written by jaxsinks.")
    version = doc.get("schema_version")
    if not isinstance(version, int) or version > CAMPAIGN_SCHEMA_VERSION:
        raise StoreError(
            f"{what} was written with campaign schema version {version}; this jaxsinks reads "
            f"versions up to {CAMPAIGN_SCHEMA_VERSION}. Upgrade jaxsinks to read it."
        )
    return doc


def _entry_key(run_id: str) -> str:
    return f"entries/{run_id}.json"


def check_run_id(run_id: Any) -> str:
    """`run_id` if it is a valid run id (it names a directory and an object), else a ConfigError."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise ConfigError(
            f"`run_id` must be 1 to 128 letters, digits and '._=+-', starting with a letter or a "
            f"digit; got {run_id!r}. Put other information in `params`."
        )
    return run_id


def check_params(params: Any, where: str = "params") -> dict[str, Any]:
    """`params` as a JSON object (str keys; str, int, finite float, bool, None, lists, dicts)."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ConfigError(f"`{where}` must be a dict of JSON values; got {type(params).__name__}.")
    _check_json(params, where)
    return json.loads(json.dumps(params))


def _check_json(value: Any, where: str) -> None:
    if value is None or isinstance(value, (bool, str, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"`{where}` is {value}, which JSON cannot hold. Store it as a string.")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"`{where}` has the key {key!r}; JSON object keys must be strings.")
            _check_json(item, f"{where}[{key!r}]")
        return
    raise ConfigError(
        f"`{where}` is a {type(value).__module__}.{type(value).__name__}, which is not JSON. Use str, "
        "int, float, bool, None, lists and dicts (convert numpy values with .item() or .tolist())."
    )


# ------------------------------------------------------------------------- run configuration


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything needed to create one run of a campaign, in this process or in a worker.

    Picklable, and JSON-able with `to_config` / `from_config` (unless the schedule is a `When`,
    whose predicate is a Python function: pickle the config then). Build it with
    `Campaign.run_config`; a worker calls `create` with an example frame.

    Attributes:
        root: the campaign root's kvstore spec.
        run_id: the run's id.
        params: the run's parameters (JSON).
        options: keyword arguments for `ZarrSink.create` (``every``, ``chunk``, ``codec``, ...).
    """

    root: dict[str, Any]
    run_id: str
    params: dict[str, Any]
    options: dict[str, Any]

    def __post_init__(self) -> None:
        check_run_id(self.run_id)
        object.__setattr__(self, "params", check_params(self.params))
        unknown = sorted(set(self.options) - set(RUN_OPTIONS))
        if unknown:
            raise ConfigError(
                f"A campaign run takes the ZarrSink.create options {list(RUN_OPTIONS)}; got {unknown}. The "
                "store and mode are the campaign's; pass `progress` to RunConfig.create."
            )
        options = dict(self.options)
        if options.get("time_dtype") is not None:  # jnp.float32 and friends become numpy dtypes
            try:
                options["time_dtype"] = np.dtype(options["time_dtype"])
            except TypeError:
                raise ConfigError(f"`time_dtype` must be a floating dtype; got {options['time_dtype']!r}.") from None
        object.__setattr__(self, "options", options)

    @property
    def store(self) -> dict[str, Any]:
        """The run's kvstore spec: ``runs/<run_id>/`` under the campaign root."""
        return Location(self.root).child(f"runs/{self.run_id}")

    def create(self, frame: Any, *, progress: Any = None) -> ZarrSink:
        """Create the run and its ``"running"`` entry; return its sink.

        The sink is a `ZarrSink` whose close (by `jaxsinks.close`) records the entry as
        ``"closed"`` with the committed count, or as ``"failed"`` with the error.

        Raises:
            StoreExistsError: if the campaign already has a run with this id.
        """
        root = Location(self.root)
        existing = tsio.read_bytes(root.kvstore, _entry_key(self.run_id))
        if existing is not None:
            raise StoreExistsError(_duplicate_message(root, self.run_id, existing))
        try:
            sink = CampaignSink.create(self.store, frame, mode="w-", progress=progress, **self.options)
        except StoreExistsError:
            raise StoreExistsError(
                f"The campaign at {root} already holds a run store 'runs/{self.run_id}' (without an "
                "entry yet: another process may be creating it). Choose another run id."
            ) from None
        host, pid = socket.gethostname(), os.getpid()
        stat = _proc_stat(pid)
        entry = RunEntry(
            run_id=self.run_id, status="running", params=self.params, schema=sink.layout.schema(),
            committed=0, created=_now(), closed=None, error=None, host=host, pid=pid, boot_id=_boot_id(),
            pid_start=None if stat is None else stat[1], store=self.store,
        )
        try:
            _write_entry(root, entry)
        except StoreError:
            sink.close()
            raise
        with _OPEN_LOCK:
            _OPEN[host_int(sink.writer, "ZarrSink")] = (root, entry)
        return sink

    def to_config(self) -> dict[str, Any]:
        """A JSON-able dict from which `from_config` rebuilds this config (in any process)."""
        return {"root": self.root, "run_id": self.run_id, "params": self.params,
                "options": {k: _encode(v, f"options[{k!r}]") for k, v in self.options.items()}}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RunConfig:
        """The config that `to_config` described."""
        try:
            root, run_id, params, options = (config[k] for k in ("root", "run_id", "params", "options"))
        except (KeyError, TypeError):
            raise ConfigError(
                "`config` must be a dict made by RunConfig.to_config, with keys 'root', 'run_id', "
                f"'params' and 'options'; got {config!r:.80}."
            ) from None
        return cls(root=dict(root), run_id=run_id, params=params,
                   options={k: _decode(v) for k, v in options.items()})


def _duplicate_message(root: Location, run_id: str, existing: bytes) -> str:
    try:
        doc = json.loads(existing)
        what = f" (status {doc.get('status')!r}, created {doc.get('created')})"
    except ValueError:
        what = ""
    return (f"The campaign at {root} already has a run '{run_id}'{what}. Run ids are unique in a "
            "campaign: choose another id, or read the existing run with campaign.open_run.")


def _encode(value: Any, where: str) -> Any:
    if isinstance(value, When):
        raise ConfigError(
            f"`{where}` is a When schedule, whose predicate is a Python function that JSON cannot "
            "hold. Pickle the RunConfig instead (with a module-level predicate), or use Every, "
            "Interval or Times."
        )
    if type(value).__name__ in _CONFIG_TYPES and dataclasses.is_dataclass(value):
        fields = {f.name: _encode(getattr(value, f.name), where) for f in dataclasses.fields(value)}
        return {"__jaxsinks__": type(value).__name__, **fields}
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return {"__jaxsinks__": "dtype", "name": np.dtype(value).name}
    if isinstance(value, (list, tuple)):
        return [_encode(v, where) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v, f"{where}[{k!r}]") for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ConfigError(f"`{where}` is a {type(value).__name__}, which a JSON run config cannot hold.")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get("__jaxsinks__")
    if kind is None:
        return {k: _decode(v) for k, v in value.items()}
    if kind == "dtype":
        return np.dtype(value["name"])
    if kind not in _CONFIG_TYPES:
        raise ConfigError(f"A run config holds an option of unknown type {kind!r}; it was written by another jaxsinks.")
    return _CONFIG_TYPES[kind](**{k: _decode(v) for k, v in value.items() if k != "__jaxsinks__"})


# ------------------------------------------------------------------------- the sink's close

_OPEN: dict[int, tuple[Location, RunEntry]] = {}
_OPEN_LOCK = threading.Lock()


@pytree_dataclass
class CampaignSink(ZarrSink):
    """A `ZarrSink` recording one run of a campaign: closing it also finishes the run's entry."""

    def close(self) -> CampaignSink:
        """Close the run (see `StreamSink.close`), then record its entry as closed or failed."""
        writer_id = host_int(self.writer, type(self).__name__)
        writer = _writer.lookup(writer_id)
        with _OPEN_LOCK:
            pending = _OPEN.pop(writer_id, None) if writer is not None else None
        if pending is None:
            return super().close()
        root, entry = pending
        try:
            closed = super().close()
        except JaxsinksError as err:
            _finish(root, entry, "failed", writer.committed, f"{type(err).__name__}: {err}")
            raise
        _finish(root, entry, "closed", writer.committed, None)
        return closed


def _finish(root: Location, entry: RunEntry, status: str, committed: int, error: str | None) -> None:
    _write_entry(root, dataclasses.replace(entry, status=status, committed=committed, closed=_now(), error=error))


def _write_entry(root: Location, entry: RunEntry) -> None:
    text = json.dumps(entry.to_json(), indent=1, allow_nan=False)
    tsio.write_bytes(root.kvstore, _entry_key(entry.run_id), text.encode())


# -------------------------------------------------------------------------------- campaign


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
    def create(cls, root: Any, *, attrs: dict[str, Any] | None = None, exist_ok: bool = False) -> Campaign:
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
            raise StoreExistsError(f"A campaign already exists at {location}. Open it with Campaign.open, "
                                   "pass exist_ok=True, or choose another root.")
        if tsio.list_keys(location.kvstore):
            raise StoreExistsError(f"{location} is not empty and holds no campaign manifest. Choose an "
                                   "empty or new root for the campaign.")
        header = {"schema_version": CAMPAIGN_SCHEMA_VERSION, "kind": "jaxsinks.campaign",
                  "created": _now(), "attrs": attrs}
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
            raise StoreNotFoundError(f"There is no campaign at {location} (no {MANIFEST_KEY} there). "
                                     "Create one with Campaign.create.")
        try:
            doc = json.loads(raw)
        except ValueError:
            raise StoreError(f"{location}/{MANIFEST_KEY} is not valid JSON.") from None
        doc = _check_version(doc, f"The campaign manifest {location}/{MANIFEST_KEY}")
        header = {k: doc.get(k) for k in ("schema_version", "kind", "created", "attrs")}
        return cls(location, header)

    def to_config(self) -> dict[str, Any]:
        """A JSON-able dict from which `from_config` reopens this campaign in any process."""
        return {"root": self.location.kvstore}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Campaign:
        """Reopen the campaign that `to_config` described."""
        if not isinstance(config, dict) or "root" not in config:
            raise ConfigError(f"`config` must be a dict made by Campaign.to_config; got {config!r:.80}.")
        return cls.open(config["root"])

    @property
    def attrs(self) -> dict[str, Any]:
        """The campaign's JSON attributes."""
        return dict(self.header.get("attrs") or {})

    def __repr__(self) -> str:
        return f"Campaign({self.location})"

    # ------------------------------------------------------------------------- writing

    def run_config(self, run_id: str, *, params: dict[str, Any] | None = None, **options: Any) -> RunConfig:
        """The `RunConfig` of a new run: its id, its parameters and `ZarrSink.create` options."""
        return RunConfig(root=self.location.kvstore, run_id=run_id, params=params or {}, options=options)

    def create_run(self, run_id: str, frame: Any, *, params: dict[str, Any] | None = None,
                   progress: Any = None, **options: Any) -> ZarrSink:
        """Create the run `run_id` and return its sink; `jaxsinks.close` finishes its entry.

        Args:
            run_id: unique in the campaign: letters, digits and ``._=+-``.
            frame: an example frame, as for `ZarrSink.create`.
            params: the run's parameters (JSON), for filtering and for the manifest.
            progress: a `Progress` bar for this run.
            **options: any `ZarrSink.create` option but `store` and `mode` (``every``,
                ``chunk``, ``codec``, ``fields``, ...).

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
        with _OPEN_LOCK:
            for key, (_, open_entry) in list(_OPEN.items()):
                if open_entry.run_id == run_id and open_entry.store == entry.store:
                    del _OPEN[key]
        failed = dataclasses.replace(entry, status="failed", closed=_now(), error=str(reason))
        _write_entry(self.location, failed)
        return failed

    def consolidate(self) -> dict[str, Any]:
        """Write ``manifest.json`` with every entry as listed now, and return it.

        Safe to call from several processes: each writes a complete snapshot in one atomic write.
        Listing never depends on it: the entries stay the source of truth.
        """
        return self._write_manifest(self.runs())

    def _write_manifest(self, entries: list[RunEntry]) -> dict[str, Any]:
        doc = dict(self.header, consolidated=_now(), runs=[e.to_json() for e in entries])
        tsio.write_bytes(self.location.kvstore, MANIFEST_KEY, json.dumps(doc, indent=1, allow_nan=False).encode())
        return doc

    # ------------------------------------------------------------------------- listing

    def entry(self, run_id: str) -> RunEntry:
        """The entry of run `run_id` (its committed count read live while it runs).

        Raises:
            KeyError: if the campaign has no run `run_id`.
        """
        raw = tsio.read_bytes(self.location.kvstore, _entry_key(check_run_id(run_id)))
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
            raws = list(pool.map(lambda i: tsio.read_bytes(self.location.kvstore, _entry_key(i)), ids))
        entries = [self._parse_entry(raw, i) for i, raw in zip(ids, raws) if raw is not None]
        out = []
        for e in entries:
            if wanted is not None and e.status not in wanted:
                continue
            if params is not None and not all(k in e.params and e.params[k] == v for k, v in params.items()):
                continue
            if where is not None and not where(e):
                continue
            out.append(e)
        return out

    def __len__(self) -> int:
        return len(self.run_ids())

    def _parse_entry(self, raw: bytes, run_id: str) -> RunEntry:
        what = f"The entry {self.location}/{_entry_key(run_id)}"
        try:
            doc = json.loads(raw)
        except ValueError:
            raise StoreError(f"{what} is not valid JSON.") from None
        doc = _check_version(doc, what)
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

    def frames(self, fields: Iterable[str] | None = None, **selection: Any) -> Iterator[dict[str, Any]]:
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
                raise KeyError(f"Run '{entry.run_id}' has no fields {missing}; its fields are {list(run.fields)}.")
            block = int(run.meta["schema"].get("chunk", 64))
            for start in range(0, len(run), block):
                part = run[start : start + block]
                columns = {"step": part.steps, "time": part.times}
                if run.per_system:
                    columns["system"] = part.systems
                values = {name: part[name][:] for name in chosen}  # ragged: a list per frame
                for i in range(len(part)):
                    frame = {name: v[i] for name, v in values.items()}
                    frame.update({k: v[i] for k, v in columns.items()})
                    frame["run"] = entry.run_id
                    yield frame

    def to_xarray(self, fields: Iterable[str] | None = None, **selection: Any) -> Any:
        """The selected runs' frames of `fields` as one `xarray.Dataset`, concatenated along ``frame``.

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
            raise ConfigError(f"No run of the campaign at {self.location} matches {selection or 'the selection'}.")
        runs = [e.open() for e in entries]
        names = list(runs[0].fields) if fields is None else list(fields)
        _check_agree(entries, runs, names)
        parts = []
        for entry, run in zip(entries, runs):
            data = {name: (run[name].dims, run[name][:]) for name in names}
            coords = {"run": ("frame", np.full(len(run), entry.run_id, dtype=object)),
                      "step": ("frame", run.steps), "time": ("frame", run.times)}
            parts.append(xr.Dataset(data, coords=coords))
        dataset = xr.concat(parts, dim="frame", data_vars="all", coords="different", compat="equals", join="exact")
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
    first = {}
    problems = []
    for entry, run in zip(entries, runs):
        for name in names:
            if name not in run.fields:
                problems.append(f"run '{entry.run_id}' has no field '{name}'")
                continue
            if name in _ragged(run):
                raise ConfigError(f"Field '{name}' of run '{entry.run_id}' is ragged; to_xarray across runs "
                                  "takes only fields of a fixed shape.")
            view = run[name]
            got = (view.shape[1:], view.dtype.name, view.dims)
            want = first.setdefault(name, (entry.run_id, got))
            if got != want[1]:
                problems.append(f"field '{name}' is {_describe(got)} in run '{entry.run_id}' but "
                                f"{_describe(want[1])} in run '{want[0]}'")
    if problems:
        raise SchemaMismatchError(
            "The selected runs' schemas do not agree: " + "; ".join(problems)
            + ". Select runs of one schema (status=, params=, where=) or fewer fields."
        )


def _describe(spec: tuple[Any, ...]) -> str:
    shape, dtype, dims = spec
    return f"{dtype}{list(shape)} with axes {list(dims)}"


def _shared_scalar_params(entries: list[RunEntry]) -> list[str]:
    keys = set.intersection(*(set(e.params) for e in entries))
    scalar = (bool, int, float, str)
    return sorted(k for k in keys if all(isinstance(e.params[k], scalar) for e in entries))
