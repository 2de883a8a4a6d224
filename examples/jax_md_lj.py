"""Recording a JAX-MD simulation: a Lennard-Jones liquid in a periodic box.

JAX-MD is optional: ``pip install jaxsinks[md]`` (or ``pip install jax-md``).

``N = 4 cells^3`` atoms start on an FCC lattice at the given density in a periodic cube
(`jax_md.space.periodic`), interact through `jax_md.energy.lennard_jones_pair` (cut off smoothly
between 2.0 and 2.5 sigma) and are integrated by JAX-MD's own apply function (`simulate.nve`,
velocity Verlet, or `simulate.nvt_nose_hoover`) inside one jitted `lax.scan`. Two sinks ride in
the carry:

* a `jaxsinks.ZarrSink` recording positions and velocities every `--every` steps, with a lazy
  frame (a function: the velocities are only computed on the steps that record);
* a `jaxsinks.CsvSink` logging the kinetic, potential and total energy and the temperature at
  every step (JAX-MD computes forces, not energies, so the potential is one extra evaluation).

After `jaxsinks.close` the script reads both back and prints a summary: the frames recorded and,
for NVE, the drift of the total energy per atom; for NVT, the mean temperature of the second half
against the thermostat's.

JAX-MD asks for float64 in a few reductions and JAX truncates them to float32 with a
``UserWarning`` unless ``JAX_ENABLE_X64`` is set; the script lets those warnings through as
warnings, never as errors. Units are LJ units (sigma = epsilon = mass = 1).

    python examples/jax_md_lj.py [--cells 4] [--steps 2000] [--every 50] [--ensemble nve]
        [--out example-output/jax_md_lj]
"""

from __future__ import annotations

import argparse
import pathlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxsinks as js

# JAX-MD requests float64 in some sums; without x64 JAX truncates to float32 and warns. Harmless
# here, and never an error, even under `python -W error`.
warnings.filterwarnings(
    "default", message="Explicitly requested dtype float64", category=UserWarning
)

R_CUTOFF = 2.5


def fcc_lattice(cells: int, side: float) -> np.ndarray:
    """The ``4 cells^3`` sites of an FCC lattice filling a cube of `side`, as ``(N, 3)`` float32."""
    basis = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])
    grid = np.meshgrid(*[np.arange(cells)] * 3, indexing="ij")
    corners = np.stack(grid, axis=-1).reshape(-1, 1, 3)
    return ((corners + basis + 0.25) * (side / cells)).reshape(-1, 3).astype(np.float32)


def make_simulation(
    ensemble: str, side: float, dt: float, kT: float
) -> tuple[Callable, Callable, Callable]:
    """JAX-MD's ``(energy_fn, init_fn, apply_fn)`` for LJ atoms in a periodic cube of `side`."""
    from jax_md import energy, simulate, space

    displacement, shift = space.periodic(side)
    energy_fn = energy.lennard_jones_pair(displacement, r_onset=2.0, r_cutoff=R_CUTOFF)
    if ensemble == "nve":
        init_fn, apply_fn = simulate.nve(energy_fn, shift, dt=dt)
    else:
        init_fn, apply_fn = simulate.nvt_nose_hoover(energy_fn, shift, dt=dt, kT=kT)
    return energy_fn, init_fn, apply_fn


def energies(energy_fn: Callable, state: Any) -> dict[str, jax.Array]:
    """The scalars logged every step: kinetic, potential and total energy, and temperature."""
    from jax_md import simulate

    kinetic = simulate.kinetic_energy(state)
    potential = energy_fn(state.position)
    return {
        "kinetic": kinetic,
        "potential": potential,
        "total": kinetic + potential,
        "temperature": simulate.temperature(state),
    }


Sinks = tuple[js.ZarrSink, js.CsvSink]


