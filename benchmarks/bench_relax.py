"""FIRE on 64 Lennard-Jones clusters of 38 atoms, with and without recording.

    python benchmarks/bench_relax.py [--repeats 7]

500 FIRE steps in one jitted `lax.scan`. The recorded variant writes the positions of every system
every 10 steps to a local Zarr run and a per-step scalar log (energy and fmax of every system) to
CSV. Times are medians of interleaved rounds; "total" is from creating the sinks to `close`
returning (everything durable), "loop + close" leaves out creating the files. Bar (issue 4):
recording adds at most 10%. The "driver" variants record the same sinks through `js.scan` (which
also checks, traces from its cache, waits and closes): bar, no slower than the hand-written loop.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from common import table  # noqa: E402

import jaxsinks as js  # noqa: E402
from jaxsinks.demo import fire, lj  # noqa: E402

CLUSTERS, ATOMS, STEPS, EVERY = 64, 38, 500, 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    batch = lj.make_batch([ATOMS] * CLUSTERS, seed=0)
    state0 = fire.fire_init(batch)
    steps = jnp.arange(STEPS)

    @jax.jit
    def bare(state):
        return jax.lax.scan(lambda s, i: (fire.fire_step(s, batch.mask), None), state, steps)[0]

    @jax.jit
    def recorded(state, sinks):
        def body(carry, step):
            state, (traj, log) = carry
            state = fire.fire_step(state, batch.mask)
            traj = js.record(traj, step=step, frame=lambda: {"positions": state.positions})
            log = js.record(
                log,
                step=step,
                frame={"energy": state.energy, "fmax": lj.fmax(state.forces, batch.mask)},
            )
            return (state, (traj, log)), None

        return jax.lax.scan(body, (state, sinks), steps)[0]

    def relax(state):
        return fire.fire_step(state, batch.mask)

    frames = {
        "traj": lambda state: {"positions": state.positions},
        "log": lambda state: {"energy": state.energy, "fmax": lj.fmax(state.forces, batch.mask)},
    }

    def driven(state, sinks):
        traj, log = sinks
        return js.scan(relax, state, {"traj": traj, "log": log}, steps=STEPS, frame=frames)

    workdir = tempfile.mkdtemp(prefix="jaxsinks-relax-", dir=os.environ.get("BENCH_DIR"))
    runs = iter(range(10**6))

    def create():
        path = os.path.join(workdir, f"run{next(runs)}")
        os.makedirs(path)
        traj = js.ZarrSink.create(
            os.path.join(path, "traj.zarr"), {"positions": state0.positions}, every=EVERY, chunk=16
        )
        log = js.CsvSink.create(
            os.path.join(path, "log.csv"),
            {"energy": state0.energy, "fmax": state0.energy},
            block=100,
        )
        return path, (traj, log)

    def run_bare():
        jax.block_until_ready(bare(state0))

    def run_total():
        path, sinks = create()
        _, sinks = recorded(state0, sinks)
        js.close(sinks)
        return path

    def run_driver():
        path, sinks = create()
        driven(state0, sinks)
        return path

    def timed_loop_and_close(driver=False):
        path, sinks = create()
        os.sync()
        start = time.perf_counter()
        if driver:
            driven(state0, sinks)
        else:
            _, sinks = recorded(state0, sinks)
            js.close(sinks)
        return time.perf_counter() - start, path

    try:
        run_bare()
        shutil.rmtree(run_total())  # compile all three
        shutil.rmtree(run_driver())
        samples: dict[str, list[float]] = {
            "bare": [],
            "total": [],
            "loop + close": [],
            "driver total": [],
            "driver loop + close": [],
        }
        for _ in range(args.repeats):
            os.sync()
            start = time.perf_counter()
            run_bare()
            samples["bare"].append(time.perf_counter() - start)
            os.sync()
            start = time.perf_counter()
            path = run_total()
            samples["total"].append(time.perf_counter() - start)
            shutil.rmtree(path)
            elapsed, path = timed_loop_and_close()
            samples["loop + close"].append(elapsed)
            run = js.open(os.path.join(path, "traj.zarr"))
            assert len(run) == STEPS // EVERY, len(run)
            shutil.rmtree(path)
            os.sync()
            start = time.perf_counter()
            path = run_driver()
            samples["driver total"].append(time.perf_counter() - start)
            shutil.rmtree(path)
            elapsed, path = timed_loop_and_close(driver=True)
            samples["driver loop + close"].append(elapsed)
            run = js.open(os.path.join(path, "traj.zarr"))
            assert len(run) == STEPS // EVERY and run.steps[0] == EVERY, run.steps[:2]
            shutil.rmtree(path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    t = {k: statistics.median(v) for k, v in samples.items()}
    print(
        f"FIRE, {CLUSTERS} clusters x {ATOMS} atoms, {STEPS} steps; positions every {EVERY} steps "
        f"to Zarr + per-step scalar log to CSV; median of {args.repeats} interleaved rounds"
    )
    print(
        table(
            ["variant", "seconds", "vs bare"],
            [[k, f"{v:.3f}", f"{v / t['bare']:.3f}"] for k, v in t.items()],
        )
    )
    print(
        f"\nrecording adds {100 * (t['total'] / t['bare'] - 1):.1f}% in total "
        f"({100 * (t['loop + close'] / t['bare'] - 1):.1f}% for loop + close); bar: at most 10%"
    )
    print(
        f"driver / hand-written: {t['driver total'] / t['total']:.3f} in total, "
        f"{t['driver loop + close'] / t['loop + close']:.3f} for loop + close; bar: at most 1 "
        "(within noise)"
    )


if __name__ == "__main__":
    main()
