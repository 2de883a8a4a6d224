"""Systems of different sizes in one padded batch, stored CSR-style and read at true length."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorstore as ts
import zarr

import jaxsinks as js

NATOMS = np.array([2, 5, 3], np.int32)
A = 5


def padded(step):
    pos = np.arange(3 * A * 3, dtype=np.float32).reshape(3, A, 3) + 100 * step
    return {
        "positions": jnp.asarray(pos),
        "natoms": jnp.asarray(NATOMS),
        "energy": jnp.arange(3, dtype=jnp.float32) + step,
    }


def true_atoms(step, system):
    return padded(step)["positions"][system, : NATOMS[system]]


RAGGED = js.Ragged(count="natoms", fields=("positions",))


@jax.jit
def run_steps(sink, steps):
    def body(sink, step):
        f = padded(0)
        f["positions"] = f["positions"] + 100 * step.astype(jnp.float32)
        f["energy"] = f["energy"] + step.astype(jnp.float32)
        return js.record(sink, step=step, frame=f), None

    return jax.lax.scan(body, sink, steps)[0]


def test_whole_frame_batches_are_read_back_per_system_at_true_length(tmp_path):
    store = tmp_path / "run.zarr"
    js.close(run_steps(js.ZarrSink.create(store, padded(0), chunk=3, ragged=RAGGED), jnp.arange(7)))
    run = js.open(store)
    view = run["positions"]
    assert len(run) == 7 and run.meta["committed_atoms"] == 7 * NATOMS.sum()
    for step in (0, 3, 6):
        systems = view[step]
        assert [s.shape for s in systems] == [(2, 3), (5, 3), (3, 3)]
        for b in range(3):
            np.testing.assert_array_equal(systems[b], true_atoms(step, b))
    assert len(view[2:4]) == 2 and view.counts.tolist() == [NATOMS.tolist()] * 7
    np.testing.assert_array_equal(run["energy"][4], np.arange(3.0) + 4)
    # stored CSR-style: concatenated atoms, no padding
    group = zarr.open_group(store, mode="r")
    assert group["positions"].shape == (7 * NATOMS.sum(), 3)
    assert group["positions"].metadata.dimension_names == ("atom", "positions_0")
    with pytest.raises(TypeError, match="is ragged"):
        np.asarray(view)


@pytest.mark.parametrize("per_system", [False, True])
def test_a_ragged_run_with_no_frames_reads_as_empty(tmp_path, per_system):
    """Its count column has no rows: reading it gave numpy's raw reshape ValueError."""
    store = tmp_path / "run.zarr"
    js.close(js.ZarrSink.create(store, padded(0), chunk=3, ragged=RAGGED, per_system=per_system))
    run = js.open(store)
    view = run["positions"]
    assert len(run) == 0 and len(view) == 0 and view[:] == []
    assert view.concatenated().shape == (0, 3) and view.atoms_per_frame().tolist() == []
    assert list(run.iter_frames()) == [] and run.to_xarray().sizes["frame"] == 0


def test_a_ragged_view_refuses_a_2d_frame_index_naming_it(tmp_path):
    store = tmp_path / "run.zarr"
    js.close(run_steps(js.ZarrSink.create(store, padded(0), chunk=3, ragged=RAGGED), jnp.arange(4)))
    view = js.open(store)["positions"]
    with pytest.raises(js.ReadIndexError, match=r"(?s)1-D list of frames.*shape \(2, 2\)"):
        view[np.array([[0, 1], [2, 0]])]
    assert [len(frame) for frame in view[np.array([3, 0])]] == [3, 3]  # 1-D still works


def test_a_frame_slice_step_beyond_int64_is_numpys_answer(tmp_path):
    store = tmp_path / "run.zarr"
    js.close(run_steps(js.ZarrSink.create(store, padded(0), chunk=3, ragged=RAGGED), jnp.arange(4)))
    run = js.open(store)
    energy = run["energy"][:]
    for step in (2**63, 2**64, -(2**63) - 1):
        np.testing.assert_array_equal(run["energy"][::step], energy[::step])
        np.testing.assert_array_equal(run["energy"][::step, 1], energy[::step, 1])
    assert run["positions"][:: 2**63][0][1].shape == (5, 3)


def test_masked_converged_snapshots_of_ragged_systems(tmp_path):
    store = tmp_path / "conv.zarr"
    example = {"positions": jnp.zeros((3, A, 3), jnp.float32), "natoms": jnp.asarray(NATOMS)}
    sink = js.ZarrSink.create(store, example, chunk=3, per_system=True, once=True, ragged=RAGGED)
    converged = [[False, True, False], [False, True, True], [True, True, True]]
    for step, mask in enumerate(converged):
        f = padded(step)
        sink = sink.write(
            {"positions": f["positions"], "natoms": f["natoms"]}, step=step, mask=jnp.array(mask)
        )
    js.close(sink)
    run = js.open(store)
    assert list(zip(run.steps.tolist(), run.systems.tolist())) == [(0, 1), (1, 2), (2, 0)]
    for i, (step, system) in enumerate([(0, 1), (1, 2), (2, 0)]):
        np.testing.assert_array_equal(run["positions"][i], true_atoms(step, system))
    assert run["natoms"][:].tolist() == [5, 3, 2]


