"""The zarr v3 layout is built by pure functions; checked here without touching any store."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import x32_only

import jaxsinks as js
from jaxsinks._io.codecs import (
    codec_chain,
    drops_fractions,
    inexact_integers,
    narrowing_range,
    rounds_integers,
)
from jaxsinks._io.layout import (
    check_new_run,
    check_schema_version,
    check_user_attributes,
    make_layout,
)

SPEC = js.FrameSpec.from_example(
    {
        "pos": jnp.zeros((5, 3), jnp.float32),
        "e": jnp.zeros((), jnp.float32),
        "meta": {"id": jnp.zeros(2, jnp.int32)},
    }
)


def layout(spec=SPEC, **kw):
    """`make_layout` of `spec` (a frame spec, or an example frame) with these defaults."""
    if not isinstance(spec, js.FrameSpec):
        spec = js.FrameSpec.from_example(spec)
    args = dict(
        chunk=16,
        chunks_per_shard=None,
        codec=js.Zstd(3),
        field_config={},
        time_dtype=np.dtype("float32"),
        batch_size=None,
    )
    args.update(kw)
    return make_layout(spec, **args)


def test_one_array_per_leaf_plus_step_and_time_chunked_by_the_block():
    lay = layout()
    assert [a.name for a in lay.arrays] == ["e", "meta/id", "pos", "step", "time"]
    pos = lay.fields[2].metadata(0)
    assert pos["shape"] == [0, 5, 3] and pos["data_type"] == "float32"
    assert pos["chunk_grid"]["configuration"]["chunk_shape"] == [16, 5, 3]
    assert pos["dimension_names"] == ["frame", "pos_0", "pos_1"]
    assert pos["fill_value"] == "NaN" and lay.columns[0].fill_value == -1
    assert pos["codecs"] == [
        {"name": "bytes", "configuration": {"endian": "little"}},
        {"name": "zstd", "configuration": {"level": 3, "checksum": False}},
    ]
    assert lay.groups == ("meta",) and lay.block == 16


def test_sharding_makes_the_flush_block_a_whole_shard():
    lay = layout(chunk=8, chunks_per_shard=4)
    meta = lay.fields[2].metadata(100)
    assert lay.block == 32 and meta["shape"] == [100, 5, 3]
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [32, 5, 3]
    (shard,) = meta["codecs"]
    assert shard["name"] == "sharding_indexed"
    assert shard["configuration"]["chunk_shape"] == [8, 5, 3]
    assert shard["configuration"]["index_codecs"][1] == {"name": "crc32c"}


def test_per_field_overrides_and_per_system_columns():
    lay = layout(
        field_config={
            "pos": js.FieldConfig(
                dtype="float16",
                codec=js.Blosc("lz4", 5, "bitshuffle"),
                chunk=(1, 3),
                dims=("atom", "xyz"),
            )
        },
        batch_size=4,
    )
    pos = lay.fields[2]
    meta = pos.metadata(0)
    assert meta["data_type"] == "float16" and pos.source_dtype == np.float32
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [16, 1, 3]
    assert meta["dimension_names"] == ["frame", "atom", "xyz"]
    assert meta["codecs"][1] == {
        "name": "blosc",
        "configuration": {
            "cname": "lz4",
            "clevel": 5,
            "shuffle": "bitshuffle",
            "typesize": 2,
            "blocksize": 0,
        },
    }
    assert pos.narrowing == (-65504.0, 65504.0)
    assert [c.name for c in lay.columns] == ["step", "time", "system"]
    assert lay.schema()["per_system"] == 4


def test_no_compression_is_just_bytes():
    assert codec_chain(None, np.dtype("int32"), None) == [
        {"name": "bytes", "configuration": {"endian": "little"}}
    ]


@pytest.mark.parametrize(
    "kw, match",
    [
        (
            dict(field_config={"nope": js.FieldConfig()}),
            r"configures \['nope'\], which the frame does not have",
        ),
        (dict(field_config={"pos": js.FieldConfig(chunk=(5,))}), "one positive int per axis"),
        (
            dict(field_config={"pos": js.FieldConfig(dims=("a", "a"))}),
            "must name each of its 2 axes once",
        ),
        (dict(field_config={"pos": js.FieldConfig(dims=("frame", "b"))}), "not 'frame'"),
    ],
)
def test_bad_layout_options_are_named(kw, match):
    with pytest.raises(js.ConfigError, match=match):
        layout(**kw)


@pytest.mark.parametrize("name", ["../x", "a b", "__hidden"])
def test_field_names_that_are_not_safe_node_names_are_rejected(name):
    spec = js.FrameSpec.from_example({name: jnp.zeros(2)})
    with pytest.raises(js.ConfigError, match=name.replace(".", r"\.")):
        layout(spec, chunk=4, codec=None)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: js.Zstd(23), "`Zstd` needs `level`"),
        (lambda: js.Zstd(np.bool_(True)), "`Zstd` needs `level`"),
        (lambda: js.Zstd(3.0), "`Zstd` needs `level`"),
        (lambda: js.Blosc(cname="gzip"), "`Blosc` needs `cname`"),
        (lambda: js.Blosc(clevel=10), "`clevel`"),
        (lambda: js.Blosc(shuffle="yes"), "`shuffle`"),
        pytest.param(lambda: js.FieldConfig(dtype="float64"), "JAX cannot hold", marks=x32_only),
        (lambda: js.FieldConfig(dtype="notatype"), "not a dtype"),
        (lambda: js.FieldConfig(codec="zstd"), "`codec` to be jaxsinks.Zstd"),
    ],
)
def test_bad_codecs_are_named(make, match):
    with pytest.raises(js.ConfigError, match=match):
        make()


def test_codec_levels_take_numpy_ints_as_python_ints():
    # As FieldConfig.chunk does: a level read from a numpy array or a config file is an np.integer.
    assert js.Zstd(np.int32(-5)) == js.Zstd(-5)
    assert type(js.Zstd(np.int64(7)).level) is int
    assert js.Blosc(clevel=np.uint8(9)).to_json(np.dtype("float32"))["configuration"]["clevel"] == 9


@pytest.mark.parametrize(
    "make",
    [
        lambda: js.FieldConfig(dtype="int4"),
        lambda: layout({"q": jnp.zeros(2, jnp.float8_e4m3fn)}, chunk=4, codec=None),
    ],
)
def test_an_unstorable_dtype_is_refused_suggesting_float32_first(make):
    # bfloat16 was the suggestion, though zarr-python and xarray cannot open a run holding it.
    with pytest.raises(js.ConfigError) as refused:
        make()
    message = str(refused.value)
    assert "cannot be stored in a run" in message
    assert message.index("dtype='float32'") < message.index("'bfloat16' saves space")
    assert "opens only through jaxsinks.open" in message


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: js.HostBuffer.create({"q": jnp.zeros(2, jnp.float8_e4m3fn)}, capacity=4),
        lambda tmp: js.CsvSink.create(tmp / "log.csv", {"q": jnp.zeros((), jnp.int4)}),
    ],
    ids=["HostBuffer", "CsvSink"],
)
def test_a_sink_without_field_config_suggests_a_cast_for_an_unstorable_dtype(make, tmp_path):
    with pytest.raises(js.ConfigError) as refused:
        make(tmp_path)
    message = str(refused.value)
    assert message.startswith("Field 'q' is recorded as ")
    assert "field_config=" not in message.split("Cast")[0] and "FieldConfig" not in message
    assert "Cast the field to one of those in the frame you record" in message
    assert list(tmp_path.iterdir()) == []


def test_a_bfloat16_field_is_stored_as_zarr_bfloat16_unless_configured():
    spec = js.FrameSpec.from_example({"w": jnp.zeros(2, jnp.bfloat16)})
    args = dict(chunk=4, chunks_per_shard=None, codec=None, time_dtype=np.dtype("float32"))
    stored = make_layout(spec, field_config={}, batch_size=None, **args).fields[0]
    assert stored.metadata(0)["data_type"] == "bfloat16"
    config = {"w": js.FieldConfig(dtype="float32")}
    wide = make_layout(spec, field_config=config, batch_size=None, **args).fields[0]
    assert wide.metadata(0)["data_type"] == "float32" and wide.narrowing is None


@pytest.mark.parametrize("given", [">f4", ">c8", "<f4", np.dtype(">i2"), "=u2"])
def test_a_storage_dtype_is_held_in_native_byte_order(given):
    """'>f4' was accepted, then the first write raised JAX's TypeError ("JAX only supports
    number, bool, and string dtypes, got dtype >f4"); Zarr's `bytes` codec sets the stored
    byte order, so the data type has none."""
    dtype = js.FieldConfig(dtype=given).dtype
    assert dtype == np.dtype(given).newbyteorder("=") and dtype.byteorder in "=|"
    stored = layout({"e": jnp.zeros((), dtype)}, field_config={"e": js.FieldConfig(dtype=given)})
    assert stored.fields[0].metadata(0)["data_type"] == np.dtype(given).name


def test_a_float_field_is_not_stored_as_an_integer():
    for source in ("float32", "float16", "bfloat16", "complex64"):
        assert drops_fractions(np.dtype(jnp.dtype(source)), np.dtype("int8"))
    assert not drops_fractions(np.dtype("int32"), np.dtype("int8"))
    assert not drops_fractions(np.dtype("float32"), np.dtype("float16"))
    stored_as_uint8 = layout(field_config={"e": js.FieldConfig(dtype="uint8")})  # (older runs)
    with pytest.raises(js.ConfigError) as refused:  # a new run
        check_new_run(stored_as_uint8)
    message = str(refused.value)
    assert message.startswith("Field 'e' is recorded as float32 and cannot be stored as uint8")
    assert "jnp.round(x).astype(jnp.uint8)" in message


@pytest.mark.parametrize(
    "source, target, rounds",
    [
        ("int8", "bfloat16", False),  # |x| <= 128: bfloat16 holds every integer up to 256
        ("uint8", "bfloat16", False),
        ("int16", "bfloat16", True),
        ("int8", "float16", False),
        ("int16", "float16", True),  # float16 holds every integer up to 2048
        ("int16", "float32", False),
        ("int32", "float32", True),
        ("int32", "complex64", True),
        ("int32", "float64", False),
        ("bool", "float16", False),
        ("float32", "float16", False),  # a float rounds anyway: only its range is checked
        ("int32", "int16", False),
    ],
)
def test_which_integer_fields_a_float_storage_dtype_can_round(source, target, rounds):
    assert rounds_integers(np.dtype(source), np.dtype(jnp.dtype(target))) is rounds
    if jax.dtypes.canonicalize_dtype(target) != jnp.dtype(target):
        return  # float64 without x64: refused by FieldConfig
    stored = layout(
        {"n": jnp.zeros((), source)}, field_config={"n": js.FieldConfig(dtype=target)}
    ).fields[0]
    assert stored.rounds is rounds


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
@pytest.mark.parametrize(
    "source, target, values, unheld",
    [
        ("int32", "bfloat16", [256, 257, -258, 3], [False, True, False, False]),
        ("int32", "float16", [2048, 2049, 65504, 65520], [False, True, False, True]),
        # 2**31 - 1 rounds to 2**31, beyond int32: a saturating cast back (jax) gave it back
        ("int32", "float32", [2**31 - 1, 2**24, 2**24 + 1, -(2**31)], [True, False, True, False]),
        ("uint32", "float32", [2**32 - 1, 2**32 - 256], [True, False]),
        ("int32", "complex64", [2**24 + 1, -5], [True, False]),
    ],
)
def test_an_integer_is_held_by_a_float_only_exactly(xp, source, target, values, unheld):
    flat = xp.asarray(np.array(values, source))
    with np.errstate(over="ignore"):
        stored = flat.astype(jnp.dtype(target))
    assert np.asarray(inexact_integers(xp, flat, stored)).tolist() == unheld


@pytest.mark.parametrize(
    "doc, shown",
    [
        ({"schema_version": "1"}, "'1' (of type str)"),
        ({"schema_version": 0}, "0 (of type int)"),
        ({"schema_version": -5}, "-5 (of type int)"),
        ({"schema_version": 1.0}, "1.0 (of type float)"),
        ({"schema_version": True}, "True (of type bool)"),
        ({}, "None (missing)"),
    ],
)
def test_a_schema_version_no_jaxsinks_writes_is_a_damaged_file_not_an_upgrade(doc, shown):
    """ "1" (a str) asked to upgrade a jaxsinks that reads version 1; 0 and -5 were accepted."""
    with pytest.raises(js.StoreError) as refused:
        check_schema_version(doc, "The entry at memory://e.json", "campaign", 1)
    message = str(refused.value)
    assert message.startswith(
        "The entry at memory://e.json is damaged or was not written by jaxsinks: it has campaign "
        f"schema version {shown}, but every jaxsinks writes an int from 1 up"
    )
    assert "Upgrade" not in message


def test_only_a_newer_schema_version_asks_to_upgrade():
    with pytest.raises(js.StoreError) as refused:
        check_schema_version({"schema_version": 3}, "The run at x", "jaxsinks", 2)
    assert str(refused.value) == (
        "The run at x was written with jaxsinks schema version 3; this jaxsinks reads versions "
        "up to 2. Upgrade jaxsinks to read it."
    )
    assert check_schema_version({"schema_version": 1}, "x", "jaxsinks", 2) == {"schema_version": 1}


def test_narrowing_ranges():
    f32, f16, i32, u8 = (np.dtype(t) for t in ("float32", "float16", "int32", "uint8"))
    assert narrowing_range(f32, f16) == (-65504.0, 65504.0)
    assert narrowing_range(f16, f32) is None and narrowing_range(f32, f32) is None
    assert narrowing_range(i32, u8) == (0.0, 255.0)
    assert narrowing_range(u8, i32) is None


@pytest.mark.parametrize(
    "attrs, match",
    [
        ({"a": np.float32(1)}, r"`attrs\['a'\]` is a numpy.float32, which is not JSON"),
        ({"a": {"b": [1, {2, 3}]}}, r"`attrs\['a'\]\['b'\]\[1\]` is a set"),
        ({"a": float("nan")}, "JSON cannot hold"),
        ({1: "x"}, "keys must be strings"),
        ({"jaxsinks": 1}, "may not use the key 'jaxsinks'"),
        ([1, 2], "must be a dict"),
    ],
)
def test_non_json_attributes_are_rejected_with_their_key(attrs, match):
    with pytest.raises(js.ConfigError, match=match):
        check_user_attributes(attrs)


def test_json_attributes_pass_through():
    assert check_user_attributes({"a": [1, 2.5, "x", None, True], "b": {"c": (1, 2)}}) == {
        "a": [1, 2.5, "x", None, True],
        "b": {"c": [1, 2]},
    }
    assert jax.tree.leaves(check_user_attributes(None)) == []


@pytest.mark.parametrize(
    "frame, both",
    [
        ({"a": jnp.zeros(2), "a/b": jnp.zeros(2)}, ("'a'", "'a/b'")),
        ({"a": {"b": jnp.zeros(2)}, "a/b/c": jnp.zeros(())}, ("'a/b'", "'a/b/c'")),
        # a field named like a column is stored as `step_`: a field of that name collides
        ({"step": {"v": jnp.zeros(2)}, "step_": jnp.zeros(())}, ("'step/v'", "'step_'")),
        (
            {"time": {"x": {"y": jnp.zeros(2)}}, "time_": {"x": jnp.zeros(())}},
            ("'time/x/y'", "'time_/x'"),
        ),
        ({"system": [jnp.zeros(2)], "system_": {"0": jnp.zeros(2)}}, ("'system/0'", "'system_/0'")),
    ],
)
def test_nested_names_that_collide_with_a_stored_node_are_refused_naming_both(frame, both):
    with pytest.raises(js.ConfigError) as info:
        layout(frame, chunk=4, codec=None)
    for name in both:
        assert name in str(info.value)


def test_columns_deeper_in_the_tree_do_not_collide():
    spec = js.FrameSpec.from_example(
        {"a": {"step": jnp.zeros(2), "time": jnp.zeros(())}, "b": {"c": jnp.zeros(1)}}
    )
    lay = layout_of(spec)
    assert [a.name for a in lay.fields] == ["a/step", "a/time", "b/c"] and lay.groups == ("a", "b")


def layout_of(spec):
    return layout(spec, chunk=4, codec=None)


@pytest.mark.parametrize(
    "source, target, bounds",
    [
        (
            "int32",
            "uint32",
            (0, 2**31 - 1),
        ),  # inside the source's range: was (0, 2**32 - 1), no int32
        (
            "float32",
            "int32",
            (-(2**31), 2**31 - 128),
        ),  # the largest float32 below 2**31: 2**31 itself overflows
        ("float32", "uint8", (0, 255)),
        (
            "float32",
            "bfloat16",
            (-float(jnp.finfo(jnp.bfloat16).max), float(jnp.finfo(jnp.bfloat16).max)),
        ),
        ("float32", "float16", (-65504, 65504)),
        ("complex64", "complex64", None),
        ("int8", "float16", None),
    ],
)
def test_narrowing_bounds_are_values_the_source_holds(source, target, bounds):
    assert narrowing_range(np.dtype(source), np.dtype(target)) == bounds


def test_complex128_stored_as_complex64_narrows_each_part():
    assert narrowing_range(np.dtype("complex128"), np.dtype("complex64")) == (
        float(np.finfo(np.float32).min),
        float(np.finfo(np.float32).max),
    )
    assert narrowing_range(np.dtype("float64"), np.dtype("complex64")) == narrowing_range(
        np.dtype("float64"), np.dtype("float32")
    )


def test_fields_a_dot_b_and_a_slash_b_get_axes_of_their_own(tmp_path):
    """Both were given the default axis 'a.b_0' ('/' is written '.'), and to_xarray raised
    xarray's 'conflicting sizes for dimension'."""
    store = tmp_path / "run.zarr"
    example = {"a.b": jnp.zeros(2, jnp.float32), "a": {"b": jnp.zeros(3, jnp.float32)}}
    sink = js.ZarrSink.create(store, example, chunk=2)
    for i in range(2):
        sink = sink.write(
            {"a.b": jnp.full(2, i + 0.5, jnp.float32), "a": {"b": jnp.full(3, -i, jnp.float32)}},
            step=i,
        )
    js.close(sink)
    ds = js.open(store).to_xarray()
    assert ds["a.b"].dims == ("frame", "a.b_0") and ds["a/b"].dims == ("frame", "a/b_0")
    assert ds["a.b"].values.tolist() == [[0.5, 0.5], [1.5, 1.5]]
    assert ds["a/b"].values.tolist() == [[0, 0, 0], [-1, -1, -1]]
    alone = layout({"a": {"b": jnp.zeros(3)}}, chunk=2, codec=None)  # the default is kept
    assert alone.fields[0].dims == ("frame", "a.b_0")


def test_an_axis_named_alike_in_two_fields_must_have_one_size():
    with pytest.raises(js.ConfigError) as refused:
        layout(
            {"p": jnp.zeros((4, 3)), "q": jnp.zeros(5)},
            chunk=2,
            codec=None,
            field_config={
                "p": js.FieldConfig(dims=("atom", "xyz")),
                "q": js.FieldConfig(dims=("atom",)),
            },
        )
    message = str(refused.value)
    assert "Axis 'atom' has size 4 in field 'p' but 5 in field 'q'" in message
    assert "FieldConfig(dims=...)" in message
