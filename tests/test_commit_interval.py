"""The committed count of a Zarr run is recorded at most once per `commit_interval` while blocks
stream in (each record rewrites and fsyncs zarr.json), yet never later than needed: a close, a
wait for the count, a failure and back-pressure record it at once, and every record still covers
only durable frames."""

import json
import pathlib
import threading
import time

import numpy as np
import pytest
from zarr_helpers import EXAMPLE, expected, fail_after_eight, run_steps, steps

import jaxsinks as js
from jaxsinks._io import writer as _writer
from jaxsinks._io import zarr_writer as _zarr_writer

#: Longer than any test here runs: only the prompt paths can record the count.
LONG = 600.0


def _committed(store) -> int:
    meta = json.loads((pathlib.Path(store) / "zarr.json").read_text())
    return meta["attributes"]["jaxsinks"]["committed"]


def _records(monkeypatch) -> list[int]:
    """The committed counts recorded, in order, by every Zarr writer from now on."""
    seen: list[int] = []
    record = _zarr_writer.ZarrWriter._record_committed

    def counting(self):
        seen.append(self.committed)
        record(self)

    monkeypatch.setattr(_zarr_writer.ZarrWriter, "_record_committed", counting)
    return seen


def _streamed(store, frames: int):
    """A run at `store` with `frames` recorded in blocks of 4, and its writer, once the whole
    blocks are committed."""
    sink = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, frames))
    writer = _writer.REGISTRY.get(int(sink.writer))
    assert writer.wait_committed(frames // 4 * 4, timeout=30)
    return sink, writer


def test_a_zarr_run_records_at_most_once_per_interval_by_default():
    assert _zarr_writer.ZarrWriter.commit_interval == _writer.COMMIT_INTERVAL > 0
    assert _writer.HostWriter.commit_interval == 0  # CSV and host memory: each block


def test_blocks_durable_within_the_interval_share_one_record(tmp_path, monkeypatch):
    monkeypatch.setattr(_zarr_writer.ZarrWriter, "commit_interval", LONG)
    records = _records(monkeypatch)
    store = tmp_path / "run.zarr"
    sink = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 40))  # 10 blocks
    writer = _writer.REGISTRY.get(int(sink.writer))
    deadline = time.monotonic() + 20
    while writer._durable[0] < 40 and time.monotonic() < deadline:  # every block durable
        time.sleep(0.01)
    time.sleep(0.2)  # a committer that records each block would have recorded them by now
    assert records == [4]  # the first block at once (no record yet), the rest held back
    assert _committed(store) == 4 and len(js.open(store)) == 4
    js.close(sink)
    assert records == [4, 40] and len(js.open(store)) == 40
    np.testing.assert_array_equal(js.open(store)["x"][:], expected(range(40))["x"])


def test_a_wait_for_the_count_records_it_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(_zarr_writer.ZarrWriter, "commit_interval", LONG)
    store = tmp_path / "run.zarr"
    sink, writer = _streamed(store, 42)
    assert _committed(store) == 40 and js.open(store).status == "open"
    assert not writer.wait_committed(44, timeout=0.05)  # 2 frames are still on the device
    js.close(sink)
    assert len(js.open(store)) == 42


def test_close_records_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(_zarr_writer.ZarrWriter, "commit_interval", LONG)
    store = tmp_path / "run.zarr"
    sink = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 37))
    start = time.monotonic()
    js.close(sink)
    assert time.monotonic() - start < 60  # not the interval
    run = js.open(store)
    assert run.status == "closed" and run.steps.tolist() == list(range(37))


def test_back_pressure_records_at_once(tmp_path, monkeypatch):
    """A writer waiting on max_inflight_bytes (frames durable but not counted are in flight)
    must not wait for the interval: the loop would stall behind it."""
    monkeypatch.setattr(_zarr_writer.ZarrWriter, "commit_interval", LONG)
    records = _records(monkeypatch)
    store = tmp_path / "run.zarr"
    sink = js.ZarrSink.create(store, EXAMPLE, chunk=4, max_inflight_bytes=1)
    done = threading.Event()

    def record():
        js.close(run_steps(sink, steps(0, 80)))
        done.set()

    threading.Thread(target=record, daemon=True).start()
    assert done.wait(60), "the loop stalled behind a committer waiting for its interval"
    assert len(records) > 2 and records[-1] == 80
    assert len(js.open(store)) == 80


def test_a_failed_block_is_seen_by_the_loop_before_the_interval(tmp_path, monkeypatch):
    """A write failure reaches the sink's flags at once, not when the count is next recorded."""
    monkeypatch.setattr(_zarr_writer.ZarrWriter, "commit_interval", LONG)
    store = tmp_path / "run.zarr"
    sink, writer = _streamed(store, 8)
    blocker = store / "x" / "c" / "2" / "0"  # frames 8..12 go there: a directory, so they cannot
    (blocker / "taken").mkdir(parents=True)  # (root too)
    sink = fail_after_eight(sink, writer)
    with pytest.raises(js.WriteError, match="8 frames of .* are committed"):
        js.close(sink)
    run = js.open(store)
    assert len(run) == 8 and run.steps.tolist() == list(range(8))
