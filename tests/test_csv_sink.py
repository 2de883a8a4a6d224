import csv
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsinks as js
from jaxsinks._tools.sources import read_csv_log

EXAMPLE = {
    "energy": jnp.zeros(3, jnp.float32),
    "fmax": jnp.zeros((), jnp.float32),
    "n": jnp.int32(0),
}


@jax.jit
def log_steps(log, steps):
    def body(log, i):
        f = i.astype(jnp.float32)
        frame = {
            "energy": jnp.arange(3, dtype=jnp.float32) * f,
            "fmax": 1.0 / (f + 1.0),
            "n": 2 * i.astype(jnp.int32),
        }
        return js.record(log, step=i, time=0.5 * f, frame=frame), None

    return jax.lax.scan(body, log, steps)[0]


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=np.float64)


def test_logs_every_recorded_step_with_one_column_per_entry(tmp_path):
    path = tmp_path / "log.csv"
    log = js.CsvSink.create(path, EXAMPLE, every=2, block=3)
    js.close(log_steps(log, jnp.arange(11)))  # 6 rows: 2 flushes of 3 rows
    head, rows = read_csv(path)
    assert head == ["step", "time", "energy[0]", "energy[1]", "energy[2]", "fmax", "n"]
    assert rows[:, 0].tolist() == [0, 2, 4, 6, 8, 10]
    np.testing.assert_allclose(rows[:, 1], 0.5 * rows[:, 0])
    np.testing.assert_allclose(rows[:, 3], rows[:, 0])
    np.testing.assert_allclose(
        rows[:, 5], np.float32(1) / (rows[:, 0].astype(np.float32) + 1), rtol=1e-7
    )
    assert rows[:, 6].tolist() == (2 * rows[:, 0]).tolist()


def test_float32_values_round_trip_exactly(tmp_path):
    path = tmp_path / "log.csv"
    values = np.float32([np.pi, 1e-30, 3.4e38, -0.1])
    log = js.CsvSink.create(path, {"v": jnp.zeros((), jnp.float32)}, block=2)
    for i, v in enumerate(values):
        log = log.write({"v": jnp.float32(v)}, step=i)
    js.close(log)
    _, rows = read_csv(path)
    assert rows[:, 2].astype(np.float32).tolist() == values.tolist()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_every_float_dtype_is_written_as_a_float_that_round_trips(tmp_path, dtype):
    # bfloat16 is not a numpy floating type: it was once written with %d (1.5 as "1")
    path = tmp_path / "log.csv"
    values = np.array([1.5, -0.375, 3.0e-3, 2.5e4], dtype=jnp.dtype(dtype))
    log = js.CsvSink.create(path, {"v": jnp.zeros((), dtype)}, block=2)
    for i, v in enumerate(values):
        log = log.write({"v": jnp.asarray(v, dtype)}, step=i)
    js.close(log)
    _, rows = read_csv(path)
    assert rows[:, 2].astype(jnp.dtype(dtype)).tolist() == values.tolist()
    assert "1.5" in path.read_text().splitlines()[1]


def test_per_system_rows_and_once(tmp_path):
    path = tmp_path / "conv.csv"
    log = js.CsvSink.create(path, {"e": jnp.zeros(3)}, per_system=True, once=True, block=4)
    for step, mask in enumerate([[False, True, False], [True, True, False], [True, True, True]]):
        log = log.write({"e": jnp.arange(3.0) + 10 * step}, step=step, mask=jnp.array(mask))
    js.close(log)
    head, rows = read_csv(path)
    assert head == ["step", "time", "system", "e"]
    assert rows[:, [0, 2, 3]].tolist() == [[0, 1, 1], [1, 0, 10], [2, 2, 22]]


def test_modes_and_append_repair_a_torn_last_line(tmp_path):
    path = tmp_path / "log.csv"
    js.close(log_steps(js.CsvSink.create(path, EXAMPLE, block=4), jnp.arange(5)))
    with pytest.raises(js.StoreExistsError, match="mode='a' to append"):
        js.CsvSink.create(path, EXAMPLE)
    with open(path, "a") as f:
        f.write("5,2.5,0,5")  # a crash mid-row
    log = js.CsvSink.create(path, EXAMPLE, mode="a", block=4)
    assert int(log.flushed) == 5
    js.close(log_steps(log, jnp.arange(5, 8)))
    _, rows = read_csv(path)
    assert rows[:, 0].tolist() == list(range(8))
    with pytest.raises(js.SchemaMismatchError, match="its columns are"):
        js.CsvSink.create(path, {"other": jnp.zeros(())}, mode="a")
    js.close(log_steps(js.CsvSink.create(path, EXAMPLE, mode="w"), jnp.arange(2)))
    assert read_csv(path)[1][:, 0].tolist() == [0, 1]


