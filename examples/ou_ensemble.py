"""An Ornstein-Uhlenbeck ensemble streamed to Zarr, checked against the analytic moments.

PySDE's use of a recorder: ``R`` replicas of a ``D``-dimensional OU process

    dX = -theta X dt + sigma dW,    X(0) = x0,

integrated with Euler-Maruyama in one jitted `lax.scan`, each replica carrying its own
`jax.random` key in the state. The step function is written for one replica and vmapped over the
ensemble; the whole ensemble goes into *one* `ZarrSink` whose frame has a leading replica axis
(the recommended way to record an ensemble, see docs/design.md). The sink records on a
simulation-time schedule, `jaxsinks.Interval(stride * dt)`: the first step whose time reaches each
multiple of ``stride * dt``. The default `dt` is a power of two, so step times and requested
times are exact in float32 and a frame lands on every `stride`-th step; with another `dt` a
frame may land one step later, and its recorded time is the step's true time either way.

After `jaxsinks.close`, the run is read back with `jaxsinks.open`, the ensemble mean and variance
at every recorded time are compared with

    mean(t) = x0 exp(-theta t),    var(t) = sigma^2 / (2 theta) (1 - exp(-2 theta t)),

and the script exits non-zero if any recorded time disagrees by more than `--tolerance`
standard errors. The trajectory is also saved as ``ou.npz`` (``times``, ``x``), like PySDE's
NumpyStorage.

    python examples/ou_ensemble.py [--replicas 256] [--dims 16] [--steps 1024] [--stride 16]
        [--out example-output/ou_ensemble]
"""

from __future__ import annotations

import argparse
import math
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jaxsinks as js


def em_step(
    x: jax.Array, key: jax.Array, *, theta: float, sigma: float, dt: float
) -> tuple[jax.Array, jax.Array]:
    """One Euler-Maruyama step of one replica: ``(x (D,), key) -> (x, key)``."""
    key, sub = jax.random.split(key)
    dw = math.sqrt(dt) * jax.random.normal(sub, x.shape, x.dtype)
    return x - theta * x * dt + sigma * dw, key


def simulate(
    sink: js.ZarrSink,
    x0: jax.Array,
    keys: jax.Array,
    *,
    steps: int,
    theta: float,
    sigma: float,
    dt: float,
) -> js.ZarrSink:
    """Integrate the ensemble ``x0 (R, D)`` for `steps` steps, recording into `sink`."""
    step = jax.vmap(lambda x, k: em_step(x, k, theta=theta, sigma=sigma, dt=dt))
    sink = js.record(sink, step=0, time=jnp.zeros((), jnp.float32), frame={"x": x0})

    def body(carry, i):
        x, keys, sink = carry
        x, keys = step(x, keys)
        time = i.astype(jnp.float32) * dt
        sink = js.record(sink, step=i, time=time, frame={"x": x})
        return (x, keys, sink), None

    (_, _, sink), _ = jax.lax.scan(body, (x0, keys, sink), jnp.arange(1, steps + 1))
    return sink


