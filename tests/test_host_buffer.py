"""HostBuffer: frames offloaded from the compiled loop into preallocated host memory."""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from zarr_helpers import EXAMPLE, expected, memory_store, run_steps, steps

import jaxsinks as js
from jaxsinks._core.pytree import replace


@pytest.fixture
def make():
    """Create HostBuffers and release their host memory after the test."""
    made = []

    def create(*args, **kwargs):
        sink = js.HostBuffer.create(*args, **kwargs)
        made.append(sink)
        return sink

    yield create
    for sink in made:
        sink.release()


def bounded(fn, timeout=60.0):
    """``fn()`` run in a thread: its result or its exception, or a test failure if it hangs."""
    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            out["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{fn} still blocked after {timeout} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def assert_frames(trajectory, step_list):
    exp = expected(step_list)
    assert trajectory.steps.tolist() == list(step_list)
    np.testing.assert_allclose(trajectory.times, 0.25 * np.asarray(step_list, np.float32))
    np.testing.assert_array_equal(trajectory.frames["x"], exp["x"])
    np.testing.assert_array_equal(trajectory.frames["e"], exp["e"])


def test_frames_move_to_host_memory_and_read_back_during_and_after_the_run(make):
    sink = make(EXAMPLE, capacity=64, block=4, every=2)
    assert sink.columns.leaves[0].shape[0] == 4 + 1  # device memory: one block (plus the trash row)
    sink = run_steps(sink, steps(0, 21))  # 11 frames: 2 blocks on the host, 3 staged
    assert int(sink.flushed) == 8 and int(sink.staged) == 3 and len(sink) == 11
    assert_frames(sink.read(), range(0, 21, 2))
    sink = run_steps(sink, steps(21, 30))
    closed = js.close(sink)
    assert int(closed.staged) == 0 and int(closed.flushed) == 15
    assert_frames(closed.read(), range(0, 30, 2))
    assert_frames(sink.read(), range(0, 30, 2))  # the sink before close reads the same frames


@pytest.mark.parametrize(("overflow", "kept"), [("drop", range(10)), ("ring", range(14, 24))])
def test_overflow_keeps_the_first_or_the_newest_frames(make, overflow, kept):
    sink = make(EXAMPLE, capacity=10, block=4, overflow=overflow)
    sink = js.close(run_steps(sink, steps(0, 24)))
    assert len(sink) == 10
    assert_frames(sink.read(), kept)


def test_overflow_error_raises_naming_capacity_and_count_and_keeps_the_first_frames(make):
    sink = make(EXAMPLE, capacity=10, block=4)
    sink = run_steps(sink, steps(0, 13))
    with pytest.raises(js.SinkOverflowError, match="capacity is 10 frames but 13 were recorded"):
        sink.read()
    with pytest.raises(js.SinkOverflowError, match="capacity is 10 frames but 13 were recorded"):
        js.close(sink)
    assert_frames(sink.read(check=False), range(10))


def test_per_system_masked_rows_keep_their_system_index(make):
    frame = {"x": jnp.zeros((3, 2), jnp.float32)}
    sink = make(frame, capacity=32, block=4, per_system=True, once=True)

    @jax.jit
    def run(sink):
        def body(sink, i):
            x = jnp.full((3, 2), i.astype(jnp.float32)) + jnp.arange(3, dtype=jnp.float32)[:, None]
            converged = i >= jnp.array([2, 5, 3], jnp.int32)  # system j converges at step 2, 5, 3
            return js.record(
                sink, step=i, time=i.astype(jnp.float32), frame={"x": x}, mask=converged
            ), None

        return jax.lax.scan(body, sink, jnp.arange(8, dtype=jnp.int32))[0]

    sink = js.close(run(sink))
    got = sink.read()
    assert got.steps.tolist() == [2, 3, 5] and got.systems.tolist() == [0, 2, 1]
    np.testing.assert_array_equal(got.frames["x"][:, 0], [2.0, 5.0, 6.0])


def test_drain_returns_the_frames_and_an_empty_buffer_that_carries_on(make):
    sink = make(EXAMPLE, capacity=16, block=4)
    sink = run_steps(sink, steps(0, 10))
    first, sink = sink.drain()
    assert_frames(first, range(10))
    assert len(sink) == 0 and sink.read().steps.tolist() == []
    sink = js.close(run_steps(sink, steps(10, 16)))
    assert_frames(sink.read(), range(10, 16))


def test_a_value_older_than_zero_is_a_clear_error_never_a_hang(make):
    sink = run_steps(make(EXAMPLE, capacity=16, block=4), steps(0, 10))  # 8 frames in host memory
    empty = sink.zero()
    message = r"emptied by HostBuffer.zero\(\).*carry on with the buffer zero\(\) returned"
    for use in (sink.read, sink.drain, sink.zero, lambda: js.close(sink)):
        with pytest.raises(js.StaleSinkError, match=message):
            bounded(use)
    empty = run_steps(empty, steps(20, 25))  # 4 frames in host memory, 1 staged
    stale = run_steps(sink, steps(10, 14))  # its flush is refused: it would overwrite those frames
    with pytest.raises(js.StaleSinkError, match=r"emptied by HostBuffer.zero\(\)"):
        bounded(lambda: js.close(stale))
    empty = js.close(run_steps(empty, steps(25, 29)))
    assert_frames(bounded(empty.read), range(20, 29))


def test_zero_of_a_closed_buffer_records_again_on_the_same_memory(make):
    closed = js.close(run_steps(make(EXAMPLE, capacity=16, block=4), steps(0, 6)))
    assert_frames(closed.read(), range(6))
    again = closed.zero()
    assert len(again) == 0 and bounded(again.read).steps.tolist() == []
    again = js.close(run_steps(again, steps(6, 15)))
    assert_frames(bounded(again.read), range(6, 15))
    with pytest.raises(js.StaleSinkError, match="emptied by HostBuffer.zero"):
        bounded(closed.read)


def test_a_read_waiting_for_frames_the_stopped_pipeline_never_stored_raises(make):
    closed = js.close(run_steps(make(EXAMPLE, capacity=16, block=4), steps(0, 6)))
    # A value counting frames its pipeline never received (as a flush refused after close did).
    ahead = replace(closed, flushed=closed.flushed + 4)
    with pytest.raises(
        js.StoreError, match=r"pipeline has stopped with 6 stored: frames 6..10 never"
    ):
        bounded(ahead.read)
    with pytest.raises(js.StoreError, match="never reached host memory"):
        bounded(ahead.zero)
    assert_frames(closed.read(), range(6))  # nothing stored was changed


def test_release_while_a_read_waits_ends_the_wait(make):
    sink = run_steps(make(EXAMPLE, capacity=16, block=4), steps(0, 6))
    ahead = replace(sink, flushed=sink.flushed + 4)  # frames that will never come
    memory = sink._memory()
    errors = []
    waiting = threading.Thread(
        target=lambda: errors.append(pytest.raises(js.StoreError, memory.wait_for, 8)), daemon=True
    )
    waiting.start()
    sink.release()
    waiting.join(60)
    assert not waiting.is_alive() and "never reached host memory" in str(errors[0].value)
    with pytest.raises(js.StoreError, match="host memory was released"):
        bounded(ahead.read)


def test_save_npz_round_trips(make, tmp_path):
    sink = js.close(run_steps(make(EXAMPLE, capacity=16, block=4), steps(0, 9)))
    sink.save_npz(tmp_path / "traj.npz")
    with np.load(tmp_path / "traj.npz") as data:
        assert sorted(data.files) == ["e", "step", "time", "x"]
        exp = expected(range(9))
        np.testing.assert_array_equal(data["x"], exp["x"])
        np.testing.assert_array_equal(data["e"], exp["e"])
        assert data["step"].tolist() == list(range(9))


def bfloat16_values():
    """bfloat16 values that a lossy save would change: specials, a subnormal, -0 and a value
    that needs all of bfloat16's mantissa bits."""
    info = jnp.finfo(jnp.bfloat16)
    values = [1.5, -0.375, float(info.smallest_subnormal), -0.0, float(info.max), np.inf, np.nan]
    return np.array(values + [1.0 + 127 / 128], jnp.bfloat16)


def record_bfloat16(make, **kwargs):
    """A closed HostBuffer of three frames of a bfloat16 field ``w`` (rolled `bfloat16_values`)
    at times 0, 0.5 and 1."""
    values = bfloat16_values()
    sink = make({"w": jnp.zeros(values.shape, jnp.bfloat16)}, capacity=4, block=2, **kwargs)
    for i in range(3):
        frame = {"w": jnp.asarray(np.roll(values, i))}
        sink = sink.write(frame, step=i, time=0.5 * i)
    return js.close(sink)


def bits(array):
    return np.asarray(array).view(np.uint16)


def test_save_npz_saves_bfloat16_as_float32_that_casts_back_bit_exactly(make, tmp_path):
    # numpy does not know bfloat16: np.savez once wrote raw bytes, which np.load gives as |V2.
    sink = record_bfloat16(make, time_dtype=jnp.bfloat16)
    recorded = sink.read()
    sink.save_npz(tmp_path / "half.npz")
    with np.load(tmp_path / "half.npz") as data:
        assert data["w"].dtype == np.float32 and data["time"].dtype == np.float32
        np.testing.assert_array_equal(data["w"], recorded.frames["w"].astype(np.float32))
        assert bits(data["w"].astype(jnp.bfloat16)).tolist() == bits(recorded.frames["w"]).tolist()
        assert data["time"].tolist() == [0.0, 0.5, 1.0]
        assert data["step"].dtype == recorded.steps.dtype


def test_a_bfloat16_run_opens_with_js_open_only_and_float32_with_zarr_python_too(make, tmp_path):
    # Pins docs/guides/storage.md#bfloat16-fields. If zarr-python learns Zarr's bfloat16 data
    # type, the `pytest.raises` below fails: then update that section (and codecs.STORABLE's note).
    zarr = pytest.importorskip("zarr")
    xr = pytest.importorskip("xarray")
    sink = record_bfloat16(make)
    recorded = sink.read().frames["w"]
    sink.to_zarr(tmp_path / "bf16.zarr")
    run = js.open(tmp_path / "bf16.zarr")
    assert run["w"].dtype == jnp.bfloat16
    assert bits(run["w"][:]).tolist() == bits(recorded).tolist()
    with pytest.raises(ValueError, match="bfloat16"):
        zarr.open_group(tmp_path / "bf16.zarr", mode="r")
    sink.to_zarr(tmp_path / "f32.zarr", field_config={"w": js.FieldConfig(dtype="float32")})
    stored = zarr.open_group(tmp_path / "f32.zarr", mode="r")["w"]
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored[:], recorded.astype(np.float32))
    with xr.open_zarr(tmp_path / "f32.zarr") as ds:
        np.testing.assert_array_equal(ds["w"].values, recorded.astype(np.float32))


