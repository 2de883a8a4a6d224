import json
import os
import re
import shutil
import time
import tracemalloc

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from run_helpers import write_per_system_run
from zarr_helpers import EXAMPLE, edit_meta, expected, memory_store, run_steps, steps

import jaxsinks as js
from jaxsinks._core.errors import FieldNotFoundError, ReadIndexError
from jaxsinks._io import tsio
from jaxsinks._io.layout import check_schema_version


@pytest.fixture(scope="module")
def store():
    s = memory_store()
    js.close(
        run_steps(js.ZarrSink.create(s, EXAMPLE, chunk=4, every=2, attrs={"T": 300}), steps(0, 40))
    )
    return s  # 20 frames: steps 0, 2, ..., 38; times = step / 4


def test_describes_the_run(store):
    run = js.open(store)
    assert len(run) == 20 and run.fields == ("e", "x") and "x" in run and "y" not in run
    assert run.attrs == {"T": 300} and run.status == "closed" and not run.per_system
    assert run.systems is None
    assert "frames=20" in repr(run)


def test_lazy_field_views_slice_like_numpy(store):
    run = js.open(store)
    x = run["x"]
    assert (
        isinstance(x, js.FieldView)
        and x.shape == (20, 3)
        and x.dtype == np.float32
        and len(x) == 20
    )
    full = expected(range(0, 40, 2))["x"]
    np.testing.assert_array_equal(x[5:9], full[5:9])
    np.testing.assert_array_equal(x[3], full[3])
    np.testing.assert_array_equal(x[-1], full[-1])
    np.testing.assert_array_equal(x[::5], full[::5])
    np.testing.assert_array_equal(x[[1, 7, 2]], full[[1, 7, 2]])
    np.testing.assert_array_equal(x[2:6, 1], full[2:6, 1])
    np.testing.assert_array_equal(np.asarray(x), full)
    assert x[4:4].shape == (0, 3)


def test_frame_selections_are_runs(store):
    run = js.open(store)
    part = run[3:7]
    assert len(part) == 4 and part.steps.tolist() == [6, 8, 10, 12]
    np.testing.assert_array_equal(part["e"][:], expected([6, 8, 10, 12])["e"])
    assert part[1:3].steps.tolist() == [8, 10]


