"""Campaigns: many runs under one root, each writing its own entry; listing assembles the manifest.

Concurrent writers (threads and real processes), a run killed with SIGKILL, and bad input.
"""

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import pickle
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from zarr_helpers import EXAMPLE, expected, memory_store, run_steps, steps

import jaxsinks as js
from jaxsinks._core.frame import nested
from jaxsinks.campaign import _entry as _run_entry

HERE = pathlib.Path(__file__).resolve().parent

#: A worker process: rebuild the run's config from JSON, record FRAMES frames and close
#: (FRAMES < 0: record 8 frames per call until killed, printing the frames recorded).
CHILD = r"""
import json, sys
import jaxsinks as js
from zarr_helpers import EXAMPLE, run_steps, steps

config = js.RunConfig.from_config(json.loads(sys.argv[1]))
frames = int(sys.argv[2])
sink = config.create(EXAMPLE)
if frames >= 0:
    js.close(run_steps(sink, steps(0, frames)))
else:
    start = 0
    while True:
        sink = run_steps(sink, steps(start, start + 8))
        start += 8
        print(start, flush=True)
"""


def spawn(config: js.RunConfig, frames: int, log: pathlib.Path) -> subprocess.Popen:
    with log.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(config.to_config()), str(frames)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=HERE,
            env=dict(os.environ, JAX_PLATFORMS="cpu"),
        )


def record_run(campaign: js.Campaign, run_id: str, frames: int, **params) -> js.RunEntry:
    sink = campaign.create_run(run_id, EXAMPLE, params=params, chunk=4)
    js.close(run_steps(sink, steps(0, frames)))
    return campaign.entry(run_id)


# ------------------------------------------------------------------------------ basics


def test_a_run_records_its_entry_from_running_to_closed(tmp_path):
    campaign = js.Campaign.create(tmp_path / "c", attrs={"sweep": "temperature"})
    sink = campaign.create_run("t300", EXAMPLE, params={"T": 300.0, "seed": 1}, chunk=4)
    running = campaign.entry("t300")
    assert running.status == "running" and running.committed == 0 and running.closed is None
    assert running.alive is True and not running.stale  # this process is recording it
    sink = run_steps(sink, steps(0, 10))
    js.close(sink)

    entry = campaign.entry("t300")
    assert (entry.status, entry.committed, entry.error) == ("closed", 10, None)
    assert entry.params == {"T": 300.0, "seed": 1}
    assert [f["name"] for f in entry.schema["fields"]] == ["e", "x"] and entry.schema["chunk"] == 4
    assert entry.created <= entry.closed
    run = campaign.open_run("t300")
    np.testing.assert_array_equal(run["x"][:], expected(range(10))["x"])

    stored = json.loads((tmp_path / "c" / "entries" / "t300.json").read_text())
    assert (
        stored["schema_version"] == _run_entry.CAMPAIGN_SCHEMA_VERSION
        and stored["status"] == "closed"
    )
    reopened = js.Campaign.open(str(tmp_path / "c"))
    assert reopened.attrs == {"sweep": "temperature"} and reopened.run_ids() == ["t300"]


def test_consolidate_writes_every_entry_into_the_manifest(tmp_path):
    campaign = js.Campaign.create(tmp_path / "c")
    for i in range(3):
        record_run(campaign, f"r{i}", 5 + i, i=i)
    manifest = campaign.consolidate()
    on_disk = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert on_disk == manifest
    assert on_disk["schema_version"] == _run_entry.CAMPAIGN_SCHEMA_VERSION
    assert [(r["run_id"], r["status"], r["committed"], r["params"]) for r in on_disk["runs"]] == [
        ("r0", "closed", 5, {"i": 0}),
        ("r1", "closed", 6, {"i": 1}),
        ("r2", "closed", 7, {"i": 2}),
    ]


def test_listing_filters_by_status_params_and_predicate():
    campaign = js.Campaign.create(memory_store())
    for i, T in enumerate([100.0, 200.0, 200.0]):
        record_run(campaign, f"r{i}", 4 + 4 * i, T=T, method="fire")
    open_sink = campaign.create_run("live", EXAMPLE, params={"T": 200.0}, chunk=4)
    try:
        assert [e.run_id for e in campaign.runs()] == ["live", "r0", "r1", "r2"]
        assert [e.run_id for e in campaign.runs(status="closed", params={"T": 200.0})] == [
            "r1",
            "r2",
        ]
        assert [e.run_id for e in campaign.runs(status=["running"])] == ["live"]
        assert [e.run_id for e in campaign.runs(params={"method": "fire", "T": 100.0})] == ["r0"]
        assert [e.run_id for e in campaign.runs(where=lambda e: e.committed > 6)] == ["r1", "r2"]
        assert len(campaign) == 4
        for status, bad in [("done", "['done']"), (5, "[5]"), (["closed", 5, "x"], "[5, 'x']")]:
            with pytest.raises(
                js.ConfigError, match=rf"`status` must be one of .*with {re.escape(bad)} not"
            ):
                campaign.runs(status=status)
        with pytest.raises(js.ConfigError, match=r"`status` must be one of .*\[\['closed'\]\] not"):
            campaign.runs(status=[["closed"]])
        for method in (campaign.runs, campaign.frames, campaign.to_xarray):
            with pytest.raises(js.ConfigError, match=r"`where` must be a function .*got int 5"):
                method(where=5)
    finally:
        js.close(open_sink)
    assert campaign.entry("live").status == "closed"


def test_frames_iterate_across_runs_with_the_run_id():
    campaign = js.Campaign.create(memory_store())
    record_run(campaign, "a", 6)
    record_run(campaign, "b", 3)
    frames = list(campaign.frames(fields=["e"]))
    assert [(f["run"], int(f["step"])) for f in frames] == [("a", s) for s in range(6)] + [
        ("b", s) for s in range(3)
    ]
    assert set(frames[0]) == {"e", "step", "time", "run"}
    np.testing.assert_array_equal(
        [f["e"] for f in frames], np.r_[expected(range(6))["e"], expected(range(3))["e"]]
    )
    assert [f["run"] for f in campaign.frames(where=lambda e: e.run_id == "b")] == ["b"] * 3


