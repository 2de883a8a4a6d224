"""Reliability: kills at random moments, Ctrl-C, a full disk, and small versions of the load runs.

The crash trials and load scenarios are the functions of benchmarks/fault_kill.py and
benchmarks/bench_load.py, run here with fixed seeds and small sizes (values and counts asserted,
never timings).
"""

import dataclasses
import importlib.util
import json
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fs_helpers import small_filesystem
from zarr_helpers import EXAMPLE, expected, run_steps, steps

import jaxsinks as js

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


def _load(name: str):
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


fault_kill = _load("fault_kill")
bench_load = _load("bench_load")


# ------------------------------------------------------------- kills (benchmarks/fault_kill.py)


@pytest.fixture(scope="module")
def launcher():
    """The fault_kill fork server: every child is a new process, without the seconds of imports."""
    with fault_kill.Launcher() as server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize(
    "phase, seed, sig",
    [
        ("create", 21, "KILL"),
        ("run", 22, "KILL"),  # lax.scan
        ("run", 23, "TERM"),  # lax.while_loop
        ("close", 24, "KILL"),
        ("resume", 25, "KILL"),  # from a run left by a killed writer, killed twice
        ("twowriter", 28, "KILL"),  # an empty location
        ("twowriter", 29, "TERM"),  # a run left by a writer killed with SIGTERM
    ],
)
def test_a_kill_in_every_phase_keeps_the_committed_prefix_and_resumes(
    tmp_path, launcher, phase, seed, sig
):
    """One fault_kill trial: kill (or race), check every frame, resume twice, check again.

    `run_trial` raises, naming the phase and seed, on any check that fails: a run that does not
    open (or opens where no run was claimed), a frame lost, changed or out of order, more frames
    lost than the documented bound, a resume that fails or leaves a gap or a duplicate, two
    writers both recording or the loser not told with WriterConflictError.
    """
    trial = fault_kill.run_trial(
        tmp_path, seed, phase, launcher=launcher, sig=fault_kill.SIGNALS[sig]
    )
    settings = fault_kill.PHASE_SETTINGS[phase]
    assert trial.ok and trial.signal == sig
    assert len(trial.kills) == {"resume": 2, "twowriter": 0}.get(phase, 1)
    for kill in trial.kills:
        assert kill.committed >= kill.committed_before
        assert kill.lost <= settings.loss_bound()
    if phase == "run":
        assert (
            trial.committed >= settings.chunk and trial.committed % settings.chunk == 0
        )  # whole blocks
    if phase == "twowriter":
        assert (
            trial.conflict in ("lease", "claim")
            and trial.base == ("closed", "empty", "interrupted")[seed % 3]
        )
    if phase != "twowriter":  # each resume records from the committed count to a fixed total
        assert trial.resumed[0] == trial.kills[0].committed + settings.resume_to_extra
    assert trial.resumed[1] == (
        trial.kills[1].committed + settings.resume_to_extra
        if phase == "resume"
        else trial.resumed[0] + settings.per_call
    )
    assert not list(tmp_path.iterdir())  # the trial cleans up after itself


@pytest.mark.slow
@pytest.mark.parametrize("seed, sig, loop", [(26, "KILL", "scan"), (27, "TERM", "while")])
def test_a_kill_while_every_block_is_synced_between_records_keeps_the_prefix(
    tmp_path, launcher, seed, sig, loop
):
    """The committer syncs each block as soon as it is written (``sync_bytes=1``; by default
    only blocks of 8 MiB or more, which the other trials do not write), so a kill mid-run lands
    among syncs between records: the committed prefix is still exact, and resumes continue it."""
    settings = dataclasses.replace(fault_kill.PHASE_SETTINGS["run"], sync_bytes=1, loop=loop)
    trial = fault_kill.run_trial(
        tmp_path, seed, "run", launcher=launcher, sig=fault_kill.SIGNALS[sig], settings=settings
    )
    assert trial.ok and trial.signal == sig and len(trial.kills) == 1
    (kill,) = trial.kills
    assert kill.committed >= kill.committed_before and kill.lost <= settings.loss_bound()
    assert trial.committed >= settings.chunk and trial.committed % settings.chunk == 0
    assert trial.resumed[0] == kill.committed + settings.resume_to_extra
    assert trial.resumed[1] == trial.resumed[0] + settings.per_call
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_kill_with_children_spawned_as_new_interpreters(tmp_path):
    """The same trial with every child a fresh interpreter (no fork server)."""
    with fault_kill.Launcher(spawn=True) as spawned:
        trial = fault_kill.run_trial(tmp_path, 30, "run", launcher=spawned)
    assert trial.ok and trial.kills[0].committed >= 16


