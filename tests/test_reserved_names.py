"""Fields named like a sink's own columns (``step``, ``time``, ``system``) are stored as ``time_``
(``time/x`` as ``time_/x``) and read back under their own names, by every sink."""

import csv
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxsinks as js
from jaxsinks._core.frame import nested, unreserved_names
from jaxsinks._io.layout import make_layout

STEPS = 6


def flat_frame(i):
    """Leaves named like all three columns, plus an ordinary one."""
    f = i.astype(jnp.float32)
    return {
        "time": 100.0 + f,
        "step": jnp.stack([i, -i]).astype(jnp.int32),
        "system": 7.0 * f,
        "pos": jnp.full((3,), f),
    }


def nested_frame(i):
    """A top-level key named like a column, with children."""
    f = i.astype(jnp.float32)
    return {"time": {"x": jnp.full((2,), -f), "dt": 0.5 + f}, "e": 2.0 * f}


FRAMES = {"flat": flat_frame, "nested": nested_frame}
NODES = {
    "flat": {"time": "time_", "step": "step_", "system": "system_", "pos": "pos"},
    "nested": {"time/x": "time_/x", "time/dt": "time_/dt", "e": "e"},
}


def record_steps(sink, frame_at):
    def body(sink, i):
        # the run's own time column differs from the field `time`
        return js.record(sink, step=i, time=0.25 * i.astype(jnp.float32), frame=frame_at(i)), None

    return jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(STEPS, dtype=jnp.int32))[0])(sink)


def expected(frame_at):
    """The recorded frames, stacked (the pytree the user recorded, with a frame axis)."""
    frames = [frame_at(jnp.int32(i)) for i in range(STEPS)]
    return jax.tree.map(lambda *v: np.stack([np.asarray(x) for x in v]), *frames)


