"""Record a run to S3 and read it back, against a real local S3 server started here.

Starts moto's S3 server on a free port (`jaxsinks.testing.local_s3_server`), streams a damped
random walk from a compiled scan to ``s3://<bucket>/walk.zarr`` with a `ZarrSink`, appends a
second segment (``mode="a"``), reads the run back with `jaxsinks.open` and with zarr-python
(through s3fs), checks both against the values computed in memory, and stops the server.
Point `store` at a real bucket (``js.s3("s3://my-bucket/walk.zarr")``) to record there instead.

    python examples/cloud_s3.py [--walkers 256] [--steps 400] [--every 4]

Needs ``pip install 'jaxsinks[cloud]'`` (moto, boto3, s3fs).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import zarr

import jaxsinks as js
from jaxsinks.testing import local_s3_server


@jax.jit(static_argnums=(1, 2))
def walk(key: jax.Array, walkers: int, steps: int, start: jax.Array) -> jax.Array:
    """The positions of a damped random walk (an Ornstein-Uhlenbeck chain), steps
    start..start+steps-1."""
    noise = jax.random.normal(jax.random.fold_in(key, start), (steps, walkers), jnp.float32)

    def body(x, dx):
        x = jnp.float32(0.9) * x + dx
        return x, x

    return jax.lax.scan(body, jnp.zeros(walkers, jnp.float32), noise)[1]


@jax.jit
def record(sink: js.ZarrSink, path: jax.Array, start: jax.Array) -> js.ZarrSink:
    """Record every frame of `path` (steps ``start ..``) into `sink` inside one compiled scan."""

    def body(sink, i):
        frame = {"x": path[i], "mean": jnp.mean(path[i])}
        return js.record(sink, step=start + i, frame=frame), None

    return jax.lax.scan(body, sink, jnp.arange(path.shape[0]))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walkers", type=int, default=256)
    parser.add_argument("--steps", type=int, default=400, help="steps in each of the two segments")
    parser.add_argument("--every", type=int, default=4)
    args = parser.parse_args()

    key = jax.random.key(0)
    example = {"x": jnp.zeros(args.walkers, jnp.float32), "mean": jnp.float32(0)}
    with local_s3_server("jaxsinks-example") as server:
        store = server.store("walk.zarr")  # endpoint, region and keys explicit; nothing global
        print(f"local S3 server at {server.endpoint} (pid {server.pid}); recording to {store}")
        paths = []
        started = time.perf_counter()
        for segment, mode in enumerate(("w-", "a")):
            start = jnp.int32(segment * args.steps)
            path = walk(key, args.walkers, args.steps, start)
            paths.append(np.asarray(path))
            sink = js.ZarrSink.create(store, example, every=args.every, chunk=16, mode=mode)
            js.close(record(sink, path, start))
            print(f"segment {segment} ({mode!r}): {js.open(store).committed} frames committed")
        elapsed = time.perf_counter() - started

        expected = np.concatenate(paths)[:: args.every]
        run = js.open(store)
        np.testing.assert_array_equal(run["x"][:], expected)
        np.testing.assert_array_equal(run.steps, np.arange(0, 2 * args.steps, args.every))
        group = zarr.open_group(
            server.url("walk.zarr"), mode="r", storage_options=server.storage_options
        )
        np.testing.assert_array_equal(group["x"][:], expected)
        np.testing.assert_allclose(group["mean"][:], expected.mean(axis=1), rtol=1e-5, atol=1e-6)
        print(
            f"read back {len(run)} frames of {run['x'].shape[1:]} from {store}: jaxsinks.open and "
            f"zarr-python agree with the values computed in memory ({elapsed:.1f} s recording)"
        )
    print(f"server stopped (pid {server.pid})")


if __name__ == "__main__":
    main()
