"""The host writer of a Zarr run: create or reopen it, write blocks with TensorStore, commit.

Blocks are written by `HostWriter`'s pipeline (see `jaxsinks._io.writer`); this module adds what is
specific to Zarr v3 through TensorStore: arrays that grow by doubling (a resize rewrites every
array's metadata) and are trimmed to the committed count at close, rings that retire the frames
they will overwrite before overwriting them, ragged fields compacted CSR-style with a running atom
count (nothing stored is ever reread), and the group attributes that hold the committed count.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any, cast

import numpy as np

from .._core.errors import OutOfRangeError, SchemaMismatchError, StoreError, StoreExistsError
from . import tsio
from .layout import (
    ATTRS_KEY,
    SCHEMA_VERSION,
    Layout,
    check_new_run,
    consolidated_metadata,
    group_metadata,
)
from .location import Location
from .long_table import LONG_SCHEMA_VERSION, LongTable, run_schema, stored_arrays
from .multihost import Coordinator, coordinator
from .owner import Owner
from .runs import (
    ROOT,
    check_append_options,
    check_committed,
    check_local_target,
    check_nested_writers,
    check_run_meta,
    check_schema,
    check_writer,
    claim_run,
    remove_partial,
    stored_run,
)
from .writer import (
    COMMIT_INTERVAL,
    DEFAULT_MAX_INFLIGHT_BYTES,
    SYNC_BYTES,
    HostWriter,
    check_inflight_bytes,
)

#: Seconds a create waits for another writer's claim of the same location to become readable.
CLAIM_WAIT_S = 2.0
#: The lock file TensorStore writes a run's zarr.json through (`tsio.remove_dead_locks`).
CLAIM_LOCK = ROOT + ".__lock"
#: Seconds the final "failed" status write may take after a write failure (see `_write_attrs`).
FAILED_STATUS_TIMEOUT = 5.0
#: Whether a block's writes let TensorStore reference the writer's buffer instead of copying it
#: (`tsio.write_rows`; the writer reuses a buffer only once nothing holds it): an uncompressed
#: chunk is then copied once on the host, by the flush, not twice (docs/benchmarks.md).
REFERENCE = True
log = logging.getLogger("jaxsinks")


class ZarrWriter(HostWriter):
    """Writes one Zarr run. Created by `create_run`."""

    #: Each record of the committed count rewrites and fsyncs ``zarr.json``: at most one per
    #: `COMMIT_INTERVAL` seconds while blocks stream in (see `HostWriter`).
    commit_interval = COMMIT_INTERVAL
    #: A local run's blocks are synced once `SYNC_BYTES` are written, not only at each record.
    sync_bytes = SYNC_BYTES

    def __init__(
        self,
        location: Location,
        layout: Layout,
        arrays: dict[str, Any],
        *,
        frames: int,
        atoms: int,
        committed: int,
        meta: dict[str, Any],
        user_attrs: dict[str, Any],
        capacity: int | None,
        ring: bool,
        max_inflight_bytes: int,
        progress: Any = None,
        shards: tuple[int, ...] = (0,),
        coordinator: Coordinator | None = None,
        owner: Owner | None = None,
        generation: bytes | None = None,
        table: LongTable | None = None,
    ) -> None:
        self.location = location
        # A long table (`jaxsinks._io.long_table`) stores each frame as `rows` rows of its arrays.
        self.table = table
        self.rows = 1 if table is None else table.rows_per_frame
        self.stored = stored_arrays(layout, table)
        self.owner = owner  # None for the secondary processes of a multi-process run
        self._generation = generation  # of the run's zarr.json as this writer last wrote it
        self.coordinator = coordinator
        self.start = committed  # every process's count when this writer started
        self.arrays = arrays
        self.frames = frames  # the frame arrays' length
        self.atom_frames = atoms  # the ragged arrays' length along the atom axis
        self.atoms = atoms  # atoms written so far (ragged fields)
        self.committed_atoms = atoms
        self.meta = meta
        self.user_attrs = user_attrs
        self.capacity = capacity
        self.ring = ring
        self.valid_from = int(meta.get("valid_from", 0))
        self._meta_lock = threading.Lock()
        self._folder = tsio.HeldFolder()  # syncs see every write-back failure since the first
        self._ragged = {a.name for a in layout.ragged_fields}
        super().__init__(
            layout,
            description=str(location),
            committed=committed,
            max_inflight_bytes=max_inflight_bytes,
            progress=progress,
            shards=shards,
        )

    def _issue(self, offset, n, values, shard):
        if self._ragged:  # a count beyond the padding would shift every later frame's atoms
            error = ragged_count_error(self.layout, offset, n, values, self.committed)
            if error is not None:
                self.fail(error, at=offset)  # raised at close; nothing of the block is written
                return [], 0, self.atoms
        start = self._position(offset, n)
        if start + n > self.frames:
            self.frames = self._grow(
                [k for k in self.arrays if k not in self._ragged],
                self._grown(start + n, self.frames),
                expand_only=True,
            )
        writes, nbytes = [], 0
        if self.table is not None:  # the block's frames, as rows of the long table
            values, start, n = self.table.melt(values, n), start * self.rows, n * self.rows
        if self._ragged:
            count = values[self.layout.ragged.count][:n]
            atoms = int(count.sum())
            if self.atoms + atoms > self.atom_frames:
                self.atom_frames = self._grow(
                    sorted(self._ragged),
                    self._grown(self.atoms + atoms, self.atom_frames),
                    expand_only=True,
                )
            for a in self.layout.ragged_fields:
                compact = values[a.name][:n][a.real_atoms(np, count)]
                writes.append(
                    tsio.write_rows(self.arrays[a.name], self.atoms, compact, reference=REFERENCE)
                )
                nbytes += compact.nbytes
            self.atoms += atoms
        for a in self.stored:
            if a.name in self._ragged:
                continue
            if a.shards > 1:  # this shard's region of the sharded axis: whole chunks, its own
                size = a.shape[0]
                part = slice(shard * size, (shard + 1) * size)
            elif shard:
                # the step and time columns are the same on every shard: shard 0 writes them
                continue
            else:
                part = None
            value = values[a.name][:n]
            # `value` is the writer's buffer, reused only once TensorStore lets go of it
            writes.append(
                tsio.write_rows(self.arrays[a.name], start, value, part, reference=REFERENCE)
            )
            nbytes += value.nbytes
        for w in writes:
            w.copy.result()
        return [w.commit for w in writes], nbytes, self.atoms

    def _on_durable(self, marker: Any) -> None:
        self.committed_atoms = marker

    def _grown(self, needed: int, current: int) -> int:
        """The next array length: at least `needed`, doubling so that resizes are rare.

        Arrays may be longer than the committed frames while a run is open (the extra entries read
        as the fill value); `_finalize` trims them.
        """
        grown = max(needed, 2 * current)
        return min(grown, self.capacity) if self.ring and self.capacity else grown

    def _grow(self, names: list[str], length: int, *, expand_only: bool = False) -> int:
        # `length` frames (a long table's arrays: `rows` rows each; ragged runs have rows == 1)
        resized = tsio.resize(
            [self.arrays[k] for k in names],
            length * self.rows,
            self.location.kvstore,
            expand_only=expand_only,
        )
        self.arrays.update(zip(names, resized))
        return length

    def _position(self, offset: int, n: int) -> int:
        """Where frame `offset` goes; for a ring, first retire the frames it will overwrite.

        A ring overwrites committed frames only once every frame before this block is committed
        too: otherwise a kill could leave the old frames overwritten and the new ones uncounted,
        a run with nothing in it. So a kill leaves at least the newest ``capacity - n`` committed
        frames, at the cost of one record of the count per block once the ring is full.
        """
        if not self.ring:
            return offset
        assert self.capacity is not None
        if offset + n > self.capacity and offset + n - self.capacity > self.valid_from:
            if not self.wait_committed(offset):
                raise StoreError(
                    f"frames before {offset} were not committed, so the ring's oldest frames "
                    "were not overwritten"
                )
            self.valid_from = offset + n - self.capacity
            self._write_attrs("open")  # durable before the old frames are overwritten
        return offset % self.capacity

    def _record_committed(self) -> None:
        """The run's committed count: this writer's, or with several processes their minimum."""
        if self.coordinator is None:
            self._write_attrs("open")
            return
        self._sync_for_primary()
        self.coordinator.publish("progress", {"committed": self.committed})
        if self.coordinator.primary:
            counts = [
                v["committed"] if v else self.start for v in self.coordinator.peek("progress")
            ]
            self._write_attrs("open", committed=min(counts))

    def _sync(self) -> None:
        tsio.sync_written(self.location.kvstore, self._folder)

    def _sync_for_primary(self) -> None:
        """A secondary process makes its writes durable before publishing a count: the primary
        records the run's count from it. (The primary's own metadata write syncs its writes.)"""
        assert self.coordinator is not None
        if not self.coordinator.primary:
            tsio.sync_written(self.location.kvstore, self._folder)

    def _release(self) -> None:
        self._folder.close()

    def _finalize(self, status: str) -> None:
        committed = self.committed
        if self.coordinator is not None:  # every process durable, then the primary decides
            self._sync_for_primary()
            self.coordinator.publish("final", {"committed": self.committed, "status": status})
            self.coordinator.barrier("closing")
            if self.coordinator.primary:
                finals = self.coordinator.gather("final")
                committed = min(f["committed"] for f in finals)
                if any(f["status"] != "closed" for f in finals):
                    status = "failed"
        if self.coordinator is None or self.coordinator.primary:
            if status == "closed":
                frames = [k for k in self.arrays if k not in self._ragged]
                if not self.ring and self.frames != committed:
                    self.frames = self._grow(frames, committed)
                if self._ragged and self.atom_frames != self.committed_atoms:
                    self.atom_frames = self._grow(sorted(self._ragged), self.committed_atoms)
            self._write_attrs(status, committed=committed)
            if status == "closed":
                self._consolidate(committed)
        if self.coordinator is not None:
            self.coordinator.barrier("closed")

    def _consolidate(self, committed: int) -> None:
        """Rewrite the closed run's ``zarr.json`` with zarr-python's consolidated metadata (the
        ``zarr.json`` of every array and group, as stored now), so that `zarr` and `xarray` open
        it without listing the store, or warning.

        Only a closed run has it: every commit and every reopening for append rewrite
        ``zarr.json`` without it (`group_metadata`), so a run that is open or was killed never has
        metadata describing frames that are not committed. A failure here is logged, not raised:
        the run is complete without it, and zarr reads it (more slowly) as before.
        """
        groups = self.layout.groups if self.table is None else ()
        nodes = [*(a.name for a in self.stored), *groups]
        try:
            docs = tsio.read_all(self.location.kvstore, [f"{node}/zarr.json" for node in nodes])
            if any(doc is None for doc in docs):
                raise StoreError("a node's zarr.json is missing")
            consolidated = consolidated_metadata(
                {node: json.loads(cast(bytes, doc)) for node, doc in zip(nodes, docs)}
            )
            with self._meta_lock:
                value = group_metadata(self.attributes("closed", committed), consolidated)
                generation = tsio.write_if(
                    self.location.kvstore, ROOT, value, self._generation or b""
                )
                if generation is None:
                    raise StoreError("its zarr.json was changed by someone else")
                self._generation = generation
        except (StoreError, ValueError) as err:
            log.warning(
                "jaxsinks: the run at %s is closed, but its consolidated metadata could not be "
                "written (%s); zarr and xarray open it without (slower, and with a warning).",
                self.location,
                err,
            )

    def attributes(self, status: str, committed: int | None = None) -> dict[str, Any]:
        committed = self.committed if committed is None else committed
        meta = dict(self.meta, committed=committed, status=status)
        meta.pop("writer", None)
        if status == "open" and self.owner is not None:
            meta["writer"] = self.owner.to_json()
        if self.ring:
            meta["valid_from"] = self.valid_from
        if self._ragged:
            meta["committed_atoms"] = self.committed_atoms
        return {ATTRS_KEY: meta, **self.user_attrs}

    def _write_attrs(self, status: str, committed: int | None = None) -> None:
        """Write the run's metadata, only if it is still what this writer last wrote: a run
        deleted, replaced or taken over by another writer is never written into again.

        Every write of the arrays so far is made durable first (`tsio.sync_written`), so that the
        metadata never counts a frame, nor describes an array, that a crash of the machine could
        lose. After a failure the final ``"failed"`` status counts nothing new and gets
        `FAILED_STATUS_TIMEOUT` seconds: a store that stopped answering has already cost its
        retries, and readers see the run as ``"interrupted"`` without it.
        """
        timeout = FAILED_STATUS_TIMEOUT if status == "failed" else None
        if status != "failed":
            tsio.sync_written(self.location.kvstore, self._folder)
        with self._meta_lock:
            value = group_metadata(self.attributes(status, committed))
            generation = tsio.write_if(
                self.location.kvstore, ROOT, value, self._generation or b"", timeout
            )
            if generation is None:
                self.lost = True
                raise StoreError(
                    f"The metadata of the run at {self.location} is no longer the one this sink "
                    "wrote: the store was deleted or replaced, or another writer took the run "
                    "over. Nothing more is written to it."
                )
            self._generation = generation


def ragged_count_error(
    layout: Layout, offset: int, n: int, values: dict[str, np.ndarray], committed: int
) -> OutOfRangeError | None:
    """An OutOfRangeError if a ragged count of the block of frames ``offset:offset + n`` (the
    first `n` rows of `values`) is negative or beyond its ragged fields' padded size, else None.
    `committed` is the writer's committed count, which the error carries."""
    assert layout.ragged is not None
    fields = layout.ragged_fields
    padded = min(fields, key=lambda a: a.max_atoms)  # the count must fit every ragged field
    count = values[layout.ragged.count][:n]
    outside = (count < 0) | (count > padded.max_atoms)
    if not outside.any():
        return None
    bad = np.argwhere(outside)
    row, *entry = (int(i) for i in bad[0])
    where = f"frame {offset + row} (step {int(values['step'][row])})"
    if "system" in values:  # per-system: each row is one system
        where = f"system {int(values['system'][row])} of {where}"
    elif entry:  # the count's index: a system (or, for a count of several axes, its entry)
        label = "system" if len(entry) == 1 else "entry"
        where = f"{label} {', '.join(map(str, entry))} of {where}"
    name = next(a.field_name for a in layout.fields if a.name == layout.ragged.count)
    more = f" (and {len(bad) - 1} more counts out of range in the block)" if len(bad) > 1 else ""
    return OutOfRangeError(
        f"The ragged count field '{name}' says {where} has {int(count[(row, *entry)])} "
        f"atoms{more}, but the ragged field '{padded.field_name}' is padded to "
        f"{padded.max_atoms} atoms: a count must be between 0 and {padded.max_atoms}. Frames "
        f"{offset} to {offset + n - 1} were not stored (a count outside that range would "
        f"misplace the atoms of this frame and of every later one). Record in '{name}' each "
        "system's number of real atoms, and pad the ragged fields to the largest system.",
        committed,
    )


