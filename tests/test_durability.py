"""A local run's arrays are written without an fsync per file, and made durable together before
any metadata counts them (`jaxsinks._io.tsio.sync_written`): the committed count never covers a
chunk that a crash of the machine could lose, and a failed sync is a write error like any other.

A crash of the machine cannot be staged in a test; what is checked is the order (every record of
the count comes after a sync that saw the chunks it counts, as files in place) and the failure
path, through the real ``syncfs`` call."""

import contextlib
import ctypes
import errno
import json
import os
import shutil
import time

import numpy as np
import pytest
from zarr_helpers import EXAMPLE, expected, fail_after_eight, run_steps, steps

import jaxsinks as js
from jaxsinks._io import tsio
from jaxsinks._io import writer as _writer
from jaxsinks._io import zarr_writer as _zarr_writer

FIELDS = ("x", "e", "step", "time")
_SYNCFS = tsio._SYNCFS  # the real one, before any test swaps it


def _files(root) -> set[str]:
    """The complete files under `root` (TensorStore writes each as a lock file, then renames it)."""
    return {
        os.path.relpath(os.path.join(folder, name), root)
        for folder, _, names in os.walk(root)
        for name in names
        if not name.endswith(".__lock")
    }


def _chunk(field: str, k: int) -> str:
    return f"x/c/{k}/0" if field == "x" else f"{field}/c/{k}"


def test_every_count_is_recorded_after_a_sync_that_saw_its_chunks(tmp_path, monkeypatch):
    store = tmp_path / "run.zarr"
    monkeypatch.setattr(_zarr_writer.ZarrWriter, "commit_interval", 0.0)  # a record per block
    events: list[tuple[str, object]] = []
    sync, write_if = tsio.sync_written, tsio.write_if

    def syncing(spec, held=None):
        if spec.get("path", "").rstrip("/") == str(store):
            events.append(("sync", _files(store)))
        sync(spec, held)

    def writing(spec, key, value, generation, timeout=None):
        if key == "zarr.json" and spec.get("path", "").rstrip("/") == str(store):
            meta = json.loads(value)["attributes"]["jaxsinks"]
            events.append(("record", meta["committed"]))
        return write_if(spec, key, value, generation, timeout)

    monkeypatch.setattr(tsio, "sync_written", syncing)
    monkeypatch.setattr(tsio, "write_if", writing)
    js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 40)))

    counted = [(i, c) for i, (kind, c) in enumerate(events) if kind == "record" and c]
    assert len(counted) >= 2 and counted[-1][1] == 40
    for i, committed in counted:
        seen = [files for kind, files in events[:i] if kind == "sync"]
        assert seen, f"the count {committed} was recorded before any sync"
        missing = {_chunk(field, k) for field in FIELDS for k in range(committed // 4)} - seen[-1]
        assert not missing, f"the count {committed} was recorded before {sorted(missing)} synced"
    run = js.open(store)
    assert run.status == "closed" and run.steps.tolist() == list(range(40))
    np.testing.assert_array_equal(run["x"][:], expected(range(40))["x"])


def _syncs_fail_after_eight(store, monkeypatch) -> tuple[js.ZarrSink, dict[str, bool]]:
    """A run at `store` with 8 frames committed, then frames 8..16 recorded while every
    ``syncfs`` fails with EIO (through the real error path: the C function swapped for one that
    sets errno); see `fail_after_eight`. Returns the sink and the switch (``{"on": True}``)."""
    if _SYNCFS is None:
        pytest.skip("no syncfs in this C library (the os.sync path is tested below)")
    failing = {"on": False}

    def flaky(fd):
        if failing["on"]:
            ctypes.set_errno(errno.EIO)
            return -1
        return _SYNCFS(fd)

    monkeypatch.setattr(tsio, "_SYNCFS", flaky)
    sink = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 8))
    writer = _writer.REGISTRY.get(int(sink.writer))
    assert writer.wait_committed(8, timeout=30)
    failing["on"] = True
    return fail_after_eight(sink, writer), failing


