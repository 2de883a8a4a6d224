"""The drivers `js.scan` and `js.while_loop`: the same frames as a hand-written loop, bit for bit;
sinks closed on return and ended on errors (committed frames readable); the frame computed only
on recording steps; progress; gradients through a DeviceBuffer; clear errors for bad input."""

import contextlib
import io
import os
import pathlib
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

import jaxsinks as js
from jaxsinks._drive import ending

DT = 0.05
STEPS = 60


def step(state):
    """Velocity Verlet in a harmonic well (8 particles in 3-d)."""
    x, v = state
    v = v - 0.5 * DT * x
    x = x + DT * v
    v = v - 0.5 * DT * x
    return x, v


def energy(state):
    x, v = state
    return 0.5 * jnp.sum(x**2 + v**2)


def positions(state):
    return {"x": state[0]}


def scalars(state):
    return {"energy": energy(state), "x0": state[0][0, 0]}


def far(state):
    """while_loop's condition: particle 0 has not yet crossed x = 0.2 (about 30 steps)."""
    return state[0][0, 0] < 0.2


STATE0 = (
    jnp.linspace(-1.0, 1.0, 24, dtype=jnp.float32).reshape(8, 3),
    jnp.zeros((8, 3), jnp.float32),
)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def make_sink(kind, tmp_path, name, frame, every):
    if kind == "zarr":
        return js.ZarrSink.create(tmp_path / f"{name}.zarr", frame, every=every, chunk=4)
    if kind == "csv":
        return js.CsvSink.create(tmp_path / f"{name}.csv", frame, every=every, block=4)
    return js.DeviceBuffer.create(frame, capacity=64, every=every)


def contents(kind, tmp_path, name, sink):
    """What a closed sink holds: frames, steps and times (or the CSV file's bytes)."""
    if kind == "zarr":
        run = js.open(tmp_path / f"{name}.zarr")
        assert run.status == "closed"
        traj = run.to_numpy()
        return traj.frames, traj.steps, traj.times
    if kind == "csv":
        return (tmp_path / f"{name}.csv").read_bytes()
    traj = sink.read()
    return traj.frames, traj.steps, traj.times


def assert_same(a, b):
    if isinstance(a, bytes):
        assert a == b
        return
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y, strict=True)


def hand_scan(sinks, frame, steps=STEPS):
    """The loop a user writes without the driver: step, record the state after step n as step n
    at time n * DT, thread the sinks, close."""

    @jax.jit
    def run(state, sinks):
        def body(carry, i):
            state, sinks = carry
            state = step(state)
            n = i + 1
            time = DT * n.astype(jnp.float32)
            sinks = js.record(sinks, step=n, time=time, frame=lambda: frame(state))
            return (state, sinks), None

        return jax.lax.scan(body, (state, sinks), jnp.arange(steps, dtype=jnp.int32))[0]

    state, sinks = run(STATE0, sinks)
    return state, js.close(sinks)


def hand_while(sinks, frame, max_steps=1000):
    @jax.jit
    def run(state, sinks):
        def going(carry):
            n, state, _ = carry
            return far(state) & (n < max_steps)

        def body(carry):
            n, state, sinks = carry
            state = step(state)
            n = n + 1
            time = DT * n.astype(jnp.float32)
            sinks = js.record(sinks, step=n, time=time, frame=lambda: frame(state))
            return n, state, sinks

        return jax.lax.while_loop(going, body, (jnp.int32(0), state, sinks))

    n, state, sinks = run(STATE0, sinks)
    return state, js.close(sinks), int(n)


@pytest.mark.parametrize("kind", ["zarr", "csv", "device"])
def test_scan_records_what_the_hand_written_loop_records(kind, tmp_path):
    frame = scalars if kind == "csv" else positions
    example = frame(STATE0)
    mine = make_sink(kind, tmp_path, "driver", example, every=3)
    theirs = make_sink(kind, tmp_path, "hand", example, every=3)

    state, out = js.scan(step, STATE0, mine, steps=STEPS, dt=DT, frame=frame)
    ref_state, ref = hand_scan(theirs, frame)

    assert_same(state, ref_state)
    got, want = contents(kind, tmp_path, "driver", out), contents(kind, tmp_path, "hand", ref)
    assert_same(got, want)
    if kind != "csv":
        assert got[1].tolist() == list(range(3, STEPS + 1, 3))  # step n: the state after n steps