def record_named(campaign: js.Campaign, run_id: str, frames: int, names, **params) -> None:
    """Record `frames` frames of scalar float32 fields `names` (each the step, plus its index;
    ``a/b`` is the leaf ``b`` under the key ``a``)."""
    example = nested({n: jnp.zeros((), jnp.float32) for n in names})
    sink = campaign.create_run(run_id, example, params=params, chunk=4)
    for step in range(frames):
        frame = nested({n: jnp.float32(step + i) for i, n in enumerate(names)})
        sink = js.record(sink, step=jnp.int32(step), time=jnp.float32(step), frame=frame)
    js.close(sink)


def test_frames_and_to_xarray_keep_fields_named_like_the_campaign_columns():
    """A field `run` is `run_` beside the run id `run` (frames once overwrote it), and a field
    `param_T` beside a parameter `T` is `param_T_` (to_xarray once replaced it by the parameter)."""
    campaign = js.Campaign.create(memory_store())
    record_named(campaign, "a", 3, ["run", "param_T", "energy"], T=1.0)
    record_named(campaign, "b", 2, ["run", "param_T", "energy"], T=2.0)
    frames = list(campaign.frames())
    assert [(f["run"], float(f["run_"]), float(f["param_T"])) for f in frames] == [
        ("a", 0.0, 1.0),
        ("a", 1.0, 2.0),
        ("a", 2.0, 3.0),
        ("b", 0.0, 1.0),
        ("b", 1.0, 2.0),
    ]
    assert set(frames[0]) == {"run", "run_", "param_T", "energy", "step", "time"}
    only = list(campaign.frames(fields="run", status="closed"))  # one name, as Run.iter_frames
    assert [(f["run"], float(f["run_"])) for f in only][:2] == [("a", 0.0), ("a", 1.0)]
    assert set(only[0]) == {"run", "run_", "step", "time"}

    ds = campaign.to_xarray()
    assert ds["run"].values.tolist() == ["a"] * 3 + ["b"] * 2
    assert ds["run_"].values.tolist() == [0.0, 1.0, 2.0, 0.0, 1.0]
    assert ds["param_T"].values.tolist() == [1.0] * 3 + [2.0] * 2  # the parameter
    assert ds["param_T_"].values.tolist() == [1.0, 2.0, 3.0, 1.0, 2.0]  # the field
    assert set(ds.data_vars) == {"run_", "param_T_", "energy"}


def test_a_field_named_like_another_fields_stored_name_keeps_a_variable_of_its_own():
    """A field `run` beside a field `run_` is `run__` (both were once refused)."""
    campaign = js.Campaign.create(memory_store())
    record_named(campaign, "a", 2, ["run", "run_"])
    frames = list(campaign.frames())
    assert [(f["run"], float(f["run__"]), float(f["run_"])) for f in frames] == [
        ("a", 0.0, 1.0),
        ("a", 1.0, 2.0),
    ]
    ds = campaign.to_xarray()
    assert ds["run__"].values.tolist() == [0.0, 1.0] and ds["run_"].values.tolist() == [1.0, 2.0]
    # the names do not depend on the fields selected
    assert [float(f["run__"]) for f in campaign.frames(fields=["run"])] == [0.0, 1.0]
    assert list(campaign.to_xarray(fields=["run"]).data_vars) == ["run__"]


#: Fields and parameters whose names collide with the campaign's coordinates and with each other's
#: stored names, and the variable each field is (every field and coordinate keeps its own name).
ADVERSARIAL = [
    (  # `param_T` would be `param_T_`, the coordinate of the parameter `T_`
        ["param_T", "energy"],
        {"T": 1.0, "T_": 2.0},
        {"param_T": "param_T__", "energy": "energy"},
    ),
    (
        ["param_T", "param_T_", "param_T__"],
        {"T": 1.0, "T_": 2.0},
        {"param_T": "param_T___", "param_T_": "param_T____", "param_T__": "param_T__"},
    ),
    (  # the frame dimension too, and the run column
        ["frame", "frame_", "run", "run_", "system"],
        {"frame": 3},
        {
            "frame": "frame__",
            "frame_": "frame_",
            "run": "run__",
            "run_": "run_",
            "system": "system_",
        },
    ),
    (  # a parameter `a/b`: the coordinate `param_a/b` beside a field `param_a/b`
        ["param_a/b", "param_a_", "run/x"],
        {"a/b": "v", "a": 1},
        {"param_a/b": "param_a_/b", "param_a_": "param_a_", "run/x": "run_/x"},
    ),
]


@pytest.mark.parametrize("names, params, variables", ADVERSARIAL)
def test_every_field_and_parameter_coordinate_keeps_a_name_of_its_own(names, params, variables):
    campaign = js.Campaign.create(memory_store())
    record_named(campaign, "a", 3, names, **params)
    record_named(campaign, "b", 2, names, **params)
    ds = campaign.to_xarray()
    assert sorted(ds.data_vars) == sorted(variables.values())
    for i, name in enumerate(names):
        want = [float(s + i) for s in [0, 1, 2, 0, 1]]
        assert ds[variables[name]].values.tolist() == want, name
    for key, value in params.items():
        assert ds[f"param_{key}"].values.tolist() == [value] * 5, key
        assert f"param_{key}" in ds.coords
    assert ds["run"].values.tolist() == ["a"] * 3 + ["b"] * 2
    assert "frame" not in ds.variables  # the dimension alone, no field's values
    # frames(): the run column beside every field, each under its own name
    frame = next(iter(campaign.frames()))
    assert frame["run"] == "a" and len(frame) == len(names) + 3  # step, time, run


