import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxsinks as js


def fired_steps(schedule, times):
    """Run `schedule` over steps 0..n-1 at `times` inside a scan; the steps where it fires."""

    def body(state, xs):
        step, time = xs
        fire, state = schedule(state, step, time)
        return state, fire

    steps = jnp.arange(len(times), dtype=jnp.int32)
    _, fire = jax.jit(lambda: jax.lax.scan(body, schedule.init(), (steps, jnp.asarray(times))))()
    return np.flatnonzero(np.asarray(fire)).tolist()


def reference(times, requested):
    """py-pde's interrupts: the first step reaching each time; one record for several passed."""
    out, i = [], 0
    for step, t in enumerate(times):
        if i < len(requested) and t >= requested[i]:
            out.append(step)
            while i < len(requested) and requested[i] <= t:
                i += 1
    return out


@given(n=st.integers(1, 7), start=st.integers(0, 9), length=st.integers(1, 40))
def test_every_matches_modular_arithmetic(n, start, length):
    expected = [s for s in range(length) if s >= start and (s - start) % n == 0]
    assert fired_steps(js.Every(n, start), np.zeros(length, np.float32)) == expected


# Step times and requested times on a 1/8 grid are exact in float32, so no rounding ties.
eighths = st.integers(0, 400).map(lambda k: k / 8)


@given(
    increments=st.lists(st.integers(1, 12), min_size=1, max_size=60),
    requested=st.lists(eighths, min_size=1, max_size=20, unique=True),
)
def test_times_fire_at_the_first_step_reaching_each_time(increments, requested):
    times = np.cumsum(increments).astype(np.float32) / 8
    requested = sorted(requested)
    assert fired_steps(js.Times(requested), times) == reference(times.tolist(), requested)


@given(
    increments=st.lists(st.integers(1, 12), min_size=1, max_size=60),
    dt_quarters=st.integers(1, 16),
    start=eighths,
)
def test_interval_matches_the_equivalent_list_of_times(increments, dt_quarters, start):
    times = np.cumsum(increments).astype(np.float32) / 8
    dt = dt_quarters / 4
    requested = [start + k * dt for k in range(int(times[-1] / dt) + 2)]
    assert fired_steps(js.Interval(dt, start), times) == reference(times.tolist(), requested)


def test_one_step_past_several_times_records_once_and_skips_them():
    assert fired_steps(js.Times([0.1, 0.2, 0.3, 1.0]), np.float32([0.0, 0.35, 0.5, 1.5])) == [1, 3]


def test_geometric_times_are_geometric():
    sched = js.Times.geometric(0.01, 100.0, 5)
    np.testing.assert_allclose(sched.times, [0.01, 0.1, 1.0, 10.0, 100.0])


def test_when_uses_the_predicate():
    sched = js.When(lambda step, time: (step % 3 == 1) & (time < 2.0))
    times = np.arange(10, dtype=np.float32) * 0.3
    assert fired_steps(sched, times) == [1, 4]


class _Custom(js.Schedule):
    """A user's schedule that returns `fire` and a new state as given."""

    def __init__(self, fire, state=lambda state: state):
        self.fire, self.state = fire, state

    def init(self):
        return {"n": jnp.zeros((), jnp.int32)}

    def __call__(self, state, step, time):
        return self.fire(step), self.state(state)

    def to_json(self):
        return {"type": "custom"}


