"""Load: long runs, many fields, many sinks, a 10 GiB stream, concurrent runs. Prints markdown.

    python benchmarks/bench_load.py --dir /tmp [--gib 10]

Five scenarios, each checked for values and counts (a scenario that stores a wrong frame fails):

1. 10^6 small frames in one run;
2. a frame of 50 fields (float32, float16, int32, bool; scalars to matrices);
3. 8 sinks recorded in one loop, each on its own schedule;
4. a run streaming >= 10 GiB logical (``codec=None``) with host RSS and device memory sampled by
   a thread (psutil; device memory is `memory_stats` where the backend has it, else the bytes of
   live JAX arrays) and compared between the first and last quartile of the run after its
   warm-up (the first 10% of the samples), with the median of each tenth printed too;
5. 4 threads, each running its own simulation into its own store at once.

The scenario functions take their sizes as arguments: tests/test_reliability.py runs small
versions (seconds) and asserts their values and counts, never their timings.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxsinks as js

GiB = 2**30


def _small_frame(step: jax.Array) -> dict[str, jax.Array]:
    s = step.astype(jnp.float32)
    return {"x": jnp.stack([s, -s])}


@jax.jit
def _record_small(sink, start, n_steps_dummy):
    def body(sink, i):
        step = start + i
        return js.record(sink, step=step, frame=lambda: _small_frame(step)), None

    return jax.lax.scan(body, sink, jnp.arange(n_steps_dummy.shape[0], dtype=jnp.int32))[0]


def many_frames(
    directory: pathlib.Path, frames: int = 10**6, per_call: int = 100_000
) -> dict[str, Any]:
    """Record `frames` small frames (2 float32) in one run, in jitted calls of `per_call` steps."""
    store = directory / "many_frames.zarr"
    sink = js.ZarrSink.create(store, {"x": jnp.zeros(2, jnp.float32)}, chunk=4096)
    t0 = time.perf_counter()
    done = 0
    while done < frames:
        n = min(per_call, frames - done)
        sink = _record_small(sink, jnp.int32(done), jnp.zeros(n, jnp.int8))
        done += n
    js.close(sink)
    seconds = time.perf_counter() - t0
    run = js.open(store)
    x = run["x"][:]
    steps = np.arange(frames, dtype=np.float32)
    ok = (
        len(run) == frames
        and np.array_equal(run.steps, np.arange(frames))
        and np.array_equal(x[:, 0], steps)
        and np.array_equal(x[:, 1], -steps)
    )
    shutil.rmtree(store)
    return {"frames": len(run), "seconds": seconds, "ok": ok}


def _wide_example(fields: int) -> dict[str, jax.Array]:
    kinds = [
        (jnp.float32, ()),
        (jnp.float32, (3,)),
        (jnp.int32, (2,)),
        (jnp.bool_, ()),
        (jnp.float32, (2, 2)),
    ]
    return {
        f"f{i:02d}": jnp.zeros(kinds[i % len(kinds)][1], kinds[i % len(kinds)][0])
        for i in range(fields)
    }


def _wide_frame(example: dict[str, jax.Array], step: jax.Array) -> dict[str, jax.Array]:
    out = {}
    for i, (name, leaf) in enumerate(example.items()):
        value = step + i
        if leaf.dtype == jnp.bool_:
            out[name] = jnp.broadcast_to(value % 2 == 0, leaf.shape)
        else:
            out[name] = jnp.broadcast_to(value.astype(leaf.dtype), leaf.shape)
    return out


def many_fields(directory: pathlib.Path, fields: int = 50, frames: int = 10_000) -> dict[str, Any]:
    """A frame of `fields` fields of mixed dtypes and shapes, `frames` frames, every value
    checked."""
    example = _wide_example(fields)
    store = directory / "many_fields.zarr"
    sink = js.ZarrSink.create(store, example, chunk=256)

    @jax.jit
    def run(sink):
        def body(sink, step):
            return js.record(sink, step=step, frame=lambda: _wide_frame(example, step)), None

        return jax.lax.scan(body, sink, jnp.arange(frames, dtype=jnp.int32))[0]

    t0 = time.perf_counter()
    js.close(run(sink))
    seconds = time.perf_counter() - t0
    stored = js.open(store)
    ok = len(stored) == frames and len(stored.fields) == fields
    steps = np.arange(frames)
    for i, (name, leaf) in enumerate(example.items()):
        got = stored[name][:]
        value = steps + i
        want = (value % 2 == 0) if leaf.dtype == jnp.bool_ else value.astype(leaf.dtype)
        want = np.broadcast_to(want.reshape(frames, *([1] * leaf.ndim)), (frames, *leaf.shape))
        ok = ok and got.dtype == leaf.dtype and np.array_equal(got, want)
    shutil.rmtree(store)
    return {"fields": len(stored.fields), "frames": len(stored), "seconds": seconds, "ok": ok}


def many_sinks(directory: pathlib.Path, sinks: int = 8, steps: int = 100_000) -> dict[str, Any]:
    """`sinks` ZarrSinks in one loop, sink k recording every k+1 steps; counts and values
    checked."""
    stores = [directory / f"sink{k}.zarr" for k in range(sinks)]
    all_sinks = tuple(
        js.ZarrSink.create(s, {"x": jnp.zeros(2, jnp.float32)}, every=k + 1, chunk=1024)
        for k, s in enumerate(stores)
    )

    @jax.jit
    def run(all_sinks):
        def body(all_sinks, step):
            return js.record(all_sinks, step=step, frame=lambda: _small_frame(step)), None

        return jax.lax.scan(body, all_sinks, jnp.arange(steps, dtype=jnp.int32))[0]

    t0 = time.perf_counter()
    js.close(run(all_sinks))
    seconds = time.perf_counter() - t0
    ok, frames = True, 0
    for k, store in enumerate(stores):
        run_k = js.open(store)
        want = np.arange(0, steps, k + 1)
        ok = (
            ok
            and np.array_equal(run_k.steps, want)
            and np.array_equal(run_k["x"][:, 0], want.astype(np.float32))
        )
        frames += len(run_k)
        shutil.rmtree(store)
    return {"sinks": sinks, "frames": frames, "seconds": seconds, "ok": ok}


class _Sampler:
    """Samples host RSS and device memory every `period` seconds on a thread."""

    def __init__(self, period: float = 0.2) -> None:
        import psutil

        self._process = psutil.Process()
        self.period = period
        self.rss: list[int] = []
        self.device: list[int] = []
        self.device_source = "memory_stats"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _device_bytes(self) -> int:
        stats = jax.devices()[0].memory_stats()
        if stats and "bytes_in_use" in stats:
            return int(stats["bytes_in_use"])
        self.device_source = "live JAX arrays"
        return sum(a.nbytes for a in jax.live_arrays())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.rss.append(self._process.memory_info().rss)
            self.device.append(self._device_bytes())
            self._stop.wait(self.period)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


#: The first samples of a stream are its warm-up (compiling, filling the pool and TensorStore's
#: buffers up to ``max_inflight_bytes``); flatness is judged on the rest.
WARMUP_FRACTION = 0.1


def _quartiles(samples: list[int]) -> tuple[float, float]:
    """Median of the first and of the last quarter of the samples after the warm-up."""
    steady = samples[int(len(samples) * WARMUP_FRACTION) :] or samples
    q = max(1, len(steady) // 4)
    return statistics.median(steady[:q]), statistics.median(steady[-q:])


def _deciles(samples: list[int]) -> list[int]:
    """The median of each tenth of the samples, in MiB: the shape of the curve."""
    parts = np.array_split(np.asarray(samples, np.float64), min(10, len(samples)))
    return [round(float(np.median(p)) / 2**20) for p in parts]


def big_stream(
    directory: pathlib.Path,
    gib: float = 10.0,
    frame_floats: int = 2**18,
    chunk: int = 16,
    per_call: int = 256,
) -> dict[str, Any]:
    """Stream `gib` GiB logical (frames of `frame_floats` float32, ``codec=None``) with host RSS
    and device memory sampled; check sampled frames' values."""
    frame_bytes = 4 * frame_floats
    frames = int(np.ceil(gib * GiB / frame_bytes / per_call)) * per_call
    store = directory / "big_stream.zarr"
    sink = js.ZarrSink.create(
        store, {"x": jnp.zeros(frame_floats, jnp.float32)}, chunk=chunk, codec=None
    )

    @jax.jit
    def run(sink, start):
        def body(sink, i):
            step = start + i
            frame = lambda: {  # noqa: E731
                "x": step.astype(jnp.float32) + jnp.arange(frame_floats, dtype=jnp.float32)
            }
            return js.record(sink, step=step, frame=frame), None

        return jax.lax.scan(body, sink, jnp.arange(per_call, dtype=jnp.int32))[0]

    t0 = time.perf_counter()
    with _Sampler() as sampler:
        for start in range(0, frames, per_call):
            sink = run(sink, jnp.int32(start))
        js.close(sink)
    seconds = time.perf_counter() - t0
    stored = js.open(store)
    ok = len(stored) == frames and np.array_equal(stored.steps, np.arange(frames))
    for i in sorted({0, frames // 3, frames // 2, frames - 1}):
        ok = ok and np.array_equal(
            stored["x"][i], np.float32(i) + np.arange(frame_floats, dtype=np.float32)
        )
    shutil.rmtree(store)
    rss0, rss1 = _quartiles(sampler.rss)
    dev0, dev1 = _quartiles(sampler.device)
    return {
        "GiB": frames * frame_bytes / GiB,
        "frames": frames,
        "seconds": seconds,
        "rss_first_MiB": rss0 / 2**20,
        "rss_last_MiB": rss1 / 2**20,
        "rss_max_MiB": max(sampler.rss) / 2**20,
        "device_first_MiB": dev0 / 2**20,
        "device_last_MiB": dev1 / 2**20,
        "device_source": sampler.device_source,
        "samples": len(sampler.rss),
        "rss_deciles_MiB": _deciles(sampler.rss),
        "device_deciles_MiB": _deciles(sampler.device),
        "ok": ok,
    }


def threads(directory: pathlib.Path, count: int = 4, steps: int = 50_000) -> dict[str, Any]:
    """`count` threads, each running its own simulation (its own offset) into its own store."""
    results: dict[int, bool] = {}
    errors: list[BaseException] = []

    def simulate(k: int) -> None:
        try:
            store = directory / f"thread{k}.zarr"
            sink = js.ZarrSink.create(store, {"x": jnp.zeros(2, jnp.float32)}, chunk=512)
            offset = jnp.float32(1000.0 * k)

            @jax.jit
            def run(sink):
                def body(carry, step):
                    sink, state = carry
                    state = state + jnp.float32(1.0)
                    frame = {"x": jnp.stack([state, step.astype(jnp.float32)])}
                    return (js.record(sink, step=step, frame=frame), state), None

                return jax.lax.scan(body, (sink, offset), jnp.arange(steps, dtype=jnp.int32))[0][0]

            js.close(run(sink))
            stored = js.open(store)
            x = stored["x"][:]
            want = np.float32(1000.0 * k) + np.arange(1, steps + 1, dtype=np.float32)
            results[k] = (
                len(stored) == steps
                and np.array_equal(x[:, 0], want)
                and np.array_equal(x[:, 1], np.arange(steps, dtype=np.float32))
            )
            shutil.rmtree(store)
        except BaseException as err:  # noqa: BLE001 - reported by the caller
            errors.append(err)

    t0 = time.perf_counter()
    workers = [threading.Thread(target=simulate, args=(k,)) for k in range(count)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return {
        "threads": count,
        "frames": count * steps,
        "seconds": time.perf_counter() - t0,
        "ok": len(results) == count and all(results.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dir", default=None, help="where the stores go (default: the system temp dir)"
    )
    parser.add_argument("--gib", type=float, default=10.0)
    args = parser.parse_args()
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from common import table

    base = pathlib.Path(tempfile.mkdtemp(prefix="bench_load_", dir=args.dir))
    try:
        print(
            f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} "
            "device(s)\n"
        )
        a = many_frames(base)
        b = many_fields(base)
        c = many_sinks(base)
        e = threads(base)
        print(
            table(
                ["scenario", "frames", "seconds", "frames/s", "values ok"],
                [
                    [
                        "10^6 small frames, one run",
                        a["frames"],
                        a["seconds"],
                        a["frames"] / a["seconds"],
                        a["ok"],
                    ],
                    [
                        f"{b['fields']} fields",
                        b["frames"],
                        b["seconds"],
                        b["frames"] / b["seconds"],
                        b["ok"],
                    ],
                    [
                        f"{c['sinks']} sinks in one loop",
                        c["frames"],
                        c["seconds"],
                        c["frames"] / c["seconds"],
                        c["ok"],
                    ],
                    [
                        f"{e['threads']} threads, own stores",
                        e["frames"],
                        e["seconds"],
                        e["frames"] / e["seconds"],
                        e["ok"],
                    ],
                ],
            )
        )
        print()
        d = big_stream(base, args.gib)
        print(
            table(
                [
                    "GiB logical",
                    "frames",
                    "seconds",
                    "GiB/s",
                    "RSS first q MiB*",
                    "RSS last q MiB*",
                    "RSS max MiB",
                    f"device first q MiB* ({d['device_source']})",
                    "device last q MiB*",
                    "samples",
                    "values ok",
                ],
                [
                    [
                        d["GiB"],
                        d["frames"],
                        d["seconds"],
                        d["GiB"] / d["seconds"],
                        d["rss_first_MiB"],
                        d["rss_last_MiB"],
                        d["rss_max_MiB"],
                        d["device_first_MiB"],
                        d["device_last_MiB"],
                        d["samples"],
                        d["ok"],
                    ],
                ],
            )
        )
        print("\n* after the warm-up: the first 10% of the samples.")
        print(f"RSS by tenth of the run (MiB): {d['rss_deciles_MiB']}")
        print(f"device memory by tenth of the run (MiB): {d['device_deciles_MiB']}")
        if not all(r["ok"] for r in (a, b, c, d, e)):
            sys.exit("a scenario stored wrong values or counts")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