def test_frames_of_an_unknown_field_name_every_run_lacking_it_before_any_frame():
    campaign = js.Campaign.create(memory_store())
    record_run(campaign, "a", 6)
    record_named(campaign, "b", 2, ["e", "y"])
    with pytest.raises(
        js.FieldNotFoundError,
        match=r"`fields` is \['e', 'y'\], but run 'a' has no fields \['y'\] \(its fields are "
        r"\['e', 'x'\]\)\. Pass fields every selected run has",
    ) as info:
        campaign.frames(fields=["e", "y"])  # raised at the call, not after run a's frames
    assert isinstance(info.value, KeyError)  # as Run.iter_frames raises
    with pytest.raises(js.FieldNotFoundError, match=r"run 'a' has no fields \['nope'\].*run 'b'"):
        campaign.frames(fields=["nope"])
    assert len(list(campaign.frames(fields=["e", "y"], where=lambda e: e.run_id == "b"))) == 2


def test_to_xarray_concatenates_runs_with_run_and_param_coordinates():
    campaign = js.Campaign.create(memory_store())
    record_run(campaign, "a", 5, T=1.0, label="x", tags=[1])
    record_run(campaign, "b", 3, T=2.0, label="y")
    ds = campaign.to_xarray()
    assert ds.sizes["frame"] == 8
    assert ds["run"].values.tolist() == ["a"] * 5 + ["b"] * 3
    assert ds["param_T"].values.tolist() == [1.0] * 5 + [2.0] * 3
    assert ds["param_label"].values.tolist() == ["x"] * 5 + ["y"] * 3
    assert "param_tags" not in ds.coords  # not a scalar, and not in every run
    np.testing.assert_array_equal(
        ds["x"].values, np.r_[expected(range(5))["x"], expected(range(3))["x"]]
    )
    assert ds["step"].values.tolist() == [0, 1, 2, 3, 4, 0, 1, 2]


def record_per_system(campaign: js.Campaign, run_id: str, frames: int, **params) -> js.Run:
    """A per-system run of 3 systems: system k is recorded at a step when k <= step % 3."""
    sink = campaign.create_run(
        run_id, {"e": jnp.zeros(3, jnp.float32)}, params=params, per_system=True, chunk=4
    )

    def body(sink, step):
        s = step.astype(jnp.float32)
        frame = {"e": 10.0 * s + jnp.arange(3, dtype=jnp.float32)}
        mask = jnp.arange(3, dtype=jnp.int32) <= step % 3
        return js.record(sink, step=step, time=s, frame=frame, mask=mask), None

    js.close(jax.jit(lambda s: jax.lax.scan(body, s, steps(0, frames))[0])(sink))
    return campaign.open_run(run_id)


def test_to_xarray_keeps_the_system_coordinate_of_per_system_runs():
    campaign = js.Campaign.create(memory_store())
    runs = [record_per_system(campaign, "a", 4, T=1.0), record_per_system(campaign, "b", 2, T=2.0)]
    ds = campaign.to_xarray()
    alone = [run.to_xarray() for run in runs]  # each run's own Dataset has the same columns
    for name in ("system", "step", "time", "e"):
        want = np.concatenate([one[name].values for one in alone])
        np.testing.assert_array_equal(ds[name].values, want, err_msg=name)
    assert "system" in ds.coords and ds["system"].dims == ("frame",)
    assert ds["system"].values.tolist() == [0, 0, 1, 0, 1, 2, 0, 0, 0, 1]
    assert ds["run"].values.tolist() == ["a"] * 7 + ["b"] * 3
    record_run(campaign, "c", 2)  # frames of whole systems: no system to put beside them
    with pytest.raises(
        js.SchemaMismatchError,
        match=r"runs \['a', 'b'\] record a row per system and frame, but runs \['c'\] do not",
    ):
        campaign.to_xarray(fields=["e"])
    assert campaign.to_xarray(fields=["e"], params={"T": 2.0}).sizes["frame"] == 3


def test_to_xarray_names_every_run_whose_schema_differs():
    campaign = js.Campaign.create(memory_store())
    record_run(campaign, "a", 4)
    other = {"x": jnp.zeros(5, jnp.float32), "e": jnp.zeros((), jnp.float32)}
    js.close(campaign.create_run("b", other, chunk=4))
    with pytest.raises(
        js.SchemaMismatchError,
        match=r"field 'x' is float32\[5\] .* in run 'b' but float32\[3\] .* in run 'a'",
    ):
        campaign.to_xarray()
    assert campaign.to_xarray(fields=["e"]).sizes["frame"] == 4  # the agreeing field alone works
    with pytest.raises(js.ConfigError, match="No run of the campaign"):
        campaign.to_xarray(status="failed")


def test_a_failed_close_marks_the_run_failed_with_the_error():
    campaign = js.Campaign.create(memory_store())
    sink = campaign.create_run(
        "hot", EXAMPLE, chunk=4, field_config={"e": js.FieldConfig(dtype="float16")}
    )
    sink = run_steps(sink, steps(0, 4))  # e = 0..1.5: fits float16
    big = js.record(
        sink,
        step=jnp.int32(4),
        time=jnp.float32(0),
        frame={"x": jnp.zeros(3, jnp.float32), "e": jnp.float32(1e6)},
    )
    with pytest.raises(js.OutOfRangeError):
        js.close(big)
    entry = campaign.entry("hot")
    assert entry.status == "failed" and entry.committed == 4 and entry.closed is not None
    assert entry.error.startswith("OutOfRangeError: ") and "'e' (float16)" in entry.error
    assert [e.run_id for e in campaign.runs(status="failed")] == ["hot"]


# ------------------------------------------------------------------------- concurrency


def test_threads_write_runs_concurrently_into_one_campaign(tmp_path):
    campaign = js.Campaign.create(tmp_path / "c")
    counts = {f"run-{i:02d}": 3 + 5 * i for i in range(8)}

    def work(run_id):
        return record_run(campaign, run_id, counts[run_id], n=counts[run_id])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(work, counts))
    entries = campaign.runs()
    assert {e.run_id: (e.status, e.committed, e.params["n"]) for e in entries} == {
        k: ("closed", n, n) for k, n in counts.items()
    }
    for run_id, n in counts.items():
        run = campaign.open_run(run_id)
        assert len(run) == n and run.steps.tolist() == list(range(n))
    assert len(campaign.consolidate()["runs"]) == 8


