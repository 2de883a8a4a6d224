"""Recording a diffrax ODE solve to Zarr at given times, with fixed and with adaptive steps.

diffrax is optional: ``pip install jaxsinks[recipes]`` (or ``pip install diffrax``).

The system is a batch of Van der Pol oscillators, one per value of ``mu`` (a ``(systems, 2)``
state solved as one ODE), integrated with `diffrax.Tsit5` from ``t = 0`` to `--t1`, and recorded
at `--saves` evenly spaced times. `diffrax.diffeqsolve` keeps its output in memory until the
solve ends; here the solver is stepped by hand (``solver.step``, the call `diffeqsolve` makes in
its own loop) inside a jaxsinks driver, so the frames stream to Zarr while it runs:

* **fixed step**: `jaxsinks.scan` takes ``t1 / dt`` steps of size `--dt` and a `ZarrSink` with
  ``every=Interval(t1 / (saves - 1))`` records the state at each save time (a multiple of
  `--dt`). The frames equal ``diffeqsolve(..., stepsize_controller=ConstantStepSize(),
  saveat=SaveAt(ts=ts))``.
* **adaptive**: `jaxsinks.while_loop` steps with a `diffrax.PIDController` until ``t1``. Given
  ``step_ts=ts``, the controller makes every step that would cross a save time end on it, so a
  sink with ``every=Times(ts, tol=0)`` records the solution at exactly those times. The frames
  equal ``diffeqsolve(..., stepsize_controller=<the same controller>, saveat=SaveAt(ts=ts))``:
  the same steps, accepted and rejected (diffeqsolve evaluates its dense interpolation at the
  step's end, the same value up to rounding). Loop iterations count the rejected steps too, so
  the recorded step numbers are iterations.

Pass the same `dt0` to the controller and to `diffeqsolve`: with ``dt0=None``, diffeqsolve
(0.7) starts at 0.01 rather than the step `PIDController.init` selects for a bare `ODETerm`.

    python examples/diffrax_ode.py [--systems 8] [--t1 10] [--saves 41] [--dt 0.015625]
        [--rtol 1e-5] [--atol 1e-7] [--out example-output/diffrax_ode]
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import jaxsinks as js

DT0 = 0.01  # the adaptive solve's first step, given to the controller and to diffeqsolve


def van_der_pol(t: Any, y: jax.Array, mu: jax.Array) -> jax.Array:
    """``x'' = mu (1 - x^2) x' - x`` for each row ``(x, x')`` of `y`, with its own `mu`."""
    x, v = y[:, 0], y[:, 1]
    return jnp.stack([v, mu * (1.0 - x**2) * v - x], axis=-1)


def problem(systems: int) -> tuple[jax.Array, jax.Array]:
    """``(mu, y0)``: `systems` values of mu from 0.5 to 3, all starting at ``x = 2, x' = 0``."""
    mu = jnp.linspace(0.5, 3.0, systems)
    y0 = jnp.stack([jnp.full(systems, 2.0), jnp.zeros(systems)], axis=-1)
    return mu, y0


TERM = diffrax.ODETerm(van_der_pol)
SOLVER = diffrax.Tsit5()


class Fixed(NamedTuple):
    n: jax.Array  # steps taken; the time is n * dt
    y: jax.Array
    solver_state: Any


def solve_fixed(sink: js.ZarrSink, mu: jax.Array, y0: jax.Array, *, dt: float, steps: int):
    """`steps` Tsit5 steps of `dt`, recording into `sink` (with t = 0); returns the final state
    and the closed sink."""

    def time(s: Fixed) -> jax.Array:
        return s.n.astype(s.y.dtype) * dt

    def step(s: Fixed) -> Fixed:
        t0, t1 = time(s), (s.n + 1).astype(s.y.dtype) * dt
        y, _, _, solver_state, _ = SOLVER.step(TERM, t0, t1, s.y, mu, s.solver_state, False)
        return Fixed(s.n + 1, y, solver_state)

    state = Fixed(jnp.int32(0), y0, SOLVER.init(TERM, 0.0, dt, y0, mu))
    return js.scan(
        step, state, sink, steps=steps, time=time, frame=lambda s: {"y": s.y}, record_initial=True
    )


class Adaptive(NamedTuple):
    t: jax.Array  # the time reached (the end of the last accepted step)
    t_next: jax.Array  # the end of the step to try next
    y: jax.Array
    solver_state: Any
    controller_state: Any
    accepted: jax.Array