@pytest.mark.parametrize("kind", ["zarr", "csv", "device"])
def test_while_loop_records_what_the_hand_written_loop_records(kind, tmp_path):
    frame = scalars if kind == "csv" else positions
    example = frame(STATE0)
    mine = make_sink(kind, tmp_path, "driver", example, every=2)
    theirs = make_sink(kind, tmp_path, "hand", example, every=2)

    state, out, taken = js.while_loop(far, step, STATE0, mine, max_steps=1000, dt=DT, frame=frame)
    ref_state, ref, ref_taken = hand_while(theirs, frame)

    assert 10 < taken == ref_taken < 1000  # stopped by `far`, not by max_steps
    assert_same(state, ref_state)
    assert_same(contents(kind, tmp_path, "driver", out), contents(kind, tmp_path, "hand", ref))


def test_several_sinks_each_with_its_own_schedule_frame_and_mask(tmp_path):
    # Per-system: each particle once, the first step its x is above 0.5.
    def above(state):
        return state[0][:, 0] > 0.5

    def example():
        return {
            "traj": positions(STATE0),
            "log": scalars(STATE0),
            "rows": {"x": STATE0[0]},
        }

    def sinks(name):
        ex = example()
        return {
            "traj": js.ZarrSink.create(tmp_path / f"{name}.zarr", ex["traj"], every=5, chunk=4),
            "log": js.CsvSink.create(tmp_path / f"{name}.csv", ex["log"], block=8),
            "rows": js.DeviceBuffer.create(ex["rows"], capacity=8, per_system=True, once=True),
        }

    frames = {"traj": positions, "log": scalars, "rows": lambda s: {"x": s[0]}}
    masks = {"traj": None, "log": None, "rows": above}
    _, out = js.scan(step, STATE0, sinks("d"), steps=STEPS, dt=DT, frame=frames, mask=masks)

    @jax.jit
    def hand(state, sinks):
        def body(carry, i):
            state, sinks = carry
            state = step(state)
            n, t = i + 1, DT * (i + 1).astype(jnp.float32)
            sinks = {
                "traj": js.record(sinks["traj"], step=n, time=t, frame=lambda: positions(state)),
                "log": js.record(sinks["log"], step=n, time=t, frame=lambda: scalars(state)),
                "rows": js.record(
                    sinks["rows"], step=n, time=t, frame=lambda: {"x": state[0]}, mask=above(state)
                ),
            }
            return (state, sinks), None

        return jax.lax.scan(body, (state, sinks), jnp.arange(STEPS, dtype=jnp.int32))[0][1]

    ref = js.close(hand(STATE0, sinks("h")))
    assert_same(contents("zarr", tmp_path, "d", None), contents("zarr", tmp_path, "h", None))
    assert_same(contents("csv", tmp_path, "d", None), contents("csv", tmp_path, "h", None))
    rows, ref_rows = out["rows"].read(), ref["rows"].read()
    assert_same(
        (rows.frames, rows.steps, rows.systems), (ref_rows.frames, ref_rows.steps, ref_rows.systems)
    )
    assert 0 < len(rows) <= 8