def analytic(
    times: np.ndarray, *, x0: float, theta: float, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """The exact OU mean and variance at `times`, started from the point `x0`."""
    mean = x0 * np.exp(-theta * times)
    var = sigma**2 / (2.0 * theta) * (1.0 - np.exp(-2.0 * theta * times))
    return mean, var


def compare(
    times: np.ndarray, x: np.ndarray, *, x0: float, theta: float, sigma: float
) -> dict[str, np.ndarray]:
    """Ensemble mean and variance of ``x (frames, R, D)`` against the analytic values.

    Every replica and dimension is an independent sample, so with ``n = R * D`` samples the
    standard error of the mean is ``sqrt(var / n)`` and that of the variance
    ``var * sqrt(2 / (n - 1))`` (Gaussian samples), both taken at the analytic variance.
    Returns the columns of the table, with ``z`` scores (errors in standard errors).
    """
    samples = x.reshape(x.shape[0], -1).astype(np.float64)
    n = samples.shape[1]
    mean, var = samples.mean(axis=1), samples.var(axis=1, ddof=1)
    exact_mean, exact_var = analytic(times.astype(np.float64), x0=x0, theta=theta, sigma=sigma)
    floor = 1e-6  # at t = 0 the variance is exactly 0; keep the z score finite
    se_mean = np.sqrt(exact_var / n) + floor
    se_var = exact_var * np.sqrt(2.0 / (n - 1)) + floor
    return {
        "t": times,
        "mean": mean,
        "exact_mean": exact_mean,
        "z_mean": (mean - exact_mean) / se_mean,
        "var": var,
        "exact_var": exact_var,
        "z_var": (var - exact_var) / se_var,
    }


def print_table(table: dict[str, np.ndarray], rows: int) -> None:
    """At most `rows` evenly spaced rows of the comparison, and the largest |z| over all of them."""
    print(f"{'t':>8} {'mean':>10} {'exact':>10} {'z':>6}   {'var':>10} {'exact':>10} {'z':>6}")
    frames = len(table["t"])
    for k in np.unique(np.linspace(0, frames - 1, min(rows, frames)).round().astype(int)):
        print(
            f"{table['t'][k]:8.3f} {table['mean'][k]:10.5f} {table['exact_mean'][k]:10.5f} "
            f"{table['z_mean'][k]:6.2f}   {table['var'][k]:10.5f} {table['exact_var'][k]:10.5f} "
            f"{table['z_var'][k]:6.2f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=256, help="R, independent replicas")
    parser.add_argument("--dims", type=int, default=16, help="D, dimensions of each replica")
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--dt", type=float, default=2.0**-7)
    parser.add_argument("--stride", type=int, default=16, help="record every stride * dt of time")
    parser.add_argument("--theta", type=float, default=1.0)
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--x0", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tolerance", type=float, default=5.0, help="allowed |z| (standard errors)"
    )
    parser.add_argument("--rows", type=int, default=9, help="rows of the table to print")
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("example-output/ou_ensemble")
    )
    args = parser.parse_args(argv)
    if args.replicas * args.dims < 2:
        parser.error("--replicas x --dims must be at least 2 to estimate a variance.")

    args.out.mkdir(parents=True, exist_ok=True)
    x0 = jnp.full((args.replicas, args.dims), args.x0, jnp.float32)
    keys = jax.random.split(jax.random.key(args.seed), args.replicas)
    dt_record = args.stride * args.dt
    sink = js.ZarrSink.create(
        args.out / "ou.zarr",
        {"x": x0},
        every=js.Interval(dt_record),
        chunk=32,
        mode="w",
        attrs={"theta": args.theta, "sigma": args.sigma, "dt": args.dt, "x0": args.x0},
    )
    run_sim = jax.jit(simulate, static_argnames=("steps", "theta", "sigma", "dt"))
    sink = run_sim(sink, x0, keys, steps=args.steps, theta=args.theta, sigma=args.sigma, dt=args.dt)
    js.close(sink)

    run = js.open(args.out / "ou.zarr")
    traj = run.to_numpy()
    np.savez_compressed(args.out / "ou.npz", times=traj.times, x=traj.frames["x"])
    print(
        f"recorded {len(run)} frames of {run['x'].shape[1:]} (replicas x dims) every "
        f"{dt_record:g} time units: steps {run.steps[0]}..{run.steps[-1]}, "
        f"t = {run.times[-1]:.4g}"
    )
    print(f"saved {args.out / 'ou.zarr'} and {args.out / 'ou.npz'}")

    table = compare(traj.times, traj.frames["x"], x0=args.x0, theta=args.theta, sigma=args.sigma)
    print_table(table, args.rows)
    worst = float(max(np.abs(table["z_mean"]).max(), np.abs(table["z_var"]).max()))
    print(f"largest |z| over {len(run)} frames: {worst:.2f} (tolerance {args.tolerance:g})")
    if worst > args.tolerance:
        raise SystemExit(
            f"The ensemble disagrees with the analytic OU moments: |z| = {worst:.2f} > "
            f"{args.tolerance:g} standard errors. Check the integrator, or lower --dt."
        )
    print("ensemble mean and variance agree with the analytic OU process")


if __name__ == "__main__":
    main()
