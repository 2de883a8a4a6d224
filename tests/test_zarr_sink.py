import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
import zarr
from fs_helpers import readonly_directory, stored_bytes
from zarr_helpers import EXAMPLE, expected, frame_at, memory_store, run_steps, steps

import jaxsinks as js
from jaxsinks._io import writer as _writer


def assert_run(run, step_list):
    assert run.steps.tolist() == list(step_list)
    np.testing.assert_allclose(run.times, 0.25 * np.asarray(step_list, np.float32))
    exp = expected(step_list)
    np.testing.assert_array_equal(run["x"][:], exp["x"])
    np.testing.assert_array_equal(run["e"][:], exp["e"])


@pytest.mark.parametrize("where", ["file", "memory"])
def test_records_every_frame_through_flushes_and_the_tail(tmp_path, where):
    store = str(tmp_path / "run.zarr") if where == "file" else memory_store()
    sink = js.ZarrSink.create(store, EXAMPLE, chunk=4, every=3)
    sink = run_steps(sink, steps(0, 40))  # 14 frames: 3 flushes of 4, 2 staged
    assert int(sink.flushed) == 12 and int(sink.staged) == 2
    sink = js.close(sink)
    run = js.open(store)
    assert len(run) == 14 and run.status == "closed" and run.committed == 14
    assert_run(run, range(0, 40, 3))
    assert run.schedule == {"type": "every", "n": 3, "start": 0}


def test_zarr_python_and_xarray_read_the_same_values(tmp_path):
    store = tmp_path / "run.zarr"
    sink = js.ZarrSink.create(
        store,
        {"pos": jnp.zeros((2, 3), jnp.float32), "meta": {"id": jnp.zeros((), jnp.int32)}},
        chunk=5,
        attrs={"temperature": 300.0, "tags": ["a", "b"]},
    )

    @jax.jit
    def go(sink):
        def body(sink, step):
            f = {
                "pos": jnp.full((2, 3), step, jnp.float32)
                + jnp.arange(6, dtype=jnp.float32).reshape(2, 3),
                "meta": {"id": step * 10},
            }
            return sink.write(f, step=step, time=step.astype(jnp.float32)), None

        return jax.lax.scan(body, sink, steps(0, 12))[0]

    js.close(go(sink))
    run = js.open(store)
    group = zarr.open_group(store, mode="r")
    assert group.attrs["temperature"] == 300.0 and group.attrs["jaxsinks"]["committed"] == 12
    np.testing.assert_array_equal(group["pos"][:], run["pos"][:])
    np.testing.assert_array_equal(group["meta/id"][:], np.arange(12) * 10)
    np.testing.assert_array_equal(group["step"][:], np.arange(12))
    assert group["pos"].metadata.dimension_names == ("frame", "pos_0", "pos_1")
    assert group["pos"].chunks == (5, 2, 3)

    ds = xr.open_zarr(store, consolidated=False, zarr_format=3)
    np.testing.assert_array_equal(ds["pos"].values, run["pos"][:])
    assert ds["pos"].dims == ("frame", "pos_0", "pos_1")
    ours = run.to_xarray()
    assert ours["pos"].dims == ds["pos"].dims and ours.attrs["tags"] == ["a", "b"]
    nested = xr.open_zarr(store, group="meta", consolidated=False, zarr_format=3)  # a subgroup
    np.testing.assert_array_equal(ours["meta/id"].values, nested["id"].values)
    np.testing.assert_array_equal(ours["step"].values, np.arange(12))


