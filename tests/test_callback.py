"""The host call (`jaxsinks._io.callback`) on each of its routes.

Every behaviour a sink relies on is checked on every route: ``auto`` (the default: the public,
zero-copy `jax.experimental.buffer_callback` on CPU), ``buffer_callback`` forced, and the
fallbacks ``private`` (io_callback without its device_put, from jax internals) and
``io_callback``. The sink test files run on a forced route with the environment variable, e.g.
``JAXSINKS_HOST_CALL=fallback pytest tests/test_zarr_sink.py``.
"""

from __future__ import annotations

import ast
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxsinks as js
from jaxsinks._io import callback as _callback
from jaxsinks._io import writer as _writer
from jaxsinks._sinks import stream as _stream

HAS_BUFFER_CALLBACK = _callback._buffer_callback is not None
ROUTES = (["auto", "buffer_callback"] if HAS_BUFFER_CALLBACK else []) + ["private", "io_callback"]
ZERO_COPY = {"auto", "buffer_callback"}
AVALS = [jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((), jnp.float32)]
PACKAGE = pathlib.Path(js.__file__).parent


@pytest.fixture(params=ROUTES)
def route(request, monkeypatch):
    """Force a route for programs traced in this test (sinks' cached recorders are re-traced)."""
    monkeypatch.setattr(_callback, "ROUTE", request.param)
    _stream._recorder.cache_clear()
    yield request.param
    _stream._recorder.cache_clear()