def test_append_resumes_the_atom_count_and_xarray_and_describe_see_atoms(tmp_path):
    store = tmp_path / "run.zarr"
    js.close(run_steps(js.ZarrSink.create(store, padded(0), chunk=2, ragged=RAGGED), jnp.arange(3)))
    js.close(
        run_steps(
            js.ZarrSink.create(store, padded(0), chunk=2, ragged=RAGGED, mode="a"), jnp.arange(3, 5)
        )
    )
    run = js.open(store)
    assert run.steps.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(run["positions"][4][1], true_atoms(4, 1))
    ds = run.to_xarray()
    assert ds["positions"].dims == ("atom", "positions_0") and ds.sizes["atom"] == 5 * NATOMS.sum()
    assert np.bincount(ds["atom_frame"].values).tolist() == [NATOMS.sum()] * 5
    info = {f["name"]: f for f in run.describe()["fields"]}
    assert info["positions"]["logical_bytes"] == 5 * NATOMS.sum() * 3 * 4
    # a selection's, as for other fields (it was the whole run's)
    for selection, frames in ((run[:0], 0), (run[1:3], 2), (run[[4, 4, 0]], 3)):
        info = {f["name"]: f for f in selection.describe()["fields"]}
        assert info["positions"]["logical_bytes"] == frames * NATOMS.sum() * 3 * 4


def test_appending_never_rereads_what_is_stored(tmp_path):
    """Bytes read per append stay flat as the run grows (the seeds' writer reread its pointers)."""
    store = tmp_path / "run.zarr"
    sink = js.ZarrSink.create(store, padded(0), chunk=2, codec=None, ragged=RAGGED)
    js.close(run_steps(sink, jnp.arange(2)))
    deltas = []
    for k in range(1, 16):
        before = _bytes_read()
        sink = js.ZarrSink.create(store, padded(0), chunk=2, codec=None, ragged=RAGGED, mode="a")
        js.close(run_steps(sink, jnp.arange(2 * k, 2 * k + 2)))
        deltas.append(_bytes_read() - before)
    assert len(js.open(store)) == 32
    assert max(deltas[-5:]) <= max(deltas[:5]), deltas  # 16x more stored, no more read


def _bytes_read() -> int:
    metrics = ts.experimental_collect_matching_metrics("/tensorstore/kvstore/file/bytes_read")
    return sum(v["value"] for m in metrics for v in m["values"])


@pytest.mark.parametrize(
    "ragged, match",
    [
        (
            js.Ragged(count="nope", fields=("positions",)),
            "count field 'nope', which the frame does not have",
        ),
        (js.Ragged(count="energy", fields=("positions",)), "must hold integers"),
        (js.Ragged(count="natoms", fields=("energy",)), r"must be \[3\] \+ \[max_atoms, ...\]"),
        (
            js.Ragged(count="natoms", fields=("ghost",)),
            "field 'ghost', which the frame does not have",
        ),
    ],
)
def test_bad_ragged_configurations_are_named(ragged, match):
    with pytest.raises(js.ConfigError, match=match):
        js.ZarrSink.create("memory://ragged-bad", padded(0), ragged=ragged)


@pytest.mark.parametrize("dims", [("atom",), ("frame",)])
def test_a_ragged_fields_dims_may_not_name_its_atom_axis(dims):
    """('atom',) passed create's checks and failed in TensorStore (a StoreError quoting its
    FAILED_PRECONDITION) on the duplicate axis name."""
    with pytest.raises(js.ConfigError) as info:
        js.ZarrSink.create(
            "memory://ragged-dims",
            padded(0),
            ragged=RAGGED,
            field_config={"positions": js.FieldConfig(dims=dims)},
        )
    assert "`dims` of field 'positions' must name each of its 1 axes once (not 'atom' or " in str(
        info.value
    )
    with pytest.raises(js.StoreNotFoundError):
        js.open("memory://ragged-dims")  # nothing was created


def test_ragged_config_validates_itself():
    with pytest.raises(js.ConfigError, match="cannot make its count field"):
        js.Ragged(count="n", fields=("n",))
    with pytest.raises(js.ConfigError, match="name at least one field"):
        js.Ragged(count="n", fields=())
    assert js.Ragged(count="n", fields="x").fields == ("x",)
    with pytest.raises(js.ConfigError, match="cannot combine a ring"):
        js.ZarrSink.create(
            "memory://ragged-ring", padded(0), chunk=2, capacity=4, overflow="ring", ragged=RAGGED
        )