def test_to_zarr_writes_a_run_that_open_reads(make):
    sink = js.close(run_steps(make(EXAMPLE, capacity=32, block=4, every=3), steps(0, 40)))
    store = memory_store()
    assert sink.to_zarr(store, chunk=5, attrs={"source": "host"}) == 14
    run = js.open(store)
    assert len(run) == 14 and run.status == "closed" and run.attrs["source"] == "host"
    assert run.steps.tolist() == list(range(0, 40, 3))
    np.testing.assert_array_equal(run["x"][:], expected(range(0, 40, 3))["x"])
    assert run.schedule == {"type": "every", "n": 3, "start": 0}


@pytest.mark.parametrize(
    "option", [{"every": 2}, {"per_system": True}, {"time_dtype": jnp.float16}, {"every": None}]
)
def test_to_zarr_refuses_options_the_buffer_fixes_and_creates_nothing(make, option, tmp_path):
    sink = js.close(run_steps(make(EXAMPLE, capacity=32, block=4, every=3), steps(0, 40)))
    with pytest.raises(js.ConfigError, match=rf"to_zarr` got \['{next(iter(option))}'\].*Drop"):
        sink.to_zarr(tmp_path / "run", **option)
    assert not (tmp_path / "run").exists()
    assert len(sink) == 14  # the buffer still holds its frames


