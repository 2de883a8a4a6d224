"""Every example runs, at a small size, as a real subprocess."""

import importlib.util
import os

import numpy as np
import pytest
from run_helpers import run_example

import jaxsinks as js


def test_oscillators_example():
    out = run_example("oscillators.py", "--replicas", "8", "--steps", "500")
    assert "trajectory: 50 frames of (8,)" in out
    assert "d(mean recorded energy)/d(damping)" in out


def test_ou_ensemble_example(tmp_path):
    out = run_example(
        "ou_ensemble.py",
        "--replicas",
        "16",
        "--dims",
        "8",
        "--steps",
        "64",
        "--stride",
        "8",
        "--out",
        str(tmp_path),
    )
    assert "recorded 9 frames of (16, 8) (replicas x dims)" in out
    assert "ensemble mean and variance agree with the analytic OU process" in out
    rows = [line.split() for line in out.splitlines()]
    assert ["t", "mean", "exact", "z", "var", "exact", "z"] in rows
    t0 = ["0.000", "2.00000", "2.00000", "0.00", "0.00000", "0.00000", "0.00"]  # all replicas at x0
    assert t0 in rows

    saved = np.load(tmp_path / "ou.npz")
    assert saved["x"].shape == (9, 16, 8)
    np.testing.assert_array_equal(saved["times"], np.arange(9, dtype=np.float32) * 8 * 2.0**-7)
    run = js.open(tmp_path / "ou.zarr")
    np.testing.assert_array_equal(run.steps, np.arange(0, 65, 8))
    np.testing.assert_array_equal(run["x"][:], saved["x"])


def test_ou_ensemble_example_fails_when_the_moments_disagree(tmp_path):
    # Euler-Maruyama at theta * dt = 0.5 decays too fast and overshoots the stationary variance.
    stderr = run_example(
        "ou_ensemble.py",
        *("--replicas", "64", "--dims", "16", "--steps", "16", "--dt", "0.5", "--stride", "1"),
        *("--out", str(tmp_path)),
        fails=True,
    )
    assert "disagrees with the analytic OU moments" in stderr


def test_allen_cahn_example(tmp_path):
    pytest.importorskip("matplotlib")
    image = pytest.importorskip("PIL.Image")
    steps, dt, first, frames = 200, 0.1, 0.05, 12
    out = run_example(
        "allen_cahn.py",
        "--size",
        "32",
        "--steps",
        str(steps),
        "--dt",
        str(dt),
        "--first",
        str(first),
        "--frames",
        str(frames),
        "--out",
        str(tmp_path),
    )
    assert "coarsening: interface length ~ t^" in out

    # Each frame is the first step whose (float32) time reaches a requested time; a step that
    # passes several requested times records once.
    requested = np.geomspace(first, steps * dt, frames).astype(np.float32)
    step_times = np.arange(steps + 1, dtype=np.float32) * np.float32(dt)
    expected = np.unique(np.searchsorted(step_times, requested, side="left"))
    assert expected[0] == 1 and len(expected) < frames  # t = 0.05 and 0.086 both fall in step 1
    run = js.open(tmp_path / "phi.zarr")
    np.testing.assert_array_equal(run.steps, expected)
    np.testing.assert_array_equal(run.times, step_times[expected])
    assert run["phi"].shape == (len(expected), 32, 32)
    assert f"recorded {len(expected)} frames of (32, 32)" in out

    with image.open(tmp_path / "allen_cahn.gif") as gif:
        assert gif.n_frames == len(expected)


@pytest.mark.skipif(
    importlib.util.find_spec("jax_md") is None,
    reason="jax-md is optional (pip install jaxsinks[md]); make test installs it",
)
def test_jax_md_lj_example(tmp_path):
    # The example runs in a subprocess: jax_md builds arrays at import with implicit promotion,
    # which this suite's strict mode rejects.
    out = run_example(
        "jax_md_lj.py", "--cells", "3", "--steps", "100", "--every", "20", "--out", str(tmp_path)
    )
    assert "108 LJ atoms" in out
    run = js.open(tmp_path / "trajectory.zarr")
    assert len(run) == 6
    np.testing.assert_array_equal(run.steps, np.arange(0, 101, 20))
    np.testing.assert_allclose(run.times, run.steps * 0.005, rtol=1e-6)
    assert run["position"].shape == run["velocity"].shape == (6, 108, 3)
    side = run.attrs["box"]
    positions = run["position"][:]
    assert positions.min() >= 0.0 and positions.max() <= side  # wrapped into the periodic box

    log = np.genfromtxt(tmp_path / "energy.csv", delimiter=",", names=True)
    assert len(log) == 101
    np.testing.assert_array_equal(log["step"], np.arange(101))
    np.testing.assert_allclose(log["total"], log["kinetic"] + log["potential"], rtol=1e-5)
    assert abs(log["total"][-1] - log["total"][0]) / 108 < 1e-3  # NVE conserves the energy
    assert "trajectory: 6 frames of (108, 3) positions and velocities (steps 0..100)" in out
    assert "energy log: 101 rows (steps 0..100)" in out


def test_differentiable_relaxation_example(tmp_path):
    out = run_example(
        "differentiable_relaxation.py", "--epochs", "6", "--steps", "150", "--out", str(tmp_path)
    )
    first = out.split("autodiff ")[1].splitlines()[0]
    grad, fd = (float(v) for v in first.split(", finite differences "))
    assert abs(grad - fd) < 2e-2 * abs(fd)
    losses = [
        float(line.split("loss ")[1].split()[0])
        for line in out.splitlines()
        if line.startswith("epoch")
    ]
    assert len(losses) == 6 and losses[-1] < 0.01 * losses[0]
    run = js.open(tmp_path / "relaxations.zarr")
    assert np.bincount(run["epoch"][:]).tolist() == [15] * 6  # every 10th of 150 steps, each epoch


def test_lj_fire_example(tmp_path):
    out = run_example("lj_fire.py", "--sizes", "13,19", "--out", str(tmp_path))
    assert "2/2 systems converged" in out
    rows = [line.split() for line in out.splitlines()[2:]]
    assert sorted(int(r[1]) for r in rows) == [13, 19]
    steps = int(out.split()[0])
    assert len(js.open(tmp_path / "trajectory.zarr")) == (steps + 9) // 10
    run_example("lj_fire.py", "--sizes", "13,19", "--out", str(tmp_path))  # a re-run replaces it


def test_multihost_example(tmp_path):
    out = run_example(
        "multihost.py",
        "--processes",
        "2",
        "--devices",
        "2",
        "--replicas",
        "16",
        "--steps",
        "50",
        "--out",
        str(tmp_path / "run"),
    )
    assert "process 0 of 2: recorded the replicas of its 2 devices" in out
    assert "process 1 of 2: recorded the replicas of its 2 devices" in out
    assert (
        "5 frames of 16 replicas, status closed, written by 2 processes; values match the reference"
        in out
    )


def test_cloud_s3_example():
    out = run_example("cloud_s3.py", "--walkers", "32", "--steps", "64", "--every", "4")
    assert "segment 0 ('w-'): 16 frames committed" in out
    assert "segment 1 ('a'): 32 frames committed" in out
    assert (
        "read back 32 frames of (32,) from s3://jaxsinks-example/walk.zarr: jaxsinks.open and "
        "zarr-python agree" in out
    )
    pid = int(out.rsplit("(pid ", 1)[1].split(")")[0])
    with pytest.raises(ProcessLookupError):  # the example stopped its server
        os.kill(pid, 0)
