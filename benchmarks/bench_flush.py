"""What a device-staged flush costs the loop itself, with no storage: bench_zarr's simulation.

    python benchmarks/bench_flush.py [--configs one-core,all-cores] [--repeats 7]

Loops, timed in interleaved rounds in one process per configuration (medians; ratios to bare):

* bare: the loop without recording;
* staged: each recorded frame copied into a carried block of CHUNK frames (what jaxsinks and
  bench_zarr's ``staged overlap`` do);
* staged + empty call: the same, plus, once per block, a `lax.cond` whose branch hands the block
  to a host call (jaxsinks' `host_call`) that does nothing;
* staged + copying call: the host call copies the block into a preallocated host buffer, as a
  flush does (`HostWriter.submit`);
* per-frame copying call: no block on the device; each recorded frame goes to a host call of its
  own, which copies it into the host buffer (the other way out of a CPU loop: the frame copied
  once, while it is warm in the cache, but one host call per frame instead of one per block);
* bare again: the control (how far two identical loops land apart in this run).

bench_zarr's ``overlap`` reference has none of these: its frames are already in host memory.
So jaxsinks/overlap there is at least (staged + copying call)/bare here, plus what the writes
cost the loop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(repeats: int) -> dict[str, float]:
    import numpy as np
    from bench_zarr import CHUNK, EVERY, D, R, per_frame_loop, simulation, staged_loop

    from jaxsinks._io.callback import host_call

    jax, jnp, step, state0 = simulation()
    steps = 4096 * EVERY  # 1 GiB of frames
    host = np.ones((CHUNK, R, D), np.float32)  # touched, like the writer's pool

    def copying(block):
        np.copyto(host, block[:CHUNK], casting="no")
        return [np.int32(0)]

    def empty(block):
        return [np.int32(0)]

    def copy_frame(slot, frame):
        np.copyto(host[int(slot)], frame, casting="no")
        return [np.int32(0)]

    ack = jax.ShapeDtypeStruct((), jnp.int32)
    per_frame = per_frame_loop(
        jax, jnp, step, steps, lambda k, x: host_call(copy_frame, [ack], k % CHUNK, x)[0]
    )

    @jax.jit
    def bare(state):
        return jax.lax.scan(lambda c, i: (step(c), None), state, jnp.arange(steps))[0]

    loops = {
        "bare": bare,
        "staged": staged_loop(jax, jnp, step, steps),
        "staged + empty call": staged_loop(jax, jnp, step, steps, empty),
        "staged + copying call": staged_loop(jax, jnp, step, steps, copying),
        "per-frame copying call": per_frame,
        "bare again": bare,
    }
    for loop in loops.values():
        jax.block_until_ready(loop(state0))
    samples: dict[str, list[float]] = {k: [] for k in loops}
    for _ in range(repeats):
        for name, loop in loops.items():
            start = time.perf_counter()
            jax.block_until_ready(loop(state0))
            samples[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="one-core,all-cores")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, HERE)
    if args.child is not None:
        if args.child == "one-core":
            from bench_zarr import xla_on_one_core

            xla_on_one_core()
        print(json.dumps(measure(args.repeats)))
        return

    from common import table

    rows = []
    for config in args.configs.split(","):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", config, "--repeats", str(args.repeats)],
            env=dict(os.environ, JAX_PLATFORMS="cpu"),
            capture_output=True,
            text=True,
            check=True,
        )
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        rows += [[config, name, f"{t:.3f}", t / res["bare"]] for name, t in res.items()]
    print(f"The loop alone, 1 GiB of frames (median of {args.repeats} interleaved rounds)")
    print(table(["config", "loop", "seconds", "/bare"], rows))


if __name__ == "__main__":
    main()
