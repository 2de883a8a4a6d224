"""Bad input, property-based: every failure is a `jaxsinks.JaxsinksError` with a clear message.

Never a crash with another exception, a hang, silent truncation, or a store that `open` cannot
read: after a failed create either nothing exists or `open` works. Credentials in a store URL or
spec never appear in an error message or in the stored attributes.
"""

import itertools
import json
import math
import pathlib
import string
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from zarr_helpers import memory_store

import jaxsinks as js

SECRET = "S3CR3T-do-not-print"
_SPECS = itertools.count()


def create(store, frame, **kw):
    return js.ZarrSink.create(store, frame, **kw)


def record_all(sink, frames):
    for i, frame in enumerate(frames):
        sink = js.record(sink, step=i, frame=frame)
    return sink


def assert_clear(err: BaseException, *words: str) -> None:
    """A jaxsinks error whose message is a sentence mentioning `words`, without the secret."""
    assert isinstance(err, js.JaxsinksError), f"{type(err).__name__}: {err}"
    message = str(err)
    assert len(message) > 20 and SECRET not in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def assert_nothing_or_opens(path: pathlib.Path) -> None:
    """After a failed create: nothing at `path`, or a run that `open` reads."""
    if path.exists() and any(path.iterdir()):
        js.open(path)


_SCRATCH: list[pathlib.Path] = []


@pytest.fixture(scope="module", autouse=True)
def _scratch(tmp_path_factory):
    """One pytest temporary directory for the module; each example gets its own under it."""
    _SCRATCH.append(tmp_path_factory.mktemp("bad_input"))
    yield
    _SCRATCH.pop()


def fresh_dir() -> pathlib.Path:
    return pathlib.Path(tempfile.mkdtemp(dir=_SCRATCH[-1]))


# ---------------------------------------------------------------------------------- frames

not_arrays = st.one_of(
    st.text(max_size=5), st.none(), st.builds(object), st.just(np.array([object()])),
    st.just(np.array(["a", "b"])), st.just(np.array([b"x"])), st.just({}), st.just([]),
    st.just(np.datetime64("2020-01-01")),
)


@given(leaf=not_arrays)
def test_an_example_frame_without_numeric_arrays_is_a_config_error(leaf):
    path = fresh_dir() / "run.zarr"
    with pytest.raises(js.JaxsinksError) as info:
        create(path, {"a": leaf, "b": {}})
    assert_clear(info.value, "example frame")
    assert isinstance(info.value, js.ConfigError)
    assert not path.exists()


@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
       dtype=st.sampled_from([np.float32, np.int32, np.bool_, np.complex64, np.uint8, np.float16]))
def test_zero_d_and_zero_size_leaves_round_trip(shape, dtype):
    store = memory_store()
    frames = [{"a": np.full(shape, i % 2, dtype)} for i in range(3)]
    js.close(record_all(create(store, frames[0], chunk=2), frames))
    run = js.open(store)
    assert len(run) == 3 and run["a"][:].shape == (3, *shape) and run["a"][:].dtype == dtype
    np.testing.assert_array_equal(run["a"][:], np.stack([f["a"] for f in frames]))


@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
       other=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
def test_a_frame_of_another_shape_is_a_frame_error_naming_both_shapes(shape, other):
    assume(shape != other)
    sink = js.DeviceBuffer.create({"x": jnp.zeros(shape)}, capacity=4)
    for write in (lambda s, f: js.record(s, step=0, frame=f), jax.jit(lambda s, f: js.record(s, step=0, frame=f))):
        with pytest.raises(js.FrameError) as info:
            write(sink, {"x": jnp.zeros(other)})
        assert_clear(info.value, "'x'", str(tuple(other)), str(tuple(shape)))


@given(extra=st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=4))
def test_a_frame_of_another_structure_names_the_fields(extra):
    assume(extra != "x")
    sink = js.DeviceBuffer.create({"x": jnp.zeros(2)}, capacity=4)
    with pytest.raises(js.FrameError) as info:
        js.record(sink, step=0, frame={"x": jnp.zeros(2), extra: jnp.zeros(2)})
    assert_clear(info.value, f"unexpected fields ['{extra}']")