@pytest.mark.parametrize(
    "options",
    [
        dict(codec=None),
        dict(codec=js.Zstd(1)),
        dict(codec=js.Blosc("zstd", 5, "shuffle")),
        dict(codec=js.Blosc("lz4", 1, "bitshuffle"), chunk=2, chunks_per_shard=3),
        dict(
            codec=js.Zstd(3),
            field_config={
                "x": js.FieldConfig(dtype="float16", codec=None, chunk=(1,), dims=("dof",))
            },
        ),
    ],
    ids=["none", "zstd", "blosc", "sharded", "overrides"],
)
def test_codecs_and_overrides_round_trip_through_zarr_python(tmp_path, options):
    options = {"chunk": 4, **options}
    store = tmp_path / "run.zarr"
    js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, **options), steps(0, 17)))
    run, group = js.open(store), zarr.open_group(store, mode="r")
    assert len(run) == 17
    np.testing.assert_array_equal(group["x"][:], run["x"][:])
    np.testing.assert_allclose(run["x"][:], expected(range(17))["x"], rtol=1e-3)
    if "field_config" in options:
        assert group["x"].dtype == np.float16 and group["x"].chunks == (4, 1)
        assert group["x"].metadata.dimension_names == ("frame", "dof")
    if "chunks_per_shard" in options:
        assert group["x"].shards == (6, 3) and group["x"].chunks == (2, 3)


def test_each_flush_writes_whole_chunks(tmp_path):
    store = tmp_path / "run.zarr"
    sink = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 12))
    _wait_committed(store, 12)
    files = sorted(p.name for p in (store / "x" / "c").iterdir())
    assert files == ["0", "1", "2"]  # three chunks, each written once, whole
    js.close(sink)


def test_committed_count_advances_during_the_run_not_only_at_close(tmp_path):
    store = tmp_path / "run.zarr"
    sink = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 10))
    _wait_committed(store, 8)  # two full blocks are durable before close
    assert js.open(store).status == "open" and len(js.open(store)) == 8
    js.close(sink)
    assert len(js.open(store)) == 10


def _wait_committed(store, n, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = json.loads((pathlib.Path(store) / "zarr.json").read_text())["attributes"]["jaxsinks"]
        if meta["committed"] >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"committed count did not reach {n}: {meta['committed']}")


def test_a_run_split_over_several_jit_calls_continues_the_store():
    store = memory_store()
    sink = js.ZarrSink.create(store, EXAMPLE, chunk=4)
    for start in range(0, 30, 7):
        sink = run_steps(sink, steps(start, min(start + 7, 30)))
    js.close(sink)
    assert_run(js.open(store), range(30))
    assert run_steps._cache_size() >= 1


def test_sinks_of_one_configuration_share_one_compiled_program():
    before = run_steps._cache_size()
    for _ in range(3):
        js.close(run_steps(js.ZarrSink.create(memory_store(), EXAMPLE, chunk=5), steps(0, 11)))
    assert run_steps._cache_size() - before == 1


def test_value_and_grad_writes_each_frame_exactly_once():
    store = memory_store()
    sink = js.ZarrSink.create(store, EXAMPLE, chunk=4, every=2)
    writer = _writer.REGISTRY.get(int(sink.writer))

    def loss(p, sink):
        def body(carry, step):
            x, sink = carry
            x = x * p + 1.0
            sink = js.record(sink, step=step, time=jnp.float32(0), frame={"x": x, "e": jnp.sum(x)})
            return (x, sink), x

        (x, sink), xs = jax.lax.scan(body, (jnp.ones(3, jnp.float32), sink), steps(0, 20))
        return jnp.sum(xs**2), sink

    (value, sink), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(jnp.float32(0.9), sink)
    assert writer.blocks_written == 2  # 10 frames: two full blocks flushed inside the loop
    js.close(sink)
    assert writer.blocks_written == 3  # and the tail at close
    run = js.open(store)
    assert run.steps.tolist() == list(range(0, 20, 2))
    ref = np.cumprod(np.full(20, 0.9, np.float32))  # x_t = 0.9 x_{t-1} + 1 from 1
    x = np.ones(3, np.float32)
    xs = []
    for _ in range(20):
        x = x * np.float32(0.9) + 1
        xs.append(x.copy())
    np.testing.assert_allclose(run["x"][:], np.stack(xs)[::2], rtol=1e-6)
    assert np.isfinite(float(grad)) and ref.shape == (20,)


