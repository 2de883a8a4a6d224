"""Recording a JAX-MD FIRE minimisation with a neighbour list.

JAX-MD is optional: ``pip install jaxsinks[md]`` (or ``pip install jax-md``).

``N = cells^3`` Lennard-Jones atoms start on a jittered simple-cubic lattice at the given density
in a periodic cube (`jax_md.space.periodic`), an unstable structure for LJ, and relax with
`jax_md.minimize.fire_descent` under `jax_md.energy.lennard_jones_neighbor_list` (cut off
smoothly between 2.0 and 2.5 sigma). `jaxsinks.while_loop` steps until the largest force is
below `--fmax`, for at most `--steps` steps; the neighbour list rides in the state and is updated
after every step (``neighbors.update``, which rebuilds it when an atom has moved far enough).
Two sinks record from step 0 on:

* a `jaxsinks.ZarrSink` with the positions and the energy every `--every` steps;
* a `jaxsinks.CsvSink` logging the energy, the largest force and FIRE's step size every step.

The energy is computed only on the steps a sink records (the frames are functions of the
state). A neighbour list that overflows its capacity gives wrong energies from then on: the
loop stops there, and the script says to allocate a larger one (`--capacity`). A relaxation
that diverges (non-finite forces: too large a jitter, so that two atoms start almost on top of
each other, or too large a step) stops too, and the script exits with an error: NaN is never
taken for "relaxed" (``fmax > tol`` is False for NaN, so the loop tests ``fmax <= tol``). See
examples/jax_md_lj.py for molecular dynamics with JAX-MD.

    python examples/jax_md_fire.py [--cells 6] [--density 0.8] [--jitter 0.05] [--steps 2000]
        [--every 50] [--fmax 1e-3] [--out example-output/jax_md_fire]
"""

from __future__ import annotations

import argparse
import pathlib
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxsinks as js

# JAX-MD requests float64 in some sums; without x64 JAX truncates to float32 and warns. Harmless
# here, and never an error, even under `python -W error`.
warnings.filterwarnings(
    "default", message="Explicitly requested dtype float64", category=UserWarning
)

R_ONSET, R_CUTOFF = 2.0, 2.5


def jittered_lattice(cells: int, side: float, jitter: float, seed: int) -> np.ndarray:
    """The ``cells^3`` sites of a simple-cubic lattice filling a cube of `side`, each moved by a
    Gaussian of standard deviation `jitter`, as ``(N, 3)`` float32."""
    sites = np.indices((cells,) * 3).reshape(3, -1).T + 0.5
    noise = np.random.default_rng(seed).standard_normal(sites.shape)
    return (sites * (side / cells) + jitter * noise).astype(np.float32)


