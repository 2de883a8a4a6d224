"""Bad input, property-based: every failure is a `jaxsinks.JaxsinksError` with a clear message.

Never a crash with another exception, a hang, silent truncation, or a store that `open` cannot
read: after a failed create either nothing exists or `open` works. Credentials in a store URL or
spec never appear in an error message or in the stored attributes.
"""

import itertools
import json
import math
import pathlib
import re
import string
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import x32_only
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from zarr_helpers import memory_store

import jaxsinks as js
from jaxsinks._tools import cli as _cli

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
    st.text(max_size=5),
    st.none(),
    st.builds(object),
    st.just(np.array([object()])),
    st.just(np.array(["a", "b"])),
    st.just(np.array([b"x"])),
    st.just({}),
    st.just([]),
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


def test_a_dict_with_int_and_str_keys_is_named_as_the_frame_not_a_raw_jax_error():
    """JAX's raw "Comparator raised exception while sorting pytree dictionary keys"."""
    path = fresh_dir() / "run.zarr"
    mixed = {1: jnp.zeros(2, jnp.float32), "a": jnp.zeros(2, jnp.float32)}
    with pytest.raises(js.ConfigError) as info:
        create(path, {"x": mixed})
    assert_clear(info.value, "The example frame could not be read as a pytree", "string keys")
    assert not path.exists()
    sink = js.DeviceBuffer.create({"1": mixed[1], "a": mixed["a"]}, capacity=2)
    for record in (lambda: sink.write(mixed, step=0), lambda: js.record(sink, step=0, frame=mixed)):
        with pytest.raises(js.FrameError) as info:
            record()
        assert_clear(info.value, "`frame` could not be read as a pytree", "string keys")


@given(
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
    dtype=st.sampled_from([np.float32, np.int32, np.bool_, np.complex64, np.uint8, np.float16]),
)
def test_zero_d_and_zero_size_leaves_round_trip(shape, dtype):
    store = memory_store()
    frames = [{"a": np.full(shape, i % 2, dtype)} for i in range(3)]
    js.close(record_all(create(store, frames[0], chunk=2), frames))
    run = js.open(store)
    assert len(run) == 3 and run["a"][:].shape == (3, *shape) and run["a"][:].dtype == dtype
    np.testing.assert_array_equal(run["a"][:], np.stack([f["a"] for f in frames]))


@given(
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
    other=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
)
def test_a_frame_of_another_shape_is_a_frame_error_naming_both_shapes(shape, other):
    assume(shape != other)
    sink = js.DeviceBuffer.create({"x": jnp.zeros(shape)}, capacity=4)
    for write in (
        lambda s, f: js.record(s, step=0, frame=f),
        jax.jit(lambda s, f: js.record(s, step=0, frame=f)),
    ):
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


@given(
    values=hnp.arrays(
        np.float32, 4, elements=st.floats(width=32, allow_nan=True, allow_infinity=True)
    )
)
def test_float16_storage_keeps_nan_and_inf_and_refuses_finite_out_of_range(values):
    store = memory_store()
    sink = create(
        store,
        {"a": jnp.zeros(4, jnp.float32)},
        chunk=1,
        field_config={"a": js.FieldConfig(dtype="float16")},
    )
    sink = js.record(
        sink, step=0, frame={"a": jnp.zeros(4, jnp.float32)}
    )  # a first frame that fits
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


@given(
    pair=st.sampled_from(
        [
            ("float32", "complex64"),
            ("float32", "float16"),
            ("float32", "float32"),
            ("int32", "int8"),
            ("int32", "uint16"),
            ("int32", "float16"),
            ("int32", "complex64"),
        ]
    )
)
def test_storage_dtypes_round_trip(pair):
    source, dtype = pair
    store = memory_store()
    values = np.array([0, 1, 1, 0], source)
    sink = create(
        store,
        {"a": jnp.zeros(4, source)},
        chunk=2,
        field_config={"a": js.FieldConfig(dtype=dtype)},
    )
    js.close(record_all(sink, [{"a": jnp.asarray(values)}] * 3))
    got = js.open(store)["a"][:]
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, np.broadcast_to(values.astype(dtype), (3, 4)))


@pytest.mark.parametrize(
    "source, target",
    [
        ("float32", "bool"),
        ("complex64", "float32"),
        ("int32", "bool"),
        ("float32", "int8"),  # was stored truncated: 1.7 as 1
        ("float16", "uint32"),
        ("bfloat16", "int16"),
        ("complex64", "int32"),
    ],
)
def test_a_lossy_storage_dtype_is_a_config_error_naming_the_field(source, target):
    path = fresh_dir() / "run.zarr"
    with pytest.raises(js.ConfigError) as info:
        create(path, {"f": jnp.zeros(2, source)}, field_config={"f": js.FieldConfig(dtype=target)})
    assert_clear(info.value, "Field 'f'", source, target)
    assert not path.exists()


def test_a_float_field_stored_as_an_integer_is_refused_with_the_cast_to_make_instead():
    with pytest.raises(js.ConfigError) as info:
        create(
            memory_store(),
            {"x": jnp.zeros((), jnp.float32)},
            field_config={"x": js.FieldConfig(dtype="int8")},
        )
    assert_clear(
        info.value,
        "Field 'x' is recorded as float32 and cannot be stored as int8",
        "fractional part",
        "jnp.round(x).astype(jnp.int8)",
    )
    # cast in the frame, the field is an int8 one, stored as it is
    store = memory_store()
    sink = create(store, {"x": jnp.zeros((), jnp.int8)}, chunk=2)
    for i, v in enumerate([1.7, -2.9]):
        sink = js.record(sink, step=i, frame={"x": jnp.round(jnp.float32(v)).astype(jnp.int8)})
    js.close(sink)
    assert js.open(store)["x"][:].tolist() == [2, -3]


