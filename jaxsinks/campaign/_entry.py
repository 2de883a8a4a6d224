"""A campaign's run entries: one JSON object per run, written only by the process recording it.

An entry says what a run is (id, parameters, frame schema), where its store is, and how it stands
(``"running"``, ``"closed"`` or ``"failed"``, with the committed count, the times and the error),
plus the recording process (host, pid, boot id, pid start time) so that a run whose process was
killed can be told from one still recording (`RunEntry.alive`). Entries are the source of truth
of a campaign; see `jaxsinks.campaign._campaign`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

from .._core.errors import ConfigError, StoreError
from .._io import tsio
from .._io.layout import check_json, check_schema_version
from .._io.location import Location
from .._io.owner import now, process_alive
from .._read.index import show
from .._read.reader import Run
from .._read.reader import open as open_run

#: The version of the manifest and entry JSON this jaxsinks writes (and the newest it reads).
CAMPAIGN_SCHEMA_VERSION = 1
STATUSES = ("running", "closed", "failed")
#: The campaign's header (and consolidated entries) under its root.
MANIFEST_KEY = "manifest.json"
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]{0,127}")


@dataclasses.dataclass(frozen=True, eq=False)
class RunEntry:
    """One run of a campaign, as listed by `Campaign.runs`.

    Attributes:
        run_id: the run's id, unique in its campaign.
        status: ``"running"``, ``"closed"`` or ``"failed"``. A process killed while recording
            leaves its run ``"running"``: see `alive` and `stale`.
        params: the run's parameters (JSON).
        schema: the run's frame schema (fields with shapes and dtypes, chunking).
        committed: the frames committed (for a running or failed run, read live from the run
            itself: a failed run's sink may still be open, and goes on committing).
        created: when the run was created (ISO 8601, UTC).
        closed: when it was closed or failed (None while running).
        error: why it failed (None otherwise).
        host: the host name of the recording process (used by `alive`, as the next three).
        pid: its process id.
        boot_id: the boot id of its machine (Linux; None elsewhere).
        pid_start: its start time, in clock ticks since boot (Linux; None elsewhere).
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

    def __eq__(self, other: object) -> bool:
        """Entries are equal when they are stored alike, types included (`same_json`): a run with
        the parameter ``True`` is not one with ``1``."""
        if not isinstance(other, RunEntry):
            return NotImplemented
        return same_json(self.to_json(), other.to_json())

    def to_json(self) -> dict[str, Any]:
        """The entry as stored (without the store spec, which follows from the campaign root)."""
        out = {"schema_version": CAMPAIGN_SCHEMA_VERSION}
        out.update(
            {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "store"}
        )
        return out


def check_version(doc: Any, what: str) -> dict[str, Any]:
    """`doc` (a manifest or an entry, described by `what`) if this jaxsinks reads its campaign
    schema version, else a StoreError."""
    return check_schema_version(doc, what, "campaign", CAMPAIGN_SCHEMA_VERSION)


def entry_key(run_id: str) -> str:
    return f"entries/{run_id}.json"


def run_key(run_id: str) -> str:
    """Where the run `run_id` is stored, under the campaign's root."""
    return f"runs/{run_id}"


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
    check_json(params, where)
    return json.loads(json.dumps(params))


def same_json(a: Any, b: Any) -> bool:
    """Whether the JSON values `a` and `b` are the same value, types included: ``True``, ``1`` and
    ``1.0`` are three values (``==`` makes them one); lists compare item by item, dicts key by key.
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    return bool(a == b)


def params_match(params: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether `params` holds every key of `wanted` with the same value (`same_json`)."""
    return all(k in params and same_json(params[k], v) for k, v in wanted.items())


def check_entry(doc: dict[str, Any], run_id: str, what: str) -> dict[str, Any]:
    """`doc` (the entry of run `run_id`, described by `what`, naming its file) if every key a
    `RunEntry` holds is there with a value of its type; else a StoreError listing every damaged
    key, with what it should be and what it is."""
    names = [f.name for f in dataclasses.fields(RunEntry) if f.name != "store"]
    missing = [n for n in names if n not in doc]
    if missing:
        raise StoreError(f"{what} lacks the keys {missing}; it was not written by jaxsinks.")
    problems = [
        f"'{key}' must be {expected}, but it is {type(doc[key]).__name__} {show(doc[key])}"
        for key, (expected, ok) in _ENTRY_TYPES.items()
        if not ok(doc[key])
    ]
    if isinstance(doc["run_id"], str) and doc["run_id"] != run_id:
        problems.append(
            f"'run_id' must be '{run_id}' (its file's name), but it is '{doc['run_id']}'"
        )
    if problems:
        raise StoreError(
            f"{what} is damaged: {'; '.join(problems)}. Restore the file from a copy, or set "
            "those keys to values of those types."
        )
    return doc


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _string(value: Any) -> bool:
    return isinstance(value, str)


#: What each key of an entry holds: its description, for messages, and its check.
_ENTRY_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "run_id": ("a string", _string),
    "status": (f"one of {list(STATUSES)}", lambda v: _string(v) and v in STATUSES),
    "params": ("a JSON object", lambda v: isinstance(v, dict)),
    "schema": ("a JSON object", lambda v: isinstance(v, dict)),
    "committed": ("a count of frames (an integer >= 0)", lambda v: _integer(v) and v >= 0),
    "created": ("a string", _string),
    "closed": ("a string or null", lambda v: v is None or _string(v)),
    "error": ("a string or null", lambda v: v is None or _string(v)),
    "host": ("a string", _string),
    "pid": ("an integer", _integer),
    "boot_id": ("a string or null", lambda v: v is None or _string(v)),
    "pid_start": ("an integer or null", lambda v: v is None or _integer(v)),
}