@pytest.mark.slow
def test_processes_write_runs_concurrently_from_json_configs(tmp_path):
    campaign = js.Campaign.create(tmp_path / "c")
    counts = {"p0": 9, "p1": 17, "p2": 30}
    children = {}
    for run_id, n in counts.items():
        config = campaign.run_config(run_id, params={"n": n}, chunk=4, codec=js.Zstd(3))
        children[run_id] = spawn(config, n, tmp_path / f"{run_id}.log")
    for run_id, child in children.items():
        assert child.wait(timeout=120) == 0, (tmp_path / f"{run_id}.log").read_text()
    entries = {e.run_id: e for e in campaign.runs()}
    assert {k: (e.status, e.committed, e.params) for k, e in entries.items()} == {
        k: ("closed", n, {"n": n}) for k, n in counts.items()
    }
    assert len({e.pid for e in entries.values()} | {os.getpid()}) == 4  # three other processes
    assert all(e.alive is False and not e.stale for e in entries.values())
    run = campaign.open_run("p2")
    assert run.describe()["fields"][0]["codecs"][-1] == "zstd"
    np.testing.assert_array_equal(run["x"][:], expected(range(30))["x"])


@pytest.mark.slow
def test_a_killed_run_stays_running_is_stale_and_listing_works(tmp_path):
    campaign = js.Campaign.create(tmp_path / "c")
    record_run(campaign, "done", 5)
    log = tmp_path / "crash.log"
    child = spawn(campaign.run_config("crash", params={"kill": True}, chunk=4), -1, log)
    try:
        deadline = time.monotonic() + 120
        while "crash" not in campaign.run_ids() or campaign.entry("crash").committed < 8:
            assert child.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the child never committed 8 frames"
            time.sleep(0.02)
        assert campaign.entry("crash").alive is True
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL

    entries = {e.run_id: e for e in campaign.runs()}
    crashed = entries["crash"]
    assert entries["done"].status == "closed" and entries["done"].committed == 5
    assert crashed.status == "running" and crashed.alive is False and crashed.stale
    assert crashed.closed is None and crashed.committed >= 8 and crashed.pid == child.pid
    run = campaign.open_run("crash")
    assert len(run) == crashed.committed and run.steps.tolist() == list(range(len(run)))
    assert [e.run_id for e in campaign.runs(where=lambda e: e.stale)] == ["crash"]
    assert len(campaign.consolidate()["runs"]) == 2

    failed = campaign.mark_failed("crash", "killed")
    assert (failed.status, failed.error, failed.committed) == (
        "failed",
        "killed",
        crashed.committed,
    )
    assert campaign.entry("crash").status == "failed" and not campaign.entry("crash").stale


#: A worker killed (SIGKILL, by itself) while it creates the run: at the start of the run
#: store's creation ("store"), or once the store is created, before the entry is completed
#: ("entry").
KILLED_IN_CREATE = r"""
import json, os, signal, sys
import jaxsinks as js
import jaxsinks.campaign._config as config_module
from zarr_helpers import EXAMPLE

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[2] == "store":
    config_module.ZarrSink = type("Dying", (), {"create": staticmethod(die)})
else:
    config_module.complete_entry = die
js.RunConfig.from_config(json.loads(sys.argv[1])).create(EXAMPLE)
"""