def test_a_non_array_frame_leaf_at_write_is_a_frame_error():
    sink = js.DeviceBuffer.create({"x": jnp.zeros(())}, capacity=4)
    for bad in ("text", object(), 2**80):
        with pytest.raises(js.FrameError) as info:
            js.record(sink, step=0, frame={"x": bad})
        assert_clear(info.value, "not an array")


# ---------------------------------------------------------------------------------- dtypes


@given(values=hnp.arrays(np.float32, 4, elements=st.floats(width=32, allow_nan=True, allow_infinity=True)))
def test_float16_storage_keeps_nan_and_inf_and_refuses_finite_out_of_range(values):
    store = memory_store()
    sink = create(store, {"a": jnp.zeros(4)}, chunk=1, fields={"a": js.FieldConfig(dtype="float16")})
    sink = js.record(sink, step=0, frame={"a": jnp.zeros(4)})  # a first frame that fits
    sink = js.record(sink, step=1, frame={"a": jnp.asarray(values)})
    finite = np.isfinite(values)
    out_of_range = bool(np.any(np.abs(values[finite]) > np.finfo(np.float16).max))
    if out_of_range:
        with pytest.raises(js.OutOfRangeError) as info:
            js.close(sink)
        assert_clear(info.value, "'a' (float16)", "1 frames of", "committed and readable")
        assert info.value.committed == 1
        assert len(js.open(store)) == 1  # the committed prefix, readable
        return
    js.close(sink)
    stored = js.open(store)["a"][1]
    assert stored.dtype == np.float16
    np.testing.assert_array_equal(stored, values.astype(np.float16))  # NaN, +inf, -inf as given
    np.testing.assert_array_equal(np.isnan(stored), np.isnan(values))


@given(dtype=st.sampled_from(["complex64", "int8", "uint16", "int32", "float16", "float32"]))
def test_storage_dtypes_round_trip(dtype):
    store = memory_store()
    values = np.array([0, 1, 1, 0], np.float32)
    sink = create(store, {"a": jnp.zeros(4)}, chunk=2, fields={"a": js.FieldConfig(dtype=dtype)})
    js.close(record_all(sink, [{"a": jnp.asarray(values)}] * 3))
    got = js.open(store)["a"][:]
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, np.broadcast_to(values.astype(dtype), (3, 4)))


@pytest.mark.parametrize("source, target", [("float32", "bool"), ("complex64", "float32"), ("int32", "bool")])
def test_a_lossy_storage_dtype_is_a_config_error_naming_the_field(source, target):
    path = fresh_dir() / "run.zarr"
    with pytest.raises(js.ConfigError) as info:
        create(path, {"f": jnp.zeros(2, source)}, fields={"f": js.FieldConfig(dtype=target)})
    assert_clear(info.value, "Field 'f'", source, target)
    assert not path.exists()


@pytest.mark.parametrize("dtype", ["object", "U3", "datetime64[s]", "int64", "float64", "not-a-dtype"])
def test_a_storage_dtype_that_cannot_be_stored_is_a_config_error(dtype):
    with pytest.raises(js.ConfigError) as info:
        js.FieldConfig(dtype=dtype)
    assert_clear(info.value, "FieldConfig", "dtype")


@given(value=st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_int64_frames_without_x64_are_stored_exactly_or_refused(value):
    assert not jax.config.jax_enable_x64
    store = memory_store()
    sink = create(store, {"a": np.zeros(2, np.int64)}, chunk=1)
    frame = {"a": np.array([value, 0], np.int64)}
    if -(2**31) <= value < 2**31:
        js.close(js.record(sink, step=0, frame=frame))
        assert js.open(store)["a"][0].tolist() == [value, 0]
        return
    with pytest.raises(js.FrameError) as info:
        js.record(sink, step=0, frame=frame)
    assert_clear(info.value, "'a'", "int64", "int32")
    js.close(sink)
    assert len(js.open(store)) == 0


@given(value=st.floats(allow_nan=True, allow_infinity=True))
def test_float64_frames_without_x64_never_become_inf(value):
    store = memory_store()
    sink = create(store, {"a": np.zeros((), np.float64)}, chunk=1)
    frame = {"a": np.float64(value)}
    if math.isfinite(value) and abs(value) > float(np.finfo(np.float32).max):
        with pytest.raises(js.FrameError) as info:
            js.record(sink, step=0, frame=frame)
        assert_clear(info.value, "'a'", "float64", "float32")
        js.close(sink)
        return
    js.close(js.record(sink, step=0, frame=frame))
    np.testing.assert_array_equal(js.open(store)["a"][0], np.float32(value))


# ------------------------------------------------------------------------------- schedules


@given(n=st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.text(max_size=2), st.booleans()))
def test_bad_every_is_a_config_error(n):
    with pytest.raises(js.ConfigError) as info:
        js.DeviceBuffer.create({"a": jnp.zeros(2)}, capacity=3, every=n)
    assert_clear(info.value, "every" if not isinstance(n, int) or isinstance(n, bool) else "`n`")


