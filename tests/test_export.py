"""export_training: frames (or each frame's points) shuffled once; a chunk is a uniform random
subset."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from zarr_helpers import EXAMPLE, expected, memory_store, run_steps, steps

import jaxsinks as js
from jaxsinks._io import location as _location
from jaxsinks._io import tsio as _tsio
from jaxsinks.training import _export

POINTS = 64


def campaign_with(lengths: dict[str, int], **kwargs) -> js.Campaign:
    campaign = js.Campaign.create(memory_store())
    for i, (run_id, n) in enumerate(lengths.items()):
        sink = campaign.create_run(run_id, EXAMPLE, params={"i": i}, chunk=64)
        js.close(run_steps(sink, steps(0, n)))
    return campaign


def cloud_at(step):
    """Point p of frame `step`: pos = (step, p, -p), q = p; any shuffle shared by both keeps q ==
    pos[:, 1]."""
    p = jnp.arange(POINTS, dtype=jnp.float32)
    s = jnp.full((POINTS,), step.astype(jnp.float32))
    return {"pos": jnp.stack([s, p, -p], axis=1), "q": p}


@jax.jit
def record_clouds(sink, steps):
    def body(sink, step):
        return js.record(
            sink, step=step, time=step.astype(jnp.float32), frame=lambda: cloud_at(step)
        ), None

    return jax.lax.scan(body, sink, steps)[0]


def cloud_runs(frames: dict[str, int]) -> dict[str, js.Run]:
    runs = {}
    for run_id, n in frames.items():
        store = memory_store()
        example = {"pos": jnp.zeros((POINTS, 3)), "q": jnp.zeros(POINTS)}
        js.close(record_clouds(js.ZarrSink.create(store, example, chunk=8), steps(0, n)))
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
    # One run: its `run` column is all 0, the fill value, so Zarr stores no chunk for it (0 bytes).
    assert sorted(f.relative_to(tmp_path / "x" / "frames").parts[0] for f in chunk_files) == [
        "e",
        "frame",
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
    with pytest.raises(KeyError, match=r"has no run 'nope'; it has \['c0', 'c1'\]"):
        export.chunk_size("nope")


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
        frame={"x": jnp.full(3, 1e5), "e": jnp.float32(0)},
    )
    js.close(sink)
    dest = tmp_path / "hot"
    with pytest.raises(
        js.OutOfRangeError,
        match=r"Field 'x' has values out of the range of float16 at frame 6 "
        r"of run 'hot' \(largest magnitude 100000\)",
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
    with pytest.raises(js.StoreExistsError, match="is not empty. Pass mode='w'"):
        js.export_training(campaign, dest)
    assert js.export_training(campaign, dest, mode="w", sample_size=3).chunk_size() == 3
    for kwargs, match in [
        ({"by": "atoms"}, r"`by` must be one of \['frames', 'points'\]; got 'atoms'"),
        ({"sample_size": 0}, "`sample_size` must be an int >= 1; got 0"),
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