@pytest.mark.slow
@pytest.mark.parametrize("when", ["store", "entry"])
def test_a_run_killed_while_created_is_listed_stale_and_can_be_marked_failed(tmp_path, when):
    campaign = js.Campaign.create(tmp_path / "c")
    config = campaign.run_config("r1", params={"T": 1.0}, chunk=4)
    child = subprocess.run(
        [sys.executable, "-c", KILLED_IN_CREATE, json.dumps(config.to_config()), when],
        capture_output=True,
        cwd=HERE,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    assert (tmp_path / "c" / "runs" / "r1" / "zarr.json").exists() == (when == "entry")

    assert campaign.run_ids() == ["r1"]  # not an orphan store that nothing lists
    entry = campaign.entry("r1")
    assert (entry.status, entry.stale, entry.committed, entry.params) == (
        "running",
        True,
        0,
        {"T": 1.0},
    )
    assert [e.run_id for e in campaign.runs(where=lambda e: e.stale)] == ["r1"]
    assert len(campaign.consolidate()["runs"]) == 1
    failed = campaign.mark_failed("r1", "the process died")
    assert (failed.status, failed.error, failed.stale) == ("failed", "the process died", False)
    with pytest.raises(js.StoreExistsError, match=r"already has a run 'r1' \(status 'failed'"):
        campaign.create_run("r1", EXAMPLE, chunk=4)


def test_runs_created_at_once_with_one_id_have_exactly_one_winner(tmp_path):
    campaign = js.Campaign.create(tmp_path / "c")

    def create(i):
        try:
            return campaign.create_run("r", EXAMPLE, params={"i": i}, chunk=4)
        except js.StoreExistsError:
            return None

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        sinks = [s for s in pool.map(create, range(4)) if s is not None]
    assert len(sinks) == 1
    js.close(run_steps(sinks[0], steps(0, 4)))
    entry = campaign.entry("r")
    assert (entry.status, entry.committed) == ("closed", 4)
    assert len(campaign.open_run("r")) == 4


def test_a_run_whose_store_cannot_be_created_leaves_its_id_free():
    campaign = js.Campaign.create(memory_store())
    with pytest.raises(js.ConfigError):
        campaign.create_run("r", EXAMPLE, chunk=0)
    assert campaign.run_ids() == []
    record_run(campaign, "r", 4)  # the same id, now with a valid chunk
    assert campaign.entry("r").committed == 4


def test_a_run_whose_entry_cannot_be_completed_is_recorded_failed(monkeypatch):
    from jaxsinks.campaign import _config

    def refuse(root, entry, generation):
        raise js.StoreError("the store refused the write")

    campaign = js.Campaign.create(memory_store())
    monkeypatch.setattr(_config, "complete_entry", refuse)
    with pytest.raises(js.StoreError, match="the store refused the write"):
        campaign.create_run("r", EXAMPLE, chunk=4)
    entry = campaign.entry("r")  # listed, and not claiming a live run
    assert (entry.status, entry.committed, entry.stale) == ("failed", 0, False)
    assert entry.error == "StoreError: the store refused the write"
    assert len(campaign.open_run("r")) == 0


def test_a_run_marked_failed_while_it_is_created_stays_failed(monkeypatch):
    """The entry's completion overwrote a mark_failed made between the claim and it (by another
    process): the run read "running", then "closed"."""
    from jaxsinks._sinks import zarr_sink

    campaign = js.Campaign.create(memory_store())
    other = js.Campaign.open(campaign.location)  # another process's view
    create = zarr_sink.ZarrSink.create.__func__

    def create_while_marked_failed(cls, *args, **kwargs):
        other.mark_failed("r", "stopped by the operator")
        return create(cls, *args, **kwargs)

    with monkeypatch.context() as window:
        window.setattr(zarr_sink.ZarrSink, "create", classmethod(create_while_marked_failed))
        sink = campaign.create_run("r", EXAMPLE, chunk=4)
    assert campaign.entry("r").status == "failed"
    js.close(run_steps(sink, steps(0, 4)))  # closes as after mark_failed: the entry stays failed
    entry = campaign.entry("r")
    assert (entry.status, entry.error, entry.committed) == ("failed", "stopped by the operator", 4)


def test_an_entry_that_cannot_be_read_is_named_by_the_listing_error(tmp_path):
    """Listing reads every entry at once; its error named the first keys, not the failed one."""
    campaign = js.Campaign.create(tmp_path / "c")
    for run_id in ("a", "b", "c", "d"):
        record_run(campaign, run_id, 2)
    (tmp_path / "c" / "entries" / "c.json").unlink()
    (tmp_path / "c" / "entries" / "c.json").symlink_to("c.json")  # a read fails: ELOOP
    with pytest.raises(js.StoreError, match=r"Could not read 'entries/c\.json' of .*symbolic"):
        campaign.runs()


def test_files_in_entries_that_name_no_run_are_not_listed(tmp_path):
    campaign = js.Campaign.create(tmp_path / "c")
    record_run(campaign, "T1", 4)
    entries = tmp_path / "c" / "entries"
    (entries / "._T1.json").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    (entries / ".T1.json").write_text("{")
    (entries / "notes.txt").write_text("a note")
    (entries / "old").mkdir()
    (entries / "old" / "T2.json").write_text("{}")
    assert campaign.run_ids() == ["T1"] and len(campaign) == 1
    assert [e.run_id for e in campaign.runs()] == ["T1"]
    assert [f["run"] for f in campaign.frames(fields=["e"])] == ["T1"] * 4
    assert [r["run_id"] for r in campaign.consolidate()["runs"]] == ["T1"]


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"params": None}, "'params' must be a JSON object, but it is NoneType None"),
        (
            {"committed": "12"},
            r"'committed' must be a count of frames \(an integer >= 0\), but it "
            "is str '12'",
        ),
        ({"committed": True}, "'committed' must be a count of frames"),
        ({"committed": -1}, "'committed' must be a count of frames"),
        ({"status": "done"}, r"'status' must be one of \['running', 'closed', 'failed'\], but it"),
        ({"schema": []}, "'schema' must be a JSON object, but it is list"),
        (
            {"pid": 1.5, "closed": 3},
            "'closed' must be a string or null, but it is int 3; 'pid' "
            "must be an integer, but it is float 1.5",
        ),
        ({"run_id": "b"}, r"'run_id' must be 'a' \(its file's name\), but it is 'b'"),
    ],
)
def test_an_entry_with_a_key_of_the_wrong_type_is_a_store_error_naming_it(tmp_path, changes, match):
    campaign = js.Campaign.create(tmp_path / "c")
    record_run(campaign, "a", 4, T=1.0)
    path = tmp_path / "c" / "entries" / "a.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), **changes)))
    pattern = re.escape("entries/a.json is damaged: ") + ".*" + match
    for read in (
        lambda: campaign.entry("a"),
        lambda: campaign.runs(params={"T": 1.0}),
        lambda: campaign.to_xarray(),
        campaign.consolidate,
    ):
        with pytest.raises(js.StoreError, match=pattern):
            read()


def test_a_run_marked_failed_while_its_sink_records_counts_what_it_holds():
    campaign = js.Campaign.create(memory_store())
    sink = run_steps(campaign.create_run("r", EXAMPLE, chunk=4), steps(0, 4))
    campaign.mark_failed("r", "the operator stopped it")
    js.close(run_steps(sink, steps(4, 12)))
    entry = campaign.entry("r")
    assert (entry.status, entry.error) == ("failed", "the operator stopped it")
    assert entry.committed == len(campaign.open_run("r")) == 12
    assert [r["committed"] for r in campaign.consolidate()["runs"]] == [12]
    assert [e.committed for e in campaign.runs(status="failed")] == [12]


