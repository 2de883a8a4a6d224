"""Shared helpers for the ZarrSink tests: deterministic frames and a scan that records them."""

import itertools
import json
import time

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


def fail_after_eight(sink, writer):
    """Record frames 8..16 into `sink` (8 committed, blocks of 4) while its writer fails: the
    block 8..12 fails (the caller arranged why), and the flush of 12..16 reports it to the loop.
    Returns the sink, whose flags must say so, with 8 frames still committed."""
    sink = run_steps(sink, steps(8, 12))
    deadline = time.monotonic() + 30
    while writer.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.error is not None and writer.committed == 8
    sink = run_steps(sink, steps(12, 16))
    assert int(sink.flags) & js.Flag.WRITE_FAILED
    return sink


def edit_meta(store, **changes):
    """Update the jaxsinks attributes of the run at the local path `store` with `changes`, as a
    hand edit (or damage) would."""
    root = store / "zarr.json"
    doc = json.loads(root.read_text())
    doc["attributes"]["jaxsinks"].update(changes)
    root.write_text(json.dumps(doc))
