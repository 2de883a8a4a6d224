"""Two JAX processes (jax.distributed on localhost, 2 CPU devices each) record one sharded run."""

import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from fs_helpers import stored_bytes
from sharded_helpers import example, expected, initial, sharded_runner

import jaxsinks as js

HERE = pathlib.Path(__file__).parent
STEPS = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(store: pathlib.Path, mistake: str | None = None) -> list[str]:
    """Both processes' output (each must exit 0, or 3 when `mistake` makes create fail)."""
    port = free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "multihost_child.py"),
                str(i),
                str(port),
                str(store),
                str(STEPS),
                *([mistake] if mistake else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=HERE,
        )
        for i in range(2)
    ]
    outputs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=240)
        finally:
            proc.kill()
        assert proc.returncode == (3 if mistake else 0), out
        outputs.append(out)
    return outputs


def test_two_processes_write_the_same_run_as_one_process(tmp_path):
    outputs = run_processes(tmp_path / "multi")
    assert "process 0: 2 of 4 devices, wrote shards [0, 1], closed" in outputs[0]
    assert "process 1: 2 of 4 devices, wrote shards [2, 3], closed" in outputs[1]

    mesh = jax.make_mesh((4,), ("r",))
    sink = js.ZarrSink.create(tmp_path / "single", example(), chunk=4, mesh=mesh, axis="r")
    _, sink = sharded_runner(mesh, sink)(sink, initial(mesh), jnp.arange(STEPS, dtype=jnp.int32))
    js.close(sink)

    run = js.open(tmp_path / "multi")
    assert len(run) == STEPS and run.committed == STEPS and run.status == "closed"
    np.testing.assert_array_equal(run["x"][:], expected(np.arange(STEPS))["x"])
    assert stored_bytes(tmp_path / "multi", identity=False) == stored_bytes(
        tmp_path / "single", identity=False
    )


def test_a_process_that_cannot_attach_fails_every_process_at_create(tmp_path):
    """Process 1 names another store: it is refused, and process 0 raises too (it waited at
    close for process 1 for ten minutes), with the run's frames not written."""
    outputs = run_processes(tmp_path / "multi", mistake="store")
    assert (
        f"process 1: StoreError: This process creates its sink at {tmp_path}/multi-1, but"
        in (outputs[1])
    )
    assert "the primary process created its run at " in outputs[1]
    assert "process 0: StoreError: Process 1 of 2 could not attach to the run at " in outputs[0]
    assert "Every process must create the same sinks" in outputs[0]
    assert not (tmp_path / "multi-1").exists()
    assert len(js.open(tmp_path / "multi")) == 0


def test_processes_recording_other_fields_fail_every_process_at_create(tmp_path):
    outputs = run_processes(tmp_path / "multi", mistake="fields")
    assert (
        "process 1: SchemaMismatchError: Cannot write this process's shards into the run"
        in (outputs[1])
    )
    assert "field 'y' is in the frame but not in the stored run" in outputs[1]
    assert "process 0: StoreError: Process 1 of 2 could not attach" in outputs[0]
    assert "SchemaMismatchError: Cannot write this process's shards" in outputs[0]
