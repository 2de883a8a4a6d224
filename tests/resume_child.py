"""A checkpointed simulation that a test kills and resumes: the child process of test_resume.py.

    python tests/resume_child.py OUT [--steps N] [--every K] [--loop scan|while] [--resume]
        [--no-checkpoint] [--sleep S] [--slow-save S]

It runs `simulate` (a `jaxsinks.scan`, or a `jaxsinks.while_loop` with ``--loop while``) into
OUT: a Zarr run ``run.zarr``, a CSV log ``log.csv`` and a DeviceBuffer, checkpointed to
``OUT/ckpt`` every K steps (none with ``--no-checkpoint``); ``--resume`` resumes from there
(``resume=True``). It prints ``started`` once the sinks are created (or reopened), and at the
end writes the DeviceBuffer's frames and the final state to ``OUT/result.npz`` and prints
``done``. ``--sleep S`` sleeps S seconds in every step (a host callback that changes no value,
so the compiled program is the same whatever S), so that a kill lands mid-run; ``--slow-save S``
sleeps S seconds inside every checkpoint write, after the data and before the rename, so that a
kill can land in one.
"""

import argparse
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

import jaxsinks as js

SIZE = 4096  # floats per state array
KEEP = 16  # of them recorded in the Zarr run
SLEEP = 0.0  # seconds per step (read by the host callback at run time)
DT = 0.01


def _nap(n):
    if SLEEP:
        time.sleep(SLEEP)
    return np.int32(0)


def step(state):
    """A damped oscillator pushed by noise from a key carried in the state (a typed PRNG key)."""
    key, sub = jax.random.split(state["key"])
    noise = 0.01 * jax.random.normal(sub, (SIZE,), jnp.float32)
    x = state["x"] + DT * state["v"]
    v = state["v"] - DT * jnp.sin(x) - 0.001 * state["v"] + noise
    wait = io_callback(_nap, jax.ShapeDtypeStruct((), jnp.int32), state["n"])
    return {"key": key, "x": x, "v": v, "n": state["n"] + 1 + wait}


def initial():
    return {
        "key": jax.random.key(7),
        "x": jnp.linspace(0.0, 1.0, SIZE, dtype=jnp.float32),
        "v": jnp.zeros(SIZE, jnp.float32),
        "n": jnp.int32(0),
    }


def zarr_frame(s):
    return {"x": s["x"][:KEEP], "e": jnp.sum(s["v"] ** 2)}


def csv_frame(s):
    return {"e": jnp.sum(s["v"] ** 2), "xm": jnp.mean(s["x"])}


def buffer_frame(s):
    return {"x0": s["x"][:4]}


def sinks(out: pathlib.Path, mode: str):
    example = initial()
    return (
        js.ZarrSink.create(out / "run.zarr", zarr_frame(example), chunk=16, mode=mode, every=2),
        js.CsvSink.create(out / "log.csv", csv_frame(example), block=32, mode=mode, every=5),
        js.DeviceBuffer.create(buffer_frame(example), capacity=400, every=7),
    )


def keep_going(s):
    return s["n"] < 100_000  # always true here: max_steps ends the loop


def simulate(out, *, steps, every, loop="scan", resume=False, checkpoint=True):
    """Run the simulation into `out`; ``(final state, the closed sinks)``."""
    out = pathlib.Path(out)
    made = sinks(out, "a" if resume else "w-")
    print("started", flush=True)
    options = dict(frame=(zarr_frame, csv_frame, buffer_frame), dt=DT, record_initial=True)
    if checkpoint:
        options.update(checkpoint=out / "ckpt", checkpoint_every=every, resume=resume)
    if loop == "while":
        state, closed, _ = js.while_loop(
            keep_going, step, initial(), made, max_steps=steps, **options
        )
    else:
        state, closed = js.scan(step, initial(), made, steps=steps, **options)
    return state, closed


def save_result(out: pathlib.Path, state, closed) -> None:
    frames = closed[2].read()
    result = {
        "x": np.asarray(state["x"]),
        "v": np.asarray(state["v"]),
        "key": np.asarray(jax.random.key_data(state["key"])),
        "n": np.asarray(state["n"]),
        "buffer_x0": np.asarray(frames.frames["x0"]),
        "buffer_step": np.asarray(frames.steps),
        "buffer_time": np.asarray(frames.times),
    }
    temp = out / "result.tmp.npz"
    np.savez(temp, **result)
    os.replace(temp, out / "result.npz")


def _slow_saves(seconds: float) -> None:
    """Sleep inside every checkpoint write (after the data, before the rename)."""
    real = np.savez

    def slow(file, *args, **kwargs):
        real(file, *args, **kwargs)
        time.sleep(seconds)

    np.savez = slow


def main(argv=None) -> None:
    global SLEEP
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--loop", choices=("scan", "while"), default="scan")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--no-checkpoint", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--slow-save", type=float, default=0.0)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    SLEEP = args.sleep
    if args.slow_save:
        _slow_saves(args.slow_save)
    out = pathlib.Path(args.out)
    state, closed = simulate(
        out,
        steps=args.steps,
        every=args.every,
        loop=args.loop,
        resume=args.resume,
        checkpoint=not args.no_checkpoint,
    )
    save_result(out, state, closed)
    print("done", flush=True)


if __name__ == "__main__":
    main()
