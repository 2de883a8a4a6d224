"""Runs written by several processes of one multi-controller JAX job (`jax.distributed`).

Every process writes only its own shards; the processes agree through JAX's own coordination
service (the one `jax.distributed.initialize` starts), with no home-made cluster layer and no
device collectives:

* the primary process (index 0) creates the run; the others attach to it after a barrier;
* each process publishes the frames it has made durable; the primary records, as the run's
  committed count, the minimum over all processes: a frame counts once every process stored it;
* at close every process makes its writes durable and publishes its final count; after a barrier
  the primary writes the final count and status; a last barrier lets everyone return.

Processes must create their sinks in the same order (as SPMD programs do): keys and barriers are
named by that order.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import jax

from .._core.errors import StoreError
from .callback import distributed_client

#: How long a barrier waits for the other processes.
BARRIER_TIMEOUT_MS = 10 * 60 * 1000

_SEQUENCE = itertools.count()


class Coordinator:
    """The processes writing one run: barriers and published values, by name."""

    def __init__(self, client: Any, process: int, count: int) -> None:
        self.client = client
        self.process = process
        self.count = count
        self.prefix = f"jaxsinks/run-{next(_SEQUENCE)}"

    @property
    def primary(self) -> bool:
        """Whether this is the process that creates the run and records its committed count."""
        return self.process == 0

    def barrier(self, tag: str) -> None:
        """Wait until every process reaches the barrier `tag` of this run."""
        try:
            self.client.wait_at_barrier(f"{self.prefix}/{tag}", BARRIER_TIMEOUT_MS)
        except Exception as err:  # noqa: BLE001 - the runtime raises its own error types
            raise StoreError(
                f"Process {self.process} of {self.count} timed out or failed waiting for the "
                f"others at '{tag}' of a multi-process run: {err}. Every process must create and "
                "close the same sinks in the same order."
            ) from None

    def publish(self, tag: str, value: dict[str, Any]) -> None:
        """Make `value` this process's current `tag` (replacing an earlier one)."""
        self.client.key_value_set(
            f"{self.prefix}/{tag}/{self.process}", json.dumps(value), allow_overwrite=True
        )

    def peek(self, tag: str) -> list[dict[str, Any] | None]:
        """Every process's current `tag`, None where a process has not published one yet."""
        out = []
        for process in range(self.count):
            try:
                out.append(
                    json.loads(self.client.key_value_try_get(f"{self.prefix}/{tag}/{process}"))
                )
            except Exception:  # noqa: BLE001 - NOT_FOUND: not published yet
                out.append(None)
        return out

    def fetch(self, tag: str, process: int) -> dict[str, Any]:
        """Process `process`'s `tag`, waiting until it is published."""
        return json.loads(
            self.client.blocking_key_value_get(f"{self.prefix}/{tag}/{process}", BARRIER_TIMEOUT_MS)
        )

    def gather(self, tag: str) -> list[dict[str, Any]]:
        """Every process's `tag`, waiting for each."""
        return [self.fetch(tag, p) for p in range(self.count)]


def coordinator() -> Coordinator | None:
    """The coordinator of this multi-process job, or None when JAX runs as one process."""
    if jax.process_count() == 1:
        return None
    client = distributed_client()
    if client is None:
        raise StoreError(
            "JAX runs several processes but jax.distributed was not initialized in this one; call "
            "jax.distributed.initialize(...) before creating sinks."
        )
    return Coordinator(client, jax.process_index(), jax.process_count())