class State(NamedTuple):
    fire: Any  # jax_md.minimize.FireDescentState
    neighbors: Any  # jax_md.partition.NeighborList


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=6, help="lattice cells per side (cells^3)")
    parser.add_argument("--density", type=float, default=0.8)
    # At 0.1 sigma, 216 atoms start with a pair at about half a sigma (forces near 1e5): the
    # first FIRE steps throw atoms across the box and the energy diverges.
    parser.add_argument("--jitter", type=float, default=0.05, help="in units of sigma")
    parser.add_argument("--steps", type=int, default=2000, help="FIRE steps, at most")
    parser.add_argument("--every", type=int, default=50, help="record positions every n steps")
    parser.add_argument("--fmax", type=float, default=1e-3, help="stop below this largest force")
    parser.add_argument(
        "--capacity", type=float, default=1.25, help="neighbour list capacity multiplier"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("example-output/jax_md_fire")
    )
    args = parser.parse_args(argv)
    from jax_md import energy, minimize, space

    atoms = args.cells**3
    side = float((atoms / args.density) ** (1.0 / 3.0))
    if side < 2.0 * R_CUTOFF:
        parser.error(
            f"The box side {side:.3f} is less than twice the cutoff {R_CUTOFF} sigma, so atoms "
            "would see each other's periodic images; pass more --cells or a lower --density."
        )
    displacement, shift = space.periodic(side)
    neighbor_fn, energy_fn = energy.lennard_jones_neighbor_list(
        displacement, side, r_onset=R_ONSET, r_cutoff=R_CUTOFF, capacity_multiplier=args.capacity
    )
    # FIRE's defaults (dt up to 0.4) suit soft spheres; LJ's steep core needs smaller steps.
    init_fn, apply_fn = minimize.fire_descent(energy_fn, shift, dt_start=0.01, dt_max=0.04)

    def step(s: State) -> State:
        fire = apply_fn(s.fire, neighbor=s.neighbors)
        return State(fire, s.neighbors.update(fire.position))

    def fmax(s: State) -> jax.Array:
        return jnp.max(jnp.linalg.norm(s.fire.force, axis=-1))

    def potential(s: State) -> jax.Array:
        return energy_fn(s.fire.position, neighbor=s.neighbors)

    def relaxing(s: State) -> jax.Array:
        force = fmax(s)  # NaN or inf: diverged, stop (and `force > fmax` would be False for NaN)
        sound = jnp.isfinite(force) & (s.neighbors.did_buffer_overflow == 0)
        return sound & ~(force <= args.fmax)

    position = jnp.asarray(jittered_lattice(args.cells, side, args.jitter, args.seed))
    neighbors = neighbor_fn.allocate(position)
    state = State(init_fn(position, neighbor=neighbors), neighbors)

    args.out.mkdir(parents=True, exist_ok=True)
    frames = {
        "trajectory": lambda s: {"position": s.fire.position, "energy": potential(s)},
        "log": lambda s: {"energy": potential(s), "fmax": fmax(s), "dt": s.fire.dt},
    }
    sinks = {
        "trajectory": js.ZarrSink.create(
            args.out / "trajectory.zarr",
            jax.eval_shape(frames["trajectory"], state),
            every=args.every,
            mode="w",
            attrs={"box": side, "r_onset": R_ONSET, "r_cutoff": R_CUTOFF},
        ),
        "log": js.CsvSink.create(
            args.out / "fire.csv", jax.eval_shape(frames["log"], state), mode="w"
        ),
    }
    state, sinks, taken = js.while_loop(
        relaxing,
        step,
        state,
        sinks,
        max_steps=args.steps,
        frame=frames,
        record_initial=True,
        stop_reason="relaxed",
    )
    if bool(state.neighbors.did_buffer_overflow):
        raise SystemExit(
            f"The neighbour list overflowed at step {taken}: the energies recorded after it are "
            f"wrong. Pass a larger --capacity than {args.capacity:g}."
        )

    if not np.isfinite(float(fmax(state))):
        raise SystemExit(
            f"FIRE diverged: the forces are not finite after {taken} steps (largest force "
            f"{float(fmax(state))}). Start from a less jittered lattice (--jitter below "
            f"{args.jitter:g}) or a lower --density."
        )
    run = js.open(args.out / "trajectory.zarr")
    log = np.genfromtxt(args.out / "fire.csv", delimiter=",", names=True)
    e = run["energy"][:] / atoms
    print(
        f"{atoms} LJ atoms, density {args.density:g}, box {side:.3f}: "
        f"FIRE {'relaxed' if log['fmax'][-1] <= args.fmax else 'stopped'} after {taken} steps "
        f"(largest force {log['fmax'][-1]:.2e})"
    )
    print(f"energy per atom {e[0]:.4f} -> {log['energy'][-1] / atoms:.4f}")
    print(
        f"trajectory: {len(run)} frames of {run['position'].shape[1:]} positions "
        f"(steps {run.steps[0]}..{run.steps[-1]}); log: {len(log)} rows"
    )
    print(f"saved {args.out / 'trajectory.zarr'} and {args.out / 'fire.csv'}")


if __name__ == "__main__":
    main()