def test_a_run_marked_failed_by_another_process_while_it_records_stays_failed(tmp_path, caplog):
    """The close overwrote another process's mark_failed: the run read "closed" again."""
    campaign = js.Campaign.create(tmp_path / "c")
    sink = run_steps(campaign.create_run("r", EXAMPLE, chunk=4), steps(0, 4))
    mark = (
        "import sys, jaxsinks as js\n"
        "js.Campaign.open(sys.argv[1]).mark_failed('r', 'stopped by the operator')\n"
    )
    subprocess.run(
        [sys.executable, "-c", mark, str(tmp_path / "c")],
        check=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    with caplog.at_level("WARNING", logger="jaxsinks"):
        js.close(run_steps(sink, steps(4, 12)))
    entry = campaign.entry("r")
    assert (entry.status, entry.error) == ("failed", "stopped by the operator")
    assert entry.committed == len(campaign.open_run("r")) == 12
    assert "entry of run 'r' was changed by another process" in caplog.text
    assert "holds 12 committed frames" in caplog.text


# ----------------------------------------------------------------------- configurations


def test_run_config_round_trips_through_json_and_pickle():
    campaign = js.Campaign.create(memory_store())
    config = campaign.run_config(
        "r",
        params={"T": 1.5, "grid": [1, 2]},
        every=js.Every(2),
        chunk=4,
        codec=js.Blosc("zstd", 3, "bitshuffle"),
        field_config={"x": js.FieldConfig(dtype="float16", chunk=(2,), dims=("xyz",))},
        time_dtype=jnp.float32,
        attrs={"note": "n"},
    )
    text = json.dumps(config.to_config())
    assert js.RunConfig.from_config(json.loads(text)) == config
    assert pickle.loads(pickle.dumps(config)) == config
    assert (
        js.Campaign.from_config(json.loads(json.dumps(campaign.to_config()))).location
        == campaign.location
    )
    sink = js.RunConfig.from_config(json.loads(text)).create(EXAMPLE)
    js.close(run_steps(sink, steps(0, 6)))
    run = campaign.open_run("r")
    assert (
        run.steps.tolist() == [0, 2, 4]
        and run["x"].dtype == np.float16
        and run.attrs == {"note": "n"}
    )
    assert run["x"].dims == ("frame", "xyz")


def test_campaign_to_xarray_names_a_field_named_like_an_axis_as_its_runs_do():
    """A field `x_0` beside a field `x` (whose axis is `x_0`) became a coordinate of the
    campaign's Dataset, while Run.to_xarray names it `x_0_`."""
    campaign = js.Campaign.create(memory_store())
    example = {"x": jnp.zeros(3, jnp.float32), "x_0": jnp.zeros((), jnp.float32)}
    for run_id in ("a", "b"):
        sink = campaign.create_run(run_id, example, chunk=2)
        for i in range(3):
            frame = {"x": jnp.full(3, i, jnp.float32), "x_0": jnp.float32(i)}
            sink = sink.write(frame, step=i, time=float(i))
        js.close(sink)
    assert sorted(campaign.open_run("a").to_xarray().data_vars) == ["x", "x_0_"]
    both = campaign.to_xarray()
    assert sorted(both.data_vars) == ["x", "x_0_"] and both["x"].dims == ("frame", "x_0")
    assert both["x_0_"].values.tolist() == [0, 1, 2, 0, 1, 2]


def test_a_run_config_holds_the_numpy_counts_create_run_takes():
    """create_run took chunk=np.int64(4), but its config could not be written as JSON."""
    campaign = js.Campaign.create(memory_store())
    options = dict(chunk=np.int64(4), every=np.int64(2), capacity=np.int32(8))
    config = campaign.run_config("r", **options, params={"T": 1.0})
    decoded = js.RunConfig.from_config(json.loads(json.dumps(config.to_config())))
    assert decoded.options == {"chunk": 4, "every": 2, "capacity": 8}
    assert [type(v) for v in decoded.options.values()] == [int, int, int]
    js.close(run_steps(decoded.create(EXAMPLE), steps(0, 6)))
    assert campaign.open_run("r").steps.tolist() == [0, 2, 4]
    interval = campaign.run_config("i", every=js.Interval(np.float32(0.5))).to_config()
    assert json.loads(json.dumps(interval))["options"]["every"]["dt"] == 0.5


def test_run_config_rejects_what_json_cannot_hold():
    campaign = js.Campaign.create(memory_store())
    config = campaign.run_config("w", every=js.When(lambda step, time: step > 2))
    with pytest.raises(js.ConfigError, match="When schedule.*Pickle the RunConfig"):
        config.to_config()
    with pytest.raises(js.ConfigError, match=r"ZarrSink.create options .*got \['mode'\]"):
        campaign.run_config("m", mode="w")
    with pytest.raises(js.ConfigError, match="made by RunConfig.to_config"):
        js.RunConfig.from_config({"run_id": "x"})


def _config_with(**changes):
    """A valid JSON run config (of a fresh campaign) with `changes`; None deletes a key."""
    campaign = js.Campaign.create(memory_store())
    config = campaign.run_config("r", every=js.Every(2), chunk=4, time_dtype="float32")
    doc = dict(config.to_config(), **changes)
    return campaign, {k: v for k, v in doc.items() if v is not None}


def _option(**option):
    return {"options": dict(option)}


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"root": 5}, r"`root` must be the campaign root's kvstore spec, a dict .*got int 5"),
        ({"root": "sweep"}, r"`root` must be .* a dict .*got str 'sweep'"),
        ({"options": [1]}, r"`config\['options'\]` must be a dict .*got list \[1\]"),
        (
            {"extra": 1},
            r"exactly the keys \['root', 'run_id', 'params', 'options'\]\. It has the "
            r"unknown keys \['extra'\]",
        ),
        ({"params": None}, r"It lacks \['params'\]\. Rebuild it with RunConfig.to_config"),
        ({"params": [1]}, "`params` must be a dict of JSON values; got list"),
        ({"run_id": 3}, "`run_id` must be 1 to 128 letters"),
        (
            _option(every={"__jaxsinks__": "Every", "n": 2, "bogus": 1}),
            r"`config\['options'\]\['every'\]` is of type Every but has the unknown keys "
            r"\['bogus'\]; Every takes the keys \['n', 'start'\]",
        ),
        (
            _option(every={"__jaxsinks__": "Times", "times": "abc"}),
            r"`config\['options'\]\['every'\]` is of type Times \(keys \['times', 'tol'\]\) "
            r"but does not make one: `Times` needs `times` to be real numbers: .*got str",
        ),
        (
            _option(ragged={"__jaxsinks__": "Ragged", "count": "n"}),
            r"is of type Ragged .*missing 1 required positional argument: 'fields'",
        ),
        (
            _option(time_dtype={"__jaxsinks__": "dtype"}),
            r"`config\['options'\]\['time_dtype'\]` must be a dtype written as",
        ),
        (
            _option(time_dtype={"__jaxsinks__": "dtype", "name": "nope"}),
            r"must be a dtype written as .*got dict \{'__jaxsinks__': 'dtype', 'name': 'nope'\}",
        ),
        (
            _option(every={"__jaxsinks__": ["Every"], "n": 2}),
            r"`config\['options'\]\['every'\]` is an option of unknown type \['Every'\] \(its "
            r"'__jaxsinks__' value\); the types a run config holds are .*rebuild the config",
        ),
        (
            _option(time_dtype={"__jaxsinks__": {"dtype": 1}, "name": "float32"}),
            r"`config\['options'\]\['time_dtype'\]` is an option of unknown type \{'dtype': 1\}",
        ),
        (
            _option(field_config={"x": [{"__jaxsinks__": []}]}),
            r"`config\['options'\]\['field_config'\]\['x'\]\[0\]` is an option of unknown "
            r"type \[\]",
        ),
        ({"options": {1: 2, "chunk": 4}}, r"`options` must be keyed by option names .*\[1\]"),
        (_option(mode="w"), r"ZarrSink.create options .*got \['mode'\]"),
    ],
)
def test_a_bad_json_run_config_is_a_config_error_naming_the_key(changes, match):
    campaign, doc = _config_with(**changes)
    with pytest.raises(js.ConfigError, match=match):
        js.RunConfig.from_config(doc)
    assert campaign.run_ids() == []


