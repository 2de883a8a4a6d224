"""Recording into a DeviceBuffer vs a bare scan and vs stacking scan outputs, forward and reverse.

    python benchmarks/bench_device.py [--quick]

Bars (issue 2): recording every step costs at most 1.1x stacking the scan's outputs;
value_and_grad through a DeviceBuffer costs at most 1.5x stacked outputs at every N, and grows
linearly in N.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from common import table, time_interleaved  # noqa: E402

import jaxsinks as js  # noqa: E402


def step_fn(x, p):
    return x + 0.01 * (jnp.sin(x) * p - x)


def forward_variants(n: int, d: int):
    x0 = jnp.linspace(0.0, 1.0, d)

    def bare(p):
        return jax.lax.scan(lambda x, _: (step_fn(x, p), None), x0, None, length=n)[0]

    def stacked(p):
        return jax.lax.scan(lambda x, _: (step_fn(x, p),) * 2, x0, None, length=n)

    def record(p):
        def body(c, step):
            x, sink = c
            x = step_fn(x, p)
            return (x, js.record(sink, step=step, frame={"x": x})), None

        sink = js.DeviceBuffer.create({"x": x0}, capacity=n)
        return jax.lax.scan(body, (x0, sink), jnp.arange(n))[0]

    def write(p):
        def body(c, step):
            x, sink = c
            x = step_fn(x, p)
            return (x, sink.write({"x": x}, step=step)), None

        sink = js.DeviceBuffer.create({"x": x0}, capacity=n)
        return jax.lax.scan(body, (x0, sink), jnp.arange(n))[0]

    p = jnp.float32(1.3)
    return {
        name: (lambda f=jax.jit(f): f(p))
        for name, f in dict(bare=bare, stacked=stacked, record=record, write=write).items()
    }


def reverse_variants(n: int, d: int):
    x0 = jnp.linspace(0.0, 1.0, d)

    def stacked(p):
        ys = jax.lax.scan(lambda x, _: (step_fn(x, p),) * 2, x0, None, length=n)[1]
        return jnp.mean(ys**2)

    def buffer(p):
        def body(c, step):
            x, sink = c
            x = step_fn(x, p)
            return (x, js.record(sink, step=step, frame={"x": x})), None

        sink = js.DeviceBuffer.create({"x": x0}, capacity=n)
        sink = jax.lax.scan(body, (x0, sink), jnp.arange(n))[0][1]
        return jnp.mean(sink.frames["x"] ** 2)

    p = jnp.float32(1.3)
    return {
        name: (lambda f=jax.jit(jax.value_and_grad(f)): f(p))
        for name, f in dict(stacked=stacked, buffer=buffer).items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {repeats} interleaved repeats, "
        "median\n"
    )

    rows = []
    shapes = (
        [(10_000, 3_000), (1_000, 300_000)] if not args.quick else [(2_000, 3_000), (200, 300_000)]
    )
    for n, d in shapes:
        t = time_interleaved(forward_variants(n, d), repeats)
        rows.append(
            [
                f"{n} steps x {d} floats",
                f"{t['bare'] * 1e3:.1f}",
                f"{t['stacked'] * 1e3:.1f}",
                f"{t['record'] * 1e3:.1f}",
                t["record"] / t["stacked"],
                t["write"] / t["stacked"],
                t["record"] / t["bare"],
            ]
        )
    print("Forward: record every step (ms; ratios; bar record/stacked <= 1.1)")
    print(
        table(
            ["case", "bare", "stacked", "record", "record/stacked", "write/stacked", "record/bare"],
            rows,
        )
    )

    rows = []
    ns = [1_000, 4_000, 16_000] if not args.quick else [500, 1_000, 2_000]
    base = None
    for n in ns:
        t = time_interleaved(reverse_variants(n, 1_000), repeats)
        base = base or t["buffer"] / n
        rows.append(
            [
                n,
                f"{t['stacked'] * 1e3:.1f}",
                f"{t['buffer'] * 1e3:.1f}",
                t["buffer"] / t["stacked"],
                (t["buffer"] / n) / base,
            ]
        )
    print(
        "\nReverse: value_and_grad of mean(x**2) over the trajectory, 1000 floats per frame "
        "(bar buffer/stacked <= 1.5; per-step cost flat means linear)"
    )
    print(
        table(["N", "stacked ms", "buffer ms", "buffer/stacked", "per-step cost vs N=first"], rows)
    )


if __name__ == "__main__":
    main()
