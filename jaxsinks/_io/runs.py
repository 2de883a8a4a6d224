"""Who may write a Zarr run: what a stored run's ``zarr.json`` says, whether its writer is still
alive, claiming the run with a compare-and-swap, and checking that an appended frame matches the
stored schema. Used by `jaxsinks._io.zarr_writer` to create or reopen a run, and by the reader to
tell an open run from an interrupted one.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from .._core.errors import SchemaMismatchError, StoreError, StoreExistsError, WriterConflictError
from . import tsio
from . import writer as _writer
from .layout import ATTRS_KEY
from .location import Location
from .owner import Owner
from .writer import HostWriter

ROOT = "zarr.json"
log = logging.getLogger("jaxsinks")


def check_local_target(location: Location) -> None:
    """A StoreError if a local run's path is a file, or a link to nothing: a run is a folder."""
    spec = location.kvstore
    if spec.get("driver") != "file":
        return
    path = spec["path"].rstrip("/") or "/"
    if os.path.islink(path) and not os.path.exists(path):
        raise StoreError(
            f"{location} is a symbolic link to {os.readlink(path)!r}, which does not exist. "
            "Create the folder it points to first, or choose another path."
        )
    if os.path.exists(path) and not os.path.isdir(path):
        raise StoreError(
            f"{location} is a file, not a folder: a run is stored as a folder. jaxsinks does not "
            "overwrite or delete anything it did not write: choose another path, or remove the "
            "file yourself first."
        )


def stored_run(
    location: Location, raw: bytes | None, mode: str, keys: list[str] | None = None
) -> dict[str, Any] | None:
    """The jaxsinks metadata of the run at `location` whose ``zarr.json`` read `raw`, None if
    the location is empty; a clear error if it holds anything else, which jaxsinks never
    overwrites, appends to or deletes. `keys`: the location's keys as listed after `raw` was read
    (listed now if not given): a claim landing after that listing is a claim race, which the
    caller's compare-and-swap loses with a `WriterConflictError`, not files of another kind.
    """
    if raw is None:
        if not (tsio.list_keys(location.kvstore) if keys is None else keys):
            return None
        what = "files that are not a jaxsinks run (there is no zarr.json at its top)"
    else:
        stored = run_attrs(raw)
        if stored is not None:
            return stored
        what = (
            "a Zarr node that is not a jaxsinks run (its zarr.json has no 'jaxsinks' attributes)"
            if _json_object(raw)
            else "a zarr.json that is not a JSON object (a damaged or foreign file)"
        )
    if mode == "w-":
        raise StoreExistsError(
            f"A store already exists at {location}: it holds {what}. Choose another path."
        )
    action = "overwrite" if mode == "w" else "append to"
    raise (StoreExistsError if mode == "w" else StoreError)(
        f"{location} holds {what}; jaxsinks does not {action} or delete anything it did not write. "
        "Choose another path, or remove those files yourself first."
    )


#: The statuses a run's metadata records (a reader also shows ``"interrupted"``).
STATUSES = ("creating", "open", "closed", "failed")


def check_run_meta(meta: dict[str, Any], location: Location) -> dict[str, Any]:
    """`meta` (a run's ``jaxsinks`` attributes) if what says which frames it holds is sound; else
    a StoreError naming the damaged entry: nothing is read or appended by counts that are not."""

    def count(value: Any) -> bool:  # an int64 >= 0: what numpy and TensorStore index with
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63

    schema = meta.get("schema")
    fields = schema.get("fields") if isinstance(schema, dict) else None
    problems = [
        f"{key} is {meta.get(key)!r} (expected {expected})"
        for key, ok, expected in (
            ("status", meta.get("status") in STATUSES, f"one of {list(STATUSES)}"),
            ("committed", count(meta.get("committed", 0)), "a count of frames"),
            ("committed_atoms", count(meta.get("committed_atoms", 0)), "a count of atoms"),
            ("valid_from", count(meta.get("valid_from", 0)), "a frame index"),
            (
                "capacity",
                meta.get("capacity") is None or count(meta.get("capacity")),
                "a count of frames or null",
            ),
        )
        if not ok
    ]
    first, committed = meta.get("valid_from", 0), meta.get("committed", 0)
    if not problems and first > committed:  # a ring retires frames only once it holds them
        problems.append(f"valid_from is {first}, past the {committed} committed frames")
    if not isinstance(fields, list) or not all(
        isinstance(f, dict) and isinstance(f.get("name"), str) for f in fields
    ):
        problems.append("its schema does not list its fields by name")
    ragged = schema.get("ragged") if isinstance(schema, dict) else None
    if ragged is not None and not (
        isinstance(ragged, dict)
        and isinstance(ragged.get("count"), str)
        and isinstance(ragged.get("fields"), list)
        and all(isinstance(f, str) for f in ragged["fields"])
    ):
        problems.append(
            f"its schema's ragged is {ragged!r} (expected a count field name and a list of fields)"
        )
    if problems:
        raise damaged(
            location, f"in its zarr.json's '{ATTRS_KEY}' attributes, {'; '.join(problems)}"
        )
    return meta