def assert_tree_equal(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(g, w)


def leaves_by_name(tree):
    return {
        "/".join(str(k.key) for k in path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


@pytest.mark.parametrize("kind", FRAMES)
def test_zarr_sink_stores_them_renamed_and_reads_them_back_by_their_names(tmp_path, kind):
    frame_at, store = FRAMES[kind], tmp_path / "run.zarr"
    js.close(record_steps(js.ZarrSink.create(store, frame_at(jnp.int32(0)), chunk=4), frame_at))
    want = expected(frame_at)
    run = js.open(store)
    assert sorted(run.fields) == sorted(NODES[kind])
    for name, leaf in leaves_by_name(want).items():
        np.testing.assert_array_equal(run[name][:], leaf)
        assert name in run
    np.testing.assert_array_equal(run.steps, np.arange(STEPS))
    np.testing.assert_allclose(run.times, 0.25 * np.arange(STEPS))
    assert_tree_equal(run.to_numpy().frames, want)
    # items(): the frame holds the fields by name; iter_frames(): fields by node, with columns
    for t, frame in run.items():
        assert set(frame) == set(NODES[kind]) and isinstance(t, float)
    first = next(iter(run))
    assert set(first) == set(NODES[kind].values()) | {"step", "time"}
    assert first["time"] == 0 and first["step"] == 0
    # the nodes in the store, also as zarr and xarray see them
    group = zarr.open_group(store, mode="r")
    for name, node in NODES[kind].items():
        np.testing.assert_array_equal(group[node][:], leaves_by_name(want)[name])
    ds = run.to_xarray()
    top = {node.split("/")[0] for node in NODES[kind].values() if "/" not in node}
    assert top <= set(ds.data_vars) and {"step", "time"} <= set(ds.coords)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opened = xr.open_zarr(store)
    assert top <= set(opened.data_vars) and {"step", "time"} <= set(opened.coords)


def test_append_to_a_run_with_renamed_fields(tmp_path):
    store = tmp_path / "run.zarr"
    example = flat_frame(jnp.int32(0))
    js.close(record_steps(js.ZarrSink.create(store, example, chunk=4), flat_frame))
    js.close(record_steps(js.ZarrSink.create(store, example, chunk=4, mode="a"), flat_frame))
    run = js.open(store)
    assert len(run) == 2 * STEPS
    np.testing.assert_array_equal(run["time"][:], np.tile(100.0 + np.arange(STEPS), 2))


def test_field_options_and_ragged_fields_use_the_recorded_names(tmp_path):
    store = tmp_path / "run.zarr"
    natoms = np.array([2, 3], np.int32)
    example = {
        "step": jnp.asarray(natoms),
        "time": jnp.zeros((2, 3, 2), jnp.float32),
        "system": jnp.zeros(2, jnp.float32),
    }

    def frame_at(i):
        f = i.astype(jnp.float32)
        return {
            "step": jnp.asarray(natoms),
            "time": jnp.arange(12, dtype=jnp.float32).reshape(2, 3, 2) + 100 * f,
            "system": jnp.full((2,), f),
        }

    sink = js.ZarrSink.create(
        store,
        example,
        chunk=2,
        ragged=js.Ragged(count="step", fields=("time",)),
        field_config={"system": js.FieldConfig(dtype="float16")},
    )
    js.close(record_steps(sink, frame_at))
    run = js.open(store)
    assert run.ragged == {"count": "step", "fields": ["time"]}
    assert run["system"].dtype == np.float16
    for i in (0, 5):
        systems = run["time"][i]
        want = np.asarray(frame_at(jnp.int32(i))["time"])
        assert [s.shape for s in systems] == [(2, 2), (3, 2)]
        np.testing.assert_array_equal(systems[0], want[0, :2])
        np.testing.assert_array_equal(systems[1], want[1, :3])
    assert {f["name"] for f in run.describe()["fields"]} == {"step", "time", "system"}
    assert "time_" in run.to_xarray().data_vars


def test_per_system_runs_keep_their_system_column_beside_the_field(tmp_path):
    store = tmp_path / "run.zarr"
    example = {"system": jnp.zeros(3, jnp.float32), "e": jnp.zeros(3, jnp.float32)}

    def body(sink, i):
        f = i.astype(jnp.float32)
        frame = {"system": 10.0 + jnp.arange(3, dtype=jnp.float32) + f, "e": jnp.full((3,), f)}
        return js.record(sink, step=i, time=f, frame=frame, mask=jnp.ones(3, bool)), None

    sink = js.ZarrSink.create(store, example, per_system=True, chunk=6)
    js.close(jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(4, dtype=jnp.int32))[0])(sink))
    run = js.open(store)
    assert run.systems.tolist() == [0, 1, 2] * 4
    np.testing.assert_array_equal(run["system"][:3], [10.0, 11.0, 12.0])
    trajectory = run.to_numpy()
    np.testing.assert_array_equal(trajectory.frames["system"][3:6], [11.0, 12.0, 13.0])
    assert set(next(iter(run))) == {"system_", "e", "step", "time", "system"}


def test_csv_header_tells_the_fields_from_the_columns(tmp_path):
    path = tmp_path / "log.csv"
    sink = js.CsvSink.create(path, flat_frame(jnp.int32(0)), block=4)
    js.close(record_steps(sink, flat_frame))
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    head = rows[0]
    assert head[:2] == ["step", "time"]
    # fields in pytree order (dict keys sorted)
    assert head[2:] == ["pos[0]", "pos[1]", "pos[2]", "step_[0]", "step_[1]", "system_", "time_"]
    values = np.array(rows[1:], np.float64)
    np.testing.assert_array_equal(values[:, 0], np.arange(STEPS))
    np.testing.assert_array_equal(values[:, head.index("time_")], 100.0 + np.arange(STEPS))
    np.testing.assert_array_equal(values[:, head.index("step_[1]")], -np.arange(STEPS))


def test_csv_nested_field_under_a_column_name(tmp_path):
    path = tmp_path / "log.csv"
    js.close(record_steps(js.CsvSink.create(path, nested_frame(jnp.int32(0))), nested_frame))
    with open(path, newline="") as f:
        head = next(csv.reader(f))
    assert head == ["step", "time", "e", "time_/dt", "time_/x[0]", "time_/x[1]"]


@pytest.mark.parametrize("kind", FRAMES)
def test_host_and_device_buffers_give_back_the_recorded_pytree(tmp_path, kind):
    frame_at = FRAMES[kind]
    example = frame_at(jnp.int32(0))
    want = expected(frame_at)
    host = record_steps(js.HostBuffer.create(example, capacity=16, block=4), frame_at)
    device = record_steps(js.DeviceBuffer.create(example, capacity=16), frame_at)
    for trajectory in (host.read(), device.read()):
        assert_tree_equal(trajectory.frames, want)
        np.testing.assert_allclose(trajectory.times, 0.25 * np.arange(STEPS))
    host.save_npz(tmp_path / "frames.npz")
    with np.load(tmp_path / "frames.npz") as saved:
        assert set(saved.files) == set(NODES[kind].values()) | {"step", "time"}
        for name, node in NODES[kind].items():
            np.testing.assert_array_equal(saved[node], leaves_by_name(want)[name])
        np.testing.assert_array_equal(saved["step"], np.arange(STEPS))
    host = js.close(host)
    host.to_zarr(tmp_path / "run.zarr")
    assert_tree_equal(js.open(tmp_path / "run.zarr").to_numpy().frames, want)
    host.release()


@pytest.mark.parametrize(
    "example, both",
    [
        ({"time": jnp.zeros(()), "time_": jnp.zeros(())}, ("'time'", "'time_'")),
        ({"step": {"a": jnp.zeros(())}, "step_": jnp.zeros(())}, ("'step/a'", "'step_'")),
        ({"system": jnp.zeros(()), "system_": {"b": jnp.zeros(())}}, ("'system'", "'system_/b'")),
    ],
)
@pytest.mark.parametrize("sink", ["zarr", "csv", "host"])
def test_a_renamed_field_colliding_with_a_field_of_its_stored_name_is_refused(
    tmp_path, example, both, sink
):
    create = {
        "zarr": lambda: js.ZarrSink.create(tmp_path / "run.zarr", example),
        "csv": lambda: js.CsvSink.create(tmp_path / "log.csv", example),
        "host": lambda: js.HostBuffer.create(example, capacity=4),
    }[sink]
    with pytest.raises(js.ConfigError) as info:
        create()
    message = str(info.value)
    for name in both:
        assert name in message
    assert "Rename one of them" in message and "reserved names" in message
    assert not (tmp_path / "run.zarr").exists() and not (tmp_path / "log.csv").exists()


def test_the_layout_renames_the_node_and_records_the_field_name():
    spec = js.FrameSpec.from_example(
        {"time": {"x": jnp.zeros((2, 3))}, "step": jnp.zeros(2, jnp.int32), "a": {"time": 0.0}}
    )
    lay = make_layout(
        spec,
        chunk=4,
        chunks_per_shard=None,
        codec=None,
        field_config={"step": js.FieldConfig(dims=("k",))},
        time_dtype=np.dtype("float32"),
        batch_size=3,
        ragged=js.Ragged(count="step", fields=("time/x",)),
    )
    assert [(a.name, a.field_name) for a in lay.fields] == [
        ("a/time", "a/time"),
        ("step_", "step"),
        ("time_/x", "time/x"),
    ]
    assert [c.name for c in lay.columns] == ["step", "time", "system"]
    assert lay.groups == ("a", "time_")
    assert lay.ragged == js.Ragged(count="step_", fields=("time_/x",))
    fields = lay.schema()["fields"]
    assert fields[1] == {
        "name": "step_",
        "field": "step",
        "shape": [2],
        "dtype": "int32",
        "storage_dtype": "int32",
        "codec": "None",
        "dims": ["frame", "k"],
    }
    assert "field" not in fields[0]  # unchanged for fields that are not renamed
    assert lay.fields[1].dims == ("frame", "k") and lay.fields[2].dims == ("atom",)


#: Fields named like `to_xarray`'s dimension `frame` (or, in a ragged run, `atom` and the
#: coordinate `atom_frame`), and the variable each is: the first part takes '_' until it is free.
XARRAY_NAMES = {
    "frame": {"frame": "frame_", "e": "e"},
    "frame and frame_": {"frame": "frame__", "frame_": "frame_", "frame__/x": "frame__/x"},
    "nested": {"frame/x": "frame_/x", "frame/y": "frame_/y", "frame__": "frame__"},
    "ragged": {
        "atom_frame": "atom_frame_",
        "atom": "atom_",
        "frame": "frame_",
        "n": "n",
        "pos": "pos",
    },
}


def frame_of(names, i):
    """Scalar float32 fields `names` (the step plus 10 times their index), nested at '/';
    `n` and `pos` are a ragged field of two systems and its count."""
    f = i.astype(jnp.float32)
    frame = nested({name: f + 10.0 * k for k, name in enumerate(names)})
    if "pos" in names:
        frame["n"] = jnp.array([2, 3], jnp.int32)
        frame["pos"] = jnp.full((2, 3, 2), f)
    return frame


@pytest.mark.parametrize("kind", XARRAY_NAMES)
def test_to_xarray_keeps_a_field_named_like_its_dimension_beside_it(tmp_path, kind):
    """A field `frame` once became the `frame` dimension's index (and `atom_frame` an error)."""
    variables = XARRAY_NAMES[kind]
    names = list(variables)
    ragged = js.Ragged(count="n", fields=("pos",)) if "pos" in names else None
    frame_at = lambda i: frame_of(names, i)  # noqa: E731
    campaign = js.Campaign.create(tmp_path / "c")
    for run_id in ("a", "b"):
        sink = campaign.create_run(run_id, frame_at(jnp.int32(0)), chunk=4, ragged=ragged)
        js.close(record_steps(sink, frame_at))
    ds = campaign.open_run("a").to_xarray()
    assert sorted(ds.data_vars) == sorted(variables.values())
    assert ds.sizes["frame"] == STEPS and "frame" not in ds.variables  # a dimension without index
    for k, name in enumerate(names):
        if name not in ("n", "pos"):
            np.testing.assert_array_equal(ds[variables[name]].values, np.arange(STEPS) + 10.0 * k)
    np.testing.assert_allclose(ds.sel(time=0.5)[variables[names[0]]].values, 2.0)
    if ragged is not None:
        assert ds["atom_frame"].values.tolist() == sum([[i] * 5 for i in range(STEPS)], [])
        return
    # a campaign names them as its runs do
    both = campaign.to_xarray()
    assert sorted(both.data_vars) == sorted(variables.values()) and "frame" not in both.variables
    for name in names:
        want = np.tile(ds[variables[name]].values, 2)
        np.testing.assert_array_equal(both[variables[name]].values, want)


# ---------------------------------------------------------- campaigns and the training export


def campaign_of_flat_runs(location, lengths):
    campaign = js.Campaign.create(location)
    example = flat_frame(jnp.int32(0))
    for run_id, n in lengths.items():
        sink = campaign.create_run(run_id, example, chunk=4)
        js.close(record_steps(sink, flat_frame))
        assert n == STEPS
    return campaign


def test_campaign_to_xarray_keeps_renamed_fields_beside_its_coordinates(tmp_path):
    campaign = campaign_of_flat_runs(tmp_path / "c", {"a": STEPS, "b": STEPS})
    ds = campaign.to_xarray()
    want = leaves_by_name(expected(flat_frame))
    for name, node in NODES["flat"].items():
        np.testing.assert_array_equal(ds[node].values, np.concatenate([want[name]] * 2))
    # the coordinates are the runs' own columns, not the fields of those names
    np.testing.assert_allclose(ds["time"].values, np.tile(0.25 * np.arange(STEPS), 2))
    assert ds["step"].values.tolist() == list(range(STEPS)) * 2
    assert ds["run"].values.tolist() == ["a"] * STEPS + ["b"] * STEPS


def test_the_training_export_stores_renamed_fields_beside_its_columns(tmp_path):
    campaign = campaign_of_flat_runs(tmp_path / "c", {"a": STEPS, "b": STEPS})
    export = js.export_training(campaign, tmp_path / "x", sample_size=2 * STEPS, seed=0)
    # the export's columns are run, frame, step and time: a field `system` keeps its name
    nodes = {**NODES["flat"], "system": "system"}
    assert dict(zip(export.fields, export.nodes)) == nodes
    sample = export.sample(2 * STEPS, rng=0)  # every frame, shuffled
    order = np.lexsort((sample.data["frame"], sample.data["run"]))
    want = leaves_by_name(expected(flat_frame))
    for name, node in nodes.items():
        np.testing.assert_array_equal(sample.data[node][order], np.concatenate([want[name]] * 2))
    # the export's own columns are the runs' steps and times, not the fields named so
    np.testing.assert_array_equal(sample.data["step"][order], np.tile(np.arange(STEPS), 2))
    np.testing.assert_allclose(sample.data["time"][order], np.tile(0.25 * np.arange(STEPS), 2))


@settings(max_examples=300, deadline=None)
@given(
    nodes=st.sets(st.from_regex(r"(run|frame|param_T|a)_{0,3}(/x)?", fullmatch=True)),
    reserved=st.sets(st.from_regex(r"(run|frame|param_T)_{0,2}", fullmatch=True)),
)
def test_unreserved_names_are_distinct_and_free(nodes, reserved):
    nodes = sorted(nodes)
    names = unreserved_names(nodes, reserved)
    assert list(names) == nodes
    assert len(set(names.values())) == len(nodes)  # one each
    for node, name in names.items():
        top, sep, rest = name.partition("/")
        assert name not in reserved and top not in reserved
        clash = node.partition("/")[0] in reserved
        if not clash:
            assert name == node
        else:  # the first part with underscores appended
            assert top.rstrip("_") == node.partition("/")[0].rstrip("_") and sep + rest == (
                node.partition("/")[1] + node.partition("/")[2]
            )
            assert len(top) > len(node.partition("/")[0])
