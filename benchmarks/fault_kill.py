"""Kill a streaming run with SIGKILL at random moments; check what survives, and resume.

    python benchmarks/fault_kill.py --trials 50 --seed 0 [--loop scan|while] [--dir /tmp]

Each trial starts a real recording (`tests/crash_child.py`: a `ZarrSink` written from a jitted
`lax.scan` or `lax.while_loop`, chunks of 16 frames, many flushes per second) in a subprocess,
waits until it has committed a random number of chunks, then a random delay, and kills it with
SIGKILL. It then checks that:

* the store opens and holds exactly the committed prefix: steps ``0..n-1``, every frame equal to
  the reference computed here (frames are a pure function of the step);
* nothing counted as committed before the kill was lost;
* the frames lost in flight (recorded by the child but not committed) are within the bound of
  docs/reliability.md;
* a second subprocess resumes the run with ``mode="a"``, records to a fixed total and closes it,
  and the whole run then holds every step once, in order: no gap, no duplicate.

The trial logic is in importable functions: tests/test_reliability.py runs three trials.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
CHILD = TESTS / "crash_child.py"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import jaxsinks as js  # noqa: E402
from jaxsinks._writer import POOL_BLOCKS  # noqa: E402

#: The child's frame: x (3 float32), e (float32), plus the step (int32) and time (float32) columns.
FRAME_BYTES = 3 * 4 + 4 + 4 + 4


@dataclasses.dataclass(frozen=True)
class Settings:
    """One trial's recording: chunk, steps per jitted call, loop kind and in-flight limit."""

    chunk: int = 16
    per_call: int = 40
    loop: str = "scan"
    max_inflight_bytes: int = 4 * 16 * FRAME_BYTES
    resume_to_extra: int = 100  # the resumed run records this many frames past the committed count

    def loss_bound(self) -> int:
        """The most frames a crash can lose (docs/reliability.md): the device's staging block,
        the host pool's blocks, and the blocks in flight (``max_inflight_bytes`` plus one block).
        """
        block_bytes = self.chunk * FRAME_BYTES
        inflight_blocks = self.max_inflight_bytes // block_bytes + 1
        return self.chunk * (1 + POOL_BLOCKS + inflight_blocks)


@dataclasses.dataclass(frozen=True)
class Trial:
    """What one trial saw."""

    seed: int
    kill_after_s: float  # seconds after the wanted number of chunks was committed
    committed_before: int  # the committed count read just before the kill
    recorded_before: int  # frames the child reported recorded (a completed call) before the kill
    committed: int  # the committed count of the killed run, as `open` reads it
    resumed: int  # frames in the run after resuming and closing

    @property
    def lost(self) -> int:
        """Frames the child had recorded (in completed calls) that the crash lost."""
        return max(0, self.recorded_before - self.committed)