def check_committed(location: Location, needed: int, stored: int, rows: int = 1) -> None:
    """A StoreError unless the `stored` entries of a run's arrays hold the `needed` frames its
    metadata counts, of `rows` entries each (a long table's; they always do, unless the metadata
    or the arrays were damaged)."""
    if needed * rows > stored:
        each = "" if rows == 1 else f" of {rows} rows each"
        raise damaged(
            location,
            f"it counts {needed} committed frames{each}, but its arrays hold {stored}"
            + ("" if rows == 1 else " rows"),
        )


def damaged(location: Location, problem: str) -> StoreError:
    """The error for a run whose metadata does not soundly say which frames it holds."""
    return StoreError(
        f"The run at {location} has damaged metadata: {problem}. jaxsinks cannot tell which "
        "frames it holds, so it neither reads nor appends to it. Restore its zarr.json (or its "
        "arrays) from a copy, or read the arrays in its folders with zarr-python directly."
    )


def holder(stored: dict[str, Any]) -> Owner | None:
    """The writer named in a run's metadata if it may still be writing the run, else None.

    Dead: its process is gone (`Owner.alive`), or, in this process, its writer has ended
    without recording its end (e.g. a full disk at close).
    """
    owner = Owner.from_json(stored.get("writer"))
    if owner is None or stored.get("status") not in ("open", "creating") or owner.alive is False:
        return None
    if owner.in_this_process and live_writer(owner) is None:
        return None
    return owner


def live_writer(owner: Owner) -> HostWriter | None:
    return _writer.REGISTRY.find(lambda w: getattr(w, "owner", None) == owner)


def check_writer(location: Location, stored: dict[str, Any], mode: str) -> bool:
    """Raise `WriterConflictError` if a live writer holds the run.

    A writer of this process that is still open is retired when ``mode="w"`` replaces its run
    (re-running a notebook cell); its later flushes and its close are refused. Returns whether
    a writer was retired.
    """
    owner = holder(stored)
    if owner is None:
        return False  # killed, or ended: its run is taken over as it stands
    if owner.in_this_process and mode == "w":
        live = live_writer(owner)
        if live is not None:
            live.discard("was replaced by a new run created at the same store with mode='w'")
            log.warning(
                "jaxsinks: the open sink writing %s was retired: a new run replaces it", location
            )
            return True
    where = (
        "a sink of this process that is still open (close it first with jaxsinks.close)"
        if owner.in_this_process
        else (
            str(owner)
            + (
                "; it runs on another host, so jaxsinks cannot tell whether it is alive"
                if owner.alive is None
                else ""
            )
        )
    )
    raise WriterConflictError(
        f"The run at {location} is being written by {where}. A run has one writer at a time: two "
        "would interleave and overwrite each other's frames. Wait until it closes, or record to "
        "another path; a writer that was killed is detected and its run taken over."
    )


def check_nested_writers(location: Location) -> None:
    """Raise `WriterConflictError` if a run stored inside the run at `location` (about to be
    replaced, and everything under it deleted) has a live writer: its frames would be deleted
    under it. A nested run is found by its step column (``<path>/step/zarr.json``)."""
    suffix = "/step/zarr.json"
    for key in tsio.list_keys(location.kvstore):
        if not key.endswith(suffix):
            continue
        inner = Location(location.child(key[: -len(suffix)]))
        owner = holder(run_attrs(tsio.read_bytes(inner.kvstore, ROOT)) or {})
        if owner is not None:
            raise WriterConflictError(
                f"Cannot replace the run at {location}: the run at {inner}, inside it, is being "
                f"written by {'a sink of this process' if owner.in_this_process else owner}, "
                "and replacing the outer run deletes everything under it. Close that run first, "
                "or record to another path."
            )


