"""What a driver call costs on the host: `js.scan` against the same loop written by hand.

    python benchmarks/bench_drive_call.py [--repeats 7] [--calls 200]

A loop too small to time (8 steps of a 16-float state, recorded into a `DeviceBuffer` every
step), so that the call is all there is: creating the buffer, the driver's checks, the cached
program's dispatch, waiting and closing. Both variants are compiled once before timing (the
driver reuses its program because it is called with the same step and frame functions). Each
round times `--calls` calls of each variant, interleaved; the table gives the median per call
and the driver's difference from the hand-written loop (the difference of the medians, and the
median of the rounds' differences, which a busy machine disturbs less).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from common import table  # noqa: E402

import jaxsinks as js  # noqa: E402

STEPS = 8
X0 = jnp.ones(16, jnp.float32)


def step(x: jax.Array) -> jax.Array:
    return x * 0.99 + 0.01


def frame(x: jax.Array) -> dict[str, jax.Array]:
    return {"x": x}


@jax.jit
def hand_written(sink: js.DeviceBuffer, x: jax.Array) -> tuple[jax.Array, js.DeviceBuffer]:
    def body(carry, i):
        x, sink = carry
        x = step(x)
        return (x, js.record(sink, step=i + 1, frame=frame(x))), None

    (x, sink), _ = jax.lax.scan(body, (x, sink), jnp.arange(STEPS, dtype=jnp.int32))
    return x, sink


def by_hand() -> None:
    sink = js.DeviceBuffer.create(frame(X0), capacity=STEPS)
    x, sink = hand_written(sink, X0)
    jax.block_until_ready(x)
    js.close(sink)


def by_driver() -> None:
    sink = js.DeviceBuffer.create(frame(X0), capacity=STEPS)
    x, _ = js.scan(step, X0, sink, steps=STEPS, frame=frame)
    jax.block_until_ready(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    variants = {"hand-written": by_hand, "js.scan": by_driver}
    for run in variants.values():  # compile, and warm the caches
        for _ in range(20):
            run()
    per_call: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            for _ in range(args.calls):
                run()
            per_call[name].append((time.perf_counter() - start) / args.calls * 1e3)
    medians = {name: statistics.median(ms) for name, ms in per_call.items()}
    added = [d - h for d, h in zip(per_call["js.scan"], per_call["hand-written"])]
    print(
        table(
            ["variant", "ms per call (median)", "min", "max"],
            [[name, medians[name], min(ms), max(ms)] for name, ms in per_call.items()],
        )
    )
    print(
        f"\nthe driver adds {medians['js.scan'] - medians['hand-written']:.3f} ms per call "
        f"(ratio of medians {medians['js.scan'] / medians['hand-written']:.2f}; per round "
        f"{min(added):.3f} to {max(added):.3f} ms, median {statistics.median(added):.3f} ms)"
    )


if __name__ == "__main__":
    main()