def simulate_md(
    sinks: Sinks, state: Any, *, energy_fn: Callable, apply_fn: Callable, steps: int, dt: float
) -> tuple[Any, Sinks]:
    """`steps` steps of JAX-MD's `apply_fn`; frames and energies recorded from step 0 on."""

    def record(sinks, state, i):
        trajectory, log = sinks
        time = i.astype(jnp.float32) * dt
        frame = lambda: {"position": state.position, "velocity": state.velocity}  # noqa: E731
        trajectory = js.record(trajectory, step=i, time=time, frame=frame)
        log = js.record(log, step=i, time=time, frame=energies(energy_fn, state))
        return trajectory, log

    def body(carry, i):
        state, sinks = carry
        state = apply_fn(state)
        return (state, record(sinks, state, i)), None

    sinks = record(sinks, state, jnp.zeros((), jnp.int32))
    (state, sinks), _ = jax.lax.scan(body, (state, sinks), jnp.arange(1, steps + 1))
    return state, sinks


def summary(run: js.Run, log: np.ndarray, *, ensemble: str, atoms: int, kT: float) -> list[str]:
    """The closing lines: frames recorded, and energy drift (NVE) or temperature (NVT)."""
    lines = [
        f"trajectory: {len(run)} frames of {run['position'].shape[1:]} positions and velocities "
        f"(steps {run.steps[0]}..{run.steps[-1]})",
        f"energy log: {len(log)} rows (steps {int(log['step'][0])}..{int(log['step'][-1])})",
    ]
    if ensemble == "nve":
        total = log["total"] / atoms
        drift = total[-1] - total[0]
        lines.append(
            f"NVE: total energy per atom {total[0]:.5f} -> {total[-1]:.5f}, "
            f"drift {drift:+.2e}, largest excursion {np.abs(total - total[0]).max():.2e}"
        )
    else:
        late = log["temperature"][len(log) // 2 :]
        lines.append(
            f"NVT: mean temperature over the second half {late.mean():.4f} "
            f"(std {late.std():.4f}); thermostat kT = {kT:g}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=4, help="FCC cells per side (4 cells^3 atoms)")
    parser.add_argument("--density", type=float, default=0.8)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--dt", type=float, default=0.005)
    parser.add_argument(
        "--kT", type=float, default=1.0, help="initial (NVE) or thermostat (NVT) temperature"
    )
    parser.add_argument("--every", type=int, default=50, help="record positions every n steps")
    parser.add_argument("--ensemble", choices=("nve", "nvt"), default="nve")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("example-output/jax_md_lj")
    )
    args = parser.parse_args(argv)
    atoms = 4 * args.cells**3
    side = float((atoms / args.density) ** (1.0 / 3.0))
    if side < 2.0 * R_CUTOFF:
        parser.error(
            f"The box side {side:.3f} is less than twice the cutoff {R_CUTOFF} sigma, so atoms "
            "would see each other's periodic images; pass more --cells or a lower --density."
        )

    energy_fn, init_fn, apply_fn = make_simulation(args.ensemble, side, args.dt, args.kT)
    positions = jnp.asarray(fcc_lattice(args.cells, side))
    state = init_fn(jax.random.key(args.seed), positions, kT=args.kT)

    args.out.mkdir(parents=True, exist_ok=True)
    example = {"position": state.position, "velocity": state.velocity}
    trajectory = js.ZarrSink.create(
        args.out / "trajectory.zarr",
        example,
        every=args.every,
        mode="w",
        attrs={"ensemble": args.ensemble, "box": side, "dt": args.dt},
    )
    logged = jax.eval_shape(lambda s: energies(energy_fn, s), state)
    log = js.CsvSink.create(args.out / "energy.csv", logged, mode="w")
    run_md = jax.jit(simulate_md, static_argnames=("energy_fn", "apply_fn", "steps", "dt"))
    _, sinks = run_md(
        (trajectory, log),
        state,
        energy_fn=energy_fn,
        apply_fn=apply_fn,
        steps=args.steps,
        dt=args.dt,
    )
    js.close(sinks)

    run = js.open(args.out / "trajectory.zarr")
    table = np.genfromtxt(args.out / "energy.csv", delimiter=",", names=True)
    print(
        f"{atoms} LJ atoms, density {args.density:g}, box {side:.3f}, {args.ensemble.upper()}, "
        f"{args.steps} steps of dt = {args.dt:g}"
    )
    for line in summary(run, table, ensemble=args.ensemble, atoms=atoms, kT=args.kT):
        print(line)
    print(f"saved {args.out / 'trajectory.zarr'} and {args.out / 'energy.csv'}")


if __name__ == "__main__":
    main()
