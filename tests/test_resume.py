"""Resume in one call: a checkpointed driver (``checkpoint=``) resumed with ``resume=True`` leaves
every store exactly as an uninterrupted run does, after a stop in the process (a step that
raises), after kill -9 at random moments (also during a checkpoint, and during the resume), and
refuses a checkpoint that does not fit with a `CheckpointError` before changing anything.
"""

import json
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

import jaxsinks as js

HERE = pathlib.Path(__file__).resolve().parent

# --------------------------------------------------------------------------------- helpers


def same_store(a: pathlib.Path, b: pathlib.Path) -> None:
    """Every field, step and time of two runs equal bit for bit, and every chunk file the same
    bytes (the metadata, which names writers and checkpoints, aside)."""
    ra, rb = js.open(a), js.open(b)
    assert ra.status == rb.status == "closed"
    assert len(ra) == len(rb) > 0
    assert sorted(ra.fields) == sorted(rb.fields)
    for name in ra.fields:
        assert _bytes(ra[name][:]) == _bytes(rb[name][:]), name
    assert ra.steps.tobytes() == rb.steps.tobytes()
    assert ra.times.tobytes() == rb.times.tobytes()
    files = lambda root: {  # noqa: E731
        p.relative_to(root): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != "zarr.json"
    }
    fa, fb = files(a), files(b)
    assert sorted(fa) == sorted(fb)
    assert all(fa[k] == fb[k] for k in fa), [str(k) for k in fa if fa[k] != fb[k]]


def _bytes(values) -> bytes:
    """The bytes of a field's values, with their shapes (a ragged field reads as nested lists)."""
    if isinstance(values, list):
        return b"[" + b",".join(_bytes(v) for v in values) + b"]"
    return repr(np.shape(values)).encode() + np.asarray(values).tobytes()


def same_trajectory(a: js.Trajectory, b: js.Trajectory) -> None:
    for x, y in zip(jax.tree.leaves(a.frames), jax.tree.leaves(b.frames)):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()
    assert a.steps.tobytes() == b.steps.tobytes() and a.times.tobytes() == b.times.tobytes()


# ------------------------------------------------------------------ a stop in the process

#: The step at which `fragile` raises (None: never). Read by the host callback at run time, so
#: the program is the same whether it raises or not.
FAIL_AT = None


def _fail(n):
    if FAIL_AT is not None and int(n) == FAIL_AT:
        raise RuntimeError("the force field failed")
    return np.int32(0)


def fragile(state):
    x, v, n = state
    ok = io_callback(_fail, jax.ShapeDtypeStruct((), jnp.int32), n)
    return x + 0.01 * v, v - 0.01 * jnp.sin(x), n + 1 + ok


STATE0 = (jnp.linspace(0.0, 1.0, 5, dtype=jnp.float32), jnp.zeros(5, jnp.float32), jnp.int32(0))


def _sinks(root: pathlib.Path, mode: str):
    return (
        js.ZarrSink.create(root / "run.zarr", {"x": STATE0[0]}, chunk=8, mode=mode, every=2),
        js.DeviceBuffer.create({"x": STATE0[0]}, capacity=64, every=3),
    )


def _drive(loop, root, mode, **options):
    frame = lambda s: {"x": s[0]}  # noqa: E731
    if loop == "scan":
        return js.scan(
            fragile, STATE0, _sinks(root, mode), steps=150, frame=frame, dt=0.1, **options
        )
    state, sinks, taken = js.while_loop(
        lambda s: s[2] < 140, fragile, STATE0, _sinks(root, mode), max_steps=150, frame=frame,
        dt=0.1, **options,
    )  # fmt: skip
    assert taken == 140
    return state, sinks


