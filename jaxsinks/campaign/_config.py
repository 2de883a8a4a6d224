"""RunConfig: everything needed to create one run of a campaign, in this process or a worker.

A config is picklable and JSON-able (`to_config` / `from_config`), so a worker process can
rebuild it; `RunConfig.create` claims the run's id with its ``"running"`` entry, makes the run and
returns its `ZarrSink`, whose writer records the entry as closed or failed when the sink is closed
(`FinishEntry`, the writer's `on_close` hook).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
from typing import Any

import numpy as np

from .._core.deprecation import warn_deprecated
from .._core.errors import (
    ConfigError,
    StaleSinkError,
    StoreError,
    StoreExistsError,
    StoreNotFoundError,
    WriterConflictError,
)
from .._core.schedule import Every, Interval, Times, When
from .._core.sink import host_int
from .._io import tsio
from .._io import writer as _writer
from .._io.codecs import Blosc, FieldConfig, Zstd
from .._io.layout import Ragged
from .._io.location import Location, parse
from .._io.owner import now, proc_stat, this_boot_id
from .._read.index import show
from .._sinks.zarr_sink import ZarrSink
from ._entry import (
    MANIFEST_KEY,
    RunEntry,
    check_params,
    check_run_id,
    claim_entry,
    complete_entry,
    entry_key,
    finish_entry,
    release_entry,
    run_key,
    same_json,
)

log = logging.getLogger("jaxsinks")

#: Options of `ZarrSink.create` a campaign run takes (the store and mode are the campaign's).
RUN_OPTIONS = (
    "every",
    "chunk",
    "chunks_per_shard",
    "codec",
    "field_config",
    "per_system",
    "once",
    "ragged",
    "capacity",
    "overflow",
    "attrs",
    "time_dtype",
    "max_inflight_bytes",
)
#: The option types `RunConfig.to_config` can write as JSON.
_CONFIG_TYPES = {t.__name__: t for t in (Blosc, Zstd, FieldConfig, Every, Interval, Times, Ragged)}


@dataclasses.dataclass(frozen=True, eq=False)
class RunConfig:
    """Everything needed to create one run of a campaign, in this process or in a worker.

    Picklable, and JSON-able with `to_config` / `from_config` (unless the schedule is a `When`,
    whose predicate is a Python function: pickle the config then). Build it with
    `Campaign.run_config`; a worker calls `create` with an example frame.

    Attributes:
        root: the campaign root's kvstore spec (a directory: as `Campaign.open` reads it).
        run_id: the run's id.
        params: the run's parameters (JSON).
        options: keyword arguments for `ZarrSink.create` (``every``, ``chunk``, ``codec``, ...).
    """

    root: dict[str, Any]
    run_id: str
    params: dict[str, Any]
    options: dict[str, Any]

    def __post_init__(self) -> None:
        if not isinstance(self.root, dict):
            raise ConfigError(
                "`root` must be the campaign root's kvstore spec, a dict (`campaign.location"
                f".kvstore`, as RunConfig.to_config writes it); got {_show(self.root)}. Build "
                "the config with Campaign.run_config."
            )
        object.__setattr__(self, "root", _root_spec(self.root))
        check_run_id(self.run_id)
        object.__setattr__(self, "params", check_params(self.params))
        if not isinstance(self.options, dict):
            raise ConfigError(
                "`options` must be a dict of ZarrSink.create options by name (e.g. "
                f"{{'chunk': 64}}); got {_show(self.options)}."
            )
        not_names = [k for k in self.options if not isinstance(k, str)]
        if not_names:
            raise ConfigError(
                f"`options` must be keyed by option names (str) among {list(RUN_OPTIONS)}; got "
                f"the keys {not_names}."
            )
        options = _renamed_options(self.options)
        unknown = sorted(set(options) - set(RUN_OPTIONS))
        if unknown:
            raise ConfigError(
                f"A campaign run takes the ZarrSink.create options {list(RUN_OPTIONS)}; got "
                f"{unknown}. The store and mode are the campaign's; pass `progress` to "
                "RunConfig.create."
            )
        if options.get("time_dtype") is not None:  # jnp.float32 and friends become numpy dtypes
            try:
                options["time_dtype"] = np.dtype(options["time_dtype"])
            except (TypeError, ValueError):
                raise ConfigError(
                    f"`time_dtype` must be a floating dtype; got {options['time_dtype']!r}."
                ) from None
        object.__setattr__(self, "options", options)

    def __eq__(self, other: object) -> bool:
        """Configs are equal when they make the same run; parameters compare types included
        (`same_json`: ``{"x": True}`` is not ``{"x": 1}``)."""
        if not isinstance(other, RunConfig):
            return NotImplemented
        return (
            same_json(
                [self.root, self.run_id, self.params], [other.root, other.run_id, other.params]
            )
            and self.options == other.options
        )

    @property
    def store(self) -> dict[str, Any]:
        """The run's kvstore spec: ``runs/<run_id>/`` under the campaign root."""
        return Location(self.root).child(run_key(self.run_id))

    def create(self, frame: Any, *, progress: Any = None) -> ZarrSink:
        """Create the run and its ``"running"`` entry; return its sink.

        The entry is claimed first (written only if the run id has none: of processes creating
        one id at once, exactly one gets it), then the run store is created, then the entry
        completed with the run's schema. A process killed in between leaves a ``"running"``
        entry whose process is dead (`RunEntry.stale`), listed like any crashed run. If the
        run store cannot be created, the claim is withdrawn (the id is free again); if the
        entry cannot be completed, the run is closed and its entry recorded as ``"failed"``.
        The entry is completed only if it is still the claim: a run marked failed meanwhile
        (`Campaign.mark_failed`, by another process) stays failed, and its sink closes as after
        `mark_failed`.

        The sink is a `ZarrSink` whose close (by `jaxsinks.close`) records the entry as
        ``"closed"`` with the committed count, or as ``"failed"`` with the error.

        Raises:
            StoreNotFoundError: if there is no campaign at `root`.
            StoreExistsError: if the campaign already has a run with this id (or a run store
                'runs/<run_id>' without an entry, which is left as it is).
        """
        root = Location(self.root)
        if tsio.read_bytes(root.kvstore, MANIFEST_KEY) is None:
            raise StoreNotFoundError(
                f"`root` is {root}, where there is no campaign (no {MANIFEST_KEY} there), so the "
                f"run '{self.run_id}' would belong to none. Create the campaign with "
                "Campaign.create first, and build the config with its run_config."
            )
        claim = self._entry(schema={})
        generation = claim_entry(root, claim)
        if generation is None:
            existing = tsio.read_bytes(root.kvstore, entry_key(self.run_id))
            raise StoreExistsError(_duplicate_message(root, self.run_id, existing))
        try:
            sink = ZarrSink.create(self.store, frame, mode="w-", progress=progress, **self.options)
        except BaseException as error:  # a Ctrl-C too: the claim must not outlive the failure
            _withdraw(root, self.run_id, generation, error)
            if isinstance(error, (StoreExistsError, WriterConflictError)):
                raise StoreExistsError(_orphan_message(root, self.run_id, error)) from None
            raise
        entry = dataclasses.replace(claim, schema=sink.layout.schema())
        try:
            completed = complete_entry(root, entry, generation)
        except BaseException as error:
            _abandon(root, sink, entry, error)
            raise
        if completed is not None:  # else marked failed meanwhile: closes as after `mark_failed`
            writer = _writer.REGISTRY.get(host_int(sink.writer, "ZarrSink"))
            assert writer is not None  # just created
            writer.on_close(FinishEntry(root, entry, completed))
        return sink

    def _entry(self, schema: dict[str, Any]) -> RunEntry:
        """The ``"running"`` entry of this run, recorded by this process, with `schema`."""
        pid = os.getpid()
        stat = proc_stat(pid)
        return RunEntry(
            run_id=self.run_id,
            status="running",
            params=self.params,
            schema=schema,
            committed=0,
            created=now(),
            closed=None,
            error=None,
            host=socket.gethostname(),
            pid=pid,
            boot_id=this_boot_id(),
            pid_start=None if stat is None else stat[1],
            store=self.store,
        )

    def to_config(self) -> dict[str, Any]:
        """A JSON-able dict from which `from_config` rebuilds this config (in any process)."""
        return {
            "root": self.root,
            "run_id": self.run_id,
            "params": self.params,
            "options": {k: _encode(v, f"options[{k!r}]") for k, v in self.options.items()},
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RunConfig:
        """The config that `to_config` described.

        Raises:
            ConfigError: if `config` is not such a dict: a key missing or unknown, a value of the
                wrong type, or an option that does not decode (naming it and what was expected).
        """
        keys = ("root", "run_id", "params", "options")
        if not isinstance(config, dict):
            raise ConfigError(
                f"`config` must be a dict made by RunConfig.to_config, with the keys {list(keys)}; "
                f"got {_show(config)}."
            )
        missing = [k for k in keys if k not in config]
        unknown = [k for k in config if k not in keys]
        if missing or unknown:
            got = "".join(
                [
                    f" It lacks {missing}." if missing else "",
                    f" It has the unknown keys {unknown}." if unknown else "",
                ]
            )
            raise ConfigError(
                f"`config` must be a dict made by RunConfig.to_config, with exactly the keys "
                f"{list(keys)}.{got} Rebuild it with RunConfig.to_config (a config made by another "
                "jaxsinks version may not be readable)."
            )
        options = config["options"]
        if not isinstance(options, dict):
            raise ConfigError(
                "`config['options']` must be a dict of ZarrSink.create options by name; got "
                f"{_show(options)}."
            )
        return cls(
            root=dict(config["root"]) if isinstance(config["root"], dict) else config["root"],
            run_id=config["run_id"],
            params=config["params"],
            options={k: _decode(v, f"config['options'][{k!r}]") for k, v in options.items()},
        )


def _root_spec(root: dict[str, Any]) -> dict[str, Any]:
    """The kvstore spec `root` as the location parser gives it (`parse`: a directory, whose path
    ends in '/', so runs are ``runs/<id>/`` under it); a ConfigError naming `root` if it is none."""
    try:
        return parse(root).kvstore
    except ConfigError as error:
        raise ConfigError(
            f"`root` must be the campaign root's kvstore spec (`campaign.location.kvstore`), but "
            f"it is not a valid one: {error} Build the config with Campaign.run_config."
        ) from None


def _renamed_options(options: dict[str, Any]) -> dict[str, Any]:
    """A copy of `options` with the deprecated `fields` (a config made before the rename, e.g.
    read back by `from_config`) renamed to `field_config`, with a warning."""
    options = dict(options)
    if "fields" in options:
        if "field_config" in options:
            raise ConfigError(
                "`RunConfig` options hold both `field_config` and its deprecated name `fields`; "
                "pass only `field_config`."
            )
        warn_deprecated("`RunConfig` option `fields`", "`field_config`", stacklevel=5)
        options["field_config"] = options.pop("fields")
    return options


def _duplicate_message(root: Location, run_id: str, existing: bytes | None) -> str:
    """The error for a run id taken by the entry `existing` (None: withdrawn since it was
    found)."""
    try:
        doc = json.loads(existing or b"")
        what = f" (status {doc.get('status')!r}, created {doc.get('created')})"
    except (ValueError, AttributeError):
        what = ""
    return (
        f"The campaign at {root} already has a run '{run_id}'{what}. Run ids are unique in a "
        "campaign: choose another id, or read the existing run with campaign.open_run."
    )


def _orphan_message(root: Location, run_id: str, error: BaseException) -> str:
    return (
        f"The campaign at {root} already holds a run store 'runs/{run_id}' without an entry "
        f"({error}). It was written outside the campaign, or left by a process of an older "
        "jaxsinks killed between creating a run and writing its entry; it was left as it is. "
        f"Choose another run id, or remove 'runs/{run_id}' yourself if it holds nothing you need."
    )


def _withdraw(root: Location, run_id: str, generation: bytes, error: BaseException) -> None:
    """Delete the entry that claimed run `run_id` (generation `generation`), whose run store
    could not be created (`error`): the id is free again. If that fails too, `error` is told."""
    try:
        release_entry(root, run_id, generation)
    except StoreError as failure:
        error.add_note(
            f"The run's entry could not be removed either ({failure}): it stays 'running' until "
            "this process ends, then is stale (mark it failed with campaign.mark_failed)."
        )


def _abandon(root: Location, sink: ZarrSink, entry: RunEntry, error: BaseException) -> None:
    """Close the new run whose entry could not be completed (`error`), and record its entry as
    ``"failed"`` with that error; if that fails too, `error` is told."""
    try:
        sink.close()
        finish_entry(root, entry, "failed", 0, f"{type(error).__name__}: {error}")
    except Exception as failure:  # noqa: BLE001 - told beside the error being raised
        error.add_note(
            f"The run could not be recorded as failed either ({type(failure).__name__}: "
            f"{failure}): its entry stays 'running' until this process ends, then is stale "
            "(mark it failed with campaign.mark_failed)."
        )


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
    if isinstance(value, (np.integer, np.floating, np.bool_)):  # as create_run takes them
        return value.item()
    raise ConfigError(
        f"`{where}` is a {type(value).__name__}, which a JSON run config cannot hold."
    )


def _decode(value: Any, where: str) -> Any:
    """The option value `value` (at `where` in a config) as `_encode` wrote it, decoded; a
    ConfigError naming `where` if it does not decode."""
    if isinstance(value, list):
        return [_decode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    kind = value.get("__jaxsinks__")
    if kind is None:
        return {k: _decode(v, f"{where}[{k!r}]") for k, v in value.items()}
    if kind == "dtype":
        try:
            return np.dtype(value["name"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"`{where}` must be a dtype written as {{'__jaxsinks__': 'dtype', 'name': <a numpy "
                f"dtype name such as 'float32'>}}; got {_show(value)}. Rebuild the config with "
                "RunConfig.to_config."
            ) from None
    if not isinstance(kind, str) or kind not in _CONFIG_TYPES:
        raise ConfigError(
            f"`{where}` is an option of unknown type {show(kind)} (its '__jaxsinks__' value); "
            f"the types a run config holds are {sorted(_CONFIG_TYPES)} and 'dtype'. It was "
            "written by another jaxsinks, or changed: rebuild the config with this one's "
            "RunConfig.to_config."
        )
    cls = _CONFIG_TYPES[kind]
    names = [f.name for f in dataclasses.fields(cls)]
    args = {k: v for k, v in value.items() if k != "__jaxsinks__"}
    unknown = [k for k in args if k not in names]
    if unknown:
        raise ConfigError(
            f"`{where}` is of type {kind} but has the unknown keys {unknown}; {kind} takes the "
            f"keys {names}. Rebuild the config with RunConfig.to_config."
        )
    decoded = {k: _decode(v, f"{where}[{k!r}]") for k, v in args.items()}
    try:
        return cls(**decoded)
    except (ConfigError, TypeError, ValueError) as error:
        raise ConfigError(
            f"`{where}` is of type {kind} (keys {names}) but does not make one: "
            f"{str(error).rstrip('.')}. Rebuild the config with RunConfig.to_config."
        ) from None


def _show(value: Any) -> str:
    """`value`'s type and its repr cut short, for messages."""
    return f"{type(value).__name__} {show(value)}"


@dataclasses.dataclass(frozen=True)
class FinishEntry:
    """The close hook of a campaign run's writer (`HostWriter.on_close`): records the run's entry
    as closed, or as failed with the error close raised. Flushes from older sink values refused
    during the run (a `StaleSinkError` raised after the run closed) leave the run complete.

    Only the entry as this process completed it (`generation`) is finished: one marked failed
    meanwhile by another process stays failed, as after `Campaign.mark_failed` in this process.
    """

    root: Location
    entry: RunEntry
    generation: bytes

    def __call__(self, committed: int, error: BaseException | None) -> None:
        if error is None or isinstance(error, StaleSinkError):
            status, why = "closed", None
        else:
            status, why = "failed", f"{type(error).__name__}: {error}"
        if not finish_entry(self.root, self.entry, status, committed, why, self.generation):
            log.warning(
                "The campaign entry of run %r was changed by another process while it recorded "
                "(marked failed); it is left as that process wrote it, and the run holds %d "
                "committed frames.",
                self.entry.run_id,
                committed,
            )
