"""One writer per run: a second writer (another process, or this one) is refused with a clear
error naming the live writer; killed writers are detected and their runs taken over; `mode="w"`
overwrites only jaxsinks runs; what a killed writer left behind never tears a later write."""

import contextlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import time

import jax.numpy as jnp
import numpy as np
import pytest
from fs_helpers import stored_bytes
from zarr_helpers import EXAMPLE, edit_meta, expected, run_steps, steps

import jaxsinks as js
from jaxsinks._io import owner as _owner
from jaxsinks._io import tsio as _tsio
from jaxsinks._io import zarr_writer as _zarr_writer

HERE = pathlib.Path(__file__).parent

#: A writer in another process: opens the run, records `n` frames from `start`, says "ready",
#: and closes when told (a line on stdin) or is killed.
WRITER = textwrap.dedent("""
    import sys
    import jaxsinks as js
    from zarr_helpers import EXAMPLE, run_steps, steps
    store, mode, start, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sink = run_steps(
        js.ZarrSink.create(store, EXAMPLE, chunk=4, mode=mode), steps(start, start + n)
    )
    print("ready", flush=True)
    sys.stdin.readline()
    js.close(sink)
    print("closed", flush=True)
""")


@contextlib.contextmanager
def writer_process(store, mode, start, n):
    """A live writer in a child process (killed, if still running, on exit)."""
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(store), mode, str(start), str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=HERE,
        env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(HERE)),
    ) as child:
        try:
            line = child.stdout.readline()
            assert line.strip() == "ready", child.stderr.read()
            yield child
        finally:
            child.kill()
            child.wait()


def close_writer(child):
    child.stdin.write("close\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "closed", child.stderr.read()


def assert_frames(store, n):
    run = js.open(store)
    assert run.steps.tolist() == list(range(n))
    np.testing.assert_array_equal(run["x"][:], expected(range(n))["x"])


@pytest.mark.parametrize("mode", ["a", "w", "w-"])
def test_a_second_writer_in_another_process_is_refused_naming_the_live_one(tmp_path, mode):
    store = tmp_path / "run.zarr"
    js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 8)))
    with writer_process(store, "a", 8, 9) as first:  # 8 more frames flushed, 1 staged
        with pytest.raises(
            js.WriterConflictError, match=rf"being written by process {first.pid} on host"
        ):
            js.ZarrSink.create(store, EXAMPLE, chunk=4, mode=mode)
        close_writer(first)
    run = js.open(store)
    assert run.status == "closed"
    assert_frames(store, 17)  # the first writer's frames, every one, unchanged


def test_two_processes_appending_at_once_never_interleave(tmp_path):
    store = tmp_path / "run.zarr"
    js.close(js.ZarrSink.create(store, EXAMPLE, chunk=4))
    with writer_process(store, "a", 0, 12) as first:
        second = subprocess.run(
            [sys.executable, "-c", WRITER, str(store), "a", "100", "12"],
            input="\n",
            capture_output=True,
            text=True,
            cwd=HERE,
            timeout=120,
            env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(HERE)),
        )
        assert second.returncode != 0 and "WriterConflictError" in second.stderr
        assert f"process {first.pid}" in second.stderr
        close_writer(first)
    assert_frames(store, 12)


def test_a_killed_writer_is_detected_and_its_run_taken_over(tmp_path):
    store = tmp_path / "run.zarr"
    js.close(js.ZarrSink.create(store, EXAMPLE, chunk=4))
    with writer_process(store, "a", 0, 10) as child:
        child.send_signal(signal.SIGKILL)
        child.wait()
    run = js.open(store)
    assert run.status == "interrupted" and run.committed in (0, 4, 8)
    sink = js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="a")  # the dead writer's lease is stale
    n = int(sink.flushed)
    js.close(run_steps(sink, steps(n, 20)))
    assert js.open(store).status == "closed"
    assert_frames(store, 20)


def test_a_second_sink_on_an_open_run_in_this_process_is_refused(tmp_path):
    store = tmp_path / "run.zarr"
    first = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 6))
    for mode in ("a", "w-"):
        with pytest.raises((js.WriterConflictError, js.StoreExistsError)):
            js.ZarrSink.create(store, EXAMPLE, chunk=4, mode=mode)
    with pytest.raises(
        js.WriterConflictError,
        match=r"is being written by a sink of this process that is still open \(close it",
    ):
        js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="a")
    js.close(first)
    assert_frames(store, 6)


