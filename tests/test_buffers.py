"""The writer's host buffers (`jaxsinks._io.writer`): a flushed block is copied into a buffer set
that TensorStore then references instead of copying it again, so a set is reused only once
nothing holds it. A store that keeps the arrays it was given (``memory://``) never sees its data
change; a local run reuses one set when its writes are done."""

import time

import numpy as np
import pytest
import tensorstore as ts
from zarr_helpers import EXAMPLE, expected, memory_store, run_steps, steps

import jaxsinks as js
from jaxsinks._io import tsio
from jaxsinks._io import writer as _writer

BLOCK = 4


def _released(writer, timeout: float = 30.0) -> bool:
    """Wait until TensorStore holds none of the writer's written buffer sets."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with writer._lock:
            if all(_writer.unreferenced(b) for b in writer._spares):
                return True
        time.sleep(0.005)
    return False


def test_a_store_that_keeps_the_written_arrays_never_sees_them_change():
    # A memory:// store keeps the arrays a write referenced as its values: reusing one for a
    # later block would rewrite frames already committed.
    url = memory_store()
    sink = js.ZarrSink.create(url, EXAMPLE, chunk=BLOCK, codec=None)  # values kept as given
    writer = _writer.REGISTRY.get(int(sink.writer))
    for start in range(0, 200, 40):  # 50 blocks, many more than the pool holds
        sink = run_steps(sink, steps(start, start + 40))
    js.close(sink)
    assert writer.blocks_written == 50
    assert writer.buffer_sets == 50  # every set is still held by the store: none was reused
    run = js.open(url)
    assert run.steps.tolist() == list(range(200))
    want = expected(range(200))
    np.testing.assert_array_equal(run["x"][:], want["x"])
    np.testing.assert_array_equal(run["e"][:], want["e"])
    np.testing.assert_array_equal(run.times, 0.25 * np.arange(200, dtype=np.float32))


def test_a_local_run_reuses_one_buffer_set_once_its_writes_are_done(tmp_path):
    store = tmp_path / "run.zarr"
    sink = js.ZarrSink.create(store, EXAMPLE, chunk=BLOCK)
    writer = _writer.REGISTRY.get(int(sink.writer))
    for k in range(12):  # one block at a time, each durable and let go of before the next
        sink = run_steps(sink, steps(BLOCK * k, BLOCK * (k + 1)))
        assert writer.wait_committed(BLOCK * (k + 1), timeout=30)
        assert _released(writer), f"TensorStore still holds block {k}'s buffer set"
    js.close(sink)
    assert writer.blocks_written == 12
    assert writer.buffer_sets == 1
    run = js.open(store)
    assert run.steps.tolist() == list(range(48))
    np.testing.assert_array_equal(run["x"][:], expected(range(48))["x"])


def test_a_buffer_set_is_referenced_while_a_view_of_any_array_lives():
    buffers = {"x": np.zeros((BLOCK, 3), np.float32), "step": np.zeros(BLOCK, np.int32)}
    assert _writer.unreferenced(buffers)
    view = buffers["step"][:2]
    assert not _writer.unreferenced(buffers)
    del view
    assert _writer.unreferenced(buffers)
    kept = [buffers["x"]]
    assert not _writer.unreferenced(buffers)
    kept.clear()
    assert _writer.unreferenced(buffers)


@pytest.mark.parametrize("driver", ["memory", "file"])
def test_tensorstore_holds_a_referenced_array_until_it_lets_go_of_it(tmp_path, driver):
    # What the reuse relies on: a write that references its source holds the array (a Python
    # reference) for as long as it may read it: until its commit for a file, for ever for memory.
    kvstore = {"driver": driver, "path": f"{tmp_path}/a/" if driver == "file" else "held/"}
    meta = {
        "shape": [8, 3],
        "data_type": "float32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [BLOCK, 3]}},
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
    }
    array = ts.open(
        {"driver": "zarr3", "kvstore": kvstore, "metadata": meta},
        create=True,
        delete_existing=True,
        context=tsio.WRITE_CONTEXT,
    ).result()
    buffers = {"x": np.ones((BLOCK, 3), np.float32)}
    write = tsio.write_rows(array, 0, buffers["x"][:BLOCK], reference=True)
    assert not _writer.unreferenced(buffers)
    write.commit.result()
    del write
    deadline = time.monotonic() + 30
    while driver == "file" and not _writer.unreferenced(buffers) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert _writer.unreferenced(buffers) == (driver == "file")
    if driver == "memory":  # the store's value is the array itself: it must never change
        buffers["x"][0, 0] = 7.0
        assert array[0, 0].read().result() == 7.0
