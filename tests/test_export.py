"""export_training: frames (or each frame's points) shuffled once; a chunk is a uniform random
subset."""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from run_helpers import write_per_system_run
from zarr_helpers import EXAMPLE, expected, memory_store, run_steps, steps

import jaxsinks as js
from jaxsinks._io import location as _location
from jaxsinks._io import tsio as _tsio
from jaxsinks.training import _export

POINTS = 64


def campaign_with(lengths: dict[str, int], root=None) -> js.Campaign:
    campaign = js.Campaign.create(memory_store() if root is None else root)
    for i, (run_id, n) in enumerate(lengths.items()):
        sink = campaign.create_run(run_id, EXAMPLE, params={"i": i}, chunk=64)
        js.close(run_steps(sink, steps(0, n)))
    return campaign


def cloud_at(step, points=POINTS):
    """Point p of frame `step`: pos = (step, p, -p), q = p; any shuffle shared by both keeps q ==
    pos[:, 1]."""
    p = jnp.arange(points, dtype=jnp.float32)
    s = jnp.full((points,), step.astype(jnp.float32))
    return {"pos": jnp.stack([s, p, -p], axis=1), "q": p}


@functools.partial(jax.jit, static_argnums=2)
def record_clouds(sink, steps, points=POINTS):
    def body(sink, step):
        return js.record(
            sink, step=step, time=step.astype(jnp.float32), frame=lambda: cloud_at(step, points)
        ), None

    return jax.lax.scan(body, sink, steps)[0]


def cloud_runs(frames: dict[str, int], points: dict[str, int] | None = None) -> dict[str, js.Run]:
    runs = {}
    for run_id, n in frames.items():
        store = memory_store()
        k = (points or {}).get(run_id, POINTS)
        example = {"pos": jnp.zeros((k, 3), jnp.float32), "q": jnp.zeros(k, jnp.float32)}
        js.close(record_clouds(js.ZarrSink.create(store, example, chunk=8), steps(0, n), k))
        runs[run_id] = js.open(store)
    return runs