def test_record_initial_offers_the_initial_state_as_step0_at_t0():
    buf = js.DeviceBuffer.create(positions(STATE0), capacity=32, every=4)
    _, with_initial = js.scan(
        step, STATE0, buf, steps=12, dt=DT, t0=1.0, frame=positions, record_initial=True
    )
    _, without = js.scan(step, STATE0, buf, steps=12, dt=DT, t0=1.0, frame=positions)

    first = with_initial.read()
    assert first.steps.tolist() == [0, 4, 8, 12]
    np.testing.assert_allclose(first.times, [1.0, 1.2, 1.4, 1.6], rtol=1e-6)
    np.testing.assert_array_equal(first.frames["x"][0], STATE0[0])
    assert without.read().steps.tolist() == [4, 8, 12]
    assert_same(without.read().frames, jax.tree.map(lambda a: a[1:], first.frames))

    # A time schedule with the time taken from the state, and a continued run (step0).
    buf = js.DeviceBuffer.create(positions(STATE0), capacity=8, every=js.Interval(0.1))
    _, out = js.scan(
        lambda s: (step(s[0]), s[1] + DT),
        (STATE0, jnp.float32(0.0)),
        buf,
        steps=6,
        time=lambda s: s[1],
        frame=lambda s: positions(s[0]),
        step0=100,
        record_initial=True,
    )
    assert out.read().steps.tolist() == [100, 102, 104, 106]
    # Zero steps: only the initial state.
    _, only = js.scan(step, STATE0, buf, steps=0, frame=positions, record_initial=True, dt=DT)
    assert only.read().steps.tolist() == [0]


def test_the_frame_is_computed_only_on_recording_steps():
    calls = []

    def costly(state):
        jax.debug.callback(lambda: calls.append(1))  # runs once per evaluation of the frame
        return positions(state)

    buf = js.DeviceBuffer.create(positions(STATE0), capacity=16, every=10)
    _, out = js.scan(step, STATE0, buf, steps=STEPS, frame=costly)
    assert len(out.read()) == STEPS // 10
    assert len(calls) == STEPS // 10  # not STEPS


def test_a_second_call_with_the_same_functions_does_not_retrace():
    traces = []

    def counted(state):
        traces.append(1)
        return step(state)

    buf = js.DeviceBuffer.create(positions(STATE0), capacity=16, every=10)
    js.scan(counted, STATE0, buf, steps=STEPS, frame=positions, dt=DT)
    n = len(traces)
    _, out = js.scan(counted, STATE0, buf, steps=STEPS, frame=positions, dt=2 * DT, t0=1.0)
    assert len(traces) == n  # dt and t0 are arguments of the compiled program
    np.testing.assert_allclose(out.read().times[0], 1.0 + 10 * 2 * DT, rtol=1e-6)


def failing_step(at, error):
    """`step`, raising `error` from a host callback when the state has taken `at` steps."""

    def check(n):
        if int(n) == at:
            raise error
        return np.int32(0)

    def stepped(state):
        (x, v), n = state
        ok = io_callback(check, jax.ShapeDtypeStruct((), jnp.int32), n)
        return step((x, v)), n + 1 + ok

    return stepped


@pytest.mark.parametrize(
    "error, raised",
    [
        (RuntimeError("the force field failed"), jax.errors.JaxRuntimeError),
        (KeyboardInterrupt(), KeyboardInterrupt),
    ],
    ids=["error", "ctrl-c"],
)
def test_an_error_in_the_loop_ends_the_sinks_with_their_committed_frames(error, raised, tmp_path):
    traj = js.ZarrSink.create(tmp_path / "t.zarr", positions(STATE0), chunk=4)
    log = js.CsvSink.create(tmp_path / "log.csv", scalars(STATE0), block=4)
    bar = js.Progress(STEPS, file=Terminal())
    with pytest.raises(raised) as info:
        js.scan(
            failing_step(25, error),
            (STATE0, jnp.int32(0)),
            {"traj": traj, "log": log},
            steps=STEPS,
            frame={"traj": lambda s: positions(s[0]), "log": lambda s: scalars(s[0])},
            progress=bar,
        )
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "t.zarr" in notes and "log.csv" in notes and "committed" in notes

    run = js.open(tmp_path / "t.zarr")
    assert run.status == "interrupted"  # not "open": its writer was ended
    assert len(run) == 24  # the whole blocks flushed before the failing step 26
    np.testing.assert_array_equal(run.steps, np.arange(1, len(run) + 1))
    lines = (tmp_path / "log.csv").read_text().splitlines()
    assert len(lines) == 1 + 24  # the header and 6 blocks of 4 rows
    if raised is KeyboardInterrupt:
        assert bar.reason == "interrupted"
    else:
        assert bar.reason == "stopped by JaxRuntimeError"
    # The old sink values are refused clearly, not silently recorded into an ended run.
    with pytest.raises(js.StaleSinkError, match="ended by jaxsinks.scan"):
        js.close(traj)
    # The CSV log's file is closed (no descriptor of it left open in this process).
    assert not [fd for fd in open_files() if fd == str((tmp_path / "log.csv").resolve())]


