"""Every TensorStore call jaxsinks makes: kvstores, JSON documents and zarr3 arrays.

All TensorStore errors leave this module as `StoreError`s whose messages name the store by a
credential-free description and drop TensorStore's embedded spec (which can hold credentials).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import tensorstore as ts

from .._core.errors import StoreError
from .cloud import DEFAULT_RETRIES, request_retries
from .location import describe

#: One TensorStore context for the process, so that ``memory://`` stores written by a sink are
#: visible to `jaxsinks.open` in the same process, and caches are shared.
CONTEXT = ts.Context()

#: The context of arrays opened for writing. Writers encode and copy on at most half of the
#: host's cores, leaving the rest to the simulation (on this project's 2-core machines the writer
#: gets one). Local files are written without an fsync each (``file_io_sync``: TensorStore would
#: fsync every chunk file and its folder, two waits per field and block); `sync_written` makes
#: them durable together, before any metadata that counts them. A child context, so it shares the
#: parent's memory:// stores and caches; JSON documents (`write_bytes`, `write_if`) are written in
#: the parent and fsynced one by one.
WRITE_CONTEXT = ts.Context(
    ts.Context.Spec(
        {
            "data_copy_concurrency": {"limit": max(1, (os.cpu_count() or 2) // 2)},
            "file_io_sync": False,
        }
    ),
    parent=CONTEXT,
)


def _syncfs() -> Any:
    """Linux's ``syncfs(fd)`` (one filesystem), or None where the C library has none."""
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


_SYNCFS = _syncfs()

#: A stalled request (a server that accepts connections but never answers) is dropped after
#: moving less than `STALL_BYTES_PER_SECOND` for `STALL_SECONDS`, and retried; without these
#: TensorStore waits for ever. TensorStore reads them from the environment once, at its first HTTP
#: request, so `with_request_defaults` sets them when jaxsinks first opens an object store, unless
#: the user has set them (JAX sets 60 s and 256 B/s on TPU hosts). Importing jaxsinks, or using
#: only local stores, leaves the environment alone.
STALL_SECONDS = 5
STALL_BYTES_PER_SECOND = 256
_HTTP_DRIVERS = frozenset({"s3", "gcs", "http"})

_SPEC_IN_MESSAGE = re.compile(r"\s*\[(tensorstore_spec|source locations)=.*$", re.DOTALL)
#: From ``://`` to the last ``@`` of the same word: user info, even when a secret in it holds
#: '/', '@' or ':' (a path with an '@' in it is masked too: better too much than a secret).
_USERINFO = re.compile(r"(?<=://)[^\s'\"]*@")
_RETRIES = {"s3": "s3_request_retries", "gcs": "gcs_request_retries"}


def clean_message(err: BaseException) -> str:
    """A TensorStore error message without the embedded spec, source locations, or the user
    info (``user:password@``) of any URL in it.
    """
    return _USERINFO.sub("***@", _SPEC_IN_MESSAGE.sub("", str(err))).strip()