def committed_count(store: pathlib.Path) -> int:
    """The committed count in the run's group attributes (0 if there is none yet)."""
    try:
        doc = json.loads((store / "zarr.json").read_text())
        return int(doc["attributes"]["jaxsinks"]["committed"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def child_command(store: pathlib.Path, settings: Settings, until: int | None = None) -> list[str]:
    command = [sys.executable, str(CHILD), str(store), str(settings.chunk), str(settings.per_call),
               "--loop", settings.loop, "--max-inflight-bytes", str(settings.max_inflight_bytes)]
    return command + ([] if until is None else ["--until", str(until)])


class _Lines:
    """The lines a child prints, collected by a thread (the last one is the frames recorded)."""

    def __init__(self, stream) -> None:
        self.last: str | None = None
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.last = line.strip()

    def join(self) -> None:
        self._thread.join(timeout=30)


def kill_at_random(store: pathlib.Path, settings: Settings, seed: int, *, timeout: float = 180.0) -> tuple[float, int, int]:
    """Run the child until it commits a random number of chunks, wait a random delay, SIGKILL it.

    Returns:
        ``(delay, committed before the kill, frames recorded before the kill)``.
    """
    rng = random.Random(seed)
    min_committed = settings.chunk * rng.randint(1, 6)
    delay = rng.uniform(0.0, 0.5)
    err_log = store.parent / f"{store.name}.stderr"
    with err_log.open("w") as err:
        child = subprocess.Popen(child_command(store, settings), stdout=subprocess.PIPE, stderr=err,
                                 text=True, cwd=TESTS)
    lines = _Lines(child.stdout)
    try:
        deadline = time.monotonic() + timeout
        while committed_count(store) < min_committed:
            if child.poll() is not None:
                raise RuntimeError(f"the recording child exited early:\n{err_log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the child committed no {min_committed} frames in {timeout} s")
            time.sleep(0.002)
        time.sleep(delay)
        recorded = int(lines.last) if lines.last and lines.last.isdigit() else 0
        before = committed_count(store)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        lines.join()
        child.stdout.close()
    if child.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the child ended with {child.returncode}, not SIGKILL:\n{err_log.read_text()}")
    err_log.unlink()
    return delay, before, recorded


def reference(steps: np.ndarray) -> dict[str, np.ndarray]:
    """The frames of these steps, computed here: the same pure function of the step as the child."""
    s = np.asarray(steps, np.float32)
    return {"x": s[:, None] + np.arange(3, dtype=np.float32), "e": np.float32(0.5) * s}


def check_prefix(store: pathlib.Path, *, at_least: int) -> int:
    """The killed run opens and holds exactly its committed prefix; returns its length."""
    run = js.open(store)
    n = len(run)
    problems = []
    if n != run.committed or run.status != "open":
        problems.append(f"len {n}, committed {run.committed}, status {run.status!r}")
    if n < at_least:
        problems.append(f"{n} frames committed after the kill but {at_least} before it")
    if run.steps.tolist() != list(range(n)):
        problems.append("the steps are not 0..n-1")
    want = reference(np.arange(n))
    for name in ("x", "e"):
        if not np.array_equal(run[name][:], want[name]):
            problems.append(f"field {name} differs from the reference")
    times = np.float32(0.25) * np.arange(n, dtype=np.float32)
    if not np.array_equal(run.times, times):
        problems.append("the times differ from the reference")
    if problems:
        raise AssertionError(f"{store}: " + "; ".join(problems))
    return n


def resume_and_check(store: pathlib.Path, settings: Settings, committed: int) -> int:
    """Resume the run in a subprocess (``mode="a"``) to a fixed total, close it, check all of it."""
    total = committed + settings.resume_to_extra
    proc = subprocess.run(child_command(store, settings, until=total), capture_output=True, text=True,
                          cwd=TESTS, timeout=300)
    if proc.returncode or f"closed {total}" not in proc.stdout:
        raise AssertionError(f"resuming {store} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    run = js.open(store)
    if run.status != "closed" or len(run) != total or run.steps.tolist() != list(range(total)):
        raise AssertionError(f"{store}: after resuming, {len(run)} frames (want {total}), status "
                             f"{run.status!r}, steps in order: {run.steps.tolist() == list(range(len(run)))}")
    want = reference(np.arange(total))
    for name in ("x", "e"):
        if not np.array_equal(run[name][:], want[name]):
            raise AssertionError(f"{store}: after resuming, field {name} differs from the reference")
    return total


def run_trial(directory: pathlib.Path, seed: int, settings: Settings = Settings()) -> Trial:
    """One trial: record, SIGKILL at a random moment, check the prefix, resume, check the run."""
    store = directory / f"trial{seed}.zarr"
    if store.exists():
        shutil.rmtree(store)
    delay, before, recorded = kill_at_random(store, settings, seed)
    committed = check_prefix(store, at_least=before)
    lost = max(0, recorded - committed)
    if lost > settings.loss_bound():
        raise AssertionError(f"{store}: the crash lost {lost} frames; the documented bound is "
                             f"{settings.loss_bound()}")
    resumed = resume_and_check(store, settings, committed)
    shutil.rmtree(store)
    return Trial(seed, delay, before, recorded, committed, resumed)


def summary(trials: list[Trial], failures: list[tuple[int, str]], settings: Settings) -> str:
    from common import table

    committed = [t.committed for t in trials] or [0]
    rows = [[len(trials) + len(failures), min(committed), statistics.median(committed), max(committed),
             max((t.lost for t in trials), default=0), settings.loss_bound(), len(failures)]]
    return table(["trials", "committed min", "committed median", "committed max",
                  "lost in flight max", "bound", "failures"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loop", choices=("scan", "while", "both"), default="both")
    parser.add_argument("--dir", default=None, help="where the stores go (default: a temporary directory)")
    args = parser.parse_args()
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    base = pathlib.Path(tempfile.mkdtemp(prefix="fault_kill_", dir=args.dir))
    trials, failures = [], []
    try:
        for i in range(args.trials):
            seed = args.seed + i
            loop = args.loop if args.loop != "both" else ("scan", "while")[i % 2]
            settings = Settings(loop=loop)
            try:
                t = run_trial(base, seed, settings)
                trials.append(t)
                print(f"trial {i:3d} seed {seed} loop {loop:5s} kill {t.kill_after_s:.3f} s after "
                      f"committing enough: committed {t.committed_before} before -> {t.committed} after, "
                      f"recorded {t.recorded_before}, lost {t.lost}, resumed to {t.resumed}: ok", flush=True)
            except Exception as err:  # noqa: BLE001 - a failed trial is reported, the others run
                failures.append((seed, str(err)))
                print(f"trial {i:3d} seed {seed} loop {loop:5s}: FAILED: {err}", flush=True)
        print()
        print(summary(trials, failures, Settings()))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