def test_a_failed_trial_names_its_phase_and_seed(tmp_path, monkeypatch):
    def broken(r):
        raise AssertionError("the prefix differs")

    monkeypatch.setitem(fault_kill.TRIALS, "close", broken)
    with (
        fault_kill.Launcher(spawn=True) as spawned,
        pytest.raises(
            AssertionError,
            match=r"phase close, seed 5, signal KILL\): AssertionError: the prefix differs",
        ),
    ):
        fault_kill.run_trial(tmp_path, 5, "close", launcher=spawned)


def test_the_documented_loss_bound_counts_device_pool_and_inflight_blocks():
    settings = fault_kill.Settings(chunk=16, max_inflight_bytes=4 * 16 * fault_kill.FRAME_BYTES)
    # one staging block + 3 pool blocks + (4 in-flight blocks + the one that crosses the limit)
    assert settings.loss_bound() == 16 * (1 + 3 + 5)


# --------------------------------------------------------------------------------- Ctrl-C


def test_recording_closes_the_sinks_when_the_block_ends(tmp_path):
    with js.recording(js.ZarrSink.create(tmp_path / "run.zarr", EXAMPLE, chunk=8)) as rec:
        rec.sinks = run_steps(rec.sinks, steps(0, 21))
    assert rec.closed and rec.close_error is None
    assert int(rec.sinks.flushed) == 21
    run = js.open(tmp_path / "run.zarr")
    assert run.status == "closed" and run.steps.tolist() == list(range(21))


def test_an_exception_in_the_block_flushes_what_the_device_holds_and_is_re_raised(tmp_path):
    store = tmp_path / "run.zarr"
    with pytest.raises(KeyboardInterrupt):
        with js.recording(
            (
                js.ZarrSink.create(store, EXAMPLE, chunk=8),
                js.DeviceBuffer.create(EXAMPLE, capacity=64),
            )
        ) as rec:
            rec.sinks = run_steps(rec.sinks, steps(0, 13))  # 8 flushed, 5 staged on the device
            raise KeyboardInterrupt
    run = js.open(store)
    assert run.status == "closed" and len(run) == 13
    np.testing.assert_array_equal(run["x"][:], expected(range(13))["x"])


def test_a_call_cut_short_after_it_flushed_leaves_a_closed_run_of_its_flushed_blocks(tmp_path):
    # jaxlib can raise a Ctrl-C inside a jitted call: the call's new sink value is lost after it
    # flushed blocks, so the value the block holds is older than what the writer accepted.
    store = tmp_path / "run.zarr"
    with pytest.raises(KeyboardInterrupt) as info:
        with js.recording(js.ZarrSink.create(store, EXAMPLE, chunk=16)) as rec:
            rec.sinks = run_steps(rec.sinks, steps(0, 40))  # 32 flushed, 8 staged
            run_steps(rec.sinks, steps(40, 75))  # flushes 32..63; its value (64..74 staged) lost
            raise KeyboardInterrupt
    run = js.open(store)
    assert run.status == "closed" and len(run) == 64
    assert run.steps.tolist() == list(range(64))
    np.testing.assert_array_equal(run["x"][:], expected(range(64))["x"])
    notes = "\n".join(info.value.__notes__)
    assert "closed" in notes and "64 committed frames" in notes and "were lost" in notes
    assert rec.close_error is None


def test_a_close_error_during_an_exception_is_chained_not_swallowed(tmp_path):
    sink = js.ZarrSink.create(tmp_path / "run.zarr", EXAMPLE, chunk=8)
    with pytest.raises(RuntimeError, match="the user's error") as info:
        with js.recording(sink) as rec:
            js.close(rec.sinks)  # closing twice makes the exit's close fail
            raise RuntimeError("the user's error")
    assert isinstance(rec.close_error, js.StoreError)
    assert info.value.__context__ is rec.close_error
    assert any("already closed" in note for note in info.value.__notes__)


def test_a_close_error_without_an_exception_is_raised(tmp_path):
    sink = js.ZarrSink.create(tmp_path / "run.zarr", EXAMPLE, chunk=8)
    with pytest.raises(js.StoreError, match="already closed"):
        with js.recording(sink) as rec:
            js.close(rec.sinks)


