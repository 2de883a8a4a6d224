"""The main demo job: relax a batch of Lennard-Jones clusters of different sizes with FIRE.

Everything runs in one jit-compiled `lax.while_loop` that stops when every cluster has converged,
and records, with no host sync inside the loop:

* the trajectory, every 10 steps, to a local Zarr run (positions stored CSR-style: each cluster at
  its true number of atoms);
* each cluster's relaxed structure, once, the step it converges, into a `DeviceBuffer`;
* a per-step scalar log (energies, fmax, clusters converged) to CSV, with a progress bar, and to
  a Zarr run that the energy/fmax plot is drawn from.

Then it prints a summary (frames, logical and stored bytes, compression, where everything is) and
writes a PNG of energy and fmax against step.

    python -m jaxsinks demo [--out DIR] [--overwrite] [--clusters 64] [--max-steps 3000]
"""

from __future__ import annotations

import argparse
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxsinks as js

from .._core.types import Mode
from .._io import tsio
from .._io.location import parse as parse_location
from .._io.runs import ROOT, stored_run
from .._tools import viz as _viz
from .._tools.cli import human_bytes, ratio
from . import fire, lj

SIZES = (13, 19, 26, 38, 55)
FMAX = 1e-3


def cluster_sizes(count: int) -> list[int]:
    """`count` cluster sizes cycling through `SIZES` (13 to 55 atoms)."""
    return [SIZES[i % len(SIZES)] for i in range(count)]


def frames(state: fire.FireState, batch: lj.Batch) -> dict[str, Any]:
    """What each sink records from a FIRE state."""
    fmax = lj.fmax(state.forces, batch.mask)
    return {
        "trajectory": {
            "positions": state.positions,
            "natoms": batch.natoms,
            "energy": state.energy,
        },
        "converged": {"positions": state.positions, "natoms": batch.natoms, "energy": state.energy},
        "log": {
            "energy": state.energy,
            "fmax": fmax,
            "converged": jnp.sum(fmax < FMAX).astype(jnp.int32),
        },
    }


def create_sinks(
    out: pathlib.Path,
    batch: lj.Batch,
    *,
    every: int,
    max_steps: int,
    progress: js.Progress,
    mode: Mode = "w-",
) -> dict[str, Any]:
    """The demo's sinks, created on the host (`mode` as for `ZarrSink.create`)."""
    example = frames(fire.fire_init(batch), batch)
    # the CSV log first: with mode="w" it refuses a file that is not a CSV log before a run is
    # replaced (what the runs are is checked by `check_output_dir`)
    log_csv = js.CsvSink.create(
        out / "log.csv", example["log"], block=100, progress=progress, mode=mode
    )
    return {
        "trajectory": js.ZarrSink.create(
            out / "trajectory.zarr",
            example["trajectory"],
            every=every,
            chunk=16,
            mode=mode,
            ragged=js.Ragged(count="natoms", fields=("positions",)),
            attrs={"sizes": [int(n) for n in batch.natoms], "fmax_threshold": FMAX, "every": every},
        ),
        "converged": js.DeviceBuffer.create(
            example["converged"], capacity=batch.natoms.shape[0], per_system=True, once=True
        ),
        "log_csv": log_csv,
        "log": js.ZarrSink.create(out / "log.zarr", example["log"], chunk=256, mode=mode),
    }


@jax.jit
def relax_and_record(
    state: fire.FireState, batch: lj.Batch, sinks: dict[str, Any], max_steps: jax.Array
) -> tuple[fire.FireState, dict[str, Any], jax.Array]:
    """FIRE until every cluster has converged (or `max_steps`), recording into `sinks`."""
    params = fire.FireParams(fmax_threshold=FMAX)

    def cond(carry):
        step, state, _ = carry
        return (step < max_steps) & ~jnp.all(lj.converged(state.forces, batch.mask, FMAX))

    def body(carry):
        step, state, sinks = carry
        state = fire.fire_step(state, batch.mask, params=params)
        record = frames(state, batch)
        sinks = {
            "trajectory": js.record(
                sinks["trajectory"], step=step, frame=lambda: record["trajectory"]
            ),
            "converged": js.record(
                sinks["converged"],
                step=step,
                frame=record["converged"],
                mask=lj.converged(state.forces, batch.mask, FMAX),
            ),
            "log_csv": js.record(sinks["log_csv"], step=step, frame=record["log"]),
            "log": js.record(sinks["log"], step=step, frame=record["log"]),
        }
        return step + 1, state, sinks

    step, state, sinks = jax.lax.while_loop(cond, body, (jnp.int32(0), state, sinks))
    return state, sinks, step


#: What the demo writes into its output directory: all that --overwrite replaces there.
OUTPUTS = ("trajectory.zarr", "log.zarr", "log.csv", "energy_fmax.png")


def output_dir(out: str | None, overwrite: bool) -> tuple[pathlib.Path, str]:
    """Where this run writes, and a sentence saying so (a new run directory unless told)."""
    if out is not None:
        path = pathlib.Path(out)
        held = check_output_dir(path, overwrite)
        return path, f"writing to {path}" + (" (overwriting)" if held else "")
    root = pathlib.Path("demo-output")
    index = 1
    while (root / f"run-{index:03d}").exists():
        index += 1
    path = root / f"run-{index:03d}"
    note = (
        ""
        if index == 1
        else f" (runs 1-{index - 1} exist; each run gets a new directory, --out DIR --overwrite "
        "reuses one)"
    )
    return path, f"writing to a new run directory {path}{note}"