def test_a_vmapped_ensemble_records_with_a_leading_replica_axis():
    store = memory_store()
    replicas = 4
    sink = js.ZarrSink.create(store, {"x": jnp.zeros((replicas, 2), jnp.float32)}, chunk=3)

    @jax.jit
    def go(sink):
        def body(carry, step):
            x, sink = carry
            x = jax.vmap(lambda xi, k: xi + k)(x, jnp.arange(replicas, dtype=jnp.float32))
            return (x, js.record(sink, step=step, frame={"x": x})), None

        return jax.lax.scan(body, (jnp.zeros((replicas, 2), jnp.float32), sink), steps(0, 7))[0][1]

    js.close(go(sink))
    x = js.open(store)["x"][:]
    assert x.shape == (7, replicas, 2)
    np.testing.assert_array_equal(
        x[:, :, 0], np.arange(1, 8)[:, None] * np.arange(replicas)[None, :]
    )


def test_vmapping_the_sink_itself_is_a_clear_error():
    sink = js.ZarrSink.create(memory_store(), {"x": jnp.zeros(2)}, chunk=2)
    with pytest.raises(js.TransformError, match="Vmap the step function instead"):
        jax.vmap(lambda x: sink.write({"x": x}, step=0), axis_size=3)(jnp.ones((3, 2)))
    js.close(sink)


def test_a_while_loop_that_stops_early_loses_no_frame():
    store = memory_store()
    sink = js.ZarrSink.create(store, EXAMPLE, chunk=8)

    @jax.jit
    def go(sink):
        def body(c):
            step, sink = c
            return step + 1, js.record(
                sink, step=step, time=0.25 * step.astype(jnp.float32), frame=frame_at(step)
            )

        return jax.lax.while_loop(lambda c: c[0] < 13, body, (jnp.int32(0), sink))[1]

    js.close(go(sink))
    assert_run(js.open(store), range(13))


def test_per_system_sinks_append_masked_rows_with_system_index():
    store = memory_store()
    sink = js.ZarrSink.create(store, {"e": jnp.zeros(3, jnp.float32)}, per_system=True, chunk=4)

    @jax.jit
    def go(sink):
        def body(sink, step):
            e = jnp.arange(3, dtype=jnp.float32) + 10 * step.astype(jnp.float32)
            mask = (jnp.arange(3, dtype=jnp.int32) + step) % 2 == 0
            return sink.write({"e": e}, step=step, mask=mask), None

        return jax.lax.scan(body, sink, steps(0, 9))[0]

    js.close(go(sink))
    run = js.open(store)
    rows = [(s, i) for s in range(9) for i in range(3) if (i + s) % 2 == 0]
    assert list(zip(run.steps.tolist(), run.systems.tolist())) == rows
    np.testing.assert_array_equal(run["e"][:], [i + 10 * s for s, i in rows])


def test_per_system_chunk_must_hold_a_batch():
    with pytest.raises(js.ConfigError, match="pass chunk >= 8"):
        js.ZarrSink.create(memory_store(), {"e": jnp.zeros(8)}, per_system=True, chunk=4)


@pytest.mark.parametrize("overflow", ["error", "drop"])
def test_capacity_keeps_the_first_frames(overflow):
    store = memory_store()
    sink = run_steps(
        js.ZarrSink.create(store, EXAMPLE, chunk=4, capacity=10, overflow=overflow), steps(0, 17)
    )
    assert int(sink.flags) & js.Flag.OVERFLOW
    if overflow == "error":
        with pytest.raises(
            js.SinkOverflowError, match="capacity is 10 frames but 17 were recorded"
        ):
            js.close(sink)
    else:
        js.close(sink)
    assert_run(js.open(store), range(10))  # nothing that fitted is lost