def solve_adaptive(
    sink: js.ZarrSink, mu: jax.Array, y0: jax.Array, *, controller: Any, t1: float, max_steps: int
):
    """Tsit5 steps chosen by `controller` until `t1`, recording into `sink` (with t = 0); returns
    the final state, the closed sink and the number of steps tried."""
    error_order = SOLVER.error_order(TERM)

    def step(s: Adaptive) -> Adaptive:
        y, y_error, _, solver_state, _ = SOLVER.step(
            TERM, s.t, s.t_next, s.y, mu, s.solver_state, False
        )
        keep, t, t_next, _, controller_state, _ = controller.adapt_step_size(
            s.t, s.t_next, s.y, y, mu, y_error, error_order, s.controller_state
        )
        kept = lambda new, old: jnp.where(keep, new, old)  # noqa: E731
        return Adaptive(
            jnp.minimum(t, t1),
            jnp.minimum(t_next, t1),
            kept(y, s.y),
            jax.tree.map(kept, solver_state, s.solver_state),
            controller_state,
            s.accepted + keep.astype(jnp.int32),
        )

    t_next, controller_state = controller.init(TERM, 0.0, t1, y0, DT0, mu, SOLVER.func, error_order)
    t_next = jnp.minimum(t_next, t1)
    state = Adaptive(
        jnp.zeros((), y0.dtype),
        t_next,
        y0,
        SOLVER.init(TERM, 0.0, t_next, y0, mu),
        controller_state,
        jnp.int32(0),
    )
    return js.while_loop(
        lambda s: s.t < t1,
        step,
        state,
        sink,
        max_steps=max_steps,
        time=lambda s: s.t,
        frame=lambda s: {"y": s.y},
        record_initial=True,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", type=int, default=8, help="oscillators (values of mu)")
    parser.add_argument("--t1", type=float, default=10.0)
    parser.add_argument("--saves", type=int, default=41, help="evenly spaced save times")
    parser.add_argument("--dt", type=float, default=2.0**-6, help="the fixed step")
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--atol", type=float, default=1e-7)
    parser.add_argument("--max-steps", type=int, default=4096, help="adaptive steps tried, at most")
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("example-output/diffrax_ode")
    )
    args = parser.parse_args(argv)
    if args.saves < 2:
        parser.error("--saves must be at least 2 (t = 0 and t1).")
    interval = args.t1 / (args.saves - 1)
    per_save = interval / args.dt
    if abs(per_save - round(per_save)) > 1e-9 * per_save or round(per_save) < 1:
        parser.error(
            f"The save interval t1 / (saves - 1) = {interval:g} is not a whole number of fixed "
            f"steps of --dt {args.dt:g}; choose --saves, --t1 and --dt so that it is."
        )
    steps = round(per_save) * (args.saves - 1)
    ts = np.linspace(0.0, args.t1, args.saves).astype(np.float32)
    mu, y0 = problem(args.systems)
    args.out.mkdir(parents=True, exist_ok=True)
    example = {"y": y0}
    attrs = {"mu": np.asarray(mu).tolist(), "solver": "Tsit5"}

    fixed_sink = js.ZarrSink.create(
        args.out / "fixed.zarr",
        example,
        every=js.Interval(interval),
        mode="w",
        attrs={**attrs, "dt": args.dt},
    )
    _, _ = solve_fixed(fixed_sink, mu, y0, dt=args.dt, steps=steps)

    controller = diffrax.PIDController(rtol=args.rtol, atol=args.atol, step_ts=ts)
    adaptive_sink = js.ZarrSink.create(
        args.out / "adaptive.zarr",
        example,
        every=js.Times(ts, tol=0),
        mode="w",
        attrs={**attrs, "rtol": args.rtol, "atol": args.atol, "dt0": DT0},
    )
    final, _, tried = solve_adaptive(
        adaptive_sink, mu, y0, controller=controller, t1=args.t1, max_steps=args.max_steps
    )
    if float(final.t) < args.t1:
        raise SystemExit(
            f"The adaptive solve reached t = {float(final.t):g} of {args.t1:g} in "
            f"--max-steps {args.max_steps}; pass more, or a looser --rtol/--atol."
        )

    fixed, adaptive = js.open(args.out / "fixed.zarr"), js.open(args.out / "adaptive.zarr")
    accepted = int(final.accepted)
    print(f"{args.systems} Van der Pol oscillators, mu {float(mu[0]):g}..{float(mu[-1]):g}")
    print(
        f"fixed step: {steps} Tsit5 steps of dt = {args.dt:g}, {len(fixed)} frames of "
        f"{fixed['y'].shape[1:]} (every {round(per_save)} steps, t = 0..{fixed.times[-1]:g})"
    )
    print(
        f"adaptive: {accepted} accepted and {int(tried) - accepted} rejected Tsit5 steps "
        f"(rtol {args.rtol:g}, atol {args.atol:g}), {len(adaptive)} frames at the requested "
        f"times (t = 0..{adaptive.times[-1]:g})"
    )
    gap = np.abs(fixed["y"][:] - adaptive["y"][:]).max()
    print(f"largest difference between the two recordings: {gap:.2e}")
    print(f"saved {args.out / 'fixed.zarr'} and {args.out / 'adaptive.zarr'}")


if __name__ == "__main__":
    main()