def test_re_running_a_cell_with_mode_w_retires_the_old_sink(tmp_path):
    store = tmp_path / "run.zarr"
    old = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="w"), steps(0, 6))
    new = run_steps(
        js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="w"), steps(0, 9)
    )  # the cell again
    with pytest.raises(js.StaleSinkError, match="replaced by a new run"):
        js.close(old)
    late = run_steps(old, steps(6, 14))  # its flushes are refused, not written into the new run
    assert int(late.flags) & js.Flag.STALE
    js.close(new)
    assert_frames(store, 9)


def test_mode_w_never_deletes_a_directory_that_is_not_a_run(tmp_path):
    thesis = tmp_path / "thesis"
    (thesis / "chapters").mkdir(parents=True)
    (thesis / "chapters" / "one.tex").write_text("Chapter one")
    (thesis / "notes.txt").write_text("keep me")
    # Lock files nobody holds, as TensorStore (or git) leave them: not jaxsinks' to remove here.
    (thesis / ".git").mkdir()
    (thesis / ".git" / "index.__lock").write_text("git's")
    (thesis / "chapters" / "data.__lock").write_text("someone's")
    (thesis / "zarr.json.__lock").write_text("someone's")
    before = stored_bytes(thesis)
    for mode, error in (
        ("w", js.StoreExistsError),
        ("a", js.StoreError),
        ("w-", js.StoreExistsError),
    ):
        with pytest.raises(error, match="not a jaxsinks run") as info:
            js.ZarrSink.create(thesis, EXAMPLE, mode=mode)
        assert mode == "w-" or "Choose another path, or remove those files" in str(info.value)
    assert stored_bytes(thesis) == before
    # A Zarr group written by someone else is not a jaxsinks run either.
    import zarr

    other = tmp_path / "other.zarr"
    zarr.open_group(other, mode="w").create_array("a", shape=(3,), dtype="f4")
    before = stored_bytes(other)
    with pytest.raises(js.StoreExistsError, match="not a jaxsinks run"):
        js.ZarrSink.create(other, EXAMPLE, mode="w")
    assert stored_bytes(other) == before


def test_a_location_holding_only_a_killed_claims_lock_file_is_empty_for_every_mode(tmp_path):
    """A writer killed while writing its claim leaves just ``zarr.json.__lock``: no run, and
    nothing anyone wrote; any mode creates the run there (not "holds files that are not a run")."""
    for mode in ("w-", "w", "a"):
        store = tmp_path / f"run-{mode}.zarr"
        store.mkdir()
        (store / "zarr.json.__lock").write_text('{"zarr_format": 3, "node_typ')
        js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4, mode=mode), steps(0, 5)))
        assert_frames(store, 5)
        assert not list(store.rglob("*.__lock"))


def test_mode_w_replaces_a_closed_run(tmp_path):
    store = tmp_path / "run.zarr"
    js.close(js.ZarrSink.create(store, {"y": jnp.zeros(2)}, chunk=4))
    js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="w"), steps(0, 7)))
    assert js.open(store).fields == ("e", "x")
    assert_frames(store, 7)


def test_an_interrupted_create_is_no_run_and_any_mode_creates_over_it(tmp_path):
    store = tmp_path / "run.zarr"
    # What a process killed during create leaves: the claim ("creating", naming a dead writer)
    # and some of the arrays.
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = {
        "host": os.uname().nodename,
        "pid": int(child.stdout),
        "boot_id": None,
        "pid_start": None,
        "started": "then",
        "token": "t",
    }
    meta = {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {
            "jaxsinks": {"schema_version": 1, "status": "creating", "committed": 0, "writer": dead}
        },
    }
    _tsio.write_bytes(
        {"driver": "file", "path": str(store) + "/"}, "zarr.json", json.dumps(meta).encode()
    )
    (store / "x").mkdir()
    (store / "x" / "zarr.json").write_text("{}")
    with pytest.raises(js.StoreNotFoundError, match="creation was interrupted"):
        js.open(store)
    for mode in ("w-", "a", "w"):
        js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4, mode=mode), steps(0, 5)))
        assert_frames(store, 5)
        if mode != "w":
            _tsio.write_bytes(
                {"driver": "file", "path": str(store) + "/"}, "zarr.json", json.dumps(meta).encode()
            )


