"""An ensemble spread over the devices of several processes, recorded to one Zarr run.

Each process of a `jax.distributed` job owns some devices; the ensemble's replica axis is split
over all of them with a mesh, the step runs in `shard_map`, and every device flushes its own
replicas to its own chunks of the store: nothing is gathered to one device or one process. The
primary process creates the run; `jaxsinks.close` commits it once every process has finished.

Run it on one machine (it starts the processes itself, on localhost):

    python examples/multihost.py --processes 2 --devices 2 --out multihost-run

On a cluster, start one copy per host with ``--process-id``, ``--coordinator host:port`` and the
same ``--processes``, as for any `jax.distributed` program.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2, help="processes of the JAX job")
    parser.add_argument("--devices", type=int, default=2, help="CPU devices per process")
    parser.add_argument(
        "--replicas", type=int, default=64, help="ensemble size (split over all devices)"
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--out", default="multihost-run", help="the Zarr run (a path or URL)")
    parser.add_argument(
        "--process-id", type=int, default=None, help="run as this process of the job"
    )
    parser.add_argument("--coordinator", default=None, help="host:port of process 0")
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: argparse.Namespace) -> None:
    """Start `args.processes` copies of this script as one JAX job on localhost, then check the
    run."""
    coordinator = f"127.0.0.1:{free_port()}"
    common = [
        f"--{k.replace('_', '-')}={v}"
        for k, v in vars(args).items()
        if k not in ("process_id", "coordinator")
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, *common, f"--process-id={i}", f"--coordinator={coordinator}"]
        )
        for i in range(args.processes)
    ]
    codes = [p.wait(timeout=600) for p in procs]
    if any(codes):
        sys.exit(f"a process failed (exit codes {codes})")
    check(args)


def worker(args: argparse.Namespace) -> None:
    """One process of the job: record this process's replicas."""
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=args.processes,
        process_id=args.process_id,
    )
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    import jaxsinks as js

    mesh = jax.make_mesh((jax.device_count(),), ("replica",))
    replica = PartitionSpec("replica")
    frame = {"x": jnp.zeros(args.replicas), "v": jnp.zeros(args.replicas)}
    sink = js.ZarrSink.create(
        args.out,
        frame,
        every=args.every,
        mesh=mesh,
        axis="replica",
        attrs={"processes": args.processes},
    )

    def simulate(x, v, k, sink):  # runs on each device, with its own replicas and its own sink
        def step(carry, i):
            x, v, sink = carry
            x, v = leapfrog(x, v, k)
            sink = js.record(sink, step=i, time=DT * i.astype(jnp.float32), frame={"x": x, "v": v})
            return (x, v, sink), None

        return jax.lax.scan(step, (x, v, sink), jnp.arange(args.steps, dtype=jnp.int32))[0]

    run = jax.jit(
        jax.shard_map(
            simulate,
            mesh=mesh,
            in_specs=(replica, replica, replica, sink.partition_spec),
            out_specs=(replica, replica, sink.partition_spec),
        )
    )
    x0, v0, k = initial(args.replicas)
    put = lambda a: jax.device_put(a, NamedSharding(mesh, replica))  # noqa: E731
    x, v, sink = run(put(x0), put(v0), put(k), sink)
    js.close(sink)
    print(
        f"process {jax.process_index()} of {jax.process_count()}: recorded the replicas of its "
        f"{jax.local_device_count()} devices",
        flush=True,
    )
    jax.distributed.shutdown()


DT = 0.05


def leapfrog(x, v, k):
    """One step of harmonic oscillators with stiffness `k` (numpy or jax arrays)."""
    v = v - 0.5 * DT * k * x
    x = x + DT * v
    return x, v - 0.5 * DT * k * x


def initial(replicas: int):
    import numpy as np

    i = np.arange(replicas, dtype=np.float32)
    return (
        np.cos(i).astype(np.float32),
        np.zeros(replicas, np.float32),
        (1.0 + i / replicas).astype(np.float32),
    )


def check(args: argparse.Namespace) -> None:
    """The run holds every replica at every recorded step (recomputed here with numpy)."""
    import numpy as np

    import jaxsinks as js

    run = js.open(args.out)
    x, v, k = initial(args.replicas)
    expected = []
    for i in range(args.steps):
        x, v = leapfrog(x, v, k)
        if i % args.every == 0:
            expected.append(x)
    np.testing.assert_allclose(run["x"][:], np.stack(expected), rtol=1e-4, atol=1e-5)
    print(
        f"{args.out}: {len(run)} frames of {run['x'].shape[1]} replicas, status {run.status}, "
        f"written by {run.attrs['processes']} processes; values match the reference"
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.process_id is None:
        launch(args)
    else:
        worker(args)


if __name__ == "__main__":
    main()
