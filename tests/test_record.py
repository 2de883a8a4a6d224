import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

import jaxsinks as js

FRAME = {"x": jnp.zeros(2, jnp.float32)}


def scan_record(sinks, n, frame_fn, *, dt=0.25, mask_fn=None):
    def body(sinks, step):
        time = step.astype(jnp.float32) * dt
        mask = None if mask_fn is None else mask_fn(step)
        return js.record(sinks, step=step, time=time, frame=frame_fn(step), mask=mask), None

    return jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(n, dtype=jnp.int32))[0])(sinks)


def test_each_sink_follows_its_own_schedule():
    sinks = {
        "every3": js.DeviceBuffer.create(FRAME, capacity=10, every=3),
        "times": js.DeviceBuffer.create(FRAME, capacity=10, every=js.Times([0.6, 1.0, 1.1, 3.0])),
        "interval": js.DeviceBuffer.create(FRAME, capacity=10, every=js.Interval(1.0, start=0.5)),
    }
    out = scan_record(sinks, 10, lambda s: {"x": jnp.stack([s, -s]).astype(jnp.float32)})
    assert out["every3"].read().steps.tolist() == [0, 3, 6, 9]
    times = out["times"].read()
    assert times.steps.tolist() == [3, 4, 5]  # t = 0.75, 1.0, 1.25; 3.0 never reached
    np.testing.assert_allclose(times.times, [0.75, 1.0, 1.25])  # the actual times are stored
    assert out["interval"].read().steps.tolist() == [2, 6]  # t = 0.5, 1.5 (2.5 is step 10)
    np.testing.assert_allclose(out["every3"].read().frames["x"][:, 1], [0, -3, -6, -9])


def test_a_frame_function_is_only_evaluated_on_steps_where_some_sink_records():
    calls = []

    def expensive(step):
        def host(s):
            calls.append(int(s))
            return np.zeros(2, np.float32)

        return lambda: {"x": io_callback(host, jax.ShapeDtypeStruct((2,), jnp.float32), step)}

    sinks = (
        js.DeviceBuffer.create(FRAME, capacity=10, every=4),
        js.DeviceBuffer.create(FRAME, capacity=10, every=6),
    )
    out = scan_record(sinks, 13, expensive)
    assert sorted(calls) == [0, 4, 6, 8, 12]
    assert out[0].read().steps.tolist() == [0, 4, 8, 12] and out[1].read().steps.tolist() == [
        0,
        6,
        12,
    ]


def test_a_frame_function_is_skipped_when_the_mask_selects_nothing():
    calls = []

    def frame_fn(step):
        def host(s):
            calls.append(int(s))
            return np.ones(3, np.float32)

        return lambda: {"e": io_callback(host, jax.ShapeDtypeStruct((3,), jnp.float32), step)}

    buf = js.DeviceBuffer.create({"e": jnp.zeros(3, jnp.float32)}, capacity=10, per_system=True)
    out = scan_record(buf, 6, frame_fn, mask_fn=lambda s: jnp.stack([s == 2, s == 2, s == 4]))
    assert sorted(calls) == [2, 4]
    assert list(zip(out.read().steps.tolist(), out.read().systems.tolist())) == [
        (2, 0),
        (2, 1),
        (4, 2),
    ]


def test_whole_frame_and_per_system_sinks_record_together():
    example = {"e": jnp.zeros(3, jnp.float32)}
    sinks = {
        "traj": js.DeviceBuffer.create(example, capacity=10, every=2),
        "converged": js.DeviceBuffer.create(example, capacity=10, per_system=True),
    }
    out = scan_record(
        sinks,
        5,
        lambda s: {"e": jnp.arange(3, dtype=jnp.float32) + jnp.float32(s)},
        mask_fn=lambda s: jnp.arange(3, dtype=jnp.int32) == s,
    )
    assert out["traj"].read().steps.tolist() == [0, 2, 4]  # the mask does not apply
    conv = out["converged"].read()
    assert conv.steps.tolist() == [0, 1, 2] and conv.systems.tolist() == [0, 1, 2]
    np.testing.assert_allclose(conv.frames["e"], [0, 2, 4])


def test_per_system_times_are_stored_per_row():
    buf = js.DeviceBuffer.create({"e": jnp.zeros(2, jnp.float32)}, capacity=4, per_system=True)
    out = js.record(
        buf, step=3, time=jnp.array([1.5, 2.5], jnp.float32), frame={"e": jnp.ones(2, jnp.float32)}
    )
    np.testing.assert_allclose(out.read().times, [1.5, 2.5])


def test_record_validates_its_arguments():
    buf = js.DeviceBuffer.create(FRAME, capacity=4)
    with pytest.raises(js.ConfigError, match="none of the sinks given is per-system"):
        js.record(buf, step=0, frame={"x": jnp.zeros(2)}, mask=jnp.ones(2, bool))
    with pytest.raises(js.ConfigError, match="needs the simulation time"):
        js.record(
            js.DeviceBuffer.create(FRAME, capacity=4, every=js.Interval(1.0)),
            step=0,
            frame={"x": jnp.zeros(2)},
        )
    with pytest.raises(js.ConfigError, match=r"also holds \['ndarray'\]"):
        js.record((buf, np.zeros(2)), step=0, frame={"x": jnp.zeros(2)})
    with pytest.raises(js.ConfigError, match="no sinks"):
        js.record((), step=0, frame={"x": jnp.zeros(2)})
    with pytest.raises(js.FrameError, match="must take no arguments"):
        js.record(buf, step=0, frame=lambda x: {"x": x})


def test_an_error_inside_a_frame_function_passes_through_unchanged():
    """Only a callable that cannot be called with no arguments is reported as such."""
    buf = js.DeviceBuffer.create(FRAME, capacity=4)

    def broken():
        raise TypeError("the frame's own TypeError")

    with pytest.raises(TypeError, match=r"^the frame's own TypeError"):
        js.record(buf, step=0, frame=broken)
    with pytest.raises(TypeError, match="Shapes must be 1D sequences"):
        js.record(buf, step=0, frame=lambda: {"x": jnp.reshape(jnp.zeros(2, jnp.float32), 2.5)})
    with pytest.raises(js.FrameError, match=r"must take no arguments.*signature is \(x, y\)"):
        js.record(buf, step=0, frame=lambda x, y: {"x": x})
    out = js.record(buf, step=3, frame=lambda x=2.0: {"x": jnp.full(2, x, jnp.float32)})
    assert out.read().steps.tolist() == [3]
    np.testing.assert_array_equal(out.read().frames["x"], [[2.0, 2.0]])


def test_the_guarding_predicate_stays_unbatched_under_vmap():
    """Recording a vmapped step keeps a real `cond` (the frame is computed only when needed)."""
    buf = js.DeviceBuffer.create({"x": jnp.zeros(2)}, capacity=8, every=4)

    def one(buf, x, step):
        return js.record(buf, step=step, frame=lambda: {"x": jnp.sin(x)})

    batched = jax.vmap(one, in_axes=(0, 0, None))
    bufs = jax.vmap(lambda _: buf)(jnp.arange(3))
    jaxpr = jax.make_jaxpr(batched)(bufs, jnp.ones((3, 2)), jnp.int32(4))
    prims = {e.primitive.name for e in jaxpr.jaxpr.eqns}
    assert "cond" in prims
    out = batched(bufs, jnp.ones((3, 2)), jnp.int32(4))
    np.testing.assert_allclose(out.columns.leaves[0][:, 0], np.sin(np.ones((3, 2))))