@pytest.mark.parametrize("loop", ["scan", "while"])
@pytest.mark.parametrize("fail_at", [75, 80])  # mid-segment; right after a checkpoint
def test_a_stopped_loop_resumes_to_the_uninterrupted_stores(tmp_path, monkeypatch, loop, fail_at):
    plain, ckpt, stopped = tmp_path / "plain", tmp_path / "ckpt", tmp_path / "stopped"
    state_a, (_, buf_a) = _drive(loop, plain, "w-")  # no checkpoints: one compiled loop
    state_b, (_, buf_b) = _drive(loop, ckpt, "w-", checkpoint=ckpt / "c", checkpoint_every=20)
    monkeypatch.setattr(sys.modules[__name__], "FAIL_AT", fail_at)
    with pytest.raises(jax.errors.JaxRuntimeError, match="force field") as info:
        _drive(loop, stopped, "w-", checkpoint=stopped / "c", checkpoint_every=20)
    assert any("committed" in note for note in info.value.__notes__)
    interrupted = js.open(stopped / "run.zarr")
    # At 80 the sinks after the last segment are the newest (nothing flushed since): their staged
    # frames are flushed before the run is ended; at 75 the run is ended as it stands.
    assert interrupted.status == "interrupted"
    assert len(interrupted) == (40 if fail_at == 80 else 32)  # the checkpoint has 24 committed
    saved = [p.name for p in (stopped / "c").iterdir()]
    assert saved == [f"ckpt-{fail_at // 20 * 20:012d}.npz"]  # the last step done: fail_at
    monkeypatch.setattr(sys.modules[__name__], "FAIL_AT", None)
    state_c, (_, buf_c) = _drive(
        loop, stopped, "a", checkpoint=stopped / "c", checkpoint_every=20, resume=True
    )
    for state in (state_b, state_c):
        assert all(
            np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(state_a, state)
        )
    same_store(plain / "run.zarr", ckpt / "run.zarr")
    same_store(plain / "run.zarr", stopped / "run.zarr")
    same_trajectory(buf_a.read(), buf_b.read())
    same_trajectory(buf_a.read(), buf_c.read())
    meta = json.loads((stopped / "run.zarr" / "zarr.json").read_text())["attributes"]["jaxsinks"]
    assert meta["checkpoint"]["step"] == (140 if loop == "while" else 150)


def _when_buffer():
    """A DeviceBuffer recording on a `When` schedule whose predicate is a new function each time
    (as in a new process)."""
    return js.DeviceBuffer.create(
        {"x": STATE0[0]}, capacity=64, every=js.When(lambda s, t: s % 3 == 0, uses_time=False)
    )


def _scan_when(folder, **options):
    frame = lambda s: {"x": s[0]}  # noqa: E731
    return js.scan(
        fragile, STATE0, _when_buffer(), steps=100, frame=frame, dt=0.1,
        checkpoint=folder, checkpoint_every=20, **options,
    )  # fmt: skip


def test_a_loop_recorded_on_a_when_schedule_resumes_with_a_new_predicate_function(
    tmp_path, monkeypatch
):
    """The checkpoint compared schedules by their repr, which shows the predicate's address:
    a `When` sink never resumed in another process ("schedule is 'When(predicate=<function
    <lambda> at 0x...>)' in the checkpoint but ... now")."""
    _, whole = _scan_when(tmp_path / "whole")
    monkeypatch.setattr(sys.modules[__name__], "FAIL_AT", 50)
    with pytest.raises(jax.errors.JaxRuntimeError, match="force field"):
        _scan_when(tmp_path / "c")
    monkeypatch.setattr(sys.modules[__name__], "FAIL_AT", None)
    _, resumed = _scan_when(tmp_path / "c", resume=True)
    same_trajectory(whole.read(), resumed.read())
    assert resumed.read().steps.tolist() == list(range(3, 101, 3))


