import json

import jax.numpy as jnp
import numpy as np
import pytest
import zarr
from zarr_helpers import EXAMPLE, expected, memory_store, run_steps, steps

import jaxsinks as js


@pytest.fixture(scope="module")
def store():
    s = memory_store()
    js.close(run_steps(js.ZarrSink.create(s, EXAMPLE, chunk=4, every=2, attrs={"T": 300}), steps(0, 40)))
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
    assert isinstance(x, js.FieldView) and x.shape == (20, 3) and x.dtype == np.float32 and len(x) == 20
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
    sink = js.ZarrSink.create(s, {"a": {"b": jnp.zeros(2)}, "c": jnp.zeros(())}, chunk=2)
    sink = sink.write({"a": {"b": jnp.ones(2)}, "c": jnp.float32(3)}, step=5, time=1.5)
    js.close(sink)
    out = js.open(s).to_numpy()
    assert isinstance(out, js.Trajectory) and len(out) == 1
    np.testing.assert_array_equal(out.frames["a"]["b"], [[1, 1]])
    assert out.frames["c"].tolist() == [3.0] and out.steps.tolist() == [5] and out.times.tolist() == [1.5]


def test_to_xarray_labels_axes_and_coordinates(store):
    ds = js.open(store).to_xarray()
    assert ds["x"].dims == ("frame", "x_0") and ds.sizes["frame"] == 20
    np.testing.assert_array_equal(ds["step"].values, np.arange(0, 40, 2))
    np.testing.assert_array_equal(ds["x"].sel(frame=3).values, expected([6])["x"][0])
    assert ds.attrs == {"T": 300}


def test_missing_store_and_wrong_field_are_clear_errors(tmp_path, store):
    with pytest.raises(js.StoreNotFoundError, match=f"no jaxsinks run at {tmp_path}/nothing"):
        js.open(tmp_path / "nothing")
    with pytest.raises(KeyError, match=r"no field 'y'; its fields are \['e', 'x'\]"):
        js.open(store)["y"]


def test_a_plain_zarr_group_is_not_a_run(tmp_path):
    zarr.open_group(tmp_path / "plain.zarr", mode="w", attributes={"a": 1})
    with pytest.raises(js.StoreError, match="not a jaxsinks run"):
        js.open(tmp_path / "plain.zarr")


def test_a_run_from_a_newer_schema_version_is_refused(tmp_path):
    store = tmp_path / "run.zarr"
    js.close(js.ZarrSink.create(store, EXAMPLE))
    doc = json.loads((store / "zarr.json").read_text())
    doc["attributes"]["jaxsinks"]["schema_version"] = 99
    (store / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(js.StoreError, match="schema version 99; this jaxsinks reads versions up to 1"):
        js.open(store)
