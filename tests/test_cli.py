"""The `jaxsinks` command line, in-process through `main` and once as ``python -m jaxsinks``."""

import json
import re
import subprocess
import sys
import types

import numpy as np
import pytest
from conftest import x32_only
from PIL import Image
from run_helpers import PNG_SIGNATURE, STEPS, write_run

import jaxsinks as js
from jaxsinks._tools import bench
from jaxsinks._tools.cli import format_info, human_bytes, main


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return str(write_run(tmp_path_factory.mktemp("cli") / "run.zarr"))


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(capsys, argv, *fragments):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


# ------------------------------------------------------------------------------------ info


def test_info_summarizes_fields_layout_and_compression(store, capsys):
    code, out, err = run_cli(capsys, "info", store)
    assert code == 0 and err == ""
    assert f"{STEPS} committed" in out and "closed" in out and "every(n=1, start=0)" in out
    assert '{"T": 300}' in out
    rows = {
        line.split()[0]: line
        for line in out.splitlines()
        if line.split()[:1] in (["grid"], ["energy"], ["e"], ["cube"])
    }
    assert set(rows) == {"grid", "energy", "e", "cube"}
    assert "(6, 5)" in rows["grid"] and "4x6x5" in rows["grid"] and "bytes,zstd" in rows["grid"]
    assert "float16 (from float32)" in rows["energy"] and "bytes,blosc" in rows["energy"]
    grid = next(f for f in js.open(store).describe()["fields"] if f["name"] == "grid")
    assert rows["grid"].split()[-1] == f"{grid['logical_bytes'] / grid['stored_bytes']:.2f}"
    assert human_bytes(grid["logical_bytes"]) in rows["grid"]  # 12 x 30 x 4 B = 1.4 KiB
    assert re.search(r"compression ratio \d+\.\d\d$", out.strip())


def test_info_json_is_describe(store, capsys):
    code, out, _ = run_cli(capsys, "info", store, "--json")
    assert code == 0 and json.loads(out) == js.open(store).describe()


def test_format_info_marks_per_system_runs_and_readable_sizes():
    description = {
        "store": "s",
        "frames": 3,
        "committed": 5,
        "status": "open",
        "schedule": {},
        "attrs": {},
        "logical_bytes": 3 * 2**30,
        "stored_bytes": 2**30,
        "fields": [],
    }
    text = format_info(description, per_system=True)
    assert "5 committed (3 readable)" in text and "per-system rows" in text
    assert "3.0 GiB logical, 1.0 GiB stored" in text and text.endswith("compression ratio 3.00")
    assert [human_bytes(n) for n in (512, 1536, 5 * 2**20)] == ["512 B", "1.5 KiB", "5.0 MiB"]


def test_format_info_marks_ragged_fields_shapes_as_per_atom():
    field = {
        "name": "pos",
        "shape": [3],
        "dtype": "float32",
        "source_dtype": "float32",
        "chunks": [64, 3],
        "shards": None,
        "codecs": ["bytes"],
        "logical_bytes": 12,
        "stored_bytes": 12,
    }
    description = {
        "store": "s",
        "frames": 1,
        "committed": 1,
        "status": "closed",
        "schedule": {},
        "attrs": {},
        "logical_bytes": 12,
        "stored_bytes": 12,
        "fields": [field],
    }
    text = format_info(description, ragged={"count": "natoms", "fields": ["pos"]})
    assert "ragged     pos: per system s, natoms[s] rows" in text
    assert re.search(r"^pos +\(3,\) per atom +float32", text, re.M)


def test_python_dash_m_jaxsinks_info(store):
    proc = subprocess.run(
        [sys.executable, "-m", "jaxsinks", "info", store],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        f"{STEPS} committed" in proc.stdout and "grid" in proc.stdout and "float16" in proc.stdout
    )