@pytest.mark.parametrize(
    "dtype",
    [
        "object",
        "U3",
        "datetime64[s]",
        pytest.param("int64", marks=x32_only),
        pytest.param("float64", marks=x32_only),
        "not-a-dtype",
    ],
)
def test_a_storage_dtype_that_cannot_be_stored_is_a_config_error(dtype):
    with pytest.raises(js.ConfigError) as info:
        js.FieldConfig(dtype=dtype)
    assert_clear(info.value, "FieldConfig", "dtype")


@x32_only
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


@x32_only
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


@pytest.mark.parametrize(
    "value",
    [
        1e300 + 0j,
        1 + 1e300j,
        -1e300 - 1e300j,
        complex(1, -4e38),
        3e38 + 3e38j,
        complex(math.inf, 1),
        complex(1, -math.inf),
        complex(math.nan, 0),
        1 + 2j,
    ],
)
def test_complex128_stored_as_complex64_is_checked_like_float_narrowing(value):
    """Either part beyond complex64's range fails the write (nothing stored as inf); NaN, inf and
    values that fit are stored as given."""
    with jax.enable_x64(True):
        store = memory_store()
        sink = create(
            store,
            {"z": jnp.zeros(2, jnp.complex128)},
            chunk=1,
            field_config={"z": js.FieldConfig(dtype="complex64")},
        )
        sink = js.record(
            sink, step=0, frame={"z": jnp.zeros(2, jnp.complex128)}
        )  # a first frame that fits
        sink = js.record(sink, step=1, frame={"z": jnp.asarray([value, 0], jnp.complex128)})
        big = any(
            math.isfinite(p) and abs(p) > float(np.finfo(np.float32).max)
            for p in (value.real, value.imag)
        )
        if big:
            with pytest.raises(js.OutOfRangeError) as info:
                js.close(sink)
            assert_clear(info.value, "'z' (complex64)", "committed and readable")
            assert info.value.committed == 1 and len(js.open(store)) == 1
            return
        js.close(sink)
        stored = js.open(store)["z"][1]
    assert stored.dtype == np.complex64
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(stored, np.asarray([value, 0]).astype(np.complex64))


@x32_only
@pytest.mark.parametrize("value", [1e300 + 0j, 1 + 1e300j])
def test_complex128_host_frames_without_x64_never_become_inf(value):
    sink = create(memory_store(), {"z": np.zeros(2, np.complex128)}, chunk=1)
    with pytest.raises(js.FrameError) as info:
        js.record(sink, step=0, frame={"z": np.asarray([value, 0])})
    assert_clear(info.value, "'z'", "complex128", "complex64")
    js.close(sink)


def test_a_float32_field_stored_as_bfloat16_round_trips():
    """Was a raw ValueError from inside TensorStore ("Invalid integer data type 'V'")."""
    store = memory_store()
    values = np.asarray([1.5, -3.0e38, np.nan, np.inf], np.float32)
    sink = create(
        store,
        {"a": jnp.zeros(4, jnp.float32)},
        chunk=1,
        field_config={"a": js.FieldConfig(dtype="bfloat16")},
    )
    js.close(js.record(sink, step=0, frame={"a": jnp.asarray(values)}))
    run = js.open(store)
    stored = run["a"][0]
    assert stored.dtype == jnp.bfloat16 and run.describe()["fields"][0]["dtype"] == "bfloat16"
    np.testing.assert_array_equal(
        stored.astype(np.float32), values.astype(jnp.bfloat16).astype(np.float32)
    )


@pytest.mark.parametrize("chunk", [1, 4], ids=["flushed on the device", "flushed at close"])
def test_bfloat16_frames_stored_as_float16_keep_inf_and_nan(chunk):
    """inf and NaN are not out of range, also for bfloat16 frames (numpy alone does not see
    bfloat16 as a float type: the tail flushed at close refused the inf)."""
    store = memory_store()
    sink = create(
        store,
        {"a": jnp.zeros(3, jnp.bfloat16)},
        chunk=chunk,
        field_config={"a": js.FieldConfig(dtype="float16")},
    )
    js.close(
        js.record(sink, step=0, frame={"a": jnp.asarray([jnp.inf, jnp.nan, -2.0], jnp.bfloat16)})
    )
    np.testing.assert_array_equal(
        js.open(store)["a"][0], np.asarray([np.inf, np.nan, -2.0], np.float16)
    )


@pytest.mark.parametrize(
    "source, target, value, fits",
    [
        ("int32", "uint32", -1, False),
        ("int32", "uint32", 2**31 - 1, True),  # was an OverflowError at record
        ("int32", "int16", -(2**15) - 1, False),
        ("float32", "bfloat16", 3.39e38, False),
        ("float32", "bfloat16", -3.38e38, True),
        # an integer stored as a float must be held exactly (257 was stored as 256)
        ("int32", "bfloat16", 256, True),
        ("int32", "bfloat16", 257, False),
        ("int32", "bfloat16", -258, True),  # even: bfloat16 holds it
        ("int32", "float16", 2048, True),
        ("int32", "float16", 2049, False),
        ("int32", "float16", 65504, True),
        ("int32", "float16", 65520, False),  # rounds to inf
        ("int32", "float32", 2**24 + 1, False),
        ("int32", "float32", 2**31 - 1, False),  # 2**31 as float32: beyond int32
        ("int32", "float32", -(2**31), True),
        ("int32", "complex64", 2**24 + 1, False),
    ],
)
def test_narrowing_at_the_edges_of_the_storage_range(source, target, value, fits):
    store = memory_store()
    sink = create(
        store,
        {"a": jnp.zeros((), source)},
        chunk=1,
        field_config={"a": js.FieldConfig(dtype=target)},
    )
    sink = js.record(sink, step=0, frame={"a": jnp.asarray(value, source)})
    if not fits:
        with pytest.raises(js.OutOfRangeError):
            js.close(sink)
        return
    js.close(sink)
    assert js.open(store)["a"][0] == np.asarray(value, source).astype(target)
    if source == "int32":
        assert js.open(store)["a"][0] == value  # held exactly


# ----------------------------------------------------------------- storage dtypes (property)

