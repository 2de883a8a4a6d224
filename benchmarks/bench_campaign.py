"""Campaigns and training exports: writing many small runs, and drawing random point samples.

    python benchmarks/bench_campaign.py [--quick] [--runs 200] [--threads 8] [--processes 2]

1. Writing: `--runs` small runs (64 frames of 32 atoms x 3 plus an energy, chunk 16: four flushes
   and a close each) into one local campaign, one after another, from a pool of threads, and from
   worker processes that rebuild each run's config from JSON (`RunConfig.from_config`). The
   processes' time includes starting Python, importing JAX and compiling once per worker. Then
   listing the campaign (`runs()`) and writing a consolidated manifest.
2. Reading: point clouds (frames of 65536 points: float32 positions and a float32 scalar, one
   frame per chunk) exported with ``by="points"`` and ``sample_size=4096``. A random 4096-point
   sample is read (a) from the export, one random chunk (`TrainingSet.sample`), (b) the same from
   a float16 export, and (c) by reading a whole random frame from the run and choosing 4096 of its
   points. Median time over interleaved draws; bytes read are stored (compressed) bytes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import table  # noqa: E402

import jaxsinks as js  # noqa: E402

ATOMS, FRAMES, CHUNK = 32, 64, 16
EXAMPLE = {"x": jnp.zeros((ATOMS, 3)), "e": jnp.zeros(())}


@jax.jit
def _record(sink, key):
    def body(sink, step):
        x = jax.random.normal(jax.random.fold_in(key, step), (ATOMS, 3))
        e = jnp.sum(x * x)
        return js.record(
            sink, step=step, time=step.astype(jnp.float32), frame={"x": x, "e": e}
        ), None

    return jax.lax.scan(body, sink, jnp.arange(FRAMES, dtype=jnp.int32))[0]


def write_run(config: js.RunConfig) -> None:
    """Create, record and close one small run."""
    sink = config.create(EXAMPLE)
    key = jax.random.key(int(config.params["i"]))
    js.close(_record(sink, key))


def _worker(configs: list[dict]) -> None:
    for config in configs:
        write_run(js.RunConfig.from_config(config))


def configs(campaign: js.Campaign, runs: int) -> list[js.RunConfig]:
    return [
        campaign.run_config(f"run-{i:04d}", params={"i": i, "T": 100.0 + i}, chunk=CHUNK)
        for i in range(runs)
    ]


def bench_writing(root: pathlib.Path, runs: int, threads: int, processes: int) -> str:
    write_run(configs(js.Campaign.create(root / "warmup"), 1)[0])  # compile once
    rows = []

    def check(campaign: js.Campaign) -> None:
        entries = campaign.runs()
        assert len(entries) == runs and all(
            e.status == "closed" and e.committed == FRAMES for e in entries
        )

    campaign = js.Campaign.create(root / "sequential")
    start = time.perf_counter()
    for config in configs(campaign, runs):
        write_run(config)
    sequential = time.perf_counter() - start
    check(campaign)
    rows.append(["one after another", 1, sequential, runs / sequential, 1.0])

    campaign = js.Campaign.create(root / "threads")
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(write_run, configs(campaign, runs)))
    elapsed = time.perf_counter() - start
    check(campaign)
    rows.append(["threads", threads, elapsed, runs / elapsed, sequential / elapsed])

    if processes:
        campaign = js.Campaign.create(root / "processes")
        jobs = [c.to_config() for c in configs(campaign, runs)]
        parts = [jobs[p::processes] for p in range(processes)]
        context = multiprocessing.get_context("spawn")
        start = time.perf_counter()
        workers = [context.Process(target=_worker, args=(part,)) for part in parts]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - start
        assert all(w.exitcode == 0 for w in workers)
        check(campaign)
        rows.append(
            [
                "processes (incl. start, import, compile)",
                processes,
                elapsed,
                runs / elapsed,
                sequential / elapsed,
            ]
        )

    listing = statistics.median(_timed(campaign.runs) for _ in range(5))
    consolidate = statistics.median(_timed(campaign.consolidate) for _ in range(3))
    out = table(["writing", "workers", "time (s)", "runs/s", "speed-up"], rows)
    out += "\n\n" + table(
        ["on the campaign", f"time (ms), {runs} runs"],
        [["list every run (runs())", listing * 1e3], ["consolidate()", consolidate * 1e3]],
    )
    return out


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --------------------------------------------------------------------------------- reading


def write_clouds(campaign: js.Campaign, runs: int, frames: int, points: int) -> None:
    example = {"pos": jnp.zeros((points, 3)), "q": jnp.zeros(points)}

    @jax.jit
    def record(sink, key):
        def body(sink, step):
            pos = jax.random.normal(jax.random.fold_in(key, step), (points, 3))
            frame = {"pos": pos, "q": jnp.linalg.norm(pos, axis=1)}
            return js.record(sink, step=step, time=step.astype(jnp.float32), frame=frame), None

        return jax.lax.scan(body, sink, jnp.arange(frames, dtype=jnp.int32))[0]

    for r in range(runs):
        sink = campaign.create_run(f"cloud-{r}", example, params={"r": r}, chunk=1)
        js.close(record(sink, jax.random.key(r)))


def bench_reading(
    root: pathlib.Path, runs: int, frames: int, points: int, n: int, draws: int
) -> str:
    campaign = js.Campaign.create(root / "clouds")
    write_clouds(campaign, runs, frames, points)
    start = time.perf_counter()
    export = js.export_training(campaign, root / "export", by="points", sample_size=n, seed=0)
    export_time = time.perf_counter() - start
    half = js.export_training(
        campaign, root / "export16", by="points", sample_size=n, seed=0, dtype="float16"
    )
    opened = {e.run_id: e.open() for e in campaign.runs()}
    per_frame = {
        rid: sum(f["stored_bytes"] for f in run.describe()["fields"]) / len(run)
        for rid, run in opened.items()
    }
    needed = n * (3 + 1) * 4

    rng = np.random.default_rng(0)
    stats: dict[str, list[float]] = {"export": [], "export16": [], "whole": []}
    reads: dict[str, list[float]] = {k: [] for k in stats}

    def whole() -> None:
        rid = list(opened)[rng.integers(len(opened))]
        run = opened[rid]
        f = int(rng.integers(len(run)))
        pick = np.sort(rng.choice(points, n, replace=False))
        values = {name: run[name][f][pick] for name in ("pos", "q")}
        assert values["pos"].shape == (n, 3)
        reads["whole"].append(per_frame[rid])

    def sample(ts: js.TrainingSet, key: str):
        def draw() -> None:
            s = ts.sample(n, rng)
            assert s.data["pos"].shape == (n, 3)
            reads[key].append(s.bytes_read)

        return draw

    fns = {"export": sample(export, "export"), "export16": sample(half, "export16"), "whole": whole}
    for fn in fns.values():
        fn()
    for _ in range(draws):
        for name, fn in fns.items():
            stats[name].append(_timed(fn))
    labels = {
        "export": "shuffled export, one chunk",
        "export16": "shuffled export (float16), one chunk",
        "whole": "whole frame, then choose points",
    }
    rows = []
    for name, label in labels.items():
        t = statistics.median(stats[name])
        b = statistics.mean(reads[name])
        rows.append([label, t * 1e3, b / 2**10, b / needed])
    head = (
        f"{runs} runs x {frames} frames x {points} points (pos float32 x 3, q float32); sample of "
        f"{n} points ({needed / 2**10:.0f} KiB needed); export took {export_time:.1f} s"
    )
    return (
        head
        + "\n\n"
        + table(
            [
                "read a random sample",
                "time (ms, median)",
                "KiB read",
                "KiB read / KiB of float32 values",
            ],
            rows,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a small size, to check the script works"
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--points", type=int, default=65536)
    parser.add_argument("--draws", type=int, default=50)
    args = parser.parse_args()
    runs, points, draws = (20, 16384, 10) if args.quick else (args.runs, args.points, args.draws)
    with tempfile.TemporaryDirectory(prefix="bench_campaign_") as tmp:
        root = pathlib.Path(tmp)
        print(
            f"## Writing {runs} small runs ({FRAMES} frames of {ATOMS} atoms, chunk {CHUNK}) into "
            "one campaign\n"
        )
        print(bench_writing(root, runs, args.threads, args.processes))
        print("\n## Reading a random sample of points\n")
        print(bench_reading(root, runs=4, frames=16, points=points, n=4096, draws=draws))
    print(f"\njax {jax.__version__}, {json.dumps({'cpus': multiprocessing.cpu_count()})}")


if __name__ == "__main__":
    main()