def test_a_failed_sync_is_a_write_error_and_the_count_stays(tmp_path, monkeypatch):
    """``syncfs`` reporting EIO (a lost writeback) fails the run like a failed write: the loop
    sees it in the sink's flags, close names the frames counted before, and they read back."""
    store = tmp_path / "run.zarr"
    sink, _ = _syncs_fail_after_eight(store, monkeypatch)
    with pytest.raises(js.WriteError) as info:
        js.close(sink)
    message = str(info.value)
    assert "make the writes durable" in message and "Input/output error" in message
    assert f"8 frames of {store} are committed" in message
    run = js.open(store)
    assert len(run) == 8 and run.steps.tolist() == list(range(8))
    np.testing.assert_array_equal(run["x"][:], expected(range(8))["x"])


def _descriptors_of(path) -> set[int]:
    """This process's open descriptors of `path`, or of a folder deleted there (/proc/self/fd)."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            if os.readlink(f"/proc/self/fd/{name}") in (str(path), f"{path} (deleted)"):
                found.add(int(name))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
@pytest.mark.parametrize("end", ["close", "a replacement"])
def test_a_run_syncs_through_one_descriptor_held_from_its_first_sync_to_its_end(
    tmp_path, monkeypatch, end
):
    """Linux reports a failed write-back once to each descriptor opened before it: a writer
    syncs through one descriptor of its folder, held until the run ends, so that a failure of
    the kernel's own write-back between two syncs is still reported by the next one."""
    if _SYNCFS is None:
        pytest.skip("no syncfs in this C library (the os.sync path is tested below)")
    store = tmp_path / "run.zarr"
    monkeypatch.setattr(_zarr_writer.ZarrWriter, "commit_interval", 0.0)  # a sync per block
    synced: list[int] = []
    monkeypatch.setattr(tsio, "_SYNCFS", lambda fd: (synced.append(fd), _SYNCFS(fd))[1])
    sink = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 40))
    held = set(synced)  # every sync so far, through one descriptor, still open
    assert len(held) == 1 and held <= _descriptors_of(store)
    # (TensorStore opens the folder too, for a moment, to fsync it after writing a JSON document.)
    if end == "close":
        js.close(sink)
        assert len(synced) >= 3 and set(synced) == held  # records, close: the same one
        assert not _descriptors_of(store)  # let go at close
        assert js.open(store).steps.tolist() == list(range(40))
        return
    # The run is replaced (mode="w") while its writer is live: that writer is discarded.
    again = js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="w")
    _wait_until(  # the new writer's, which its first sync opened; the discarded one's is closed
        lambda: _descriptors_of(store) == {synced[-1]}, "only the new writer's descriptor is open"
    )
    js.close(run_steps(again, steps(0, 8)))
    assert not _descriptors_of(store) and js.open(store).steps.tolist() == list(range(8))


def _synced_files(store, monkeypatch) -> list[set[str]]:
    """Spy on the syncs of `store`: the complete files each one saw, in order."""
    seen: list[set[str]] = []
    sync = tsio.sync_written

    def syncing(spec, held=None):
        if spec.get("path", "").rstrip("/") == str(store):
            seen.append(_files(store))
        sync(spec, held)

    monkeypatch.setattr(tsio, "sync_written", syncing)
    return seen


def _wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def test_blocks_are_synced_between_records_once_sync_bytes_are_written(tmp_path, monkeypatch):
    """With no record due (an hour between records, after the first, which is at once), every
    block is still synced once ``sync_bytes`` are written (here: each block), without a record."""
    store = tmp_path / "run.zarr"
    monkeypatch.setattr(_zarr_writer.ZarrWriter, "commit_interval", 3600.0)
    monkeypatch.setattr(_zarr_writer.ZarrWriter, "sync_bytes", 1)
    seen = _synced_files(store, monkeypatch)
    sink = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 40))
    chunks = {_chunk(field, k) for field in FIELDS for k in range(10)}
    _wait_until(lambda: seen and chunks <= seen[-1], "a sync saw all ten blocks")
    assert js.open(store).status == "open" and len(js.open(store)) < 40  # synced, not counted
    js.close(sink)
    run = js.open(store)
    assert run.status == "closed" and run.steps.tolist() == list(range(40))