def create_run(
    location: Location,
    layout: Layout,
    *,
    mode: str,
    meta: dict[str, Any],
    user_attrs: dict[str, Any],
    capacity: int | None,
    ring: bool,
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
    progress: Any = None,
    shards: tuple[int, ...] = (0,),
    table: LongTable | None = None,
) -> ZarrWriter:
    """Create (``"w-"``, ``"w"``) or reopen (``"a"``) the run at `location` and return its writer.

    `shards` are the shards of a sharded sink that this writer writes (all of them in one process).
    With `table`, the frames are stored as the rows of a long table.
    """
    job = coordinator()
    options = dict(
        capacity=capacity,
        ring=ring,
        max_inflight_bytes=check_inflight_bytes("ZarrSink.create", max_inflight_bytes),
        progress=progress,
        shards=shards,
        coordinator=job,
        table=table,
    )
    if job is None:
        return _create_or_reopen(location, layout, mode, meta, user_attrs, options)
    # The primary creates; the others attach after a barrier, or raise its error. Then each
    # says whether it attached, and all raise the first failure (none waits for another forever).
    if job.primary:
        try:
            writer = _create_or_reopen(location, layout, mode, meta, user_attrs, options)
        except Exception as err:
            job.publish("created", {"error": f"{type(err).__name__}: {err}"})
            job.barrier("created")
            raise
        job.publish("created", {"error": None, "location": str(location)})
        job.barrier("created")
    else:
        job.barrier("created")
        created = job.fetch("created", 0)
        if created["error"] is not None:
            raise StoreError(
                f"The primary process could not create the run at {location}: {created['error']}"
            )
        try:
            writer = _attach(location, created["location"], layout, meta, user_attrs, options)
        except Exception as err:
            job.publish("attached", {"error": f"{type(err).__name__}: {err}"})
            job.barrier("attached")
            raise
    job.publish("attached", {"error": None})
    job.barrier("attached")
    failed = [(p, a["error"]) for p, a in enumerate(job.gather("attached")) if a["error"]]
    if failed:
        writer.discard("another process of the job could not attach to the run")
        process, error = failed[0]
        raise StoreError(
            f"Process {process} of {job.count} could not attach to the run at {location} that "
            f"process 0 created: {error} Every process must create the same sinks (the same "
            "store and frames) in the same order. Nothing more was written."
        )
    return writer