def with_request_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` with jaxsinks' request retries for object stores, unless it names its own (and, for
    an object store, the stall timeouts above set in the environment unless already set).

    TensorStore's default (32 attempts, delays up to 32 s) turns a dead server into minutes of
    silence; jaxsinks' (`jaxsinks._io.cloud.DEFAULT_RETRIES`) surfaces it in seconds.
    """
    if spec.get("driver") in _HTTP_DRIVERS:
        os.environ.setdefault("TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS", str(STALL_SECONDS))
        os.environ.setdefault("TENSORSTORE_CURL_LOW_SPEED_LIMIT_BYTES", str(STALL_BYTES_PER_SECOND))
    key = _RETRIES.get(spec.get("driver", ""))
    if key is None or key in spec:
        return spec
    return {**spec, key: request_retries(DEFAULT_RETRIES)}


@contextlib.contextmanager
def translated(action: str, kvstore: dict[str, Any]) -> Iterator[None]:
    """Re-raise TensorStore errors inside the block as `StoreError`s naming `action` and the
    store."""
    try:
        yield
    except StoreError:
        raise
    except Exception as err:  # TensorStore raises ValueError, OSError, RuntimeError, ...
        raise StoreError(f"Could not {action} {describe(kvstore)}: {clean_message(err)}") from None


def kvstore(spec: dict[str, Any]) -> ts.KvStore:
    with translated("open the store", spec):
        return ts.KvStore.open(with_request_defaults(spec), context=CONTEXT).result()


def read_bytes(spec: dict[str, Any], key: str) -> bytes | None:
    """The value at `key` under the kvstore `spec`, or None if there is none."""
    with translated(f"read '{key}' of", spec):
        result = kvstore(spec).read(key).result()
    return bytes(result.value) if result.state == "value" else None


def read_all(spec: dict[str, Any], keys: list[str]) -> list[bytes | None]:
    """The values at `keys` under the kvstore `spec` (None where there is none), read
    concurrently; a failed read is a `StoreError` naming its key."""
    if not keys:
        return []  # nothing to open the store for (a closed entry read alone)
    store = kvstore(spec)
    with translated("read from", spec):
        futures = [store.read(key) for key in keys]
    values = []
    for key, future in zip(keys, futures):
        with translated(f"read '{key}' of", spec):
            result = future.result()
        values.append(bytes(result.value) if result.state == "value" else None)
    return values


def write_bytes(spec: dict[str, Any], key: str, value: bytes) -> None:
    """Write `value` at `key` and wait until it is durable."""
    with translated(f"write '{key}' of", spec):
        kvstore(spec).write(key, value).result()


def read_versioned(spec: dict[str, Any], key: str) -> tuple[bytes | None, bytes]:
    """The value at `key` (None if there is none) and its storage generation, for `write_if`."""
    with translated(f"read '{key}' of", spec):
        result = kvstore(spec).read(key).result()
    value = bytes(result.value) if result.state == "value" else None
    return value, bytes(result.stamp.generation)


def read_if_changed(
    spec: dict[str, Any], key: str, generation: bytes
) -> tuple[bool, bytes | None, bytes]:
    """Whether `key` changed since it had `generation` (as `read_versioned` gave it), and if so
    its value (None if there is none now) and generation. An unchanged key costs a conditional
    read (a stat of a file, a conditional GET), not its bytes."""
    with translated(f"read '{key}' of", spec):
        result = kvstore(spec).read(key, if_not_equal=generation).result()
    if result.state == "unspecified":
        return False, None, generation
    value = bytes(result.value) if result.state == "value" else None
    return True, value, bytes(result.stamp.generation)


def write_if(
    spec: dict[str, Any],
    key: str,
    value: bytes | None,
    generation: bytes,
    timeout: float | None = None,
) -> bytes | None:
    """Write `value` at `key` (None: delete it) only if its generation is still `generation` (as
    read, or as last written); wait until durable (at most `timeout` seconds, then a
    `StoreError`). Returns the new generation, or None if the key had changed (or was deleted).
    """
    with translated(f"write '{key}' of", spec):
        future = kvstore(spec).write(key, value, if_equal=generation)
        try:
            stamp = future.result(timeout=timeout)
        except TimeoutError:
            raise StoreError(
                f"Writing '{key}' of {describe(spec)} did not finish within {timeout:g} s."
            ) from None
    return bytes(stamp.generation) or None


class HeldFolder:
    """A descriptor of a local store's folder, held by its writer from its first sync to close.

    Linux reports a failed write-back to each descriptor opened before the failure, once, at its
    next ``syncfs`` (the filesystem's error sequence is sampled when the descriptor is opened).
    A descriptor opened anew for each sync misses a failure of the kernel's own write-back
    between two syncs; one held from the first sync is told of every failure since.
    """

    def __init__(self) -> None:
        self._fd: int | None = None
        self._lock = threading.Lock()

    def fd(self, path: str) -> int | None:
        """The held descriptor; opened now if none is (None while the folder does not exist)."""
        with self._lock:
            if self._fd is None:
                try:
                    self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    return None
            return self._fd

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def sync_written(spec: dict[str, Any], held: HeldFolder | None = None) -> None:
    """Make every completed write to the local store `spec` durable: the arrays' chunks and
    metadata, written in `WRITE_CONTEXT` without an fsync each.

    One ``syncfs`` of the store's filesystem (``os.sync()`` where there is none), through the
    writer's `held` descriptor of the folder (or one opened for this call). A write is already
    safe from a killed process once it completes (it is in the kernel's page cache); this makes it
    safe from a crash of the machine too. Other stores (memory, object stores) have nothing to do:
    their writes are durable when they complete. Nor has a local store whose folder is gone
    (deleted under its writer before its first sync): the metadata write that follows reports it.
    """
    if spec.get("driver") != "file":
        return
    with translated("make the writes durable in", spec):
        if _SYNCFS is None:
            os.sync()
            return
        folder = held if held is not None else HeldFolder()
        fd = folder.fd(spec["path"])
        if fd is None:
            return
        try:
            if _SYNCFS(fd) != 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code))
        finally:
            if held is None:
                folder.close()


def delete_all_except(spec: dict[str, Any], key: str) -> None:
    """Delete every key under the kvstore `spec` but `key`."""
    with translated("delete the contents of", spec):
        store = kvstore(spec)
        futures = [
            store.delete_range(ts.KvStore.KeyRange(exclusive_max=key)),
            store.delete_range(ts.KvStore.KeyRange(inclusive_min=key + "\0")),
        ]
        for future in futures:
            future.result()


def remove_dead_locks(spec: dict[str, Any], keys: Sequence[str] | None = None) -> int:
    """Delete the ``*.__lock`` files that killed writers left in a local store (or just the lock
    files among `keys`); returns how many. Call it only on a store known to be a run: a user's
    folder is never changed.

    TensorStore's file kvstore writes each key through ``<key>.__lock`` (locked with an
    open-file-description lock), renamed over the key when complete. A writer killed mid-write
    leaves it behind, and a later write reuses it without truncating it, so a shorter value keeps
    the old tail (a torn ``zarr.json`` or chunk). A lock file nobody holds is such a leftover:
    it is removed while holding its lock, after checking it is still the file at that path, which
    is TensorStore's own protocol, so a live writer is never disturbed.
    """
    if spec.get("driver") != "file":
        return 0
    if keys is None:
        paths = [os.path.join(d, n) for d, _, names in os.walk(spec["path"]) for n in names]
    else:
        paths = [os.path.join(spec["path"], key) for key in keys]
    return sum(_remove_if_unheld(path) for path in paths if path.endswith(".__lock"))


def _remove_if_unheld(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False  # renamed by its writer meanwhile, or not ours to touch
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live writer holds it
        held, now = os.fstat(fd), os.stat(path)
        if (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino):
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def list_keys(spec: dict[str, Any]) -> list[str]:
    with translated("list", spec):
        return [k.decode() for k in kvstore(spec).list().result()]


def delete_all(spec: dict[str, Any]) -> None:
    """Delete every key under the kvstore `spec`."""
    with translated("delete the contents of", spec):
        kvstore(spec).delete_range(ts.KvStore.KeyRange()).result()


#: Written chunks are stored even when all their values equal the fill value (TensorStore
#: would store none), so that a chunk a run committed is never absent: an absent one was lost.
STORE_FILL_CHUNKS = {"store_data_equal_to_fill_value": True}


def create_array(spec: dict[str, Any], metadata: dict[str, Any]) -> ts.TensorStore:
    """Create a zarr3 array for writing (in `WRITE_CONTEXT`; every chunk written is stored)."""
    with translated("create an array in", spec):
        return ts.open(
            {
                "driver": "zarr3",
                "kvstore": with_request_defaults(spec),
                "metadata": metadata,
                **STORE_FILL_CHUNKS,
            },
            create=True,
            context=WRITE_CONTEXT,
        ).result()


def open_array(spec: dict[str, Any], *, write: bool = False) -> ts.TensorStore:
    """Open an existing zarr3 array, for reading or (with `write`) for appending (every chunk
    written is stored)."""
    with translated("open the array", spec):
        extra = STORE_FILL_CHUNKS if write else {}
        return ts.open(
            {"driver": "zarr3", "kvstore": with_request_defaults(spec), **extra},
            open=True,
            context=WRITE_CONTEXT if write else CONTEXT,
        ).result()


def resize(
    arrays: list[ts.TensorStore], frames: int, spec: dict[str, Any], *, expand_only: bool = False
) -> list[ts.TensorStore]:
    """Set the frame-axis length of every array (metadata only), concurrently.

    With `expand_only`, an array already at least `frames` long (grown by another process) is
    left as it is: its handle is refreshed instead.
    """

    def resized(array: ts.TensorStore, future: Any) -> ts.TensorStore:
        try:
            return future.result()
        except ValueError:
            if not expand_only:
                raise
            fresh = array.resolve().result()
            if fresh.shape[0] < frames:
                raise
            return fresh

    with translated("resize the arrays of", spec):
        futures = [
            a.resize(
                exclusive_max=[frames, *([None] * (a.rank - 1))],
                resize_metadata_only=True,
                expand_only=expand_only,
            )
            for a in arrays
        ]
        return [resized(a, f) for a, f in zip(arrays, futures)]


def write_rows(
    array: ts.TensorStore,
    start: int,
    values: Any,
    part: slice | None = None,
    *,
    reference: bool = False,
) -> ts.WriteFutures:
    """Start writing `values` to frames ``start:start + len(values)`` (and, if given, `part` of
    the second axis: one shard's region); returns the futures.

    With `reference`, TensorStore may keep a reference to `values` instead of copying it, for as
    long as it needs (an uncompressed chunk written whole is then never copied; a ``memory://``
    store keeps the array as its value): the caller must never change `values` while anything
    else holds it.
    """
    rows = slice(start, start + values.shape[0])
    target = array[rows] if part is None else array[rows, part]
    return target.write(values, can_reference_source_data_indefinitely=reference)


def read_rows(array: ts.TensorStore, index: Any, spec: dict[str, Any]) -> Any:
    with translated("read from", spec):
        return array[index].read().result()


def stored_bytes(spec: dict[str, Any]) -> int:
    """Total size of the values under the kvstore `spec` (file sizes on disk for local stores)."""
    with translated("measure", spec):
        store = kvstore(spec)
        keys = store.list().result()
        if spec.get("driver") == "file":
            root = spec["path"]
            return sum(os.path.getsize(os.path.join(root, k.decode())) for k in keys)
        return sum(len(store.read(k).result().value) for k in keys)
