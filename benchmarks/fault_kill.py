"""Kill recording processes at random moments (SIGKILL or SIGTERM); check what survives, and resume.

    python benchmarks/fault_kill.py --trials 100 [--phase create|run|close|resume|twowriter]
        [--signal KILL|TERM] [--seed 0] [--dir /tmp] [--spawn]

Every trial runs real recordings (`tests/crash_child.py`: a `ZarrSink` written from a jitted
`lax.scan` or `lax.while_loop`) in child processes and kills one of them with the signal at a
random moment of its phase:

* ``create``: a frame of 40 fields (2 + 38 scalars), so that creating the run's 42 arrays lasts long
  enough to be hit (tens of ms on an idle machine, up to seconds on a loaded one); the kill comes at
  a random moment from the process's start (15% of the trials) or from the ``creating`` marker the
  child prints just before `ZarrSink.create` through the end of create. The mode is ``"a"``, ``"w"``
  or ``"w-"`` (on an empty location, all three create).
* ``run``: the child records until it has committed a random number of chunks, then a random
  delay up to 0.5 s; `lax.scan` and `lax.while_loop` alternate.
* ``close``: the child records 1000 to 4000 frames in calls of 1000 (chunks of 64: a staged tail
  of 16 to 56 frames, and up to 64 blocks allowed in flight), then calls `jaxsinks.close`; the kill
  comes at a random moment of the close.
* ``resume``: a run exists (closed, or left by a killed writer); a child resumes it with
  ``mode="a"`` (its recording compiled beforehand) and is killed at a random moment of
  ``create(mode="a")`` and its first flushes.
* ``twowriter``: two processes open the same run with ``mode="a"`` at the same moment (each waits
  for its file, then calls create; half the races write both files at once, the others the second
  up to 20 ms later): exactly one must win, the other must get
  `WriterConflictError`, and the run must hold the winner's frames (each writer's values are
  offset by its own salt) with the earlier frames unchanged byte for byte. The run before the race
  is empty, closed, or left by a killed writer.

After each kill, `jaxsinks.open` must either raise `StoreNotFoundError` (only when the kill came
before the run's first ``"open"`` metadata: nothing there, or an interrupted ``"creating"`` claim,
and the child had not returned from create) or open with status ``"interrupted"`` (or
``"closed"``, if the kill came after close) and exactly the committed prefix: steps ``0..n-1``,
every value of every field equal to the reference computed here (frames are a pure function of
the step and the writer's salt), nothing counted as committed before the kill lost, and the
frames lost in flight within the bound of docs/reliability.md. Then a resumer process (started
with the trial) resumes the run with ``mode="a"``, records to a fixed total and closes it, and the
run must hold every step once, in order, with every value; then it is resumed again (a second
round; in the ``resume`` phase, a second resume is first killed the same way and checked). A
resume records whole calls (two, then one), so no child compiles twice.

Children are forked from a server process that has imported jax and jaxsinks but initialised
nothing (no JAX backend, no TensorStore context, one thread): each child is a new process with its
own pid, backend and writer, only without the seconds of imports. ``--spawn`` starts every child
with a fresh interpreter instead.

The trial logic is in importable functions: tests/test_reliability.py runs trials of every phase.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
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
from typing import ClassVar, Self

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
CHILD = TESTS / "crash_child.py"

import jaxsinks as js
from jaxsinks._io.writer import POOL_BLOCKS

PHASES = ("create", "run", "close", "resume", "twowriter")
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM}
D = 3  # the child's x field has D float32
#: The child's frame without extra fields: x (3 float32), e (float32), plus the step (int32) and
#: time (float32) columns.
FRAME_BYTES = D * 4 + 4 + 4 + 4
SALTS = (10000.0, 20000.0)  # the two writers' salts in the twowriter phase
FOREVER = 10**9  # a total no child reaches: it records until it is killed


@dataclasses.dataclass(frozen=True)
class Settings:
    """One recording: chunk, steps per jitted call, loop kind, in-flight limit and extra fields."""

    chunk: int = 16
    per_call: int = 40
    loop: str = "scan"
    max_inflight_bytes: int = 4 * 16 * FRAME_BYTES
    fields: int = 0  # extra scalar float32 fields f00, f01, ...
    sync_bytes: int | None = None  # ZarrWriter.sync_bytes (None: the default, SYNC_BYTES)

    @property
    def resume_to_extra(self) -> int:
        """A resume records this many frames past the committed count: whole calls, so that no
        shorter call needs compiling (a second round records one call more)."""
        return 2 * self.per_call

    @property
    def frame_bytes(self) -> int:
        return FRAME_BYTES + 4 * self.fields

    def loss_bound(self) -> int:
        """The most frames a crash can lose (docs/reliability.md): the device's staging block,
        the host pool's blocks, and the blocks in flight (``max_inflight_bytes`` plus one block).
        """
        block_bytes = self.chunk * self.frame_bytes
        inflight_blocks = self.max_inflight_bytes // block_bytes + 1
        return self.chunk * (1 + POOL_BLOCKS + inflight_blocks)

    def names(self) -> list[str]:
        return ["e", "x"] + [f"f{k:02d}" for k in range(self.fields)]


#: Each phase's recording. Create has 40 fields (so creating the arrays takes a while); close
#: records 1000 frames per call in chunks of 64 with 64 blocks allowed in flight, so that close
#: has a staged tail and many blocks to wait for.
PHASE_SETTINGS = {
    "create": Settings(fields=38),
    "run": Settings(),
    "close": Settings(chunk=64, per_call=1000, max_inflight_bytes=64 * 64 * FRAME_BYTES),
    "resume": Settings(),
    "twowriter": Settings(),
}


# ------------------------------------------------------------------------------- child processes


class ChildFailed(AssertionError):
    """A child process ended (or hung) where it should not have."""


class Child:
    """A child process: its pid, its stdout (timestamped events) and stderr, as files."""

    def __init__(
        self,
        launcher: Launcher,
        pid: int,
        out: pathlib.Path,
        err: pathlib.Path,
        started: float,
        popen: subprocess.Popen | None = None,
    ) -> None:
        self.launcher, self.pid, self.out, self.err, self.started = launcher, pid, out, err, started
        self._popen = popen
        self.killed_at: float | None = None

    def events(self) -> list[tuple[str, int, float]]:
        """``(event, value, time.monotonic())`` for every complete line printed so far."""
        try:
            text = self.out.read_text()
        except FileNotFoundError:
            return []
        found = []
        for line in text.split("\n")[:-1]:  # the last piece is an incomplete line, or empty
            parts = line.split()
            if len(parts) == 3:
                found.append((parts[0], int(parts[1]), float(parts[2])))
        return found

    def event(self, name: str, nth: int = 1) -> tuple[int, float] | None:
        hits = [(v, t) for n, v, t in self.events() if n == name]
        return hits[nth - 1] if len(hits) >= nth else None

    def wait_event(self, name: str, nth: int = 1, timeout: float = 120.0) -> tuple[int, float]:
        deadline = time.monotonic() + timeout
        while True:
            hit = self.event(name, nth)
            if hit is not None:
                return hit
            if self.returncode is not None:
                hit = self.event(name, nth)  # printed just before it ended
                if hit is not None:
                    return hit
                raise ChildFailed(
                    f"child {self.pid} ended ({self.returncode}) before its event "
                    f"'{name}' #{nth}:\n{self.stderr()}"
                )
            if time.monotonic() > deadline:
                raise ChildFailed(
                    f"child {self.pid} printed no '{name}' #{nth} in {timeout} s:\n{self.stderr()}"
                )
            time.sleep(0.0005)

    @property
    def returncode(self) -> int | None:
        if self._popen is not None:
            return self._popen.poll()
        return self.launcher.returncode(self.pid)

    def wait(self, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        while self.returncode is None:
            if time.monotonic() > deadline:
                raise ChildFailed(f"child {self.pid} did not end in {timeout} s:\n{self.stderr()}")
            time.sleep(0.001)
        return self.returncode

    def send(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """Kill it if it still runs (cleanup), and wait for it."""
        self.send(signal.SIGKILL)
        try:
            self.wait(30)
        except ChildFailed:
            pass

    def stderr(self) -> str:
        try:
            return self.err.read_text()[-4000:]
        except FileNotFoundError:
            return ""


class Launcher:
    """Starts children: forked from a server that imported jax and jaxsinks (default), or
    spawned."""

    def __init__(self, spawn: bool = False) -> None:
        self.spawn = spawn
        self._lock = threading.Condition()
        self._pids: dict[int, int] = {}
        self._codes: dict[int, int] = {}
        self._ids = iter(range(1, 10**9))
        self._server = None
        if not spawn:
            env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(TESTS))
            self._server = subprocess.Popen(
                [sys.executable, str(pathlib.Path(__file__).resolve()), "--serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=TESTS,
                env=env,
            )
            if self._server.stdout.readline().strip() != "ready":
                raise RuntimeError("the fork server did not start")
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()

    def _read(self) -> None:
        for line in self._server.stdout:
            msg = json.loads(line)
            with self._lock:
                if "rc" in msg:
                    self._codes[msg["pid"]] = msg["rc"]
                else:
                    self._pids[msg["id"]] = msg["pid"]
                self._lock.notify_all()

    def start(self, argv: list[str], out: pathlib.Path, err: pathlib.Path) -> Child:
        started = time.monotonic()
        if self.spawn:
            with out.open("w") as o, err.open("w") as e:
                popen = subprocess.Popen(
                    [sys.executable, str(CHILD), *argv],
                    stdout=o,
                    stderr=e,
                    stdin=subprocess.DEVNULL,
                    cwd=TESTS,
                )
            return Child(self, popen.pid, out, err, started, popen)
        request = next(self._ids)
        with self._lock:
            self._server.stdin.write(
                json.dumps({"id": request, "argv": argv, "out": str(out), "err": str(err)}) + "\n"
            )
            self._server.stdin.flush()
            if not self._lock.wait_for(lambda: request in self._pids, timeout=60):
                raise RuntimeError("the fork server did not answer")
            pid = self._pids.pop(request)
        return Child(self, pid, out, err, started)

    def returncode(self, pid: int) -> int | None:
        with self._lock:
            return self._codes.get(pid)

    def close(self) -> None:
        if self._server is not None:
            self._server.stdin.close()
            self._server.wait(timeout=60)
            self._reader.join(timeout=60)
            self._server.stdout.close()
            self._server = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve() -> None:
    """The fork server: import once, then fork a `crash_child` for every request on stdin.

    Requests are JSON lines ``{"id", "argv", "out", "err"}``; it answers ``{"id", "pid"}`` when the
    child is forked and ``{"pid", "rc"}`` (the exit code, negative for a signal) when it ended.
    Nothing here initialises a JAX backend or TensorStore, so the process has one thread when
    it forks. When stdin closes, it kills the children left and exits.
    """
    import select

    import jax.numpy  # noqa: F401 - imported once, for every child

    children: set[int] = set()
    print("ready", flush=True)
    pending = b""
    while True:
        readable, _, _ = select.select([0], [], [], 0.002)
        if readable:
            data = os.read(0, 1 << 16)
            if not data:
                break
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                sys.stdout.flush()
                pid = os.fork()
                if pid == 0:
                    _child_main(request)  # never returns
                children.add(pid)
                print(json.dumps({"id": request["id"], "pid": pid}), flush=True)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children.discard(pid)
            print(json.dumps({"pid": pid, "rc": os.waitstatus_to_exitcode(status)}), flush=True)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass


def _child_main(request: dict) -> None:
    """In the forked child: redirect stdio to the request's files and run crash_child's main."""
    import atexit
    import runpy
    import traceback

    code = 1
    try:
        for fd, path, flags in (
            (0, os.devnull, os.O_RDONLY),
            (1, request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
            (2, request["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        ):
            new = os.open(path, flags, 0o644)
            os.dup2(new, fd)
            os.close(new)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.chdir(TESTS)
        sys.path.insert(0, str(TESTS))
        sys.argv = [str(CHILD), *request["argv"]]
        code = 0
        try:
            runpy.run_path(str(CHILD), run_name="__main__")
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
        except BaseException:  # noqa: BLE001 - reported on stderr, like an interpreter would
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def child_args(
    store: pathlib.Path,
    settings: Settings,
    *,
    until: int | None = None,
    mode: str = "a",
    control: pathlib.Path | None = None,
    warmup: bool = False,
    hold: bool = False,
    linger: bool = False,
    salt: float = 0.0,
) -> list[str]:
    argv = [
        str(store),
        str(settings.chunk),
        str(settings.per_call),
        "--loop",
        settings.loop,
        "--max-inflight-bytes",
        str(settings.max_inflight_bytes),
        "--fields",
        str(settings.fields),
        "--mode",
        mode,
        "--markers",
    ]
    if settings.sync_bytes is not None:
        argv += ["--sync-bytes", str(settings.sync_bytes)]
    if until is not None:
        argv += ["--until", str(until)]
    if control is not None:
        argv += ["--control", str(control)]
    if salt:
        argv += ["--salt", repr(salt)]
    return argv + [
        flag for flag, on in (("--warmup", warmup), ("--hold", hold), ("--linger", linger)) if on
    ]


def order(control: pathlib.Path, name: str, text: str = "") -> None:
    """Tell a ``--control`` child something: write the file whole, then rename it into place."""
    control.mkdir(parents=True, exist_ok=True)
    tmp = control / f".{name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, control / name)


# ------------------------------------------------------------------------------ the reference


def reference(
    steps: np.ndarray, fields: int = 0, salts: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The frames of these steps, computed here with numpy: the same pure function of the step
    (plus the salt of the writer that recorded it) as the child's."""
    s = np.asarray(steps, np.float32)
    out = {"x": s[:, None] + np.arange(D, dtype=np.float32), "e": np.float32(0.5) * s}
    out.update({f"f{k:02d}": s + np.float32(1000 * (k + 1)) for k in range(fields)})
    if salts is not None:
        salts = np.asarray(salts, np.float32)
        out = {name: v + (salts[:, None] if v.ndim == 2 else salts) for name, v in out.items()}
    return out


