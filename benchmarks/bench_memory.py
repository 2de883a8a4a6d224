"""Host memory of a long stream above a warmed-up process, for several `max_inflight_bytes`.

    python benchmarks/bench_memory.py [--gib 3] [--inflight-mib 64 256] [--dir /tmp]

Each setting runs in its own process: compile and run one block into a memory:// store (the
warm-up), take the RSS as the baseline, then stream `gib` GiB of 1 MiB float32 frames
(``chunk=16``, ``codec=None``) to local disk with RSS sampled every 0.1 s. Prints the median over
the last two thirds of the run and the maximum, above the baseline. Results: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading

FRAME_FLOATS = 2**18  # 1 MiB frames
CHUNK = 16
PER_CALL = 256


def measure(directory: pathlib.Path, inflight_mib: int, gib: float) -> dict[str, float]:
    """One stream in this process; returns MiB figures above the warmed-up baseline."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import psutil

    import jaxsinks as js
    from jaxsinks._io.writer import POOL_BLOCKS

    inflight = inflight_mib * 2**20
    frames = int(gib * 2**30 / (4 * FRAME_FLOATS) / PER_CALL) * PER_CALL
    example = {"x": jnp.zeros(FRAME_FLOATS, jnp.float32)}

    @jax.jit
    def run(sink, start):
        def body(sink, i):
            step = start + i
            frame = lambda: {  # noqa: E731
                "x": step.astype(jnp.float32) + jnp.arange(FRAME_FLOATS, dtype=jnp.float32)
            }
            return js.record(sink, step=step, frame=frame), None

        return jax.lax.scan(body, sink, jnp.arange(PER_CALL, dtype=jnp.int32))[0]

    js.close(
        run(
            js.ZarrSink.create(
                "memory://warm-up", example, chunk=CHUNK, codec=None, max_inflight_bytes=inflight
            ),
            jnp.int32(0),
        )
    )
    process = psutil.Process()
    base = process.memory_info().rss
    store = directory / f"memory-{inflight_mib}.zarr"
    sink = js.ZarrSink.create(store, example, chunk=CHUNK, codec=None, max_inflight_bytes=inflight)
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(process.memory_info().rss)
            stop.wait(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    for start in range(0, frames, PER_CALL):
        sink = run(sink, jnp.int32(start))
    js.close(sink)
    stop.set()
    sampler.join()
    ok = len(js.open(store)) == frames
    shutil.rmtree(store)
    steady = samples[len(samples) // 3 :]
    mib = 2**20
    return {
        "inflight_MiB": inflight_mib,
        "GiB": gib,
        "baseline_MiB": base / mib,
        "steady_above_MiB": (float(np.median(steady)) - base) / mib,
        "max_above_MiB": (max(samples) - base) / mib,
        "pool_MiB": 2 * POOL_BLOCKS * CHUNK * 4 * FRAME_FLOATS / mib,  # in use and kept for reuse
        "ok": ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=3.0)
    parser.add_argument("--inflight-mib", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--dir", default=None)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    directory = pathlib.Path(args.dir or tempfile.gettempdir())
    if args.child is not None:
        print(json.dumps(measure(directory, args.child, args.gib)))
        return
    print(
        "| max_inflight MiB | GiB streamed | baseline RSS MiB | steady RSS above MiB | max RSS "
        "above MiB | pool MiB | values ok |"
    )
    print("|---|---|---|---|---|---|---|")
    for inflight in args.inflight_mib:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(inflight),
                "--gib",
                str(args.gib),
                "--dir",
                str(directory),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {inflight} | {r['GiB']:g} | {r['baseline_MiB']:.0f} | {r['steady_above_MiB']:.0f} "
            f"| {r['max_above_MiB']:.0f} | {r['pool_MiB']:.0f} | {r['ok']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