@given(dt=st.one_of(st.floats(max_value=0.0), st.just(math.nan), st.just(math.inf)))
def test_bad_intervals_are_config_errors(dt):
    with pytest.raises(js.ConfigError) as info:
        js.Interval(dt)
    assert_clear(info.value, "`dt`")


@given(times=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=6))
def test_times_must_be_finite_and_strictly_increasing(times):
    ok = (len(times) > 0 and all(math.isfinite(t) for t in times)
          and all(a < b for a, b in zip(times, times[1:])))
    if ok:
        js.Times(times)
        return
    with pytest.raises(js.ConfigError) as info:
        js.Times(times)
    assert_clear(info.value, "`Times`")


# ----------------------------------------------------------------------------------- masks


@given(shape=hnp.array_shapes(min_dims=0, max_dims=2, max_side=5),
       dtype=st.sampled_from([np.bool_, np.int32, np.float32]))
def test_a_mask_of_the_wrong_shape_or_dtype_is_a_frame_error(shape, dtype):
    sink = js.DeviceBuffer.create({"a": jnp.zeros((4, 2))}, capacity=8, per_system=True)
    mask = jnp.ones(shape, dtype)
    if shape == (4,) and dtype == np.bool_:
        assert int(js.record(sink, step=0, frame={"a": jnp.zeros((4, 2))}, mask=mask).count) == 4
        return
    with pytest.raises(js.FrameError) as info:
        js.record(sink, step=0, frame={"a": jnp.zeros((4, 2))}, mask=mask)
    assert_clear(info.value, "`mask`", "(4,)")


# ------------------------------------------------------------------------------ store URLs


@given(scheme=st.from_regex(r"\A[a-z][a-z0-9+]{1,7}\Z"))
def test_an_unknown_url_scheme_is_a_config_error_naming_it(scheme):
    assume(scheme not in ("file", "memory", "s3", "gs"))
    with pytest.raises(js.ConfigError) as info:
        create(f"{scheme}://user:{SECRET}@host/run.zarr", {"a": jnp.zeros(2)})
    assert_clear(info.value, f"'{scheme}://'")


@pytest.mark.parametrize("store", ["", None, 3, b"run.zarr", ["run.zarr"], "s3://", "gs://"])
def test_an_empty_or_malformed_store_is_a_config_error(store):
    with pytest.raises(js.ConfigError) as info:
        create(store, {"a": jnp.zeros(2)})
    assert_clear(info.value, "`store`")


@given(parts=st.lists(st.sampled_from(["..", ".", "a", "b.zarr", "c"]), min_size=1, max_size=4))
def test_dotdot_paths_resolve_to_a_run_that_opens(parts, monkeypatch):
    base = fresh_dir()
    deep = base / "v" / "w" / "x" / "y" / "z"  # four '..' stay inside base
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    path = "/".join(parts) + "/run.zarr"
    js.close(js.record(create(path, {"a": jnp.zeros(2)}, chunk=1, mode="w"), step=0, frame={"a": jnp.ones(2)}))
    run = js.open(path)
    where = (deep / path).resolve()
    assert len(run) == 1 and where.exists() and str(where).startswith(str(base))
    np.testing.assert_array_equal(run["a"][:], [[1.0, 1.0]])