def open_files() -> list[str]:
    fds = pathlib.Path("/proc/self/fd")
    return [os.path.realpath(fds / name) for name in os.listdir(fds)]


@pytest.mark.parametrize("error", [RuntimeError("the force field failed"), KeyboardInterrupt()])
def test_an_error_in_the_loop_marks_a_campaign_run_failed(error, tmp_path):
    campaign = js.Campaign.create(tmp_path / "c")
    traj = campaign.create_run("r1", positions(STATE0), chunk=4)
    with pytest.raises((KeyboardInterrupt, jax.errors.JaxRuntimeError)):
        js.scan(
            failing_step(25, error),
            (STATE0, jnp.int32(0)),
            traj,
            steps=STEPS,
            frame=lambda s: positions(s[0]),
        )
    entry = js.Campaign.open(tmp_path / "c").entry("r1")
    assert entry.status == "failed" and entry.committed == 24
    if isinstance(error, KeyboardInterrupt):  # it read "KeyboardInterrupt: jaxsinks.scan: Keyb..."
        assert entry.error == "KeyboardInterrupt: jaxsinks.scan's loop was interrupted (Ctrl-C)"
    else:
        assert (
            entry.error.startswith("JaxRuntimeError: ") and "the force field failed" in entry.error
        )


def test_an_error_while_tracing_leaves_the_sinks_untouched(tmp_path):
    traj = js.ZarrSink.create(tmp_path / "t.zarr", positions(STATE0), chunk=4)
    with pytest.raises(js.FrameError):
        js.scan(step, STATE0, traj, steps=8, frame=lambda s: {"x": s[0][0]})  # wrong shape
    assert js.open(tmp_path / "t.zarr").status == "open"
    _, traj = js.scan(step, STATE0, traj, steps=8, frame=positions)  # fixed: same sink
    assert len(js.open(tmp_path / "t.zarr")) == 8


def test_a_ctrl_c_while_tracing_leaves_the_sinks_untouched(tmp_path):
    campaign = js.Campaign.create(tmp_path / "c")
    traj = campaign.create_run("r", positions(STATE0), chunk=4)

    def interrupted(state):
        raise KeyboardInterrupt  # a Ctrl-C landing while the loop is traced

    with pytest.raises(KeyboardInterrupt) as info:
        js.scan(step, STATE0, traj, steps=8, frame=interrupted)
    assert not getattr(info.value, "__notes__", [])
    assert js.open(tmp_path / "c" / "runs" / "r").status == "open"
    assert js.Campaign.open(tmp_path / "c").entry("r").status == "running"
    js.scan(step, STATE0, traj, steps=8, frame=positions)  # again: the same sink
    assert len(js.open(tmp_path / "c" / "runs" / "r")) == 8
    assert js.Campaign.open(tmp_path / "c").entry("r").status == "closed"


def test_a_loop_compiled_before_is_not_lowered_again(monkeypatch):
    """The driver compiles a loop before running it (so that a trace error leaves the sinks
    untouched); a call whose signature it compiled before skips that (about 1 ms per call)."""
    lowered = []
    lower = jax.stages.Traced.lower
    monkeypatch.setattr(
        jax.stages.Traced, "lower", lambda *a, **k: lowered.append(1) or lower(*a, **k)
    )

    def moved(state):  # a step function of this test alone: its loop is new to the driver
        return step(state)

    def drive(state):
        buf = js.DeviceBuffer.create(positions(state), capacity=4, every=4)
        return js.scan(moved, state, buf, steps=8, frame=positions)[1].read().steps.tolist()

    assert drive(STATE0) == drive(STATE0) == [4, 8]
    assert len(lowered) == 1
    assert drive(jax.tree.map(lambda x: jnp.concatenate([x, x]), STATE0)) == [4, 8]
    assert len(lowered) == 2  # another state shape: another program