#: Every dtype a field may be stored as, some it may not, and what each is recorded from.
TARGETS = [
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "complex64",
    "complex128",
    "float8_e4m3fn",
    "float8_e5m2",
    "int4",
    "uint4",
    "float4_e2m1fn",
    "object",
    "U3",
    "V2",
    "f4,f4",
]
_SOURCES = {
    "float32": st.floats(width=32, allow_nan=True, allow_infinity=True),
    "int32": st.integers(-(2**31), 2**31 - 1)
    | st.sampled_from([0, 1, -1, 127, 128, 255, 256, 65504, 65536]),
    "bool": st.booleans(),
    "complex64": st.complex_numbers(width=64, allow_nan=True, allow_infinity=True),
    "bfloat16": st.floats(-1e3, 1e3, width=16),
}


def _beyond(values: np.ndarray, target: np.dtype) -> bool:
    """jaxsinks' rule for an out-of-range block, written out: a finite value (either part of a
    complex one) beyond the target's range, a NaN or inf bound for an integer type, or an
    integer that a float (or complex) type does not hold exactly."""
    if values.dtype == np.bool_ or target == np.bool_:
        return False
    if values.dtype.kind in "iu" and not jnp.issubdtype(target, jnp.integer):
        with np.errstate(over="ignore"):
            stored = values.astype(target).real.astype(np.float64)  # exact, inf included
        return any(not math.isfinite(s) or int(s) != v for s, v in zip(stored, values.tolist()))
    parts = [values.real, values.imag] if np.iscomplexobj(values) else [values]
    parts = [p.astype(np.float64) for p in parts]  # compared with a float64 bound below
    if jnp.issubdtype(target, jnp.integer):
        info = jnp.iinfo(target)
        return any(bool(np.any(~np.isfinite(p) | (p < info.min) | (p > info.max))) for p in parts)
    top = float(jnp.finfo(target).max)
    return any(bool(np.any(np.isfinite(p) & (np.abs(p) > top))) for p in parts)


@given(data=st.data(), source=st.sampled_from(sorted(_SOURCES)), target=st.sampled_from(TARGETS))
def test_every_storage_dtype_round_trips_or_is_refused_clearly(data, source, target):
    """A field stored as any dtype: refused at once with a ConfigError (a dtype no run stores, a
    lossy one, or a 64-bit one without x64), refused at close with an OutOfRangeError (a value
    out of range), or stored exactly as numpy casts it (bfloat16 included)."""
    values = np.asarray(
        data.draw(st.lists(_SOURCES[source], min_size=3, max_size=3)), dtype=np.dtype(source)
    )
    store = memory_store()
    try:
        config = js.FieldConfig(dtype=target)
        sink = create(store, {"a": jnp.zeros(3, source)}, chunk=1, field_config={"a": config})
    except js.ConfigError as err:
        assert_clear(err, "dtype" if "FieldConfig" in str(err) else "Field 'a'")
        return
    dtype = np.dtype(target)
    assert dtype.name in TARGETS[:15]
    sink = js.record(sink, step=0, frame={"a": jnp.asarray(values)})
    if _beyond(values, dtype):
        with pytest.raises(js.OutOfRangeError) as info:
            js.close(sink)
        assert_clear(info.value, f"'a' ({dtype.name})")
        assert len(js.open(store)) == 0
        return
    js.close(sink)
    stored = js.open(store)["a"][:]
    assert stored.dtype == dtype and stored.shape == (1, 3)
    with np.errstate(invalid="ignore", over="ignore"):
        want = values.astype(dtype)
    if dtype == jnp.bfloat16:
        # numpy's testing does not see bfloat16 NaNs as equal; float32 holds them
        stored, want = stored.astype(np.float32), want.astype(np.float32)
    np.testing.assert_array_equal(stored[0], want)


@settings(max_examples=10)  # each shape compiles its own recorder
@given(
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=3).filter(lambda s: 0 in s),
    dtype=st.sampled_from(["float32", "bfloat16", "int8", "bool", "complex64"]),
    data=st.data(),
)
def test_zero_size_fields_store_and_read_any_slice_like_numpy(shape, dtype, data):
    store = memory_store()
    sink = create(
        store,
        {"a": jnp.zeros(shape, dtype), "n": jnp.zeros((), jnp.float32)},
        chunk=2,
        field_config={"a": js.FieldConfig(chunk=tuple(max(1, d) for d in shape))},
    )
    for i in range(3):
        sink = js.record(sink, step=i, frame={"a": jnp.zeros(shape, dtype), "n": jnp.float32(i)})
    js.close(sink)
    view = js.open(store)["a"]
    full = np.zeros((3, *shape), dtype)
    index = data.draw(
        hnp.basic_indices((3, *shape), allow_newaxis=True, allow_ellipsis=True)
        | st.lists(st.integers(-3, 2), max_size=3)
    )
    got, want = view[index], full[index]
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(js.open(store)["n"][::-1], [2, 1, 0])


@given(
    index=st.one_of(
        st.integers(-10, 10),
        st.slices(10),
        st.lists(st.integers(-10, 10), max_size=4),
        st.tuples(st.integers(-10, 10), st.integers(-10, 10)),
        st.floats(),
        st.text(max_size=2),
        st.none(),
        st.just(Ellipsis),
        st.booleans(),
        hnp.arrays(np.bool_, st.integers(0, 8)),
    )
)
def test_read_slices_of_a_run_are_numpy_answers_or_index_errors(index):
    """Any key on a run's frames (`run[key]`) or a field (`run["a"][key]`): numpy's answer, or a
    jaxsinks error that is an IndexError where numpy raises one."""
    run, full = _small_run()
    readers = [lambda k: run["a"][k]]
    if isinstance(index, str) and index not in run.fields:  # a string on a run names a field
        with pytest.raises(js.JaxsinksError, match="has no field") as info:
            run[index]
        assert isinstance(info.value, KeyError)
    elif not isinstance(index, str):
        readers.append(lambda k: run[k]["a"][:])
    for read in readers:
        try:
            want = full[index]
        except (IndexError, TypeError, ValueError) as err:
            with pytest.raises(js.JaxsinksError) as info:
                read(index)
            assert not isinstance(err, IndexError) or isinstance(info.value, IndexError)
            continue
        try:
            got = read(index)
        except js.JaxsinksError as err:  # what numpy takes and jaxsinks refuses, clearly
            assert_clear(err)
            continue
        np.testing.assert_array_equal(got, want)
        assert got.shape == want.shape