@pytest.mark.parametrize("overflow", ["drop", "ring", "error"])
@pytest.mark.parametrize("appended", [0, 4])
def test_to_zarr_keeps_the_frames_a_zarr_sink_with_its_capacity_would_keep(
    make, overflow, appended
):
    """`to_zarr(capacity=8)` wrote all 14 frames into a run whose metadata says capacity 8, and
    raised nothing with overflow='error'. It now writes what a ZarrSink with the same options
    keeps, also when appending after frames already there (they count against the capacity)."""
    sink = js.close(run_steps(make(EXAMPLE, capacity=32, block=4, every=3), steps(0, 40)))
    store, options = memory_store(), {"chunk": 4, "capacity": 8, "overflow": overflow}
    before = list(range(-appended, 0))
    first = js.ZarrSink.create(store, EXAMPLE, every=3, **options)
    for step in before:
        first = first.write(
            {"x": jnp.zeros(3, jnp.float32), "e": jnp.float32(0)}, step=step, time=0.0
        )
    js.close(first)
    recorded = before + list(range(0, 40, 3))
    kept = recorded[-8:] if overflow == "ring" else recorded[:8]
    if overflow == "error":
        with pytest.raises(js.SinkOverflowError, match=f"capacity is 8 frames but {len(recorded)}"):
            sink.to_zarr(store, mode="a", **options)
    else:
        written = sink.to_zarr(store, mode="a", **options)
        # the buffer's frames the run holds (a ring returned 14, all it had written, for 8)
        assert written == sum(step >= 0 for step in kept)
    run = js.open(store)
    assert run.status == "closed" and run.meta["capacity"] == 8
    assert run.steps.tolist() == kept
    np.testing.assert_array_equal(run["x"][appended:], expected(kept[appended:])["x"])
    assert len(sink) == 14  # the buffer still holds its frames