@pytest.mark.parametrize("host_call", [None, "io_callback", "pure_callback", "progress", "zarr"])
def test_the_ctrl_c_guard_is_around_every_run_whose_program_calls_the_host(
    host_call, monkeypatch, tmp_path
):
    """A Ctrl-C ends a loop at its next host call (`interrupt_aborts`); the driver skips that
    guard only for a program without host calls (a DeviceBuffer, no bar, no callback), also when
    the program was compiled before (its signature is cached with whether it calls the host)."""
    guarded = []
    real = ending.interrupt_aborts

    @contextlib.contextmanager
    def counted():
        with real():
            guarded.append(1)
            yield

    monkeypatch.setattr(ending, "interrupt_aborts", counted)

    def noted(x):
        return np.float32(0)

    def own(state):  # a step function of this test alone: its loops are new to the driver
        (x,) = state
        if host_call == "io_callback":
            x = x + io_callback(noted, jax.ShapeDtypeStruct((), jnp.float32), x)
        if host_call == "pure_callback":  # no effect, but it runs Python too
            x = x + jax.pure_callback(noted, jax.ShapeDtypeStruct((), jnp.float32), x)
        return (x + 1.0,)

    def frame(state):
        return {"x": state[0]}

    for call in range(2):  # compiled, then cached
        if host_call == "zarr":
            sink = js.ZarrSink.create(tmp_path / f"{call}.zarr", {"x": jnp.float32(0)}, chunk=4)
        else:
            sink = js.DeviceBuffer.create({"x": jnp.float32(0)}, capacity=8)
        bar = js.Progress(8, file=Terminal()) if host_call == "progress" else None
        js.scan(own, (jnp.float32(0),), sink, steps=8, frame=frame, progress=bar)
    assert len(guarded) == (0 if host_call is None else 2)


def test_while_loop_counts_the_steps_taken_from_step0_on_the_host_and_inside_jit():
    buf = js.DeviceBuffer.create(positions(STATE0), capacity=64, every=5)
    _, _, from_zero = js.while_loop(far, step, STATE0, buf, max_steps=1000, frame=positions)
    _, out, taken = js.while_loop(far, step, STATE0, buf, max_steps=1000, step0=10, frame=positions)
    assert type(taken) is int and 10 < taken == from_zero < 1000
    assert out.read().steps.tolist()[-1] == 10 + taken // 5 * 5
    _, _, bounded = js.while_loop(far, step, STATE0, buf, max_steps=7, step0=10, frame=positions)
    assert bounded == 7

    @jax.jit
    def traced(state):
        return js.while_loop(far, step, state, buf, max_steps=1000, step0=10, frame=positions)[2]

    steps = traced(STATE0)
    assert isinstance(steps, jax.Array) and int(steps) == taken


@pytest.mark.parametrize(
    "steps, step0", [(8, 2**31 - 4), (2**31, 0)], ids=["wraps", "beyond-int32"]
)
@pytest.mark.parametrize("loop", ["scan", "while"])
def test_steps_beyond_int32_are_refused(loop, steps, step0):
    buf = js.DeviceBuffer.create(positions(STATE0), capacity=10)
    name = "steps" if loop == "scan" else "max_steps"
    match = rf"`step0 \+ {name}` .* fit int32, at most 2147483647; got step0={step0} and {name}="
    with pytest.raises(js.ConfigError, match=match):
        if loop == "scan":
            js.scan(step, STATE0, buf, steps=steps, step0=step0, frame=positions)
        else:
            js.while_loop(far, step, STATE0, buf, max_steps=steps, step0=step0, frame=positions)