def test_lock_files_left_by_a_killed_writer_never_tear_a_later_write(tmp_path):
    """TensorStore reuses a leftover ``<key>.__lock`` without truncating it: a resumed run would
    write a short zarr.json over a longer leftover and keep its tail. Leftovers are removed."""
    store = tmp_path / "run.zarr"
    js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 8)))
    junk = "x" * 20000  # longer than any zarr.json or chunk written next
    for key in ("zarr.json", "x/zarr.json", "x/c/2", "e/c/2", "step/c/2"):
        (store / (key + ".__lock")).write_text(junk)
    sink = js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="a")
    js.close(run_steps(sink, steps(8, 14)))
    assert_frames(store, 14)
    import zarr

    group = zarr.open_group(store, mode="r")
    np.testing.assert_array_equal(group["x"][:], expected(range(14))["x"])
    assert not list(store.rglob("*.__lock"))


def test_a_store_deleted_mid_run_is_a_write_error_not_a_committed_count(tmp_path):
    import shutil

    store = tmp_path / "run.zarr"
    sink = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 8))
    js.close(run_steps(sink, steps(8, 8)))  # closes; now a second run is deleted under its writer
    sink = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="a"), steps(8, 16))
    deadline = time.monotonic() + 60
    while js.open(store).committed < 16:  # the writer is idle: nothing races the deletion
        assert time.monotonic() < deadline
        time.sleep(0.01)
    shutil.rmtree(store)
    sink = run_steps(sink, steps(16, 40))
    with pytest.raises(js.WriteError, match="deleted or replaced"):
        js.close(sink)
    with pytest.raises(js.StoreNotFoundError):
        js.open(store)


def _claim_of(pid, host=None, token="winner"):
    """The zarr.json a writer `pid` (on `host`) leaves when it claims a location."""
    stat = _owner.proc_stat(pid) if host is None else None
    writer = dict(
        _owner.Owner.me().to_json(),
        pid=pid,
        pid_start=None if stat is None else stat[1],
        token=token,
    )
    if host is not None:
        writer.update(host=host, boot_id=None)
    return {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {
            "jaxsinks": {
                "schema_version": 1,
                "status": "creating",
                "committed": 0,
                "writer": writer,
            }
        },
    }


@pytest.mark.parametrize("after", ["read_versioned", "list_keys"])
def test_a_claim_landing_while_the_location_is_read_is_a_writer_conflict(
    after, tmp_path, monkeypatch
):
    """Two writers creating one empty run at the same instant: the loser read no zarr.json (and
    listed an empty location), then the winner's claim landed. The loser must name the winner,
    not call the run foreign (it did when the claim landed after its listing: 3 of 10 races of
    two processes on S3)."""
    store = tmp_path / "run.zarr"
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as winner:
        try:
            original = getattr(_tsio, after)

            def then_the_winner_claims(spec, *args):
                value = original(spec, *args)
                if after == "list_keys" or (args == ("zarr.json",) and value[0] is None):
                    if not (store / "zarr.json").exists():
                        store.mkdir(parents=True, exist_ok=True)
                        (store / "zarr.json").write_text(json.dumps(_claim_of(winner.pid)))
                return value

            monkeypatch.setattr(_tsio, after, then_the_winner_claims)
            with pytest.raises(js.WriterConflictError, match=rf"process {winner.pid} on host"):
                js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="a")
        finally:
            winner.kill()


def test_a_lost_claim_names_the_writer_that_won(tmp_path, monkeypatch):
    store = tmp_path / "run.zarr"
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as winner:
        try:
            original = _tsio.write_if

            def the_winner_writes_first(spec, key, value, generation, timeout=None):
                if key == "zarr.json" and not (store / "zarr.json").exists():
                    store.mkdir(parents=True, exist_ok=True)
                    (store / "zarr.json").write_text(json.dumps(_claim_of(winner.pid)))
                return original(spec, key, value, generation, timeout)

            monkeypatch.setattr(_tsio, "write_if", the_winner_writes_first)
            with pytest.raises(
                js.WriterConflictError, match=rf"Another writer \(process {winner.pid} on host"
            ):
                js.ZarrSink.create(store, EXAMPLE, chunk=4)
        finally:
            winner.kill()


