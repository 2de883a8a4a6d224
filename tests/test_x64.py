"""float64 simulations (``jax_enable_x64``): every sink records float64 and int64 frames and
float64 times, and stores them bit for bit.

These tests run in the x64 pass (``JAXSINKS_TEST_X64=1``, see conftest.py). JAX reads the x64
flag once per process for much of its state, so the default (x32) run does not toggle it: it runs
this module in a subprocess with the flag set (`test_this_module_passes_under_x64`).
"""

import csv
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import X64

import jaxsinks as js

#: Deselected in the x32 run (conftest.py), which runs them in `test_this_module_passes_under_x64`.
x64_only = pytest.mark.x64

N, CHUNK = 7, 3  # two blocks flushed from the device inside the loop, one frame staged at close
STEPS = np.arange(10, 10 + N, dtype=np.int32)
#: Times no float32 can hold: they differ by far less than a float32 ulp at 1e9.
TIMES = 1e9 + np.arange(N) / 3.0
#: Values float32 rounds or overflows (1/3, 1e300, 1 + 2**-40), and -0.0.
X = np.stack(
    [np.arange(N) / 3.0, np.full(N, 1e300) * (np.arange(N) + 1), 1.0 + np.arange(N) * 2.0**-40],
    axis=1,
)
X[3, 1] = -0.0
#: int64 values no float64 (nor int32) can hold.
N64 = (2**62 + 2**53 + 1 + np.arange(N, dtype=np.int64)) * np.where(np.arange(N) % 2, -1, 1)
EXAMPLE = {"x": jax.ShapeDtypeStruct((3,), jnp.float64), "n": jax.ShapeDtypeStruct((), jnp.int64)}

SINKS = ["ZarrSink", "CsvSink", "HostBuffer", "DeviceBuffer"]
HOW = ["write", "scan", "while_loop"]


def make(kind, tmp_path, time_dtype=jnp.float64, **kwargs):
    kwargs["time_dtype"] = time_dtype
    if kind == "ZarrSink":
        return js.ZarrSink.create(tmp_path / "run.zarr", EXAMPLE, chunk=CHUNK, **kwargs)
    if kind == "CsvSink":
        return js.CsvSink.create(tmp_path / "log.csv", EXAMPLE, block=CHUNK, **kwargs)
    if kind == "HostBuffer":
        return js.HostBuffer.create(EXAMPLE, capacity=16, block=CHUNK, **kwargs)
    return js.DeviceBuffer.create(EXAMPLE, capacity=16, **kwargs)


def record_all(sink, how, wrap):
    """Record frame i = (X[i], N64[i]) at STEPS[i], TIMES[i] for every i, as `how` says."""
    xs = (jnp.asarray(STEPS), jnp.asarray(TIMES), jnp.asarray(X), jnp.asarray(N64))
    assert all(a.dtype == d for a, d in zip(xs, (jnp.int32, jnp.float64, jnp.float64, jnp.int64)))

    def put(sink, step, time, x, n):
        return js.record(sink, step=step, time=time, frame={"x": x, "n": n})

    if how == "write":
        put = wrap(put)
        for i in range(N):
            sink = put(sink, *(a[i] for a in xs))
        return sink
    if how == "scan":
        return wrap(lambda s, xs: jax.lax.scan(lambda s, f: (put(s, *f), None), s, xs)[0])(sink, xs)

    def body(carry):
        i, s = carry
        return i + 1, put(s, *(a[i] for a in xs))

    return wrap(lambda s, xs: jax.lax.while_loop(lambda c: c[0] < N, body, (jnp.int32(0), s))[1])(
        sink, xs
    )


def read_back(kind, sink, tmp_path, n=N):
    """(steps, times, x, n) as stored, read the way a user reads that sink."""
    if kind == "ZarrSink":
        run = js.open(tmp_path / "run.zarr")
        assert len(run) == n and run.status == "closed"
        return run.steps, run.times, run["x"][:], run["n"][:]
    if kind == "CsvSink":
        with open(tmp_path / "log.csv", newline="") as f:
            head, *rows = list(csv.reader(f))
        assert head == ["step", "time", "n", "x[0]", "x[1]", "x[2]"]  # fields in name order
        # Parsed as Python float / int: the text must be exact (17 significant digits, all int
        # digits).
        return (
            np.array([int(r[0]) for r in rows], np.int32),
            np.array([float(r[1]) for r in rows]),
            np.array([[float(v) for v in r[3:6]] for r in rows]),
            np.array([int(r[2]) for r in rows], np.int64),
        )
    out = sink.read()
    return out.steps, out.times, out.frames["x"], out.frames["n"]


def assert_bitwise_equal(got, want):
    got = np.asarray(got)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), f"{got} != {want}"