def test_recording_needs_sinks():
    with pytest.raises(js.ConfigError, match="`jaxsinks.recording` takes a sink"):
        js.recording({"a": 1})
    with pytest.raises(js.ConfigError, match="got no sink"):
        js.recording(())


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.002, 0.007])
def test_sigint_mid_run_flushes_every_completed_call_and_closes_the_store(tmp_path, delay):
    # `delay` moves the signal across the next call (inside a flush, or between flushes): a
    # Ctrl-C held by a flush is delivered once that jitted call returns.
    store, per_call = tmp_path / "run.zarr", 40
    child = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "crash_child.py"),
            str(store),
            "16",
            str(per_call),
            "--recording",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=HERE,
    )
    printed = []
    try:
        while len(printed) < 30:  # 30 completed jitted calls
            line = child.stdout.readline()
            assert line, child.stderr.read()
            printed.append(int(line))
        time.sleep(delay)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()  # reap it and close its pipes
    assert "KeyboardInterrupt" in err  # re-raised after the close
    assert child.returncode in (1, -signal.SIGINT)
    last = int([x for x in printed + out.split("\n") if str(x).strip().isdigit()][-1])
    run = js.open(store)
    assert run.status == "closed"
    # every frame of the completed calls; of the call running when the signal came, every frame
    # (it completed and was assigned), or, if jaxlib raised the Ctrl-C inside it, the blocks it
    # had flushed (whole blocks of 16: its staged frames are lost with it, said in the error).
    assert last <= len(run) <= last + per_call
    assert len(run) in (last, last + per_call) or len(run) % 16 == 0
    assert run.steps.tolist() == list(range(len(run)))
    np.testing.assert_array_equal(run["x"][:], expected(range(len(run)))["x"])


@pytest.mark.slow
def test_sigint_stops_a_driver_loop_soon_and_keeps_every_committed_frame(tmp_path):
    # js.scan runs one compiled loop of 10**7 steps: a Ctrl-C must end it after the flush it lands
    # in, not at the end of the loop, and leave a readable, resumable run.
    store = tmp_path / "run.zarr"
    args = [sys.executable, str(HERE / "crash_child.py"), str(store), "64", "1", "--driver"]
    child = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE
    )
    try:
        assert child.stdout.readline().strip() == "driving", child.stderr.read()
        deadline = time.monotonic() + 120
        while _committed(store) < 64 * 20:  # the loop is well under way
            assert child.poll() is None and time.monotonic() < deadline, child.stderr.read()
            time.sleep(0.05)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
        waited = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert "KeyboardInterrupt" in err and "interrupted" in err, err[-3000:]
    assert child.returncode in (1, -signal.SIGINT)
    run = js.open(store)
    assert run.status == "interrupted"
    assert 64 * 20 <= len(run) < 10**7, (len(run), waited)
    assert len(run) % 64 == 0  # whole blocks: the frames staged on the device are lost
    assert run.steps.tolist() == list(range(len(run)))
    np.testing.assert_array_equal(run["x"][:], expected(range(len(run)))["x"])
    resumed = js.ZarrSink.create(store, EXAMPLE, chunk=64, mode="a")
    assert int(resumed.flushed) == len(run)
    js.close(run_steps(resumed, steps(len(run), len(run) + 10)))
    assert js.open(store).steps.tolist() == list(range(len(run) + 10))


def _committed(store: pathlib.Path) -> int:
    try:
        return len(js.open(store))
    except js.JaxsinksError:
        return 0


# ---------------------------------------------------------------------------- write faults


def _fill(store, *, frames=640, floats=1024, chunk=8, fault=None):
    """Record frames of `floats` float32 (uncompressed) until `frames`; return the sink's flags
    after the last jitted call and the error `close` raised. `fault` (if given) is called once
    the first jitted call's frames are committed."""
    example = {"x": jnp.zeros(floats, jnp.float32)}
    sink = js.ZarrSink.create(store, example, chunk=chunk, codec=None)

    @jax.jit
    def run(sink, start):
        def body(sink, i):
            step = start + i
            return js.record(
                sink, step=step, frame={"x": jnp.full(floats, step.astype(jnp.float32))}
            ), None

        return jax.lax.scan(body, sink, jnp.arange(64, dtype=jnp.int32))[0]

    for start in range(0, frames, 64):
        sink = run(sink, jnp.int32(start))
        if fault is not None and start == 0:
            while (
                json.loads((store / "zarr.json").read_text())["attributes"]["jaxsinks"]["committed"]
                < 64
            ):
                time.sleep(0.01)
            fault()
    flags = int(sink.flags)
    with pytest.raises(js.WriteError) as info:
        js.close(sink)
    return flags, info.value