def test_a_checkpoint_of_an_older_version_compares_its_schedule_by_repr(tmp_path, monkeypatch):
    """Checkpoints written before 2026-11-29 hold the schedule's repr, not its JSON."""
    monkeypatch.setattr(sys.modules[__name__], "FAIL_AT", 75)
    with pytest.raises(jax.errors.JaxRuntimeError, match="force field"):
        _drive("scan", tmp_path, "w-", checkpoint=tmp_path / "c", checkpoint_every=20)
    monkeypatch.setattr(sys.modules[__name__], "FAIL_AT", None)
    (path,) = (tmp_path / "c").glob("ckpt-*.npz")
    with np.load(path) as data:
        arrays = dict(data)
    header = json.loads(arrays["header"].tobytes())
    assert [s["sink"]["schedule"] for s in header["sinks"]] == [
        {"type": "every", "n": 2, "start": 0},
        {"type": "every", "n": 3, "start": 0},
    ]
    for older, expected in (("Every(n=4, start=0)", False), ("Every(n=3, start=0)", True)):
        header["sinks"][0]["sink"]["schedule"] = "Every(n=2, start=0)"
        header["sinks"][1]["sink"]["schedule"] = older
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
        np.savez(path, **arrays)
        if expected:
            _drive(
                "scan", tmp_path, "a", checkpoint=tmp_path / "c", checkpoint_every=20, resume=True
            )
            continue
        sinks = _sinks(tmp_path, "a")
        with pytest.raises(js.CheckpointError, match="schedule is 'Every.n=4, start=0.' in the"):
            js.scan(
                fragile, STATE0, sinks, steps=150, frame=lambda s: {"x": s[0]}, dt=0.1,
                checkpoint=tmp_path / "c", checkpoint_every=20, resume=True,
            )  # fmt: skip
        js.close(sinks[0])
    assert len(js.open(tmp_path / "run.zarr")) == 75


def test_a_finished_loop_resumed_again_closes_the_same_stores(tmp_path):
    """resume='auto' after the end resumes the final checkpoint: nothing to step, the staged
    frames are closed again, and the stores are unchanged."""
    _drive("scan", tmp_path, "w-", checkpoint=tmp_path / "c", checkpoint_every=40)
    before = {p: p.read_bytes() for p in (tmp_path / "run.zarr").rglob("*") if p.is_file()}
    _drive("scan", tmp_path, "a", checkpoint=tmp_path / "c", checkpoint_every=40, resume="auto")
    after = {p: p.read_bytes() for p in (tmp_path / "run.zarr").rglob("*") if p.is_file()}
    assert sorted(before) == sorted(after)
    assert all(before[p] == after[p] for p in before if p.name != "zarr.json")
    assert len(js.open(tmp_path / "run.zarr")) == 75


def test_resume_auto_without_a_checkpoint_starts_afresh(tmp_path):
    _drive("scan", tmp_path / "a", "w-")
    _drive("scan", tmp_path / "b", "w-", checkpoint=tmp_path / "c", resume="auto")
    same_store(tmp_path / "a" / "run.zarr", tmp_path / "b" / "run.zarr")
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["ckpt-000000000150.npz"]


@pytest.mark.parametrize("table, lines", [("wide", 1), ("long", 2)])
def test_a_csv_log_is_cut_back_to_the_checkpoint_and_logged_again(
    tmp_path, monkeypatch, table, lines
):
    def frame(s):
        return {"x0": s[0][0], "x1": s[0][1]}

    def run(root, mode, **options):
        log = js.CsvSink.create(root / "log.csv", frame(STATE0), block=4, mode=mode, table=table)
        return js.scan(fragile, STATE0, log, steps=50, frame=frame, **options)

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    run(tmp_path / "a", "w-")
    monkeypatch.setattr(sys.modules[__name__], "FAIL_AT", 37)
    with pytest.raises(jax.errors.JaxRuntimeError):
        run(tmp_path / "b", "w-", checkpoint=tmp_path / "c", checkpoint_every=10)
    rows = (tmp_path / "b" / "log.csv").read_text().count("\n") - 1
    assert rows == 36 * lines  # flushed blocks of 4, committed, past the checkpoint's 28 frames
    monkeypatch.setattr(sys.modules[__name__], "FAIL_AT", None)
    run(tmp_path / "b", "a", checkpoint=tmp_path / "c", checkpoint_every=10, resume=True)
    assert (tmp_path / "a" / "log.csv").read_bytes() == (tmp_path / "b" / "log.csv").read_bytes()


def ragged_frame(s):
    x, _, n = s
    counts = jnp.stack([1 + n % 3, 1 + (n + 1) % 3]).astype(jnp.int32)
    return {"n": counts, "p": jnp.stack([x[:3], x[2:5]])[..., None]}


