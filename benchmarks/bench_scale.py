"""Write throughput when scaling out: 1 vs 4 devices, and S3 (a local server) vs local disk.

    python benchmarks/bench_scale.py [--mib 256] [--repeats 3] [--no-s3]

The same data in every variant: an ensemble of 256 replicas x 1024 float32 values (1 MiB per
frame), advanced by a cheap jitted step and recorded every step by a `ZarrSink` (codec none, so
the numbers are about moving bytes, not compressing them). Variants, timed end to end (create,
the jitted scan, close: durable), in interleaved rounds in one process with 4 CPU devices:

* ``1 device``: the ensemble on one device, one staging block, one callback per flush;
* ``4 devices``: the ensemble split over a mesh of 4 devices (`shard_map`), each device
  flushing its quarter of every block to its own chunks;

each to local disk (a fresh directory under ``--dir``) and to S3 (moto's server on 127.0.0.1,
started and stopped by `jaxsinks.testing.local_s3_server`). Ratios are against ``1 device,
local disk`` of the same round. On this 2-core machine the 4 "devices" share 2 cores, and moto is
a Python server keeping objects in memory: the table says what the recording path costs, not
what a cluster or a real object store delivers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import table  # noqa: E402

import jaxsinks as js  # noqa: E402

R, D, CHUNK = 256, 1024, 32
FRAME_BYTES = R * D * 4


def step(x: jax.Array, i: jax.Array) -> jax.Array:
    return 0.999 * x + 1e-3 * jnp.sin(i.astype(jnp.float32))


def scan_recording(sink, x, steps):
    def body(carry, i):
        x, sink = carry
        x = step(x, i)
        return (x, js.record(sink, step=i, time=i.astype(jnp.float32), frame={"x": x})), None

    return jax.lax.scan(body, (x, sink), steps)[0]


def make_runner(devices: int, frames: int):
    """``run(store) -> seconds``: record `frames` frames of the ensemble to `store`, end to end."""
    steps = jnp.arange(frames, dtype=jnp.int32)
    example = {"x": jax.ShapeDtypeStruct((R, D), jnp.float32)}
    if devices == 1:
        x0 = jnp.zeros((R, D), jnp.float32)
        compiled = jax.jit(scan_recording)

        def create(store):
            return js.ZarrSink.create(store, example, chunk=CHUNK, codec=None)
    else:
        mesh = jax.make_mesh((devices,), ("r",))
        spec = PartitionSpec("r")
        x0 = jax.device_put(np.zeros((R, D), np.float32), NamedSharding(mesh, spec))
        compiled = None

        def create(store):
            return js.ZarrSink.create(store, example, chunk=CHUNK, codec=None, mesh=mesh, axis="r")

    def run(store) -> float:
        nonlocal compiled
        start = time.perf_counter()
        sink = create(store)
        if compiled is None:
            spec = PartitionSpec("r")
            compiled = jax.jit(
                jax.shard_map(
                    scan_recording,
                    mesh=mesh,
                    in_specs=(sink.partition_spec, spec, PartitionSpec()),
                    out_specs=(spec, sink.partition_spec),
                )
            )
        _, sink = compiled(sink, x0, steps)
        js.close(sink)
        return time.perf_counter() - start

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="logical MiB written per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the local-disk runs go")
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 variants")
    args = parser.parse_args()
    frames = max(CHUNK, args.mib * 2**20 // FRAME_BYTES)
    root = tempfile.mkdtemp(prefix="jaxsinks-bench-scale-", dir=args.dir)
    server = None
    if not args.no_s3:
        from jaxsinks.testing import local_s3_server

        server = local_s3_server(bucket="bench")
    runners = {1: make_runner(1, frames), 4: make_runner(4, frames)}
    targets = ["local disk"] + ([] if server is None else ["S3 (local moto)"])
    names = [(d, t) for t in targets for d in (1, 4)]
    counter = iter(range(10**6))

    def store(target: str):
        n = next(counter)
        return (
            os.path.join(root, f"run-{n}.zarr")
            if target == "local disk"
            else server.store(f"run-{n}.zarr")
        )

    try:
        for d, t in names:  # warm-up: compile, first store
            runners[d](store(t))
        samples: dict[tuple[int, str], list[float]] = {k: [] for k in names}
        ratios: dict[tuple[int, str], list[float]] = {k: [] for k in names}
        for _ in range(args.repeats):
            shutil.rmtree(root)
            os.makedirs(root)
            os.sync()
            times = {(d, t): runners[d](store(t)) for d, t in names}
            for k, seconds in times.items():
                samples[k].append(seconds)
                ratios[k].append(seconds / times[(1, "local disk")])
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if server is not None:
            server.stop()
    mib = frames * FRAME_BYTES / 2**20
    rows = []
    for d, t in names:
        seconds = statistics.median(samples[(d, t)])
        rows.append(
            [
                f"{d} device{'s' * (d > 1)}",
                t,
                seconds,
                mib / seconds,
                statistics.median(ratios[(d, t)]),
            ]
        )
    print(
        f"{frames} frames of {R}x{D} float32 ({mib:.0f} MiB), chunk {CHUNK}, codec none, "
        f"median of {args.repeats} interleaved rounds; {jax.device_count()} CPU devices on "
        f"{os.cpu_count()} cores\n"
    )
    print(table(["devices", "store", "seconds", "MiB/s", "time / (1 device, local disk)"], rows))


if __name__ == "__main__":
    main()