_SMALL: list = []


def _small_run():
    if not _SMALL:
        store = memory_store()
        sink = create(store, {"a": jnp.zeros(2, jnp.float32)}, chunk=3)
        for i in range(8):
            sink = js.record(sink, step=i, frame={"a": jnp.asarray([i, -i], jnp.float32)})
        js.close(sink)
        _SMALL.append((js.open(store), np.asarray([[i, -i] for i in range(8)], np.float32)))
    return _SMALL[0]


@given(
    names=st.lists(
        st.sampled_from(
            [
                "a",
                "a/b",
                "a/b/c",
                "b",
                "step",
                "time",
                "system",
                "step/v",
                "x/step",
                "time/t",
                "b/system",
                "c",
                "time_",
                "step_/w",
            ]
        ),
        min_size=1,
        max_size=4,
        unique=True,
    )
)
def test_nested_field_names_are_stored_and_read_back_or_refused_naming_both(names):
    """Frames whose names nest (flat keys with '/', or nested dicts): either every field reads
    back, or a ConfigError at create names the colliding fields and nothing is stored. A name
    whose first part is a column's is stored with '_' appended to that part ('time' as 'time_')."""
    frame = {name: jnp.full(2, i, jnp.float32) for i, name in enumerate(names)}
    path = fresh_dir() / "run.zarr"
    top = lambda n: n.split("/")[0]  # noqa: E731
    stored = {
        n: top(n) + "_" + n[len(top(n)) :] if top(n) in ("step", "time", "system") else n
        for n in names
    }
    nodes = list(stored.values())
    groups = {"/".join(s.split("/")[:i]) for s in nodes for i in range(1, s.count("/") + 1)}
    collides = [n for n, s in stored.items() if s in groups or nodes.count(s) > 1]
    try:
        sink = create(path, frame, chunk=1)
    except js.ConfigError as err:
        assert collides, err
        assert_clear(err)
        assert any(f"'{name}'" in str(err) for name in collides), err
        if "cannot both be stored" in str(err):  # names both fields of a pair
            assert sum(f"'{name}'" in str(err) for name in names) >= 2, err
        assert not path.exists()
        return
    assert not collides
    js.close(js.record(sink, step=0, frame=frame))
    run = js.open(path)
    assert sorted(run.fields) == sorted(names)
    for i, name in enumerate(names):
        np.testing.assert_array_equal(run[name][:], [[i, i]])
    nested = run.to_numpy().frames
    for i, name in enumerate(names):
        node = nested
        for part in name.split("/"):
            node = node[part]
        np.testing.assert_array_equal(node, [[i, i]])


@given(
    name=st.one_of(
        st.text(min_size=150, max_size=400),
        st.text(alphabet=string.ascii_letters, min_size=190, max_size=260),
        st.text(alphabet=st.characters(min_codepoint=128), min_size=1, max_size=12),
    )
)
def test_long_and_unicode_field_names_are_stored_or_refused_up_front(name):
    path = fresh_dir() / "run.zarr"
    try:
        sink = create(path, {name: jnp.zeros(2)}, chunk=1)
    except js.JaxsinksError as err:
        assert isinstance(err, js.ConfigError)  # up front, not a StoreError from the file system
        assert_clear(err, "Field name")
        assert not path.exists()
        return
    js.close(js.record(sink, step=0, frame={name: jnp.ones(2)}))
    assert js.open(path).fields == (name,)


@pytest.mark.parametrize(
    "config",
    [
        {"chunk": 5},
        {"dims": 5},
        {"dims": ("a", 1)},
        {"chunk": (True, 1)},
        {"chunk": (2**40, 1)},
        {"chunk": "ab"},
        {"dims": "ab"},
        {"dtype": "float8_e4m3fn"},
        {"dtype": [("a", "f4")]},
        {"codec": "zstd"},
    ],
)
def test_bad_field_configs_are_config_errors(config):
    path = fresh_dir() / "run.zarr"
    with pytest.raises(js.ConfigError) as info:
        create(path, {"a": jnp.zeros((2, 3))}, field_config={"a": js.FieldConfig(**config)})
    assert_clear(info.value)
    assert not path.exists()


# ------------------------------------------------------------------------------ steps, times

#: Concrete steps outside int32 (the step column's dtype), Python and numpy.
BEYOND_INT32 = [2**31, -(2**31) - 1, 2**32 + 7, np.int64(2**33), np.uint32(3_000_000_000)]


@pytest.mark.parametrize("step", BEYOND_INT32, ids=str)
@pytest.mark.parametrize("kind", ["DeviceBuffer", "ZarrSink"])
def test_a_step_outside_int32_is_a_frame_error_naming_it(kind, step):
    """It was stored wrapped (2**32 + 7 as 7, 2**33 as 0) or raised a raw OverflowError."""
    path = fresh_dir() / "run.zarr"
    example = {"a": jnp.zeros(2)}
    sink = (
        create(path, example, chunk=1)
        if kind == "ZarrSink"
        else js.DeviceBuffer.create(example, capacity=2)
    )
    for put in (js.record, lambda s, **kw: s.write(kw.pop("frame"), **kw)):
        with pytest.raises(js.FrameError) as info:
            put(sink, step=step, frame={"a": jnp.ones(2)})
        assert_clear(info.value, "`step`", str(step), "[-2147483648, 2147483647]", "step // k")
    sink = js.record(sink, step=np.int64(2**31 - 1), frame={"a": jnp.ones(2)})
    sink = js.close(sink.write({"a": jnp.ones(2)}, step=-(2**31)))
    steps = js.open(path).steps if kind == "ZarrSink" else sink.read().steps
    assert steps.tolist() == [2**31 - 1, -(2**31)]  # the limits are stored exactly