@pytest.mark.parametrize("driver", ["file", "memory"])
def test_a_run_config_root_without_a_trailing_slash_is_the_campaign_root(tmp_path, driver):
    root = tmp_path / "camp" if driver == "file" else memory_store()
    campaign = js.Campaign.create(root)
    path = campaign.location.kvstore["path"]
    assert path.endswith("/")
    config = js.RunConfig(
        root={"driver": driver, "path": path.rstrip("/")}, run_id="r", params={}, options={}
    )
    assert config.root == campaign.location.kvstore and config == campaign.run_config("r")
    assert config.store["path"] == path + "runs/r/"
    js.close(run_steps(config.create(EXAMPLE), steps(0, 3)))
    assert campaign.run_ids() == ["r"] and len(campaign.open_run("r")) == 3
    if driver == "file":  # nothing beside the campaign (it once wrote camp + runs/r: 'campruns')
        assert sorted(p.name for p in tmp_path.iterdir()) == ["camp"]


def test_a_run_config_whose_root_holds_no_campaign_is_refused(tmp_path):
    config = js.RunConfig(
        root={"driver": "file", "path": str(tmp_path / "nothing")},
        run_id="r",
        params={},
        options={},
    )
    with pytest.raises(
        js.StoreNotFoundError,
        match=r"`root` is .*nothing, where there is no campaign \(no manifest.json there\), so "
        r"the run 'r' would belong to none\. Create the campaign with Campaign.create",
    ):
        config.create(EXAMPLE)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(
        js.ConfigError,
        match=r"`root` must be the campaign root's kvstore spec .*not a valid one: .*'driver' "
        r"key.*Build the config with Campaign.run_config",
    ):
        js.RunConfig(root={"path": "x"}, run_id="r", params={}, options={})


def test_a_bad_campaign_config_is_a_config_error():
    campaign = js.Campaign.create(memory_store())
    with pytest.raises(js.ConfigError, match=r"exactly the key 'root' .*got \['root', 'x'\]"):
        js.Campaign.from_config(dict(campaign.to_config(), x=1))
    with pytest.raises(js.ConfigError, match="made by Campaign.to_config.*got 'sweep'"):
        js.Campaign.from_config("sweep")


# ---------------------------------------------------------------------------- parameters


def test_parameters_are_compared_with_their_types():
    """True, 1 and 1.0 are three parameter values (``==`` makes them one)."""
    campaign = js.Campaign.create(memory_store())
    for run_id, x in [("t", True), ("i", 1), ("f", 1.0), ("l", [1, True])]:
        record_run(campaign, run_id, 2, x=x)
    assert [e.run_id for e in campaign.runs(params={"x": True})] == ["t"]
    assert [e.run_id for e in campaign.runs(params={"x": 1})] == ["i"]
    assert [e.run_id for e in campaign.runs(params={"x": 1.0})] == ["f"]
    assert [e.run_id for e in campaign.runs(params={"x": (1, True)})] == ["l"]  # JSON: a list
    assert [e.run_id for e in campaign.runs(params={"x": [True, 1]})] == []
    assert [f["run"] for f in campaign.frames(fields=["e"], params={"x": 1})] == ["i", "i"]
    with pytest.raises(
        js.ConfigError, match=r"`params\['x'\]` is a numpy.int64, which is not JSON"
    ):
        campaign.runs(params={"x": np.int64(1)})

    one, true = (
        campaign.run_config("r", params={"x": 1}),
        campaign.run_config("r", params={"x": True}),
    )
    assert one != true and one == campaign.run_config("r", params={"x": 1})
    assert campaign.entry("t") != dataclasses.replace(campaign.entry("t"), params={"x": 1})
    assert campaign.entry("t") == campaign.entry("t")


@pytest.mark.parametrize(
    "values, dtype",
    [
        ([True, 1], object),  # pandas: a bool column beside an int column is object
        ([1, "a"], object),  # not the strings '1' and 'a'
        ([1.5, None], None),  # None is no scalar parameter: no coordinate
        ([1, 2], np.int64),
        ([1, 2.5], np.float64),  # ints beside floats become floats, as in pandas
        ([True, False], np.bool_),
        (["a", "bc"], np.str_),
        ([2**70, 1], object),  # beyond int64: kept as Python ints
    ],
)
def test_param_coordinates_keep_each_value_and_type(values, dtype):
    campaign = js.Campaign.create(memory_store())
    record_run(campaign, "a", 2, p=values[0])
    record_run(campaign, "b", 1, p=values[1])
    ds = campaign.to_xarray()
    if dtype is None:
        assert "param_p" not in ds.coords
        return
    column = ds["param_p"].values
    assert column.dtype.type is (np.object_ if dtype is object else dtype)
    got = column.tolist()
    assert got == [values[0]] * 2 + [values[1]]
    if dtype is object:
        assert [type(v) for v in got] == [type(values[0])] * 2 + [type(values[1])]