def test_a_ragged_run_is_rewound_with_its_atoms(tmp_path, monkeypatch):
    example = ragged_frame(STATE0)
    ragged = js.Ragged(count="n", fields="p")

    def run(root, mode, **options):
        sink = js.ZarrSink.create(root / "r.zarr", example, chunk=4, mode=mode, ragged=ragged)
        return js.scan(fragile, STATE0, sink, steps=60, frame=ragged_frame, **options)

    run(tmp_path / "a", "w-")
    monkeypatch.setattr(sys.modules[__name__], "FAIL_AT", 47)
    with pytest.raises(jax.errors.JaxRuntimeError):
        run(tmp_path / "b", "w-", checkpoint=tmp_path / "c", checkpoint_every=10)
    meta = json.loads((tmp_path / "b" / "r.zarr" / "zarr.json").read_text())["attributes"]
    assert meta["jaxsinks"]["committed"] == 44 > meta["jaxsinks"]["checkpoint"]["committed"]
    monkeypatch.setattr(sys.modules[__name__], "FAIL_AT", None)
    run(tmp_path / "b", "a", checkpoint=tmp_path / "c", checkpoint_every=10, resume=True)
    same_store(tmp_path / "a" / "r.zarr", tmp_path / "b" / "r.zarr")


# ----------------------------------------------------------------------------- bad input


def _stopped_run(tmp_path, monkeypatch, fail_at=75):
    """A checkpointed scan stopped at `fail_at`: its run, checkpoint folder and run bytes."""
    monkeypatch.setattr(sys.modules[__name__], "FAIL_AT", fail_at)
    with pytest.raises(jax.errors.JaxRuntimeError):
        _drive("scan", tmp_path, "w-", checkpoint=tmp_path / "c", checkpoint_every=20)
    monkeypatch.setattr(sys.modules[__name__], "FAIL_AT", None)
    return _snapshot(tmp_path)


def _snapshot(root):
    """The bytes of every file of the run and of the checkpoint folder."""
    paths = [*(root / "run.zarr").rglob("*"), *(root / "c").rglob("*")]
    return {p: p.read_bytes() for p in paths if p.is_file()}


def _unchanged(before, root):
    """Nothing stored changed: the same chunks and checkpoint, the same committed count and
    checkpoint reference (the metadata names the run's newest writer and its status)."""
    after = _snapshot(root)
    assert sorted(after) == sorted(before)
    for path, data in before.items():
        if path.name != "zarr.json":
            assert after[path] == data, path
        elif path.parent.name == "run.zarr":
            old, new = (json.loads(x)["attributes"]["jaxsinks"] for x in (data, after[path]))
            assert old["committed"] == new["committed"] and old["checkpoint"] == new["checkpoint"]


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    sinks = _sinks(tmp_path, "w-")
    with pytest.raises(js.CheckpointError, match=r"resume=True.*holds no checkpoint"):
        js.scan(fragile, STATE0, sinks, steps=10, checkpoint=tmp_path / "none", resume=True)
    js.close(sinks)
    assert not (tmp_path / "none").exists()


def test_a_checkpoint_of_another_state_is_refused_naming_every_difference(tmp_path, monkeypatch):
    before = _stopped_run(tmp_path, monkeypatch)
    other = (STATE0[0].astype(jnp.float16), STATE0[1][:3], STATE0[2])
    sinks = _sinks(tmp_path, "a")
    with pytest.raises(js.CheckpointError) as info:
        js.scan(
            lambda s: s, other, sinks, steps=150, frame=lambda s: {"x": STATE0[0]}, dt=0.1,
            checkpoint=tmp_path / "c", checkpoint_every=20, resume=True,
        )  # fmt: skip
    message = str(info.value)
    assert "state[0] is float32[5] in the checkpoint but float16[5] now" in message
    assert "state[1] is float32[5] in the checkpoint but float32[3] now" in message
    assert "Nothing was changed" in message
    js.close(sinks)
    _unchanged(before, tmp_path)