@pytest.mark.parametrize(
    "schedule, match",
    [
        (js.When(lambda step, time: jnp.zeros(2, bool)), r"scalar bool as `fire`.*bool\[2\]"),
        (_Custom(lambda step: jnp.zeros(3, bool)), r"scalar bool as `fire`.*bool\[3\]"),
        (_Custom(lambda step: step % 3), r"scalar bool as `fire`.*int32\[\].*2 is not 'true'"),
        (
            _Custom(lambda step: step > 1, lambda s: {"n": s["n"].astype(jnp.float32)}),
            r"given \['int32\[\]'\].*returned \['float32\[\]'\].*astype",
        ),
        (
            _Custom(lambda step: step > 1, lambda s: (s["n"],)),
            r"structure, shapes and dtypes of its state.*PyTreeDef\(\{'n': \*\}\)",
        ),
    ],
)
def test_a_schedule_breaking_its_contract_is_a_clear_error_naming_it(schedule, match):
    sink = js.DeviceBuffer.create({"x": jnp.zeros(2)}, capacity=4, every=schedule)

    def run(sink):
        return js.record(sink, step=jnp.int32(2), time=jnp.float32(0.0), frame={"x": jnp.ones(2)})

    with pytest.raises(js.ConfigError, match=match):
        jax.jit(run)(sink)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: js.Every(0), "`Every` needs `n` to be an int >= 1; got 0"),
        (lambda: js.Every(2.5), "`n` to be an int"),
        (lambda: js.Every(2, start=-1), "`start` to be an int >= 0"),
        (lambda: js.Interval(0.0), "`dt` to be a finite number > 0"),
        (lambda: js.Interval(float("nan")), "`dt` to be a finite number > 0"),
        (lambda: js.Times([]), "at least one time"),
        (lambda: js.Times([0.1, 0.1]), r"strictly increasing times; got times\[0\] = 0.1"),
        (lambda: js.Times([0.3, 0.2]), "strictly increasing"),
        (lambda: js.Times([0.1, float("inf")]), "finite"),
        (lambda: js.Times.geometric(1.0, 0.5, 3), "last > first"),
        (lambda: js.When(3), "callable"),
        (lambda: js.When(lambda s, t: s > 0, uses_time="no"), "`uses_time` to be a bool; got 'no'"),
        (lambda: js.Times([[0.1, 0.2], [0.3, 0.4]]), r"1-D array .* shape \[2, 2\]"),
        (lambda: js.Times(["0.1", "0.2"]), r"`times` to be real numbers"),
        (lambda: js.Times("0.1"), r"`times` to be real numbers"),
        (lambda: js.Times([0.1, 1j]), r"`times` to be real numbers"),
    ],
)
def test_bad_schedules_are_value_errors_with_the_argument_named(make, match):
    with pytest.raises(js.ConfigError, match=match) as err:
        make()
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    "times, expected",
    [
        (np.float32(1.0), (1.0,)),
        (2.5, (2.5,)),
        ((t for t in [1.0, 2.0]), (1.0, 2.0)),
        (iter(range(1, 4)), (1.0, 2.0, 3.0)),
        (np.array([0.5, 1.5], np.float32), (0.5, 1.5)),
        (jnp.array([0.25, 0.75], jnp.float32), (0.25, 0.75)),
        ({3.0: "a"}.keys(), (3.0,)),
    ],
    ids=["np-scalar", "float", "generator", "iterator", "numpy", "jax", "keys"],
)
def test_times_takes_any_iterable_or_1d_array_of_numbers_and_one_number(times, expected):
    """A numpy scalar or a generator raised a raw TypeError ("has no len()")."""
    assert js.Times(times).times == expected


def test_schedules_are_hashable_static_metadata():
    assert hash(js.Every(3)) == hash(js.Every(3)) and js.Every(3) != js.Every(4)
    assert js.Times([1.0, 2.0]) == js.Times(np.array([1.0, 2.0]))
    assert js.Interval(0.5).to_json() == {"type": "interval", "dt": 0.5, "start": 0.0}
    assert js.Times([1.0]).to_json() == {"type": "times", "times": [1.0]}


@pytest.mark.parametrize("tol", [None, 0.0])
def test_a_time_just_below_a_requested_one_does_not_consume_it(tol):
    """A step one ulp below T(9) = 9 * 0.1 divided to exactly 9.0, so T(9) was taken as passed
    and the next step, at T(9) itself, was not recorded: a lost frame (29 of 40 random adaptive
    runs lost some)."""
    t9 = np.float32(9) * np.float32(0.1)
    times = np.array([0.0, np.nextafter(t9, np.float32(-np.inf)), t9], np.float32)
    assert np.floor(times[1] / np.float32(0.1)) == 9  # the rounding that lost it
    assert fired_steps(js.Interval(0.1, tol=tol), times) == [0, 1, 2]