SMALL = js.Ragged(count="n", fields=("pos",))


def small_frame(step, counts):
    """Two systems padded to 3 atoms of 2 values; the atoms numbered, plus 100 per step."""
    pos = np.arange(12, dtype=np.float32).reshape(2, 3, 2) + 100 * step
    return {"pos": jnp.asarray(pos), "n": jnp.asarray(counts, jnp.int32)}


@pytest.mark.parametrize("bad", [5, -1])
def test_a_ragged_count_outside_the_padding_fails_its_block_and_keeps_earlier_frames(tmp_path, bad):
    """A count above the padded size was stored as that many atoms, taking the next system's,
    and every later frame read misaligned; a negative count made close raise TensorStore's raw
    error with nothing committed, the valid frames before it too."""
    store = tmp_path / "run.zarr"
    counts = [[2, 1], [1, 2], [bad, 2], [1, 1], [2, 2]]
    sink = js.ZarrSink.create(store, small_frame(0, [3, 3]), chunk=2, ragged=SMALL)
    for step, c in enumerate(counts):
        sink = sink.write(small_frame(step, c), step=10 + step)
    with pytest.raises(js.OutOfRangeError) as caught:
        js.close(sink)
    message = str(caught.value)
    assert f"count field 'n' says system 0 of frame 2 (step 12) has {bad} atoms" in message
    assert "'pos' is padded to 3 atoms: a count must be between 0 and 3" in message
    assert "Frames 2 to 3 were not stored" in message and "pad the ragged fields" in message
    assert "2 frames of" in message and caught.value.committed == 2
    run = js.open(store)
    assert len(run) == 2 and run.steps.tolist() == [10, 11] and run["n"][:].tolist() == counts[:2]
    assert run.meta["committed_atoms"] == 6 and run["pos"].concatenated().shape == (6, 2)
    for i in range(2):
        for system, got in enumerate(run["pos"][i]):
            want = small_frame(i, [3, 3])["pos"][system, : counts[i][system]]
            np.testing.assert_array_equal(got, want)


def test_a_per_system_ragged_count_beyond_the_padding_in_the_tail_names_its_system(tmp_path):
    """The tail flushed at close is checked too; a per-system row names its system."""
    store = tmp_path / "run.zarr"
    sink = js.ZarrSink.create(store, small_frame(0, [3, 3]), chunk=2, per_system=True, ragged=SMALL)
    sink = sink.write(small_frame(0, [2, 1]), step=0)
    sink = sink.write(small_frame(1, [1, 4]), step=1, mask=jnp.array([False, True]))
    with pytest.raises(
        js.OutOfRangeError, match=r"says system 1 of frame 2 \(step 1\) has 4 atoms"
    ):
        js.close(sink)
    run = js.open(store)
    assert len(run) == 2 and run.systems.tolist() == [0, 1] and run["n"][:].tolist() == [2, 1]
    np.testing.assert_array_equal(run["pos"][1], small_frame(0, [3, 3])["pos"][1, :1])


def test_narrowing_a_ragged_field_checks_only_its_real_atoms(tmp_path):
    """The padding is never stored: a sentinel there beyond float16 refused every block."""
    store = tmp_path / "run.zarr"
    config = {"pos": js.FieldConfig(dtype="float16")}
    sink = js.ZarrSink.create(
        store, small_frame(0, [3, 3]), chunk=2, ragged=SMALL, field_config=config
    )
    for step in range(3):  # a block flushed on the device, and a tail flushed at close
        pos = np.full((2, 3, 2), 1e9, np.float32)
        pos[0, :2], pos[1, :1] = step, -step
        sink = sink.write({"pos": jnp.asarray(pos), "n": jnp.array([2, 1], jnp.int32)}, step=step)
    js.close(sink)
    run = js.open(store)
    assert len(run) == 3 and run["pos"].concatenated().dtype == np.float16
    for step in range(3):
        first, second = run["pos"][step]
        np.testing.assert_array_equal(first, np.full((2, 2), step, np.float16))
        np.testing.assert_array_equal(second, np.full((1, 2), -step, np.float16))
    # a real atom beyond float16 is still refused, with the frames before its block kept
    other = tmp_path / "other.zarr"
    sink = js.ZarrSink.create(
        other, small_frame(0, [3, 3]), chunk=2, ragged=SMALL, field_config=config
    )
    for step in range(3):
        pos = np.zeros((2, 3, 2), np.float32)
        pos[1, 0] = 1e6 if step == 2 else 1.0
        sink = sink.write({"pos": jnp.asarray(pos), "n": jnp.array([2, 1], jnp.int32)}, step=step)
    with pytest.raises(js.OutOfRangeError, match="'pos' \\(float16\\) cannot hold"):
        js.close(sink)
    assert len(js.open(other)) == 2
