"""An ensemble of replicas split over a mesh axis, recorded by a sharded ZarrSink (shared by the
single-process and the multi-process tests)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

import jaxsinks as js

REPLICAS, DIM = 16, 3


def example():
    return {"x": jnp.zeros((REPLICAS, DIM), jnp.float32), "e": jnp.zeros(REPLICAS, jnp.float32)}


def initial(mesh=None, axis="r"):
    """The replicas' starting state, split over `mesh` (or on one device)."""
    x0 = np.arange(REPLICAS, dtype=np.float32)[:, None] * np.ones((1, DIM), np.float32)
    return (
        jnp.asarray(x0)
        if mesh is None
        else jax.device_put(x0, NamedSharding(mesh, PartitionSpec(axis)))
    )


def step_fn(x, i):
    x = x + 1.0
    return x, {"x": x, "e": jnp.sum(x, axis=-1) * i.astype(jnp.float32)}


def record_steps(sink, x, steps):
    """Advance and record every step (the sink's schedule decides), as inside shard_map."""

    def body(carry, i):
        x, sink = carry
        x, frame = step_fn(x, i)
        return (x, js.record(sink, step=i, time=0.5 * i.astype(jnp.float32), frame=frame)), None

    return jax.lax.scan(body, (x, sink), steps)[0]


def sharded_runner(mesh, sink, axis="r"):
    spec = PartitionSpec(axis)
    return jax.jit(
        jax.shard_map(
            record_steps,
            mesh=mesh,
            in_specs=(sink.partition_spec, spec, PartitionSpec()),
            out_specs=(spec, sink.partition_spec),
        )
    )


def expected(steps):
    """The frames a run recording every one of `steps` (starting from step 0) holds."""
    steps = np.asarray(steps)
    x = (
        np.arange(REPLICAS, dtype=np.float32)[None, :, None]
        + (steps + 1).astype(np.float32)[:, None, None]
        + np.zeros((1, 1, DIM), np.float32)
    )
    return {"x": x, "e": x.sum(-1) * steps.astype(np.float32)[:, None]}
