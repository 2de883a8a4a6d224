"""Recorded runs for the CLI and plotting tests: every kind of field `plot` and `movie` handle."""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp

import jaxsinks as js

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEPS = 12  # frames 0..11, time = step / 2


def frame_at(step):
    s = step.astype(jnp.float32)
    ramp = jnp.arange(30, dtype=jnp.float32).reshape(6, 5)
    return {
        "grid": s + 0.01 * ramp,
        "energy": s * jnp.arange(3, dtype=jnp.float32),
        "e": 2.0 * s,
        "cube": jnp.stack([jnp.full((4, 5), s), jnp.full((4, 5), -s)]),
        "one": jnp.full((1, 4, 5), s),
    }


def write_run(path):
    """A closed run of 12 frames at `path`: 2-d, 1-d, scalar and 3-d fields, energy as float16."""
    example = jax.eval_shape(frame_at, jnp.int32(0))
    sink = js.ZarrSink.create(
        path,
        example,
        chunk=4,
        codec=js.Zstd(3),
        attrs={"T": 300},
        field_config={"energy": js.FieldConfig(dtype="float16", codec=js.Blosc("lz4", 5))},
    )

    def body(sink, step):
        time = 0.5 * step.astype(jnp.float32)
        return js.record(sink, step=step, time=time, frame=lambda: frame_at(step)), None

    js.close(jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(STEPS, dtype=jnp.int32))[0])(sink))
    return path


def write_per_system_run(path):
    """A per-system run of 3 systems over 6 steps: system k is recorded when mask[k]; e = 10 step +
    k."""
    sink = js.ZarrSink.create(path, {"e": jnp.zeros(3, jnp.float32)}, per_system=True, chunk=4)

    def body(sink, step):
        s = step.astype(jnp.float32)
        mask = jnp.stack([jnp.bool_(True), step % 2 == 0, step >= 3])
        frame = {"e": 10.0 * s + jnp.arange(3, dtype=jnp.float32)}
        return js.record(sink, step=step, time=s, frame=frame, mask=mask), None

    js.close(jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(6, dtype=jnp.int32))[0])(sink))
    return path


ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_example(name: str, *args: str, fails: bool = False) -> str:
    """Run ``examples/<name>`` in a subprocess from the repository root; its stdout (its stderr
    when `fails`: the run must then exit with an error)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    if fails:
        assert proc.returncode != 0, proc.stdout
        return proc.stderr
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