def test_ring_capacity_keeps_the_newest_frames_in_order():
    store = memory_store()
    sink = run_steps(
        js.ZarrSink.create(store, EXAMPLE, chunk=4, capacity=8, overflow="ring"), steps(0, 22)
    )
    js.close(sink)
    run = js.open(store)
    assert_run(run, range(14, 22))
    with pytest.raises(js.ConfigError, match="multiple of the flush block"):
        js.ZarrSink.create(memory_store(), EXAMPLE, chunk=4, capacity=10, overflow="ring")


def test_float16_storage_rejects_out_of_range_values_instead_of_storing_inf():
    store = memory_store()
    sink = js.ZarrSink.create(
        store, EXAMPLE, chunk=4, field_config={"e": js.FieldConfig(dtype="float16")}
    )

    @jax.jit
    def go(sink):
        def body(sink, step):
            f = frame_at(step)
            f["e"] = jnp.where(step == 9, 1e6, f["e"])  # frame 9 does not fit float16
            return sink.write(f, step=step), None

        return jax.lax.scan(body, sink, steps(0, 14))[0]

    sink = go(sink)
    assert int(sink.flags) & js.Flag.OUT_OF_RANGE and int(sink.flags) & js.Flag.WRITE_FAILED
    with pytest.raises(
        js.OutOfRangeError,
        match=r"Frames 8 to 11 hold values that the storage dtype of 'e' \(float16\) cannot "
        r"hold.*8 frames of .* are committed",
    ) as err:
        js.close(sink)
    assert err.value.committed == 8
    run = js.open(store)
    assert len(run) == 8 and run.status == "failed"
    assert np.all(np.isfinite(run["e"][:]))
    # NaN and inf are values, not overflow
    sink = js.ZarrSink.create(
        memory_store(),
        {"e": jnp.zeros((), jnp.float32)},
        chunk=2,
        field_config={"e": js.FieldConfig(dtype="float16")},
    )
    sink = sink.write({"e": jnp.float32(jnp.nan)}, step=0).write(
        {"e": jnp.float32(jnp.inf)}, step=1
    )
    js.close(sink)


def test_out_of_range_in_the_tail_is_caught_at_close():
    store = memory_store()
    sink = js.ZarrSink.create(
        store,
        {"e": jnp.zeros((), jnp.float32)},
        chunk=4,
        field_config={"e": js.FieldConfig(dtype="float16")},
    )
    sink = sink.write({"e": jnp.float32(1.0)}, step=0).write({"e": jnp.float32(-7e4)}, step=1)
    with pytest.raises(js.OutOfRangeError):
        js.close(sink)
    assert len(js.open(store)) == 0


def test_a_float_field_stored_as_int_is_refused_for_new_runs_but_older_runs_go_on(monkeypatch):
    """Runs written before the refusal (a float field stored as int16) could not be appended to
    (nor resumed from a checkpoint): the refusal is for new runs only."""
    from jaxsinks._io import layout

    store, frame = memory_store(), {"x": jnp.zeros(3, jnp.float32)}
    config = {"x": js.FieldConfig(dtype="int16")}
    for mode in ("w-", "a"):
        with pytest.raises(js.ConfigError, match="would silently drop the fractional part"):
            js.ZarrSink.create(store, frame, chunk=2, field_config=config, mode=mode)
    with monkeypatch.context() as older:  # as jaxsinks wrote it before the refusal
        older.setattr(layout, "_check_fractions", lambda *args: None)
        sink = js.ZarrSink.create(store, frame, chunk=2, field_config=config)
    js.close(sink.write({"x": jnp.full(3, 1.0, jnp.float32)}, step=0))
    sink = js.ZarrSink.create(store, frame, chunk=2, field_config=config, mode="a")
    js.close(sink.write({"x": jnp.full(3, 2.0, jnp.float32)}, step=1))
    run = js.open(store)
    assert run.steps.tolist() == [0, 1] and run["x"][:].tolist() == [[1] * 3, [2] * 3]
    with pytest.raises(js.ConfigError, match="would silently drop"):  # replacing it: a new run
        js.ZarrSink.create(store, frame, chunk=2, field_config=config, mode="w")
    assert len(js.open(store)) == 2  # refused before anything was deleted