@pytest.mark.parametrize("store", [
    f"s3://AKIAEXAMPLE:{SECRET}@bucket/run.zarr",
    f"gs://token:{SECRET}@bucket/run.zarr",
    f"s3://bucket/run.zarr?X-Amz-Credential={SECRET}",
])
def test_credentials_in_a_cloud_url_never_appear_in_errors(store, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: fails fast
    with pytest.raises(js.JaxsinksError) as info:
        create(store, {"a": jnp.zeros(2)})
    assert_clear(info.value)


@pytest.mark.parametrize("scheme", ["memory", "file", "s3", "gs"])
def test_credentials_in_any_url_are_refused_without_showing_them(scheme):
    with pytest.raises(js.ConfigError, match="holds user info .*not shown here") as info:
        create(f"{scheme}://user:{SECRET}@name/run", {"a": jnp.zeros(2)})
    assert_clear(info.value)


def test_a_file_url_with_a_host_is_refused():
    with pytest.raises(js.ConfigError, match=r"file://otherhost/\.\.\. names the host 'otherhost'.*three slashes"):
        create("file://otherhost/p.zarr", {"a": jnp.zeros(2)})


@given(extra=st.dictionaries(st.sampled_from(["secret", "aws_credentials", "token", "password"]),
                             st.just(SECRET), max_size=3),
       driver=st.sampled_from(["memory", "nope", 3, None]))
def test_bad_kvstore_specs_are_jaxsinks_errors_without_the_secrets(extra, driver):
    spec = dict(extra, path=f"spec-{next(_SPECS)}")
    if driver is not None:
        spec["driver"] = driver
    try:
        sink = create(spec, {"a": jnp.zeros(2)})
    except js.JaxsinksError as err:
        assert_clear(err)
        return
    js.close(sink)  # a valid spec (memory, path only): the run works
    assert not extra and driver == "memory"
    assert len(js.open(spec)) == 0


def test_stored_attributes_never_hold_the_store_url(tmp_path):
    store = tmp_path / "run.zarr"
    js.close(create(store, {"a": jnp.zeros(2)}, attrs={"note": "ok"}))
    doc = json.loads((store / "zarr.json").read_text())
    assert str(tmp_path) not in json.dumps(doc["attributes"])
    assert doc["attributes"]["note"] == "ok"


# ------------------------------------------------------------------------------ attributes

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=10,
)


@given(attrs=st.dictionaries(st.text(max_size=6), json_values, max_size=4))
def test_json_attributes_round_trip(attrs):
    assume("jaxsinks" not in attrs)
    store = memory_store()
    js.close(create(store, {"a": jnp.zeros(2)}, attrs=attrs))
    assert js.open(store).attrs == json.loads(json.dumps(attrs))


@given(bad=st.sampled_from([math.nan, math.inf, -math.inf, object(), np.float32(1.0), b"x", {1, 2}]),
       nested=st.booleans())
def test_non_json_attributes_are_config_errors_naming_the_key(bad, nested):
    attrs = {"outer": {"inner": [bad]}} if nested else {"k": bad}
    path = fresh_dir() / "run.zarr"
    with pytest.raises(js.ConfigError) as info:
        create(path, {"a": jnp.zeros(2)}, attrs=attrs)
    assert_clear(info.value, "`attrs['outer']['inner'][0]`" if nested else "`attrs['k']`")
    assert not path.exists()


def test_huge_attributes_are_a_config_error():
    with pytest.raises(js.ConfigError) as info:
        create(memory_store(), {"a": jnp.zeros(2)}, attrs={"blob": "x" * (2 * 2**20)})
    assert_clear(info.value, "`attrs`", "MiB")


# ----------------------------------------------------------------------------- field names


@given(name=st.one_of(
    st.text(max_size=8),
    st.sampled_from(["../x", "a/b", "", ".", "..", "é", "x.zarr", "zarr.json", "a/zarr.json", "__x",
                     "a//b", "/a", "a/", "step", "time", "run.zarr/x", "a b", "ü/x"]),
))
def test_field_names_are_stored_as_named_or_refused(name):
    path = fresh_dir() / "run.zarr"
    try:
        sink = create(path, {name: jnp.zeros(2)}, chunk=1)
    except js.JaxsinksError as err:
        assert isinstance(err, js.ConfigError)
        assert_clear(err, "Field name" if name else "")
        assert_nothing_or_opens(path)
        assert not any(p.name != "run.zarr" for p in path.parent.iterdir())  # nothing outside
        return
    js.close(js.record(sink, step=0, frame={name: jnp.ones(2)}))
    run = js.open(path)
    assert run.fields == (name,)
    np.testing.assert_array_equal(run[name][:], [[1.0, 1.0]])
    assert all(str(p.resolve()).startswith(str(path)) for p in path.rglob("*"))
