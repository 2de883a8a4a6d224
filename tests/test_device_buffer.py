import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import X64
from hypothesis import given
from hypothesis import strategies as st

import jaxsinks as js

FRAME = {"x": jnp.zeros((3,), jnp.float32), "n": jnp.zeros((), jnp.int32)}


def frame_at(i):
    return {
        "x": jnp.full((3,), i, jnp.float32) + jnp.arange(3, dtype=jnp.float32),
        "n": jnp.int32(i),
    }


def run_writes(buf, steps, maybe_jit=jax.jit):
    write = maybe_jit(lambda b, i: b.write(frame_at(i), step=i, time=0.5 * i.astype(jnp.float32)))
    for i in steps:
        buf = write(buf, jnp.int32(i))
    return buf


def test_write_and_read_in_order(maybe_jit):
    buf = run_writes(js.DeviceBuffer.create(FRAME, capacity=8), range(5), maybe_jit)
    out = buf.read()
    assert len(buf) == len(out) == 5
    assert out.steps.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(out.times, [0, 0.5, 1.0, 1.5, 2.0])
    np.testing.assert_array_equal(out.frames["n"], np.arange(5))
    np.testing.assert_allclose(out.frames["x"][3], [3, 4, 5])
    assert out.systems is None
    assert buf.capacity == 8 and not bool(buf.is_full)


def test_error_policy_flags_and_read_raises_naming_capacity_and_count():
    buf = run_writes(js.DeviceBuffer.create(FRAME, capacity=3), range(5))
    assert int(buf.flags) & js.Flag.OVERFLOW and bool(buf.is_full)
    with pytest.raises(js.SinkOverflowError, match="capacity is 3 frames but 5 were recorded"):
        buf.read()
    kept = buf.read(check=False)
    assert kept.steps.tolist() == [0, 1, 2]  # nothing already recorded is lost


def test_drop_policy_keeps_the_first_frames_and_sets_the_flag():
    buf = run_writes(js.DeviceBuffer.create(FRAME, capacity=3, overflow="drop"), range(5))
    assert buf.read().steps.tolist() == [0, 1, 2]
    assert int(buf.flags) == js.Flag.OVERFLOW and len(buf) == 3


def test_ring_policy_keeps_the_newest_frames_oldest_first():
    buf = run_writes(js.DeviceBuffer.create(FRAME, capacity=3, overflow="ring"), range(7))
    out = buf.read()
    assert out.steps.tolist() == [4, 5, 6]
    np.testing.assert_array_equal(out.frames["n"], [4, 5, 6])
    assert int(buf.flags) == 0


def test_drain_returns_frames_and_an_empty_buffer_zero_clears():
    buf = run_writes(js.DeviceBuffer.create(FRAME, capacity=4), range(3))
    out, empty = buf.drain()
    assert out.steps.tolist() == [0, 1, 2] and len(empty) == 0 and int(empty.recorded) == 0
    again = run_writes(empty, [7])
    assert again.read().steps.tolist() == [7]
    assert (
        len(buf.zero()) == 0 and len(buf) == 3
    )  # immutable: the old buffer still holds its frames


def test_masked_scalar_write_skips_the_frame():
    buf = js.DeviceBuffer.create(FRAME, capacity=4)
    buf = buf.write(frame_at(1), step=1, mask=jnp.array(False))
    buf = buf.write(frame_at(2), step=2, mask=jnp.array(True))
    assert buf.read().steps.tolist() == [2]


def test_per_system_rows_are_appended_with_their_system_index(maybe_jit):
    example = {"pos": jnp.zeros((4, 2), jnp.float32), "e": jnp.zeros(4, jnp.float32)}
    buf = js.DeviceBuffer.create(example, capacity=10, per_system=True)
    write = maybe_jit(lambda b, f, m, s: b.write(f, step=s, time=0.1 * jnp.float32(s), mask=m))
    f = lambda s: {  # noqa: E731
        "pos": jnp.arange(8, dtype=jnp.float32).reshape(4, 2) + 100 * s,
        "e": jnp.arange(4, dtype=jnp.float32) + 100 * s,
    }
    buf = write(buf, f(1), jnp.array([False, True, False, True]), 1)
    buf = write(buf, f(2), jnp.array([True, False, False, False]), 2)
    out = buf.read()
    assert out.systems.tolist() == [1, 3, 0] and out.steps.tolist() == [1, 1, 2]
    np.testing.assert_allclose(out.frames["e"], [101, 103, 200])
    np.testing.assert_allclose(out.frames["pos"][1], [106, 107])
    np.testing.assert_allclose(out.times, [0.1, 0.1, 0.2], rtol=1e-6)


