"""The recipes for other JAX libraries (docs/guides/recipes.md): each example runs as a real
subprocess at a small size, and its recording is checked against the library's own answer.

diffrax, jax-md and MuJoCo MJX are optional (``pip install jaxsinks[recipes,md]``; `make test`
installs them); each test is skipped when its library is absent.
"""

import importlib.util
from types import ModuleType

import jax
import numpy as np
import pytest
from run_helpers import ROOT, run_example

import jaxsinks as js


def load_example(name: str) -> ModuleType:
    """An example script as a module (its functions, without running `main`)."""
    spec = importlib.util.spec_from_file_location(
        name.removesuffix(".py"), ROOT / "examples" / name
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_diffrax_recipe_matches_diffeqsolve(tmp_path):
    diffrax = pytest.importorskip("diffrax")
    systems, t1, saves, dt = 4, 4.0, 17, 2.0**-5
    out = run_example(
        "diffrax_ode.py",
        *("--systems", str(systems), "--t1", str(t1), "--saves", str(saves), "--dt", str(dt)),
        *("--out", str(tmp_path)),
    )
    assert "fixed step: 128 Tsit5 steps of dt = 0.03125, 17 frames of (4, 2)" in out
    ts = np.linspace(0.0, t1, saves).astype(np.float32)
    example = load_example("diffrax_ode.py")
    mu, y0 = example.problem(systems)
    term = diffrax.ODETerm(example.van_der_pol)

    fixed = js.open(tmp_path / "fixed.zarr")
    np.testing.assert_array_equal(fixed.times, ts)
    np.testing.assert_array_equal(fixed.steps, np.arange(0, 129, 8))
    reference = diffrax.diffeqsolve(
        term,
        diffrax.Tsit5(),
        0.0,
        t1,
        dt,
        y0,
        args=mu,
        stepsize_controller=diffrax.ConstantStepSize(),
        saveat=diffrax.SaveAt(ts=ts),
    )
    # diffeqsolve evaluates its dense interpolation at the end of the step: the same value up to
    # float32 rounding.
    np.testing.assert_allclose(fixed["y"][:], reference.ys, rtol=0, atol=1e-6)

    adaptive = js.open(tmp_path / "adaptive.zarr")
    np.testing.assert_array_equal(adaptive.times, ts)
    controller = diffrax.PIDController(rtol=1e-5, atol=1e-7, step_ts=ts)
    reference = diffrax.diffeqsolve(
        term,
        diffrax.Tsit5(),
        0.0,
        t1,
        example.DT0,
        y0,
        args=mu,
        stepsize_controller=controller,
        saveat=diffrax.SaveAt(ts=ts),
    )
    np.testing.assert_allclose(adaptive["y"][:], reference.ys, rtol=0, atol=1e-6)
    accepted = int(reference.stats["num_accepted_steps"])
    rejected = int(reference.stats["num_rejected_steps"])
    assert f"adaptive: {accepted} accepted and {rejected} rejected Tsit5 steps" in out
    assert adaptive.steps[-1] == accepted + rejected  # step numbers count loop iterations
    # The tolerance is tight: the two solutions (the same ODE, other steps) differ far more.
    assert np.abs(adaptive["y"][:] - fixed["y"][:]).max() > 1e-5


def lj_energy(position: np.ndarray, side: float, r_onset: float, r_cutoff: float) -> float:
    """The Lennard-Jones energy (sigma = epsilon = 1) of `position` in a periodic cube of `side`,
    smoothed to zero between `r_onset` and `r_cutoff` as JAX-MD's
    `multiplicative_isotropic_cutoff` does, in float64 over all pairs."""
    x = position.astype(np.float64)
    d = x[:, None, :] - x[None, :, :]
    d -= side * np.round(d / side)  # the nearest periodic image
    i, j = np.triu_indices(len(x), k=1)
    r = np.linalg.norm(d[i, j], axis=-1)
    lj = 4.0 * (r**-12 - r**-6)
    rc, ro = r_cutoff**2, r_onset**2
    smooth = np.where(
        r < r_onset, 1.0, (rc - r**2) ** 2 * (rc + 2 * r**2 - 3 * ro) / (rc - ro) ** 3
    )
    return float(np.sum(np.where(r < r_cutoff, smooth * lj, 0.0)))


@pytest.mark.skipif(
    importlib.util.find_spec("jax_md") is None,
    reason="jax-md is optional (pip install jaxsinks[md]); make test installs it",
)
def test_jax_md_fire_recipe(tmp_path):
    # A subprocess: jax_md builds arrays at import with implicit promotion, which this suite's
    # strict mode rejects.
    out = run_example(
        "jax_md_fire.py",
        *("--cells", "5", "--steps", "200", "--every", "20", "--out", str(tmp_path)),
    )
    assert "125 LJ atoms, density 0.8" in out
    assert "trajectory: 11 frames of (125, 3) positions (steps 0..200); log: 201 rows" in out
    run = js.open(tmp_path / "trajectory.zarr")
    np.testing.assert_array_equal(run.steps, np.arange(0, 201, 20))
    recorded = run["energy"][:]
    assert np.all(np.diff(recorded) < 0), recorded  # FIRE relaxes
    assert recorded[-1] / 125 < -6.0  # from an overlapping lattice (> 0) to a bound solid
    side, onset, cutoff = run.attrs["box"], run.attrs["r_onset"], run.attrs["r_cutoff"]
    by_hand = [lj_energy(x, side, onset, cutoff) for x in run["position"][:]]
    np.testing.assert_allclose(recorded, by_hand, rtol=1e-5)

    log = np.genfromtxt(tmp_path / "fire.csv", delimiter=",", names=True)
    np.testing.assert_array_equal(log["step"], np.arange(201))
    np.testing.assert_allclose(log["energy"][::20], recorded, rtol=1e-7)  # CSV: 9 digits
    assert np.all(log["fmax"] > 0)
    assert np.all((log["dt"] > 0) & (log["dt"] < 0.0401))  # dt_max 0.04 (JAX-MD keeps a float16)


@pytest.mark.skipif(importlib.util.find_spec("jax_md") is None, reason="jax-md is optional")
def test_jax_md_fire_example_relaxes_with_its_defaults(tmp_path):
    """With its defaults the example once diverged to NaN forces and still exited 0 (NaN is
    not > fmax, so it looked relaxed)."""
    out = run_example("jax_md_fire.py", "--out", str(tmp_path))
    assert "216 LJ atoms, density 0.8" in out and "FIRE relaxed after" in out, out
    log = np.genfromtxt(tmp_path / "fire.csv", delimiter=",", names=True)
    assert np.all(np.isfinite(log["energy"])) and np.all(np.isfinite(log["fmax"]))
    assert log["fmax"][-1] <= 1e-3 and np.all(log["fmax"][:-1] > 1e-3)
    assert log["energy"][-1] / 216 < -6.0
    run = js.open(tmp_path / "trajectory.zarr")  # every 50th step of the same run, all finite
    np.testing.assert_array_equal(run.steps, np.arange(0, len(log), 50))
    assert np.all(np.isfinite(run["position"][:])) and np.all(np.isfinite(run["energy"][:]))
    np.testing.assert_allclose(run["energy"][:], log["energy"][::50], rtol=1e-7)


@pytest.mark.skipif(importlib.util.find_spec("jax_md") is None, reason="jax-md is optional")
def test_jax_md_fire_example_exits_with_an_error_when_it_diverges(tmp_path):
    """A jitter of 0.3 sigma starts two atoms 0.024 sigma apart: their force, about 6e22, has a
    float32 square past float32's largest, so the largest force is inf from the first step on
    every machine. (At 0.2 sigma the run diverged after some steps on some machines and relaxed
    on others: FIRE's first steps are chaotic.)"""
    stderr = run_example(
        "jax_md_fire.py",
        *("--jitter", "0.3", "--seed", "0", "--cells", "5", "--steps", "300"),
        *("--out", str(tmp_path)),
        fails=True,
    )
    assert "FIRE diverged: the forces are not finite after" in stderr, stderr
    fmax = np.atleast_1d(np.genfromtxt(tmp_path / "fire.csv", delimiter=",", names=True)["fmax"])
    assert not np.isfinite(fmax[-1])  # the loop stopped at the first non-finite force
    assert np.all(np.isfinite(fmax[:-1])) and len(fmax) < 300


def test_mjx_recipe_records_the_unrecorded_rollout(tmp_path):
    pytest.importorskip("mujoco")
    pytest.importorskip("mujoco.mjx")
    envs, steps, every = 8, 60, 10
    out = run_example(
        "mjx_rollouts.py",
        *(
            "--envs",
            str(envs),
            "--steps",
            str(steps),
            "--every",
            str(every),
            "--out",
            str(tmp_path),
        ),
    )
    assert "8 cart-poles, 60 steps of 0.01 s: 7 frames of (8, 2) qpos (steps 0..60)" in out
    run = js.open(tmp_path / "cartpole.zarr")
    np.testing.assert_array_equal(run.steps, np.arange(0, steps + 1, every))
    np.testing.assert_allclose(run.times, run.steps * 0.01, rtol=1e-5, atol=1e-6)
    assert run["qpos"].shape == run["qvel"].shape == (7, envs, 2)
    assert run["ctrl"].shape == (7, envs, 1)

    example = load_example("mjx_rollouts.py")
    # MJX broadcasts ranks and mixes dtypes implicitly, which this suite's strict mode rejects.
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        model, data, gains = example.make_envs(envs, 0)
        positions = jax.jit(example.rollout, static_argnames="steps")(model, data, gains, steps)
        start = np.asarray(data.qpos)
        sink = js.ZarrSink.create(tmp_path / "again.zarr", example.frame(data), every=every)
        final, _ = example.recorded_rollout(sink, model, data, gains, steps)
    # The stored bytes are the frames given: the last frame is the final state, bit for bit.
    again = js.open(tmp_path / "again.zarr")
    np.testing.assert_array_equal(again["qpos"][-1], np.asarray(final.qpos))
    np.testing.assert_array_equal(again["qpos"][:], run["qpos"][:])  # the script's, same run
    # The same physics as a plain lax.scan without a sink: another compiled program, which XLA
    # may fuse differently (1 ulp seen on jax 0.12), so within float32 rounding.
    unrecorded = np.concatenate([start[None], np.asarray(positions)])
    np.testing.assert_allclose(run["qpos"][:], unrecorded[::every], rtol=1e-6, atol=1e-7)
    assert np.ptp(unrecorded[:, :, 1]) > 0.1  # the poles moved