def salts_of(n: int, segments: list[tuple[int, float]]) -> np.ndarray:
    """The salt of every step below `n`: segment ``(start, salt)`` holds from `start` on."""
    salts = np.zeros(n, np.float32)
    for start, salt in segments:
        salts[start:] = salt
    return salts


def stored_meta(store: pathlib.Path) -> dict | None:
    """The run's jaxsinks metadata as stored (None if there is no zarr.json); raises if torn."""
    try:
        raw = (store / "zarr.json").read_bytes()
    except FileNotFoundError:
        return None
    try:
        return json.loads(raw)["attributes"]["jaxsinks"]
    except (ValueError, KeyError) as err:
        raise AssertionError(
            f"{store}/zarr.json is torn or not a run ({err}): {raw[:300]!r}"
        ) from None


def committed_count(store: pathlib.Path) -> int:
    """The committed count in the run's group attributes (0 if there is none yet)."""
    try:
        doc = json.loads((store / "zarr.json").read_text())
        return int(doc["attributes"]["jaxsinks"]["committed"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def lock_files(store: pathlib.Path) -> int:
    return len(list(store.rglob("*.__lock"))) if store.exists() else 0


def check_run(
    store: pathlib.Path,
    settings: Settings,
    segments: list[tuple[int, float]],
    *,
    statuses: tuple[str, ...],
    length: int | None = None,
    at_least: int = 0,
) -> int:
    """The run opens with one of `statuses` and holds exactly its committed prefix, every value
    equal to the reference byte for byte; returns its length."""
    run = js.open(store)
    n = len(run)
    problems = []
    if n != run.committed or run.status not in statuses:
        problems.append(
            f"len {n}, committed {run.committed}, status {run.status!r} (want one of {statuses})"
        )
    if length is not None and n != length:
        problems.append(f"{n} frames, want {length}")
    if n < at_least:
        problems.append(f"{n} frames committed, but {at_least} were committed before")
    if sorted(run.fields) != sorted(settings.names()):
        problems.append(f"fields {sorted(run.fields)}")
    if run.steps.tolist() != list(range(n)):
        problems.append("the steps are not 0..n-1")
    want = reference(np.arange(n), settings.fields, salts_of(n, segments))
    for name in settings.names():
        got = np.asarray(run[name][:])
        if got.dtype != want[name].dtype or got.tobytes() != want[name].tobytes():
            bad = (
                np.nonzero(np.any((got != want[name]).reshape(n, -1), axis=1))[0]
                if got.shape == want[name].shape
                else []
            )
            problems.append(f"field {name} differs from the reference (frames {list(bad[:8])})")
            break
    times = np.float32(0.25) * np.arange(n, dtype=np.float32)
    if np.asarray(run.times).tobytes() != times.tobytes():
        problems.append("the times differ from the reference")
    if problems:
        raise AssertionError(f"{store}: " + "; ".join(problems))
    return n


# ------------------------------------------------------------------------------ kill windows


class Windows:
    """How long the moments the kills aim at take (seconds), learned from uncensored runs."""

    DEFAULTS: ClassVar[dict[str, float]] = {
        "startup": 0.5,
        "create": 0.08,
        "close": 0.3,
        "resume": 0.15,
    }

    def __init__(self) -> None:
        self._seen = {name: collections.deque(maxlen=9) for name in self.DEFAULTS}

    def observe(self, name: str, seconds: float) -> None:
        self._seen[name].append(seconds)

    def __getitem__(self, name: str) -> float:
        seen = self._seen[name]
        return statistics.median(seen) if seen else self.DEFAULTS[name]

    def __repr__(self) -> str:
        return ", ".join(f"{name} {1000 * self[name]:.0f} ms" for name in self.DEFAULTS)


def calibrate(directory: pathlib.Path, launcher: Launcher, windows: Windows) -> None:
    """Time the kill windows once, unkilled: a create (and the start before it), a close, and a
    resume's create(mode="a") and first flushes, each with its phase's recording."""
    runs = {
        "create": {"settings": PHASE_SETTINGS["create"], "until": 0},
        "close": {
            "settings": PHASE_SETTINGS["close"],
            "until": 2 * PHASE_SETTINGS["close"].per_call,
        },
        "resume": {
            "settings": PHASE_SETTINGS["resume"],
            "control": directory / "calibrate-resume.control",
            "warmup": True,
        },
    }
    children = {}
    for name, options in runs.items():
        settings = options.pop("settings")
        children[name] = launcher.start(
            child_args(directory / f"calibrate-{name}.zarr", settings, **options),
            directory / f"calibrate-{name}.out",
            directory / f"calibrate-{name}.err",
        )
    control = runs["resume"]["control"]
    for k, total in enumerate((40, 120), 1):
        order(control, f"go{k}", str(total))
        children["resume"].wait_event("closed", k)
    order(control, "go3", "exit")
    for name, child in children.items():
        if child.wait() != 0:
            raise ChildFailed(f"the {name} calibration child failed:\n{child.stderr()}")
    create, close = children["create"], children["close"]
    windows.observe("startup", create.event("start")[1] - create.started)
    windows.observe("create", create.event("created")[1] - create.event("creating")[1])
    windows.observe("close", close.event("closed")[1] - close.event("closing")[1])
    windows.observe("resume", resume_window(children["resume"], 2))
    for path in directory.glob("calibrate-*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def resume_window(child: Child, round_: int) -> float:
    """From a round's ``creating`` to its first ``recorded``: create(mode="a") and the first
    flushes (a call of 40 frames flushes two chunks of 16)."""
    events = child.events()
    i = [i for i, (n, _, _) in enumerate(events) if n == "creating"][round_ - 1]
    return next(t for n, _, t in events[i:] if n == "recorded") - events[i][2]


# ----------------------------------------------------------------------------------- trials


@dataclasses.dataclass(frozen=True)
class Kill:
    """What one kill left."""

    state: str  # what zarr.json said after the kill: none, creating, interrupted, closed
    committed: int  # frames the run held after the kill (0 when there was no run)
    after_marker_s: float | None  # seconds from the phase's marker to the kill (None: before it)
    committed_before: int  # the committed count read just before the kill
    recorded_before: int  # frames the child had recorded (completed calls) before the kill
    locks: int  # *.__lock files the kill left in the store

    @property
    def lost(self) -> int:
        return max(0, self.recorded_before - self.committed)


@dataclasses.dataclass
class Trial:
    """What one trial saw."""

    phase: str
    seed: int
    signal: str
    kills: list[Kill] = dataclasses.field(default_factory=list)
    base: str = ""  # the run before the kill or the race: empty, closed, interrupted
    resumed: list[int] = dataclasses.field(default_factory=list)  # the totals of the resumes
    winner_gap_s: float | None = None  # twowriter: seconds between the two writers' create calls
    conflict: str = ""  # twowriter: "lease" (named the live writer) or "claim" (lost the swap)
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def committed(self) -> int | None:
        return self.kills[0].committed if self.kills else None


class _Run:
    """One trial's store, children and checks."""

    def __init__(
        self,
        directory: pathlib.Path,
        launcher: Launcher,
        trial: Trial,
        settings: Settings,
        sig: int,
        windows: Windows,
    ) -> None:
        self.dir = directory / f"{trial.phase}{trial.seed}"
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.store = self.dir / "run.zarr"
        self.launcher, self.trial, self.settings, self.sig, self.windows = (
            launcher,
            trial,
            settings,
            sig,
            windows,
        )
        self.rng = random.Random(f"{trial.phase}-{trial.seed}")
        self.children: list[Child] = []
        self.segments: list[tuple[int, float]] = [(0, 0.0)]
        self._names = iter(range(1, 1000))

    def start(self, **options) -> Child:
        k = next(self._names)
        settings = options.pop("settings", self.settings)
        child = self.launcher.start(
            child_args(self.store, settings, **options),
            self.dir / f"child{k}.out",
            self.dir / f"child{k}.err",
        )
        self.children.append(child)
        return child

    def resumer(self) -> tuple[Child, pathlib.Path]:
        control = self.dir / "resumer"
        return self.start(control=control, warmup=True), control

    def kill(self, child: Child, at: float, marker: str | None) -> tuple[int, int, float | None]:
        """Kill `child` with the signal at monotonic time `at`; returns ``(committed before,
        recorded before, seconds after the marker or None)``."""
        time.sleep(max(0.0, at - time.monotonic()))
        before = committed_count(self.store)
        recorded = [v for n, v, _ in child.events() if n == "recorded"]
        child.send(self.sig)
        killed = time.monotonic()
        rc = child.wait()
        if rc not in (-self.sig, 128 + self.sig):
            raise ChildFailed(
                f"the child ended with {rc}, not by signal {self.sig}:\n{child.stderr()}"
            )
        hit = child.event(marker) if marker else None
        after = None if hit is None or hit[1] > killed else killed - hit[1]
        return before, recorded[-1] if recorded else 0, after

    def after_kill(
        self, child: Child, at: float, marker: str | None, *, at_least: int, may_be_absent: bool
    ) -> Kill:
        """Kill, then check what the store holds."""
        before, recorded, after = self.kill(child, at, marker)
        locks = lock_files(self.store)
        meta = stored_meta(self.store)
        state = (
            "none"
            if meta is None
            else {"open": "interrupted"}.get(meta.get("status"), str(meta.get("status")))
        )
        if state in ("none", "creating"):
            returned = child.event("created") is not None
            if not may_be_absent or returned:
                raise AssertionError(
                    f"{self.store}: no run after the kill (zarr.json: {state}), but "
                    + ("create had returned" if returned else "a run existed before")
                )
            try:
                js.open(self.store)
            except js.StoreNotFoundError:
                n = 0
            else:
                raise AssertionError(f"{self.store}: open found a run where zarr.json says {state}")
        else:
            n = check_run(
                self.store,
                self.settings,
                self.segments,
                statuses=("interrupted", "closed"),
                at_least=max(at_least, before),
            )
            if state == "closed" and js.open(self.store).status != "closed":
                raise AssertionError(f"{self.store}: zarr.json says closed, open says otherwise")
        kill = Kill(state, n, after, before, recorded, locks)
        if kill.lost > self.settings.loss_bound():
            raise AssertionError(
                f"{self.store}: the kill lost {kill.lost} frames; the documented bound is "
                f"{self.settings.loss_bound()}"
            )
        return kill

    def resume_round(self, resumer: Child, control: pathlib.Path, k: int, total: int) -> None:
        """Round k of the resumer: resume to `total`, close; check every frame."""
        order(control, f"go{k}", str(total))
        resumer.wait_event("closed", k)
        if self.segments[-1][1] != 0.0:  # after a salted writer's frames, the resumer's are plain
            self.segments.append((resumer.event("created", k)[0], 0.0))
        check_run(self.store, self.settings, self.segments, statuses=("closed",), length=total)
        self.trial.resumed.append(total)
        if k == 2 and self.settings == PHASE_SETTINGS["resume"]:
            self.windows.observe("resume", resume_window(resumer, k))

    def finish(self, resumer: Child, control: pathlib.Path, rounds: int) -> None:
        order(control, f"go{rounds + 1}", "exit")
        if resumer.wait() != 0:
            raise ChildFailed(f"the resumer failed:\n{resumer.stderr()}")

    def base(self, kind: str) -> int:
        """Make the run the phase starts from: empty, closed (recorded here) or interrupted (a
        recording process killed mid-run, checked like any kill). Returns its frames."""
        self.trial.base = kind
        if kind == "empty":
            return 0
        if kind == "closed":
            n = self.settings.chunk * self.rng.randint(1, 6)
            record_closed(self.store, self.settings, n)
            return check_run(
                self.store, self.settings, self.segments, statuses=("closed",), length=n
            )
        child = self.start()
        wanted = self.settings.chunk * self.rng.randint(1, 3)
        wait_committed(self.store, child, wanted)
        return self.after_kill(
            child, time.monotonic(), None, at_least=wanted, may_be_absent=False
        ).committed

    def close(self) -> None:
        for child in self.children:
            child.stop()


def wait_committed(store: pathlib.Path, child: Child, wanted: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while committed_count(store) < wanted:
        if child.returncode is not None:
            raise ChildFailed(f"the recording child exited early:\n{child.stderr()}")
        if time.monotonic() > deadline:
            raise ChildFailed(f"the child committed no {wanted} frames in {timeout} s")
        time.sleep(0.002)


_RECORDERS: dict = {}


def record_closed(store: pathlib.Path, settings: Settings, n: int) -> None:
    """Record `n` reference frames (a multiple of the chunk) into a new run here, and close it."""
    import jax
    import jax.numpy as jnp

    key = (settings.chunk, settings.fields)
    if key not in _RECORDERS:

        @jax.jit
        def record_block(sink, steps, frames):
            def body(sink, xs):
                step, frame = xs
                return js.record(
                    sink, step=step, time=0.25 * step.astype(jnp.float32), frame=frame
                ), None

            return jax.lax.scan(body, sink, (steps, frames))[0]

        _RECORDERS[key] = record_block
    example = {
        name: np.zeros(v.shape[1:], np.float32)
        for name, v in reference(np.arange(1), settings.fields).items()
    }
    sink = js.ZarrSink.create(store, example, chunk=settings.chunk, mode="w-")
    for start in range(0, n, settings.chunk):
        steps = np.arange(start, start + settings.chunk, dtype=np.int32)
        sink = _RECORDERS[key](sink, steps, reference(steps, settings.fields))
    js.close(sink)


def chunk_files(store: pathlib.Path, frames: int, chunk: int) -> dict[str, bytes]:
    """The bytes of every chunk file holding only frames below `frames`, by path."""
    out = {}
    for path in sorted(store.rglob("*")):
        parts = path.relative_to(store).parts
        if (
            path.is_file()
            and len(parts) >= 3
            and parts[1] == "c"
            and parts[-1].isdigit()
            and (int(parts[2]) + 1) * chunk <= frames
        ):
            out[str(path.relative_to(store))] = path.read_bytes()
    return out


def trial_create(r: _Run) -> None:
    resumer, control = r.resumer()
    child = r.start(mode=r.rng.choice(["a", "w", "w-"]))
    if r.rng.random() < 0.15:  # from the process's start: most of these kills come before create
        at, marker = child.started + r.rng.uniform(0.0, r.windows["startup"]), "creating"
    else:
        at, marker = (
            child.wait_event("creating")[1] + r.rng.uniform(0.0, 1.1 * r.windows["create"]),
            "creating",
        )
    kill = r.after_kill(child, at, marker, at_least=0, may_be_absent=True)
    r.trial.kills.append(kill)
    if child.event("start") is not None:
        r.windows.observe("startup", child.event("start")[1] - child.started)
    two_rounds(r, resumer, control, kill.committed)
    if kill.state in ("none", "creating"):  # the resumer created the run: a whole create, timed
        r.windows.observe("create", resumer.event("created")[1] - resumer.event("creating")[1])


def two_rounds(r: _Run, resumer: Child, control: pathlib.Path, committed: int) -> None:
    total = committed + r.settings.resume_to_extra
    r.resume_round(resumer, control, 1, total)
    r.resume_round(resumer, control, 2, total + r.settings.per_call)
    r.finish(resumer, control, 2)


def trial_run(r: _Run) -> None:
    resumer, control = r.resumer()
    child = r.start()
    r.trial.base = r.settings.loop
    wait_committed(r.store, child, r.settings.chunk * r.rng.randint(1, 6))
    kill = r.after_kill(
        child,
        time.monotonic() + r.rng.uniform(0.0, 0.5),
        "created",
        at_least=0,
        may_be_absent=False,
    )
    r.trial.kills.append(kill)
    two_rounds(r, resumer, control, kill.committed)


def trial_close(r: _Run) -> None:
    resumer, control = r.resumer()
    child = r.start(until=r.settings.per_call * r.rng.randint(1, 4), linger=True)
    at = child.wait_event("closing")[1] + r.rng.uniform(0.0, 1.1 * r.windows["close"])
    kill = r.after_kill(child, at, "closing", at_least=0, may_be_absent=False)
    r.trial.kills.append(kill)
    if child.event("closed") is not None:
        r.windows.observe("close", child.event("closed")[1] - child.event("closing")[1])
    two_rounds(r, resumer, control, kill.committed)


def trial_resume(r: _Run) -> None:
    resumer, control = r.resumer()
    first, second = (r.start(control=r.dir / name, warmup=True) for name in ("first", "second"))
    before = r.base(("closed", "interrupted")[r.trial.seed % 2])
    committed = kill_a_resume(r, first, r.dir / "first", before)
    total = committed + r.settings.resume_to_extra
    r.resume_round(resumer, control, 1, total)
    committed = kill_a_resume(r, second, r.dir / "second", total)
    r.resume_round(resumer, control, 2, committed + r.settings.resume_to_extra)
    r.finish(resumer, control, 2)


def kill_a_resume(r: _Run, child: Child, control: pathlib.Path, before: int) -> int:
    child.wait_event("ready")  # its recording is compiled: it waits for go1
    order(control, "go1", str(FOREVER))
    at = child.wait_event("creating")[1] + r.rng.uniform(0.0, 1.1 * r.windows["resume"])
    kill = r.after_kill(child, at, "creating", at_least=before, may_be_absent=False)
    r.trial.kills.append(kill)
    return kill.committed


def trial_twowriter(r: _Run) -> None:
    resumer, control = r.resumer()
    races = [r.dir / f"race{k}" for k in range(len(SALTS))]
    writers = [
        r.start(control=race, warmup=True, hold=True, salt=salt) for race, salt in zip(races, SALTS)
    ]
    before = r.base(("closed", "empty", "interrupted")[r.trial.seed % 3])
    prefix = chunk_files(r.store, before, r.settings.chunk)
    for writer in writers:
        writer.wait_event("ready")
    total = before + r.settings.resume_to_extra
    # Half the races start both writers at once; the others start the second up to 20 ms later.
    first = r.rng.randrange(len(writers))
    lag = 0.0 if r.rng.random() < 0.5 else r.rng.uniform(0.0, 0.02)
    order(races[first], "go1", str(total))
    time.sleep(lag)
    order(races[1 - first], "go1", str(total))
    deadline = time.monotonic() + 120
    while True:
        holding = [w for w in writers if w.event("holding") is not None]
        ended = [w for w in writers if w.returncode is not None]
        if len(holding) == 2:
            raise AssertionError(f"{r.store}: both writers opened the run and recorded")
        if len(holding) == 1 and len(ended) == 1 and ended[0] is not holding[0]:
            break
        if len(ended) == 2 or (ended and not holding and ended[0].returncode == 0):
            raise AssertionError(
                f"{r.store}: no writer won: " + " / ".join(w.stderr() for w in ended)
            )
        if time.monotonic() > deadline:
            raise ChildFailed(f"{r.store}: the race did not end in 120 s")
        time.sleep(0.001)
    winner, loser = holding[0], ended[0]
    message = loser.stderr()
    if loser.returncode == 0 or "WriterConflictError" not in message:
        raise AssertionError(
            f"{r.store}: the losing writer ended with {loser.returncode} without a "
            f"WriterConflictError:\n{message}"
        )
    if f"being written by process {winner.pid} on host" in message:
        r.trial.conflict = "lease"
    elif "claimed the run" in message:
        r.trial.conflict = "claim"
    else:
        raise AssertionError(
            f"{r.store}: the conflict error does not name the live writer:\n{message}"
        )
    r.trial.winner_gap_s = abs(winner.event("creating")[1] - loser.event("creating")[1])
    race = races[writers.index(winner)]
    order(race, "close1")
    winner.wait_event("closed")
    order(race, "go2", "exit")
    if winner.wait() != 0:
        raise ChildFailed(f"the winning writer failed:\n{winner.stderr()}")
    r.segments.append((winner.event("created")[0], SALTS[writers.index(winner)]))
    check_run(r.store, r.settings, r.segments, statuses=("closed",), length=total)
    after = chunk_files(r.store, before, r.settings.chunk)
    if after != prefix:
        changed = sorted(k for k in set(prefix) | set(after) if prefix.get(k) != after.get(k))
        raise AssertionError(
            f"{r.store}: the frames before the race changed on disk: {changed[:8]}"
        )
    two_rounds(r, resumer, control, total)


TRIALS = {
    "create": trial_create,
    "run": trial_run,
    "close": trial_close,
    "resume": trial_resume,
    "twowriter": trial_twowriter,
}


def run_trial(
    directory: pathlib.Path,
    seed: int,
    phase: str = "run",
    *,
    launcher: Launcher | None = None,
    sig: int = signal.SIGKILL,
    settings: Settings | None = None,
    windows: Windows | None = None,
    keep_failed: bool = False,
) -> Trial:
    """One trial of `phase`; raises AssertionError (with the seed and phase) if a check fails.

    Its files are removed afterwards (kept on failure with `keep_failed`).
    """
    own = launcher is None
    launcher = Launcher() if own else launcher
    if settings is None:
        settings = PHASE_SETTINGS[phase]
        if phase == "run":  # lax.scan and lax.while_loop alternate
            settings = dataclasses.replace(settings, loop=("scan", "while")[seed % 2])
    trial = Trial(phase, seed, signal.Signals(sig).name.removeprefix("SIG"))
    r = _Run(pathlib.Path(directory), launcher, trial, settings, sig, windows or Windows())
    started = time.monotonic()
    try:
        TRIALS[phase](r)
    except Exception as err:  # noqa: BLE001 - reported with the trial
        trial.error = f"{type(err).__name__}: {err}"
    finally:
        r.close()
        trial.seconds = time.monotonic() - started
        if own:
            launcher.close()
    if trial.ok or not keep_failed:
        shutil.rmtree(r.dir, ignore_errors=True)
    if not trial.ok and not keep_failed:
        raise AssertionError(
            f"fault_kill trial failed (phase {phase}, seed {seed}, signal "
            f"{trial.signal}): {trial.error}"
        )
    return trial


# ------------------------------------------------------------------------------------ report


def _spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def summary(trials: list[Trial]) -> str:
    """One row per phase (and one for all): the table of docs/reliability.md."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from common import table

    rows = []
    phases = {t.phase for t in trials}
    for phase in (*PHASES, "all") if len(phases) > 1 else PHASES:
        mine = [t for t in trials if phase in (t.phase, "all")]
        if not mine:
            continue
        kills = [k for t in mine for k in t.kills]
        if phase == "twowriter":  # no kill: the run before the race, how the loser was told
            states = collections.Counter(f"{t.base}/{t.conflict or 'failed'}" for t in mine)
            committed = [
                t.resumed[0] - PHASE_SETTINGS[t.phase].resume_to_extra for t in mine if t.resumed
            ]
            timing = [1000 * t.winner_gap_s for t in mine if t.winner_gap_s is not None]
        else:
            states = collections.Counter(k.state for k in kills)
            committed = [k.committed for k in kills]
            timing = [1000 * k.after_marker_s for k in kills if k.after_marker_s is not None]
        early = sum(1 for k in kills if k.after_marker_s is None)
        bounds = {PHASE_SETTINGS[t.phase].loss_bound() for t in mine}
        rows.append(
            [
                phase,
                len(mine),
                sum(t.ok for t in mine),
                len(kills),
                ", ".join(f"{state} {count}" for state, count in sorted(states.items())) or "-",
                _spread(committed, "{:.0f}"),
                _spread(timing, "{:.1f}") + (f" ({early} before it)" if early else ""),
                sum(1 for k in kills if k.locks),
                max((k.lost for k in kills), default=0),
                bounds.pop() if len(bounds) == 1 else "-",
                f"{statistics.median([t.seconds for t in mine]):.1f}",
            ]
        )
    return table(
        [
            "phase",
            "trials",
            "passed",
            "kills",
            "state after the kill",
            "committed min / median / max",
            "ms marker to kill min / median / max",
            "kills leaving locks",
            "lost max",
            "bound",
            "s per trial",
        ],
        rows,
    )


SUMMARY_NOTES = """\
state after the kill: what the run's zarr.json said (none: no run; creating: an interrupted create,
which open reports as no run; interrupted: open reports the run of a dead writer; closed: the kill
came after close). twowriter: the run before the race / how the loser was refused (lease: named
the live writer; claim: lost the compare-and-swap of the claim), its committed column is the
frames after the race, and its time column the gap between the two writers' create calls.
ms marker to kill: from the child's marker (create: "creating"; run: "created"; close: "closing";
resume: "creating") to the kill ("before it": killed from the process start, before the marker).
lost: frames recorded in completed calls but not committed, against the documented bound."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phase", choices=PHASES + ("all",), default="all")
    parser.add_argument("--signal", choices=tuple(SIGNALS), default="KILL")
    parser.add_argument(
        "--dir", default=None, help="where the stores go (default: a temporary directory)"
    )
    parser.add_argument(
        "--spawn", action="store_true", help="start every child with a new interpreter"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return
    base = pathlib.Path(tempfile.mkdtemp(prefix="fault_kill_", dir=args.dir))
    phases = PHASES if args.phase == "all" else (args.phase,)
    sig = SIGNALS[args.signal]
    trials: list[Trial] = []
    began = time.monotonic()
    with Launcher(spawn=args.spawn) as launcher:
        windows = Windows()
        calibrate(base, launcher, windows)
        print(f"kill windows (calibrated, then learnt): {windows}", flush=True)
        for i in range(args.trials):
            phase, seed = phases[i % len(phases)], args.seed + i
            t = run_trial(
                base, seed, phase, launcher=launcher, sig=sig, windows=windows, keep_failed=True
            )
            trials.append(t)
            kills = "; ".join(
                f"{k.state} {k.committed} frames"
                + (
                    f" {1000 * k.after_marker_s:.1f} ms after the marker"
                    if k.after_marker_s is not None
                    else " (before the marker)"
                )
                + (f", {k.locks} lock files" if k.locks else "")
                for k in t.kills
            )
            extra = f" base {t.base}" + (f", loser learnt by {t.conflict}" if t.conflict else "")
            print(
                f"trial {i:3d} {phase:9s} seed {seed:4d} SIG{t.signal}: {kills or '-'};{extra}; "
                f"resumed to {t.resumed} in {t.seconds:.1f} "
                "s: " + ("ok" if t.ok else f"FAILED: {t.error}"),
                flush=True,
            )
    print()
    print(
        f"{args.trials} trials, SIG{args.signal}, {time.monotonic() - began:.0f} s; kill windows "
        f"at the end: {windows}"
    )
    print(summary(trials))
    print(SUMMARY_NOTES)
    failed = [t for t in trials if not t.ok]
    for t in failed:
        print(f"FAILED: phase {t.phase} seed {t.seed}: {t.error}")
    if failed:
        print(f"the failed trials' files are kept under {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
