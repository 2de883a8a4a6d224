"""kill -9 during a streaming run: the store holds exactly the committed prefix, and resumes."""

import json
import pathlib
import random
import signal
import subprocess
import sys
import time

import numpy as np
from zarr_helpers import EXAMPLE, expected, run_steps, steps

import jaxsinks as js

HERE = pathlib.Path(__file__).resolve().parent


def committed(store: pathlib.Path) -> int:
    try:
        doc = json.loads((store / "zarr.json").read_text())
    except (FileNotFoundError, ValueError):
        return 0
    return doc["attributes"]["jaxsinks"]["committed"]


def kill_mid_run(
    store: pathlib.Path, *, chunk: int, per_call: int, min_committed: int, seed: int
) -> None:
    log = store.parent / f"{store.name}.stderr"
    with log.open("w") as err:
        child = subprocess.Popen(
            [sys.executable, str(HERE / "crash_child.py"), str(store), str(chunk), str(per_call)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=HERE,
        )
    try:
        deadline = time.monotonic() + 120
        while committed(store) < min_committed:
            assert child.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the child never committed enough frames"
            time.sleep(0.005)
        time.sleep(random.Random(seed).uniform(0.0, 0.3))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL


def check_prefix_and_resume(store: pathlib.Path, chunk: int) -> int:
    run = js.open(store)
    n = len(run)
    assert (
        n == run.committed and n >= chunk and run.status == "interrupted"
    )  # its writer was killed
    assert run.steps.tolist() == list(range(n))  # exactly the committed prefix, no holes
    exp = expected(range(n))
    np.testing.assert_array_equal(run["x"][:], exp["x"])
    np.testing.assert_array_equal(run["e"][:], exp["e"])

    sink = js.ZarrSink.create(store, EXAMPLE, chunk=chunk, mode="a")
    assert int(sink.flushed) == n
    js.close(run_steps(sink, steps(n, n + 2 * chunk + 3)))
    resumed = js.open(store)
    assert resumed.steps.tolist() == list(range(n + 2 * chunk + 3))  # no gap, no duplicate
    np.testing.assert_array_equal(resumed["x"][:], expected(range(n + 2 * chunk + 3))["x"])
    assert resumed.status == "closed"
    return n


def test_kill_9_mid_run_keeps_exactly_the_committed_prefix_and_resumes(tmp_path):
    for seed in range(3):
        store = tmp_path / f"run{seed}.zarr"
        kill_mid_run(store, chunk=16, per_call=40, min_committed=16 * (seed + 1), seed=seed)
        check_prefix_and_resume(store, 16)


def test_a_second_crash_after_resuming_is_also_safe(tmp_path):
    store = tmp_path / "run.zarr"
    kill_mid_run(store, chunk=8, per_call=20, min_committed=16, seed=7)
    first = len(js.open(store))
    kill_mid_run(store, chunk=8, per_call=20, min_committed=first + 16, seed=8)
    assert check_prefix_and_resume(store, 8) >= first + 16


RING_CHILD = """
import sys
from zarr_helpers import EXAMPLE, run_steps, steps
import jaxsinks as js
sink = js.ZarrSink.create(sys.argv[1], EXAMPLE, chunk=4, capacity=16, overflow="ring")
done = 0
while True:
    sink = run_steps(sink, steps(done, done + 400))
    done += 400
    print(done, flush=True)
"""


def test_kill_9_of_a_ring_keeps_its_newest_committed_frames_and_resumes(tmp_path):
    """A ring overwrites its oldest committed frames only once the frames before the block are
    committed: a kill at any moment leaves at least the newest ``capacity - chunk`` of them (before,
    a kill right after a fast loop left a run of 0 frames: the overwritten frames retired, the
    new ones not yet counted)."""
    for trial, delay in enumerate((0.0, 0.01, 0.05, 0.2)):
        store = tmp_path / f"ring{trial}.zarr"
        child = subprocess.Popen(
            [sys.executable, "-c", RING_CHILD, str(store)], stdout=subprocess.PIPE, cwd=HERE
        )
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == b"400"
            time.sleep(delay)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        run = js.open(store)
        n, total = len(run), run.committed
        assert run.status == "interrupted" and total >= 16
        assert n >= 12, (trial, n, total, run.meta.get("valid_from"))
        assert run.steps.tolist() == list(range(total - n, total))
        np.testing.assert_array_equal(run["x"][:], expected(range(total - n, total))["x"])
        sink = js.ZarrSink.create(store, EXAMPLE, chunk=4, capacity=16, overflow="ring", mode="a")
        js.close(run_steps(sink, steps(total, total + 10)))
        run = js.open(store)
        assert run.status == "closed" and run.committed == total + 10
        assert run.steps.tolist() == list(range(total + 10 - 16, total + 10))
        np.testing.assert_array_equal(run["e"][:], expected(range(total - 6, total + 10))["e"])