def _create_or_reopen(
    location: Location,
    layout: Layout,
    mode: str,
    meta: dict[str, Any],
    user_attrs: dict[str, Any],
    options: dict[str, Any],
) -> ZarrWriter:
    """Claim the location for this process, then create the run or reopen it.

    Every step leaves the store in a state the next writer recognises: nothing, a run being
    created (its ``zarr.json`` says ``"creating"``: taken for nothing once its writer is dead), or
    a run whose ``zarr.json`` names its live writer (refused) or a dead one (taken over).
    """
    kv = location.kvstore
    check_local_target(location)
    raw, generation = tsio.read_versioned(kv, ROOT)
    keys = [] if raw is not None else tsio.list_keys(kv)
    deadline = time.monotonic() + CLAIM_WAIT_S
    while raw is None and keys:
        # Another writer may be claiming the location right now: read again, and while all there
        # is of it is its zarr.json being written (a lock file), give it a moment; a lock file
        # that nobody holds is what a writer killed while claiming left: the location is empty.
        raw, generation = tsio.read_versioned(kv, ROOT)
        claiming = set(keys) <= {ROOT, CLAIM_LOCK}
        if raw is not None or not claiming or time.monotonic() > deadline:
            break
        if not tsio.remove_dead_locks(kv, keys=[CLAIM_LOCK]):
            time.sleep(0.01)
        keys = tsio.list_keys(kv)
    # Anything but a run (or nothing, as listed after zarr.json was found missing) is refused here.
    stored = stored_run(location, raw, mode, keys)
    if stored is not None:  # a run: the lock files its killed writers left are ours to remove
        tsio.remove_dead_locks(kv)
    if stored is not None and check_writer(location, stored, mode):
        # retired: it may have committed
        raw, generation = tsio.read_versioned(kv, ROOT)
        stored = stored_run(location, raw, mode)
    creating = stored is not None and stored.get("status") == "creating"
    if stored is not None and not creating:
        if mode == "a":
            assert raw is not None  # a stored run was read from it
            return _reopen(location, layout, raw, generation, meta, user_attrs, **options)
        if mode == "w-":
            raise StoreExistsError(
                f"A run already exists at {location}. Pass mode='w' to overwrite it, mode='a' to "
                "append to it, or choose another path."
            )
    check_new_run(layout)  # before anything is deleted (mode='w')
    if stored is not None:  # everything under it is deleted below
        check_nested_writers(location)
    owner = Owner.me()
    table = options["table"]
    version = SCHEMA_VERSION if table is None else LONG_SCHEMA_VERSION
    # `run_id` tells this run from any later one at the same location (kept by appends), and
    # `fill_chunks` that every chunk it commits is stored (`tsio.STORE_FILL_CHUNKS`): in runs
    # written before, a chunk of fill values was left out, and cannot be told from a lost one.
    meta = dict(
        meta,
        schema_version=version,
        schema=run_schema(layout, table),
        run_id=uuid.uuid4().hex,
        fill_chunks="stored",
    )
    claim = {ATTRS_KEY: dict(meta, status="creating", committed=0, writer=owner.to_json())}
    generation = claim_run(location, group_metadata(claim), generation)
    writer = None
    try:
        if stored is not None:  # an old run (mode="w") or an interrupted create: ours to clear
            tsio.delete_all_except(kv, ROOT)
        arrays = {
            a.name: tsio.create_array(location.child(a.name), a.metadata(0))
            for a in stored_arrays(layout, table)
        }
        for group in layout.groups if table is None else ():
            tsio.write_bytes(location.child(group), ROOT, group_metadata({}))
        writer = ZarrWriter(
            location,
            layout,
            arrays,
            frames=0,
            atoms=0,
            committed=0,
            meta=meta,
            user_attrs=user_attrs,
            owner=owner,
            generation=generation,
            **options,
        )
        writer._write_attrs("open")
    except BaseException:  # a Ctrl-C too: nothing of the claim may outlive it
        if writer is not None:  # its threads and registry entry must not outlive the failure
            writer.discard()
        remove_partial(kv)
        raise
    return writer


