"""Frames sharded over a device mesh: each device flushes its own part to its own chunks."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fs_helpers import stored_bytes
from jax.sharding import PartitionSpec
from sharded_helpers import (
    DIM,
    REPLICAS,
    example,
    expected,
    initial,
    record_steps,
    sharded_runner,
    step_fn,
)

import jaxsinks as js
from jaxsinks._io import writer as _writer

STEPS = jnp.arange(10, dtype=jnp.int32)


def test_sharded_run_equals_the_single_device_run_byte_for_byte(tmp_path, monkeypatch):
    mesh = jax.make_mesh((4,), ("r",))
    blocks = []
    submit = _writer.HostWriter.submit

    def counting(self, offset, n, values, shard=0):
        blocks.append((shard, offset, n))
        return submit(self, offset, n, values, shard)

    monkeypatch.setattr(_writer.HostWriter, "submit", counting)
    sink = js.ZarrSink.create(tmp_path / "sharded", example(), chunk=4, mesh=mesh, axis="r")
    assert sink.staged.shape == (4,) and sink.partition_spec == PartitionSpec("r")
    x, sink = sharded_runner(mesh, sink)(sink, initial(mesh), STEPS)
    np.testing.assert_array_equal(
        np.asarray(sink.flushed), [8, 8, 8, 8]
    )  # two blocks each, never gathered
    js.close(sink)
    # 4 devices x (2 full blocks + the tail at close), each block submitted by its own shard
    assert sorted(blocks) == sorted(
        (s, o, n) for s in range(4) for o, n in ((0, 4), (4, 4), (8, 2))
    )

    fields = {
        "x": js.FieldConfig(chunk=(REPLICAS // 4, DIM)),
        "e": js.FieldConfig(chunk=(REPLICAS // 4,)),
    }
    single = js.ZarrSink.create(tmp_path / "single", example(), chunk=4, field_config=fields)
    _, single = jax.jit(record_steps)(single, initial(), STEPS)
    js.close(single)

    run = js.open(tmp_path / "sharded")
    exp = expected(np.arange(10))
    assert len(run) == 10 and run.committed == 10 and run.status == "closed"
    np.testing.assert_array_equal(run["x"][:], exp["x"])
    np.testing.assert_array_equal(run["e"][:], exp["e"])
    assert run.steps.tolist() == list(range(10))
    assert stored_bytes(tmp_path / "sharded", identity=False) == stored_bytes(
        tmp_path / "single", identity=False
    )


def test_a_lazy_frame_inside_shard_map_records_what_the_frame_records(tmp_path):
    """`frame=lambda: ...` computes the frame under a cond; its other branch (zeros) must vary
    over the mesh axis as the frame does, or JAX refuses the cond."""
    mesh = jax.make_mesh((4,), ("r",))
    sink = js.ZarrSink.create(tmp_path / "lazy", example(), chunk=4, mesh=mesh, axis="r", every=3)

    def lazy_steps(sink, x, steps):
        def body(carry, i):
            x, sink = carry
            x, frame = step_fn(x, i)
            sink = js.record(sink, step=i, time=0.5 * i.astype(jnp.float32), frame=lambda: frame)
            return (x, sink), None

        return jax.lax.scan(body, (x, sink), steps)[0]

    spec = PartitionSpec("r")
    run = jax.jit(
        jax.shard_map(
            lazy_steps,
            mesh=mesh,
            in_specs=(sink.partition_spec, spec, PartitionSpec()),
            out_specs=(spec, sink.partition_spec),
        )
    )
    _, sink = run(sink, initial(mesh), STEPS)
    js.close(sink)
    stored = js.open(tmp_path / "lazy")
    exp = expected(np.arange(10))
    assert stored.steps.tolist() == [0, 3, 6, 9]
    np.testing.assert_array_equal(stored["x"][:], exp["x"][::3])
    np.testing.assert_array_equal(stored["e"][:], exp["e"][::3])


@pytest.mark.parametrize(
    ("every", "steps"),
    [(js.Interval(1.5), [0, 3, 6, 9]), (js.Times([1.0, 2.5, 4.0]), [2, 5, 8])],
    ids=["Interval", "Times"],
)
def test_a_time_schedule_records_the_steps_a_single_device_run_records(tmp_path, every, steps):
    """The new state of a time schedule comes from the time, the same on every device; the sink's
    state varies over the mesh axis, so record makes the new state vary as the old one did."""
    mesh = jax.make_mesh((4,), ("r",))
    sink = js.ZarrSink.create(
        tmp_path / "sharded", example(), chunk=2, every=every, mesh=mesh, axis="r"
    )
    _, sink = sharded_runner(mesh, sink)(sink, initial(mesh), STEPS)
    js.close(sink)

    fields = {
        "x": js.FieldConfig(chunk=(REPLICAS // 4, DIM)),
        "e": js.FieldConfig(chunk=(REPLICAS // 4,)),
    }
    single = js.ZarrSink.create(
        tmp_path / "single", example(), chunk=2, every=every, field_config=fields
    )
    _, single = jax.jit(record_steps)(single, initial(), STEPS)
    js.close(single)

    run, one = js.open(tmp_path / "sharded"), js.open(tmp_path / "single")
    assert run.steps.tolist() == one.steps.tolist() == steps
    np.testing.assert_array_equal(run.times, one.times)
    np.testing.assert_array_equal(run.times, 0.5 * np.asarray(steps, np.float32))
    exp = expected(np.arange(10))
    np.testing.assert_array_equal(run["x"][:], exp["x"][steps])
    np.testing.assert_array_equal(run["e"][:], exp["e"][steps])
    assert stored_bytes(tmp_path / "sharded", identity=False) == stored_bytes(
        tmp_path / "single", identity=False
    )


def _record_per_device(name):
    """record_steps, but with `name` (step or time, or the mask of `write`) different on every
    device of axis 'r'."""

    def steps(sink, x, steps):
        def body(carry, i):
            x, sink = carry
            x, frame = step_fn(x, i)
            i_dev = i + jax.lax.axis_index("r")
            step = i_dev if name == "step" else i
            time = (i_dev if name == "time" else i).astype(jnp.float32)
            if name == "mask":
                return (x, sink.write(frame, step=step, time=time, mask=i_dev % 2 == 0)), None
            return (x, js.record(sink, step=step, time=time, frame=frame)), None

        return jax.lax.scan(body, (x, sink), steps)[0]

    return steps


@pytest.mark.parametrize(
    ("name", "every", "remedy"),
    [
        ("step", 2, r"jax\.lax\.pmin\(step, 'r'\)"),
        ("time", js.Interval(2.0), r"same on every device.*jax\.lax\.pmin\(dt, 'r'\)"),
        ("time", 2, r"same on every device"),  # stored times would differ too
        ("mask", None, r"jax\.lax\.pmax\(mask, 'r'\)"),  # sink.write's
    ],
)
def test_a_step_or_time_differing_between_devices_is_a_transform_error(
    tmp_path, name, every, remedy
):
    """Each device would record its own steps, and a stored frame would mix parts of several."""
    mesh = jax.make_mesh((4,), ("r",))
    sink = js.ZarrSink.create(
        tmp_path / "run", example(), chunk=2, every=every, mesh=mesh, axis="r"
    )
    spec = PartitionSpec("r")
    run = jax.jit(
        jax.shard_map(
            _record_per_device(name),
            mesh=mesh,
            in_specs=(sink.partition_spec, spec, PartitionSpec()),
            out_specs=(spec, sink.partition_spec),
        )
    )
    message = rf"^`{name}` differs between the devices of mesh axis 'r'.*sharded over 'r'.*{remedy}"
    with pytest.raises(js.TransformError, match=message):
        run(sink, initial(mesh), STEPS)
    js.close(sink)
    assert len(js.open(tmp_path / "run")) == 0


def test_sharded_sink_resumes_in_append_mode(tmp_path):
    mesh = jax.make_mesh((4,), ("r",))
    sink = js.ZarrSink.create(tmp_path / "run", example(), chunk=4, mesh=mesh, axis="r")
    runner = sharded_runner(mesh, sink)
    x, sink = runner(sink, initial(mesh), STEPS[:6])
    js.close(sink)
    sink = js.ZarrSink.create(tmp_path / "run", example(), chunk=4, mesh=mesh, axis="r", mode="a")
    x, sink = runner(sink, x, STEPS[6:])
    js.close(sink)
    run = js.open(tmp_path / "run")
    assert run.steps.tolist() == list(range(10))
    np.testing.assert_array_equal(run["x"][:], expected(np.arange(10))["x"])


def test_recording_a_sharded_sink_outside_shard_map_is_a_clear_error():
    mesh = jax.make_mesh((4,), ("r",))
    sink = js.ZarrSink.create("memory://sharded-outside", example(), chunk=4, mesh=mesh, axis="r")
    with pytest.raises(js.TransformError, match=r"inside shard_map.*P\('r'\)"):
        js.record(
            sink, step=0, time=0.0, frame={"x": jnp.ones((REPLICAS, DIM)), "e": jnp.ones(REPLICAS)}
        )
    js.close(sink)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mesh": "mesh", "axis": "r"}, r"needs both `mesh` \(a jax.sharding.Mesh\).*got mesh=str"),
        ({"mesh": None}, r"needs both `mesh`.*got mesh=NoneType, axis='r'"),
        ({"axis": "q"}, r"axis='q', which is not an axis of the mesh"),
        ({"per_system": True}, r"per_system, ragged and overflow='ring' are not available"),
    ],
)
def test_bad_sharding_arguments_name_the_problem(kwargs, message):
    mesh = jax.make_mesh((4,), ("r",))
    options = {"mesh": mesh, "axis": "r", **kwargs}
    with pytest.raises(js.ConfigError, match=message):
        js.ZarrSink.create("memory://bad-shard", example(), chunk=4, **options)


def test_a_field_not_divisible_over_the_shards_is_a_config_error():
    mesh = jax.make_mesh((4,), ("r",))
    with pytest.raises(js.ConfigError, match=r"shape \[6, 3\].*divisible by 4"):
        js.ZarrSink.create(
            "memory://bad-split", {"x": jnp.zeros((6, 3))}, chunk=4, mesh=mesh, axis="r"
        )


def test_a_two_axis_mesh_is_refused():
    mesh = jax.make_mesh((2, 2), ("r", "m"))
    with pytest.raises(js.ConfigError, match=r"also has axes \{'m': 2\}.*one axis"):
        js.ZarrSink.create("memory://bad-mesh", example(), chunk=4, mesh=mesh, axis="r")


LARGE_BLOCKS = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import jaxsinks as js

mesh = jax.make_mesh((4,), ("r",))
example = {"x": jax.ShapeDtypeStruct((64, 16384), jnp.float32)}  # 1 MiB per device and frame
sink = js.ZarrSink.create("memory://large", example, chunk=4, codec=None, mesh=mesh, axis="r")

def run(sink, x, steps):
    def body(carry, i):
        x, sink = carry
        x = x + 1.0
        return (x, js.record(sink, step=i, time=i.astype(jnp.float32), frame={"x": x})), None
    return jax.lax.scan(body, (x, sink), steps)[0]

f = jax.jit(jax.shard_map(run, mesh=mesh, in_specs=(sink.partition_spec, P("r"), P()),
                          out_specs=(P("r"), sink.partition_spec)))
x0 = jax.device_put(np.zeros((64, 16384), np.float32), NamedSharding(mesh, P("r")))
x, sink = f(sink, x0, jnp.arange(12))
js.close(sink)
stored = js.open("memory://large")["x"][:]
assert stored.shape == (12, 64, 16384) and np.array_equal(
    stored[:, :, 0], np.arange(1, 13)[:, None] * np.ones(64)
)
print("ok", len(js.open("memory://large")))
"""


def test_four_devices_flush_4_mib_blocks_on_two_cores_without_deadlock():
    """io_callback's device_put onto a busy CPU device deadlocked this (see
    jaxsinks/_io/callback.py)."""
    proc = subprocess.run(
        [sys.executable, "-c", LARGE_BLOCKS],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok 12"