@pytest.mark.parametrize("bad_frame, committed", [(5, 4), (9, 8)], ids=["flush", "tail"])
def test_an_integer_a_float_storage_dtype_rounds_is_refused_not_changed(bad_frame, committed):
    """257 as bfloat16 was stored as 256 without a word: like a value out of range, it fails
    its block (flushed in the loop, or the tail at close) and the earlier blocks stay."""
    store = memory_store()
    sink = js.ZarrSink.create(
        store,
        {"n": jnp.zeros((), jnp.int32)},
        chunk=4,
        field_config={"n": js.FieldConfig(dtype="bfloat16")},
    )

    @jax.jit
    def go(sink):
        def body(sink, step):
            n = jnp.where(step == bad_frame, jnp.int32(257), step * jnp.int32(2))  # 2 * 9 fits
            return sink.write({"n": n}, step=step), None

        return jax.lax.scan(body, sink, jnp.arange(10, dtype=jnp.int32))[0]

    sink = go(sink)
    with pytest.raises(
        js.OutOfRangeError, match=r"storage dtype of 'n' \(bfloat16\) cannot hold"
    ) as err:
        js.close(sink)
    assert err.value.committed == committed
    run = js.open(store)
    assert run["n"][:].astype(np.int32).tolist() == [2 * i for i in range(committed)]


def stored_as(storage: str, rows: list, dtype) -> np.ndarray:
    """`rows` recorded as a field of `dtype` stored as `storage` (chunks of 2), read back."""
    store = memory_store()
    config = {"n": js.FieldConfig(dtype=storage)}
    example = {"n": jnp.zeros(len(rows[0]), dtype)}
    sink = js.ZarrSink.create(store, example, chunk=2, field_config=config)
    for i, row in enumerate(rows):
        sink = sink.write({"n": jnp.asarray(row, dtype)}, step=i)
    js.close(sink)
    return js.open(store)["n"][:]


def test_integers_a_float_storage_dtype_holds_are_stored_exactly():
    rows = [[2048, -2048, 65504], [4096, 3, -65504], [1, 2, 2050]]
    assert stored_as("float16", rows, jnp.int32).astype(np.int64).tolist() == rows


def test_a_big_endian_storage_dtype_is_stored_as_its_native_type():
    """FieldConfig(dtype='>f4') was accepted and the first write raised JAX's TypeError."""
    stored = stored_as(">f2", [[1.0, -2.5, 3.0]], jnp.float32)
    assert stored.dtype == np.float16 and stored.tolist() == [[1.0, -2.5, 3.0]]


def test_mode_w_minus_refuses_an_existing_store_and_w_overwrites(tmp_path):
    store = tmp_path / "run.zarr"
    js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 5)))
    with pytest.raises(js.StoreExistsError, match="mode='w' to overwrite"):
        js.ZarrSink.create(store, EXAMPLE)
    assert len(js.open(store)) == 5  # untouched
    (store.parent / "other").mkdir()
    (store.parent / "other" / "file.txt").write_text("not a run")
    with pytest.raises(js.StoreExistsError):
        js.ZarrSink.create(store.parent / "other", EXAMPLE)
    js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="w"), steps(100, 102)))
    assert js.open(store).steps.tolist() == [100, 101]