def _attach(
    location: Location,
    created: str,
    layout: Layout,
    meta: dict[str, Any],
    user_attrs: dict[str, Any],
    options: dict[str, Any],
) -> ZarrWriter:
    """A secondary process's writer for the run the primary created at `created` (its location,
    as text): no metadata is written."""
    if str(location) != created:
        raise StoreError(
            f"This process creates its sink at {location}, but the primary process created its "
            f"run at {created}: a sink of a multi-process job is one run, written by every "
            "process, so each must name the same store."
        )
    raw = tsio.read_bytes(location.kvstore, ROOT)
    if raw is None:
        raise StoreError(f"The run at {location} that the primary process created is not there.")
    attrs = json.loads(raw).get("attributes", {})
    stored = attrs[ATTRS_KEY]
    table = options["table"]
    check_schema(
        stored.get("schema", {}),
        run_schema(layout, table),
        location,
        doing="write this process's shards into",
    )
    arrays = {
        a.name: tsio.open_array(location.child(a.name), write=True)
        for a in stored_arrays(layout, table)
    }
    committed = int(stored.get("committed", 0))
    frames = int(next(iter(arrays.values())).shape[0]) // (table.rows_per_frame if table else 1)
    return ZarrWriter(
        location,
        layout,
        arrays,
        frames=frames,
        atoms=int(stored.get("committed_atoms", 0)),
        committed=committed,
        meta=dict(stored, **meta),
        user_attrs=user_attrs,
        **options,
    )