def test_while_loop_ends_the_bar_full_with_the_reason():
    out = Terminal()
    bar = js.Progress(1000, file=out)
    buf = js.DeviceBuffer.create(positions(STATE0), capacity=64, every=5)
    _, _, taken = js.while_loop(
        far,
        step,
        STATE0,
        buf,
        max_steps=1000,
        frame=positions,
        progress=bar,
        stop_reason="converged",
    )
    assert 10 < taken < 1000
    assert bar.reason == f"converged at step {taken}"
    assert bar.position == bar.total == taken and not bar.enabled
    assert f"{taken}/{taken}" in out.getvalue() and f"converged at step {taken}" in out.getvalue()

    bar = js.Progress(10, file=Terminal())
    _, _, taken = js.while_loop(far, step, STATE0, buf, max_steps=10, frame=positions, progress=bar)
    assert taken == 10 and bar.reason == "reached max_steps=10"

    bar = js.Progress(STEPS, file=Terminal())
    js.scan(step, STATE0, buf, steps=STEPS, frame=positions, progress=bar)
    assert bar.reason == f"done: {STEPS} steps" and bar.position == STEPS


def test_gradients_flow_through_a_device_buffer_recorded_by_the_driver():
    buf = js.DeviceBuffer.create({"e": jnp.float32(0)}, capacity=20, every=3)

    def spring(k):
        def kicked(state):
            x, v = state
            return x + DT * v, v - DT * k * x

        return kicked

    def loss(k):
        _, out = js.scan(spring(k), STATE0, buf, steps=STEPS, frame=lambda s: {"e": energy(s)})
        return jnp.sum(jnp.where(out.valid, out.frames["e"], 0.0))

    def hand_loss(k):
        def body(carry, i):
            state, sink = carry
            state = spring(k)(state)
            sink = js.record(sink, step=i + 1, frame=lambda: {"e": energy(state)})
            return (state, sink), None

        _, out = jax.lax.scan(body, (STATE0, buf), jnp.arange(STEPS, dtype=jnp.int32))[0]
        return jnp.sum(jnp.where(out.valid, out.frames["e"], 0.0))

    k = jnp.float32(1.3)
    value, grad = jax.value_and_grad(loss)(k)
    ref_value, ref_grad = jax.value_and_grad(hand_loss)(k)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5)
    assert float(grad) != 0.0


def test_streaming_sinks_are_refused_inside_a_transformation(tmp_path):
    traj = js.ZarrSink.create(tmp_path / "t.zarr", positions(STATE0), chunk=4)
    with pytest.raises(js.TransformError, match="cannot close the streaming sinks"):
        jax.jit(lambda s: js.scan(step, s, traj, steps=8, frame=positions)[0])(STATE0)
    js.close(traj)


def _buf(every=1):
    return js.DeviceBuffer.create(positions(STATE0), capacity=8, every=every)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: js.scan(3, STATE0, _buf(), steps=2), "`step` to be a function"),
        (lambda: js.scan(step, STATE0, _buf(), steps=-1), "`steps` to be an int >= 0"),
        (lambda: js.scan(step, STATE0, _buf(), steps=2.0), "`steps` to be an int >= 0"),
        (lambda: js.scan(step, STATE0, _buf(), steps=True), "`steps` to be an int >= 0"),
        (lambda: js.scan(step, STATE0, [_buf(), STATE0[0]], steps=2), "also holds \\['ArrayImpl"),
        (lambda: js.scan(step, STATE0, {}, steps=2), "was given no sinks"),
        (
            lambda: js.scan(step, STATE0, (_buf(), _buf()), steps=2, frame=(positions,)),
            "shaped like `sinks`",
        ),
        (lambda: js.scan(step, STATE0, _buf(), steps=2, frame=[1]), "shaped like `sinks`"),
        (
            lambda: js.scan(step, STATE0, _buf(), steps=2, mask=lambda s: s),
            "none of the sinks is per-system",
        ),
        (
            lambda: js.scan(step, STATE0, _buf(), steps=2, dt=0.1, time=lambda s: 0.0),
            "both `dt` and `time`",
        ),
        (lambda: js.scan(step, STATE0, _buf(js.Interval(0.1)), steps=2), "neither `dt` nor `time`"),
        (lambda: js.scan(step, STATE0, _buf(), steps=2, dt="0.1"), "`dt` to be a real number"),
        (lambda: js.scan(step, STATE0, _buf(), steps=2, dt=float("nan")), "`dt` to be finite"),
        (lambda: js.scan(step, STATE0, _buf(), steps=2, step0=-1), "`step0` to be an int >= 0"),
        (lambda: js.scan(step, STATE0, _buf(), steps=2, progress="yes"), "`progress` to be True"),
        (
            lambda: js.scan(step, STATE0, _buf(), steps=2, record_initial=1),
            "`record_initial` to be a bool",
        ),
        (lambda: js.scan(lambda s: s[0], STATE0, _buf(), steps=2), "`step` to return a state like"),
        (
            lambda: js.scan(lambda s: (s[0][0], s[1]), STATE0, _buf(), steps=2),
            "goes in as float32\\[8, 3\\]",
        ),
        (lambda: js.while_loop(None, step, STATE0, _buf()), "`cond` to be a function"),
        (
            lambda: js.while_loop(far, step, STATE0, _buf(), max_steps=-5),
            "`max_steps` to be an int >= 0 or None",
        ),
        (
            lambda: js.while_loop(lambda s: s[0] > 0, step, STATE0, _buf(), max_steps=5),
            "`cond` to return a scalar bool",
        ),
    ],
)
def test_bad_input_is_a_clear_error(call, match):
    with pytest.raises(js.JaxsinksError, match=match):
        call()


