"""Allen-Cahn coarsening recorded at geometrically spaced times, then made into a movie.

py-pde's use of a recorder: a 2-D scalar field on a periodic ``N x N`` grid (spacing 1),

    dphi/dt = eps^2 lap(phi) + phi - phi^3,

started from small random noise and integrated with explicit Euler (five-point Laplacian, a time
step half the stability limit ``dt < 2 / (8 eps^2 + 2)``) in one jitted `lax.scan`. The
field relaxes to domains of phi = +1 and -1 that coarsen: the interface length falls like
``t^(-1/2)``. Coarsening is slow, so frames are recorded at geometrically spaced simulation times,
``jaxsinks.Times.geometric(first, t_end, frames)``: each frame is the first step whose time reaches
a requested time (one frame when a step passes several), and it stores that step's own time. For
evenly spaced times use ``jaxsinks.Interval(dt_record)`` instead; nothing else changes.

After `jaxsinks.close` the run is read back with `jaxsinks.open`: the script prints the
coarsening (the interface length and the fraction of the grid with |phi| > 0.9 over time) and
renders the frames into ``allen_cahn.gif`` with `jaxsinks.movie` (needs matplotlib and
pillow: ``pip install jaxsinks[extras]``).

    python examples/allen_cahn.py [--size 128] [--steps 2000] [--frames 40]
        [--out example-output/allen_cahn]
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jaxsinks as js


def laplacian(phi: jax.Array) -> jax.Array:
    """The periodic five-point Laplacian of `phi` on a grid of spacing 1."""
    rolled = [jnp.roll(phi, shift, axis) for axis in (0, 1) for shift in (1, -1)]
    return sum(rolled[1:], rolled[0]) - 4.0 * phi


def rate(phi: jax.Array, eps: float) -> jax.Array:
    """The Allen-Cahn right-hand side ``eps^2 lap(phi) + phi - phi^3``."""
    return eps**2 * laplacian(phi) + phi - phi**3


def stable_dt(eps: float) -> float:
    """Half of explicit Euler's limit `euler_limit`."""
    return 0.5 * euler_limit(eps)


def euler_limit(eps: float) -> float:
    """The largest stable explicit Euler step, ``2 / (8 eps^2 + 2)``: the fastest decay rate is
    ``8 eps^2`` (the grid-scale Laplacian mode) plus 2 (the reaction term at phi = +-1)."""
    return 2.0 / (8.0 * eps**2 + 2.0)


def simulate(
    sink: js.ZarrSink, phi: jax.Array, *, steps: int, dt: float, eps: float
) -> js.ZarrSink:
    """Integrate `phi` for `steps` Euler steps of `dt`, recording it into `sink` on its schedule."""
    # The initial field, at t = 0: an `Interval` schedule records it, `Times.geometric` does not.
    sink = js.record(sink, step=0, time=jnp.zeros((), jnp.float32), frame={"phi": phi})

    def body(carry, i):
        phi, sink = carry
        phi = phi + dt * rate(phi, eps)
        sink = js.record(sink, step=i, time=step_time(i, dt), frame={"phi": phi})
        return (phi, sink), None

    (_, sink), _ = jax.lax.scan(body, (phi, sink), jnp.arange(1, steps + 1))
    return sink


def step_time(i: jax.Array, dt: float) -> jax.Array:
    """The simulation time of step `i` (float32, as the sink stores it)."""
    return i.astype(jnp.float32) * dt


def interface_length(phi: np.ndarray) -> np.ndarray:
    """Per frame of ``phi (frames, N, N)``: grid bonds that cross phi = 0 (an interface length)."""
    positive = phi > 0
    return sum((positive != np.roll(positive, 1, axis)).sum(axis=(1, 2)) for axis in (1, 2))


def coarsening_exponent(times: np.ndarray, length: np.ndarray) -> float:
    """The slope of log(length) against log(t) over the later half of the frames (about -1/2)."""
    keep = np.flatnonzero((times > 0) & (length > 0))
    later = keep[len(keep) // 2 :]
    if len(later) < 2:
        return float("nan")
    return float(np.polyfit(np.log(times[later]), np.log(length[later]), 1)[0])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="N, grid points per side")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eps", type=float, default=1.0, help="interface width")
    parser.add_argument(
        "--dt", type=float, default=None, help="time step (default: half the stability limit)"
    )
    parser.add_argument(
        "--frames", type=int, default=40, help="geometrically spaced times requested"
    )
    parser.add_argument("--first", type=float, default=1.0, help="the first requested time")
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("example-output/allen_cahn")
    )
    args = parser.parse_args(argv)
    dt = stable_dt(args.eps) if args.dt is None else args.dt
    if not 0.0 < dt < euler_limit(args.eps):
        parser.error(
            f"--dt must be in (0, {euler_limit(args.eps):g}), explicit Euler's stability "
            f"limit for --eps {args.eps:g}; got {dt:g}."
        )
    t_end = args.steps * dt
    if not 0.0 < args.first < t_end:
        parser.error(f"--first must be in (0, {t_end:g}), the simulated time; got {args.first:g}.")

    args.out.mkdir(parents=True, exist_ok=True)
    phi = 0.1 * jax.random.normal(jax.random.key(args.seed), (args.size, args.size), jnp.float32)
    schedule = js.Times.geometric(args.first, t_end, args.frames)
    sink = js.ZarrSink.create(
        args.out / "phi.zarr",
        {"phi": phi},
        every=schedule,
        mode="w",
        attrs={"eps": args.eps, "dt": dt, "seed": args.seed},
    )
    sink = jax.jit(simulate, static_argnames=("steps", "dt", "eps"))(
        sink, phi, steps=args.steps, dt=dt, eps=args.eps
    )
    js.close(sink)

    run = js.open(args.out / "phi.zarr")
    phis = run["phi"][:]
    length = interface_length(phis)
    ordered = (np.abs(phis) > 0.9).mean(axis=(1, 2))
    print(
        f"recorded {len(run)} frames of {phis.shape[1:]} at {args.frames} requested times "
        f"from t = {args.first:g} to {t_end:g} (dt = {dt:g}): "
        f"steps {run.steps[0]}..{run.steps[-1]}"
    )
    print(f"{'step':>6} {'t':>9} {'interface':>10} {'|phi|>0.9':>10}")
    for k in np.unique(np.linspace(0, len(run) - 1, min(12, len(run))).round().astype(int)):
        print(f"{run.steps[k]:6d} {run.times[k]:9.3f} {length[k]:10d} {ordered[k]:10.3f}")
    print(
        f"coarsening: interface length ~ t^{coarsening_exponent(run.times, length):.2f} "
        "over the later half (theory: t^-0.5)"
    )

    gif = js.movie(
        run, "phi", args.out / "allen_cahn.gif", fps=args.fps, vmin=-1, vmax=1, cmap="RdBu"
    )
    print(f"movie: {gif} ({len(run)} frames)")


if __name__ == "__main__":
    main()