@pytest.mark.parametrize(
    "time", ["1.0", 1j, np.complex64(1.0), b"1", object()], ids=["str", "complex", "c64", "b", "o"]
)
def test_a_time_that_is_not_a_real_number_is_a_frame_error_naming_it(time):
    """A string raised a raw TypeError, and a complex time was recorded without its imaginary
    part."""
    sink = js.DeviceBuffer.create({"a": jnp.zeros(2)}, capacity=2, every=js.Interval(0.1))
    with pytest.raises(js.FrameError) as info:
        js.record(sink, step=0, time=time, frame={"a": jnp.ones(2)})
    assert_clear(info.value, "`time` must be a real number", type(time).__name__)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8])
def test_a_traced_non_float_time_suggests_a_cast_not_an_int_time_dtype(dtype):
    """It suggested `time_dtype=int32`, itself a ConfigError."""
    sink = js.DeviceBuffer.create({"a": jnp.zeros(2)}, capacity=2, every=js.Interval(2.0))
    run = lambda s, t: js.record(s, step=0, time=t, frame={"a": jnp.ones(2)})  # noqa: E731
    with pytest.raises(js.FrameError) as info:
        jax.jit(run)(sink, jnp.ones((), dtype))
    assert_clear(info.value, "`time`", "float32", "`t.astype(jnp.float32)`")
    assert "time_dtype=" not in str(info.value)


@x32_only
def test_a_traced_float_time_of_another_dtype_suggests_time_dtype():
    sink = js.DeviceBuffer.create({"a": jnp.zeros(2)}, capacity=2, every=js.Interval(2.0))
    run = lambda s, t: js.record(s, step=0, time=t, frame={"a": jnp.ones(2)})  # noqa: E731
    with pytest.raises(js.FrameError) as info:
        jax.jit(run)(sink, jnp.ones((), jnp.float16))
    assert_clear(info.value, "`t.astype(jnp.float32)`", "`time_dtype=float16`")


@pytest.mark.parametrize("kind", ["DeviceBuffer", "HostBuffer"])
def test_a_traced_step_outside_int32_is_recorded_and_raised_on_not_wrapped(kind):
    """A uint32 step (or int64 with x64) beyond int32 is only known inside jit: the schedule sees
    its value (3e9 is even: ``every=2`` records it), the step column holds the nearest int32, and
    reading raises a FrameError naming `step`; the frames are kept."""
    example = {"a": jnp.zeros(2)}
    make = js.DeviceBuffer.create if kind == "DeviceBuffer" else js.HostBuffer.create
    sink = make(example, capacity=4, every=2)
    steps = jnp.asarray([3_000_000_000, 3_000_000_001, 2**31 - 2], jnp.uint32)
    sink = jax.jit(lambda s: jax.lax.scan(_record_step, s, steps)[0])(sink)
    if kind == "HostBuffer":
        sink = js.close(sink)  # moves the staged frames to host memory
    for check in (sink.read, sink.check):
        with pytest.raises(js.FrameError) as info:
            check()
    assert_clear(info.value, "`step`", "[-2147483648, 2147483647]", "check=False", "step // k")
    assert sink.read(check=False).steps.tolist() == [2**31 - 1, 2**31 - 2]
    if kind == "HostBuffer":
        sink.release()


@pytest.mark.parametrize("kind", ["ZarrSink", "CsvSink"])
def test_a_traced_step_outside_int32_streamed_is_committed_then_raised_at_close(kind, tmp_path):
    """What nobody reads back on the host: close commits the frames, then raises naming `step`."""
    example = {"a": jnp.zeros(2)}
    if kind == "ZarrSink":
        sink = js.ZarrSink.create(tmp_path / "run.zarr", example, chunk=1, every=2)
    else:
        sink = js.CsvSink.create(tmp_path / "log.csv", example, block=1, every=2)
    steps = jnp.asarray([3_000_000_000, 3_000_000_001, 2**31 - 2], jnp.uint32)
    sink = jax.jit(lambda s: jax.lax.scan(_record_step, s, steps)[0])(sink)
    with pytest.raises(js.FrameError) as info:
        js.close(sink)
    assert_clear(info.value, "`step`", "[-2147483648, 2147483647]", "committed to", "step // k")
    if kind == "ZarrSink":
        run = js.open(tmp_path / "run.zarr")
        assert run.status == "closed" and run.steps.tolist() == [2**31 - 1, 2**31 - 2]
    else:
        rows = (tmp_path / "log.csv").read_text().splitlines()[1:]
        assert [int(r.split(",")[0]) for r in rows] == [2**31 - 1, 2**31 - 2]


def test_a_traced_step_within_int32_of_a_wider_dtype_is_stored_exactly():
    sink = js.DeviceBuffer.create({"a": jnp.zeros(2)}, capacity=4, every=3)
    steps = jnp.asarray([0, 1, 2, 3, 2**31 - 1], jnp.uint32)
    sink = jax.jit(lambda s: jax.lax.scan(_record_step, s, steps)[0])(sink)
    assert sink.read().steps.tolist() == [0, 3]


@pytest.mark.parametrize("kind", ["DeviceBuffer", "ZarrSink"])
def test_a_traced_time_beyond_the_time_dtype_is_stored_as_inf_and_raised_on(kind, tmp_path):
    """A weakly typed time (``i * dt``) is cast to the column's dtype inside jit, where it cannot
    be refused: 1e5 in a float16 column was stored as inf without a word. The sink sets
    `Flag.TIME_OUT_OF_RANGE`; reading (DeviceBuffer) or closing (after committing) raises."""
    example = {"a": jnp.zeros(2)}
    if kind == "ZarrSink":
        sink = js.ZarrSink.create(tmp_path / "run.zarr", example, chunk=1, time_dtype="float16")
    else:
        sink = js.DeviceBuffer.create(example, capacity=4, time_dtype="float16")

    def body(sink, i):
        return js.record(sink, step=i, time=i * 5e4, frame={"a": jnp.ones(2)}), None

    with jax.numpy_dtype_promotion("standard"):  # the tests' strict promotion refuses i * 5e4
        sink = jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(3))[0])(sink)
    assert int(sink.flags) == js.Flag.TIME_OUT_OF_RANGE
    with pytest.raises(js.FrameError) as info:
        js.close(sink)
    assert_clear(info.value, "`time`", "float16", "65504", "stored as inf", "`time_dtype`")
    if kind == "ZarrSink":
        assert js.open(tmp_path / "run.zarr").times.tolist() == [0, np.float16(5e4), np.inf]
    else:
        assert sink.read(check=False).times.tolist() == [0, np.float16(5e4), np.inf]