def test_append_mode_continues_the_run(tmp_path):
    store = tmp_path / "run.zarr"
    js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4, attrs={"a": 1}), steps(0, 10)))
    sink = js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="a", attrs={"b": 2})
    assert int(sink.flushed) == 10
    js.close(run_steps(sink, steps(10, 23)))
    run = js.open(store)
    assert_run(run, range(23))
    assert run.attrs == {"a": 1, "b": 2}
    # append to a store that does not exist creates it
    js.close(run_steps(js.ZarrSink.create(tmp_path / "new.zarr", EXAMPLE, mode="a"), steps(0, 2)))
    assert len(js.open(tmp_path / "new.zarr")) == 2


def test_append_with_another_schema_is_a_clear_error_and_changes_nothing(tmp_path):
    store = tmp_path / "run.zarr"
    js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4, codec=js.Zstd(3)), steps(0, 6)))
    with pytest.raises(js.SchemaMismatchError, match=r"field 'x': shape \[3\] stored vs \[4\] now"):
        js.ZarrSink.create(
            store,
            {"x": jnp.zeros(4, jnp.float32), "e": jnp.zeros((), jnp.float32)},
            chunk=4,
            mode="a",
            codec=js.Zstd(3),
        )
    with pytest.raises(
        js.SchemaMismatchError, match="field 'y' is in the frame but not in the stored run"
    ):
        js.ZarrSink.create(
            store, {**EXAMPLE, "y": jnp.zeros(())}, chunk=4, mode="a", codec=js.Zstd(3)
        )
    with pytest.raises(js.SchemaMismatchError, match="chunk is 4 in the stored run but 8 now"):
        js.ZarrSink.create(store, EXAMPLE, chunk=8, mode="a", codec=js.Zstd(3))
    # The stored codecs cannot change: the default is not the run's Zstd, nor is another level.
    with pytest.raises(
        js.SchemaMismatchError, match=r"field 'x': codec Zstd\(level=3\) stored vs Blosc\("
    ):
        js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="a", codec=js.Blosc("lz4"))
    with pytest.raises(js.SchemaMismatchError, match=r"field 'e': codec Zstd\(level=3\) stored"):
        js.ZarrSink.create(
            store,
            EXAMPLE,
            chunk=4,
            mode="a",
            codec=js.Zstd(3),
            field_config={"e": js.FieldConfig(codec=None)},
        )
    # The capacity bounds the whole run: a smaller one would be stored over 6 frames already there.
    before = stored_bytes(store)
    for options, got in (
        (dict(capacity=4), "capacity=4, overflow='error'"),
        (dict(capacity=8, overflow="drop"), "capacity=8, overflow='drop'"),
    ):
        with pytest.raises(
            js.SchemaMismatchError,
            match=rf"recorded with capacity=None and overflow='error'.*got {got}\).*capacity=None",
        ):
            js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="a", codec=js.Zstd(3), **options)
    assert stored_bytes(store) == before
    assert_run(js.open(store), range(6))


@pytest.mark.parametrize("policy", ["ring", "drop"])
def test_an_unbounded_run_stored_with_a_policy_by_an_older_version_appends(tmp_path, policy):
    """Older versions created runs with overflow='ring' or 'drop' and no capacity, which new
    runs refuse; appending to one was refused whatever the options (the error asked for the
    refused settings). Without a capacity the policy bounds nothing, so any policy appends."""
    store = tmp_path / "run.zarr"
    js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 6)))
    root = store / "zarr.json"
    meta = json.loads(root.read_text())
    meta["attributes"]["jaxsinks"]["overflow"] = policy  # as an older jaxsinks wrote it
    root.write_text(json.dumps(meta))
    sink = js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="a")
    js.close(run_steps(sink, steps(6, 10)))
    assert_run(js.open(store), range(10))
    with pytest.raises(js.SchemaMismatchError, match="recorded with capacity=None and overflow="):
        js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="a", capacity=16, overflow=policy)