def test_an_interval_past_the_times_it_can_count_records_every_step_as_documented():
    """Its index is an int32: 3e9 requested times cannot be counted; past start + 2**30 * dt it
    records at every step (docs/concepts/schedules.md), never skipping one."""
    times = np.array([0.0, 3000.0, 3000.0, 3001.0], np.float32)
    assert fired_steps(js.Interval(1e-6), times) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "schedule, match",
    [
        (js.Times([1.0, 1e39]), r"float32 .*times\[1\] = 1e\+39 is inf"),
        (js.Times([1.0, 1.00000001]), r"times\[0\] = 1.0 and times\[1\] = 1.00000001 are both 1.0"),
        (js.Interval(1e-50), r"start \+ dt=1e-50, are 0.0 and 0.0 \(dt is 0.0\)"),
        (js.Interval(1.0, start=1e8), r"start \+ dt=100000001.0, are 100000000.0 and 100000000.0"),
        (js.Interval(1.0, start=1e39), r"are inf and inf"),
    ],
)
@pytest.mark.parametrize("sink", ["DeviceBuffer", "ZarrSink"])
def test_requested_times_the_time_dtype_cannot_tell_apart_are_refused_at_create(
    schedule, match, sink, tmp_path
):
    """Else Times([1, 1e39]) never records its second time, Interval(1e-50) records every step,
    and two times equal in float32 are recorded once."""
    frame = {"x": jnp.zeros(2, jnp.float32)}
    with pytest.raises(js.ConfigError, match=match + r".*wider `time_dtype`"):
        if sink == "DeviceBuffer":
            js.DeviceBuffer.create(frame, capacity=4, every=schedule)
        else:
            js.ZarrSink.create(tmp_path / "run", frame, every=schedule)
    assert not (tmp_path / "run").exists()


def test_times_a_wider_time_dtype_tells_apart_are_accepted():
    frame = {"x": jnp.zeros(2, jnp.float32)}
    with jax.enable_x64(True):
        sink = js.DeviceBuffer.create(
            frame, capacity=4, every=js.Times([1.0, 1.00000001]), time_dtype=jnp.float64
        )
    assert sink.time_dtype == np.float64
    js.DeviceBuffer.create(frame, capacity=4, every=js.Interval(1e-30))  # representable


class _SinceLast(js.Schedule):
    """Records once at least 0.5 has passed since the last record; its `init` is a Python float
    (weakly typed: float64 under x64), its new state float32, as a loop carry accepts."""

    needs_time = True

    def init(self):
        return {"last": -1.0}

    def __call__(self, state, step, time):
        fire = time - state["last"] >= 0.5
        return fire, {"last": jnp.where(fire, time, state["last"])}

    def to_json(self):
        return {"type": "since-last"}


@pytest.mark.parametrize("x64", [False, True])
def test_a_custom_schedule_with_a_python_number_in_its_state_records(x64):
    with jax.enable_x64(x64):
        sink = js.DeviceBuffer.create(
            {"x": jnp.zeros(2, jnp.float32)}, capacity=8, every=_SinceLast()
        )

        def body(sink, i):
            time = 0.3 * i.astype(jnp.float32)
            return js.record(sink, step=i, time=time, frame={"x": jnp.ones(2, jnp.float32)}), None

        steps = jnp.arange(8, dtype=jnp.int32)
        out = jax.jit(lambda s: jax.lax.scan(body, s, steps)[0])(sink)
        assert out.read().steps.tolist() == [0, 2, 4, 6]


def test_numpy_int_options_are_taken_as_python_ints(tmp_path):
    """One rule for counts read from an array or a config file: numpy ints are ints. `chunk` and
    `chunks_per_shard` refused them, and Every kept them, so a campaign's run config could not
    be written as JSON."""
    every = js.Every(np.int64(3), start=np.int32(1))
    assert (every.n, every.start) == (3, 1) and type(every.n) is type(every.start) is int
    assert js.Every(np.int64(3)) == js.Every(3) and hash(js.Every(np.int64(3))) == hash(js.Every(3))
    sink = js.ZarrSink.create(
        tmp_path / "run.zarr",
        {"x": jnp.zeros(3, jnp.float32)},
        chunk=np.int64(2),
        chunks_per_shard=np.int64(2),
        every=np.int16(2),
    )
    sink = js.record(
        sink, step=jnp.int32(2), time=jnp.float32(0.0), frame={"x": jnp.ones(3, jnp.float32)}
    )
    js.close(sink)
    run = js.open(tmp_path / "run.zarr")
    assert run.steps.tolist() == [2] and run.schedule == {"type": "every", "n": 2, "start": 0}
    config = js.Campaign.create(tmp_path / "c").run_config("r", every=every).to_config()
    assert config["options"]["every"]["n"] == 3
    with pytest.raises(js.ConfigError, match=r"`chunk` to be a positive int.*got np.True_"):
        js.ZarrSink.create(tmp_path / "b.zarr", {"x": jnp.zeros(3)}, chunk=np.bool_(True))
