"""Long (tidy) logs: ``table="long"`` on CsvSink and ZarrSink writes one row per (frame or system,
field) with the columns step, time, system, name, value; read back with the csv module, pandas,
xarray, zarr-python and `jaxsinks.open`, and plotted by ``jaxsinks plot``."""

import csv

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from conftest import X64
from PIL import Image
from run_helpers import PNG_SIGNATURE

import jaxsinks as js
from jaxsinks._io.long_table import exactly_holds, value_dtype
from jaxsinks._tools.cli import main

STEPS = 6
COLUMNS = ["step", "time", "system", "name", "value"]
FLOAT = jnp.float64 if X64 else jnp.float32  # what a simulation's floats are in this mode


def selected(step):
    """The systems the mask selects at `step`: 0 always, 1 on even steps, 2 only at step 5."""
    return [0] + ([1] if step % 2 == 0 else []) + ([2] if step == 5 else [])


def per_system_frame(i):
    systems = jnp.arange(3, dtype=jnp.int32)
    return {
        "energy": (10 * i + systems).astype(FLOAT) + 0.25,
        "n": 100 * i + systems,
    }


def per_system_mask(i):
    return jnp.array([True, i % 2 == 0, i == 5])


def expected_per_system_rows():
    """The long table, by hand: per step, per selected system, one row per field in order."""
    return [
        (s, 0.5 * s, b, name, value)
        for s in range(STEPS)
        for b in selected(s)
        for name, value in (("energy", 10 * s + b + 0.25), ("n", 100 * s + b))
    ]


def record_per_system(sink):
    def body(sink, i):
        time = 0.5 * i.astype(jnp.float32)
        frame, mask = per_system_frame(i), per_system_mask(i)
        return js.record(sink, step=i, time=time, frame=frame, mask=mask), None

    steps = jnp.arange(STEPS, dtype=jnp.int32)
    return jax.jit(lambda s: jax.lax.scan(body, s, steps)[0])(sink)


