"""DeviceBuffer and record under jit, scan, fori_loop, while_loop, vmap, grad, jacrev and jvp.

The reference for every derivative is the same quantity computed from stacked `lax.scan` outputs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import X64

import jaxsinks as js

N, D = 30, 4
#: The simulation's float dtype: float64 when the suite runs under x64, as double-precision
#: simulations do.
F = jnp.float64 if X64 else jnp.float32
X0 = jnp.linspace(0.1, 0.9, D, dtype=F)
E0 = jnp.zeros((), F)  # an example energy


def step_fn(x, p):
    return x + 0.05 * (jnp.sin(x) - p * x**3)


def energy(x, p):
    return p * jnp.sum(x**2) + jnp.sum(jnp.cos(x))


def recorded_trajectory(p, sink, every=3, n=N):
    """Run N steps, recording {x, e} into `sink` every `every` steps; return the final sink."""

    def body(carry, step):
        x, sink = carry
        x = step_fn(x, p)
        sink = js.record(sink, step=step, frame=lambda: {"x": x, "e": energy(x, p)})
        return (x, sink), None

    sink = (
        sink
        if sink is not None
        else js.DeviceBuffer.create({"x": X0, "e": E0}, capacity=n, every=every)
    )
    (_, sink), _ = jax.lax.scan(body, (X0, sink), jnp.arange(n))
    return sink


def stacked_trajectory(p, n=N):
    def body(x, _):
        x = step_fn(x, p)
        return x, {"x": x, "e": energy(x, p)}

    return jax.lax.scan(body, X0, None, length=n)[1]


def loss_from_buffer(p, every=3):
    sink = recorded_trajectory(p, None, every)
    e = jnp.where(sink.valid, sink.frames["e"], 0.0)
    return jnp.sum(e) / sink.size.astype(F) + jnp.sum(sink.frames["x"][1] ** 2)


def loss_from_stack(p, every=3):
    ys = stacked_trajectory(p)
    return jnp.mean(ys["e"][::every]) + jnp.sum(ys["x"][every] ** 2)


P = jnp.asarray(0.7, F)


def test_forward_values_match_stacked_outputs(maybe_jit):
    sink = maybe_jit(lambda p: recorded_trajectory(p, None))(P)
    ref = stacked_trajectory(P)
    out = sink.read()
    assert out.steps.tolist() == list(range(0, N, 3))
    np.testing.assert_allclose(out.frames["x"], ref["x"][::3], rtol=1e-6)


@pytest.mark.parametrize("transform", ["grad", "value_and_grad"])
def test_reverse_mode_matches_stacked_outputs_and_finite_differences(transform):
    if transform == "grad":
        g_buf = jax.jit(jax.grad(loss_from_buffer))(P)
    else:
        (v_buf, g_buf) = jax.jit(jax.value_and_grad(loss_from_buffer))(P)
        np.testing.assert_allclose(v_buf, loss_from_stack(P), rtol=1e-6)
    g_ref = jax.grad(loss_from_stack)(P)
    np.testing.assert_allclose(g_buf, g_ref, rtol=1e-5)
    h = 1e-2  # central differences of the recorded loss itself, in F
    fd = (loss_from_buffer(P + h) - loss_from_buffer(P - h)) / (2 * h)
    np.testing.assert_allclose(g_buf, fd, rtol=2e-3)


def test_jacrev_and_jvp_of_recorded_frames_match_stacked_outputs():
    f_buf = lambda p: recorded_trajectory(p, None).frames["e"][: N // 3]  # noqa: E731
    f_ref = lambda p: stacked_trajectory(p)["e"][::3]  # noqa: E731
    np.testing.assert_allclose(jax.jacrev(f_buf)(P), jax.jacrev(f_ref)(P), rtol=1e-5)
    np.testing.assert_allclose(jax.jacfwd(f_buf)(P), jax.jacrev(f_ref)(P), rtol=1e-5)
    (y_buf, t_buf), (y_ref, t_ref) = jax.jvp(f_buf, (P,), (1.0,)), jax.jvp(f_ref, (P,), (1.0,))
    np.testing.assert_allclose(y_buf, y_ref, rtol=1e-6)
    np.testing.assert_allclose(t_buf, t_ref, rtol=1e-5)


def test_gradients_with_respect_to_the_initial_state_flow_through_the_buffer():
    def loss(x0, use_buffer):
        def body(carry, step):
            x, sink = carry
            x = step_fn(x, P)
            return (x, sink.write({"x": x}, step=step)), x

        sink = js.DeviceBuffer.create({"x": X0}, capacity=N)
        (_, sink), ys = jax.lax.scan(body, (x0, sink), jnp.arange(N))
        xs = sink.frames["x"] if use_buffer else ys
        return jnp.sum(jnp.sin(xs) * jnp.arange(N, dtype=F)[:, None])

    np.testing.assert_allclose(jax.grad(loss)(X0, True), jax.grad(loss)(X0, False), rtol=1e-5)


@pytest.mark.parametrize("capacity", [4, 7])
def test_ring_reverse_mode_gives_the_gradient_of_the_newest_frames(capacity):
    def loss_ring(p):
        sink = js.DeviceBuffer.create(
            {"x": X0, "e": E0}, capacity=capacity, overflow="ring", every=2
        )
        sink = recorded_trajectory(p, sink)
        return jnp.sum(sink.frames["e"] * jnp.arange(1, capacity + 1, dtype=F))

    def loss_ref(p):
        e = stacked_trajectory(p)["e"][::2]  # 15 recorded frames
        slots = ((jnp.arange(len(e)) % capacity) + 1).astype(F)  # 1-based slot
        newest = jnp.arange(len(e)) >= len(e) - capacity
        return jnp.sum(jnp.where(newest, e * slots, 0.0))

    np.testing.assert_allclose(jax.grad(loss_ring)(P), jax.grad(loss_ref)(P), rtol=1e-5)
    np.testing.assert_allclose(loss_ring(P), loss_ref(P), rtol=1e-6)


def test_frames_dropped_past_capacity_get_no_gradient():
    def loss(p):
        sink = js.DeviceBuffer.create({"x": X0, "e": E0}, capacity=3, overflow="drop", every=1)
        return jnp.sum(recorded_trajectory(p, sink).frames["e"])

    ref = lambda p: jnp.sum(stacked_trajectory(p)["e"][:3])  # noqa: E731
    np.testing.assert_allclose(jax.grad(loss)(P), jax.grad(ref)(P), rtol=1e-5)


def test_per_system_masked_writes_are_differentiable():
    def loss(p, use_buffer):
        xs = jnp.linspace(0.2, 1.0, 5, dtype=F)
        buf = js.DeviceBuffer.create({"e": jnp.zeros(5, F)}, capacity=16, per_system=True)

        def body(carry, step):
            x, buf = carry
            x = step_fn(x, p)
            e = p * x**2
            return (x, buf.write({"e": e}, step=step, mask=(jnp.arange(5) + step) % 3 == 0)), e

        (_, buf), es = jax.lax.scan(body, (xs, buf), jnp.arange(6))
        if use_buffer:
            return jnp.sum(jnp.where(buf.valid, buf.frames["e"], 0.0) ** 2)
        chosen = (jnp.arange(5)[None, :] + jnp.arange(6)[:, None]) % 3 == 0
        return jnp.sum(jnp.where(chosen, es, 0.0) ** 2)

    np.testing.assert_allclose(jax.grad(loss)(P, True), jax.grad(loss)(P, False), rtol=1e-5)
    np.testing.assert_allclose(loss(P, True), loss(P, False), rtol=1e-6)


def test_fori_loop_records_like_scan():
    def run(p):
        def body(i, carry):
            x, sink = carry
            x = step_fn(x, p)
            return x, js.record(sink, step=i, frame={"x": x, "e": energy(x, p)})

        sink = js.DeviceBuffer.create({"x": X0, "e": E0}, capacity=N, every=3)
        return jax.lax.fori_loop(0, N, body, (X0, sink))[1]

    np.testing.assert_allclose(
        jax.jit(run)(P).read().frames["x"], stacked_trajectory(P)["x"][::3], rtol=1e-6
    )
    assert jax.grad(lambda p: jnp.sum(run(p).frames["e"]))(P) == pytest.approx(
        float(jax.grad(lambda p: jnp.sum(stacked_trajectory(p)["e"][::3]))(P)), rel=1e-5
    )


def test_while_loop_with_an_early_stop_keeps_every_frame_recorded():
    def run(tol):
        sink = js.DeviceBuffer.create({"x": X0, "e": E0}, capacity=100, every=2)

        def cond(c):
            step, x, _ = c
            return (jnp.max(jnp.abs(x - step_fn(x, P))) > tol) & (step < 1000)

        def body(c):
            step, x, sink = c
            x = step_fn(x, P)
            return step + 1, x, js.record(sink, step=step, frame={"x": x, "e": energy(x, P)})

        return jax.lax.while_loop(cond, body, (jnp.int32(0), X0, sink))

    steps, x, sink = jax.jit(run)(1e-3)
    ref = stacked_trajectory(P, n=int(steps))["x"]
    assert 0 < int(steps) < 1000
    assert sink.read().steps.tolist() == list(range(0, int(steps), 2))
    np.testing.assert_allclose(sink.read().frames["x"], ref[::2], rtol=1e-6)
    # forward mode through the while_loop
    f = lambda p: jax.lax.while_loop(  # noqa: E731
        lambda c: c[0] < 10,
        lambda c: (c[0] + 1, step_fn(c[1], p), c[2].write({"x": c[1]}, step=c[0])),
        (0, X0, js.DeviceBuffer.create({"x": X0}, capacity=10)),
    )[2].frames["x"]
    np.testing.assert_allclose(
        jax.jvp(f, (P,), (1.0,))[1][1:],
        jax.jvp(lambda p: stacked_trajectory(p, 9)["x"], (P,), (1.0,))[1],
        rtol=1e-5,
    )


def test_ensemble_recommended_way_vmaps_the_step_and_records_the_batch():
    """The step function is vmapped; one sink records frames with a leading replica axis."""
    ps = jnp.array([0.5, 0.7, 0.9], F)
    batched_step = jax.vmap(step_fn)

    def run(ps):
        def body(carry, step):
            x, sink = carry
            x = batched_step(x, ps)
            return (x, js.record(sink, step=step, frame={"x": x})), None

        sink = js.DeviceBuffer.create({"x": jnp.zeros((3, D), F)}, capacity=N, every=5)
        x0 = jnp.broadcast_to(X0, (3, D))
        return jax.lax.scan(body, (x0, sink), jnp.arange(N))[0][1]

    out = jax.jit(run)(ps).read()
    assert out.frames["x"].shape == (6, 3, D)
    for r, p in enumerate(ps):
        np.testing.assert_allclose(
            out.frames["x"][:, r], stacked_trajectory(p)["x"][::5], rtol=1e-6
        )


def test_vmapped_sinks_record_per_replica_and_must_be_indexed_to_read():
    ps = jnp.array([0.5, 0.9], F)
    sinks = jax.vmap(lambda p: recorded_trajectory(p, None, every=10))(ps)
    with pytest.raises(
        js.TransformError, match=r"stack of \(2,\) sinks .* Index one replica first"
    ):
        sinks.read()
    with pytest.raises(js.TransformError):
        len(sinks)
    second = jax.tree.map(lambda x: x[1], sinks).read()
    np.testing.assert_allclose(second.frames["e"], stacked_trajectory(ps[1])["e"][::10], rtol=1e-6)
    g = jax.vmap(jax.grad(loss_from_buffer))(ps)
    np.testing.assert_allclose(g, jax.vmap(jax.grad(loss_from_stack))(ps), rtol=1e-5)


def test_zero_on_a_vmapped_stack_of_buffers_empties_every_replica_and_keeps_the_stack():
    ps = jnp.array([0.5, 0.9, 1.3], F)
    sinks = jax.vmap(lambda p: recorded_trajectory(p, None, every=10))(ps)
    empty = sinks.zero()
    assert jax.tree.map(jnp.shape, empty) == jax.tree.map(jnp.shape, sinks)
    assert jax.tree.map(lambda x: x.dtype, empty) == jax.tree.map(lambda x: x.dtype, sinks)
    for r in range(3):
        replica = jax.tree.map(lambda x, r=r: x[r], empty)
        assert len(replica) == 0 and replica.read().steps.tolist() == []
    # the same as zero() inside vmap, replica by replica
    inside = jax.vmap(lambda s: s.zero())(sinks)
    jax.tree.map(np.testing.assert_array_equal, empty, inside)


def test_recording_n_steps_compiles_once_and_continues_across_calls():
    traces = []

    @jax.jit
    def run(x, sink, start):
        traces.append(1)

        def body(carry, step):
            x, sink = carry
            x = step_fn(x, P)
            return (x, js.record(sink, step=step, frame={"x": x})), None

        return jax.lax.scan(body, (x, sink), start + jnp.arange(10, dtype=jnp.int32))[0]

    sink = js.DeviceBuffer.create({"x": X0}, capacity=40, every=2)
    x = X0
    for chunk in range(4):
        x, sink = run(x, sink, jnp.int32(10 * chunk))
    assert len(traces) == 1 and run._cache_size() == 1
    out = sink.read()
    assert out.steps.tolist() == list(range(0, 40, 2))
    np.testing.assert_allclose(out.frames["x"], stacked_trajectory(P, 40)["x"][::2], rtol=1e-6)