def check_output_dir(path: pathlib.Path, overwrite: bool) -> list[str]:
    """What `path` holds of an earlier demo's outputs (to replace, with `overwrite`); an error if
    it is not a folder, holds anything else, or holds outputs without `overwrite`."""
    if path.exists() and not path.is_dir():
        raise js.StoreError(
            f"--out {path} is a file, not a folder: the demo writes a folder of outputs. Choose "
            "another path, or leave out --out to write a new run directory under demo-output/."
        )
    held = sorted(p.name for p in path.iterdir()) if path.exists() else []
    # An output of the demo's: a run where it writes runs, a file where it writes files.
    foreign = [n for n in held if n not in OUTPUTS or (path / n).is_dir() != n.endswith(".zarr")]
    if foreign:
        raise js.StoreExistsError(
            f"--out {path} holds files the demo did not write ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}); the demo writes into an empty or new folder, "
            "or with --overwrite over its own earlier output there, and deletes nothing else. "
            "Choose another folder, or leave out --out to write a new run directory under "
            "demo-output/."
        )
    if held and not overwrite:
        raise js.StoreExistsError(
            f"--out {path} already holds the output of an earlier demo ({', '.join(held)}). "
            "Pass --overwrite to replace it, or leave out --out to write a new run directory "
            "under demo-output/."
        )
    for name in held:
        if name.endswith(".zarr"):  # refused unless a jaxsinks run, as mode="w" does
            location = parse_location(path / name)
            stored_run(location, tsio.read_bytes(location.kvstore, ROOT), "w")
    return held


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxsinks demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=None, help="output directory (default: a new demo-output/run-NNN)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    parser.add_argument(
        "--clusters", type=int, default=64, help="clusters in the batch (13 to 55 atoms)"
    )
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=10, help="trajectory frame every N steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.clusters < 1 or args.max_steps < 1 or args.every < 1:
        parser.error("--clusters, --max-steps and --every must be positive")
    if args.seed < 0:
        parser.error(f"--seed must be a non-negative integer; got {args.seed}")

    # An earlier demo's outputs in --out are replaced as each sink is created (mode="w"), after
    # every argument was checked; nothing else there is touched.
    out, where = output_dir(args.out, args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    print(f"jaxsinks demo: {where}")

    batch = lj.make_batch(cluster_sizes(args.clusters), seed=args.seed)
    state = fire.fire_init(batch)
    progress = js.Progress(
        total=args.max_steps, desc="FIRE", disable=True if args.no_progress else None
    )
    sinks = create_sinks(
        out,
        batch,
        every=args.every,
        max_steps=args.max_steps,
        progress=progress,
        mode="w" if args.overwrite else "w-",
    )

    start = time.perf_counter()
    compiled = relax_and_record.lower(state, batch, sinks, jnp.int32(args.max_steps)).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    state, sinks, steps = compiled(state, batch, sinks, jnp.int32(args.max_steps))
    steps = int(steps)
    run_s = time.perf_counter() - start
    sinks = js.close(sinks)
    total_s = time.perf_counter() - start

    converged = sinks["converged"].read()
    plot = _viz.plot_series(
        js.open(out / "log.zarr"), ["energy", "fmax"], out=out / "energy_fmax.png", log=["fmax"]
    )
    print(summary(out, batch, state, steps, converged, compile_s, run_s, total_s, plot))
    return 0


def summary(
    out: pathlib.Path,
    batch: lj.Batch,
    state: fire.FireState,
    steps: int,
    converged: js.Trajectory,
    compile_s: float,
    run_s: float,
    total_s: float,
    plot: pathlib.Path,
) -> str:
    """The text printed at the end of the demo."""
    sizes = np.asarray(batch.natoms)
    energies = np.asarray(state.energy)
    fmax = np.asarray(lj.fmax(state.forces, batch.mask))
    lines = [
        "",
        f"Relaxed {len(sizes)} Lennard-Jones clusters ({sizes.min()}-{sizes.max()} atoms) with "
        f"FIRE: {steps} steps in {run_s:.2f} s ({1e3 * run_s / max(steps, 1):.2f} ms/step; compile "
        f"{compile_s:.1f} s; close {total_s - run_s:.2f} s).",
        f"  converged (fmax < {FMAX:g}): {int(np.sum(fmax < FMAX))}/{len(sizes)}; lowest energy "
        "per size: "
        + ", ".join(f"{n}: {energies[sizes == n].min():.4f}" for n in sorted(set(sizes.tolist()))),
        "",
        "Recorded:",
    ]
    for name, path in (("trajectory", out / "trajectory.zarr"), ("scalar log", out / "log.zarr")):
        info = js.open(path).describe()
        lines.append(
            f"  {name:<11} {path}  {info['frames']} frames, logical "
            f"{human_bytes(info['logical_bytes'])}, stored {human_bytes(info['stored_bytes'])}, "
            f"compression {ratio(info['logical_bytes'], info['stored_bytes'])}x"
        )
    rows = len((out / "log.csv").read_text().splitlines()) - 1
    lines.append(f"  {'scalar log':<11} {out / 'log.csv'}  {rows} rows")
    lines.append(
        f"  {'converged':<11} DeviceBuffer on the device: {len(converged)} structures, each "
        "recorded once, at the step it converged (first at step "
        f"{converged.steps.min() if len(converged) else '-'})"
    )
    lines.append(f"  {'plot':<11} {plot}")
    lines.append(f"\nInspect: jaxsinks info {out / 'trajectory.zarr'}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