@given(
    masks=st.lists(st.lists(st.booleans(), min_size=5, max_size=5), min_size=1, max_size=12),
    capacity=st.integers(1, 9),
    overflow=st.sampled_from(["error", "drop", "ring"]),
)
def test_per_system_writes_match_a_reference_model(masks, capacity, overflow):
    example = {"v": jnp.zeros((5, 2), jnp.float32)}
    buf = js.DeviceBuffer.create(example, capacity=capacity, per_system=True, overflow=overflow)
    step = _per_system_step()
    expected = []
    for s, mask in enumerate(masks):
        buf = step(buf, jnp.int32(s), jnp.asarray(mask))
        expected += [(s, i) for i in np.flatnonzero(mask)]
    kept = expected[-capacity:] if overflow == "ring" else expected[:capacity]
    out = buf.read(check=False)
    assert list(zip(out.steps.tolist(), out.systems.tolist())) == kept
    np.testing.assert_allclose(out.frames["v"][:, 0], [10 * s + i for s, i in kept])
    assert int(buf.recorded) == len(expected)
    lost = overflow != "ring" and len(expected) > capacity
    assert bool(int(buf.flags) & js.Flag.OVERFLOW) == lost
    if lost and overflow == "error":
        with pytest.raises(js.SinkOverflowError):
            buf.read()


_STEP_CACHE = {}


def _per_system_step():
    # One jitted function for all hypothesis examples: it recompiles only per buffer configuration.
    if "f" not in _STEP_CACHE:

        def f(buf, s, mask):
            rows = (10 * s + jnp.arange(5, dtype=jnp.int32)).astype(jnp.float32)
            return buf.write({"v": jnp.stack([rows, -rows], axis=1)}, step=s, mask=mask)

        _STEP_CACHE["f"] = jax.jit(f)
    return _STEP_CACHE["f"]


@given(
    shape=st.lists(st.integers(1, 4), max_size=3).map(tuple),
    dtype=st.sampled_from([np.float32, np.int32, np.bool_, np.uint8, np.float16, np.complex64]),
    n=st.integers(1, 6),
)
def test_any_shape_and_dtype_round_trips_exactly(shape, dtype, n):
    rng = np.random.default_rng(0)
    values = (rng.standard_normal((n, *shape)) * 10).astype(dtype)
    buf = js.DeviceBuffer.create(jax.ShapeDtypeStruct(shape, dtype), capacity=n)
    for i in range(n):
        buf = buf.write(values[i], step=i)
    out = buf.read()
    assert out.frames.dtype == dtype and out.frames.shape == (n, *shape)
    np.testing.assert_array_equal(out.frames, values)


def test_bad_frames_fail_at_trace_time_naming_the_field():
    buf = js.DeviceBuffer.create(FRAME, capacity=4)
    with pytest.raises(js.FrameError, match="field 'x' has shape \\(4,\\), expected \\(3,\\)"):
        jax.jit(lambda b: b.write({"x": jnp.zeros(4, jnp.float32), "n": jnp.int32(0)}, step=0))(buf)
    with pytest.raises(js.FrameError, match="field 'x' has dtype int32, expected float32"):
        buf.write({"x": jnp.zeros(3, jnp.int32), "n": jnp.int32(0)}, step=0)
    with pytest.raises(js.FrameError, match=r"missing fields \['n'\]"):
        buf.write({"x": jnp.zeros(3, jnp.float32)}, step=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(step=0, mask=jnp.ones(3, bool)), "`mask` must be a scalar bool; got bool\\[3\\]"),
        (
            dict(step=0.5),
            f"`step` must be an integer scalar; got {'float64' if X64 else 'float32'}",
        ),
        (dict(step=jnp.arange(2)), "`step` must be an integer scalar"),
        # a raw "None is not a valid value for jnp.array" from JAX
        (dict(step=None), "`step` must be an integer scalar; got None. Pass the loop's step"),
        (dict(step="3"), "`step` must be an integer scalar; got '3'"),
        (dict(step=0, time=jnp.zeros(2)), "`time` must be a scalar"),
        (
            dict(step=0, time=jnp.int32(1)),
            "`time` has dtype int32, but the sink stores times as float32",
        ),
    ],
)
def test_bad_write_arguments_are_named(kwargs, match):
    buf = js.DeviceBuffer.create(FRAME, capacity=4)
    with pytest.raises(js.FrameError, match=match):
        buf.write(frame_at(0), **kwargs)
    assert len(buf) == 0