def test_other_arguments_and_sinks_are_refused(tmp_path, monkeypatch):
    before = _stopped_run(tmp_path, monkeypatch)
    zarr, _ = _sinks(tmp_path, "a")
    small = js.DeviceBuffer.create({"x": STATE0[0]}, capacity=32, every=3)
    with pytest.raises(js.CheckpointError) as info:
        js.scan(
            fragile, STATE0, (zarr, small), steps=150, frame=lambda s: {"x": s[0]}, dt=0.2,
            checkpoint=tmp_path / "c", checkpoint_every=20, resume=True, record_initial=True,
        )  # fmt: skip
    message = str(info.value)
    assert "times is [0.0, 0.1" in message and "[0.0, 0.2" in message
    # it was not detected: the resumed run silently lacked the initial frame
    assert "record_initial is False in the checkpoint but True now" in message
    assert "sinks[1] capacity is 64 in the checkpoint but 32 now" in message
    js.close(zarr)
    _unchanged(before, tmp_path)


def test_a_run_behind_its_checkpoint_or_from_another_loop_is_refused(tmp_path, monkeypatch):
    before = _stopped_run(tmp_path, monkeypatch)
    meta_path = tmp_path / "run.zarr" / "zarr.json"
    doc = json.loads(meta_path.read_text())
    doc["attributes"]["jaxsinks"]["committed"] = 8  # an older copy of the run: 8 frames
    doc["attributes"]["jaxsinks"]["checkpoint"]["token"] = "another loop"
    meta_path.write_text(json.dumps(doc))
    sinks = _sinks(tmp_path, "a")
    with pytest.raises(js.CheckpointError) as info:
        _drive_with(sinks, tmp_path)
    message = str(info.value)
    assert "has 8 committed frames, fewer than the 24 of the checkpoint" in message
    assert "was not checkpointed by the loop that saved this checkpoint" in message
    js.close(sinks)
    run = js.open(tmp_path / "run.zarr")
    assert run.steps.tolist() == list(range(2, 18, 2))  # its 8 frames: nothing more was lost
    assert before  # the stopped run was there


def _drive_with(sinks, root):
    return js.scan(
        fragile, STATE0, sinks, steps=150, frame=lambda s: {"x": s[0]}, dt=0.1,
        checkpoint=root / "c", checkpoint_every=20, resume=True,
    )  # fmt: skip


def test_a_run_written_elsewhere_is_refused(tmp_path, monkeypatch):
    before = _stopped_run(tmp_path, monkeypatch)
    sinks = _sinks(tmp_path / "elsewhere", "w-")
    with pytest.raises(
        js.CheckpointError, match=r"sinks\[0\] writes .*elsewhere.*but the checkpoint was saved for"
    ):
        _drive_with(sinks, tmp_path)
    js.close(sinks)
    _unchanged(before, tmp_path)