def files(root: pathlib.Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def ks_uniform(values: np.ndarray, n: int) -> float:
    """The Kolmogorov-Smirnov distance between `values` (distinct ints in [0, n)) and uniform on [0,
    n)."""
    x = np.sort(values) + 1
    k = np.arange(1, len(x) + 1)
    return float(max(np.max(k / len(x) - x / n), np.max(x / n - (k - 1) / len(x))))


# --------------------------------------------------------------------------- frames


def test_frames_export_holds_every_frame_once_in_chunks_of_the_sample_size():
    campaign = campaign_with({"a": 30, "b": 20})
    export = js.export_training(campaign, memory_store(), sample_size=8, seed=3)
    assert (export.by, len(export), export.fields, export.sample_ids) == (
        "frames",
        50,
        ("e", "x"),
        ("a", "b"),
    )
    assert export.chunk_size() == 8
    assert [s["params"] for s in export.manifest["samples"]] == [{"i": 0}, {"i": 1}]
    rows = [export._read(f"frames/{name}", (slice(None),)) for name in ("run", "frame", "x")]
    origin, frame, x = rows
    assert sorted(zip(origin.tolist(), frame.tolist())) == [(0, f) for f in range(30)] + [
        (1, f) for f in range(20)
    ]
    np.testing.assert_array_equal(x, expected(frame)["x"])  # each frame's values travel with it
    perm = _export.shuffle_permutation(3, "frames", 50)
    np.testing.assert_array_equal(np.r_[np.arange(30), np.arange(20)][perm], frame)
    assert not np.all(np.diff(frame[origin == 0]) > 0)  # shuffled, not in order


def test_the_same_seed_gives_the_same_bytes(tmp_path):
    campaign = campaign_with({"a": 40, "b": 24})
    one = js.export_training(campaign, tmp_path / "one", sample_size=16, seed=7, dtype="float16")
    two = js.export_training(campaign, tmp_path / "two", sample_size=16, seed=7, dtype="float16")
    other = js.export_training(
        campaign, tmp_path / "other", sample_size=16, seed=8, dtype="float16"
    )
    a, b, c = files(tmp_path / "one"), files(tmp_path / "two"), files(tmp_path / "other")
    chunks = [k for k in a if "/c/" in k]
    assert len(chunks) == 6 * 4  # e, x, run, frame, step, time: 64 frames in 4 chunks of 16
    assert a == b
    assert set(a) == set(c) and any(a[k] != c[k] for k in chunks)
    assert one.manifest == two.manifest and other.manifest["seed"] == 8


def test_every_chunk_is_a_uniform_random_subset():
    """KS distance between the original indices in each chunk and uniform: under alpha = 0.01 for
    a uniform random subset of 200 of 2000 (critical value 1.628 / sqrt(200) = 0.115); the
    unshuffled order would give 0.9."""
    campaign = campaign_with({"a": 1200, "b": 800})
    export = js.export_training(campaign, memory_store(), fields=["e"], sample_size=200, seed=0)
    origin = export._read("frames/run", (slice(None),))
    frame = export._read("frames/frame", (slice(None),))
    index = np.where(origin == 0, frame, 1200 + frame)
    critical = 1.628 / np.sqrt(200)
    distances = [ks_uniform(index[c : c + 200], 2000) for c in range(0, 2000, 200)]
    assert max(distances) < critical, distances
    assert ks_uniform(np.arange(200), 2000) > 0.85  # the test can fail: an unshuffled chunk


def test_the_per_sample_permutation_spreads_every_item_evenly_over_chunks():
    """Chi-square over 1000 seeds of how often each of 100 items lands in the first chunk of 10
    (expected 100 each); 148.2 is the 0.999 quantile of chi-square with 99 degrees of freedom."""
    counts = np.zeros(100)
    for seed in range(1000):
        counts[_export.shuffle_permutation(seed, "run-7/3", 100)[:10]] += 1
    chi2 = float(np.sum((counts - 100.0) ** 2 / 100.0))
    assert chi2 < 148.2, chi2
    first = _export.shuffle_permutation(0, "run-7/3", 100)
    np.testing.assert_array_equal(first, _export.shuffle_permutation(0, "run-7/3", 100))
    assert not np.array_equal(first, _export.shuffle_permutation(0, "run-7/4", 100))
    assert not np.array_equal(first, _export.shuffle_permutation(1, "run-7/3", 100))


def test_a_sample_reads_one_chunk_and_reports_its_read_amplification(tmp_path):
    campaign = campaign_with({"a": 50})
    export = js.export_training(campaign, tmp_path / "x", sample_size=16, seed=1)
    sample = export.sample(16, rng=np.random.default_rng(5))
    assert (
        sample.sample_id is None and 0 <= sample.chunk < 3
    )  # the last chunk (2 frames) is too short
    assert set(sample.data) == {"e", "x", "run", "frame", "step", "time"}
    assert (
        sample.data["run"].tolist() == ["a"] * 16 and len(set(sample.data["frame"].tolist())) == 16
    )
    np.testing.assert_array_equal(sample.data["x"], expected(sample.data["frame"])["x"])
    arrays = [p for p in (tmp_path / "x" / "frames").iterdir() if p.is_dir()]
    chunk_files = [
        f
        for a in arrays
        for f in (a / "c").rglob("*")
        if f.is_file() and f.relative_to(a / "c").parts[0] == str(sample.chunk)
    ]
    # One run: its `run` column is all 0, the fill value, and its chunk is stored all the same.
    assert sorted(f.relative_to(tmp_path / "x" / "frames").parts[0] for f in chunk_files) == [
        "e",
        "frame",
        "run",
        "step",
        "time",
        "x",
    ]
    assert sample.bytes_read == sum(p.stat().st_size for p in chunk_files)
    assert sample.bytes_needed == 16 * (4 + 12 + 4 + 4 + 4 + 4)  # e, x, run, frame, step, time
    assert sample.amplification == sample.bytes_read / sample.bytes_needed
    half = export.sample(8, rng=5)
    assert half.bytes_read == export.sample(8, rng=5).bytes_read and half.bytes_needed == 8 * 32
    with pytest.raises(
        js.ConfigError, match=r"`n` = 17 is more than a chunk of this export \(16 frames\)"
    ):
        export.sample(17)


# --------------------------------------------------------------------------- points


def test_points_export_shuffles_each_frame_by_its_own_permutation_shared_by_fields():
    runs = cloud_runs({"c0": 5, "c1": 3})
    export = js.export_training(runs, memory_store(), by="points", sample_size=16, seed=2)
    assert export.by == "points" and export.fields == ("pos", "q") and export.chunk_size("c1") == 16
    pos = export._read("samples/c1/pos", (slice(None),))
    q = export._read("samples/c1/q", (slice(None),))
    assert pos.shape == (3, POINTS, 3) and q.shape == (3, POINTS)
    for f in range(3):
        perm = _export.shuffle_permutation(2, f"c1/{f}", POINTS)
        np.testing.assert_array_equal(q[f], perm.astype(np.float32))
        np.testing.assert_array_equal(
            pos[f], np.stack([np.full(POINTS, f), perm, -perm], 1).astype(np.float32)
        )
    assert not np.array_equal(q[0], q[1])

    sample = export.sample(16, rng=0)
    assert sample.sample_id in ("c0", "c1") and 0 <= sample.frame < 5 and 0 <= sample.chunk < 4
    got_q, got_pos = sample.data["q"], sample.data["pos"]
    assert got_q.shape == (16,) and len(set(got_q.tolist())) == 16
    np.testing.assert_array_equal(got_pos[:, 1], got_q)
    np.testing.assert_array_equal(got_pos[:, 0], np.full(16, sample.frame, np.float32))
    assert sample.bytes_needed == 16 * (12 + 4) and sample.bytes_read > 0
    for sample_id in ("nope", None):  # a raw KeyError once
        with pytest.raises(
            js.ConfigError,
            match=rf"`sample_id` is {sample_id!r}, but the export at .* has no such run; its "
            r"runs are \['c0', 'c1'\]\. Pass one of those \(each run of a points export",
        ):
            export.chunk_size(sample_id)


def test_points_export_needs_fields_with_one_point_axis():
    campaign = campaign_with({"a": 4})
    with pytest.raises(js.ConfigError, match="by='points' needs fields with a point axis; 'e'"):
        js.export_training(campaign, memory_store(), by="points", fields=["e", "x"])


# ------------------------------------------------------------------------- float16


def test_float16_export_stores_values_in_range_and_rejects_overflow(tmp_path):
    campaign = campaign_with({"a": 20})
    export = js.export_training(campaign, memory_store(), sample_size=8, dtype="float16")
    assert export.manifest["fields"]["x"] == {
        "shape": [3],
        "dtype": "float16",
        "source_dtype": "float32",
        "node": "x",
    }
    frame = export._read("frames/frame", (slice(None),))
    x = export._read("frames/x", (slice(None),))
    assert x.dtype == np.float16
    np.testing.assert_array_equal(x, expected(frame)["x"].astype(np.float16))

    hot = js.Campaign.create(memory_store())
    sink = hot.create_run("hot", EXAMPLE, chunk=4)
    sink = run_steps(sink, steps(0, 6))
    sink = js.record(
        sink,
        step=jnp.int32(6),
        time=jnp.float32(0),
        frame={"x": jnp.full(3, 1e5, jnp.float32), "e": jnp.float32(0)},
    )
    js.close(sink)
    dest = tmp_path / "hot"
    with pytest.raises(
        js.OutOfRangeError,
        match=r"Field 'x' has a value that float16 does not hold at frame 6 of run 'hot': 100000 "
        r"\(float16 holds finite magnitudes up to 65504\)\. The export stopped",
    ):
        js.export_training(hot, dest, dtype="float16")
    assert not dest.exists() or not any(
        p.is_file() for p in dest.rglob("*")
    )  # the partial export is gone
    kept = js.export_training(hot, dest, dtype={"e": "float16"})  # x stays float32
    assert (
        kept.manifest["fields"]["x"]["dtype"] == "float32"
        and kept.manifest["fields"]["e"]["dtype"] == "float16"
    )


def test_exported_arrays_are_described_like_a_runs_arrays(tmp_path):
    """One zarr metadata builder: an exported field has a run's codec chain and fill value (NaN
    for every float type, bfloat16 included); its integer columns fill with 0 (a run's, -1)."""
    run_store = tmp_path / "run.zarr"
    sink = js.ZarrSink.create(
        run_store,
        EXAMPLE,
        chunk=4,
        codec=js.Zstd(3),
        field_config={"x": js.FieldConfig("bfloat16")},
    )
    js.close(run_steps(sink, steps(0, 8)))
    js.export_training(js.open(run_store), tmp_path / "d", dtype="bfloat16", codec=js.Zstd(3))

    def meta(path):
        return json.loads((path / "zarr.json").read_text())

    stored, exported = meta(run_store / "x"), meta(tmp_path / "d" / "frames" / "x")
    assert exported["data_type"] == stored["data_type"] == "bfloat16"
    assert exported["fill_value"] == stored["fill_value"] == "NaN"
    assert exported["codecs"] == stored["codecs"]
    assert exported["dimension_names"] == stored["dimension_names"]
    assert meta(tmp_path / "d" / "frames" / "run")["fill_value"] == 0
    assert meta(run_store / "step")["fill_value"] == -1


# ------------------------------------------------------------------------- bad input


def test_export_refuses_bad_arguments_and_existing_stores(tmp_path):
    campaign = campaign_with({"a": 4})
    dest = tmp_path / "d"
    js.export_training(campaign, dest, sample_size=2)
    with pytest.raises(
        js.StoreExistsError, match="is not empty: it holds a training export. Pass mode='w'"
    ):
        js.export_training(campaign, dest)
    assert js.export_training(campaign, dest, mode="w", sample_size=3).chunk_size() == 3
    for kwargs, match in [
        ({"by": "atoms"}, r"`by` must be one of \['frames', 'points'\]; got 'atoms'"),
        ({"sample_size": 0}, r"`sample_size` must be an int >= 1 \(a number of items\); got int 0"),
        ({"seed": -1}, "`seed` must be an int >= 0; got -1"),
        ({"dtype": {"nope": "float16"}}, r"`dtype` names fields that are not exported: \['nope'\]"),
        ({"mode": "a"}, "`mode` must be 'w-'"),
    ]:
        with pytest.raises(js.ConfigError, match=match):
            js.export_training(campaign, tmp_path / "other", **kwargs)
    with pytest.raises(js.ConfigError, match="selects no frames to export"):
        js.export_training(campaign.runs(status="failed"), tmp_path / "other")
    with pytest.raises(js.ConfigError, match="must hold RunEntry objects"):
        js.export_training([1, 2], tmp_path / "other")


def test_open_refuses_incomplete_and_newer_exports(tmp_path):
    campaign = campaign_with({"a": 4})
    dest = tmp_path / "d"
    js.export_training(campaign, dest, sample_size=2)
    doc = json.loads((dest / "zarr.json").read_text())
    doc["attributes"]["jaxsinks_export"]["schema_version"] = 5
    (dest / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(
        js.StoreError, match="export schema version 5; this jaxsinks reads versions up to 1"
    ):
        js.TrainingSet.open(dest)
    (dest / "zarr.json").unlink()
    with pytest.raises(js.StoreNotFoundError, match="There is no training export"):
        js.TrainingSet.open(dest)
    assert _tsio.list_keys(_location.parse(dest).kvstore)  # the arrays are still there, unlisted


# ----------------------------------------------------------------------- what dest may be


def test_mode_w_replaces_only_an_empty_dest_or_an_earlier_export(tmp_path):
    """mode='w' once emptied whatever `dest` was: a user's files, a run, a whole campaign."""
    campaign = campaign_with({"a": 4})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    other = campaign_with({"b": 4}, root=tmp_path / "other")
    run = tmp_path / "run.zarr"
    js.close(run_steps(js.ZarrSink.create(run, EXAMPLE, chunk=4), steps(0, 4)))
    before = files(tmp_path)
    for dest, held in [
        (mine, r"holds the file 'notes.txt', not a training export"),
        (tmp_path / "other", r"holds a campaign \(its manifest.json\), not a training export"),
        (run, "holds a jaxsinks run, not a training export"),
    ]:
        for mode, match in [("w", held), ("w-", "is not empty: it " + held.split(", not")[0])]:
            with pytest.raises(js.StoreExistsError, match=match):
                js.export_training(campaign, dest, mode=mode)
    assert files(tmp_path) == before  # nothing was deleted
    assert [e.run_id for e in other.runs()] == ["b"]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(js.export_training(campaign, empty, mode="w")) == 4
    export = tmp_path / "export"
    js.export_training(campaign, export, sample_size=2)
    (export / "zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"x": 1}})
    )
    with pytest.raises(
        js.StoreExistsError, match=r"holds \d+ files \('frames/"
    ):  # no longer an export
        js.export_training(campaign, export, mode="w")
    partial = json.loads((empty / "zarr.json").read_text())
    partial["attributes"] = {_export.PARTIAL_KEY: {"by": "frames"}}  # an export cut short
    (export / "zarr.json").write_text(json.dumps(partial))
    with pytest.raises(
        js.StoreExistsError, match="it holds an incomplete training export. Pass mode='w'"
    ):
        js.export_training(campaign, export)
    assert js.export_training(campaign, export, mode="w", sample_size=3).chunk_size() == 3
    (export / "mine.txt").write_text("keep me")
    with pytest.raises(
        js.StoreExistsError, match=r"holds a training export and, beside it, the file 'mine.txt'"
    ):
        js.export_training(campaign, export, mode="w")
    assert (export / "mine.txt").read_text() == "keep me"


def test_mode_w_keeps_a_users_files_kept_inside_an_earlier_export(tmp_path):
    """Files under an export's frames/ or samples/ folders that the export did not write (notes,
    a copied campaign) were deleted with it."""
    campaign = campaign_with({"a": 4})
    export = tmp_path / "export"
    js.export_training(campaign, export, sample_size=2)
    (export / "frames" / "NOTES.md").write_text("mine")
    (export / "samples" / "kept").mkdir(parents=True)
    (export / "samples" / "kept" / "manifest.json").write_text("{}")
    before = files(tmp_path)
    with pytest.raises(js.StoreExistsError, match=r"beside it, 2 files \('frames/NOTES.md'"):
        js.export_training(campaign, export, mode="w")
    assert files(tmp_path) == before


def test_out_of_range_rows_checks_both_parts_of_a_complex_value():
    """complex128 -> complex64 stored an imaginary part beyond float32 as inf, without a word."""
    values = np.zeros((3, 2), np.complex128)
    values[1, 0] = 1 + 1e300j
    values[2, 1] = -1e300 + 1j
    assert _export.out_of_range_rows(values, np.dtype(np.complex64)).tolist() == [
        False,
        True,
        True,
    ]
    fits = np.full((2, 2), 3e38 - 3e38j, np.complex128)
    assert not _export.out_of_range_rows(fits, np.dtype(np.complex64)).any()


def test_dest_may_not_overlap_what_the_source_reads(tmp_path):
    root = tmp_path / "campaign"
    campaign = campaign_with({"a": 4, "b": 4}, root=root)
    runs = {e.run_id: e.open() for e in campaign.runs()}
    run_dir = runs["a"].location.local_path
    before = files(tmp_path)
    for source, dest, how in [
        (campaign, root, "is"),  # replacing it would delete every run
        (campaign, root / "train.zarr", "is inside"),
        (campaign.runs(), root / "train.zarr", "is inside"),  # the entries' campaign: accepted once
        (campaign.runs(), run_dir / "train", "is inside"),
        (runs["a"], run_dir, "is"),
        ({"a": runs["a"]}, root, "holds"),
        (runs["b"], tmp_path, "holds"),
    ]:
        for mode in ("w-", "w"):
            with pytest.raises(js.ConfigError, match=f"`dest` .* {how} .*, which `source` reads"):
                js.export_training(source, dest, mode=mode)
    assert files(tmp_path) == before
    assert len(js.export_training(runs["a"], root / "train.zarr")) == 4  # not the campaign's


# -------------------------------------------------------------------------- sampling


def test_a_sample_smaller_than_a_chunk_is_a_uniform_subset_of_it():
    """sample(8) once returned the first 8 frames of a chunk: 32 distinct frames in 5000 draws of
    256. Chi-square over 600 draws of how often each of the 96 frames in full chunks is drawn
    (50 each): 143.3 is the 0.999 quantile with 95 degrees of freedom. The last chunk (4 frames)
    holds fewer than 8, so it is never drawn."""
    export = js.export_training(campaign_with({"a": 100}), memory_store(), sample_size=32)
    rng = np.random.default_rng(0)
    counts = np.zeros(100)
    for _ in range(600):
        sample = export.sample(8, rng=rng)
        assert len(set(sample.data["frame"].tolist())) == 8 and sample.chunk < 3
        np.testing.assert_array_equal(sample.data["x"], expected(sample.data["frame"])["x"])
        counts[sample.data["frame"]] += 1
    last = export._read("frames/frame", (slice(96, 100),))
    assert counts[last].sum() == 0
    drawn = np.delete(counts, last)
    assert drawn.min() > 0
    chi2 = float(np.sum((drawn - 50.0) ** 2 / 50.0))
    assert chi2 < 143.3, chi2

    points = js.export_training(cloud_runs({"c": 1}), memory_store(), by="points", sample_size=32)
    reached = set()
    for _ in range(200):
        sample = points.sample(4, rng=rng)
        np.testing.assert_array_equal(sample.data["pos"][:, 1], sample.data["q"])
        reached.update(sample.data["q"].astype(int).tolist())
    assert reached == set(range(POINTS))


def test_a_points_export_of_runs_with_unequal_point_counts_samples_each_that_can():
    """A run with fewer points than `n` once made sample(n) raise at random."""
    runs = cloud_runs({"big": 3, "small": 5}, points={"small": 8})
    export = js.export_training(runs, memory_store(), by="points", sample_size=16)
    assert (export.chunk_size("big"), export.chunk_size("small")) == (16, 8)
    drawn = {export.sample(16, rng=seed).sample_id for seed in range(40)}
    assert drawn == {"big"}  # the small run holds no chunk of 16 points
    drawn = {export.sample(8, rng=seed).sample_id for seed in range(40)}
    assert drawn == {"big", "small"}
    with pytest.raises(
        js.ConfigError, match=r"`n` = 17 is more than a chunk of this export \(16 points\)"
    ):
        export.sample(17)


def test_sample_refuses_bad_n_and_rng():
    export = js.export_training(campaign_with({"a": 8}), memory_store(), sample_size=4)
    for rng in ("a", 1.5, -1, True, [1, 2]):
        with pytest.raises(
            js.ConfigError,
            match=r"`rng` must be a numpy Generator .*, an int seed >= 0, or None .*; got ",
        ):
            export.sample(2, rng=rng)
    for n in (0, 2.0, True, "2"):
        with pytest.raises(
            js.ConfigError, match=r"`n` must be an int >= 1 \(a number of items\); got "
        ):
            export.sample(n)
    assert len(export.sample(2, rng=np.int64(3)).data["frame"]) == 2


# ------------------------------------------------------------------ dtypes and shapes


def test_export_refuses_dtypes_that_drop_information(tmp_path):
    campaign = campaign_with({"a": 4})
    dest = tmp_path / "d"
    for dtype, match in [
        ("bool", r"`dtype` is bool, but field 'e' is float32: .* silently drop information"),
        ("int8", r"`dtype` is int8, but field 'e' is float32: .* drop every fractional part"),
        ({"x": "int32"}, r"`dtype\['x'\]` is int32, but field 'x' is float32"),
        ({"x": "bool"}, r"`dtype\['x'\]` is bool, but field 'x' is float32"),
    ]:
        with pytest.raises(js.ConfigError, match=match):
            js.export_training(campaign, dest, dtype=dtype)
        assert not dest.exists()
    kept = js.export_training(campaign, dest, dtype={"x": "float16", "e": "float64"})
    assert [f["dtype"] for f in kept.manifest["fields"].values()] == ["float64", "float16"]


def test_fields_with_an_axis_of_length_zero_are_exported():
    """A zero-size field once failed in TensorStore (a chunk of 0 along an axis)."""
    store = memory_store()
    example = {"none": jnp.zeros((3, 0)), "empty": jnp.zeros(0), "x": jnp.zeros(2)}
    sink = js.ZarrSink.create(store, example, chunk=4)
    for i in range(6):
        sink = sink.write({**example, "x": jnp.full(2, float(i))}, step=i)
    js.close(sink)
    export = js.export_training(js.open(store), memory_store(), sample_size=4, dtype="float16")
    sample = export.sample(4, rng=0)
    assert sample.data["none"].shape == (4, 3, 0) and sample.data["empty"].shape == (4, 0)
    np.testing.assert_array_equal(sample.data["x"][:, 0], sample.data["frame"])

    store = memory_store()
    sink = js.ZarrSink.create(store, {"p": jnp.zeros((5, 0)), "q": jnp.zeros(5)}, chunk=4)
    for i in range(3):
        sink = sink.write({"p": jnp.zeros((5, 0)), "q": jnp.arange(5.0)}, step=i)
    js.close(sink)
    points = js.export_training(js.open(store), memory_store(), by="points", sample_size=4)
    sample = points.sample(3, rng=0)
    assert sample.data["p"].shape == (3, 0) and sample.data["q"].shape == (3,)


def test_a_frames_export_keeps_the_system_of_each_frame_of_a_per_system_run(tmp_path):
    per_system = js.open(write_per_system_run(tmp_path / "ps.zarr"))
    plain = campaign_with({"a": 4}).runs()[0].open()
    assert per_system.per_system and len(per_system) == 12
    export = js.export_training(
        {"ps": per_system, "plain": plain}, tmp_path / "d", fields=["e"], sample_size=16
    )
    sample = export.sample(16, rng=0)
    assert set(sample.data) == {"e", "run", "frame", "step", "time", "system"}
    assert export.manifest["columns"] == ["run", "frame", "step", "time", "system"]
    run, frame, system = (sample.data[k] for k in ("run", "frame", "system"))
    ps = run == "ps"
    np.testing.assert_array_equal(system[ps], per_system.systems[frame[ps]])
    np.testing.assert_array_equal(system[~ps], -1)
    np.testing.assert_array_equal(sample.data["e"][ps], per_system["e"][:][frame[ps]])
    assert sorted(set(system[ps].tolist())) == [0, 1, 2]
    column = tmp_path / "d" / "frames" / "system" / "zarr.json"
    assert json.loads(column.read_text())["data_type"] == "int32"


# ------------------------------------------------------- review: identity, values, input


def run_of(frames: list[dict], store=None) -> js.Run:
    """A run of `frames` (dicts of arrays), written one at a time; steps 0, 1, ..."""
    store = memory_store() if store is None else store
    sink = js.ZarrSink.create(store, frames[0], chunk=4)
    for i, frame in enumerate(frames):
        sink = sink.write(frame, step=i)
    js.close(sink)
    return js.open(store)


def test_an_open_training_set_refuses_to_sample_an_export_replaced_since(tmp_path):
    """A TrainingSet opened before a mode='w' re-export sampled the new frames under the old
    run labels: nothing told one export from the next."""
    dest = tmp_path / "d"
    old = js.export_training(campaign_with({"a": 8, "b": 8}), dest, sample_size=4, seed=1)
    other = campaign_with({"c": 16})
    js.export_training(campaign_with({"a": 8, "b": 8}), dest, sample_size=4, seed=1, mode="w")
    assert old.sample(4, rng=0).data["run"].tolist()  # the same export again: still the one
    js.export_training(other, dest, sample_size=4, seed=1, mode="w")
    for n in (4, 5):  # a sample that reads, and one that fails before reading
        with pytest.raises(
            js.StoreError,
            match=r"was replaced by another export since this TrainingSet opened it, .* "
            r"Open it again with jaxsinks\.TrainingSet\.open",
        ):
            old.sample(n, rng=0)
    new = js.TrainingSet.open(dest)
    assert set(new.sample(4, rng=0).data["run"].tolist()) == {"c"}
    assert new.manifest["export_id"] != old.manifest["export_id"]
    partial = {"zarr_format": 3, "node_type": "group", "attributes": {_export.PARTIAL_KEY: {}}}
    complete = (dest / "zarr.json").read_text()
    (dest / "zarr.json").write_text(json.dumps(partial))  # a re-export under way
    with pytest.raises(js.StoreError, match="no longer holds a complete export"):
        new.sample(4, rng=0)
    (dest / "zarr.json").write_text(complete)
    assert len(new.sample(4, rng=0).data["run"]) == 4
    (dest / "zarr.json").unlink()
    with pytest.raises(js.StoreError, match="was removed since this TrainingSet opened it"):
        new.sample(4, rng=0)


def test_the_export_id_is_a_hash_of_the_manifest_and_of_every_array():
    runs = cloud_runs({"c": 3})
    one = js.export_training(runs, memory_store(), by="points", sample_size=16, seed=0)
    two = js.export_training(runs, memory_store(), by="points", sample_size=16, seed=0)
    assert one.manifest["export_id"] == two.manifest["export_id"]
    # the same manifest (runs, frames, fields, seed), other values: another identity
    store = memory_store()
    frame = {"pos": jnp.ones((POINTS, 3), jnp.float32), "q": jnp.zeros(POINTS, jnp.float32)}
    sink = js.ZarrSink.create(store, frame)
    for i in range(3):
        sink = sink.write(frame, step=i)
    js.close(sink)
    changed = js.export_training(
        {"c": js.open(store)}, memory_store(), by="points", sample_size=16, seed=0
    )
    without = {k: v for k, v in changed.manifest.items() if k != "export_id"}
    assert without == {k: v for k, v in one.manifest.items() if k != "export_id"}
    assert changed.manifest["export_id"] != one.manifest["export_id"]


def test_a_sample_id_selected_twice_is_refused(tmp_path):
    """`ca.runs() + cb.runs()` with a run 'a' in each labelled both runs' frames 'a'."""
    ca, cb = campaign_with({"a": 4, "b": 4}), campaign_with({"a": 4})
    dest = tmp_path / "d"
    for source in (ca.runs() + cb.runs(), ca.runs() + [e for e in ca.runs() if e.run_id == "b"]):
        with pytest.raises(
            js.ConfigError,
            match=r"`source` names the sample ids \['\w'\] more than once \(it selects 3 runs, "
            r"of 2 distinct ids\).* Select each run once",
        ):
            js.export_training(source, dest)
        assert not dest.exists()


def test_an_integer_stored_as_a_float_must_be_held_exactly(tmp_path):
    """int32 2049 exported as float16 was stored as 2048 without a word."""
    ints = np.array([[2048], [2049], [4096], [-2049], [65504], [70000]], np.int32)
    assert _export.out_of_range_rows(ints, np.dtype(np.float16)).tolist() == [
        False,
        True,
        False,
        True,
        False,
        True,
    ]
    big = np.array([[2**24], [2**24 + 1], [2**62]], np.int64)
    assert _export.out_of_range_rows(big, np.dtype(np.float32)).tolist() == [False, True, False]
    assert _export.out_of_range_rows(
        np.array([[255], [256], [257]], np.int32), np.dtype("bfloat16")
    ).tolist() == [False, False, True]

    def counts(values):
        return run_of([{"n": jnp.int32(v), "x": jnp.float32(v)} for v in values])

    fits = js.export_training(counts(range(2040, 2049)), memory_store(), dtype={"n": "float16"})
    n = fits._read("frames/n", (slice(None),))
    frame = fits._read("frames/frame", (slice(None),))
    np.testing.assert_array_equal(n, (2040 + frame).astype(np.float16))
    dest = tmp_path / "d"
    with pytest.raises(
        js.OutOfRangeError,
        match=r"Field 'n' has a value that float16 does not hold at frame 2 of run 'run': 2049 "
        r"\(float16 holds finite magnitudes up to 65504, every integer only up to 2048\)\. .*"
        r"dtype=\{'n': 'int32'\}",
    ):
        js.export_training(counts([2047, 2048, 2049]), dest, dtype={"n": "float16"})
    assert not dest.exists() or not any(p.is_file() for p in dest.rglob("*"))


def test_a_failed_mode_w_export_keeps_the_earlier_export(tmp_path):
    """An OutOfRangeError found while writing came after mode='w' had deleted the export."""
    dest = tmp_path / "d"
    js.export_training(campaign_with({"a": 8}), dest, sample_size=4)
    before = files(dest)
    hot = {
        "hot": run_of([{"x": jnp.full(3, v, jnp.float32), "e": jnp.float32(0)} for v in (1, 1e5)])
    }
    clouds = cloud_runs({"c": 2})
    pos, q = jnp.full((POINTS, 3), 1e5, jnp.float32), jnp.zeros(POINTS, jnp.float32)
    clouds["hot"] = run_of([{"pos": pos, "q": q}])
    for source, by in [(hot, "frames"), (clouds, "points")]:
        with pytest.raises(js.OutOfRangeError, match=r"Field '\w+' has .*float16"):
            js.export_training(source, dest, by=by, dtype="float16", mode="w")
        assert files(dest) == before
        assert len(js.TrainingSet.open(dest).sample(4, rng=0).data["frame"]) == 4


def test_an_inf_is_refused_by_a_dtype_without_inf(tmp_path):
    """float8_e4m3fn has no inf: a float32 inf became NaN without a word."""
    values = np.array([[1.0], [np.inf], [np.nan], [460.0], [470.0], [-np.inf]], np.float32)
    e4m3 = np.dtype("float8_e4m3fn")
    assert _export.out_of_range_rows(values, e4m3).tolist() == [
        False,
        True,
        False,
        False,  # rounds to 448, its largest value
        True,
        True,
    ]
    assert not _export.out_of_range_rows(values, np.dtype(np.float16)).any()  # it has inf
    run = run_of([{"x": jnp.float32(v)} for v in (1.0, np.inf)])
    with pytest.raises(
        js.OutOfRangeError,
        match=r"Field 'x' has a value that float8_e4m3fn does not hold at frame 1 of run 'run': "
        r"inf \(float8_e4m3fn holds finite magnitudes up to 448, no inf\)",
    ):
        js.export_training(run, tmp_path / "d", dtype="float8_e4m3fn")
    kept = js.export_training(
        run_of([{"x": jnp.float32(v)} for v in (1.0, 448.0, np.nan)]),
        memory_store(),
        dtype="float8_e4m3fn",
    )
    assert kept.manifest["fields"]["x"]["dtype"] == "float8_e4m3fn"


def test_a_value_that_rounds_into_range_is_held():
    """65519 rounds to 65504, float16's largest value, but was refused as out of range."""
    values = np.array([[65504], [65519], [65520], [-65519], [np.inf], [1e300]], np.float64)
    assert _export.out_of_range_rows(values, np.dtype(np.float16)).tolist() == [
        False,
        False,
        True,
        False,
        False,
        True,
    ]
    export = js.export_training(
        run_of([{"x": jnp.float32(65519)}]), memory_store(), dtype="float16"
    )
    assert export._read("frames/x", (slice(None),)).tolist() == [65504]


def test_export_and_open_turn_bad_input_into_clear_errors(tmp_path):
    """dtype='O', fields=5 and a damaged zarr.json raised ValueError, TypeError, JSONDecodeError
    or AttributeError."""
    campaign = campaign_with({"a": 4})
    ints = run_of([{"n": jnp.int32(1), "x": jnp.float32(0)}])  # an int field: a raw ValueError
    for source, dtype, shown in [
        (ints, {"n": "O"}, "object"),
        (ints, {"n": "datetime64[s]"}, r"datetime64\[s\]"),
        (ints, {"n": "U4"}, "str128"),
        (campaign, "O", "object"),  # once refused as dropping "every fractional part"
        (campaign, {"x": "timedelta64[s]"}, r"timedelta64\[s\]"),
    ]:
        where = rf"`dtype\['{next(iter(dtype))}'\]`" if isinstance(dtype, dict) else "`dtype`"
        with pytest.raises(
            js.ConfigError, match=rf"{where} is {shown}, which is not a numeric dtype: .* Pass"
        ):
            js.export_training(source, tmp_path / "other", dtype=dtype)
    with pytest.raises(js.ConfigError, match=r"`dtype` is 'nonsense', which is not a dtype"):
        js.export_training(campaign, tmp_path / "other", dtype="nonsense")
    for fields in (5, [1], b"x", {"x": 1}):
        with pytest.raises(
            js.ConfigError,
            match=r"`fields` must be a field name or a list of field names \(str\); got ",
        ):
            js.export_training(campaign, tmp_path / "other", fields=fields)
    assert not (tmp_path / "other").exists()

    dest = tmp_path / "d"
    js.export_training(campaign, dest, sample_size=2)
    good = json.loads((dest / "zarr.json").read_text())
    for text, problem in [
        ("{not json", "is not a JSON object with an 'attributes' object"),
        ("[1, 2]", "is not a JSON object with an 'attributes' object"),
        ('{"attributes": 3}', "is not a JSON object with an 'attributes' object"),
    ]:
        (dest / "zarr.json").write_text(text)
        with pytest.raises(
            js.StoreError,
            match=rf"The training export at .*d is damaged: its file 'zarr.json' {problem}\. "
            r".* restore 'zarr.json' from a copy",
        ):
            js.TrainingSet.open(dest)
    for change, problem in [
        ({"samples": None}, "'samples' is not a non-empty list of runs"),
        ({"samples": [{"frames": 4}]}, r"'samples' \[0\] do not each give \['id', 'frames'\]"),
        ({"by": "atoms"}, r"'by' is 'atoms' \(expected one of \['frames', 'points'\]\)"),
        ({"chunk": "2"}, r"'chunk' is '2' \(expected a count of frames\)"),
        ({"fields": [1]}, "'fields' is not an object of field descriptions by name"),
    ]:
        doc = json.loads(json.dumps(good))
        doc["attributes"]["jaxsinks_export"].update(change)
        (dest / "zarr.json").write_text(json.dumps(doc))
        with pytest.raises(
            js.StoreError,
            match=rf"its file 'zarr.json' has a damaged manifest \('jaxsinks_export'\): {problem}",
        ):
            js.TrainingSet.open(dest)
    (dest / "zarr.json").write_text(json.dumps(good))
    group = json.loads((dest / "frames" / "zarr.json").read_text())
    (dest / "frames" / "zarr.json").write_text(json.dumps({**group, "attributes": {}}))
    with pytest.raises(
        js.StoreError, match="its file 'frames/zarr.json' has no 'chunk_bytes' attribute object"
    ):
        js.TrainingSet.open(dest).sample(2)


def test_dest_given_as_a_kvstore_spec_with_options_may_not_overlap_the_source(tmp_path):
    """A spec dict with an option beside driver and path was compared whole, and so passed."""
    root = tmp_path / "campaign"
    campaign = campaign_with({"a": 4}, root=root)
    before = files(tmp_path)
    for dest, how in [
        ({"driver": "file", "path": str(root), "file_io_concurrency": {"limit": 2}}, "is"),
        ({"driver": "file", "path": str(root / "t"), "file_io_sync": False}, "is inside"),
    ]:
        for source in (campaign, campaign.runs()):
            with pytest.raises(js.ConfigError, match=f"`dest` .* {how} .*, which `source` reads"):
                js.export_training(source, dest, mode="w")
    assert files(tmp_path) == before
    spec = {"driver": "file", "path": str(tmp_path / "t"), "file_io_concurrency": {"limit": 2}}
    assert len(js.export_training(campaign, spec)) == 4


def test_dtype_float16_converts_bfloat16_fields_too(tmp_path):
    """The docs promise `dtype` for every floating field; a bfloat16 one stayed bfloat16."""
    run_store = tmp_path / "run.zarr"
    sink = js.ZarrSink.create(
        run_store, EXAMPLE, chunk=4, field_config={"x": js.FieldConfig("bfloat16")}
    )
    js.close(run_steps(sink, steps(0, 8)))
    export = js.export_training(js.open(run_store), memory_store(), dtype="float16")
    assert [f["dtype"] for f in export.manifest["fields"].values()] == ["float16", "float16"]
    assert export.manifest["fields"]["x"]["source_dtype"] == "bfloat16"
    x = export._read("frames/x", (slice(None),))
    frame = export._read("frames/frame", (slice(None),))
    assert x.dtype == np.float16
    np.testing.assert_array_equal(x, expected(frame)["x"].astype(np.float16))


def test_a_missing_field_is_a_field_not_found_error():
    """As Campaign.frames raises; export raised SchemaMismatchError."""
    a = campaign_with({"a": 4}).runs()[0].open()
    b = run_of([{"x": jnp.zeros(3, jnp.float32)}] * 2)
    with pytest.raises(
        js.FieldNotFoundError,
        match=r"`fields` is None, so the first run's fields \['e', 'x'\] are exported, but run "
        r"'b' has no fields \['e'\] \(its fields are \['x'\]\)\. Pass fields every",
    ):
        js.export_training({"a": a, "b": b}, memory_store())
    with pytest.raises(
        js.FieldNotFoundError, match=r"`fields` is \['nope'\], but run 'a' has no fields \['nope'\]"
    ):
        js.export_training({"a": a}, memory_store(), fields=["nope"])
    assert len(js.export_training({"a": a, "b": b}, memory_store(), fields="x")) == 6


def test_a_file_as_dest_is_refused_and_kept(tmp_path):
    """TensorStore's 'Cannot list non-directory' came through."""
    campaign = campaign_with({"a": 4})
    dest = tmp_path / "train.zarr"
    dest.write_text("mine")
    for mode in ("w-", "w"):
        with pytest.raises(
            js.StoreExistsError, match=r"`dest` .*train.zarr is a file, not a directory: .*"
        ):
            js.export_training(campaign, dest, mode=mode)
    assert dest.read_text() == "mine"


def test_a_points_export_of_runs_without_points_says_so_when_sampled():
    """The message suggested `sample_size >= 1`, which every export has."""
    export = js.export_training(cloud_runs({"c": 2}, points={"c": 0}), memory_store(), by="points")
    assert export.chunk_size("c") == 1
    with pytest.raises(
        js.ConfigError,
        match=r"This export holds no points to draw: the frames of its runs \['c'\] have 0 "
        r"points each",
    ):
        export.sample(1)
