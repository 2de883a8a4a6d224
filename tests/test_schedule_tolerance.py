"""Time schedules allow for rounding: a time accumulated with ``t += dt`` records at the intended
steps (`Interval`, `Times`), in float32 and in float64, and never records a requested time twice.

The float64 cases are marked `x64`: the x32 run deselects them and runs them in a subprocess with
``JAXSINKS_TEST_X64=1`` (`test_the_x64_cases_pass_under_x64`), as tests/test_x64.py does.
"""

import os
import pathlib
import subprocess
import sys
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import X64
from hypothesis import given
from hypothesis import strategies as st

import jaxsinks as js

DTYPES = [
    pytest.param(jnp.float32, id="float32"),
    pytest.param(jnp.float64, id="float64", marks=pytest.mark.x64),
]


def accumulated(schedule, dt, n, dtype):
    """Run `schedule` over steps 0..n with the time accumulated as ``t += dt`` in `dtype`, inside
    a scan; the steps where it fires and their times."""

    def body(carry, step):
        state, t = carry
        fire, state = schedule(state, step, t)
        return (state, t + jnp.asarray(dt, dtype)), (fire, t)

    carry = (schedule.init(), jnp.zeros((), dtype))
    steps = jnp.arange(n + 1, dtype=jnp.int32)
    _, (fire, t) = jax.jit(lambda: jax.lax.scan(body, carry, steps))()
    fired = np.flatnonzero(np.asarray(fire))
    return fired.tolist(), np.asarray(t)[fired]