def test_a_ctrl_c_ends_a_loop_without_flushes_at_its_next_progress_tick():
    # Only a DeviceBuffer (no flush): the progress bar's host callback sees the Ctrl-C (sent from
    # a host callback of the step, as a signal arriving while XLA runs the loop would be).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def ctrl_c_at_50(n):
        if int(n) == 50:
            signal.raise_signal(signal.SIGINT)
        return np.int32(0)

    def stepped(state):
        x, n = state
        n = n + 1 + io_callback(ctrl_c_at_50, jax.ShapeDtypeStruct((), jnp.int32), n)
        return x + 1.0, n

    bar = js.Progress(10**5, file=Terminal())
    buf = js.DeviceBuffer.create({"x": jnp.float32(0)}, capacity=8)
    try:
        with pytest.raises(KeyboardInterrupt):
            js.scan(
                stepped, (jnp.float32(0), jnp.int32(0)), buf, steps=10**5,
                frame=lambda s: {"x": s[0]}, progress=bar,
            )  # fmt: skip
            time.sleep(5)  # (the Ctrl-C is raised before the loop would return)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert bar.reason == "interrupted"
    assert 50 <= bar.position <= 50 + 2 * 10**3  # at the tick after step 50, not at 10**5


def store_bytes(path) -> dict[str, bytes]:
    """Every file of a store (or the file itself), by relative path: to compare byte for byte."""
    path = pathlib.Path(path)
    if path.is_file():
        return {"": path.read_bytes()}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


LONG = 10_000  # steps a refused call would otherwise take (and flush, refused, 2500 times)


def counting_step(calls):
    """`step` that counts, on the host, the steps it takes."""

    def count(n):
        calls.append(int(n))
        return np.int32(0)

    def stepped(state):
        x, n = state
        return x + 1.0, n + 1 + io_callback(count, jax.ShapeDtypeStruct((), jnp.int32), n)

    return stepped


def drive(driver, stepped, state, sinks, steps, **kw):
    """`js.scan` or `js.while_loop` (always true) for `steps` steps, framing the state's `x`."""
    frame = kw.pop("frame", lambda s: {"x": s[0]})
    if driver == "scan":
        return js.scan(stepped, state, sinks, steps=steps, frame=frame, **kw)
    return js.while_loop(lambda s: True, stepped, state, sinks, max_steps=steps, frame=frame, **kw)