def test_a_writer_on_another_host_is_treated_as_alive(tmp_path):
    store = tmp_path / "run.zarr"
    js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 4)))
    claim = _claim_of(1, host="another-host")
    claim["attributes"]["jaxsinks"] = dict(
        json.loads((store / "zarr.json").read_text())["attributes"]["jaxsinks"],
        status="open",
        writer=claim["attributes"]["jaxsinks"]["writer"],
    )
    (store / "zarr.json").write_text(json.dumps(claim))
    before = stored_bytes(store)
    for mode in ("a", "w", "w-"):
        with pytest.raises(
            js.WriterConflictError, match="another-host.*cannot tell whether it is alive"
        ):
            js.ZarrSink.create(store, EXAMPLE, chunk=4, mode=mode)
    assert stored_bytes(store) == before
    assert js.open(store).status == "open"  # a reader cannot tell either: it may be recording


@pytest.mark.parametrize("value", [None, "a", -1, 0, 1.5, True])
def test_a_bad_max_inflight_bytes_is_refused_before_anything_is_written(tmp_path, value):
    store = tmp_path / "run.zarr"
    with pytest.raises(
        js.ConfigError, match=rf"`max_inflight_bytes` to be a positive int.*{value!r}"
    ):
        js.ZarrSink.create(store, EXAMPLE, chunk=4, max_inflight_bytes=value)
    with pytest.raises(js.ConfigError, match="`CsvSink.create` needs `max_inflight_bytes`"):
        js.CsvSink.create(tmp_path / "log.csv", EXAMPLE, max_inflight_bytes=value)
    assert list(tmp_path.iterdir()) == []


def test_a_defect_in_the_writer_threads_fails_the_run_instead_of_closing_it_short(tmp_path, caplog):
    """Both threads of a writer hit a TypeError (as an unchecked ``max_inflight_bytes=None`` once
    made them): close raises, the run is not "closed", and what was committed stays readable."""
    from jaxsinks._io import writer as _writer

    store = tmp_path / "run.zarr"
    sink = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 8))
    writer = _writer.REGISTRY.get(int(sink.writer))
    assert writer.wait_committed(8, timeout=30)
    writer.max_inflight_bytes = None  # a defect: comparisons in both threads raise TypeError
    sink = run_steps(sink, steps(8, 20))
    with pytest.raises(js.WriteError, match="thread for .* failed unexpectedly .*bug in jaxsinks"):
        js.close(sink)
    run = js.open(store)
    assert run.status != "closed" and run.committed >= 8
    assert run.steps.tolist() == list(range(run.committed))
    np.testing.assert_array_equal(run["x"][:], expected(range(run.committed))["x"])
    assert "failed unexpectedly" in caplog.text


# ------------------------------------------------------- a create or a reopen that does not finish


@pytest.mark.parametrize("existing", [False, True], ids=["new run", "resume"])
def test_a_ctrl_c_inside_create_leaves_the_location_as_it_was(existing, tmp_path, monkeypatch):
    """A KeyboardInterrupt landing after the writer was built but before the run was marked open
    left the writer registered: the run named this process as its live writer until it ended
    (re-running the cell: "close it first", with no sink to close; other processes refused)."""
    store = tmp_path / "run.zarr"
    if existing:
        js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 8)))
    before = stored_bytes(store) if existing else None
    original = _zarr_writer.ZarrWriter._write_attrs

    def interrupted(self, status, committed=None):
        monkeypatch.setattr(_zarr_writer.ZarrWriter, "_write_attrs", original)
        raise KeyboardInterrupt

    monkeypatch.setattr(_zarr_writer.ZarrWriter, "_write_attrs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="a" if existing else "w-")
    if existing:
        assert stored_bytes(store) == before  # zarr.json too: closed, naming no writer
        assert js.open(store).status == "closed"
    else:
        assert not store.exists() or list(store.iterdir()) == []
    sink = js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="a")  # the cell, run again
    js.close(run_steps(sink, steps(8 if existing else 0, 12)))
    assert js.open(store).steps.tolist() == list(range(12))