def csv_rows(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == COLUMNS
    return [(int(r[0]), float(r[1]), int(r[2]), r[3], float(r[4])) for r in rows[1:]]


def table_rows(df):
    return [
        (int(s), float(t), int(b), str(n), float(v))
        for s, t, b, n, v in df[COLUMNS].itertuples(index=False)
    ]


# ---------------------------------------------------------------------------- per system


def test_csv_per_system_rows_are_the_hand_computed_table(tmp_path):
    path = tmp_path / "log.csv"
    example = per_system_frame(jnp.int32(0))
    log = js.CsvSink.create(path, example, per_system=True, table="long", block=4)
    js.close(record_per_system(log))
    want = expected_per_system_rows()
    assert csv_rows(path) == want
    assert len(want) == 2 * sum(len(selected(s)) for s in range(STEPS)) == 20
    lines = path.read_text().splitlines()
    # each value in its own field's format: ints as ints, floats with their own digits
    assert lines[1:5] == ["0,0,0,energy,0.25", "0,0,0,n,0", "0,0,1,energy,1.25", "0,0,1,n,1"]
    df = pd.read_csv(path)
    assert list(df.columns) == COLUMNS
    assert df.groupby("name").size().to_dict() == {"energy": 10, "n": 10}
    assert df[df.system == 2].step.unique().tolist() == [5]
    assert df["value"].dtype == np.float64 and df["system"].dtype == np.int64


def test_zarr_per_system_table_reads_back_through_open_xarray_pandas_and_zarr(tmp_path):
    store = tmp_path / "log.zarr"
    example = per_system_frame(jnp.int32(0))
    sink = js.ZarrSink.create(store, example, per_system=True, table="long", chunk=4)
    js.close(record_per_system(sink))
    want = expected_per_system_rows()

    run = js.open(store)
    assert run.table == "long" and run.per_system and run.fields == ("energy", "n")
    assert len(run) == 10  # system rows recorded; 2 table rows each
    assert run.steps.tolist() == [s for s in range(STEPS) for _ in selected(s)]
    assert run.systems.tolist() == [b for s in range(STEPS) for b in selected(s)]
    np.testing.assert_array_equal(run.times, 0.5 * run.steps)
    assert run["n"].dtype == np.int32 and run["energy"].dtype == np.dtype(FLOAT)
    assert run["n"][:].tolist() == [r[4] for r in want if r[3] == "n"]
    assert run["energy"][::3].tolist() == [r[4] for r in want if r[3] == "energy"][::3]
    assert run[np.array([7, 2])]["n"][:].tolist() == [401, 100]

    ds = run.to_xarray()
    assert ds["value"].dims == ("row",) and ds["value"].dtype == np.float64
    assert table_rows(ds.to_dataframe()) == want
    assert table_rows(run[np.array([9, 0])].to_xarray().to_dataframe()) == want[-2:] + want[:2]

    group = zarr.open_group(store, mode="r")  # plain zarr-python: the codes and their names
    names = group["name"].attrs["names"]
    assert names == ["energy", "n"]
    decoded = [names[c] for c in group["name"][:]]
    assert decoded == [r[3] for r in want]
    assert group["system"][:].tolist() == [r[2] for r in want]
    assert group["value"][:].tolist() == [r[4] for r in want]
    assert group["value"].metadata.dimension_names == ("row",)
    with xr.open_zarr(store) as plain:  # xarray on the store itself: the same columns
        assert set(plain.coords) == {"step", "time", "system", "name"}
        assert plain["value"].values.tolist() == [r[4] for r in want]


# ---------------------------------------------------------------------------- whole frame


def whole_frame(i):
    f = i.astype(FLOAT)
    return {"e": -f, "count": 3 * i, "done": i >= 4}


@pytest.mark.parametrize("sink", ["csv", "zarr"])
def test_whole_frame_scalars_are_rows_of_system_minus_one(tmp_path, sink):
    example = whole_frame(jnp.int32(0))
    if sink == "csv":
        path = tmp_path / "log.csv"
        log = js.CsvSink.create(path, example, every=2, table="long", block=2)
    else:
        path = tmp_path / "log.zarr"
        log = js.ZarrSink.create(path, example, every=2, table="long", chunk=2)

    def body(log, i):
        return js.record(log, step=i, frame=whole_frame(i)), None

    log, _ = jax.lax.scan(body, log, jnp.arange(5, dtype=jnp.int32))
    js.close(log)
    nan = float("nan")
    want = [
        (s, nan, -1, name, value)
        for s in (0, 2, 4)
        # in the frame's field order: a dict's keys sorted, as JAX flattens it
        for name, value in (("count", 3 * s), ("done", float(s >= 4)), ("e", -s))
    ]
    if sink == "csv":
        got = csv_rows(path)
    else:
        run = js.open(path)
        got = table_rows(run.to_xarray().to_dataframe())
        assert run.systems is None and not run.per_system
        assert run["done"][:].tolist() == [False, False, True]
        assert run["count"][:].dtype == np.int32
        assert run.to_xarray()["value"].dtype == np.float64  # float + int32 + bool
    assert [r[:1] + r[2:] for r in got] == [r[:1] + r[2:] for r in want]
    assert all(np.isnan(r[1]) for r in got)  # recorded without time


# ------------------------------------------------------------------------ the value's dtype


@pytest.mark.parametrize(
    "dtypes, want",
    [
        (("float32", "int32"), "float64"),  # int32 is exact in float64, not in float32
        (("float32", "int16"), "float32"),
        (("float32", "bool"), "float32"),
        (("int16", "uint16"), "int32"),
        (("int32", "int64"), "int64"),
        (("int8", "bool"), "int8"),
        (("bfloat16", "float16"), "float32"),
        (("float32", "float64"), "float64"),
        (("int32",), "int32"),
    ],
)
def test_the_value_dtype_is_the_smallest_that_holds_every_field_exactly(dtypes, want):
    dtypes = [np.dtype(ml_dtypes.bfloat16) if d == "bfloat16" else np.dtype(d) for d in dtypes]
    got = value_dtype("owner", [f"f{i}" for i in range(len(dtypes))], dtypes)
    assert got == np.dtype(want)
    assert all(exactly_holds(got, d) for d in dtypes)


@pytest.mark.parametrize(
    "dtypes", [("float32", "int64"), ("float64", "int64"), ("uint64", "int64")]
)
def test_64_bit_integers_beside_floats_are_refused_not_rounded(dtypes):
    with pytest.raises(js.ConfigError) as err:
        value_dtype("CsvSink.create", ["x", "n"], [np.dtype(d) for d in dtypes])
    message = str(err.value)
    assert "no dtype holds the values of all of its fields" in message
    wide = "'x' (uint64), 'n' (int64)" if dtypes[0] == "uint64" else "'n' (int64)"
    assert f"would round the 64-bit integers of {wide} beyond 2**53" in message
    assert "Cast those fields in the frame" in message
    assert not exactly_holds(np.dtype("float64"), np.dtype("int64"))


def test_int64_with_floats_is_refused_under_x64_and_is_int32_without(tmp_path):
    frame = {"e": jnp.zeros((), FLOAT), "n": np.zeros((), np.int64)}
    if X64:  # a real int64 field: float64 would round it beyond 2**53
        with pytest.raises(
            js.ConfigError, match=r"integers of 'n' \(int64\) beyond 2\*\*53\. Cast those fields"
        ):
            js.CsvSink.create(tmp_path / "log.csv", frame, table="long")
        with pytest.raises(js.ConfigError, match="no dtype holds the values of all of its fields"):
            js.ZarrSink.create(tmp_path / "log.zarr", frame, table="long")
        return
    # without x64 JAX holds int64 as int32, which float64 holds exactly
    sink = js.ZarrSink.create(tmp_path / "log.zarr", frame, table="long")
    sink = sink.write({"e": jnp.float32(1.5), "n": jnp.int32(2**31 - 1)}, step=0)
    js.close(sink)
    run = js.open(tmp_path / "log.zarr")
    assert run.to_xarray()["value"].dtype == np.float64
    assert run["n"][:].tolist() == [2**31 - 1] and run["e"][:].tolist() == [1.5]


def test_float32_values_round_trip_exactly_through_the_csv_text(tmp_path):
    values = np.float32([1 / 3, 1e-30, 3.4e38, -7.1])
    path = tmp_path / "log.csv"
    log = js.CsvSink.create(path, {"x": jnp.float32(0)}, table="long")
    for i, v in enumerate(values):
        log = log.write({"x": jnp.float32(v)}, step=i)
    js.close(log)
    got = np.float32([float(r[4]) for r in csv_rows(path)])
    np.testing.assert_array_equal(got, values)


# ------------------------------------------------------------------------- reserved names


def reserved_frame(i):
    f = i.astype(jnp.float32)
    return {"time": 100.0 + f, "step": 2 * i, "system": 7.0 * f, "e": -f}


@pytest.mark.parametrize("sink", ["csv", "zarr"])
def test_fields_named_like_the_columns_are_names_in_the_name_column(tmp_path, sink):
    example = reserved_frame(jnp.int32(0))
    path = tmp_path / ("log.csv" if sink == "csv" else "log.zarr")
    if sink == "csv":
        log = js.CsvSink.create(path, example, table="long", block=2)
    else:
        log = js.ZarrSink.create(path, example, table="long", chunk=2)

    def body(log, i):
        time = 0.25 * i.astype(jnp.float32)
        return js.record(log, step=i, time=time, frame=reserved_frame(i)), None

    log, _ = jax.lax.scan(body, log, jnp.arange(3, dtype=jnp.int32))
    js.close(log)
    want = [
        (s, 0.25 * s, -1, name, value)
        for s in range(3)
        for name, value in (("e", -s), ("step", 2 * s), ("system", 7.0 * s), ("time", 100.0 + s))
    ]
    if sink == "csv":
        assert csv_rows(path) == want
        return
    run = js.open(path)
    assert run.fields == ("e", "step", "system", "time")
    assert run["time"][:].tolist() == [100.0, 101.0, 102.0]  # the field ...
    assert run.times.tolist() == [0.0, 0.25, 0.5]  # ... beside the run's own time column
    assert run["step"][:].dtype == np.int32 and run.steps.tolist() == [0, 1, 2]
    assert table_rows(run.to_xarray().to_dataframe()) == want
    frames = list(run.iter_frames())
    assert frames[2]["time_"] == 102.0 and frames[2]["time"] == np.float32(0.5)


# -------------------------------------------------------------------------------- plot


def test_jaxsinks_plot_draws_a_long_csv_log_per_system(tmp_path, capsys):
    path = tmp_path / "log.csv"
    example = {**per_system_frame(jnp.int32(0)), "time": jnp.zeros(3, jnp.float32)}

    def body(log, i):
        frame = {**per_system_frame(i), "time": jnp.full(3, 9.0, jnp.float32)}
        time = 0.5 * i.astype(jnp.float32)
        return js.record(log, step=i, time=time, frame=frame, mask=per_system_mask(i)), None

    log = js.CsvSink.create(path, example, per_system=True, table="long", block=4)
    log, _ = jax.lax.scan(body, log, jnp.arange(STEPS, dtype=jnp.int32))
    js.close(log)
    out = tmp_path / "log.png"
    code = main(["plot", str(path), "--x", "time", "--out", str(out)])
    printed, err = capsys.readouterr()
    assert code == 0 and err == "" and f"wrote {out}" in printed
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(out) as im:
        assert im.size[0] > 400 and im.size[1] > 600  # three stacked subplots
    # the same lines as the data: one per system, at the steps it was selected
    from jaxsinks._tools import sources, viz

    data = sources.load(path)
    assert data.fields == ("energy", "n", "time_")  # the field `time`, as in a wide log
    lines = viz.csv_series(data, "energy", x="step")
    assert [label for label, *_ in lines] == ["system 0", "system 1", "system 2"]
    assert lines[1][1].tolist() == [0, 2, 4] and lines[2][2].tolist() == [50.25 + 2]
    code = main(["plot", str(path), "n", "--systems", "2", "--out", str(tmp_path / "n.png")])
    assert code == 0 and (tmp_path / "n.png").exists()


def test_plot_refuses_a_long_csv_log_whose_lines_were_shuffled(tmp_path, capsys):
    path = tmp_path / "log.csv"
    path.write_text("step,time,system,name,value\n0,0,-1,a,1\n0,0,-1,b,2\n1,0,-1,b,3\n1,0,-1,a,4\n")
    code = main(["plot", str(path), "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == 2 and "Line 4 of the long CSV log" in err and "['a', 'b']" in err


# --------------------------------------------------------------------------- append


def test_csv_append_continues_and_removes_a_torn_frame(tmp_path):
    path = tmp_path / "log.csv"
    frame = {"a": jnp.float32(0), "b": jnp.float32(0)}
    log = js.CsvSink.create(path, frame, table="long")
    log = log.write({"a": jnp.float32(1), "b": jnp.float32(2)}, step=0)
    js.close(log)
    with open(path, "a") as f:  # a crash after the first line of a frame (and half a line)
        f.write("1,nan,-1,a,3\n1,nan,-1,b,")
    log = js.CsvSink.create(path, frame, table="long", mode="a")
    log = log.write({"a": jnp.float32(5), "b": jnp.float32(6)}, step=2)
    js.close(log)
    assert [(r[0], r[3], r[4]) for r in csv_rows(path)] == [
        (0, "a", 1.0),
        (0, "b", 2.0),
        (2, "a", 5.0),
        (2, "b", 6.0),
    ]
    with pytest.raises(js.SchemaMismatchError, match=r"it logs the fields \['a', 'b'\]"):
        js.CsvSink.create(path, {"a": jnp.float32(0)}, table="long", mode="a")


def test_zarr_append_continues_the_table_and_refuses_another_layout(tmp_path):
    store = tmp_path / "log.zarr"
    frame = {"a": jnp.float32(0), "k": jnp.int32(0)}
    for start in (0, 3):
        sink = js.ZarrSink.create(store, frame, table="long", chunk=2, mode="a")
        for i in range(start, start + 3):
            sink = sink.write({"a": jnp.float32(i / 2), "k": jnp.int32(-i)}, step=i)
        js.close(sink)
    run = js.open(store)
    assert len(run) == 6 and run.steps.tolist() == list(range(6))
    assert run["k"][:].tolist() == [0, -1, -2, -3, -4, -5]
    assert run.to_xarray().sizes["row"] == 12
    with pytest.raises(js.SchemaMismatchError, match="table is"):
        js.ZarrSink.create(store, frame, chunk=2, mode="a")  # wide onto a long run


def test_a_long_run_is_refused_by_readers_of_schema_version_1(tmp_path):
    store = tmp_path / "log.zarr"
    js.close(js.ZarrSink.create(store, {"a": jnp.float32(0)}, table="long"))
    assert zarr.open_group(store, mode="r").attrs["jaxsinks"]["schema_version"] == 2


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("create", [js.CsvSink.create, js.ZarrSink.create])
def test_a_field_that_is_not_a_scalar_is_refused_with_its_shape_and_the_remedy(tmp_path, create):
    path = tmp_path / "log"
    with pytest.raises(js.ConfigError) as err:
        create(path, {"e": jnp.zeros(()), "pos": jnp.zeros((4, 3))}, table="long")
    assert str(err.value).endswith(
        "with table='long' logs scalar fields only, but field 'pos' has shape (4, 3) per frame. "
        "Log one scalar per field: split it into scalar fields, reduce it (e.g. its norm or "
        "maximum), or use table='wide', which writes one column per entry."
    )
    with pytest.raises(js.ConfigError) as err:  # a batch's vector: per_system=True is the remedy
        create(path, {"energy": jnp.zeros(5)}, table="long")
    assert "field 'energy' has shape (5,) per frame" in str(err.value)
    assert "create the sink with per_system=True" in str(err.value)
    with pytest.raises(js.ConfigError, match=r"'f' has shape \(3,\) per system"):
        create(path, {"e": jnp.zeros(5), "f": jnp.zeros((5, 3))}, table="long", per_system=True)


@pytest.mark.parametrize("create", [js.CsvSink.create, js.ZarrSink.create])
def test_unsupported_dtypes_and_arguments_are_refused(tmp_path, create):
    path = tmp_path / "log"
    with pytest.raises(js.ConfigError) as err:
        create(path, {"e": jnp.zeros(()), "z": jnp.zeros((), jnp.complex64)}, table="long")
    assert "logs bool, integer and float fields; field 'z' is complex64" in str(err.value)
    assert "Log its real and imaginary parts" in str(err.value)
    with pytest.raises(
        js.ConfigError, match=r"`table` to be one of \['wide', 'long'\]; got 'tidy'"
    ):
        create(path, {"e": jnp.zeros(())}, table="tidy")
    assert not path.exists()


def test_zarr_options_a_long_table_cannot_have_are_named(tmp_path):
    frame = {"e": jnp.zeros(())}
    for kwargs, named in [
        ({"overflow": "ring", "capacity": 8}, "overflow='ring'"),
        ({"field_config": {"e": js.FieldConfig(dtype="float16")}}, "field_config"),
    ]:
        with pytest.raises(js.ConfigError, match=f"cannot be combined with {named}"):
            js.ZarrSink.create(tmp_path / "log.zarr", frame, table="long", **kwargs)


# ------------------------------------------------------------------ a long Zarr run's tools


def test_info_and_plot_read_a_long_zarr_run_with_shards(tmp_path, capsys):
    store = tmp_path / "log.zarr"
    example = per_system_frame(jnp.int32(0))
    sink = js.ZarrSink.create(
        store,
        example,
        per_system=True,
        table="long",
        chunk=3,
        chunks_per_shard=2,
        codec=js.Zstd(3),
    )
    js.close(record_per_system(sink))
    run = js.open(store)
    assert table_rows(run.to_xarray().to_dataframe()) == expected_per_system_rows()
    value = next(f for f in run.describe()["fields"] if f["name"] == "value")
    assert value["chunks"] == [6] and value["shards"] == [12]  # 3 (x2) frames of 2 rows
    assert main(["info", str(store)]) == 0
    info = capsys.readouterr().out
    assert "table      long" in info and "20 committed" not in info and "10 committed" in info
    out = tmp_path / "n.png"
    assert main(["plot", str(store), "n", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    from jaxsinks._tools import viz

    lines = viz.series(run, "n")
    assert [label for label, *_ in lines] == ["system 0", "system 1", "system 2"]
    assert lines[2][1].tolist() == [5] and lines[2][2].tolist() == [502]