@pytest.mark.parametrize("driver", ["scan", "while_loop"])
@pytest.mark.parametrize("kind", ["zarr", "csv"])
def test_a_sink_whose_writer_ended_is_refused_before_the_loop_runs(driver, kind, tmp_path):
    # The value from before a driver call closed the sink, passed again: every flush would be
    # refused, so the driver raises before it compiles or runs anything, naming itself, the sink
    # and its store, and the remedy; the run's files stay as they were, byte for byte.
    name = tmp_path / ("t.zarr" if kind == "zarr" else "t.csv")
    example = {"x": jnp.zeros(3, jnp.float32)}
    if kind == "zarr":
        sink = js.ZarrSink.create(name, example, chunk=4)
    else:
        sink = js.CsvSink.create(name, example, block=4)
    state0 = (jnp.zeros(3, jnp.float32), jnp.int32(0))
    calls: list[int] = []
    state, closed = drive(driver, counting_step(calls), state0, {"traj": sink}, 10)[:2]
    assert len(calls) == 10
    on_disk = store_bytes(name)
    owner = f"jaxsinks.{driver}"
    for dead in ({"traj": sink}, closed):  # the value that was closed, and the closed value
        calls.clear()
        with pytest.raises(js.StaleSinkError) as info:
            drive(driver, counting_step(calls), state, dead, LONG, step0=10)
        message = str(info.value)
        assert f"`{owner}` was given, as `sinks['traj']`" in message
        assert f"its run {name} was already closed" in message
        assert "Nothing was run or written" in message and "mode='a'" in message
        assert calls == []  # the step function never ran
        assert store_bytes(name) == on_disk
    # The remedy works: the sink created again with mode='a' continues the run.
    if kind == "zarr":
        again = js.ZarrSink.create(name, example, chunk=4, mode="a")
    else:
        again = js.CsvSink.create(name, example, block=4, mode="a")
    drive(driver, counting_step(calls), state, again, 6, step0=10)
    if kind == "zarr":
        assert js.open(name).steps.tolist() == list(range(1, 17))
    else:
        assert len(name.read_text().splitlines()) == 1 + 16


@pytest.mark.parametrize("driver", ["scan", "while_loop"])
def test_a_sink_ended_by_a_failed_driver_call_is_refused_before_the_loop_runs(driver, tmp_path):
    traj = js.ZarrSink.create(tmp_path / "t.zarr", positions(STATE0), chunk=4)
    with pytest.raises(jax.errors.JaxRuntimeError):
        js.scan(
            failing_step(25, RuntimeError("the force field failed")),
            (STATE0, jnp.int32(0)),
            traj,
            steps=STEPS,
            frame=lambda s: positions(s[0]),
        )
    on_disk = store_bytes(tmp_path / "t.zarr")
    # `traj` flushed before the failure: the run was ended, not closed from it.
    calls: list[int] = []
    with pytest.raises(js.StaleSinkError, match="was ended by jaxsinks.scan when its loop raised"):
        drive(driver, counting_step(calls), (STATE0[0], jnp.int32(0)), traj, LONG)
    assert calls == [] and store_bytes(tmp_path / "t.zarr") == on_disk


@pytest.mark.parametrize("driver", ["scan", "while_loop"])
def test_an_older_value_of_a_live_sink_is_refused_before_the_loop_runs(driver, tmp_path):
    # A hand-written jitted loop flushed blocks from `sink`; passing `sink` itself (not the value
    # it returned) to a driver would have every flush refused.
    store = tmp_path / "t.zarr"
    sink = js.ZarrSink.create(store, {"x": jnp.zeros(3, jnp.float32)}, chunk=4)

    @jax.jit
    def ten(sink):
        def body(sink, n):
            return js.record(sink, step=n, frame={"x": jnp.full(3, n, jnp.float32)}), None

        return jax.lax.scan(body, sink, jnp.arange(1, 11, dtype=jnp.int32))[0]

    newest = jax.block_until_ready(ten(sink))  # 8 frames flushed, 2 staged
    calls: list[int] = []
    state = (jnp.zeros(3, jnp.float32), jnp.int32(0))
    with pytest.raises(js.StaleSinkError) as info:
        drive(driver, counting_step(calls), state, [newest, sink], LONG, step0=10)
    message = str(info.value)
    assert f"`jaxsinks.{driver}` was given, as `sinks[1]`, an older value of a ZarrSink" in message
    assert "start at frame 0" in message and "has 8 frames flushed" in message
    assert "Pass the sinks the previous call returned" in message
    assert calls == []
    # The run stays open for the newest value, which the driver continues.
    drive(driver, counting_step(calls), state, newest, 6, step0=10)
    assert js.open(store).steps.tolist() == list(range(1, 17))