def test_a_reopen_failing_after_its_claim_gives_the_run_back(tmp_path, monkeypatch):
    """The store failed (an S3 server that hung) after create(mode='a') had claimed a closed
    run: its zarr.json then said "open", naming this process as its live writer, and every
    other process was refused until this one ended; the run's closed status was gone."""
    store = tmp_path / "run.zarr"
    js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 8)))
    before = stored_bytes(store)
    original = _tsio.open_array

    def the_store_fails(spec, **kwargs):
        monkeypatch.setattr(_tsio, "open_array", original)
        raise js.StoreError("the store stopped answering")

    monkeypatch.setattr(_tsio, "open_array", the_store_fails)
    with pytest.raises(js.StoreError, match="stopped answering"):
        js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="a")
    assert stored_bytes(store) == before
    resume = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
        import jaxsinks as js
        from zarr_helpers import EXAMPLE, run_steps, steps
        sink = js.ZarrSink.create({str(store)!r}, EXAMPLE, chunk=4, mode="a")
        js.close(run_steps(sink, steps(8, 12)))
        """
    )
    child = subprocess.run([sys.executable, "-c", resume], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr[-2000:]
    run = js.open(store)
    assert run.status == "closed" and run.steps.tolist() == list(range(12))


@pytest.mark.parametrize(
    "changes, named",
    [
        (dict(committed="many"), "committed is 'many' (expected a count of frames)"),
        (dict(committed=-5), "committed is -5"),
        (dict(committed=10**6), "it counts 1000000 committed frames, but its arrays hold 8"),
        (dict(status="weird"), "status is 'weird' (expected one of"),
        (dict(schema=None), "its schema does not list its fields by name"),
        (dict(schema={"fields": [{"nope": 1}]}), "its schema does not list its fields by name"),
        (dict(capacity="big"), "capacity is 'big'"),
        (
            dict(schema={"fields": [{"name": "x"}], "ragged": {"count": "x"}}),
            "its schema's ragged is {'count': 'x'} (expected a count field name and a list",
        ),
    ],
    ids=[
        "committed text",
        "negative",
        "beyond the arrays",
        "status",
        "no schema",
        "no names",
        "capacity",
        "ragged without fields",
    ],
)
def test_damaged_run_metadata_is_a_store_error_for_reads_and_appends(changes, named, tmp_path):
    """A zarr.json edited by hand or damaged raised ValueError, KeyError or IndexError; a resume
    with committed=10**6 on an 8-frame run counted 10**6 frames of NaN as committed."""
    store = tmp_path / "run.zarr"
    js.close(run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=4), steps(0, 8)))
    edit_meta(store, **changes)
    before = stored_bytes(store)
    with pytest.raises(js.StoreError, match=re.escape(named)) as info:
        js.open(store)["x"][:]
    assert "damaged metadata" in str(info.value) and "zarr-python" in str(info.value)
    with pytest.raises(js.StoreError, match=re.escape(named)):
        js.ZarrSink.create(store, EXAMPLE, chunk=4, mode="a")
    assert stored_bytes(store) == before


def test_mode_w_does_not_delete_a_live_run_stored_inside_the_run_it_replaces(tmp_path):
    """Replacing a run deletes everything under it: a run inside it that a live writer was still
    recording lost its frames under that writer."""
    outer = tmp_path / "outer.zarr"
    js.close(run_steps(js.ZarrSink.create(outer, EXAMPLE, chunk=4), steps(0, 4)))
    inner = js.ZarrSink.create(outer / "inner.zarr", EXAMPLE, chunk=4)
    inner = run_steps(inner, steps(0, 8))

    def own_files():  # the inner run's live writer may still be committing its frames
        return {k: v for k, v in stored_bytes(outer).items() if not k.startswith("inner.zarr/")}

    before = own_files()
    with pytest.raises(
        js.WriterConflictError, match=r"the run at .*inner\.zarr, inside it, is being"
    ):
        js.ZarrSink.create(outer, EXAMPLE, chunk=4, mode="w")
    assert own_files() == before
    js.close(inner)
    assert js.open(outer / "inner.zarr").steps.tolist() == list(range(8))
    js.close(run_steps(js.ZarrSink.create(outer, EXAMPLE, chunk=4, mode="w"), steps(0, 2)))
    assert js.open(outer).steps.tolist() == [0, 1] and not (outer / "inner.zarr").exists()