def test_small_runs_sync_only_at_their_records(tmp_path, monkeypatch):
    """Blocks smaller than ``sync_bytes`` (8 MiB) add no sync of their own between records."""
    store = tmp_path / "run.zarr"
    monkeypatch.setattr(_zarr_writer.ZarrWriter, "commit_interval", 3600.0)
    seen = _synced_files(store, monkeypatch)
    sink = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 40))
    writer = _writer.REGISTRY.get(int(sink.writer))
    _wait_until(lambda: writer._durable[0] == 40, "all ten blocks were written")
    time.sleep(0.2)  # the committer has had the time to sync, if it were to
    assert len(seen) == 2  # the create's and the first record's (at once), no more
    js.close(sink)
    assert len(seen) > 2 and js.open(store).steps.tolist() == list(range(40))


@pytest.mark.parametrize("when", ["between records", "at a record"])
def test_a_failed_sync_is_never_counted_even_if_a_later_sync_succeeds(tmp_path, monkeypatch, when):
    """A write-back error is reported once (a later ``syncfs`` does not repeat it): once a sync
    of frames 8..12 fails, no later record counts them, though the syncs at close succeed."""
    store = tmp_path / "run.zarr"
    if when == "between records":
        monkeypatch.setattr(_zarr_writer.ZarrWriter, "commit_interval", 3600.0)
        monkeypatch.setattr(_zarr_writer.ZarrWriter, "sync_bytes", 1)
    else:
        monkeypatch.setattr(_zarr_writer.ZarrWriter, "commit_interval", 0.0)
        monkeypatch.setattr(_zarr_writer.ZarrWriter, "sync_bytes", None)
    sink, failing = _syncs_fail_after_eight(store, monkeypatch)
    failing["on"] = False
    with pytest.raises(js.WriteError) as info:
        js.close(sink)
    message = str(info.value)
    assert "Input/output error" in message and f"8 frames of {store} are committed" in message
    if when == "between records":
        assert f"Making frames 8.. of {store} durable failed" in message
    run = js.open(store)
    assert run.status == "failed" and len(run) == 8 and run.steps.tolist() == list(range(8))
    np.testing.assert_array_equal(run["x"][:], expected(range(8))["x"])


def test_without_syncfs_the_writes_are_synced_with_os_sync(tmp_path, monkeypatch):
    """Where the C library has no ``syncfs`` (not Linux), ``os.sync`` does it: once per record."""
    store = tmp_path / "run.zarr"
    monkeypatch.setattr(tsio, "_SYNCFS", None)
    calls = []
    real = os.sync
    monkeypatch.setattr(tsio.os, "sync", lambda: (calls.append(1), real())[1])
    records = []
    record = _zarr_writer.ZarrWriter._record_committed
    monkeypatch.setattr(
        _zarr_writer.ZarrWriter,
        "_record_committed",
        lambda self: (records.append(self.committed), record(self))[1],
    )
    js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 12)))
    assert len(calls) >= len(records) + 2  # each record, the create and the close
    assert js.open(store).steps.tolist() == list(range(12))


def test_stores_other_than_local_files_have_nothing_to_sync(monkeypatch):
    def never(fd):
        raise AssertionError("syncfs called for a store that is not a local folder")

    monkeypatch.setattr(tsio, "_SYNCFS", never)
    tsio.sync_written({"driver": "memory", "path": "x/"})
    tsio.sync_written({"driver": "s3", "bucket": "b", "path": "x/"})
    store = "memory://durability-test"
    js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 8)))
    assert len(js.open(store)) == 8


def test_a_run_deleted_under_its_writer_is_reported_as_deleted_not_as_a_failed_sync(tmp_path):
    """With the run's folder gone there is nothing to sync: the metadata write that follows
    reports the deletion, as it did before writes were synced together."""
    tsio.sync_written({"driver": "file", "path": str(tmp_path / "never") + "/"})  # no error
    store = tmp_path / "run.zarr"
    sink = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 8))
    writer = _writer.REGISTRY.get(int(sink.writer))
    assert writer.wait_committed(8, timeout=30)
    shutil.rmtree(store)
    with pytest.raises(js.WriteError, match="deleted or replaced") as info:
        js.close(sink)
    assert "make the writes durable" not in str(info.value)