def test_float32_accumulation_drifts_below_the_requested_times():
    """Why the tolerance exists: ten float32 steps of 0.01 stop short of 0.1."""
    t = np.float32(0)
    for _ in range(10):
        t = np.float32(t + np.float32(0.01))
    assert t < np.float32(0.1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dt", [0.01, 0.001])
def test_interval_records_every_requested_time_at_the_intended_step(dtype, dt):
    n = round(5 / dt)  # t in [0, 5]
    per = round(0.1 / dt)
    steps, times = accumulated(js.Interval(0.1), dt, n, dtype)
    assert len(steps) == 51
    assert steps == list(range(0, n + 1, per))
    np.testing.assert_allclose(times, np.arange(51) * 0.1, atol=dt / 2)


@given(
    dt_thousandths=st.integers(1, 50),
    stride=st.integers(1, 20),
    n=st.integers(1, 2000),
)
def test_float32_accumulation_never_shifts_an_interval_by_a_step(dt_thousandths, stride, n):
    """Up to ~2000 steps the float32 drift stays under half a step, so every requested time
    start + k * stride * dt is recorded at step k * stride exactly: not late, not early."""
    dt = dt_thousandths / 1000
    steps, _ = accumulated(js.Interval(stride * dt), dt, n, jnp.float32)
    assert steps == list(range(0, n + 1, stride))


@pytest.mark.parametrize("dtype", DTYPES)
def test_times_hit_each_requested_time_once_at_the_intended_step(dtype):
    requested = [0.1, 0.3, 0.7, 1.2, 2.5, 3.33, 5.0]
    steps, times = accumulated(js.Times(requested), 0.01, 500, dtype)
    assert steps == [10, 30, 70, 120, 250, 333, 500]
    np.testing.assert_allclose(times, requested, atol=0.005)


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_requested_time_fires_twice_when_steps_straddle_it(dtype):
    """Steps of dt/2 put two steps within rounding of every requested time: one records."""
    steps, _ = accumulated(js.Interval(0.1), 0.05, 100, dtype)
    assert steps == list(range(0, 101, 2))
    steps, _ = accumulated(js.Times([0.1, 0.2, 0.25, 0.3]), 0.05, 10, dtype)
    assert steps == [2, 4, 5, 6]


def test_tol_zero_compares_exactly_and_so_records_late():
    """``tol=0`` is the exact comparison: the float32 drift makes it record one step late."""
    steps, _ = accumulated(js.Interval(0.1, tol=0.0), 0.001, 5000, jnp.float32)
    assert steps[:4] == [0, 100, 200, 301]
    assert len(steps) == 50


def test_a_fixed_tolerance_records_early_by_at_most_tol():
    steps, times = accumulated(js.Interval(1.0, tol=0.25), 0.1, 30, jnp.float32)
    assert steps == [0, 8, 18, 28]  # 0.8 >= 1 - 0.25, then every 10 steps after
    assert np.all(times >= np.arange(4) - 0.25)


def test_exact_times_with_fine_steps_record_no_step_early():
    """The default tolerance is at most half a step: exact times fire at the requested step."""
    times = np.arange(20001, dtype=np.float32) * np.float32(1 / 1024)  # exact in float32
    assert fired_steps(js.Interval(2.0), times) == list(range(0, 20001, 2048))


#: Step sizes and intervals (as exact fractions) the documented promise is tried on.
STEPS = [Fraction(s) for s in ("0.1", "0.101", "0.01", "0.05", "0.037", "0.0123", "0.7", "1.1")]
STEPS += [Fraction(1, 3), Fraction(2, 7)]


def intervals(dt):
    """A multiple of dt (the requested times are exact step times), 1.0, 0.25, and 22/3 dt."""
    return [p for p in (10 * dt, Fraction(1), Fraction(1, 4), 22 * dt / 3) if p >= 2 * dt]


def documented_tol(target, h, dtype):
    """The default tolerance as docs/concepts/schedules.md states it."""
    eps = float(np.finfo(dtype).eps)
    return min(h / 2, eps * target**2 / (4 * h))


def check_promise(dt, period, n, dtype, *, late_until):
    """Run Interval(period) over ``t += dt`` (steps 0..n, in `dtype`) and check the documented
    promise against exact arithmetic: every requested time is recorded once, never late up to
    step `late_until`, and early only when the recorded step's exact time is within twice the
    documented tolerance below it (the tolerance, plus the drift, which is at most as much).
    Returns the number of early records."""
    steps, _ = accumulated(js.Interval(float(period)), float(dt), n, dtype)
    intended = [-((-k * period) // dt) for k in range(len(steps) + 1)]  # first i: i dt >= k p
    intended = [int(i) for i in intended if i <= n - 2]
    early = 0
    for k, (got, want) in enumerate(zip(steps, intended)):
        where = f"dt={dt}, Interval({float(period)}), requested time {k} * {float(period)}"
        assert got <= want or want > late_until, f"{where}: recorded at step {got}, not {want}"
        if got < want:
            gap = float(k * period - got * dt)  # how far the recorded step's exact time is below
            tol = documented_tol(float(k * period), float(dt), dtype)
            assert gap <= 2 * tol, f"{where}: step {got} is {gap} below it (tol {tol}), not {want}"
            early += 1
    assert len(steps) >= len(intended)
    return early


@pytest.mark.parametrize("dt", STEPS, ids=str)
def test_float32_accumulated_times_keep_the_documented_promise(dt):
    """Up to 3000 steps: never late, early only within the documented tolerance (the old
    ``eps * T**2 / h`` recorded dt=0.101, Interval(1.0) at step 891 for 90.0, 0.009 early)."""
    for period in intervals(dt):
        check_promise(dt, period, 3000, jnp.float32, late_until=3000)


def test_float32_accumulated_times_record_early_as_rarely_as_measured():
    """docs/concepts/schedules.md: none early in the first 500 steps, about 1 in 1000 up to
    step 1000."""
    early = [
        check_promise(dt, p, 500, jnp.float32, late_until=500)
        for dt in STEPS[4:]
        for p in intervals(dt)
    ]
    early += [
        check_promise(dt, p, 1000, jnp.float32, late_until=1000)
        for dt in STEPS[:4]
        for p in intervals(dt)
    ]
    assert sum(early) <= 4, early  # 3 of about 2000 requested times, all past step 500


def test_the_reviewed_early_records_are_at_the_intended_steps():
    """float32 t += 0.101 with Interval(1.0): 90.0, 100.0 and 110.0 were recorded a step early."""
    steps, times = accumulated(js.Interval(1.0), 0.101, 1200, jnp.float32)
    assert {892, 991, 1090} <= set(steps) and not {891, 990, 1089} & set(steps)
    assert np.all(times[[steps.index(s) for s in (892, 991, 1090)]] >= [90, 100, 110])


@pytest.mark.x64
@pytest.mark.parametrize("dt", STEPS, ids=str)
def test_float64_accumulated_times_record_at_the_intended_step(dt):
    for period in intervals(dt):
        early = check_promise(dt, period, 10_000, jnp.float64, late_until=10_000)
        assert early == 0, (dt, period)


@pytest.mark.x64
@pytest.mark.parametrize("start", [0.0, 1e4, 1e6, 5e7])
def test_float64_exact_times_far_from_zero_record_as_with_tol_zero(start):
    """Times ``start + 0.6 + i`` exact in float64: each requested ``start + 10 k`` is recorded
    by the step 0.6 past it. The old tolerance (capped at half a step from T > 4.2e7) took a
    time 0.4 below it."""
    times = start + 0.6 + np.arange(40, dtype=np.float64)
    for tol in (None, 0.0):
        got = fired_steps(js.Interval(10.0, start=start + 10.0, tol=tol), times)
        assert got == [10, 20, 30], (start, tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exact_binary_times_record_as_with_tol_zero_away_from_the_tolerance(dtype):
    """Multiples of 1/64 are exact: a requested time 1/3 of a step past one is recorded at the
    next step (the documented tolerance, 0.03 steps at step 1000, is far below 1/3)."""
    times = np.arange(1201, dtype=np.float64) / 64
    requested = (np.arange(1, 60) * 20 + 1 / 3) / 64  # a third of a step after step 20 k
    assert fired_steps(js.Times(requested), times.astype(dtype)) == list(range(21, 1200, 20))


def fired_steps(schedule, times):
    def body(state, xs):
        step, t = xs
        fire, state = schedule(state, step, t)
        return state, fire

    steps = jnp.arange(len(times), dtype=jnp.int32)
    _, fire = jax.lax.scan(body, schedule.init(), (steps, jnp.asarray(times)))
    return np.flatnonzero(np.asarray(fire)).tolist()


def test_the_tolerance_is_recorded_and_survives_a_sink(tmp_path):
    assert js.Interval(0.1, tol=1e-3).to_json() == {
        "type": "interval",
        "dt": 0.1,
        "start": 0.0,
        "tol": 1e-3,
    }
    assert js.Times([1.0, 2.0], tol=0.5).to_json() == {
        "type": "times",
        "times": [1.0, 2.0],
        "tol": 0.5,
    }
    frame = {"t": jnp.float32(0)}
    sink = js.ZarrSink.create(tmp_path / "run.zarr", frame, every=js.Interval(0.1), chunk=8)

    def body(carry, step):
        sink, t = carry
        sink = js.record(sink, step=step, time=t, frame={"t": t})
        return (sink, t + jnp.float32(0.01)), None

    (sink, _), _ = jax.lax.scan(body, (sink, jnp.float32(0)), jnp.arange(501))
    js.close(sink)
    run = js.open(tmp_path / "run.zarr")
    assert run.steps.tolist() == list(range(0, 501, 10))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: js.Interval(0.1, tol=-1e-3), r"`Interval` needs `tol` to be None .* got -0.001"),
        (lambda: js.Interval(0.1, tol=0.1), r"smaller than the interval dt=0.1; got 0.1"),
        (lambda: js.Interval(0.1, tol=float("nan")), "`tol`"),
        (lambda: js.Times([1.0, 1.5, 3.0], tol=0.5), r"smallest gap between the times, 0.5"),
        (lambda: js.Times([1.0], tol=True), "`Times` needs `tol`"),
    ],
)
def test_bad_tolerances_are_config_errors_naming_tol(make, match):
    with pytest.raises(js.ConfigError, match=match):
        make()


@pytest.mark.skipif(X64, reason="this is the x64 run")
def test_the_x64_cases_pass_under_x64():
    root = pathlib.Path(__file__).resolve().parent.parent
    env = {**os.environ, "JAXSINKS_TEST_X64": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    args = ["-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-m", "x64", __file__]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert "failed" not in summary and " passed" in summary, proc.stdout[-3000:]