def _bound(settings: tuple[Any, Any]) -> tuple[Any, Any]:
    """A run's ``(capacity, overflow)`` as far as they bound it: the policy only with a capacity."""
    capacity, overflow = settings
    return (capacity, overflow if capacity is not None else None)


def _reopen(
    location: Location,
    layout: Layout,
    existing: bytes,
    generation: bytes,
    meta: dict[str, Any],
    user_attrs: dict[str, Any],
    **options: Any,
) -> ZarrWriter:
    attrs = json.loads(existing).get("attributes", {})
    stored = check_run_meta(attrs[ATTRS_KEY], location)
    table = options["table"]
    check_schema(stored.get("schema", {}), run_schema(layout, table), location)
    check_append_options(stored, attrs, meta["schedule"], user_attrs, location)
    before = (stored.get("capacity"), stored.get("overflow"))
    now = (meta.get("capacity"), meta.get("overflow"))
    # Without a capacity nothing overflows: the policy does not matter (older jaxsinks stored
    # runs with overflow='ring' or 'drop' and no capacity, which are refused for new runs).
    if _bound(before) != _bound(now):  # the stored capacity bounds the whole run, and its frames
        raise SchemaMismatchError(
            f"The run at {location} was recorded with capacity={before[0]} and overflow="
            f"{before[1]!r}; it can only be appended to with the same settings (got "
            f"capacity={now[0]}, overflow={now[1]!r}). Pass capacity={before[0]}, "
            f"overflow={before[1]!r}, or write a new run."
        )
    owner = Owner.me()
    claimed = dict(attrs, **{ATTRS_KEY: dict(stored, status="open", writer=owner.to_json())})
    generation = claim_run(location, group_metadata(claimed), generation)
    writer = None
    try:
        writer = _reopened(
            location, layout, stored, attrs, meta, user_attrs, owner, generation, **options
        )
        writer._write_attrs("open")
    except BaseException:  # a failure or a Ctrl-C: give the run back as it was
        if writer is not None:
            writer.discard()
            generation = writer._generation or generation
        _unclaim(location, existing, generation)
        raise
    return writer