def claim_entry(root: Location, entry: RunEntry) -> bytes | None:
    """Write `entry` as ``entries/<run_id>.json`` only if the run has no entry yet (one
    compare-and-swap: of processes claiming one run id at once, exactly one succeeds). Returns
    the entry's storage generation (for `release_entry`), or None if the id was taken."""
    key = entry_key(entry.run_id)
    existing, generation = tsio.read_versioned(root.kvstore, key)
    if existing is not None:
        return None
    return tsio.write_if(root.kvstore, key, _entry_bytes(entry), generation)


def complete_entry(root: Location, entry: RunEntry, generation: bytes) -> bytes | None:
    """Write `entry` over the claim `claim_entry` wrote (generation `generation`). Returns the
    entry's new generation (for `finish_entry`), or None, and nothing written, if the entry
    changed since (another process marked the run failed)."""
    key = entry_key(entry.run_id)
    return tsio.write_if(root.kvstore, key, _entry_bytes(entry), generation)


def release_entry(root: Location, run_id: str, generation: bytes) -> None:
    """Delete the entry of `run_id` that `claim_entry` wrote (generation `generation`), leaving
    it if it changed since (another process marked the run failed)."""
    tsio.write_if(root.kvstore, entry_key(run_id), None, generation)


def _entry_bytes(entry: RunEntry) -> bytes:
    return json.dumps(entry.to_json(), indent=1, allow_nan=False).encode()


def write_entry(root: Location, entry: RunEntry) -> None:
    """Write `entry` as ``entries/<run_id>.json`` under the campaign `root` (one atomic put)."""
    tsio.write_bytes(root.kvstore, entry_key(entry.run_id), _entry_bytes(entry))


def finish_entry(
    root: Location,
    entry: RunEntry,
    status: str,
    committed: int,
    error: str | None,
    generation: bytes | None = None,
) -> bool:
    """Record the run of `entry` as ``"closed"`` or ``"failed"``, with its committed count. With
    a `generation` (the entry's as `complete_entry` wrote it), only if the entry is still that
    one: False, and nothing written, if it changed since (another process marked it failed)."""
    finished = dataclasses.replace(
        entry, status=status, committed=committed, closed=now(), error=error
    )
    if generation is None:
        write_entry(root, finished)
        return True
    key = entry_key(entry.run_id)
    return tsio.write_if(root.kvstore, key, _entry_bytes(finished), generation) is not None
