"""The functional API misused the way people do: old sink values reused, closed sinks written,
close given the wrong value. Each is a clear error and changes nothing stored (byte for byte)."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fs_helpers import stored_bytes
from zarr_helpers import EXAMPLE, expected, memory_store, run_steps, steps

import jaxsinks as js
from jaxsinks._io import writer as _writer


def durable(sink):
    """Wait until every block `sink` flushed is committed (writes are asynchronous: a snapshot
    taken before would race with them)."""
    jax.block_until_ready(sink)
    writer = _writer.REGISTRY.get(int(sink.writer))
    assert writer.wait_committed(int(sink.flushed), timeout=30)  # and the store says so


def test_reusing_an_old_sink_in_a_second_call_is_refused_and_changes_nothing(tmp_path, caplog):
    store = tmp_path / "run.zarr"
    s0 = js.ZarrSink.create(store, EXAMPLE, chunk=4)
    s1 = run_steps(s0, steps(0, 10))  # frames 0..7 flushed, 8..9 staged
    durable(s1)
    assert int(s1.flushed) == 8
    with caplog.at_level(logging.ERROR, logger="jaxsinks"):
        s2 = run_steps(s0, steps(100, 110))  # by mistake: the old sink again
        jax.block_until_ready(s2)
    assert int(s2.flags) & js.Flag.STALE and int(s2.flushed) == 0
    # Both of its blocks were refused, and logged once: a long loop on an old value would
    # otherwise log every block.
    assert len(caplog.records) == 1 and "older value" in caplog.text
    with pytest.raises(
        js.StaleSinkError, match=r"staged frames start at frame 0, but .* has 8 frames"
    ):
        js.close(s2)
    assert js.open(store).status == "open"  # the stale close wrote nothing; the run is still open
    # Closing the newest value keeps every frame of it, then reports the refused flushes.
    with pytest.raises(
        js.StaleSinkError, match=r"2 flush\(es\) .* frames 0\.\.4 \(the run expected frame 8"
    ):
        js.close(s1)
    run = js.open(store)
    assert run.status == "closed" and run.steps.tolist() == list(range(10))
    np.testing.assert_array_equal(run["x"][:], expected(range(10))["x"])


def test_an_optimisation_loop_reusing_the_first_sink_is_refused(tmp_path):
    store = tmp_path / "opt.zarr"
    sink0 = js.ZarrSink.create(store, {"x": jnp.zeros(3, jnp.float32)}, chunk=4)

    @jax.jit
    def loss(theta, sink):
        def body(carry, i):
            x, sink = carry
            x = x * theta
            return (x, js.record(sink, step=i, frame=lambda: {"x": x})), None

        (x, sink), _ = jax.lax.scan(
            body, (jnp.ones(3, jnp.float32), sink), jnp.arange(8, dtype=jnp.int32)
        )
        return jnp.sum(x), sink

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (_, first), _ = grad(jnp.float32(0.9), sink0)
    durable(first)
    on_disk = stored_bytes(store)
    (_, second), _ = grad(jnp.float32(0.5), sink0)  # the same initial sink passed again
    jax.block_until_ready(second)
    assert int(second.flags) & js.Flag.STALE
    assert {k: v for k, v in stored_bytes(store).items() if "zarr.json" not in k} == {
        k: v for k, v in on_disk.items() if "zarr.json" not in k
    }
    with pytest.raises(js.StaleSinkError, match="older value"):
        js.close(first)
    np.testing.assert_allclose(
        js.open(store)["x"][:], np.stack([0.9 ** (i + 1) * np.ones(3) for i in range(8)]), rtol=1e-6
    )


def test_closing_an_older_value_is_refused_and_the_newest_still_closes(tmp_path):
    store = tmp_path / "run.zarr"
    s0 = js.ZarrSink.create(store, EXAMPLE, chunk=4)
    s1 = run_steps(s0, steps(0, 6))
    s2 = run_steps(s1, steps(6, 13))
    with pytest.raises(js.StaleSinkError, match="older value"):
        js.close(s1)
    assert js.open(store).status == "open" and len(js.open(store)) <= 12
    js.close(s2)
    run = js.open(store)
    assert run.status == "closed" and run.steps.tolist() == list(range(13))


@pytest.mark.parametrize("kind", ["ZarrSink", "DeviceBuffer", "HostBuffer", "CsvSink"])
def test_closing_or_reading_a_donated_sink_is_a_stale_sink_error_and_the_new_one_closes(
    tmp_path, kind
):
    make = {
        "ZarrSink": lambda: js.ZarrSink.create(tmp_path / "run.zarr", EXAMPLE, chunk=4),
        "DeviceBuffer": lambda: js.DeviceBuffer.create(EXAMPLE, capacity=8),
        "HostBuffer": lambda: js.HostBuffer.create(EXAMPLE, capacity=8, block=4),
        "CsvSink": lambda: js.CsvSink.create(tmp_path / "log.csv", EXAMPLE, block=4),
    }[kind]
    old = make()
    new = jax.jit(run_steps, donate_argnums=0)(old, steps(0, 6))
    message = rf"This {kind}'s arrays were deleted: .*donate_argnums.*Read or close the sink"
    with pytest.raises(js.StaleSinkError, match=message):
        js.close(old)
    if hasattr(old, "read") and kind != "ZarrSink":
        with pytest.raises(js.StaleSinkError, match=message):
            old.read()
    closed = js.close(new)
    if kind == "ZarrSink":
        assert js.open(tmp_path / "run.zarr").steps.tolist() == list(range(6))
    elif kind == "CsvSink":
        assert (tmp_path / "log.csv").read_text().count("\n") == 7  # the header and 6 rows
    else:
        assert closed.read().steps.tolist() == list(range(6))


def test_writing_after_close_is_a_clear_error_eager_and_jitted(tmp_path):
    store = tmp_path / "run.zarr"
    sink = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 6))
    closed = js.close(sink)
    on_disk = stored_bytes(store)
    frame = {"x": jnp.ones(3, jnp.float32), "e": jnp.float32(1)}
    for target in (closed, sink):  # the closed value, and the value that was closed
        with pytest.raises(js.StaleSinkError, match="already closed"):
            target.write(frame, step=99)
    with pytest.raises(js.StaleSinkError, match="already closed"):
        run_steps(closed, steps(6, 20))  # caught when tracing
    # A jitted call on the pre-close value cannot be caught when tracing: its flushes are refused.
    late = run_steps(sink, steps(6, 20))
    assert int(late.flags) & js.Flag.STALE
    with pytest.raises(js.StaleSinkError):
        js.close(late)
    assert stored_bytes(store) == on_disk


def test_closing_twice_through_close_of_a_pytree_names_the_run(tmp_path):
    sink = js.ZarrSink.create(memory_store(), EXAMPLE, chunk=4)
    closed = js.close({"traj": sink})
    with pytest.raises(js.StaleSinkError, match="already closed"):
        js.close(closed)


def test_an_older_value_that_has_not_flushed_since_cannot_be_told_apart(tmp_path):
    """The documented limit: staleness is detected at the granularity of flushes. An older value
    whose offset still matches closes the run; the newer value's staged frames are then lost and
    closing it is an error (never silent)."""
    store = tmp_path / "run.zarr"
    s1 = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 5))  # 4 flushed, 1 staged
    s2 = run_steps(s1, steps(5, 7))  # 3 staged, no flush since s1
    js.close(s1)
    with pytest.raises(js.StaleSinkError, match="already closed"):
        js.close(s2)
    assert js.open(store).steps.tolist() == list(range(5))


def test_a_closed_sinks_value_flushed_again_is_logged_once_and_stores_nothing(tmp_path, caplog):
    store = tmp_path / "run.zarr"
    sink = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 6))
    js.close(sink)
    before = stored_bytes(store)
    with caplog.at_level(logging.ERROR, logger="jaxsinks"):
        late = run_steps(sink, steps(6, 40))  # eight more blocks into the closed run
        jax.block_until_ready(late)
    assert int(late.flags) & js.Flag.STALE
    assert len(caplog.records) == 1 and "was closed was flushed again" in caplog.text
    assert stored_bytes(store) == before


def test_a_run_whose_newest_sink_value_is_lost_closes_at_its_flushed_frames(tmp_path):
    """A sink closed over in a jitted function (a constant, not an argument): the first call's
    flush is accepted, the next calls' are refused, and every value the user holds is stale.
    close says how to end the run, and ``stale="close"`` commits what the writer has."""
    store = tmp_path / "run.zarr"
    sink = js.ZarrSink.create(store, EXAMPLE, chunk=4)

    @jax.jit
    def advance(start):  # the user's bug: `sink` is baked in when this is traced
        return run_steps(sink, start + steps(0, 6))

    for start in (0, 6, 12):
        last = advance(jnp.int32(start))
    with pytest.raises(js.StaleSinkError, match=r"jaxsinks.close\(sinks, stale='close'\)"):
        js.close(last)
    assert js.open(store).status == "open"  # nothing changed: the run waits for a newer value
    with pytest.raises(js.ConfigError, match=r"`stale` to be one of \['raise', 'close'\]; got 'x'"):
        js.close(last, stale="x")
    closed = js.close(last, stale="close")
    assert closed.closed
    run = js.open(store)
    assert run.status == "closed" and run.steps.tolist() == [0, 1, 2, 3]  # the one block flushed
    np.testing.assert_array_equal(run["x"][:], expected(range(4))["x"])
    with pytest.raises(js.StaleSinkError):  # the run is closed: no value can write to it again
        js.close(last, stale="close")
    js.close(js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="a"))  # and it can be appended to
