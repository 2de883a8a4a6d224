"""FIRE relaxation of Lennard-Jones clusters with ALCHEMI-style hooks, as jaxsinks sinks.

NVIDIA ALCHEMI's dynamics module attaches hooks to an optimiser; here each hook is a sink that
`jaxsinks.record` writes inside the jit-compiled `lax.while_loop`:

    SnapshotHook(ZarrData, frequency=10) -> ZarrSink(every=10), ragged positions
    ConvergedSnapshotHook(GPUBuffer)     -> DeviceBuffer(per_system=True, once=True), mask=converged
    LoggingHook(backend="csv")           -> CsvSink (energy and fmax of every system, each step)
    ConvergenceHook.from_fmax(1e-3)      -> the while_loop's condition

It reuses the demo's loop (`jaxsinks.demo.relax`) and prints, per system, the step it converged at
and its energy, read back from the DeviceBuffer and the trajectory.

    python examples/lj_fire.py [--sizes 13,38,55] [--out DIR]
"""

from __future__ import annotations

import argparse
import pathlib

import jax.numpy as jnp

import jaxsinks as js
from jaxsinks.demo import fire, lj, relax


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="13,19,38,55", help="cluster sizes, comma-separated")
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--out", default="example-output/lj_fire")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    batch = lj.make_batch([int(n) for n in args.sizes.split(",")], seed=1)
    state = fire.fire_init(batch)
    sinks = relax.create_sinks(
        out,
        batch,
        every=10,
        max_steps=args.max_steps,  # "w": re-runs replace
        progress=js.Progress(args.max_steps, disable=True),
        mode="w",
    )
    state, sinks, steps = relax.relax_and_record(state, batch, sinks, jnp.int32(args.max_steps))
    sinks = js.close(sinks)

    converged = sinks["converged"].read()
    trajectory = js.open(out / "trajectory.zarr")
    print(
        f"{int(steps)} FIRE steps; {len(converged)}/{len(batch.natoms)} systems converged; "
        f"{len(trajectory)} trajectory frames in {out / 'trajectory.zarr'}"
    )
    print("system  atoms  converged at step  energy")
    for system, step, energy in zip(converged.systems, converged.steps, converged.frames["energy"]):
        print(f"{system:6d}  {int(batch.natoms[system]):5d}  {step:17d}  {energy:.4f}")
    final = trajectory["positions"][-1]
    assert [a.shape[0] for a in final] == [int(n) for n in batch.natoms]
    return 0 if len(converged) == len(batch.natoms) else 1


if __name__ == "__main__":
    raise SystemExit(main())