class Spy:
    """A host function that records what it was given and returns ``[rows, sum + k]``."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, k):
        self.calls.append(
            {
                "x": np.array(x),
                "k": int(k),
                "address": x.ctypes.data,
                "writeable": x.flags.writeable,
            }
        )
        return [np.int32(x.shape[0]), np.float32(x.sum() + k)]


def test_values_go_in_and_results_come_back(route, maybe_jit):
    spy = Spy()
    x = jnp.arange(6, dtype=jnp.float32).reshape(2, 3)
    rows, total = maybe_jit(lambda x, k: _callback.host_call(spy, AVALS, x, k))(x, jnp.int32(5))
    assert (rows.dtype, int(rows)) == (jnp.int32, 2)
    assert (total.dtype, float(total)) == (jnp.float32, 20.0)
    (call,) = spy.calls
    np.testing.assert_array_equal(call["x"], np.asarray(x))
    assert call["k"] == 5


def test_it_runs_exactly_as_often_as_reached_in_scan_cond_and_while(route):
    spy = Spy()

    @jax.jit
    def scanned(x):
        def body(acc, i):
            rows = lax.cond(
                i % 3 == 0,
                lambda: _callback.host_call(spy, AVALS, x + i.astype(jnp.float32), i)[0],
                lambda: jnp.int32(0),
            )
            return acc + rows, None

        return lax.scan(body, jnp.int32(0), jnp.arange(10, dtype=jnp.int32))[0]

    assert int(scanned(jnp.zeros(4, jnp.float32))) == 4 * 4
    assert [c["k"] for c in spy.calls] == [0, 3, 6, 9]
    assert [float(c["x"][0]) for c in spy.calls] == [0.0, 3.0, 6.0, 9.0]

    spy.calls.clear()

    @jax.jit
    def looped(n):
        def body(c):
            i, acc = c
            return i + 1, acc + _callback.host_call(spy, AVALS, jnp.ones(3, jnp.float32), i)[1]

        return lax.while_loop(lambda c: c[0] < n, body, (jnp.int32(0), jnp.float32(0)))[1]

    assert float(looped(jnp.int32(5))) == 5 * 3 + (0 + 1 + 2 + 3 + 4)
    assert [c["k"] for c in spy.calls] == [0, 1, 2, 3, 4]


def test_under_grad_the_result_in_the_carry_keeps_the_call_once_per_flush(route):
    """An unused callback inside a differentiated scan is dropped by JAX; the acknowledgement
    added to the carry (as a sink does) keeps it, and it runs once per flush, not again in the
    backward pass."""
    spy = Spy()

    def loss(p):
        def body(carry, i):
            v, flushed = carry
            v = v * p
            ack = lax.cond(
                i % 2 == 1,
                lambda: _callback.host_call(spy, AVALS, lax.stop_gradient(jnp.stack([v, v])), i)[0],
                lambda: jnp.int32(0),
            )
            return (v, flushed + ack), None

        (v, flushed), _ = lax.scan(
            body, (jnp.float32(1), jnp.int32(0)), jnp.arange(8, dtype=jnp.int32)
        )
        return v, flushed

    (value, flushed), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(jnp.float32(1.5))
    assert int(flushed) == 4 * 2
    assert [c["k"] for c in spy.calls] == [1, 3, 5, 7]
    np.testing.assert_allclose(
        [c["x"][0] for c in spy.calls], [1.5**2, 1.5**4, 1.5**6, 1.5**8], rtol=1e-6
    )
    np.testing.assert_allclose(float(value), 1.5**8, rtol=1e-6)
    np.testing.assert_allclose(float(grad), 8 * 1.5**7, rtol=1e-5)


def test_it_has_no_derivative_and_refuses_vmap(route):
    spy = Spy()

    def call(x):
        return _callback.host_call(spy, AVALS, x, jnp.int32(0))[1]

    with pytest.raises(js.TransformError, match="jvp"):
        jax.jvp(call, (jnp.ones(3, jnp.float32),), (jnp.ones(3, jnp.float32),))
    with pytest.raises(js.TransformError, match="vmap"):
        jax.vmap(call)(jnp.ones((2, 3), jnp.float32))
    assert spy.calls == []


def test_inside_shard_map_each_device_calls_once_with_its_shard(route):
    spy = Spy()
    mesh = Mesh(np.array(jax.devices()[:4]), ("d",))

    def per_device(x):
        return _callback.host_call(spy, AVALS, x, lax.axis_index("d").astype(jnp.int32))[1][None]

    f = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P("d"), out_specs=P("d")))
    x = jnp.arange(8, dtype=jnp.float32)
    np.testing.assert_array_equal(np.asarray(f(x)), [0 + 1 + 0, 2 + 3 + 1, 4 + 5 + 2, 6 + 7 + 3])
    by_device = sorted((c["k"], c["x"].tolist()) for c in spy.calls)
    assert by_device == [(0, [0, 1]), (1, [2, 3]), (2, [4, 5]), (3, [6, 7])]


@pytest.mark.parametrize("kind", ["auto", "private", "io_callback"])
def test_a_program_partitioned_over_devices_calls_once_with_the_gathered_operands(
    kind, monkeypatch
):
    """Outside shard_map, jit with sharded inputs: one call, on device 0 (as io_callback). XLA
    refuses a forced buffer_callback there (documented in jaxsinks/_io/callback.py)."""
    monkeypatch.setattr(_callback, "ROUTE", kind)
    spy = Spy()
    mesh = Mesh(np.array(jax.devices()[:4]), ("d",))
    x = jax.device_put(jnp.arange(8, dtype=jnp.float32), NamedSharding(mesh, P("d")))
    total = jax.jit(lambda x: _callback.host_call(spy, AVALS, x * 2, jnp.int32(1))[1])(x)
    assert float(total) == 2 * 28 + 1
    (call,) = spy.calls
    np.testing.assert_array_equal(call["x"], 2 * np.arange(8))


def test_the_arrays_given_to_fn_are_read_only_views(route):
    seen = {}

    def fn(x):
        seen["writeable"] = x.flags.writeable
        try:
            x[0] = -1.0
        except ValueError:
            seen["write refused"] = True
        try:
            x.flags.writeable = True
        except ValueError:
            seen["flag refused"] = True
        return [np.int32(0)]

    x = jnp.arange(4, dtype=jnp.float32)
    jax.block_until_ready(jax.jit(lambda x: _callback.host_call(fn, AVALS[:1], x))(x))
    assert seen["writeable"] is False
    assert seen.get("write refused")
    assert seen.get("flag refused")
    np.testing.assert_array_equal(np.asarray(x), [0, 1, 2, 3])


def test_read_only_keeps_every_dtype_and_shape_without_a_copy():
    import ml_dtypes

    for dtype in (np.float32, np.float16, ml_dtypes.bfloat16, np.bool_, np.int8, np.complex64):
        for shape in ((2, 3), (), (0, 4)):
            a = np.ones(shape, dtype)
            v = _callback.read_only(a)
            assert (v.dtype, v.shape, v.flags.writeable) == (a.dtype, a.shape, False)
            assert a.size == 0 or np.shares_memory(v, a)
            with pytest.raises(ValueError):
                v.flags.writeable = True


def test_on_the_public_route_fn_reads_xla_buffers_without_a_copy(route):
    """Copies before `fn`: 0 on the buffer_callback route (fn sees the argument's own buffer),
    at least 1 on the fallbacks (benchmarks/bench_copies.py counts them)."""
    spy = Spy()
    x = jnp.arange(64 * 1024, dtype=jnp.float32)
    jax.block_until_ready(jax.jit(lambda x: _callback.host_call(spy, AVALS, x, jnp.int32(0)))(x))
    same_buffer = spy.calls[0]["address"] == x.unsafe_buffer_pointer()
    assert same_buffer == (route in ZERO_COPY)


def test_a_sink_flush_hands_the_writer_the_staging_block_itself(route, monkeypatch):
    """End to end: on the public route the writer gets a read-only view of the sink's staging
    buffer (the donated block, updated in place), not a copy of it."""
    seen = []
    host_flush = _writer.host_flush

    def spy(*args):
        x = args[5]  # writer, shard, offset, n, bad, then the first field
        seen.append((x.ctypes.data, x.flags.writeable, x.flags.owndata))
        return host_flush(*args)

    monkeypatch.setattr(_writer, "host_flush", spy)
    frame = {"x": jnp.zeros((64, 256), jnp.float32)}
    sink = js.ZarrSink.create(f"memory://callback-{route}", frame, every=1, chunk=4)
    step = jax.jit(
        lambda sink, i: js.record(sink, step=i, frame={"x": jnp.full((64, 256), i, jnp.float32)}),
        donate_argnums=0,
    )
    for i in range(3):
        sink = step(sink, jnp.int32(i))
    staging = sink.columns.leaves[0].unsafe_buffer_pointer()
    sink = step(sink, jnp.int32(3))
    ((address, writeable, owndata),) = seen
    assert not writeable
    if route in ZERO_COPY:
        assert address == staging and not owndata
    else:
        assert address != staging
    js.close(sink)
    np.testing.assert_array_equal(js.open(f"memory://callback-{route}")["x"][:, 0, 0], [0, 1, 2, 3])


def test_a_result_of_the_wrong_shape_fails_the_call(route):
    with pytest.raises(Exception, match="returned shape"):
        jax.block_until_ready(
            jax.jit(lambda: _callback.host_call(lambda: [np.zeros(3, np.int32)], AVALS[:1]))()
        )


def test_jax_internals_are_imported_only_by_the_private_route():
    """No jaxsinks module imports jax._src at import time; in the host-call module only the
    private route's functions (and the multi-host client's accessor) do, so a program on the
    public route never touches them."""
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                )
                assert not any(n.startswith("jax._src") for n in names), path.name
    tree = ast.parse((PACKAGE / "_io" / "callback.py").read_text())
    users = {
        f.name
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef)
        and any(
            isinstance(n, ast.ImportFrom) and (n.module or "").startswith("jax._src")
            for n in ast.walk(f)
        )
    }
    assert users == {"_private_lowering", "_private_available", "distributed_client"}


@pytest.mark.skipif(not HAS_BUFFER_CALLBACK, reason="this JAX has no buffer_callback")
def test_the_default_route_does_not_touch_the_private_route(monkeypatch):
    monkeypatch.setattr(_callback, "ROUTE", "auto")

    def refuse(*args, **kwargs):
        raise AssertionError("the private route was used")

    monkeypatch.setattr(_callback, "_private_lowering", refuse)
    monkeypatch.setattr(_callback, "_private_available", refuse)
    spy = Spy()
    mesh = Mesh(np.array(jax.devices()[:4]), ("d",))
    jax.block_until_ready(
        jax.jit(lambda x: _callback.host_call(spy, AVALS, x, jnp.int32(0)))(jnp.ones(3))
    )
    per_device = jax.shard_map(
        lambda x: _callback.host_call(spy, AVALS, x, jnp.int32(0))[1][None],
        mesh=mesh,
        in_specs=P("d"),
        out_specs=P("d"),
    )
    jax.block_until_ready(jax.jit(per_device)(jnp.ones(8)))
    assert len(spy.calls) == 5


def _route_in_subprocess(value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAXSINKS_HOST_CALL=value, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-c", "import jaxsinks._io.callback as c; print(c.ROUTE)"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_route_is_chosen_by_the_environment():
    expected = os.environ.get(_callback.ENV_VAR, "auto")
    assert _callback.ROUTE == _callback._choose(expected)
    fallback = "private" if _callback._private_available() else "io_callback"
    for value, route in [
        ("fallback", fallback),
        ("io_callback", "io_callback"),
        ("auto", "auto" if HAS_BUFFER_CALLBACK else fallback),
    ]:
        proc = _route_in_subprocess(value)
        assert proc.stdout.strip() == route, proc.stderr
    proc = _route_in_subprocess("bogus")
    assert proc.returncode and "JAXSINKS_HOST_CALL='bogus'" in proc.stderr


# ------------------------------------------------------------------------ Ctrl-C during a call


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler for the test (xdist workers may ignore SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_during_a_host_call_lets_the_call_finish_and_then_reaches_the_caller(
    route, default_sigint
):
    def fn(x):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of the host call's work
        time.sleep(0.05)
        done.append(int(x))
        return (x + 1,)

    done, returned = [], []
    f = jax.jit(lambda x: 2 * _callback.host_call(fn, AVALS[:1], x)[0])
    with pytest.raises(KeyboardInterrupt):
        returned.append(int(f(jnp.int32(3))))  # the program completes ...
        for _ in range(500):  # ... and the Ctrl-C is raised once it has returned
            time.sleep(0.01)
    assert done == [3] and returned == [8]
    assert signal.getsignal(signal.SIGINT) is _callback._INTERRUPT  # wraps the default one
    time.sleep(3 * _callback._HeldInterrupt.RETRY_S)  # nothing held is delivered again
    assert not _callback._INTERRUPT.held.is_set()


def test_inside_interrupt_aborts_a_ctrl_c_ends_a_long_program_at_the_next_call(
    route, default_sigint
):
    def fn(i):
        if int(i) == 5:
            signal.raise_signal(signal.SIGINT)
        calls.append(int(i))
        return (i,)

    def body(i):
        return _callback.host_call(fn, AVALS[:1], i)[0] + 1

    calls = []
    loop = jax.jit(lambda: lax.while_loop(lambda i: i < 100_000, body, jnp.int32(0)))
    with pytest.raises((KeyboardInterrupt, jax.errors.JaxRuntimeError)) as caught:
        with _callback.interrupt_aborts():
            loop().block_until_ready()
            for _ in range(500):
                time.sleep(0.01)
    assert "KeyboardInterrupt" in repr(caught.value) + str(caught.value)
    assert 5 in calls and len(calls) < 1000  # ended soon, not after 100 000 calls
    calls.clear()  # and afterwards a Ctrl-C held before is not raised by later calls
    assert int(jax.jit(lambda: body(jnp.int32(7)))()) == 8 and calls == [7]
