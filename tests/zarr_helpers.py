"""Shared helpers for the ZarrSink tests: deterministic frames and a scan that records them."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

import jaxsinks as js

D = 3
EXAMPLE = {"x": jnp.zeros(D, jnp.float32), "e": jnp.zeros((), jnp.float32)}
_names = itertools.count()


def memory_store() -> str:
    """A fresh memory:// store URL (memory stores live as long as the process)."""
    return f"memory://test-{next(_names)}"


def frame_at(step):
    s = jnp.asarray(step).astype(jnp.float32)
    return {"x": s + jnp.arange(D, dtype=jnp.float32), "e": 0.5 * s}


def expected(steps):
    steps = np.asarray(steps, np.float32)
    return {"x": steps[:, None] + np.arange(D, dtype=np.float32), "e": 0.5 * steps}


@jax.jit
def run_steps(sink, steps):
    """Record `frame_at(step)` for every step in `steps` (the sink's schedule decides)."""

    def body(sink, step):
        time = 0.25 * step.astype(jnp.float32)
        return js.record(sink, step=step, time=time, frame=lambda: frame_at(step)), None

    return jax.lax.scan(body, sink, steps)[0]


def steps(start, stop):
    return jnp.arange(start, stop, dtype=jnp.int32)