def test_per_system_mask_of_the_wrong_shape_is_named():
    buf = js.DeviceBuffer.create({"e": jnp.zeros(4)}, capacity=8, per_system=True)
    with pytest.raises(
        js.FrameError, match=r"bool array of shape \(4,\) \(one per system\); got bool\[3\]"
    ):
        buf.write({"e": jnp.zeros(4)}, step=0, mask=jnp.ones(3, bool))
    with pytest.raises(js.FrameError, match=r"got int32\[4\]"):
        buf.write({"e": jnp.zeros(4)}, step=0, mask=jnp.ones(4, jnp.int32))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(capacity=0), "`capacity` to be a positive int .*got 0"),
        (dict(capacity=-3), "got -3"),
        (dict(capacity=2.0), "got 2.0"),
        (
            dict(capacity=4, overflow="wrap"),
            r"`overflow` to be one of \['error', 'drop', 'ring'\]; got 'wrap'",
        ),
        (dict(capacity=4, every=0), "`Every` needs `n` to be an int >= 1; got 0"),
        (dict(capacity=4, every="10"), "`every` must be an int or a schedule"),
        (dict(capacity=4, time_dtype=jnp.int32), "`time_dtype` to be a floating dtype"),
    ],
)
def test_bad_construction_is_a_value_error_naming_the_argument(kwargs, match):
    with pytest.raises(js.ConfigError, match=match) as err:
        js.DeviceBuffer.create(FRAME, **kwargs)
    assert isinstance(err.value, ValueError) and isinstance(err.value, js.JaxsinksError)


def test_buffer_is_a_pytree_with_static_configuration():
    buf = js.DeviceBuffer.create(FRAME, capacity=4, every=js.Every(2))
    leaves, treedef = jax.tree.flatten(buf)
    assert all(isinstance(x, jax.Array) for x in leaves)
    assert jax.tree.unflatten(treedef, leaves).schedule == js.Every(2)
    doubled = jax.tree.map(lambda x: x, buf)
    assert doubled.capacity == 4 and doubled.spec == buf.spec
    assert "capacity=4" in repr(buf) and "x: float32[3]" in repr(buf)


def test_in_jit_views_mark_valid_slots():
    buf = run_writes(js.DeviceBuffer.create(FRAME, capacity=4), range(2))
    assert np.asarray(buf.valid).tolist() == [True, True, False, False]
    assert int(buf.size) == 2 and buf.frames["x"].shape == (4, 3)
    assert np.asarray(buf.steps)[:2].tolist() == [0, 1]


def test_once_records_each_system_the_first_time_it_is_selected():
    buf = js.DeviceBuffer.create(
        {"e": jnp.zeros(3, jnp.float32)}, capacity=6, per_system=True, once=True
    )
    masks = [[False, True, False], [True, True, False], [True, True, True], [True, True, True]]

    @jax.jit
    def go(buf):
        def body(buf, xs):
            step, mask = xs
            return buf.write(
                {"e": jnp.arange(3, dtype=jnp.float32) + 10 * step.astype(jnp.float32)},
                step=step,
                mask=mask,
            ), None

        return jax.lax.scan(body, buf, (jnp.arange(4), jnp.array(masks)))[0]

    out = go(buf).read()
    assert list(zip(out.steps.tolist(), out.systems.tolist())) == [(0, 1), (1, 0), (2, 2)]
    np.testing.assert_allclose(out.frames["e"], [1, 10, 22])
    assert np.asarray(go(buf).seen).tolist() == [True, True, True]
    assert np.asarray(go(buf).zero().seen).tolist() == [False, False, False]
    with pytest.raises(js.ConfigError, match="once=True without per_system=True"):
        js.DeviceBuffer.create({"e": jnp.zeros(3)}, capacity=6, once=True)
