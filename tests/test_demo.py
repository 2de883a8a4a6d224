"""The main demo job (`jaxsinks demo`), at a small size."""

import csv

import numpy as np
import pytest

import jaxsinks as js
from jaxsinks.demo import relax


def test_the_demo_records_everything_and_summarises(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        relax.main(["--out", str(out), "--clusters", "5", "--max-steps", "2000", "--no-progress"])
        == 0
    )
    text = capsys.readouterr().out
    assert "converged (fmax < 0.001): 5/5" in text
    steps = int(text.split(" steps in ")[0].split()[-1])

    traj = js.open(out / "trajectory.zarr")
    assert len(traj) == (steps + 9) // 10 and traj.steps.tolist() == list(range(0, steps, 10))
    sizes = relax.cluster_sizes(5)
    assert traj.attrs["sizes"] == sizes
    assert [a.shape for a in traj["positions"][-1]] == [(n, 3) for n in sizes]  # true lengths

    log = js.open(out / "log.zarr")
    assert len(log) == steps and np.all(log["fmax"][-1] < relax.FMAX)
    with open(out / "log.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][:4] == ["step", "time", "converged", "energy[0]"] and len(rows) == steps + 1
    assert rows[-1][2] == "5"  # all converged at the last step
    assert (out / "energy_fmax.png").read_bytes()[:4] == b"\x89PNG"
    for where in ("trajectory.zarr", "log.zarr", "log.csv", "energy_fmax.png", "compression"):
        assert where in text


def test_a_second_run_gets_a_new_directory_or_needs_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["--clusters", "2", "--max-steps", "50", "--no-progress"]
    assert relax.main(args) == 0 and relax.main(args) == 0
    text = capsys.readouterr().out
    assert "new run directory demo-output/run-001" in text
    assert "new run directory demo-output/run-002 (runs 1-1 exist" in text
    with pytest.raises(js.StoreExistsError, match="Pass --overwrite"):
        relax.main(["--out", "demo-output/run-001", *args])
    assert relax.main(["--out", "demo-output/run-001", "--overwrite", *args]) == 0
    assert "(overwriting)" in capsys.readouterr().out
    # a file of the user's named like an output: refused before any earlier output is replaced
    run = tmp_path / "demo-output" / "run-001"
    (run / "log.csv").write_text("precious")
    before = (run / "trajectory.zarr" / "zarr.json").read_bytes()
    with pytest.raises(js.StoreExistsError, match="is not a CSV log"):
        relax.main(["--out", str(run), "--overwrite", *args])
    assert (run / "log.csv").read_text() == "precious"
    assert (run / "trajectory.zarr" / "zarr.json").read_bytes() == before


def test_overwrite_replaces_only_what_an_earlier_demo_wrote(tmp_path):
    args = ["--clusters", "2", "--max-steps", "50", "--no-progress", "--overwrite"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(js.StoreExistsError, match=r"holds files the demo did not write \(thesis"):
        relax.main(["--out", str(out), *args])
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "log.csv").write_text("step,time,e\n")
    with pytest.raises(
        js.StoreExistsError, match="holds the output of an earlier demo.*--overwrite"
    ):
        relax.main(["--out", str(earlier), *args[:-1]])
    # a folder named like a run of the demo's that is not a jaxsinks run
    (out / "thesis.tex").unlink()
    (out / "log.zarr").mkdir()
    (out / "log.zarr" / "data.bin").write_bytes(b"x")
    with pytest.raises(js.StoreError, match="not a jaxsinks run.*does not overwrite or delete"):
        relax.main(["--out", str(out), *args])
    assert (out / "log.zarr" / "data.bin").read_bytes() == b"x"