@pytest.mark.parametrize(
    "time_dtype, time",
    [
        ("float32", 1e300),
        ("float32", np.float64(1e40)),
        ("float32", -1e39),
        ("float16", 70000.0),
        ("float16", 70000),
        ("float16", np.float32(-1e5)),
    ],
    ids=str,
)
def test_a_time_beyond_the_time_dtype_is_a_frame_error_not_inf(time_dtype, time):
    """It was stored as inf."""
    path = fresh_dir() / "run.zarr"
    sink = create(path, {"a": jnp.zeros(2)}, chunk=1, time_dtype=time_dtype)
    with pytest.raises(js.FrameError) as info:
        js.record(sink, step=0, time=time, frame={"a": jnp.ones(2)})
    largest = f"{float(np.finfo(time_dtype).max):.6g}"
    assert_clear(info.value, "`time`", str(time), time_dtype, largest, "inf", "`time_dtype`")
    edge = [65504.0, np.inf, -np.inf] if time_dtype == "float16" else [3.4e38, np.inf, -np.inf]
    for i, t in enumerate(edge):  # the largest finite value, and infinities, are stored as given
        sink = js.record(sink, step=i, time=t, frame={"a": jnp.ones(2)})
    js.close(sink)
    assert js.open(path).times.tolist() == [np.float32(t).item() for t in edge]


@x32_only
@pytest.mark.parametrize("time_dtype", ["float64", np.float64, float])
def test_a_float64_time_dtype_without_x64_is_refused_like_a_float64_field(time_dtype):
    """It was stored as float32 without a word, while FieldConfig(dtype='float64') is refused."""
    for make in (
        lambda: js.DeviceBuffer.create({"a": jnp.zeros(2)}, capacity=2, time_dtype=time_dtype),
        lambda: create(fresh_dir() / "run.zarr", {"a": jnp.zeros(2)}, time_dtype=time_dtype),
    ):
        with pytest.raises(js.ConfigError) as info:
            make()
        assert_clear(
            info.value,
            "`time_dtype=float64`",
            "cannot hold with the current settings",
            "enable jax_enable_x64 for 64-bit types",
            "time_dtype=float32",
        )
    with pytest.raises(js.ConfigError, match="cannot hold with the current settings"):
        js.FieldConfig(dtype="float64")


@pytest.mark.parametrize("time_dtype", [None, "int32", "notatype", bool])
def test_a_time_dtype_that_is_not_a_float_is_refused_as_given(time_dtype):
    """np.dtype(None) is float64: None was reported as `time_dtype=float64` (or, under x64,
    accepted as float64)."""
    with pytest.raises(js.ConfigError) as info:
        js.DeviceBuffer.create({"a": jnp.zeros(2)}, capacity=2, time_dtype=time_dtype)
    assert_clear(
        info.value, "`DeviceBuffer.create`", "`time_dtype` to be a floating dtype", repr(time_dtype)
    )


# ------------------------------------------------------------------------------- schedules


@given(
    n=st.one_of(
        st.integers(max_value=0), st.floats(allow_nan=True), st.text(max_size=2), st.booleans()
    )
)
def test_bad_every_is_a_config_error(n):
    with pytest.raises(js.ConfigError) as info:
        js.DeviceBuffer.create({"a": jnp.zeros(2)}, capacity=3, every=n)
    assert_clear(info.value, "every" if not isinstance(n, int) or isinstance(n, bool) else "`n`")


@pytest.mark.parametrize("n", [2**31, 2**40, np.int64(2**31)], ids=["2**31", "2**40", "np2**31"])
def test_every_beyond_int32_is_refused_at_create_naming_it(n):
    """Steps are int32 on the device: a period beyond it used to pass create and then make the
    first record raise a raw OverflowError."""
    path = fresh_dir() / "run.zarr"
    with pytest.raises(js.ConfigError) as info:
        create(path, {"a": jnp.zeros(2)}, chunk=2, every=n)
    assert_clear(info.value, "`ZarrSink.create`", "`every`", "at most 2147483647", str(n), "int32")
    assert_nothing_or_opens(path)
    for make in (lambda: js.Every(n), lambda: js.Every(1, start=n)):
        with pytest.raises(js.ConfigError) as info:
            make()
        assert_clear(info.value, "`Every`", "at most 2147483647", str(n))


def test_every_at_the_int32_limit_records_its_start():
    sink = js.DeviceBuffer.create({"a": jnp.zeros(2)}, capacity=3, every=2**31 - 1)
    sink = jax.jit(lambda s: jax.lax.scan(_record_step, s, jnp.arange(3))[0])(sink)
    assert sink.read().steps.tolist() == [0]
    assert js.Every(2, start=2**31 - 1).to_json() == {"type": "every", "n": 2, "start": 2**31 - 1}


def _record_step(sink, i):
    return js.record(sink, step=i, frame={"a": jnp.ones(2)}), None


@pytest.mark.parametrize("name", ["capacity", "chunk"])
def test_counts_beyond_int32_are_refused_at_create_naming_them(name):
    """`capacity` and `chunk` count frames in int32 on the device."""
    path = fresh_dir() / "run.zarr"
    with pytest.raises(js.ConfigError) as info:
        create(path, {"a": jnp.zeros(2)}, **{"chunk": 2, name: 2**31})
    assert_clear(info.value, f"`{name}`", "at most 2147483647", "2147483648", "int32")
    assert_nothing_or_opens(path)
    for make in (js.DeviceBuffer.create, js.HostBuffer.create):
        with pytest.raises(js.ConfigError) as info:
            make({"a": jnp.zeros(2)}, capacity=2**40)
        assert_clear(info.value, "`capacity`", "at most 2147483647", str(2**40))


