"""One recorder state: the base `Sink` declares the fields every sink has, concrete sinks are
final and add only their own; the leaves/static split of each sink is pinned here."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest
from zarr_helpers import EXAMPLE, memory_store, run_steps, steps

import jaxsinks as js
from jaxsinks._sinks.stream import StreamSink

#: The recorder state, declared once by `Sink`: (name, static).
SHARED = [
    ("columns", False),
    ("recorded", False),
    ("flags", False),
    ("seen", False),
    ("schedule_state", False),
    ("options", True),
]
#: What a streaming sink adds.
STREAMING = [
    ("staged", False),
    ("flushed", False),
    ("writer", False),
    ("layout", True),
    ("shard", True),
    ("closed", True),
]


def declared(cls):
    return [(f.name, bool(f.metadata.get("static"))) for f in dataclasses.fields(cls)]


def own(cls):
    """The fields `cls` itself adds to its bases' fields."""
    inherited = {
        f.name
        for base in cls.__mro__[1:]
        if dataclasses.is_dataclass(base)
        for f in dataclasses.fields(base)
    }
    return [f for f in declared(cls) if f[0] not in inherited]


def test_the_base_declares_the_shared_fields_once():
    assert declared(js.Sink) == SHARED
    assert own(js.DeviceBuffer) == []
    assert own(StreamSink) == STREAMING
    for cls in (js.ZarrSink, js.CsvSink, js.HostBuffer):
        assert own(cls) == [] and declared(cls) == SHARED + STREAMING
    for cls in (js.DeviceBuffer, js.ZarrSink, js.CsvSink, js.HostBuffer):
        assert getattr(cls, "__final__", False), f"{cls.__name__} should be @final"


def leaf_names(sink):
    paths, _ = jax.tree_util.tree_flatten_with_path(sink)
    return [jax.tree_util.keystr(path[:1])[1:] for path, _ in paths]


def test_leaves_and_static_configuration_of_each_sink(tmp_path):
    buffer = js.DeviceBuffer.create(EXAMPLE, capacity=4)
    # columns: two fields, step and time; seen is None (no once=True) and an `Every` schedule
    # has no state, so neither has a leaf.
    assert leaf_names(buffer) == ["columns"] * 4 + ["recorded", "flags"]
    timed = js.DeviceBuffer.create(EXAMPLE, capacity=4, every=js.Interval(0.5))
    names = leaf_names(timed)
    assert names[:6] == ["columns"] * 4 + ["recorded", "flags"]
    assert names[6:] and set(names[6:]) == {"schedule_state"}
    once = js.DeviceBuffer.create({"e": jnp.zeros(3)}, capacity=4, per_system=True, once=True)
    assert "seen" in leaf_names(once)
    zarr = js.ZarrSink.create(memory_store(), EXAMPLE, chunk=4)
    csv = js.CsvSink.create(tmp_path / "log.csv", EXAMPLE, block=4)
    host = js.HostBuffer.create(EXAMPLE, capacity=8, block=4)
    streaming = ["columns"] * 4 + [
        "recorded",
        "flags",
        "staged",
        "flushed",
        "writer",
    ]
    for sink in (zarr, csv, host):
        assert leaf_names(sink) == streaming
        static = jax.tree_util.tree_structure(sink)
        assert static == jax.tree_util.tree_structure(jax.tree.map(lambda x: x + 0, sink))
    js.close((zarr, csv, host))
    host.release()


def test_recorded_means_every_frame_in_every_sink(tmp_path):
    """The same frames into each kind of sink, past a capacity of 6: `recorded` counts all 10."""
    sinks = {
        "device": js.DeviceBuffer.create(EXAMPLE, capacity=6, overflow="drop"),
        "zarr": js.ZarrSink.create(memory_store(), EXAMPLE, chunk=2, capacity=6, overflow="drop"),
        "csv": js.CsvSink.create(
            tmp_path / "log.csv", EXAMPLE, block=2, capacity=6, overflow="drop"
        ),
        "host": js.HostBuffer.create(EXAMPLE, capacity=6, block=2, overflow="drop"),
    }
    out = {name: run_steps(sink, steps(0, 10)) for name, sink in sinks.items()}
    assert {name: int(sink.recorded) for name, sink in out.items()} == dict.fromkeys(out, 10)
    for name in ("zarr", "csv", "host"):
        assert int(out[name].flushed) + int(out[name].staged) == 6, name
    assert len(out["device"]) == 6
    closed = js.close(out)
    assert len(closed["host"]) == 6
    closed["host"].release()


@pytest.mark.parametrize("kind", ["device", "zarr"])
def test_the_compiled_recorder_takes_the_same_leaves_as_before(kind):
    """The jitted write takes each leaf once, in the sink's leaf order, and returns a sink with
    the same structure and dtypes (so a second call hits the same compiled program)."""
    if kind == "device":
        sink = js.DeviceBuffer.create(EXAMPLE, capacity=8)
    else:
        sink = js.ZarrSink.create(memory_store(), EXAMPLE, chunk=4)
    out = run_steps(sink, steps(0, 3))
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(sink)
    assert [x.dtype for x in jax.tree.leaves(out)] == [x.dtype for x in jax.tree.leaves(sink)]
    before = run_steps._cache_size()
    out = run_steps(out, steps(3, 6))
    assert run_steps._cache_size() == before
    js.close(out)