def test_extract_time_range_is_inclusive(store):
    run = js.open(store)
    sub = run.extract_time_range(2.0, 4.5)  # times 0, 0.5, ..., 9.5
    assert sub.times.tolist() == [2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
    np.testing.assert_array_equal(sub["x"][:], expected(range(8, 19, 2))["x"])
    assert len(run.extract_time_range(t_start=9.0)) == 2
    assert len(run.extract_time_range(t_end=0.0)) == 1
    assert len(run.extract_time_range(20.0, 30.0)) == 0


def test_iteration_yields_frames_in_order(store):
    frames = list(js.open(store))
    assert [f["step"] for f in frames] == list(range(0, 40, 2))
    np.testing.assert_array_equal(frames[7]["x"], expected([14])["x"][0])
    assert frames[7]["time"] == pytest.approx(3.5)


def test_to_numpy_nests_fields_like_the_frame():
    s = memory_store()
    sink = js.ZarrSink.create(
        s, {"a": {"b": jnp.zeros(2, jnp.float32)}, "c": jnp.zeros((), jnp.float32)}, chunk=2
    )
    sink = sink.write({"a": {"b": jnp.ones(2, jnp.float32)}, "c": jnp.float32(3)}, step=5, time=1.5)
    js.close(sink)
    out = js.open(s).to_numpy()
    assert isinstance(out, js.Trajectory) and len(out) == 1
    np.testing.assert_array_equal(out.frames["a"]["b"], [[1, 1]])
    assert (
        out.frames["c"].tolist() == [3.0]
        and out.steps.tolist() == [5]
        and out.times.tolist() == [1.5]
    )


def test_to_xarray_labels_axes_and_coordinates(store):
    ds = js.open(store).to_xarray()
    assert ds["x"].dims == ("frame", "x_0") and ds.sizes["frame"] == 20
    np.testing.assert_array_equal(ds["step"].values, np.arange(0, 40, 2))
    np.testing.assert_array_equal(ds["x"].sel(frame=3).values, expected([6])["x"][0])
    assert ds.attrs == {"T": 300}


def test_items_pairs_each_frame_with_its_time_like_py_pde(store):
    run = js.open(store)
    pairs = list(run.items())
    want = expected(range(0, 40, 2))
    assert [t for t, _ in pairs] == [0.25 * s for s in range(0, 40, 2)]
    assert all(type(t) is float for t, _ in pairs)
    for i, (_, frame) in enumerate(pairs):
        assert set(frame) == {"e", "x"}
        np.testing.assert_array_equal(frame["x"], want["x"][i])
        assert frame["e"] == want["e"][i]
    part = list(run[5:8].items(fields="e"))  # a selection, one field
    assert [t for t, _ in part] == [2.5, 3.0, 3.5]
    assert [f["e"] for _, f in part] == want["e"][5:8].tolist()
    with pytest.raises(KeyError, match="no field 'y'"):
        run.items(fields=["y"])  # checked when called, not when first iterated


def test_items_of_a_run_without_times_says_so_and_points_to_iter_frames(grid):
    run = grid[0]  # written without time=
    with pytest.raises(js.ConfigError, match=r"no time for 7 of its 7 .*run.iter_frames\(\)"):
        run.items()
    assert [f["step"] for f in run.iter_frames()] == list(range(N))


def test_to_xarray_selects_frames_by_time(store):
    ds = js.open(store).to_xarray()  # times 0, 0.5, ..., 9.5
    assert "time" in ds.xindexes and ds["x"].dims == ("frame", "x_0")
    near = ds.sel(time=3.6, method="nearest")
    assert float(near["time"]) == 3.5 and int(near["step"]) == 14
    np.testing.assert_array_equal(near["x"].values, expected([14])["x"][0])
    exact = ds["e"].sel(time=2.0)
    assert float(exact) == expected([8])["e"][0]
    window = ds.sel(time=slice(1.0, 2.0))
    assert window["step"].values.tolist() == [4, 6, 8]
    late = js.open(store)[10:].to_xarray().sel(time=9.2, method="nearest")  # a selection
    assert int(late["step"]) == 36


def test_to_xarray_of_a_per_system_run_selects_all_systems_at_a_time(tmp_path):
    ds = js.open(write_per_system_run(tmp_path / "ps.zarr")).to_xarray()
    at4 = ds.sel(time=4.0)  # step 4 records every system (1 on even steps, 2 from step 3)
    assert at4["system"].values.tolist() == [0, 1, 2]
    assert at4["e"].values.tolist() == [40.0, 41.0, 42.0]
    one = ds.isel(frame=ds.system == 1).sel(time=2.6, method="nearest")  # as the docstring says
    assert int(one["step"]) == 2 and float(one["e"]) == 21.0
    # the docs (fields.md): the nearest time over all systems is refused; a slice works
    with pytest.raises(pd.errors.InvalidIndexError, match="uniquely valued"):
        ds.sel(time=4.1, method="nearest")
    assert ds.sel(time=slice(3.9, 4.1))["system"].values.tolist() == [0, 1, 2]
    near = ds.where(ds.system == 1, drop=True).sel(time=2.6, method="nearest")
    assert int(near["step"]) == 2 and float(near["e"]) == 21.0


@pytest.mark.parametrize("e", [np.float32(0), np.zeros(2, np.float32)], ids=["scalar", "vector"])
def test_to_xarray_keeps_a_field_named_like_another_fields_axis(e):
    """A field `e` beside a field whose axis is named `e` became a coordinate, missing from
    data_vars."""
    store = memory_store()
    dims = {"x": js.FieldConfig(dims=("e",))}
    sink = js.ZarrSink.create(store, {"x": jnp.zeros(3), "e": e}, chunk=2, field_config=dims)
    for i in range(3):
        sink = sink.write({"x": jnp.arange(3.0) + i, "e": jnp.asarray(e + i)}, step=i, time=i)
    js.close(sink)
    ds = js.open(store).to_xarray()
    assert sorted(ds.data_vars) == ["e_", "x"] and ds["x"].dims == ("frame", "e")
    np.testing.assert_array_equal(ds["e_"].values, np.stack([e + i for i in range(3)]))
    np.testing.assert_array_equal(ds["x"].values, np.arange(3.0) + np.arange(3.0)[:, None])


def test_to_xarray_of_a_run_without_times_has_no_time_index(grid):
    ds = grid[0].to_xarray()
    assert "time" not in ds.xindexes and np.isnan(ds["time"].values).all()
    np.testing.assert_array_equal(ds["x"].isel(frame=2).values, grid[1][2])


@pytest.mark.parametrize(
    "doc, match",
    [
        ([1], "is not a JSON object"),
        ({}, "schema version None"),
        ({"schema_version": "1"}, r"schema version '1' \(of type str\)"),
        ({"schema_version": True}, "schema version True"),
        ({"schema_version": 3}, "schema version 3; this jaxsinks reads versions up to 2"),
    ],
)
def test_one_schema_version_gate_names_what_was_read_and_the_remedy(doc, match):
    with pytest.raises(js.StoreError, match=match) as info:
        check_schema_version(doc, "The thing at memory://x", "test", 2)
    text = str(info.value)
    assert text.startswith("The thing at memory://x") and (
        "Upgrade jaxsinks to read it." in text or "not written by jaxsinks" in text
    )
    assert check_schema_version({"schema_version": 2}, "x", "test", 2) == {"schema_version": 2}


def test_missing_store_and_wrong_field_are_clear_errors(tmp_path, store):
    with pytest.raises(js.StoreNotFoundError, match=f"no jaxsinks run at {tmp_path}/nothing"):
        js.open(tmp_path / "nothing")
    with pytest.raises(KeyError, match=r"no field 'y'; its fields are \['e', 'x'\]"):
        js.open(store)["y"]


def test_a_plain_zarr_group_is_not_a_run(tmp_path):
    zarr.open_group(tmp_path / "plain.zarr", mode="w", attributes={"a": 1})
    with pytest.raises(js.StoreError, match="is a Zarr group but not a jaxsinks run"):
        js.open(tmp_path / "plain.zarr")
    run = tmp_path / "run.zarr"
    js.close(js.ZarrSink.create(run, {"x": jnp.zeros(2)}))
    with pytest.raises(js.StoreError, match=r"is a Zarr array but .* index the field by name"):
        js.open(run / "x")  # a field of a run


def test_a_run_from_a_newer_schema_version_is_refused(tmp_path):
    store = tmp_path / "run.zarr"
    js.close(js.ZarrSink.create(store, EXAMPLE))
    doc = json.loads((store / "zarr.json").read_text())
    doc["attributes"]["jaxsinks"]["schema_version"] = 99
    (store / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(
        js.StoreError, match="schema version 99; this jaxsinks reads versions up to 2"
    ):
        js.open(store)


# ------------------------------------------------------------- indexing exactly like numpy

N = 7  # frames, recorded in chunks of 3 (the last one partial)
SHAPE = (3, 4)


def _stored_data(step):
    return (100.0 * step + np.arange(12, dtype=np.float32)).reshape(SHAPE)


@pytest.fixture(scope="module")
def grid():
    """A run with `N` frames of x (3, 4) and its values in memory; and a ring run whose stored
    frames wrap (the physical order is 5, 6, 0, 1, ... for the logical frames)."""
    s = memory_store()
    sink = js.ZarrSink.create(s, {"x": jnp.zeros(SHAPE, jnp.float32)}, chunk=3)
    for i in range(N):
        sink = sink.write({"x": jnp.asarray(_stored_data(i))}, step=i)
    js.close(sink)
    ring = memory_store()
    sink = js.ZarrSink.create(
        ring, {"x": jnp.zeros(SHAPE, jnp.float32)}, chunk=1, capacity=N, overflow="ring"
    )
    for i in range(N + 5):
        sink = sink.write({"x": jnp.asarray(_stored_data(i))}, step=i)
    js.close(sink)
    data = np.stack([_stored_data(i) for i in range(N)])
    ring_data = np.stack([_stored_data(i) for i in range(5, N + 5)])
    return js.open(s), data, js.open(ring), ring_data


def _assert_reads_like_numpy(view, full, index):
    try:
        want = full[index]
    except (IndexError, TypeError, ValueError) as err:
        with pytest.raises(js.JaxsinksError) as info:
            view[index]
        if isinstance(err, IndexError):
            assert isinstance(info.value, IndexError), info.value
        return
    try:
        got = view[index]
    except js.JaxsinksError as err:  # only what numpy takes and jaxsinks refuses, clearly
        assert "not supported" in str(err), err
        return
    assert got.shape == want.shape and got.dtype == want.dtype, (index, got.shape, want.shape)
    np.testing.assert_array_equal(got, want)


def test_ellipsis_and_new_axes_index_like_numpy(grid):
    run, data, _, _ = grid
    x = run["x"]
    assert x[..., 0].shape == (N, 3)  # was x[:, 0]: (N, 4)
    np.testing.assert_array_equal(x[..., 0], data[..., 0])
    assert x[..., None, None, :].shape == (N, 3, 1, 1, 4)  # was (N, 1, 1, 3, 4)
    np.testing.assert_array_equal(x[None], data[None])
    np.testing.assert_array_equal(x[1, ..., -1], data[1, ..., -1])
    np.testing.assert_array_equal(
        x[:, 0, -1], data[:, 0, -1]
    )  # negative ints on the field's own axes
    np.testing.assert_array_equal(x[::-2, ::-1], data[::-2, ::-1])
    np.testing.assert_array_equal(x[:, [0, 1], ..., [0, 3]], data[:, [0, 1], ..., [0, 3]])
    np.testing.assert_array_equal(x[data[:, 0, 0] > 250], data[data[:, 0, 0] > 250])
    np.testing.assert_array_equal(x[:, data[0] > 5], data[:, data[0] > 5])


@pytest.mark.parametrize(
    "index", [N, -N - 1, (0, 3), (0, 0, -5), [0, N], (slice(None), [4]), (0, 0, 0, 0)]
)
def test_out_of_range_reads_are_index_errors(grid, index):
    run, data, _, _ = grid
    with pytest.raises(ReadIndexError) as info:
        run["x"][index]
    assert isinstance(info.value, IndexError) and "x" in str(info.value)
    with pytest.raises(IndexError):
        data[index]


@pytest.mark.parametrize(
    "index", [1.5, "a", (slice(0.5),), [1.0], (..., ...), np.array([[True]]), [[0, 1], [0]]]
)
def test_indices_numpy_refuses_are_jaxsinks_errors(grid, index):
    with pytest.raises(ReadIndexError):
        grid[0]["x"][index]


def test_a_scalar_boolean_index_is_refused_clearly(grid):
    for index in (True, np.False_, (0, True)):
        with pytest.raises(ReadIndexError, match="scalar boolean index .* not supported"):
            grid[0]["x"][index]


def test_a_field_view_is_no_truth_value_and_never_copies_silently(grid):
    """As a numpy array of several values: `if view` raises, and numpy 2's copy=False says that
    a copy cannot be avoided instead of copying."""
    view = grid[0]["x"]
    with pytest.raises(ValueError, match="ambiguous"):
        bool(np.zeros((2, 3)))  # numpy's answer
    with pytest.raises(ValueError, match=r"truth value of field 'x' \(\d+ frames\) is ambiguous"):
        bool(view)
    with pytest.raises(ValueError, match="cannot become an array without a copy"):
        np.asarray(view, copy=False)
    np.testing.assert_array_equal(np.asarray(view, copy=True), grid[1])


def test_frame_selections_and_missing_fields_are_jaxsinks_errors(grid):
    run = grid[0]
    for key in (N, 1.5, [0, N], (0, 1)):
        with pytest.raises(js.JaxsinksError):
            run[key]
    with pytest.raises(FieldNotFoundError) as info:
        run["nope"]
    assert isinstance(info.value, KeyError)


_item = st.one_of(
    st.integers(-9, 9),
    st.slices(9),
    st.none(),
    st.just(Ellipsis),
    st.lists(st.integers(-9, 9), max_size=3),
    hnp.arrays(np.intp, st.integers(0, 3), elements=st.integers(-9, 9)),
    hnp.arrays(np.bool_, st.sampled_from([(N,), (3,), (4,), (3, 4), (N, 3), (2,)])),
    hnp.arrays(np.bool_, st.sampled_from([(0,), (0, 3), (2, 0)])),  # numpy takes any empty mask
    st.builds(range, st.integers(-9, 9), st.integers(-9, 9), st.sampled_from([1, 2, -1])),
)
indices = st.one_of(
    hnp.basic_indices((N, *SHAPE), min_dims=0, allow_newaxis=True, allow_ellipsis=True),
    hnp.integer_array_indices((N, *SHAPE)),
    st.lists(_item, max_size=5).map(tuple),
    _item,
)


@settings(max_examples=200)
@given(index=indices, which=st.sampled_from(["all", "every other", "shuffled", "ring"]))
def test_field_views_index_exactly_like_numpy(grid, index, which):
    """`run["x"][idx]` equals `np.asarray(full)[idx]` for generated indices, over whole runs,
    selections of frames (in any order) and ring runs whose stored frames wrap."""
    run, data, ring, ring_data = grid
    if which == "every other":
        run, data = run[::2], data[::2]
    elif which == "shuffled":
        order = [5, 1, 3, 3, 0]
        run, data = run[order], data[order]
    elif which == "ring":
        run, data = ring, ring_data
    _assert_reads_like_numpy(run["x"], data, index)
    view = run["x"]
    assert (view.shape, view.ndim, view.size, view.nbytes, view.dtype) == (
        data.shape,
        data.ndim,
        data.size,
        data.nbytes,
        data.dtype,
    )


def test_ragged_views_index_frames_like_numpy_or_refuse_clearly():
    s = memory_store()
    example = {"natoms": jnp.zeros((2,), jnp.int32), "positions": jnp.zeros((2, 3, 3))}
    sink = js.ZarrSink.create(
        s, example, chunk=2, ragged=js.Ragged(count="natoms", fields=("positions",))
    )
    for i in range(3):
        natoms = jnp.asarray([1 + i % 3, 3], jnp.int32)
        sink = sink.write({"natoms": natoms, "positions": jnp.full((2, 3, 3), float(i))}, step=i)
    js.close(sink)
    pos = js.open(s)["positions"]
    assert [len(systems[0]) for systems in pos[::-1]] == [3, 2, 1]
    assert len(pos[-1][0]) == 3 and len(pos[[True, False, True]]) == 2
    for bad in (3, -4, (0, 1), 1.5, None, True, 2**64 - 1, np.uint64(2**64 - 1), [2**64]):
        with pytest.raises(ReadIndexError):  # 2**64 - 1: numpy's raw OverflowError
            pos[bad]
    run = js.open(s)
    for bad in (2**64 - 1, np.uint64(2**64 - 1), None):
        with pytest.raises(ReadIndexError):
            run[bad]
    # `...` is every frame, as np.arange(3)[...] (it was refused)
    assert [len(systems[0]) for systems in pos[...]] == [1, 2, 3]
    assert run[...].steps.tolist() == [0, 1, 2] and len(pos[(Ellipsis,)]) == 3


# ------------------------------------------------------------ a ring run read while it is written


def _record_ring(sink, path, start, stop, base=0):
    """`sink` after writing steps ``start..stop - 1`` (x = base + step, time = step / 2) into the
    live ring at `path`, once all of them are committed (blocks of 4: `stop` a multiple of 4)."""
    for i in range(start, stop):
        sink = sink.write({"x": jnp.int32(base + i)}, step=i, time=i / 2)
    deadline = time.monotonic() + 60
    while js.open(path).committed < stop:
        assert time.monotonic() < deadline, f"the writer did not commit {stop} frames in 60 s"
        time.sleep(0.02)
    return sink


@pytest.fixture
def live_ring(tmp_path):
    """A ring of 8 frames, written in blocks of 4 by a live writer on a local directory, holding
    frames 4..11 (steps 4..11) of the 12 recorded; the writer is closed after the test."""
    path = str(tmp_path / "ring.zarr")
    sink = js.ZarrSink.create(path, {"x": jnp.int32(0)}, chunk=4, capacity=8, overflow="ring")
    state = {"sink": _record_ring(sink, path, 0, 12)}
    yield path, state
    js.close(state["sink"])


def test_a_live_ring_run_refuses_frames_its_writer_overwrote_instead_of_returning_others(
    live_ring,
):
    path, state = live_ring
    run, fresh = js.open(path), js.open(path)
    assert run.status == "open" and run.steps.tolist() == list(range(4, 12))  # steps cached
    assert run["x"][:].tolist() == list(range(4, 12))
    state["sink"] = _record_ring(state["sink"], path, 12, 20)  # slots now hold frames 12..19
    reads = [
        ("frames 4..11", lambda r: r["x"][:]),
        ("frames 4..11", lambda r: np.asarray(r["x"])),
        ("frames 6..11", lambda r: r[2:].times),  # not cached: read now
        ("frame 7 ", lambda r: r[2:]["x"][1]),
    ]
    for named, read in reads:
        for stale in (run, fresh):  # `fresh` read nothing before the writer overwrote its frames
            with pytest.raises(js.StoreError, match=rf"overwrote {re.escape(named)}.*`js\.open`"):
                read(stale)
    # the cached steps still name the frames the run holds; nothing read can contradict them
    assert run.steps.tolist() == list(range(4, 12))
    with pytest.raises(js.StoreError, match=r"overwrote frames 4\.\.11 "):
        fresh.steps.tolist()
    again = js.open(path)  # the remedy: open it again for the newest frames
    assert again.steps.tolist() == list(range(12, 20)) == again["x"][:].tolist()
    assert again.times.tolist() == [i / 2 for i in range(12, 20)]


def test_a_live_ring_run_reads_the_frames_its_writer_has_not_overwritten(live_ring):
    path, state = live_ring
    run = js.open(path)
    state["sink"] = _record_ring(state["sink"], path, 12, 16)  # frames 4..7 overwritten
    newer = run[4:]  # frames 8..11: still in the ring
    assert newer.steps.tolist() == list(range(8, 12)) == newer["x"][:].tolist()
    assert newer.times.tolist() == [i / 2 for i in range(8, 12)]
    assert run["x"][4:].tolist() == list(range(8, 12)) and run["x"][-1] == 11
    assert [f["x"] for f in newer.iter_frames()] == list(range(8, 12))
    assert newer.to_xarray()["x"].values.tolist() == list(range(8, 12))
    # the steps cached by `newer` are not taken for those of the overwritten frames 4..7
    with pytest.raises(js.StoreError, match=r"overwrote frames 4\.\.7 "):
        run.steps.tolist()
    with pytest.raises(js.StoreError, match=r"overwrote frame 5 "):
        run["x"][[5, 4, 1]]  # frames 9, 8 and 5, in this order


def test_a_live_ring_run_replaced_by_another_ring_of_the_same_size_refuses_its_reads(
    live_ring,
):
    """Another run of the same capacity with as many frames, written over the location (mode='w'
    once the writer is gone), is not taken for the run opened: its slots hold other frames."""
    path, state = live_ring
    run = js.open(path)
    assert run["x"][:2].tolist() == [4, 5]
    js.close(state["sink"])
    other = js.ZarrSink.create(
        path, {"x": jnp.int32(0)}, chunk=4, capacity=8, overflow="ring", mode="w"
    )
    state["sink"] = _record_ring(other, path, 0, 12, base=100)  # closed by the fixture
    assert js.open(path)["x"][:].tolist() == list(range(104, 112))  # steps 4..11, as before
    for read in (lambda r: r["x"][:], lambda r: r[2:].times, lambda r: np.asarray(r["x"])):
        with pytest.raises(js.StoreError, match=r"deleted or replaced while it was read"):
            read(run)


def test_a_closed_ring_run_resumed_while_it_is_read_refuses_the_frames_its_new_writer_overwrote(
    tmp_path,
):
    """Only rings open when opened were checked: a closed ring resumed with mode='a' returned
    the new frames' values for the old steps."""
    path = str(tmp_path / "ring.zarr")
    options = dict(chunk=4, capacity=8, overflow="ring")
    sink = js.ZarrSink.create(path, {"x": jnp.int32(0)}, **options)
    js.close(_record_ring(sink, path, 0, 12))
    run = js.open(path)
    assert run.status == "closed" and run.steps.tolist() == list(range(4, 12))
    sink = js.ZarrSink.create(path, {"x": jnp.int32(0)}, mode="a", **options)
    sink = _record_ring(sink, path, 12, 16)  # frames 4..7 overwritten by 12..15
    try:
        assert run["x"][4:].tolist() == list(range(8, 12))
        with pytest.raises(js.StoreError, match=r"overwrote frames 4\.\.7 "):
            run["x"][:]
    finally:
        js.close(sink)
    assert js.open(path)["x"][:].tolist() == list(range(8, 16))


def test_only_ring_runs_read_their_metadata_again_to_check_their_reads(
    live_ring, tmp_path, monkeypatch
):
    path, _ = live_ring
    live = js.open(path)
    unbounded = str(tmp_path / "unbounded.zarr")
    sink = _record_ring(
        js.ZarrSink.create(unbounded, {"x": jnp.int32(0)}, chunk=4), unbounded, 0, 8
    )
    live_unbounded = js.open(unbounded)
    js.close(sink)
    closed_ring = str(tmp_path / "closed-ring.zarr")
    sink = js.ZarrSink.create(
        closed_ring, {"x": jnp.int32(0)}, chunk=4, capacity=8, overflow="ring"
    )
    js.close(_record_ring(sink, closed_ring, 0, 12))
    runs = [live_unbounded, js.open(unbounded), js.open(closed_ring), live]
    reads = []
    original = tsio.read_bytes
    monkeypatch.setattr(tsio, "read_bytes", lambda *a: reads.append(a) or original(*a))
    for run in runs:
        reads.clear()
        assert run["x"][:].tolist() == run.steps.tolist()
        assert run[::2].times.tolist() == [step / 2 for step in run.steps.tolist()[::2]]
        assert bool(reads) == (run in runs[2:]), run  # the rings, closed or live


@pytest.fixture(scope="module")
def closed_runs(tmp_path_factory):
    """A closed wide run, ring and long table of 20 frames (chunks of 4), as pristine copies."""
    root = tmp_path_factory.mktemp("closed")
    for name, options in {
        "wide": {},
        "ring": {"capacity": 8, "overflow": "ring"},
        "long": {"table": "long"},
    }.items():
        store = root / f"{name}.zarr"
        sink = js.ZarrSink.create(
            store, {"e": jnp.float32(0), "f": jnp.int32(0)}, chunk=4, **options
        )
        for i in range(20):
            sink = sink.write({"e": jnp.float32(i), "f": jnp.int32(-i)}, step=i, time=i / 4)
        js.close(sink)
    return root


@pytest.fixture
def copy_of(closed_runs, tmp_path):
    def copy(name):
        shutil.copytree(closed_runs / f"{name}.zarr", tmp_path / f"{name}.zarr")
        return tmp_path / f"{name}.zarr"

    return copy


@pytest.mark.parametrize("kind", ["wide", "ring", "long"])
@pytest.mark.parametrize("committed", [3 * 10**8, 10**10, 2**62, 2**63, 10**30])
def test_a_damaged_huge_committed_count_is_a_prompt_store_error(copy_of, kind, committed):
    """`open` listed every counted frame before comparing the count with the arrays: 3e8 took
    11 s and 4.8 GB before its StoreError, 1e10 a MemoryError, 2**62 and 1e30 a ValueError,
    and 2**63 opened as an empty run. A ring's count may be any int64 (it keeps its newest
    frames, however many were recorded): it opens with the frames its slots hold."""
    store = copy_of(kind)
    edit_meta(store, committed=committed)
    tracemalloc.start()
    try:
        if kind == "ring" and committed < 2**63:
            assert len(js.open(store)) == 8
        else:
            with pytest.raises(js.StoreError, match="damaged metadata") as info:
                js.open(store)
            assert str(committed) in str(info.value) and "zarr-python" in str(info.value)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


def test_a_ring_whose_first_valid_frame_is_past_its_committed_frames_is_damaged(copy_of):
    """It opened as a healthy closed run of 0 frames: a ring retires frames only once it holds
    them, so valid_from never passes committed."""
    store = copy_of("ring")
    assert len(js.open(store)) == 8
    edit_meta(store, valid_from=21)
    with pytest.raises(js.StoreError, match="damaged metadata") as info:
        js.open(store)
    assert "valid_from is 21, past the 20 committed frames" in str(info.value)


@pytest.mark.parametrize("schedule", [None, 5, "every 2", [1, 2]])
def test_a_damaged_schedule_is_a_store_error_naming_it_and_the_frames_still_read(copy_of, schedule):
    """A schedule attribute that is not a JSON object made `describe` (`jaxsinks info`) raise
    TypeError."""
    store = copy_of("wide")
    edit_meta(store, schedule=schedule)
    run = js.open(store)
    for what in (lambda: run.schedule, run.describe):
        with pytest.raises(js.StoreError, match=r"damaged metadata: .* schedule is ") as info:
            what()
        assert repr(schedule) in str(info.value) and "restore its zarr.json" in str(info.value)
    assert run.steps.tolist() == list(range(20)) and run["f"][:].tolist() == [-i for i in range(20)]


@pytest.mark.parametrize("kind", ["wide", "ring", "long"])
def test_a_missing_chunk_of_the_step_column_is_a_store_error_naming_the_frames(copy_of, kind):
    """Chunk files deleted from a closed run read silently as step -1 (and NaN values)."""
    store = copy_of(kind)
    (store / "step" / "c" / "1").unlink()
    run = js.open(store)
    entries = "8..15" if kind == "long" else "4..7"  # a long table's frames are 2 rows each
    with pytest.raises(js.StoreError, match=rf"committed entries {re.escape(entries)} .*c/1\)"):
        _ = run.steps


def test_steps_recorded_as_minus_one_are_not_taken_for_missing_chunks(tmp_path):
    """A chunk whose steps are all -1 (the fill value) is stored too, so it reads back; a run
    written before that (no `fill_chunks` entry) is not checked, as it may lack such chunks."""
    store = tmp_path / "run.zarr"
    sink = js.ZarrSink.create(store, {"e": jnp.float32(0)}, chunk=4)
    steps = [-1, -1, -1, -1, 0, -1, 1, 2]
    for step in steps:
        sink = sink.write({"e": jnp.float32(step)}, step=step)
    js.close(sink)
    assert sorted(os.listdir(store / "step" / "c")) == ["0", "1"]
    assert js.open(store).steps.tolist() == steps
    root = json.loads((store / "zarr.json").read_text())
    del root["attributes"]["jaxsinks"]["fill_chunks"]  # as written by an older jaxsinks
    (store / "zarr.json").write_text(json.dumps(root))
    (store / "step" / "c" / "0").unlink()
    assert js.open(store).steps.tolist() == steps
