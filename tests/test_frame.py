import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import x32_only

import jaxsinks as js
from jaxsinks._core.frame import check_node_name, node_names


def test_spec_from_arrays_and_shape_dtype_structs_agree():
    frame = {
        "x": jnp.zeros((4, 3), jnp.float32),
        "e": jnp.zeros((), jnp.float32),
        "n": np.zeros(2, np.int32),
    }
    sds = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), frame)
    a, b = js.FrameSpec.from_example(frame), js.FrameSpec.from_example(sds)
    assert a == b and hash(a) == hash(b)
    assert a.names == ("e", "n", "x")
    assert [f.shape for f in a.fields] == [(), (2,), (4, 3)]
    assert a.nbytes == 4 + 8 + 48


def test_nested_paths_and_bare_arrays_are_named():
    spec = js.FrameSpec.from_example({"a": {"b": jnp.zeros(2)}, "c": [jnp.zeros(1), jnp.zeros(1)]})
    assert spec.names == ("a/b", "c/0", "c/1")
    assert js.FrameSpec.from_example(jnp.zeros(3)).names == ("data",)


@x32_only
def test_python_scalars_take_jax_default_dtypes():
    spec = js.FrameSpec.from_example({"f": 1.0, "i": 2, "b": True})
    assert {f.name: f.dtype for f in spec.fields} == {
        "b": np.dtype(bool),
        "f": np.dtype(np.float32),
        "i": np.dtype(np.int32),
    }


def test_empty_and_non_array_examples_are_rejected():
    with pytest.raises(js.ConfigError, match="no arrays"):
        js.FrameSpec.from_example({})
    with pytest.raises(js.ConfigError, match="leaf 'x' is a str"):
        js.FrameSpec.from_example({"x": "hello"})


def test_check_lists_every_mismatch_with_field_names():
    spec = js.FrameSpec.from_example(
        {"x": jnp.zeros((4, 3), jnp.float32), "e": jnp.zeros((), jnp.float32)}
    )
    with pytest.raises(js.FrameError) as err:
        spec.check({"x": jnp.zeros((4, 2), jnp.float32), "e": jnp.zeros((), jnp.int32)})
    msg = str(err.value)
    assert "field 'x' has shape (4, 2), expected (4, 3)" in msg
    assert "field 'e' has dtype int32, expected float32" in msg


def test_check_names_missing_and_unexpected_fields():
    spec = js.FrameSpec.from_example({"x": jnp.zeros(3), "e": jnp.zeros(())})
    with pytest.raises(js.FrameError, match=r"missing fields \['e'\]; unexpected fields \['y'\]"):
        spec.check({"x": jnp.zeros(3), "y": jnp.zeros(())})
    with pytest.raises(js.FrameError, match="structure"):
        spec.check((jnp.zeros(3), jnp.zeros(())))


def test_check_happens_at_trace_time_under_jit():
    spec = js.FrameSpec.from_example({"x": jnp.zeros(3)})
    with pytest.raises(js.FrameError, match="field 'x' has shape"):
        jax.jit(lambda x: spec.check({"x": x}))(jnp.zeros(5))


def test_unbatched_needs_a_shared_leading_axis():
    rows, size = js.FrameSpec.from_example({"x": jnp.zeros((8, 3)), "e": jnp.zeros(8)}).unbatched()
    assert size == 8 and [f.shape for f in rows.fields] == [(), (3,)]
    with pytest.raises(js.ConfigError, match="same leading"):
        js.FrameSpec.from_example({"x": jnp.zeros((8, 3)), "e": jnp.zeros(7)}).unbatched()
    with pytest.raises(js.ConfigError, match="same leading"):
        js.FrameSpec.from_example({"x": jnp.zeros((8, 3)), "e": jnp.zeros(())}).unbatched()


@pytest.mark.parametrize("name", ["../x", "a/..", ".", "__x", "a b", "x/", "", "é"])
def test_unsafe_node_names_are_rejected(name):
    with pytest.raises(js.ConfigError, match="cannot be used as a store node name"):
        check_node_name(name)


def test_safe_and_reserved_node_names():
    check_node_name("positions/0.a-b_c")
    # a first part named like a column is stored with '_' appended; deeper parts are not
    assert node_names(("step", "time/x", "a/time", "p"), reserved=("step", "time")) == (
        "step_",
        "time_/x",
        "a/time",
        "p",
    )


def test_joined_paths_must_be_unique():
    with pytest.raises(js.ConfigError, match="several leaves named"):
        js.FrameSpec.from_example({"a/b": jnp.zeros(1), "a": {"b": jnp.zeros(1)}})


@pytest.mark.parametrize(
    "names, both",
    [
        (("a", "a/b"), ("'a'", "'a/b'")),
        (("x/y/z", "x/y"), ("'x/y'", "'x/y/z'")),
        (("step/v", "step_"), ("'step/v'", "'step_'", "stored as 'step_/v'")),
        (("p", "time", "time_"), ("'time'", "'time_'", "both would be stored as 'time_'")),
    ],
)
def test_names_whose_nodes_collide_are_refused_naming_both(names, both):
    with pytest.raises(js.ConfigError) as info:
        node_names(names, reserved=("step", "time", "system"))
    for name in both:
        assert name in str(info.value)


def test_names_that_only_share_a_prefix_or_nest_columns_deeper_are_fine():
    node_names(
        ("a", "ab/c", "a_b", "x/step", "x/time/y", "stepper", "step", "time/z"),
        reserved=("step", "time", "system"),
    )


@pytest.mark.parametrize("name", ["x" * 201, "a/" + "y" * 300, "zarr.json.__lock", "a/b.__lock"])
def test_names_too_long_for_a_file_system_or_like_lock_files_are_refused(name):
    with pytest.raises(js.ConfigError, match="cannot be used as a store node name") as info:
        check_node_name(name)
    assert len(str(info.value)) < 600
