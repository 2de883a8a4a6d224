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


def run_processes(store: pathlib.Path) -> list[str]:
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
        assert proc.returncode == 0, out
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
