"""One process of a 2-process JAX job (2 CPU devices each) recording a sharded run.

Usage: python multihost_child.py PROCESS_ID PORT STORE STEPS [MISTAKE]

MISTAKE makes process 1 create its sink differently: ``store`` (at STORE-1) or ``fields`` (a
field named ``y``); each process then prints the error its create raised and exits with 3.
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

process, port, store, steps = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
mistake = sys.argv[5] if len(sys.argv) > 5 else None
jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{port}",
    num_processes=2,
    process_id=process,
    initialization_timeout=120,
)

import jax.numpy as jnp  # noqa: E402
from sharded_helpers import example, initial, sharded_runner  # noqa: E402

import jaxsinks as js  # noqa: E402
from jaxsinks._io import writer as _writer  # noqa: E402

written = set()  # the shards whose blocks this process wrote
_submit = _writer.HostWriter.submit


def _counting(self, offset, n, values, shard=0):
    written.add(shard)
    return _submit(self, offset, n, values, shard)


_writer.HostWriter.submit = _counting

mesh = jax.make_mesh((4,), ("r",))
frame = example()
if process == 1 and mistake == "store":
    store = f"{store}-1"
if process == 1 and mistake == "fields":
    frame = {"y": frame["x"], "e": frame["e"]}
try:
    sink = js.ZarrSink.create(store, frame, chunk=4, mesh=mesh, axis="r")
except js.JaxsinksError as err:
    print(f"process {process}: {type(err).__name__}: {err}", flush=True)
    jax.distributed.shutdown()
    sys.exit(3)
x, sink = sharded_runner(mesh, sink)(sink, initial(mesh), jnp.arange(steps, dtype=jnp.int32))
js.close(sink)
print(
    f"process {jax.process_index()}: {jax.local_device_count()} of {jax.device_count()} devices, "
    f"wrote shards {sorted(written)}, closed",
    flush=True,
)
jax.distributed.shutdown()