def _check_full_disk_error(store, flags, error):
    assert flags & js.Flag.WRITE_FAILED  # seen inside the loop, before close
    message = str(error)
    assert str(store) in message
    assert f"{error.committed} frames of {store} are committed and readable" in message
    run = js.open(store)
    assert len(run) == error.committed > 0  # the committed prefix, exactly as the error says
    assert run.steps.tolist() == list(range(error.committed))
    np.testing.assert_array_equal(run["x"][:, 0], np.arange(error.committed, dtype=np.float32))


def test_a_full_disk_is_a_write_error_naming_the_committed_frames(tmp_path, capsys):
    try:
        with small_filesystem(tmp_path, "1m") as small:
            store = small / "run.zarr"
            flags, error = _fill(store)
            assert "No space left on device" in str(error)
            _check_full_disk_error(store, flags, error)
        with capsys.disabled():
            print("\n[full disk: a 1 MiB tmpfs]", end=" ")
    except pytest.skip.Exception as why:
        with capsys.disabled():
            print(f"\n[full disk: no tmpfs ({why}); running the RLIMIT_FSIZE fallback]", end=" ")
        _full_disk_by_rlimit(tmp_path)


_RLIMIT_CHILD = """
import resource, signal, sys
sys.path.insert(0, {tests!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
import pathlib
import jaxsinks as js
import test_reliability as t
limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
flags, error = t._fill(pathlib.Path({store!r}), frames=256, floats=4096, chunk=16, fault=limit)
print("FLAGS", flags)
print("COMMITTED", error.committed)
print("MESSAGE", str(error).replace(chr(10), " "))
"""


def _full_disk_by_rlimit(tmp_path):
    """The fallback where no filesystem can be mounted: a file-size limit (EFBIG) in a child."""
    store = tmp_path / "fsize.zarr"
    # A chunk is 16 frames of 16 KiB = 256 KiB. Once the first 64 frames are committed the
    # limit is set to one byte less than a chunk: metadata is still written, every chunk fails.
    code = _RLIMIT_CHILD.format(tests=str(HERE), limit=256 * 1024 - 1, store=str(store))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert int(lines["FLAGS"]) & js.Flag.WRITE_FAILED
    assert str(store) in lines["MESSAGE"] and "are committed and readable" in lines["MESSAGE"]
    run = js.open(store)
    assert len(run) == int(lines["COMMITTED"]) >= 64
    assert run.steps.tolist() == list(range(len(run)))
    np.testing.assert_array_equal(run["x"][:, 0], np.arange(len(run), dtype=np.float32))


def test_a_file_size_limit_is_a_write_error_and_the_store_still_opens(tmp_path):
    _full_disk_by_rlimit(tmp_path)


# ------------------------------------------------------------------------------------ load


def test_load_many_frames_in_one_run(tmp_path):
    result = bench_load.many_frames(tmp_path, frames=30_000, per_call=10_000)
    assert result["ok"] and result["frames"] == 30_000


def test_load_fifty_fields(tmp_path):
    result = bench_load.many_fields(tmp_path, fields=50, frames=600)
    assert result["ok"] and result["fields"] == 50 and result["frames"] == 600


def test_load_eight_sinks_in_one_loop(tmp_path):
    result = bench_load.many_sinks(tmp_path, sinks=8, steps=3000)
    assert result["ok"]
    assert result["frames"] == sum(len(range(0, 3000, k)) for k in range(1, 9))


def test_load_a_stream_keeps_memory_bounded(tmp_path):
    result = bench_load.big_stream(tmp_path, gib=0.0625, frame_floats=2**14, chunk=16, per_call=128)
    assert result["ok"] and result["frames"] == 1024
    assert result["samples"] >= 1


def test_load_four_threads_each_with_its_own_store(tmp_path):
    result = bench_load.threads(tmp_path, count=4, steps=2000)
    assert result["ok"] and result["frames"] == 8000
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------ docs


def test_reliability_page_code_runs(tmp_path, monkeypatch):
    """docs/reliability.md is a top-level page: its ```python blocks run here, in order."""
    from test_docs import code_blocks, open_writers

    path = ROOT / "docs" / "reliability.md"
    runnable = [b for b in code_blocks(path.read_text()) if b.info == "python"]
    assert runnable
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "docs.reliability"}
    before = open_writers()
    for block in runnable:
        exec(compile("\n" * (block.line - 1) + block.code, str(path), "exec"), namespace)  # noqa: S102
    assert open_writers() == before