def test_a_run_whose_schema_has_no_codecs_appends_with_its_stored_codecs(tmp_path):
    """Runs written before the codecs were part of the schema still append (keeping the stored
    codecs, which zarr's metadata fixes); their other options are compared as before."""
    store = tmp_path / "run.zarr"
    js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4, codec=js.Zstd(3)), steps(0, 6)))
    root = store / "zarr.json"
    meta = json.loads(root.read_text())
    for field in meta["attributes"]["jaxsinks"]["schema"]["fields"]:
        del field["codec"]
    root.write_text(json.dumps(meta))
    with pytest.raises(js.SchemaMismatchError, match="chunk is 4 in the stored run but 8 now"):
        js.ZarrSink.create(store, EXAMPLE, chunk=8, mode="a")
    js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="a"), steps(6, 10)))
    assert_run(js.open(store), range(10))
    assert json.loads((store / "x" / "zarr.json").read_text())["codecs"][-1]["name"] == "zstd"


def test_an_unwritable_directory_is_a_clear_error_and_nothing_is_half_created(tmp_path):
    with readonly_directory(tmp_path) as parent:
        with pytest.raises(js.StoreError, match=f"Could not .*{parent}/run.zarr") as err:
            js.ZarrSink.create(parent / "run.zarr", EXAMPLE)
        assert "tensorstore_spec" not in str(err.value)
        assert list(parent.iterdir()) == []


def test_a_path_blocked_by_a_file_is_a_clear_error_and_nothing_is_created(tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file, not a directory")
    with pytest.raises(js.StoreError, match=f"Could not .*{blocker}"):
        js.ZarrSink.create(blocker / "run.zarr", EXAMPLE)
    assert blocker.read_text() == "a file, not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked"]
    for mode in ("w-", "w", "a"):  # the path itself is a file
        with pytest.raises(
            js.StoreError, match=f"{blocker}.* is a file, not a folder.*another path"
        ):
            js.ZarrSink.create(blocker, EXAMPLE, mode=mode)
    assert blocker.read_text() == "a file, not a directory"
    dangling = tmp_path / "link.zarr"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(js.StoreError, match=r"symbolic link to '.*nowhere', which does not exist"):
        js.ZarrSink.create(dangling, EXAMPLE, mode="w")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "link.zarr"]


def test_bad_create_arguments_are_named():
    with pytest.raises(js.ConfigError, match=r"`mode` to be one of \['w-', 'w', 'a'\]; got 'r'"):
        js.ZarrSink.create(memory_store(), EXAMPLE, mode="r")
    with pytest.raises(js.ConfigError, match="`chunk` to be a positive int"):
        js.ZarrSink.create(memory_store(), EXAMPLE, chunk=0)
    with pytest.raises(js.ConfigError, match="not JSON"):
        js.ZarrSink.create(memory_store(), EXAMPLE, attrs={"arr": np.zeros(2)})
    with pytest.raises(js.ConfigError, match="cannot be used as a store node name"):
        js.ZarrSink.create(memory_store(), {"../x": jnp.zeros(2)})
    with pytest.raises(
        js.ConfigError, match=r"`field_config\['x'\]` must be a jaxsinks.FieldConfig"
    ):
        js.ZarrSink.create(memory_store(), EXAMPLE, field_config={"x": {"dtype": "float16"}})


def test_closing_twice_or_a_stale_sink_is_a_clear_error():
    sink = js.ZarrSink.create(memory_store(), EXAMPLE, chunk=4)
    closed = js.close(sink)
    with pytest.raises(js.StaleSinkError, match="was already closed"):
        js.close(closed)


def test_kvstore_spec_dicts_and_file_urls_are_stores(tmp_path):
    spec = {"driver": "file", "path": str(tmp_path / "a.zarr")}
    js.close(run_steps(js.ZarrSink.create(spec, EXAMPLE, chunk=4), steps(0, 5)))
    assert len(js.open(f"file://{tmp_path}/a.zarr")) == 5
    assert len(js.open(tmp_path / "a.zarr")) == 5