def test_to_zarr_returns_the_frames_the_run_holds(make):
    """With capacity=2 and overflow='ring', to_zarr of 3 frames returned 3; the run holds 2."""
    sink = make(EXAMPLE, capacity=4, block=2)
    sink = js.close(run_steps(sink, steps(0, 3)))
    for overflow in ("drop", "ring"):
        store = memory_store()
        written = sink.to_zarr(store, capacity=2, chunk=1, overflow=overflow)
        assert written == len(js.open(store)) == 2


def test_to_zarr_refuses_an_unknown_option_naming_it_and_creates_nothing(make, tmp_path):
    """A misspelt option raised a raw TypeError from ZarrSink.create."""
    sink = js.close(run_steps(make(EXAMPLE, capacity=8, block=4), steps(0, 5)))
    message = (
        r"to_zarr` got unknown option\(s\) \['codecs'\]\. It takes these options of "
        r"`ZarrSink.create`: attrs, .*codec, .*`codecs`: did you mean `codec`\?"
    )
    with pytest.raises(js.ConfigError, match=message):
        sink.to_zarr(tmp_path / "run", codecs=js.Zstd(3))
    with pytest.raises(js.ConfigError, match=r"unknown option\(s\) \['frame'\]"):
        sink.to_zarr(tmp_path / "run", frame=EXAMPLE)
    assert not (tmp_path / "run").exists()
    with pytest.warns(DeprecationWarning, match="fields"):  # an old spelling still works
        assert sink.to_zarr(tmp_path / "run", fields={}) == 5


def fork(make, **kwargs):
    """A buffer of blocks of 4, recorded to frame 6 (``base``: 4 in host memory, 2 staged), then
    continued twice from ``base``: ``newest`` to frame 12, and ``forked`` (a cell run again on
    ``base``) to frame 106, whose flush is refused: ``newest`` flushed frames 4.. first."""
    base = run_steps(make(EXAMPLE, capacity=32, block=4, **kwargs), steps(0, 6))
    newest = run_steps(base, steps(6, 12))
    forked = run_steps(base, steps(100, 106))
    assert int(forked.flags) & js.Flag.STALE and int(forked.recorded) == 12
    return base, newest, forked


def test_a_forked_value_whose_flush_was_refused_is_stale_never_read_with_gaps(make, tmp_path):
    """The forked value read back steps [0..3, 104, 105]: frames 4, 5, 100..103 missing without a
    word (save_npz and to_zarr saved that trajectory); close of the same value raised."""
    base, newest, forked = fork(make)
    message = (
        r"older value of its buffer: flushes from it to host memory were refused \(a newer value "
        r"had already flushed frames there from frame 4 on.*Read the newest value"
    )
    uses = {
        "read": forked.read,
        "read(check=False)": lambda: forked.read(check=False),
        "drain": forked.drain,
        "save_npz": lambda: forked.save_npz(tmp_path / "forked.npz"),
        "to_zarr": lambda: forked.to_zarr(tmp_path / "forked.zarr"),
    }
    for name, use in uses.items():
        with pytest.raises(js.StaleSinkError, match=message):
            use()
        assert not list(tmp_path.iterdir()), name  # nothing saved
    assert_frames(newest.read(), range(12))
    assert_frames(base.read(), range(6))  # its frames are all there: an older value reads them
    with pytest.raises(js.StaleSinkError, match="came from an older value"):
        js.close(newest)  # the refused flush, raised once the run is closed
    assert_frames(newest.read(), range(12))