@pytest.mark.parametrize("mode", ["w-", "w", "a"])
def test_a_directory_is_not_a_csv_log_and_is_left_alone(tmp_path, mode):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "keep.txt").write_text("mine")
    with pytest.raises(js.StoreExistsError, match=r"results is a directory .*results/log.csv"):
        js.CsvSink.create(tmp_path / "results", EXAMPLE, mode=mode)
    assert (tmp_path / "results" / "keep.txt").read_text() == "mine"


def test_mode_w_replaces_only_a_csv_log(tmp_path):
    mine = tmp_path / "analysis.py"
    mine.write_text("import numpy\n")
    with pytest.raises(js.StoreExistsError, match=r"first line is 'import numpy'.*nothing was"):
        js.CsvSink.create(mine, EXAMPLE, mode="w")
    assert mine.read_text() == "import numpy\n"
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    js.close(log_steps(js.CsvSink.create(empty, EXAMPLE, mode="w"), jnp.arange(2)))
    assert read_csv(empty)[1][:, 0].tolist() == [0, 1]
    # a long log is a CSV log too: mode='w' replaces it with a wide one
    long = tmp_path / "long.csv"
    long.write_text("step,time,system,name,value\n0,0.0,-1,fmax,1.0\n")
    js.close(log_steps(js.CsvSink.create(long, EXAMPLE, mode="w"), jnp.arange(3)))
    assert read_csv(long)[1][:, 0].tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(path="s3://bucket/log.csv"), "must be a local path"),
        (dict(overflow="ring", capacity=4), "cannot keep a ring in a file"),
        (dict(block=0), "`block` to be a positive int"),
        (dict(mode="x"), "`mode` to be one of"),
        (dict(once=True), "once=True without per_system=True"),
        (dict(frame={"z": jnp.zeros((), jnp.complex64)}), "cannot write complex fields"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    args = {"path": tmp_path / "log.csv", "frame": EXAMPLE, **kwargs}
    with pytest.raises(js.ConfigError, match=match):
        js.CsvSink.create(args.pop("path"), args.pop("frame"), **args)
    assert not (tmp_path / "log.csv").exists()


def test_capacity_drop_keeps_the_first_rows(tmp_path):
    path = tmp_path / "log.csv"
    js.close(
        log_steps(
            js.CsvSink.create(path, EXAMPLE, capacity=4, overflow="drop", block=3), jnp.arange(9)
        )
    )
    assert read_csv(path)[1][:, 0].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("empty_shape", [(0,), (3, 0)])
def test_a_zero_size_field_has_no_columns_and_the_other_fields_are_logged(tmp_path, empty_shape):
    # A zero-size field once got one %-format but no values: every block failed at close.
    path = tmp_path / "log.csv"
    empty = jnp.zeros(empty_shape, jnp.float32)
    log = js.CsvSink.create(path, {"e": jnp.float32(0), "empty": empty}, block=2)
    for i in range(3):
        log = log.write({"e": jnp.float32(1.5 * i), "empty": empty}, step=i)
    js.close(log)
    head, rows = read_csv(path)
    assert head == ["step", "time", "e"]
    assert rows[:, [0, 2]].tolist() == [[0, 0.0], [1, 1.5], [2, 3.0]]
    back = read_csv_log(path)
    assert back.fields == ("e",)
    assert back.steps.tolist() == [0, 1, 2]
    assert back.column("e").tolist() == [0.0, 1.5, 3.0]


# ---------------------------------------------------------------------------- one writer

#: A CsvSink in another process: logs steps 0..n-1 in blocks of 2, says "ready", and closes
#: when told (a line on stdin) or is killed.
CSV_WRITER = textwrap.dedent("""
    import sys
    import jax.numpy as jnp
    import jaxsinks as js
    path, n = sys.argv[1], int(sys.argv[2])
    log = js.CsvSink.create(path, {"e": jnp.float32(0)}, block=2, mode="a")
    for i in range(n):
        log = log.write({"e": jnp.float32(i)}, step=i)
    print("ready", flush=True)
    sys.stdin.readline()
    js.close(log)
    print("closed", flush=True)
""")


def csv_writer(path, frames: int) -> subprocess.Popen:
    """A child process recording `frames` rows into the CsvSink at `path` (`CSV_WRITER`)."""
    return subprocess.Popen(
        [sys.executable, "-c", CSV_WRITER, str(path), str(frames)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )


@pytest.mark.parametrize("mode", ["w", "a"])
def test_a_second_writer_in_another_process_is_refused_and_the_log_kept(tmp_path, mode):
    path = tmp_path / "log.csv"
    with csv_writer(path, 5) as child:  # 4 rows flushed, 1 staged
        try:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
            with pytest.raises(js.WriterConflictError, match="another process .* holds the"):
                js.CsvSink.create(path, {"e": jnp.float32(0)}, mode=mode)
            child.stdin.write("close\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "closed", child.stderr.read()
        finally:
            child.kill()
            child.wait()
    assert path.read_text() == "step,time,e\n" + "".join(f"{i},nan,{i}\n" for i in range(5))
    log = js.CsvSink.create(path, {"e": jnp.float32(0)}, mode="a")  # closed: free again
    assert int(log.flushed) == 5
    js.close(log)


def test_a_killed_writer_leaves_its_log_free_to_append_to(tmp_path):
    """SIGKILL of the writer holding the lock: the kernel releases it, and mode='a' continues
    from the rows the killed writer wrote (a prefix of its steps), with nothing torn."""
    path = tmp_path / "log.csv"
    with csv_writer(path, 5) as child:
        try:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
        finally:
            child.kill()
            child.wait()
    log = js.CsvSink.create(path, {"e": jnp.float32(0)}, block=2, mode="a")
    kept = int(log.flushed)
    assert kept <= 4  # the fifth row was still staged on the device
    for i in range(kept, 7):
        log = log.write({"e": jnp.float32(i)}, step=i)
    js.close(log)
    assert path.read_text() == "step,time,e\n" + "".join(f"{i},nan,{i}\n" for i in range(7))


def test_a_second_sink_on_an_open_log_in_this_process_is_refused_or_retires_it(tmp_path):
    path = tmp_path / "log.csv"
    first = js.CsvSink.create(path, EXAMPLE, block=4)
    first = log_steps(first, jnp.arange(5))
    with pytest.raises(js.WriterConflictError, match="CsvSink of this process that is still"):
        js.CsvSink.create(path, EXAMPLE, mode="a")
    with pytest.raises(js.StoreExistsError, match="already exists"):
        js.CsvSink.create(path, EXAMPLE)
    second = js.CsvSink.create(path, EXAMPLE, mode="w", block=4)  # re-running the cell
    with pytest.raises(js.StaleSinkError, match="replaced by a new CsvSink"):
        js.close(first)
    js.close(log_steps(second, jnp.arange(2)))
    assert read_csv(path)[1][:, 0].tolist() == [0, 1]


def test_append_keeps_a_header_whose_newline_a_crash_lost_and_starts_an_empty_file(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("step,time,energy[0],energy[1],energy[2],fmax,n")
    js.close(log_steps(js.CsvSink.create(path, EXAMPLE, mode="a"), jnp.arange(2)))
    header, rows = read_csv(path)
    assert header == ["step", "time", "energy[0]", "energy[1]", "energy[2]", "fmax", "n"]
    assert rows[:, 0].tolist() == [0, 1]
    path.write_text("")  # a kill between creating the file and writing its header
    js.close(log_steps(js.CsvSink.create(path, EXAMPLE, mode="a"), jnp.arange(3)))
    assert read_csv(path)[1][:, 0].tolist() == [0, 1, 2]


def test_a_path_with_a_nul_byte_is_a_config_error(tmp_path):
    with pytest.raises(js.ConfigError, match="`path` .* contains a NUL byte"):
        js.CsvSink.create(f"{tmp_path}/log\x00.csv", EXAMPLE)
    assert list(tmp_path.iterdir()) == []