def _unclaim(location: Location, stored: bytes, generation: bytes) -> None:
    """Put back the ``zarr.json`` a failed reopen had claimed (`stored`), if nobody changed it
    since (`generation`), so that the run is not left naming this process as its writer."""
    try:
        if tsio.write_if(location.kvstore, ROOT, stored, generation) is not None:
            return
    except StoreError:
        pass
    log.warning(
        "jaxsinks: could not give back the run at %s after its reopening failed; its zarr.json "
        "names this process as its writer until the process ends (or until `create(mode='a')` "
        "in this process takes it over).",
        location,
    )


def _reopened(
    location: Location,
    layout: Layout,
    stored: dict[str, Any],
    attrs: dict[str, Any],
    meta: dict[str, Any],
    user_attrs: dict[str, Any],
    owner: Owner,
    generation: bytes,
    **options: Any,
) -> ZarrWriter:
    """The writer of the claimed run `stored` (its arrays trimmed to the committed frames)."""
    table = options["table"]
    committed = int(stored.get("committed", 0))
    atoms = int(stored.get("committed_atoms", 0))
    arrays = {
        a.name: tsio.open_array(location.child(a.name), write=True)
        for a in stored_arrays(layout, table)
    }
    ragged = {a.name for a in layout.ragged_fields}
    frame_names = [k for k in arrays if k not in ragged]
    rows = 1 if table is None else table.rows_per_frame
    if options["ring"]:  # a ring's arrays keep their length; frames go modulo the capacity
        frames = int(arrays[frame_names[0]].shape[0])
    else:  # drop anything written past the committed count before a crash
        check_committed(location, committed, int(arrays[frame_names[0]].shape[0]), rows)
        arrays.update(
            zip(
                frame_names,
                tsio.resize(
                    [arrays[k] for k in frame_names],
                    committed * rows,
                    location.kvstore,
                ),
            )
        )
        frames = committed
    if ragged:
        names = sorted(ragged)
        arrays.update(zip(names, tsio.resize([arrays[k] for k in names], atoms, location.kvstore)))
    merged = {k: v for k, v in attrs.items() if k != ATTRS_KEY}
    merged.update(user_attrs)
    return ZarrWriter(
        location,
        layout,
        arrays,
        frames=frames,
        atoms=atoms,
        committed=committed,
        meta=dict(stored, **meta),
        user_attrs=merged,
        owner=owner,
        generation=generation,
        **options,
    )