# ---------------------------------------------------------------------------- bad input


def test_a_duplicate_run_id_is_a_clear_error_and_leaves_the_run_alone():
    campaign = js.Campaign.create(memory_store())
    record_run(campaign, "r1", 4)
    with pytest.raises(js.StoreExistsError, match=r"already has a run 'r1' \(status 'closed'"):
        campaign.create_run("r1", EXAMPLE, chunk=4)
    assert campaign.entry("r1").committed == 4 and len(campaign.open_run("r1")) == 4


def test_a_run_store_without_entry_is_not_overwritten(tmp_path):
    campaign = js.Campaign.create(tmp_path / "c")
    js.close(js.ZarrSink.create(tmp_path / "c" / "runs" / "r1", EXAMPLE, chunk=4))
    with pytest.raises(js.StoreExistsError, match="already holds a run store 'runs/r1'"):
        campaign.create_run("r1", EXAMPLE, chunk=4)
    assert campaign.run_ids() == []


@pytest.mark.parametrize(
    "params, match",
    [
        ({"T": np.float32(1.0)}, r"`params\['T'\]` is a numpy.float32, which is not JSON"),
        ({"T": float("nan")}, r"`params\['T'\]` is nan, which JSON cannot hold"),
        ({1: 2}, "has the key 1; JSON object keys must be strings"),
        ({"a": [1, {2, 3}]}, r"`params\['a'\]\[1\]` is a set"),
        ([1, 2], "`params` must be a dict of JSON values; got list"),
    ],
)
def test_params_must_be_json(params, match):
    campaign = js.Campaign.create(memory_store())
    with pytest.raises(js.ConfigError, match=match):
        campaign.create_run("r", EXAMPLE, params=params)
    assert campaign.run_ids() == []


@pytest.mark.parametrize("run_id", ["", "a/b", "-x", "x" * 129, "run id", 3])
def test_run_ids_must_name_a_directory(run_id):
    with pytest.raises(js.ConfigError, match="`run_id` must be 1 to 128 letters"):
        js.Campaign.create(memory_store()).run_config(run_id)


def test_a_manifest_or_entry_from_a_newer_schema_is_a_clear_error(tmp_path):
    root = tmp_path / "c"
    campaign = js.Campaign.create(root)
    record_run(campaign, "r", 4)
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps(dict(manifest, schema_version=99)))
    with pytest.raises(
        js.StoreError,
        match="written with campaign schema version 99; this jaxsinks "
        "reads versions up to 1. Upgrade jaxsinks",
    ):
        js.Campaign.open(root)
    (root / "manifest.json").write_text(json.dumps(manifest))
    entry = json.loads((root / "entries" / "r.json").read_text())
    (root / "entries" / "r.json").write_text(json.dumps(dict(entry, schema_version=2)))
    with pytest.raises(
        js.StoreError, match=r"entry .*r.json was written with campaign schema version 2"
    ):
        js.Campaign.open(root).runs()


@pytest.mark.parametrize("attrs", [[1, 2], "note", 5])
def test_a_manifest_with_damaged_attrs_is_a_clear_error_naming_it(tmp_path, attrs):
    root = tmp_path / "c"
    campaign = js.Campaign.create(root, attrs={"about": "sweep"})
    assert campaign.attrs == {"about": "sweep"}
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps(dict(manifest, attrs=attrs)))
    match = (
        rf"The campaign manifest {re.escape(str(root))}/manifest.json is damaged: its 'attrs' "
        rf"must be a JSON object .*but it is {type(attrs).__name__} {re.escape(repr(attrs))}\. "
        "Restore the file"
    )
    for call in (
        lambda: js.Campaign.open(root),
        lambda: js.Campaign.from_config(campaign.to_config()),
    ):
        with pytest.raises(js.StoreError, match=match):
            call()
    (root / "manifest.json").write_text(
        json.dumps({k: v for k, v in manifest.items() if k != "attrs"})
    )
    assert js.Campaign.open(root).attrs == {}  # none written: none


def test_create_and_open_refuse_the_wrong_root(tmp_path):
    root = tmp_path / "c"
    js.Campaign.create(root)
    with pytest.raises(js.StoreExistsError, match="A campaign already exists"):
        js.Campaign.create(root)
    assert js.Campaign.create(root, exist_ok=True).location == js.Campaign.open(root).location
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file").write_text("x")
    with pytest.raises(js.StoreExistsError, match="is not empty and holds no campaign manifest"):
        js.Campaign.create(tmp_path / "other")
    with pytest.raises(js.StoreNotFoundError, match="There is no campaign at"):
        js.Campaign.open(tmp_path / "missing")


def test_an_unknown_run_id_is_a_config_error_listing_the_runs(tmp_path):
    root = tmp_path / "c"
    campaign = js.Campaign.create(root)
    with pytest.raises(js.ConfigError, match="has no run 'nope'; it has no runs yet"):
        campaign.entry("nope")
    record_run(campaign, "a", 4)
    record_run(campaign, "b", 2)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    match = (
        r"`run_id` is 'nope', but the campaign at .* has no run 'nope'; its runs are "
        r"\['a', 'b'\]\. Pass one of those ids"
    )
    for call in (
        lambda: campaign.entry("nope"),
        lambda: campaign.open_run("nope"),
        lambda: campaign.mark_failed("nope", "killed"),
    ):
        with pytest.raises(js.ConfigError, match=match) as info:
            call()
        assert not isinstance(info.value, KeyError)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert campaign.entry("a").status == "closed"


def test_a_long_list_of_run_ids_is_cut_in_the_message():
    campaign = js.Campaign.create(memory_store())
    for i in range(22):
        js.close(campaign.create_run(f"r{i:02d}", EXAMPLE, chunk=4))
    with pytest.raises(js.ConfigError, match=r"'r19', '\.\.\.'\] \(22 in all\)"):
        campaign.entry("nope")