@x64_only
@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("wrap", ["eager", "jit"])
@pytest.mark.parametrize("kind", SINKS)
def test_float64_frames_int64_fields_and_float64_times_are_stored_bit_for_bit(
    kind, wrap, how, tmp_path
):
    sink = make(kind, tmp_path)
    assert sink.time_dtype == jnp.float64
    sink = record_all(sink, how, jax.jit if wrap == "jit" else (lambda f: f))
    sink = js.close(sink)
    steps, times, x, n = read_back(kind, sink, tmp_path)
    assert_bitwise_equal(steps, STEPS)
    assert_bitwise_equal(times, TIMES)
    assert_bitwise_equal(x, X)
    assert_bitwise_equal(n, N64)
    if kind == "HostBuffer":
        sink.release()


@x64_only
@pytest.mark.parametrize("kind", SINKS)
def test_per_system_float64_rows_keep_their_own_times(kind, tmp_path):
    example = {"e": jax.ShapeDtypeStruct((3,), jnp.float64)}
    if kind == "ZarrSink":
        sink = js.ZarrSink.create(
            tmp_path / "run.zarr", example, chunk=4, per_system=True, time_dtype=jnp.float64
        )
    elif kind == "CsvSink":
        sink = js.CsvSink.create(
            tmp_path / "log.csv", example, block=4, per_system=True, time_dtype=jnp.float64
        )
    elif kind == "HostBuffer":
        sink = js.HostBuffer.create(
            example, capacity=8, block=4, per_system=True, time_dtype=jnp.float64
        )
    else:
        sink = js.DeviceBuffer.create(example, capacity=8, per_system=True, time_dtype=jnp.float64)
    t = 1e9 + np.array([1, 2, 3]) / 3.0
    e = np.array([1, 2, 3]) / 7.0
    mask = jnp.array([True, False, True])
    sink = js.close(
        jax.jit(lambda s: js.record(s, step=4, time=t, frame={"e": e}, mask=mask))(sink)
    )
    if kind == "ZarrSink":
        run = js.open(tmp_path / "run.zarr")
        got = run.systems, run.times, run["e"][:]
    elif kind == "CsvSink":
        with open(tmp_path / "log.csv", newline="") as f:
            rows = list(csv.reader(f))[1:]
        got = (
            [int(r[2]) for r in rows],
            np.array([float(r[1]) for r in rows]),
            np.array([float(r[3]) for r in rows]),
        )
    else:
        out = sink.read()
        got = out.systems, out.times, out.frames["e"]
    assert list(got[0]) == [0, 2]
    assert_bitwise_equal(got[1], t[[0, 2]])
    assert_bitwise_equal(got[2], e[[0, 2]])
    if kind == "HostBuffer":
        sink.release()


@x64_only
@pytest.mark.parametrize("kind", SINKS)
def test_time_schedules_run_on_float64_times(kind, tmp_path):
    """Interval(dt) fires at 1e9 + k / 4: steps a float32 clock could not tell apart."""
    sink = make(kind, tmp_path, every=js.Interval(0.25, start=1e9))
    times = 1e9 + np.arange(12) / 8.0  # two steps per interval

    def body(s, xs):
        step, time = xs
        frame = {"x": jnp.full((3,), time), "n": step.astype(jnp.int64)}
        return js.record(s, step=step, time=time, frame=frame), None

    xs = (jnp.arange(12, dtype=jnp.int32), jnp.asarray(times))
    sink = js.close(jax.jit(lambda s: jax.lax.scan(body, s, xs)[0])(sink))
    want = np.arange(0, 12, 2, dtype=np.int32)
    steps, got_times, _, _ = read_back(kind, sink, tmp_path, n=len(want))
    assert_bitwise_equal(np.asarray(steps, np.int32), want)
    assert_bitwise_equal(got_times, times[want])
    if kind == "HostBuffer":
        sink.release()


@x64_only
def test_host_buffer_exports_keep_float64_and_int64(tmp_path):
    sink = js.close(record_all(make("HostBuffer", tmp_path), "scan", jax.jit))
    assert sink.to_zarr(tmp_path / "run.zarr", chunk=2) == N
    steps, times, x, n = read_back("ZarrSink", None, tmp_path)
    sink.save_npz(tmp_path / "traj.npz")
    sink.release()
    with np.load(tmp_path / "traj.npz") as saved:
        for got in [(steps, times, x, n), (saved["step"], saved["time"], saved["x"], saved["n"])]:
            for value, want in zip(got, (STEPS, TIMES, X, N64)):
                assert_bitwise_equal(value, want)


@x64_only
def test_a_float64_time_for_a_float32_time_column_is_a_clear_error(tmp_path):
    """The default time column stays float32; a float64 time is not silently rounded."""
    sink = js.ZarrSink.create(tmp_path / "run.zarr", EXAMPLE, chunk=CHUNK)
    assert sink.time_dtype == jnp.float32
    frame = {"x": jnp.zeros(3, jnp.float64), "n": jnp.zeros((), jnp.int64)}
    with pytest.raises(js.FrameError, match="create the sink with `time_dtype=float64`"):
        sink.write(frame, step=0, time=jnp.float64(1.5))
    sink = js.close(sink.write(frame, step=0, time=1.5))  # a Python float is cast
    assert js.open(tmp_path / "run.zarr").times.dtype == np.float32


def _record_steps(sink, steps):
    put = lambda s, k: (js.record(s, step=k, frame={"x": jnp.zeros(3), "n": k}), None)  # noqa: E731
    return jax.jit(lambda s: jax.lax.scan(put, s, steps)[0])(sink)