@given(
    dt=st.one_of(st.floats(max_value=0.0), st.just(math.nan), st.just(math.inf), st.just(10**400))
)
def test_bad_intervals_are_config_errors(dt):
    with pytest.raises(js.ConfigError) as info:
        js.Interval(dt)
    assert_clear(info.value, "`dt`")


def test_numpy_interval_numbers_are_python_floats_and_a_run_records_with_them(tmp_path):
    """`Interval(np.float32(0.1))` made every run creation fail in json with a TypeError."""
    interval = js.Interval(np.float32(0.25), start=np.int64(1), tol=np.float64(0.01))
    assert [type(v) for v in (interval.dt, interval.start, interval.tol)] == [float, int, float]
    # Python numbers stay as given: a checkpoint compares an older one's schedule by its repr
    assert repr(js.Interval(1, start=0)) == "Interval(dt=1, start=0, tol=None)"
    assert (interval.dt, interval.start, interval.tol) == (0.25, 1.0, 0.01)
    sink = js.ZarrSink.create(tmp_path / "r.zarr", {"e": jnp.float32(0)}, every=interval, chunk=2)
    for step in range(12):
        sink = js.record(
            sink, step=step, time=jnp.float32(step * 0.125), frame={"e": jnp.float32(step)}
        )
    js.close(sink)
    assert js.open(tmp_path / "r.zarr").steps.tolist() == [8, 10]


@pytest.mark.parametrize("per_system", ["False", 0, 1, None, np.array([True])])
def test_per_system_that_is_not_a_bool_is_a_config_error(per_system):
    """`per_system="False"` made a per-system sink (it was taken by its truth)."""
    for make in (
        lambda: js.DeviceBuffer.create({"x": jnp.zeros((3, 2))}, capacity=8, per_system=per_system),
        lambda: js.ZarrSink.create(memory_store(), {"x": jnp.zeros((3, 2))}, per_system=per_system),
    ):
        with pytest.raises(js.ConfigError) as info:
            make()
        assert_clear(info.value, "`per_system`", "a bool", repr(per_system))


def test_numpy_bools_are_taken_as_flags():
    """A RunConfig with per_system=np.bool_(False) was refused at create, though it compares
    equal to its JSON round trip, which created."""
    sink = js.DeviceBuffer.create(
        {"x": jnp.zeros((3, 2))}, capacity=8, per_system=np.bool_(True), once=np.bool_(True)
    )
    assert (sink.per_system, sink.once) == (True, True) and type(sink.once) is bool
    campaign = js.Campaign.create(memory_store())
    run = campaign.run_config("r", per_system=np.bool_(False), chunk=2)
    js.close(run.create({"e": jnp.float32(0)}))
    assert campaign.entry("r").status == "closed"


@pytest.mark.parametrize("overflow", ["ring", "drop"])
def test_an_overflow_policy_without_a_capacity_is_a_config_error(overflow):
    """A ZarrSink with overflow='ring' and no capacity kept every frame and said 'ring'."""
    store = memory_store()
    with pytest.raises(js.ConfigError) as info:
        js.ZarrSink.create(store, {"e": jnp.float32(0)}, overflow=overflow, chunk=2)
    assert_clear(info.value, f"overflow='{overflow}'", "without a `capacity`")
    with pytest.raises(js.StoreNotFoundError):
        js.open(store)  # nothing was created


@given(times=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=6))
def test_times_must_be_finite_and_strictly_increasing(times):
    ok = (
        len(times) > 0
        and all(math.isfinite(t) for t in times)
        and all(a < b for a, b in zip(times, times[1:]))
    )
    if ok:
        js.Times(times)
        return
    with pytest.raises(js.ConfigError) as info:
        js.Times(times)
    assert_clear(info.value, "`Times`")


# ----------------------------------------------------------------------------------- masks


@given(
    shape=hnp.array_shapes(min_dims=0, max_dims=2, max_side=5),
    dtype=st.sampled_from([np.bool_, np.int32, np.float32]),
)
def test_a_mask_of_the_wrong_shape_or_dtype_is_a_frame_error(shape, dtype):
    sink = js.DeviceBuffer.create({"a": jnp.zeros((4, 2))}, capacity=8, per_system=True)
    mask = jnp.ones(shape, dtype)
    if shape == (4,) and dtype == np.bool_:
        assert int(js.record(sink, step=0, frame={"a": jnp.zeros((4, 2))}, mask=mask).recorded) == 4
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
    js.close(
        js.record(
            create(path, {"a": jnp.zeros(2)}, chunk=1, mode="w"), step=0, frame={"a": jnp.ones(2)}
        )
    )
    run = js.open(path)
    where = (deep / path).resolve()
    assert len(run) == 1 and where.exists() and str(where).startswith(str(base))
    np.testing.assert_array_equal(run["a"][:], [[1.0, 1.0]])


@pytest.mark.parametrize(
    "store",
    [
        f"s3://AKIAEXAMPLE:{SECRET}@bucket/run.zarr",
        f"gs://token:{SECRET}@bucket/run.zarr",
        f"s3://bucket/run.zarr?X-Amz-Credential={SECRET}",
    ],
)
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


#: Secrets in URLs: every part carries the marker, with '/', '@' and ':' between parts (about half
#: of AWS secret keys hold a '/', which urllib's urlsplit reads as the end of the user info).
MARK = "Qz7"
url_secrets = st.lists(
    st.text(alphabet=string.ascii_letters + string.digits + "+=-_", max_size=6),
    min_size=1,
    max_size=4,
).flatmap(
    lambda parts: st.lists(
        st.sampled_from("/@:"), min_size=len(parts) - 1, max_size=len(parts) - 1
    ).map(lambda seps: MARK + "".join(p + sep + MARK for p, sep in zip(parts, seps)) + parts[-1])
)