def test_a_host_buffer_cannot_be_checkpointed(tmp_path):
    host = js.HostBuffer.create({"x": STATE0[0]}, capacity=64)
    buf = js.DeviceBuffer.create({"x": STATE0[0]}, capacity=64)
    with pytest.raises(js.CheckpointError, match=r"HostBuffer at position 1 of the sinks.*memory"):
        js.scan(fragile, STATE0, (buf, host), steps=10, frame=lambda s: {"x": s[0]},
                checkpoint=tmp_path / "c")  # fmt: skip
    assert not (tmp_path / "c").exists()
    js.close(host)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"checkpoint_every": 5}, "`checkpoint_every` without `checkpoint`"),
        ({"resume": True}, "`resume` without `checkpoint`"),
        ({"checkpoint": "s3://bucket/c"}, "local folder path"),
        ({"checkpoint": ""}, "got an empty path"),
        ({"checkpoint": "c", "checkpoint_every": 0}, "int >= 1"),
        ({"checkpoint": "c", "resume": "yes"}, "False, True or 'auto'"),
    ],
)
def test_bad_checkpoint_arguments_are_config_errors(options, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # checkpoint="" must not write (or clear) the working directory
    buf = js.DeviceBuffer.create({"x": STATE0[0]}, capacity=8)
    with pytest.raises(js.ConfigError, match=match):
        js.scan(fragile, STATE0, buf, steps=4, frame=lambda s: {"x": s[0]}, **options)


def test_checkpointing_inside_jit_is_refused(tmp_path):
    buf = js.DeviceBuffer.create({"x": STATE0[0]}, capacity=8)

    @jax.jit
    def run(state):
        return js.scan(lambda s: s, state, buf, steps=4, frame=lambda s: {"x": s[0]},
                       checkpoint=tmp_path / "c")[0]  # fmt: skip

    @jax.jit
    def run_from(t0):
        return js.scan(lambda s: s, STATE0, buf, steps=4, frame=lambda s: {"x": s[0]}, dt=0.1,
                       t0=t0, checkpoint=tmp_path / "c")[0]  # fmt: skip

    for call, arg in ((run, STATE0), (run_from, jnp.float32(1.0))):
        with pytest.raises(js.CheckpointError, match="inside a JAX transformation"):
            call(arg)
    assert not (tmp_path / "c").exists()


# ------------------------------------------------------- the initial frame, errors, bad folders

X0 = jnp.zeros(3, jnp.float32)


@pytest.mark.parametrize("loop", ["scan", "while"])
def test_the_initial_frame_is_recorded_once_also_when_no_step_is_taken_and_resumed(tmp_path, loop):
    """scan(steps=0) and a while_loop whose cond is false at the start, with record_initial:
    the initial state is recorded as step 0, and resuming the finished loop changes nothing."""

    def drive(mode, resume):
        buf = js.DeviceBuffer.create({"x": X0}, capacity=4, every=1)
        run = js.ZarrSink.create(tmp_path / "r.zarr", {"x": X0}, chunk=2, every=1, mode=mode)
        options = dict(frame=lambda s: {"x": s}, record_initial=True, checkpoint=tmp_path / "c",
                       checkpoint_every=10, resume=resume)  # fmt: skip
        if loop == "scan":
            _, (buf, _) = js.scan(lambda s: s + 1, X0, (buf, run), steps=0, **options)
        else:
            _, (buf, _), taken = js.while_loop(
                lambda s: s[0] > 10, lambda s: s + 1, X0, (buf, run), max_steps=100, **options
            )
            assert taken == 0
        return buf.read().steps.tolist(), js.open(tmp_path / "r.zarr").steps.tolist()

    assert drive("w-", False) == ([0], [0])
    assert drive("a", True) == ([0], [0])
    assert drive("a", True) == ([0], [0])


def test_an_error_while_tracing_a_checkpointed_loop_leaves_the_sinks_untouched(tmp_path):
    run = js.ZarrSink.create(tmp_path / "r.zarr", {"x": X0}, chunk=2)
    with pytest.raises(js.FrameError):
        js.scan(lambda s: s + 1, X0, run, steps=10, frame=lambda s: {"x": s[:2]},
                checkpoint=tmp_path / "c", checkpoint_every=4)  # fmt: skip
    assert js.open(tmp_path / "r.zarr").status == "open"
    assert not (tmp_path / "c").exists()  # no checkpoint saved
    js.scan(lambda s: s + 1, X0, run, steps=10, frame=lambda s: {"x": s},
            checkpoint=tmp_path / "c", checkpoint_every=4)  # fmt: skip  # fixed: the same sink
    assert js.open(tmp_path / "r.zarr").steps.tolist() == list(range(1, 11))


@pytest.mark.parametrize(
    "error", [js.CheckpointError("no space left on device"), KeyboardInterrupt()]
)
def test_a_loop_stopped_between_segments_reads_interrupted_and_its_entry_failed(
    tmp_path, monkeypatch, error
):
    """A checkpoint that cannot be written (or a Ctrl-C in the save) after the second segment:
    the staged frames of the newest sinks are flushed, the run is interrupted, not closed."""
    from jaxsinks._io import checkpoint as files

    saved, real = [], files.save

    def save(*args, **kwargs):
        saved.append(args[1])
        if len(saved) == 3:  # the checkpoint of step 20 (after the one of step 0 and of 10)
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(files, "save", save)
    campaign = js.Campaign.create(tmp_path / "camp")
    run = campaign.create_run("r", {"x": X0}, chunk=8)
    with pytest.raises(type(error)) as info:
        js.scan(lambda s: s + 1, X0, run, steps=60, frame=lambda s: {"x": s},
                checkpoint=tmp_path / "c", checkpoint_every=10)  # fmt: skip
    assert any("reads as interrupted" in note for note in info.value.__notes__)
    stored = js.open(tmp_path / "camp" / "runs" / "r")
    assert stored.status == "interrupted"
    assert stored.steps.tolist() == list(range(1, 21))  # 16 flushed and 4 staged at step 20
    entry = js.Campaign.open(tmp_path / "camp").entry("r")
    assert entry.status == "failed" and type(error).__name__ in entry.error


def _header(fields) -> np.ndarray:
    return np.frombuffer(json.dumps(fields).encode(), np.uint8)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "EOFError"),
        (b"PK\x03\x04garbage", "BadZipFile"),
        ({"format": 1, "arrays": []}, r"'token' \(missing\)"),
        ([1, 2], "header is a JSON list"),
    ],
    ids=["empty", "not-a-zip", "keys-missing", "not-an-object"],
)
def test_a_checkpoint_that_cannot_be_read_is_a_checkpoint_error(tmp_path, content, match):
    folder = tmp_path / "c"
    folder.mkdir()
    path = folder / "ckpt-000000000005.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.savez(path, header=_header(content))
    buf = js.DeviceBuffer.create({"x": X0}, capacity=4)
    with pytest.raises(js.CheckpointError, match=match) as info:
        js.scan(lambda s: s + 1, X0, buf, steps=10, frame=lambda s: {"x": s},
                checkpoint=folder, resume=True)  # fmt: skip
    assert str(path) in str(info.value) and "resume=False" in str(info.value)


