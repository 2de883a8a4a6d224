"""Host copies per flushed block, on each route of the host call (`jaxsinks._io.callback`).

    python benchmarks/bench_copies.py [--mib 16] [--repeats 30]

For each route, a jitted program hands one block (a float32 device array of ``--mib`` MiB) to a
host function that does nothing, and then a ZarrSink flushes blocks of that size to
``memory://``. Two counts of the copies made before the host function (the writer) sees the
block:

* exact: whether the host function's array is the device buffer itself (same address as
  `jax.Array.unsafe_buffer_pointer()`, so 0 copies), or another buffer (at least 1);
* measured: (time of a call with the block - time of a call with 4 bytes) / time of one copy of
  the block into a new numpy array (allocation and page faults included, like the copies a
  callback makes), timed in interleaved rounds. Noisy on a shared machine; the address is exact.

The sink rows: whether the writer's `host_flush` gets the sink's own staging buffer (the donated
block, updated in place), and the host copies after it: `HostWriter.submit` copies the block into
its pool (1 on every route), and TensorStore's writes reference that buffer instead of copying it
again (0 for an uncompressed chunk: `tests/test_buffers.py` checks that a ``memory://`` store
keeps the writer's own arrays).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
HERE = os.path.dirname(os.path.abspath(__file__))


def _interleaved(fns: list, repeats: int) -> list[float]:
    """Median seconds of each function, timed in interleaved rounds (same background load)."""
    for fn in fns:
        fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, s in zip(fns, samples):
            start = time.perf_counter()
            fn()
            s.append(time.perf_counter() - start)
    return [statistics.median(s) for s in samples]


def measure(route: str, mib: float, repeats: int) -> list[object]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxsinks as js
    from jaxsinks._io import callback as _callback
    from jaxsinks._io import writer as _writer
    from jaxsinks._sinks import stream as _stream

    _callback.ROUTE = route
    _stream._recorder.cache_clear()
    n = int(mib * 2**20) // 4
    seen: list[tuple[int, bool]] = []

    def noop(x):
        seen.append((x.ctypes.data, x.flags.owndata))
        return [np.int32(0)]

    ack = [jax.ShapeDtypeStruct((), jnp.int32)]
    flush = jax.jit(lambda x: _callback.host_call(noop, ack, x)[0])
    block = jnp.ones((n,), jnp.float32)
    tiny = jnp.ones((1,), jnp.float32)
    flush(block).block_until_ready()
    zero_copy = seen[-1][0] == block.unsafe_buffer_pointer()
    src = np.ones(n, np.float32)
    t_block, t_tiny, t_copy = _interleaved(
        [
            lambda: flush(block).block_until_ready(),
            lambda: flush(tiny).block_until_ready(),
            src.copy,
        ],
        repeats,
    )

    # A ZarrSink: does the writer get the staging buffer itself?
    rows = 64
    frame = {"x": jnp.zeros((n // rows,), jnp.float32)}
    got: list[int] = []
    host_flush = _writer.host_flush

    def spy(*args):
        got.append(args[5].ctypes.data)  # writer, shard, offset, n, bad, then the first field
        return host_flush(*args)

    _writer.host_flush = spy
    try:
        sink = js.ZarrSink.create(f"memory://bench-copies-{route}", frame, every=1, chunk=rows)
        step = jax.jit(
            lambda s, i: js.record(s, step=i, frame={"x": jnp.full((n // rows,), i, jnp.float32)}),
            donate_argnums=0,
        )
        for i in range(rows - 1):
            sink = step(sink, jnp.int32(i))
        staging = sink.columns.leaves[0].unsafe_buffer_pointer()
        sink = step(sink, jnp.int32(rows - 1))
        js.close(sink)
    finally:
        _writer.host_flush = host_flush
    sink_zero_copy = got == [staging]
    return [
        route,
        "0" if zero_copy else ">= 1",
        f"{(t_block - t_tiny) / t_copy:.2f}",
        f"{t_block * 1e3:.2f}",
        f"{t_tiny * 1e3:.3f}",
        f"{t_copy * 1e3:.2f}",
        "yes (0 copies)" if sink_zero_copy else "no (a copy)",
        "1 (pool memcpy; TensorStore references it)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=16.0)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    sys.path.insert(0, HERE)
    import jax
    from common import table

    from jaxsinks._io import callback as _callback

    routes = (["buffer_callback"] if _callback._buffer_callback is not None else []) + [
        "private",
        "io_callback",
    ]
    rows = [measure(route, args.mib, args.repeats) for route in routes]
    print(f"jax {jax.__version__}, {args.mib:g} MiB float32 block, CPU, median of {args.repeats}")
    print(
        table(
            [
                "route",
                "copies before fn (address)",
                "copies before fn (time / copy)",
                "call ms (block)",
                "call ms (4 B)",
                "copy ms (new array)",
                "sink: writer gets the staging buffer",
                "writer's own copies",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