def _every_store_entry(store, tmp):
    """Each public entry point that takes a store, given `store`."""
    frame = {"a": jnp.zeros(2)}
    source = tmp / "source.zarr"
    if not source.exists():
        js.close(js.record(create(source, frame, chunk=1), step=0, frame={"a": jnp.ones(2)}))
    return {
        "ZarrSink.create": lambda: create(store, frame),
        "open": lambda: js.open(store),
        "Campaign.create": lambda: js.Campaign.create(store),
        "Campaign.open": lambda: js.Campaign.open(store),
        "export_training": lambda: js.export_training(js.open(source), store),
        "TrainingSet.open": lambda: js.TrainingSet.open(store),
        "HostBuffer.to_zarr": lambda: js.close(js.HostBuffer.create(frame, capacity=2)).to_zarr(
            store
        ),
    }


@given(
    scheme=st.sampled_from(["s3", "gs", "memory", "file"]),
    key=st.from_regex(r"\AAKIA[A-Z0-9]{4}\Z"),
    secret=url_secrets,
    form=st.sampled_from(
        [
            "{key}:{secret}@bkt/run.zarr",
            "{secret}@bkt/run.zarr",
            "{key}:{secret}@bkt",
            "{key}:{secret}@bkt/a@b/run",
        ]
    ),
)
def test_user_info_in_a_url_is_refused_by_every_entry_point_without_a_trace(
    scheme, key, secret, form, monkeypatch, capsys, caplog
):
    monkeypatch.setenv(
        "AWS_ENDPOINT_URL", "http://127.0.0.1:9"
    )  # nothing listens: a request fails fast
    url = f"{scheme}://" + form.format(key=key + MARK, secret=secret)
    assume(not url.startswith("file:///"))  # file:///a@b/run is a local path
    for name, call in _every_store_entry(url, fresh_dir()).items():
        with pytest.raises(js.ConfigError, match="user info") as info:
            call()
        assert MARK not in str(info.value) + repr(info.value), name
    assert _cli.main(["info", url]) == 2
    shown = capsys.readouterr()
    assert "user info" in shown.err and MARK not in shown.out + shown.err + caplog.text


def test_a_file_url_with_a_host_is_refused():
    with pytest.raises(
        js.ConfigError, match=r"file://otherhost/\.\.\. names the host 'otherhost'.*three slashes"
    ):
        create("file://otherhost/p.zarr", {"a": jnp.zeros(2)})


@given(
    extra=st.dictionaries(
        st.sampled_from(["secret", "aws_credentials", "token", "password"]),
        st.just(SECRET),
        max_size=3,
    ),
    driver=st.sampled_from(["memory", "nope", 3, None]),
)
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
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(attrs=st.dictionaries(st.text(max_size=6), json_values, max_size=4))
def test_json_attributes_round_trip(attrs):
    assume("jaxsinks" not in attrs)
    store = memory_store()
    js.close(create(store, {"a": jnp.zeros(2)}, attrs=attrs))
    assert js.open(store).attrs == json.loads(json.dumps(attrs))


@given(
    bad=st.sampled_from([math.nan, math.inf, -math.inf, object(), np.float32(1.0), b"x", {1, 2}]),
    nested=st.booleans(),
)
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


@given(
    name=st.one_of(
        st.text(max_size=8),
        st.sampled_from(
            [
                "../x",
                "a/b",
                "",
                ".",
                "..",
                "é",
                "x.zarr",
                "zarr.json",
                "a/zarr.json",
                "__x",
                "a//b",
                "/a",
                "a/",
                "step",
                "time",
                "run.zarr/x",
                "a b",
                "ü/x",
            ]
        ),
    )
)
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


@pytest.mark.parametrize("config", [["a"], "a", ("a", js.FieldConfig())])
def test_field_config_that_is_not_a_dict_is_a_config_error(config):
    """Was a raw ValueError from dict() ("dictionary update sequence element #0 ...")."""
    with pytest.raises(js.ConfigError, match="`field_config`") as info:
        create(memory_store(), {"a": jnp.zeros(2, jnp.float32)}, field_config=config)
    assert_clear(info.value)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"every": 5}, "schedule is {'type': 'every', 'n': 1, 'start': 0} in the stored run but"),
        (
            {"field_config": {"v": js.FieldConfig(dims=("atom",))}},
            "field 'v': dims ['frame', 'v_0'] stored vs ['frame', 'atom'] now",
        ),
        ({"attrs": {"T": 310, "new": 1}}, "attrs['T'] is 300 in the stored run but 310 now"),
    ],
)
def test_append_refuses_another_schedule_dims_or_attr_value_and_changes_nothing(
    tmp_path, options, named
):
    """mode='a' with another `every` rewrote the run's recorded schedule (its frames 0..5 then
    claimed every 5th step), other `dims` were ignored, and a stored attribute was replaced."""
    from fs_helpers import stored_bytes

    store = tmp_path / "run.zarr"
    example = {"e": jnp.float32(0), "v": jnp.zeros(3, jnp.float32)}
    sink = js.ZarrSink.create(store, example, chunk=4, attrs={"T": 300})
    for i in range(6):
        sink = sink.write({"e": jnp.float32(i), "v": jnp.full(3, i, jnp.float32)}, step=i)
    js.close(sink)
    before = stored_bytes(store)
    with pytest.raises(js.SchemaMismatchError, match=re.escape(named)):
        js.ZarrSink.create(store, example, chunk=4, mode="a", **options)
    assert stored_bytes(store) == before
    # attrs that add keys, or none, are fine: the stored ones are kept
    js.close(js.ZarrSink.create(store, example, chunk=4, mode="a", attrs={"T": 300, "a": 1}))
    js.close(js.ZarrSink.create(store, example, chunk=4, mode="a"))
    run = js.open(store)
    assert run.attrs == {"T": 300, "a": 1} and run.schedule["n"] == 1 and len(run) == 6