def _json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


def zarr_attrs(raw: bytes | None) -> dict[str, Any]:
    """The attributes in a ``zarr.json``'s bytes `raw`; empty if it has none or is not JSON."""
    try:
        attrs = json.loads(raw or b"{}").get("attributes", {})
    except (ValueError, AttributeError):
        return {}
    return attrs if isinstance(attrs, dict) else {}


def run_attrs(raw: bytes | None) -> dict[str, Any] | None:
    """The jaxsinks attributes in a ``zarr.json``'s bytes `raw`, or None (none, or not JSON)."""
    stored = zarr_attrs(raw).get(ATTRS_KEY)
    return stored if isinstance(stored, dict) else None


def claim_run(location: Location, value: bytes, generation: bytes) -> bytes:
    """Write the run's zarr.json if nobody changed it since it was read; the new generation."""
    claimed = tsio.write_if(location.kvstore, ROOT, value, generation)
    if claimed is not None:
        return claimed
    owner = Owner.from_json(
        (run_attrs(tsio.read_bytes(location.kvstore, ROOT)) or {}).get("writer")
    )
    who = f" ({owner})" if owner is not None else ""
    raise WriterConflictError(
        f"Another writer{who} claimed the run at {location} at the same moment. A run has one "
        "writer at a time: record to another path, or retry once that writer has closed."
    )


#: Keys of a field's schema that runs written by older versions of jaxsinks lack: compared only
#: where the stored schema has them.
ADDED_FIELD_KEYS = ("codec", "dims")


def check_schema(
    stored: dict[str, Any], wanted: dict[str, Any], location: Location, *, doing: str = "append to"
) -> None:
    """Raise `SchemaMismatchError` listing every difference between two run schemas (`doing`:
    what could not be done with the run, for the message)."""
    problems = []
    old = {f["name"]: f for f in stored.get("fields", [])}
    new = {
        f["name"]: {
            k: v for k, v in f.items() if k not in ADDED_FIELD_KEYS or k in old.get(f["name"], {})
        }
        for f in wanted["fields"]
    }
    for name in sorted(set(old) | set(new)):
        if name not in new:
            problems.append(f"field '{name}' is stored but missing from the frame")
        elif name not in old:
            problems.append(f"field '{name}' is in the frame but not in the stored run")
        elif old[name] != new[name]:
            keys = sorted(set(old[name]) | set(new[name]))
            diffs = [
                f"{k} {old[name].get(k)} stored vs {new[name].get(k)} now"
                for k in keys
                if old[name].get(k) != new[name].get(k)
            ]
            problems.append(f"field '{name}': " + ", ".join(diffs))
    for key in ("time_dtype", "per_system", "chunk", "chunks_per_shard", "ragged", "table"):
        if stored.get(key) != wanted.get(key):
            problems.append(
                f"{key} is {stored.get(key)!r} in the stored run but {wanted.get(key)!r} now"
            )
    if problems:
        raise SchemaMismatchError(
            f"Cannot {doing} the run at {location}: its frame schema differs: "
            + "; ".join(problems)
            + ". Record the same frame structure with the same options, or write a new run."
        )


def check_append_options(
    stored: dict[str, Any],
    attrs: dict[str, Any],
    schedule: dict[str, Any],
    user_attrs: dict[str, Any],
    location: Location,
) -> None:
    """Raise `SchemaMismatchError` if appending with `schedule` and `user_attrs` would rewrite
    what the run (its jaxsinks metadata `stored`, its attributes `attrs`) records: its schedule
    describes every frame already there, and its attributes may gain keys but not change any."""
    problems = []
    if "schedule" in stored and stored["schedule"] != schedule:
        problems.append(f"schedule is {stored['schedule']} in the stored run but {schedule} now")
    changed = sorted(k for k in user_attrs if k in attrs and attrs[k] != user_attrs[k])
    problems += [
        f"attrs[{k!r}] is {attrs[k]!r} in the stored run but {user_attrs[k]!r} now" for k in changed
    ]
    if problems:
        raise SchemaMismatchError(
            f"Cannot append to the run at {location}: " + "; ".join(problems) + ". Appending "
            "continues the run as it was recorded: pass the stored `every` (and attrs that add "
            "keys only, or none), or write a new run."
        )


def remove_partial(kv: dict[str, Any]) -> None:
    try:
        tsio.delete_all(kv)
    except StoreError:
        pass