@x64_only
@pytest.mark.parametrize("kind", ["DeviceBuffer", "HostBuffer"])
def test_a_traced_int64_step_beyond_int32_is_raised_on_not_wrapped(kind, tmp_path):
    """2**31 used to wrap to -2**31 before the schedule saw it: never recorded, no error. Now the
    schedule sees the int64 value, the step column holds the nearest int32, and reading raises a
    FrameError naming `step`; the frames are kept."""
    sink = make(kind, tmp_path)
    steps = jnp.asarray([2**31, 5, 2**32 + 7], jnp.int64)
    sink = _record_steps(sink, steps)
    if kind == "HostBuffer":
        sink = js.close(sink)
    with pytest.raises(js.FrameError, match=r"`step` recorded into this .* outside the range"):
        sink.read()
    got = sink.read(check=False)
    assert got.steps.tolist() == [2**31 - 1, 5, 2**31 - 1]
    assert got.frames["n"].tolist() == steps.tolist()  # the frames are the ones recorded
    if kind == "HostBuffer":
        sink.release()


@x64_only
@pytest.mark.parametrize("kind", SINKS)
def test_traced_int64_steps_within_int32_are_stored_exactly(kind, tmp_path):
    """`jnp.arange` is int64 with x64: such steps are not refused, nor rounded."""
    steps = jnp.arange(2**31 - 4, 2**31, dtype=jnp.int64)
    sink = js.close(_record_steps(make(kind, tmp_path), steps))
    got, _, _, n = read_back(kind, sink, tmp_path, n=4)
    assert got.tolist() == n.tolist() == steps.tolist()
    if kind == "HostBuffer":
        sink.release()


@x64_only
def test_concrete_int64_steps_beyond_int32_are_frame_errors(tmp_path):
    """2**32 + 7 was stored as 7 and np.int64(2**33) as 0."""
    sink = make("DeviceBuffer", tmp_path)
    for step in (2**32 + 7, np.int64(2**33), jnp.int64(-(2**31) - 1)):
        with pytest.raises(js.FrameError, match=rf"`step` is {step}, outside the range of int32"):
            js.record(sink, step=step, frame={"x": jnp.zeros(3), "n": jnp.int64(0)})
    assert int(sink.recorded) == 0


@x64_only
def test_a_float64_time_beyond_float32_is_refused_for_a_float32_column(tmp_path):
    """1e300 was stored as inf in the default float32 time column."""
    sink = js.ZarrSink.create(tmp_path / "run.zarr", EXAMPLE, chunk=CHUNK)
    frame = {"x": jnp.zeros(3), "n": jnp.int64(0)}
    for time in (1e300, np.float64(-1e300)):
        with pytest.raises(
            js.FrameError, match="`time` is .*e\\+300, beyond the range of .* float32"
        ):
            js.record(sink, step=0, time=time, frame=frame)
    js.close(sink)
    assert len(js.open(tmp_path / "run.zarr")) == 0
    sink = make("DeviceBuffer", tmp_path, every=None)
    assert js.record(sink, step=0, time=1e300, frame=frame).read().times.tolist() == [1e300]


@x64_only
@pytest.mark.parametrize("kind", ["ZarrSink", "CsvSink", "HostBuffer", "DeviceBuffer"])
def test_a_traced_float64_time_beyond_a_float32_column_is_flagged_and_raised(kind, tmp_path):
    """`time=i * dt` is a weakly typed float64 under x64, so the default float32 column takes it:
    1e300 was stored as inf without a word."""
    sink = make(kind, tmp_path, time_dtype=jnp.float32)
    frame = {"x": jnp.zeros(3), "n": jnp.int64(0)}

    def body(sink, i):
        return js.record(sink, step=i, time=i * 1e300, frame=frame), None

    with jax.numpy_dtype_promotion("standard"):  # the tests' strict promotion refuses i * 1e300
        sink = jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(3))[0])(sink)
    assert int(sink.flags) & js.Flag.TIME_OUT_OF_RANGE
    with pytest.raises(js.FrameError, match=r"`time` .* float32 .* stored as inf") as info:
        sink = js.close(sink)
        sink.read()  # the buffers raise when read
    assert "time_dtype='float64'" in str(info.value)
    if kind in ("HostBuffer", "DeviceBuffer"):
        assert sink.read(check=False).times.tolist() == [0, np.inf, np.inf]
    elif kind == "ZarrSink":
        assert js.open(tmp_path / "run.zarr").times.tolist() == [0, np.inf, np.inf]
    if kind == "HostBuffer":
        sink.release()


@pytest.mark.slow
@pytest.mark.skipif(X64, reason="this run is the x64 pass: the tests above run directly")
def test_this_module_passes_under_x64():
    root = pathlib.Path(__file__).resolve().parent.parent
    env = {**os.environ, "JAXSINKS_TEST_X64": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            str(pathlib.Path(__file__)),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert "failed" not in summary and "error" not in summary and " passed" in summary, proc.stdout[
        -2000:
    ]
