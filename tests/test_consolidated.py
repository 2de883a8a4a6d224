"""A closed run opens quietly in zarr and xarray: consolidated metadata, columns as coordinates.

Only a closed run has consolidated metadata: while it is open (or after its writer was killed),
and once it is reopened to append, its ``zarr.json`` has none, so that zarr never sees frames
that are not committed.
"""

import json
import logging
import pathlib
import signal
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
import zarr
import zarr_helpers

import jaxsinks as js
from jaxsinks._core.errors import StoreError
from jaxsinks._io import tsio
from jaxsinks._io.layout import consolidated_metadata, group_metadata, make_layout

HERE = pathlib.Path(__file__).resolve().parent

EXAMPLE = {"x": jnp.zeros(3), "e": jnp.zeros(()), "a": {"b": jnp.zeros(2, jnp.int32)}}


def frame_at(i):
    f = i.astype(jnp.float32)
    return {"x": jnp.full((3,), f), "e": 2.0 * f, "a": {"b": jnp.stack([i, -i])}}


def record(sink, start, n):
    def body(sink, i):
        return js.record(sink, step=i, time=0.5 * i.astype(jnp.float32), frame=frame_at(i)), None

    steps = jnp.arange(start, start + n, dtype=jnp.int32)
    return jax.jit(lambda s: jax.lax.scan(body, s, steps)[0])(sink)


def root(store):
    return json.loads((store / "zarr.json").read_bytes())


def quietly(open_, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return open_(*args, **kwargs)


def test_a_closed_run_opens_quietly_in_xarray_with_its_columns_as_coordinates(tmp_path):
    store = tmp_path / "run.zarr"
    js.close(record(js.ZarrSink.create(store, EXAMPLE, chunk=4), 0, 10))
    ds = quietly(xr.open_zarr, store)
    assert set(ds.coords) == {"step", "time"}
    assert set(ds.data_vars) == {"x", "e"}  # `a/b` is in the group `a`
    assert ds.sizes["frame"] == 10
    np.testing.assert_array_equal(ds["step"].values, np.arange(10))
    np.testing.assert_allclose(ds["time"].values, 0.5 * np.arange(10))
    np.testing.assert_array_equal(ds["x"].values[:, 1], np.arange(10))
    nested = quietly(xr.open_zarr, store, group="a")
    np.testing.assert_array_equal(nested["b"].values[:, 1], -np.arange(10))
    tree = quietly(xr.open_datatree, store, engine="zarr")
    assert set(tree["a"].data_vars) == {"b"}


def test_a_closed_run_opens_quietly_in_zarr_with_consolidated_metadata(tmp_path):
    store = tmp_path / "run.zarr"
    js.close(record(js.ZarrSink.create(store, EXAMPLE, chunk=4), 0, 10))
    group = quietly(zarr.open_group, store, mode="r")
    assert group.metadata.consolidated_metadata is not None
    consolidated = root(store)["consolidated_metadata"]
    assert consolidated["kind"] == "inline" and consolidated["must_understand"] is False
    assert set(consolidated["metadata"]) == {"x", "e", "a", "a/b", "step", "time"}
    assert quietly(zarr.open_consolidated, store, mode="r")["a/b"].shape == (10, 2)
    assert group["x"].shape == (10, 3) and group["x"].attrs["coordinates"] == "step time"
    np.testing.assert_array_equal(group["e"][:], 2.0 * np.arange(10))
    # jaxsinks reads it as before
    run = js.open(store)
    assert run.status == "closed" and len(run) == 10
    np.testing.assert_array_equal(run["a/b"][:, 0], np.arange(10))


def test_only_a_closed_run_has_it_and_appending_rewrites_it_at_close(tmp_path):
    store = tmp_path / "run.zarr"
    sink = js.ZarrSink.create(store, EXAMPLE, chunk=4)
    assert "consolidated_metadata" not in root(store)
    sink = record(sink, 0, 9)  # two blocks flushed, one frame staged
    assert "consolidated_metadata" not in root(store)
    js.close(sink)
    assert root(store)["consolidated_metadata"]["metadata"]["x"]["shape"] == [9, 3]
    appending = js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="a")
    assert "consolidated_metadata" not in root(store)  # removed with the reopening
    appending = record(appending, 9, 8)
    assert "consolidated_metadata" not in root(store)
    assert len(js.open(store)) <= 17
    js.close(appending)
    metadata = root(store)["consolidated_metadata"]["metadata"]
    assert metadata["x"]["shape"] == [17, 3] and metadata["step"]["shape"] == [17]
    ds = quietly(xr.open_zarr, store)
    np.testing.assert_array_equal(ds["step"].values, np.arange(17))