def test_a_value_flushed_after_the_buffer_was_closed_is_stale_on_read(make):
    base = run_steps(make(EXAMPLE, capacity=32, block=4), steps(0, 6))
    closed = js.close(base)
    late = run_steps(base, steps(6, 12))  # its flushes reach a closed buffer: refused
    assert int(late.flags) & js.Flag.STALE
    with pytest.raises(js.StaleSinkError, match="were refused .*or the buffer was closed"):
        late.read()
    assert_frames(closed.read(), range(6))


def test_an_older_ring_value_reads_its_own_frames_or_is_stale_never_newer_ones(make):
    """Once a newer value had wrapped the ring, an older value read the newer value's frames from
    the rows they overwrote (steps [12, 13, 14, 3] for [0, 1, 2, 3])."""
    old = run_steps(make(EXAMPLE, capacity=6, block=3, overflow="ring"), steps(0, 4))
    newer = run_steps(old, steps(4, 7))  # 6 frames in host memory: none of `old`'s overwritten
    assert_frames(old.read(), range(4))
    newest = run_steps(newer, steps(7, 16))  # 15 frames sent: the ring wrapped twice
    for value, frames in ((old, "0..3"), (newer, "1..6")):
        with pytest.raises(
            js.StaleSinkError,
            match=rf"its frames {frames} were in host memory rows that newer frames have since "
            r"overwritten \(overflow='ring' keeps the newest 6 frames, and 15 have been sent",
        ):
            value.read()
    assert_frames(newest.read(), range(10, 16))
    assert_frames(js.close(newest).read(), range(10, 16))


def test_save_npz_saves_a_field_named_like_an_argument_of_np_savez(make, tmp_path):
    """np.savez(path, **arrays) took a field `allow_pickle` for its flag (the field was not saved)
    and raised a raw TypeError for a field `file`."""
    frame = {name: jnp.zeros(2, jnp.float32) for name in ("allow_pickle", "file", "compress")}
    sink = make(frame, capacity=4, block=2)
    for i in range(3):
        sink = sink.write({name: jnp.full(2, i, jnp.float32) for name in frame}, step=i)
    sink = js.close(sink)
    for compressed in (False, True):
        sink.save_npz(tmp_path / f"fields{compressed}", compressed=compressed)  # gets .npz
        with np.load(tmp_path / f"fields{compressed}.npz") as data:
            assert sorted(data.files) == ["allow_pickle", "compress", "file", "step", "time"]
            for name in frame:
                np.testing.assert_array_equal(data[name], np.repeat([[0], [1], [2]], 2, axis=1))
            assert data["step"].tolist() == [0, 1, 2]


def test_released_memory_is_a_clear_error(make):
    sink = run_steps(make(EXAMPLE, capacity=8, block=4), steps(0, 5))
    sink.release()
    with pytest.raises(js.StoreError, match="host memory was released"):
        sink.read()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"capacity": 0}, r"`capacity` to be a positive int.*got 0"),
        ({"capacity": 4, "block": 8}, r"flush block \(block=8\) to fit in `capacity` \(4 frames\)"),
        (
            {"capacity": 8, "overflow": "wrap"},
            r"`overflow` to be one of \['error', 'drop', 'ring'\]; got 'wrap'",
        ),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(js.ConfigError, match=message):
        js.HostBuffer.create(EXAMPLE, **kwargs)


def test_vmap_is_a_clear_error(make):
    sink = make(EXAMPLE, capacity=8, block=4)
    frames = {"x": jnp.ones((2, 3), jnp.float32), "e": jnp.ones(2, jnp.float32)}
    with pytest.raises(js.TransformError, match="cannot be written under jax.vmap"):
        jax.vmap(lambda f: js.record(sink, step=0, time=0.0, frame=f).staged)(frames)


def test_save_npz_into_a_missing_folder_is_a_store_error_naming_it(make, tmp_path):
    """It raised numpy's bare FileNotFoundError."""
    sink = js.close(run_steps(make(EXAMPLE, capacity=8, block=4), steps(0, 5)))
    target = tmp_path / "missing" / "run.npz"
    with pytest.raises(js.StoreError, match=r"the folder '.*missing' does not exist\. Create it"):
        sink.save_npz(target)
    assert len(sink.read()) == 5


def test_a_capacity_too_large_for_host_memory_is_a_config_error_naming_it():
    """It raised numpy's bare MemoryError."""
    with pytest.raises(js.ConfigError, match=r"`capacity`=2000000000 frames \(.* GiB .*smaller"):
        js.HostBuffer.create({"x": jnp.zeros((64, 64), jnp.float32)}, capacity=2 * 10**9, block=4)
