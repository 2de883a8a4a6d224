"""Streaming an ensemble simulation to local disk: jaxsinks vs the bare loop, the I/O floor and
the naive ways, plus host and device memory.

    python benchmarks/bench_zarr.py [--gib 1.0] [--quick] [--cpu]

The simulation is an Ornstein-Uhlenbeck ensemble (PySDE's use): 64 replicas x 1024 dof, float32,
every 2nd step recorded (256 KiB per frame; 4096 frames per GiB). Variants, timed in interleaved
rounds in one process:

* bare: the loop without recording;
* floor: TensorStore writing the same frames from numpy, same layout and codec (the I/O floor);
* jaxsinks: ZarrSink inside the scan, end to end (create ... close, durable);
* overlap: the bare loop while another thread issues the floor's writes one block at a time, paced
  at the loop's rate, the median of the bare runs so far (what any recorder must at least cost on
  this machine: the same writes, overlapped perfectly, with no recording work);
* staged overlap: the same, with the loop also copying each recorded frame into a carried block
  of frames on the device (what any recorder's loop must do at least; stacking the scan's outputs
  costs the same), with no host call: the reference for the work jaxsinks adds beyond that;
* naive: a Python loop over jitted chunks of steps, device_get, zarr-python append per frame;
* callback: an io_callback per recorded frame writing it with TensorStore.

The first five run in interleaved rounds (median reported), each round in its own seeded random
order, each run after `os.sync()` so that one variant's dirty pages are not written back during
the next one's timing, with a control: ``bare again``, the bare loop once more in each round,
whose ratio to ``bare`` shows how far two identical variants land apart in this run (the noise a
ratio's bar has to be read against). ``paired jaxsinks/overlap`` is the median of each round's
jaxsinks/overlap, beside the ratio of the medians; each round's is printed too. naive and
callback are orders of magnitude slower: they run once, on a fraction of the frames, and their
overhead is scaled to the full run.

Each configuration runs in its own subprocess, because XLA's threading is fixed when its client
starts: ``all-cores`` (XLA's default: on this 2-core machine the simulation's computation runs on
both cores, 1.5-1.9 of them when nothing else runs), ``one-core`` (XLA's CPU client started with
one core, so that its threads compute on that core only, while every thread started later (the
recorders' writers, TensorStore's) may use any core: like an accelerator, it leaves a host core to
the writer; see `xla_on_one_core`), and ``accelerator`` (JAX's default device, a GPU where there
is one: ``--configs accelerator``).

Bars (issue 3): jaxsinks end to end <= 1.25 x max(bare, floor); its recording overhead (end to end
minus bare) >= 5x smaller than naive's; peak host memory of a 10x longer run <= 1.1x; device
memory O(chunk). Issue 12: jaxsinks / overlap <= 1.05 in both configurations (within 5% of the
same writes perfectly overlapped with the bare loop, measured in the same run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
#: `--cpu`'s columns: `common.cpu_seconds` groups; writer threads: jaxsinks' writer and committer
#: (or the overlap's Python writer thread), which end with the run.
CPU_COLUMNS = ("machine", "process", "tensorstore", "writer threads", "rest")
R, D, EVERY, CHUNK = 64, 1024, 2, 64
#: Seeds the order of the variants in each round (see `measure`).
ORDER_SEED = 12
FRAME_BYTES = R * D * 4


def simulation():
    import jax
    import jax.numpy as jnp

    def step(carry):
        key, x = carry
        key, sub = jax.random.split(key)
        return key, x - 0.01 * x + 0.1 * jax.random.normal(sub, x.shape)

    return jax, jnp, step, (jax.random.key(0), jnp.zeros((R, D)))


CODECS = {"none": None, "zstd1": ("zstd", 1), "blosc-lz4": ("blosc", "lz4")}


def make_codec(name: str):
    import jaxsinks as js

    return {"none": None, "zstd1": js.Zstd(1), "blosc-lz4": js.Blosc("lz4", 1, "shuffle")}[name]


def zarr_python_codec(name: str):
    import zarr

    return {
        "none": None,
        "zstd1": zarr.codecs.ZstdCodec(level=1),
        "blosc-lz4": zarr.codecs.BloscCodec(cname="lz4", clevel=1, shuffle="shuffle"),
    }[name]


def recorder(jax, jnp, step, steps: int):
    """The simulation recording every frame into a sink, jitted: (state, sink) -> (state, sink)."""
    import jaxsinks as js

    @jax.jit
    def recorded(state, sink):
        def body(c, i):
            state, sink = c
            state = step(state)
            return (state, js.record(sink, step=i, frame={"x": state[1]})), None

        return jax.lax.scan(body, (state, sink), jnp.arange(steps))[0]

    return recorded


def staged_loop(jax, jnp, step, steps: int, call=None):
    """The bare loop copying each recorded frame into a carried block of CHUNK frames on the
    device, as a recorder must (stacking scan outputs costs the same), jitted. With `call`, each
    full block is also handed to ``host_call(call, ...)`` in a `lax.cond` (bench_flush.py)."""
    from jaxsinks._io.callback import host_call

    ack = jax.ShapeDtypeStruct((), jnp.int32)

    @jax.jit
    def staged(state):
        block = jnp.zeros((CHUNK + 1, *state[1].shape), state[1].dtype)

        def body(carry, i):
            state, block, acc = carry
            state = step(state)
            slot = (i // EVERY) % CHUNK
            block = jax.lax.cond(
                i % EVERY == 0,
                lambda b: jax.lax.dynamic_update_index_in_dim(b, state[1], slot, 0),
                lambda b: b,
                block,
            )
            if call is not None:
                acc = jax.lax.cond(
                    (i % EVERY == 0) & (slot == CHUNK - 1),
                    lambda b: acc + host_call(call, [ack], b)[0],
                    lambda b: acc,
                    block,
                )
            return (state, block, acc), None

        return jax.lax.scan(body, (state, block, jnp.int32(0)), jnp.arange(steps))[0]

    return staged


def per_frame_loop(jax, jnp, step, steps: int, call):
    """The bare loop handing each recorded frame to ``call(frame index, frame)`` (a host call
    returning an int32) in a `lax.cond`, jitted: the per-frame callback that bench_zarr's
    ``callback`` variant writes from and bench_flush.py's ``per-frame copying call`` copies."""

    @jax.jit
    def loop(state):
        def body(carry, i):
            state, acc = carry
            state = step(state)
            acc = jax.lax.cond(
                i % EVERY == 0, lambda: acc + call(i // EVERY, state[1]), lambda: acc
            )
            return (state, acc), None

        return jax.lax.scan(body, (state, jnp.int32(0)), jnp.arange(steps))[0]

    return loop


def measure(
    config: str,
    frames: int,
    repeats: int,
    naive_fraction: float,
    workdir: str,
    codec_name: str,
    naive: bool = True,
    routes: tuple[str, ...] = (),
    probes: bool = False,
    cpu: bool = False,
) -> dict:
    """Time every variant in interleaved rounds; runs inside the configuration's subprocess."""
    import numpy as np
    import tensorstore as ts
    from common import cpu_seconds
    from jax.experimental import io_callback

    import jaxsinks as js
    from jaxsinks._io.layout import make_layout

    jax, jnp, step, state0 = simulation()
    steps = frames * EVERY
    codec = make_codec(codec_name)

    @jax.jit
    def bare(state):
        return jax.lax.scan(lambda c, i: (step(c), None), state, jnp.arange(steps))[0]

    staged = staged_loop(jax, jnp, step, steps)

    recorded = recorder(jax, jnp, step, steps)

    def jaxsinks_run(store):
        sink = js.ZarrSink.create(store, {"x": state0[1]}, every=EVERY, chunk=CHUNK, codec=codec)
        _, sink = recorded(state0, sink)
        js.close(sink)

    def jaxsinks_on(route):
        """jaxsinks with the flush forced onto a host-call route (see jaxsinks/_io/callback.py),
        compiled now so that the other variants keep the default route."""
        from jaxsinks._io import callback as _callback
        from jaxsinks._sinks import stream as _stream

        saved, _callback.ROUTE = _callback.ROUTE, route
        _stream._recorder.cache_clear()
        probe = js.ZarrSink.create(
            f"memory://bench-zarr-{route}", {"x": state0[1]}, every=EVERY, chunk=CHUNK, codec=codec
        )
        compiled = recorder(jax, jnp, step, steps).lower(state0, probe).compile()
        js.close(probe)
        _callback.ROUTE = saved
        _stream._recorder.cache_clear()

        def run(store):
            sink = js.ZarrSink.create(
                store, {"x": state0[1]}, every=EVERY, chunk=CHUNK, codec=codec
            )
            _, sink = compiled(state0, sink)
            js.close(sink)

        return run

    # The frames themselves, for the floor: the same simulation, stacked in host memory.
    @jax.jit
    def chunk_of_frames(state):
        def body(c, _):
            c = step(step(c))
            return c, c[1]

        return jax.lax.scan(body, state, None, length=CHUNK)

    state, blocks = state0, []
    for _ in range(frames // CHUNK):
        state, xs = chunk_of_frames(state)
        blocks.append(np.asarray(xs))
    data = np.concatenate(blocks)
    del blocks
    layout = make_layout(
        js.FrameSpec.from_example({"x": state0[1]}),
        chunk=CHUNK,
        chunks_per_shard=None,
        codec=codec,
        field_config={},
        time_dtype=np.dtype("float32"),
        batch_size=None,
    )

    def floor_arr(path):
        return ts.open(
            {
                "driver": "zarr3",
                "kvstore": {"driver": "file", "path": path + "/x/"},
                "metadata": layout.fields[0].metadata(frames),
            },
            create=True,
        ).result()

    def floor_run(path, period=0.0):
        arr = floor_arr(path)
        writes, start = [], time.perf_counter()
        for k, a in enumerate(range(0, frames, CHUNK)):
            if period:  # pace the blocks like a recorder's flushes
                time.sleep(max(0.0, start + (k + 1) * period - time.perf_counter()))
            writes.append(arr[a : a + CHUNK].write(data[a : a + CHUNK]))
        for w in writes:
            w.commit.result()

    naive_frames = max(CHUNK, int(frames * naive_fraction) // CHUNK * CHUNK)

    @jax.jit
    def naive_chunk(state):
        def body(c, _):
            c = step(step(c))
            return c, c[1]

        return jax.lax.scan(body, state, None, length=CHUNK)

    def naive_run(path):
        import zarr

        arr = zarr.create_array(
            path,
            shape=(0, R, D),
            chunks=(CHUNK, R, D),
            dtype="float32",
            compressors=zarr_python_codec(codec_name),
            overwrite=True,
        )
        state = state0
        for _ in range(naive_frames // CHUNK):
            state, xs = naive_chunk(state)
            for frame in jax.device_get(xs):
                arr.append(frame[None])

    callback_frames = naive_frames
    callback_steps = callback_frames * EVERY

    def callback_run(path):
        arr = ts.open(
            {
                "driver": "zarr3",
                "kvstore": {"driver": "file", "path": path + "/x/"},
                "metadata": layout.fields[0].metadata(frames),
            },
            create=True,
        ).result()
        commits = []

        def write_frame(i, x):
            w = arr[int(i)].write(x)
            w.copy.result()
            commits.append(w.commit)
            return np.int32(0)

        ack = jax.ShapeDtypeStruct((), jnp.int32)
        run = per_frame_loop(
            jax, jnp, step, callback_steps, lambda k, x: io_callback(write_frame, ack, k, x)
        )
        jax.block_until_ready(run(state0))
        for c in commits:
            c.result()

    def overlap_run(path, loop=bare):
        writer = threading.Thread(target=floor_run, args=(path, pace[0]))
        writer.start()
        jax.block_until_ready(loop(state0))
        writer.join()

    runs = iter(range(10**6))
    used: dict[str, list[dict[str, float]]] = {}  # --cpu: each round's CPU seconds, by thread
    last_used: dict[str, float] = {}  # --cpu: those of the last run `timed` timed

    def timed(fn) -> float:
        """Seconds of fn(fresh path); creating and deleting the path are not timed."""
        path = os.path.join(workdir, f"run{next(runs)}.zarr")
        os.sync()
        before = cpu_seconds() if cpu else {}
        start = time.perf_counter()
        fn(path)
        elapsed = time.perf_counter() - start
        if cpu:
            after = cpu_seconds()
            delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
            live = sum(v for k, v in delta.items() if k not in ("machine", "process"))
            # jaxsinks' writer threads end at close (the overlap's Python writer at its join)
            delta["writer threads"] = delta.pop("jaxsinks", 0.0) + delta["process"] - live
            last_used.clear()
            last_used.update(delta)
        shutil.rmtree(path, ignore_errors=True)
        return elapsed

    variants = {
        "bare": lambda path: jax.block_until_ready(bare(state0)),
        "floor": floor_run,
        "jaxsinks": jaxsinks_run,
        "overlap": overlap_run,
        "staged overlap": lambda path: overlap_run(path, staged),
    }
    variants.update({f"jaxsinks[{route}]": jaxsinks_on(route) for route in routes})
    if probes:
        variants.update(probe_variants(jax, jnp, step, state0, frames, floor_arr))
        variants["probe[fsync each]"] = fsync_each(jaxsinks_run)
        variants["probe[sync per record]"] = sync_per_record(jaxsinks_run)
        variants["probe[copying writes]"] = copying_writes(jaxsinks_run)
    variants["bare again"] = variants["bare"]  # the control: how far identical runs land apart
    pace = [0.0]
    for fn in variants.values():  # warm up: compile and touch everything once
        timed(fn)
    # The overlap's writes are paced at the bare loop's rate: the median of every bare run so far
    # (one run's time alone would make the reference as noisy as that run).
    bares = [timed(variants["bare"]) for _ in range(3)]
    pace[0] = statistics.median(bares) / (frames // CHUNK)
    samples: dict[str, list[float]] = {k: [] for k in variants}
    # Each round runs the variants in its own order (seeded, so a run can be repeated): a fixed
    # order gives each variant the same predecessor in every round, and what a run leaves behind
    # (dirty pages, freed page cache, idle cores) then biases the next one's time the same way
    # each round (with a fixed order, `bare again/bare` read 0.82 with XLA on one core).
    order = random.Random(ORDER_SEED)
    for _ in range(repeats):
        names = list(variants)
        order.shuffle(names)
        for name in names:
            fn = variants[name]
            samples[name].append(timed(fn))
            used.setdefault(name, []).append(dict(last_used))
            if name in ("bare", "bare again"):
                loops = bares + samples["bare"] + samples["bare again"]
                pace[0] = statistics.median(loops) / (frames // CHUNK)
    result = {k: statistics.median(v) for k, v in samples.items()}
    if cpu:  # the median of the timed rounds' CPU seconds, per thread group
        result["cpu"] = {
            name: {g: statistics.median(d.get(g, 0.0) for d in rounds) for g in CPU_COLUMNS}
            for name, rounds in used.items()
        }
    # The ratios of each round's runs (neighbours in time, so a slow spell of the machine hits
    # both), as a second estimate of the bar's ratio beside the ratio of the medians.
    result["rounds jaxsinks/overlap"] = [
        j / o for j, o in zip(samples["jaxsinks"], samples["overlap"])
    ]
    result["paired jaxsinks/overlap"] = statistics.median(result["rounds jaxsinks/overlap"])
    result["naive"] = timed(naive_run) if naive else float("nan")
    result["callback"] = timed(callback_run) if naive else float("nan")
    result["naive_fraction"] = naive_frames / frames
    result["callback_fraction"] = callback_frames / frames
    result["gib"] = frames * FRAME_BYTES / 2**30
    sink = js.ZarrSink.create("memory://device-bytes", {"x": state0[1]}, every=EVERY, chunk=CHUNK)
    result["device_bytes"] = sum(x.nbytes for x in jax.tree.leaves(sink))
    js.close(sink)
    return result


def with_setting(run, owner, name: str, value):
    """`run` with ``owner.name`` set to `value` while it runs (a probe of the previous way)."""

    def probe(path):
        saved = getattr(owner, name)
        setattr(owner, name, value)
        try:
            run(path)
        finally:
            setattr(owner, name, saved)

    return probe


def fsync_each(run):
    """`run` with TensorStore fsyncing every file it writes (each chunk, then its folder), as
    jaxsinks wrote before it synced a block's files together (``--probes``: probe[fsync each])."""
    import tensorstore as ts

    from jaxsinks._io import tsio

    each = ts.Context(ts.Context.Spec({"file_io_sync": True}), parent=tsio.WRITE_CONTEXT)
    return with_setting(run, tsio, "WRITE_CONTEXT", each)


def sync_per_record(run):
    """`run` with the blocks synced only at each record of the count (every half second), not
    also once 8 MiB more are written, as jaxsinks did before (``--probes``: probe[sync per
    record])."""
    from jaxsinks._io.zarr_writer import ZarrWriter

    return with_setting(run, ZarrWriter, "sync_bytes", None)


def copying_writes(run):
    """`run` with TensorStore copying each block before writing it, as jaxsinks did before its
    writes referenced the writer's buffer (``--probes``: probe[copying writes])."""
    from jaxsinks._io import zarr_writer

    return with_setting(run, zarr_writer, "REFERENCE", False)


def probe_variants(jax, jnp, step, state0, frames: int, open_array) -> dict:
    """Two loops that isolate the cost of a block flush's shape (``--probes``):

    * probe[cond]: the staged loop plus, once per block, a `lax.cond` whose taken branch hands the
      block to a host callback that does nothing: the conditional host call alone, no writing;
    * probe[blocked]: a scan over blocks whose body scans one block's steps, stacks its frames and
      hands them to a host callback unconditionally, which writes them with TensorStore: the flush
      with no conditional at all (what a loop driver that knows the block size can do).
    """
    import numpy as np
    from jax.experimental import io_callback

    block_steps = CHUNK * EVERY
    steps = frames * EVERY
    ack = jax.ShapeDtypeStruct((), jnp.int32)

    @jax.jit
    def cond_loop(state):
        block = jnp.zeros((CHUNK, *state[1].shape), state[1].dtype)

        def body(carry, i):
            state, block, acc = carry
            state = step(state)
            slot = (i // EVERY) % CHUNK
            block = jax.lax.dynamic_update_index_in_dim(block, state[1], slot, 0)
            acc = jax.lax.cond(
                i % block_steps == block_steps - 1,
                lambda b: acc + io_callback(lambda b: np.int32(0), ack, b),
                lambda b: acc,
                block,
            )
            return (state, block, acc), None

        return jax.lax.scan(body, (state, block, jnp.int32(0)), jnp.arange(steps))[0]

    def blocked_run(path):
        arr, writes = open_array(path), []

        def write(k, xs):
            writes.append(arr[int(k) * CHUNK : (int(k) + 1) * CHUNK].write(np.array(xs)))
            return np.int32(0)

        @jax.jit
        def run(state):
            def one_block(state, k):
                def two_steps(c, _):
                    c = step(step(c))
                    return c, c[1]

                state, xs = jax.lax.scan(two_steps, state, None, length=CHUNK)
                return state, io_callback(write, ack, k, xs)

            return jax.lax.scan(one_block, state, jnp.arange(frames // CHUNK))

        jax.block_until_ready(run(state0))
        for w in writes:
            w.commit.result()

    return {
        "probe[cond]": lambda path: jax.block_until_ready(cond_loop(state0)),
        "probe[blocked]": blocked_run,
    }


def peak_rss(config: str, frames: int, workdir: str, codec_name: str) -> dict:
    """Run only the jaxsinks variant in a fresh process; its peak RSS and device bytes."""
    out = _subprocess(
        config, ["--child-memory", str(frames), "--workdir", workdir, "--codec", codec_name]
    )
    return json.loads(out)


def child_memory(frames: int, workdir: str, codec_name: str) -> dict:
    import resource

    import jaxsinks as js

    jax, jnp, step, state0 = simulation()
    steps = frames * EVERY

    recorded = recorder(jax, jnp, step, steps)

    store = os.path.join(workdir, f"memory-{frames}.zarr")
    sink = js.ZarrSink.create(
        store, {"x": state0[1]}, every=EVERY, chunk=CHUNK, codec=make_codec(codec_name), mode="w"
    )
    device_bytes = sum(x.nbytes for x in jax.tree.leaves(sink))
    start = time.perf_counter()
    _, sink = recorded(state0, sink)
    js.close(sink)
    elapsed = time.perf_counter() - start
    assert len(js.open(store)) == frames
    shutil.rmtree(store)
    return {
        "frames": frames,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device_bytes": device_bytes,
        "seconds": elapsed,
    }


def xla_on_one_core() -> None:
    """Start XLA's CPU client on one core, then let the process use every core again.

    XLA sizes its CPU thread pools by the cores the process may run on when the client starts, and
    its threads keep that affinity: the simulation computes on one core only, and threads started
    afterwards (the recorders' writer threads, TensorStore's pools, the overlap's writer) may run
    on any core. XLA has no flag for this: the ``intra_op_parallelism_threads=1`` this benchmark
    used to put in XLA_FLAGS is not an XLA flag (XLA ignored it), and
    ``--xla_cpu_multi_thread_eigen=false`` only concerns Eigen's matrix kernels, so the loop used
    both cores in both configurations.
    """
    import jax

    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    try:
        jax.devices("cpu")  # creates the CPU client and its threads, on that core
    finally:
        os.sched_setaffinity(0, cores)


def _subprocess(config: str, args: list[str]) -> str:
    env = dict(os.environ)
    if config != "accelerator":
        env["JAX_PLATFORMS"] = "cpu"
    if config == "one-core":
        args = [*args, "--xla-one-core"]
    proc = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    return proc.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description="jaxsinks Zarr streaming benchmark")
    parser.add_argument("--gib", type=float, default=1.0, help="GiB recorded by the timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--naive-fraction",
        type=float,
        default=1 / 16,
        help="fraction of the frames the naive and callback variants record (their "
        "overhead is scaled up)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="0.125 GiB, one repeat, memory check at 0.05/0.5 GiB"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument(
        "--no-naive",
        action="store_true",
        help="skip the naive and per-frame callback variants (slow; for short runs)",
    )
    parser.add_argument("--configs", default="one-core,all-cores")
    parser.add_argument(
        "--routes",
        default="",
        help="also time jaxsinks with its flush forced onto these host-call routes "
        "(comma-separated: private, io_callback, buffer_callback; see jaxsinks/_io/callback.py), "
        "in the same rounds",
    )
    parser.add_argument(
        "--probes",
        action="store_true",
        help="also time probe[cond], probe[blocked] (see probe_variants), probe[fsync each] "
        "(see fsync_each) and probe[sync per record] (see sync_per_record), in the same rounds",
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="also print the CPU seconds each variant used (Linux): the machine's, the "
        "recording process's, and by thread (TensorStore's, the writer threads', the rest)",
    )
    parser.add_argument(
        "--codec",
        default="none",
        choices=sorted(CODECS),
        help="codec for every variant (the OU state is noise: compression buys little)",
    )
    parser.add_argument("--child-measure", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-memory", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--xla-one-core", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, HERE)
    if args.xla_one_core:
        xla_on_one_core()

    if args.child_measure is not None:
        frames = int(args.gib * 2**30 / FRAME_BYTES) // CHUNK * CHUNK
        print(
            json.dumps(
                measure(
                    args.child_measure,
                    frames,
                    args.repeats,
                    args.naive_fraction,
                    args.workdir,
                    args.codec,
                    naive=not args.no_naive,
                    routes=tuple(r for r in args.routes.split(",") if r),
                    probes=args.probes,
                    cpu=args.cpu,
                )
            )
        )
        return
    if args.child_memory is not None:
        print(json.dumps(child_memory(args.child_memory, args.workdir, args.codec)))
        return

    from common import table

    if args.quick:
        args.gib, args.repeats = 0.125, 1
    mem_gib = (0.05, 0.5) if args.quick else (args.gib, 10 * args.gib)
    workdir = tempfile.mkdtemp(prefix="jaxsinks-bench-", dir=os.environ.get("BENCH_DIR", "."))
    try:
        rows, mem_rows, route_rows, cpu_rows, round_rows = [], [], [], [], []
        for config in args.configs.split(","):
            res = json.loads(
                _subprocess(
                    config,
                    [
                        "--child-measure",
                        config,
                        "--gib",
                        str(args.gib),
                        "--repeats",
                        str(args.repeats),
                        "--naive-fraction",
                        str(args.naive_fraction),
                        "--workdir",
                        workdir,
                        "--codec",
                        args.codec,
                    ]
                    + (["--no-naive"] if args.no_naive else [])
                    + (["--routes", args.routes] if args.routes else [])
                    + (["--probes"] if args.probes else [])
                    + (["--cpu"] if args.cpu else []),
                )
            )
            ceiling = max(res["bare"], res["floor"])
            overhead = res["jaxsinks"] - res["bare"]
            naive_overhead = (res["naive"] - res["bare"] * res["naive_fraction"]) / res[
                "naive_fraction"
            ]
            callback_overhead = (res["callback"] - res["bare"] * res["callback_fraction"]) / res[
                "callback_fraction"
            ]
            rows.append(
                [
                    config,
                    f"{res['gib']:.2f}",
                    f"{res['bare']:.2f}",
                    f"{res['floor']:.2f}",
                    f"{res['overlap']:.2f}",
                    f"{res['jaxsinks']:.2f}",
                    res["jaxsinks"] / ceiling,
                    res["overlap"] / ceiling,
                    res["jaxsinks"] / res["overlap"],
                    res["paired jaxsinks/overlap"],
                    res["bare again"] / res["bare"],
                    f"{res['staged overlap']:.2f}",
                    res["jaxsinks"] / res["staged overlap"],
                    f"{overhead:.2f}",
                    f"{naive_overhead:.1f}",
                    naive_overhead / max(overhead, 1e-9),
                    f"{callback_overhead:.1f}",
                ]
            )
            round_rows.append(
                f"{config}: " + " ".join(f"{r:.3f}" for r in res["rounds jaxsinks/overlap"])
            )
            route_rows += [
                [
                    config,
                    name,
                    f"{res[name]:.2f}",
                    res[name] / res["overlap"],
                    res[name] / res["staged overlap"],
                ]
                for name in res
                if name.startswith(("jaxsinks[", "probe["))
            ]
            for name, groups in res.get("cpu", {}).items():
                cpu_rows.append(
                    [config, name, f"{res[name]:.2f}"]
                    + [f"{groups.get(g, 0.0):.2f}" for g in CPU_COLUMNS]
                )
            for gib in () if args.no_memory else mem_gib:
                frames = int(gib * 2**30 / FRAME_BYTES) // CHUNK * CHUNK
                m = peak_rss(config, frames, workdir, args.codec)
                mem_rows.append(
                    [
                        config,
                        f"{gib:.2f}",
                        m["frames"],
                        f"{m['peak_rss_mib']:.0f}",
                        f"{m['device_bytes'] / 2**20:.1f}",
                        f"{m['seconds']:.1f}",
                    ]
                )
        print(f"codec: {args.codec}")
        print(
            f"End to end, seconds (median of {args.repeats} interleaved rounds); bars: "
            "jaxsinks/max(bare,floor) <= 1.25, jaxsinks/overlap <= 1.05, "
            "naive/jaxsinks overhead >= 5"
        )
        print(
            table(
                [
                    "config",
                    "GiB",
                    "bare",
                    "floor",
                    "overlap",
                    "jaxsinks",
                    "jaxsinks/max(bare,floor)",
                    "overlap/max(bare,floor)",
                    "jaxsinks/overlap",
                    "paired jaxsinks/overlap",
                    "control: bare again/bare",
                    "staged overlap",
                    "jaxsinks/staged overlap",
                    "overhead",
                    "naive overhead (scaled)",
                    "naive/jaxsinks",
                    "callback overhead (scaled)",
                ],
                rows,
            )
        )
        print("\njaxsinks/overlap in each round, in the order run:")
        print("\n".join(round_rows))
        if route_rows:
            print(
                "\nThe same, with the flush forced onto other host-call routes "
                "(default: jaxsinks above)"
            )
            print(
                table(["config", "variant", "seconds", "/overlap", "/staged overlap"], route_rows)
            )
        if cpu_rows:
            print(
                "\nCPU seconds used in each variant's run (medians of the rounds): the whole "
                "machine's, the recording process's, and by thread (rest: XLA's, the main "
                "thread, where the flush's copy runs too)"
            )
            print(table(["config", "variant", "wall seconds", *CPU_COLUMNS], cpu_rows))
        print(
            "\nMemory: peak host RSS of the recording process, and the sink's device bytes "
            "(bar: the 10x run's peak <= 1.1x)"
        )
        print(
            table(
                ["config", "GiB", "frames", "peak RSS MiB", "sink device MiB", "seconds"], mem_rows
            )
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