def test_help_for_every_command(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and all(cmd in out for cmd in ("info", "plot", "movie", "bench", "demo"))
    for cmd in ("info", "plot", "movie", "bench"):
        code, out, _ = run_cli(capsys, cmd, "--help")
        assert code == 0 and f"usage: jaxsinks {cmd}" in out
        assert "memory://" not in out  # a new process's memory:// holds no run


# ------------------------------------------------------------------------------ plot, movie


def test_plot_writes_a_png_per_field_list(store, tmp_path, capsys):
    out = tmp_path / "series.png"
    code, stdout, _ = run_cli(capsys, "plot", store, "energy", "e", "--x", "time", "--out", out)
    assert code == 0 and stdout.strip() == f"wrote {out}"
    assert out.read_bytes()[:8] == PNG_SIGNATURE and out.stat().st_size > 5000
    with Image.open(out) as im:
        assert im.size == (700, 620)  # two subplots


def test_plot_defaults_to_field_png_and_selects_systems(store, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run_cli(capsys, "plot", store, "energy", "--systems", "0,2")
    assert code == 0 and stdout.strip() == "wrote energy.png"
    assert (tmp_path / "energy.png").read_bytes()[:8] == PNG_SIGNATURE


def test_movie_writes_a_gif_with_fps_and_every(store, tmp_path, capsys):
    out = tmp_path / "grid.gif"
    code, stdout, _ = run_cli(
        capsys,
        "movie",
        store,
        "grid",
        "--out",
        out,
        "--fps",
        "5",
        "--every",
        "4",
        "--vmin",
        "0",
        "--vmax",
        "12",
        "--cmap",
        "magma",
    )
    assert code == 0 and stdout.strip() == f"wrote {out} (3 frames)"
    with Image.open(out) as im:
        assert im.n_frames == 3 and im.info["duration"] == 200


def test_movie_index_selects_from_3d_frames(store, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run_cli(capsys, "movie", store, "cube", "--index", "0", "--every", "6")
    assert code == 0 and stdout.strip() == "wrote cube.gif (2 frames)"
    with Image.open(tmp_path / "cube.gif") as im:
        assert im.n_frames == 2


# ----------------------------------------------------------------------------------- errors


def test_a_missing_store_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "missing.zarr"
    for argv in (["info", missing], ["plot", missing, "e"], ["movie", missing, "grid"]):
        assert_usage_error(capsys, argv, "no jaxsinks run at", str(missing))


def test_a_missing_field_is_named_with_the_fields_there_are(store, tmp_path, capsys):
    for argv in (
        ["plot", store, "e", "nope"],
        ["movie", store, "nope", "--out", tmp_path / "n.gif"],
    ):
        err = assert_usage_error(capsys, argv, "no field 'nope'", "'grid'", "'energy'")
        assert not err.startswith("jaxsinks plot: error: '")  # the KeyError's message, not its repr


def test_movie_of_a_field_that_is_not_2d_names_its_frame_shape(store, tmp_path, capsys):
    assert_usage_error(
        capsys,
        ["movie", store, "energy", "--out", tmp_path / "e.gif"],
        "'energy' has frames of shape (3,)",
    )
    assert not (tmp_path / "e.gif").exists()


def test_plot_of_a_field_beyond_1d_names_its_frame_shape(store, tmp_path, capsys):
    assert_usage_error(
        capsys,
        ["plot", store, "grid", "--out", tmp_path / "g.png"],
        "'grid' has frames of shape (6, 5)",
        "jaxsinks movie",
    )


def test_an_unwritable_output_is_a_one_line_error(store, tmp_path, capsys):
    assert_usage_error(
        capsys, ["plot", store, "e", "--out", tmp_path / "no" / "e.png"], "does not exist"
    )
    assert_usage_error(
        capsys, ["movie", store, "grid", "--out", tmp_path / "no" / "g.gif"], "does not exist"
    )
    assert_usage_error(capsys, ["movie", store, "grid", "--out", tmp_path], "is a directory")


def test_bad_arguments_are_usage_errors(capsys):
    code, _, err = run_cli(capsys, "plot", "x", "e", "--systems", "a,b")
    assert code == 2 and "comma-separated integers" in err
    assert run_cli(capsys)[0] == 2
    assert_usage_error(capsys, ["bench", "--codecs", "lzma"], "Unknown codec name 'lzma'")


# ------------------------------------------------------------------------------------ bench


def test_parse_codec_names():
    assert bench.parse_codec("none") is None
    assert bench.parse_codec("zstd1") == js.Zstd(1) and bench.parse_codec("zstd") == js.Zstd(3)
    assert bench.parse_codec("blosc-lz4") == js.Blosc("lz4", 5, "shuffle")
    assert bench.parse_codec("blosc-zstd-3") == js.Blosc("zstd", 3, "shuffle")
    with pytest.raises(js.ConfigError, match="Unknown codec name 'gzip'"):
        bench.parse_codec("gzip")


@pytest.mark.parametrize("data", ["smooth", "noise"])
def test_bench_rows_for_every_codec_and_chunk_in_a_temporary_directory(data, tmp_path):
    fields = bench.fields_from_shape((16, 16), "float32")
    rows = bench.run_bench(
        fields, frames=32, codecs=["none", "zstd3"], chunks=[8, 16], data=data, directory=tmp_path
    )
    assert [(r.codec, r.chunk) for r in rows] == [
        ("none", 8),
        ("none", 16),
        ("zstd3", 8),
        ("zstd3", 16),
    ]
    assert list(tmp_path.iterdir()) == []  # the temporary directory is gone
    for row in rows:
        assert row.frames == 32 and row.logical_bytes == 32 * 16 * 16 * 4
        assert row.seconds > 0 and row.mb_per_s == pytest.approx(
            row.logical_bytes / row.seconds / 1e6
        )
        assert row.stored_mib == pytest.approx(row.stored_bytes / 2**20)
    ratios = {(r.codec, r.chunk): r.ratio for r in rows}
    assert 0.9 < ratios["none", 16] <= 1.0  # raw chunks plus a little metadata
    if data == "smooth":
        assert ratios["zstd3", 16] > 1.05 and ratios["zstd3", 16] > ratios["none", 16]
    else:
        assert ratios["zstd3", 16] < 1.2  # random normal floats barely compress


def test_bench_like_an_existing_run_uses_its_fields_and_dtypes(store, tmp_path):
    fields = bench.fields_like(store)
    by_name = {f.name: f for f in fields}
    assert by_name["grid"].shape == (6, 5) and by_name["energy"].stored_dtype == np.float16
    [row] = bench.run_bench(fields, frames=8, codecs=["none"], chunks=[4], directory=tmp_path)
    assert row.logical_bytes == js.open(store)[0:8].describe()["logical_bytes"]
    assert list(tmp_path.iterdir()) == []


def test_bench_removes_its_directory_when_it_fails(tmp_path):
    with pytest.raises(js.ConfigError):
        bench.run_bench(
            bench.fields_from_shape((4,), "float32"), frames=4, chunks=[0], directory=tmp_path
        )
    with pytest.raises(js.ConfigError, match="`directory`"):
        bench.run_bench(
            bench.fields_from_shape((4,), "float32"), frames=4, directory=tmp_path / "no"
        )
    assert list(tmp_path.iterdir()) == []


def test_bench_command_prints_a_markdown_table(tmp_path, capsys):
    code, out, _ = run_cli(
        capsys,
        "bench",
        "--shape",
        "32,32",
        "--frames",
        "16",
        "--codecs",
        "none,zstd1",
        "--chunks",
        "8",
        "--data",
        "noise",
        "--dir",
        tmp_path,
    )
    assert code == 0 and list(tmp_path.iterdir()) == []
    lines = out.strip().splitlines()
    assert "16 frames of [x (32, 32) float32], noise data" in lines[0]
    assert lines[2] == "| codec | chunk | MB/s | ratio | stored MiB |"
    table = [line.split("|")[1:-1] for line in lines[4:]]
    assert [(c.strip(), n.strip()) for c, n, *_ in table] == [("none", "8"), ("zstd1", "8")]
    assert all(float(mbs) > 0 and 0.5 < float(ratio) < 1.5 for _, _, mbs, ratio, _ in table)


# ------------------------------------------------------------------------------------- demo


def test_demo_without_the_demo_module_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setitem(
        sys.modules, "jaxsinks.demo.relax", None
    )  # import fails as if it were absent
    assert_usage_error(
        capsys, ["demo", "--steps", "3"], "the demo is not available", "jaxsinks.demo.relax"
    )


def test_demo_forwards_its_arguments(capsys, monkeypatch):
    seen = []
    fake = types.ModuleType("jaxsinks.demo.relax")
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "jaxsinks.demo.relax", fake)
    assert main(["demo", "--steps", "3", "--help"]) == 3 and seen == [["--steps", "3", "--help"]]


# ------------------------------------------------------- time, CSV logs, titles, broken pipes


@pytest.fixture(scope="module")
def timeless_store(tmp_path_factory):
    """A run recorded without `time=`."""
    import jax.numpy as jnp

    path = tmp_path_factory.mktemp("cli") / "timeless.zarr"
    sink = js.ZarrSink.create(path, {"e": jnp.float32(0)}, chunk=4)
    for i in range(5):
        sink = sink.write({"e": jnp.float32(i)}, step=i)
    js.close(sink)
    return str(path)


@pytest.fixture(scope="module")
def csv_log(tmp_path_factory):
    import jax.numpy as jnp

    path = tmp_path_factory.mktemp("cli") / "log.csv"
    sink = js.CsvSink.create(path, {"energy": jnp.float32(0), "fmax": jnp.float32(0)}, block=4)
    for i in range(10):
        frame = {"energy": jnp.float32(-i), "fmax": jnp.float32(10.0**-i)}
        sink = sink.write(frame, step=i, time=0.1 * i)
    js.close(sink)
    return str(path)


def test_plot_against_time_without_times_is_an_error_not_an_empty_plot(
    timeless_store, tmp_path, capsys
):
    out = tmp_path / "e.png"
    assert_usage_error(
        capsys,
        ["plot", timeless_store, "e", "--x", "time", "--out", out],
        "has no times",
        "--x step",
    )
    assert not out.exists()
    code, stdout, _ = run_cli(capsys, "plot", timeless_store, "e", "--out", out)
    assert code == 0 and out.exists()


def test_plot_titles_the_figure_with_the_runs_name(store, tmp_path, capsys, monkeypatch):
    from jaxsinks._tools import cli, viz

    titles = []

    def spy(*args, **kwargs):
        figure = viz.plot(*args, **kwargs)
        titles.append(figure.axes[0].get_title())
        return figure

    monkeypatch.setattr(cli, "plot", spy)
    assert run_cli(capsys, "plot", store, "e", "--out", tmp_path / "a.png")[0] == 0
    assert (
        run_cli(capsys, "plot", store, "e", "--out", tmp_path / "b.png", "--title", "T=300")[0] == 0
    )
    assert titles == ["run.zarr", "T=300"]


def test_plot_reads_a_csv_log(csv_log, tmp_path, capsys, monkeypatch):
    out = tmp_path / "log.png"
    code, stdout, err = run_cli(
        capsys, "plot", csv_log, "energy", "fmax", "--log", "fmax", "--x", "time", "--out", out
    )
    assert code == 0 and stdout.strip() == f"wrote {out}" and err == ""
    with Image.open(out) as im:
        assert im.size == (700, 620)  # two subplots
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run_cli(capsys, "plot", csv_log)  # every column, into log.png
    assert code == 0 and stdout.strip() == "wrote log.png"
    assert_usage_error(capsys, ["plot", csv_log, "nope"], "no field 'nope'", "'energy'")
    assert_usage_error(capsys, ["movie", csv_log, "energy"], "not of a CSV log")


def test_movie_time_range_selects_the_frames_shown(store, tmp_path, capsys):
    out = tmp_path / "grid.gif"
    code, stdout, _ = run_cli(
        capsys, "movie", store, "grid", "--out", out, "--t-start", "1", "--t-end", "3"
    )
    assert code == 0 and stdout.strip() == f"wrote {out} (5 frames)"  # t = step / 2
    with Image.open(out) as im:
        assert im.n_frames == 5
    code, stdout, _ = run_cli(
        capsys, "movie", store, "grid", "--out", out, "--t-start", "4", "--every", "2"
    )
    assert code == 0 and stdout.strip() == f"wrote {out} (2 frames)"  # steps 8 and 10
    assert_usage_error(
        capsys,
        ["movie", store, "grid", "--out", out, "--t-start", "50"],
        "no frames with time >= 50.0",
        "its times span [0, 5.5]",
    )


def test_info_into_a_closed_pipe_exits_quietly(store):
    """``jaxsinks info --json STORE | head -0``: no traceback, the SIGPIPE status."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxsinks", "info", "--json", store],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader goes away before anything is written
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141, err
    assert err == ""


def run_sh(command, store):
    """`command` (with ``{jaxsinks}`` and ``{store}``) in a shell; its exit status and output."""
    jaxsinks = f"{sys.executable} -m jaxsinks"
    proc = subprocess.run(
        ["sh", "-c", command.format(jaxsinks=jaxsinks, store=store)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_closed_stdout_or_stderr_keeps_the_exit_status(store, tmp_path):
    code, output = run_sh("{jaxsinks} info {store} >&-", store)
    assert code == 0 and "Traceback" not in output, output
    code, output = run_sh("{jaxsinks} info {store} 2>&-", tmp_path / "missing.zarr")
    assert code == 2 and "Traceback" not in output, output


def damage_schema(path, change):
    """Apply `change` to the 'jaxsinks' attributes in the zarr.json of the run at `path`."""
    root = path / "zarr.json"
    meta = json.loads(root.read_text())
    change(meta["attributes"]["jaxsinks"])
    meta.pop("consolidated_metadata", None)
    root.write_text(json.dumps(meta))


def test_a_missing_metadata_entry_is_named_with_its_run(tmp_path, capsys):
    for name in ("info", "bench"):
        write_run(tmp_path / f"{name}.zarr")
    damage_schema(tmp_path / "info.zarr", lambda m: m["schema"]["fields"][0].pop("dtype"))
    err = assert_usage_error(
        capsys, ["info", tmp_path / "info.zarr"], "info.zarr has damaged metadata", "'dtype'"
    )
    assert err.startswith("jaxsinks info: error: The run at ")
    damage_schema(tmp_path / "bench.zarr", lambda m: m["schema"]["fields"][0].update(dtype="no"))
    assert_usage_error(
        capsys,
        ["bench", "--like", tmp_path / "bench.zarr"],
        "bench.zarr has damaged metadata",
        "does not give a frame shape and dtype",
        "--shape and --dtype",
    )


def test_a_missing_field_is_still_a_one_line_error(store, capsys):
    assert_usage_error(capsys, ["plot", store, "nope"], "nope", "grid")


@x32_only
def test_bench_refuses_64_bit_dtypes_that_jax_would_record_as_32_bit(tmp_path, capsys):
    for dtype in ("float64", "int64"):
        code, out, err = run_cli(capsys, "bench", "--dtype", dtype, "--dir", tmp_path)
        assert code == 2 and out == "" and "JAX_ENABLE_X64=1" in err, err
        assert f"has dtype {dtype}, but JAX would record it as {dtype[:-2]}32" in err


def test_bench_checks_its_arguments_before_printing_anything(capsys):
    for argv, fragment in (
        (["--frames", "0"], "`frames` must be a positive int"),
        (["--chunks", "0"], "`chunks` must hold positive ints"),
        (["--codecs", "lzma"], "Unknown codec name"),
        (["--dir", "/dev/null"], "'/dev/null' is not a directory"),
        # these printed the preamble and the table's header first
        (["--dtype", "object"], "has dtype object, which cannot be recorded"),
        (["--dtype", "float8_e4m3fn"], "cannot be stored in a run"),
    ):
        code, out, err = run_cli(capsys, "bench", *argv)
        assert code == 2 and out == "" and fragment in err, (out, err)


def test_bench_of_an_empty_shape_is_of_scalar_frames(tmp_path, capsys):
    """--shape '' silently ran the default 64,38,3 frames."""
    argv = ["--frames", "4", "--codecs", "none", "--chunks", "2", "--dir", tmp_path]
    for shape in ("", ","):
        code, out, _ = run_cli(capsys, "bench", "--shape", shape, *argv)
        assert code == 0 and "4 frames of [x () float32]" in out.splitlines()[0], out


def test_plot_refuses_systems_a_per_system_run_does_not_have(tmp_path, capsys):
    from run_helpers import write_per_system_run

    run = write_per_system_run(tmp_path / "ps.zarr")
    out = tmp_path / "p.png"
    assert_usage_error(
        capsys, ["plot", run, "e", "--systems", "7", "--out", out], "indices [7]", "(0..2)"
    )
    assert not out.exists()


def test_movie_refuses_rates_and_color_ranges_it_cannot_show(store, tmp_path, capsys):
    out = tmp_path / "g.gif"
    for argv in (["--fps", "0.001"], ["--fps", "1e-300"], ["--fps", "inf"]):
        assert_usage_error(capsys, ["movie", store, "grid", "--out", out, *argv], "`fps` must be")
    assert_usage_error(
        capsys,
        ["movie", store, "grid", "--out", out, "--vmin", "nan"],
        "`vmin` must be a finite number",
    )
    assert_usage_error(
        capsys,
        ["movie", store, "grid", "--out", out, "--vmin", "1", "--vmax", "0"],
        "must not be above `vmax`",
    )
    assert not out.exists()


def test_demo_errors_are_one_line_errors(tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "thesis.tex").write_text("precious")
    args = ["--clusters", "2", "--max-steps", "5", "--no-progress"]
    for out in (full, tmp_path / "full" / "thesis.tex"):
        for extra in ([], ["--overwrite"]):
            err = assert_usage_error(capsys, ["demo", "--out", out, *extra, *args], f"--out {out}")
            assert err.startswith("jaxsinks demo: error: ") and "demo run" not in err
    code, _, err = run_cli(
        capsys, "demo", "--out", tmp_path / "new", "--overwrite", "--seed", "-1", *args
    )
    assert code == 2 and err.endswith(
        "jaxsinks demo: error: --seed must be a non-negative integer; got -1\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
    assert (full / "thesis.tex").read_text() == "precious"