def test_a_checkpoint_path_that_is_a_file_or_unwritable_is_refused(tmp_path):
    buf = js.DeviceBuffer.create({"x": X0}, capacity=4)
    scan = lambda folder: js.scan(  # noqa: E731
        lambda s: s + 1, X0, buf, steps=10, frame=lambda s: {"x": s}, checkpoint=folder
    )
    (tmp_path / "afile").write_text("x")
    with pytest.raises(js.ConfigError, match=r"`checkpoint` to be a folder.* is a file"):
        scan(tmp_path / "afile")
    with pytest.raises(js.CheckpointError, match="Could not write the checkpoint /proc/"):
        scan("/proc/jaxsinks-no-such-folder")
    assert (tmp_path / "afile").read_text() == "x"


# ------------------------------------------------------------------------------- kill -9


def _child(out, *extra, sleep=0.004, slow_save=0.0):
    return subprocess.Popen(
        [sys.executable, str(HERE / "resume_child.py"), str(out), "--sleep", str(sleep),
         "--slow-save", str(slow_save), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE,
    )  # fmt: skip


def _finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0 and "done" in out, err[-3000:]


def _kill_when(proc, ready, timeout=120.0):
    """SIGKILL `proc` as soon as `ready()` holds; False if it ended first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            return False
        time.sleep(0.0002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    return True


def _saved(folder):
    return sorted(p.name for p in folder.glob("ckpt-*.npz")) if folder.is_dir() else []


def _writing(folder):
    return folder.is_dir() and any(folder.glob(".ckpt-*.tmp"))


def _ahead(out):
    """How many frames the run has committed past its newest checkpoint's count (0 if none)."""
    try:
        meta = json.loads((out / "run.zarr" / "zarr.json").read_text())["attributes"]["jaxsinks"]
        newest = max(_saved(out / "ckpt"))
        with np.load(out / "ckpt" / newest) as data:
            header = json.loads(data["header"].tobytes())
    except (OSError, ValueError, KeyError):  # being written or replaced right now
        return 0
    return meta["committed"] - header["sinks"][0]["committed"]


def _started(proc):
    line = proc.stdout.readline()
    assert line.strip() == "started", proc.stderr.read()[-3000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted child's stores, with checkpoints and without."""
    root = tmp_path_factory.mktemp("reference")
    for name, extra in (("ckpt", ()), ("plain", ("--no-checkpoint",))):
        (root / name).mkdir()
        _finish(_child(root / name, *extra, sleep=0.0))
    return root


def _compare_child(reference, out):
    for ref in (reference / "ckpt", reference / "plain"):
        same_store(ref / "run.zarr", out / "run.zarr")
        assert (ref / "log.csv").read_bytes() == (out / "log.csv").read_bytes()
        with np.load(ref / "result.npz") as a, np.load(out / "result.npz") as b:
            assert sorted(a) == sorted(b)
            assert all(a[k].tobytes() == b[k].tobytes() for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_kill_9_at_random_moments_then_resume_is_bitwise_the_uninterrupted_run(
    tmp_path, reference, seed
):
    """Seed 1: killed right after a checkpoint; 2: during a checkpoint's write; 3: once the run
    has committed frames past its newest checkpoint; 4: at a random moment. Then a resume killed
    too, and a resume to the end."""
    rng = random.Random(seed)
    out, folder = tmp_path / "out", tmp_path / "out" / "ckpt"
    out.mkdir()
    proc = _child(out, slow_save=1.0 if seed == 2 else 0.0)  # a window a loaded CI hits
    _started(proc)
    if seed == 1:
        target = f"ckpt-{rng.choice([100, 150, 200, 250]):012d}.npz"
        assert _kill_when(proc, lambda: target in _saved(folder))
    elif seed == 2:
        after = f"ckpt-{rng.choice([50, 100, 150]):012d}.npz"
        assert _kill_when(
            proc, lambda: max(_saved(folder), default="") >= after and _writing(folder)
        )
        assert _writing(folder)  # killed inside a checkpoint's write: its temporary file is left
    elif seed == 3:
        assert _kill_when(proc, lambda: _ahead(out) > 0)
        assert _ahead(out) > 0  # the resume must rewind the run to its checkpoint
    else:  # from the first checkpoint on (saved once the first segment is compiled)
        deadline = time.monotonic() + 120
        while not _saved(folder) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 1.8))
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    killed_at = _saved(folder)
    assert killed_at and not (out / "result.npz").exists()
    # A resume killed too (odd seeds: once it has saved a checkpoint of its own; even seeds:
    # at a random moment of its start: reopening, rewinding, compiling), then one to the end.
    again = _child(out, "--resume")
    _started(again)
    if seed % 2:
        assert _kill_when(again, lambda: max(_saved(folder), default="") > killed_at[-1])
    else:
        time.sleep(rng.uniform(0.0, 1.0))
        if again.poll() is None:
            again.send_signal(signal.SIGKILL)
        again.communicate()
    (out / "result.npz").unlink(missing_ok=True)
    _finish(_child(out, "--resume"))
    _compare_child(reference, out)
    assert not any(folder.glob(".ckpt-*.tmp"))


@pytest.mark.slow
def test_kill_9_of_a_while_loop_then_resume_is_bitwise_the_uninterrupted_run(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    ref.mkdir()
    out.mkdir()
    _finish(_child(ref, "--loop", "while", sleep=0.0))
    proc = _child(out, "--loop", "while")
    _started(proc)
    assert _kill_when(proc, lambda: "ckpt-000000000300.npz" in _saved(out / "ckpt"))
    _finish(_child(out, "--loop", "while", "--resume"))
    same_store(ref / "run.zarr", out / "run.zarr")
    assert (ref / "log.csv").read_bytes() == (out / "log.csv").read_bytes()
    with np.load(ref / "result.npz") as a, np.load(out / "result.npz") as b:
        assert all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_the_comparison_sees_one_changed_byte(tmp_path):
    """`same_store` can fail: a run with one frame changed is told apart."""
    for name, nudge in (("a", False), ("b", True)):  # b: one value one ulp up, at step 5
        sink = js.ZarrSink.create(tmp_path / name, {"x": jnp.zeros(2)}, chunk=4)
        up = lambda s, nudge=nudge: jnp.where(nudge & (s[0] == 5.0), jnp.nextafter(s, s + 1), s)  # noqa: E731
        js.scan(lambda s: s + 1.0, jnp.zeros(2), sink, steps=9, frame=lambda s, up=up: {"x": up(s)})
    with pytest.raises(AssertionError):
        same_store(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b")