def test_per_system_and_ragged_runs_open_quietly(tmp_path):
    per_system = tmp_path / "per_system.zarr"
    sink = js.ZarrSink.create(per_system, {"e": jnp.zeros(2)}, per_system=True, chunk=4)

    def body(sink, i):
        f = i.astype(jnp.float32)
        return js.record(sink, step=i, time=f, frame={"e": f + jnp.arange(2.0)}), None

    js.close(jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(5, dtype=jnp.int32))[0])(sink))
    ds = quietly(xr.open_zarr, per_system)
    assert set(ds.coords) == {"step", "time", "system"} and ds.sizes["frame"] == 10
    ragged = tmp_path / "ragged.zarr"
    padded = {"n": jnp.array([1, 2], jnp.int32), "p": jnp.ones((2, 2, 3))}
    sink = js.ZarrSink.create(ragged, padded, chunk=2, ragged=js.Ragged(count="n", fields="p"))
    for i in range(3):
        sink = sink.write(padded, step=i)
    js.close(sink)
    ds = quietly(xr.open_zarr, ragged)
    assert ds.sizes["atom"] == 9 and ds.sizes["frame"] == 3


def test_a_failure_to_consolidate_is_logged_and_the_run_stays_complete(
    tmp_path, monkeypatch, caplog
):
    store = tmp_path / "run.zarr"
    sink = record(js.ZarrSink.create(store, EXAMPLE, chunk=4), 0, 5)

    def broken(spec, keys):
        raise StoreError("the store is unreachable")

    monkeypatch.setattr(tsio, "read_all", broken)
    with caplog.at_level(logging.WARNING, logger="jaxsinks"):
        js.close(sink)
    assert "consolidated metadata could not be written" in caplog.text
    assert "consolidated_metadata" not in root(store)
    run = js.open(store)
    assert run.status == "closed" and len(run) == 5


def test_the_consolidated_document_lists_nodes_by_depth_and_gives_groups_their_own():
    array = {"zarr_format": 3, "node_type": "array", "shape": [4]}
    doc = consolidated_metadata(
        {"b/c": array, "x": array, "b": {"zarr_format": 3, "node_type": "group"}}
    )
    assert list(doc["metadata"]) == ["b", "x", "b/c"]
    assert doc["metadata"]["b"]["consolidated_metadata"]["metadata"] == {}
    assert doc["metadata"]["b"]["attributes"] == {}
    assert doc["metadata"]["x"] == array
    root_doc = json.loads(group_metadata({"k": 1}, doc))
    assert root_doc["consolidated_metadata"] == doc and root_doc["attributes"] == {"k": 1}
    assert "consolidated_metadata" not in json.loads(group_metadata({"k": 1}))


def test_field_arrays_name_the_columns_as_their_coordinates():
    spec = js.FrameSpec.from_example({"x": jnp.zeros(3)})
    for batch_size, coordinates in ((None, "step time"), (3, "step time system")):
        lay = make_layout(
            spec,
            chunk=4,
            chunks_per_shard=None,
            codec=None,
            field_config={},
            time_dtype=np.dtype("float32"),
            batch_size=batch_size,
        )
        assert lay.fields[0].metadata(0)["attributes"] == {"coordinates": coordinates}
        assert all("attributes" not in c.metadata(0) for c in lay.columns)


@pytest.mark.slow
@pytest.mark.parametrize("when", ["before", "before-write", "after-write"])
def test_a_kill_while_consolidating_leaves_a_closed_complete_run_that_resumes(tmp_path, when):
    # The writer is SIGKILLed inside close's consolidation: the run is closed with every frame
    # (its status was written before), with consolidated metadata only if it was written whole,
    # never stale; resuming and closing again writes it for the new length.
    store = tmp_path / "run.zarr"
    child = subprocess.run(
        [
            sys.executable,
            str(HERE / "crash_child.py"),
            str(store),
            "16",
            "40",
            "--until",
            "100",
            "--kill-in-consolidate",
            when,
        ],
        capture_output=True,
        text=True,
        cwd=HERE,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    run = js.open(store)
    assert run.status == "closed" and len(run) == 100
    np.testing.assert_array_equal(run["x"][:], zarr_helpers.expected(range(100))["x"])
    consolidated = root(store).get("consolidated_metadata")
    if when == "after-write":
        assert consolidated["metadata"]["x"]["shape"] == [100, 3]
        assert quietly(xr.open_zarr, store).sizes["frame"] == 100
    else:
        assert consolidated is None
        assert xr.open_zarr(store, consolidated=False).sizes["frame"] == 100
    sink = js.ZarrSink.create(store, zarr_helpers.EXAMPLE, chunk=16, mode="a")
    assert "consolidated_metadata" not in root(store)  # gone as soon as the run reopens
    js.close(zarr_helpers.run_steps(sink, zarr_helpers.steps(100, 110)))
    assert root(store)["consolidated_metadata"]["metadata"]["x"]["shape"] == [110, 3]
    ds = quietly(xr.open_zarr, store)
    np.testing.assert_array_equal(ds["step"].values, np.arange(110))
