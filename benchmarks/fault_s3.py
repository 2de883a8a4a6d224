"""How long a paused S3 server takes to surface as a `WriteError`, with jaxsinks' defaults.

    python benchmarks/fault_s3.py [--when close run] [--retries 4]

A local S3 server (moto) takes a run's first 16 frames; then it is paused (SIGSTOP: it accepts
connections and never answers) either right before `js.close` (`close`) or before more blocks
are flushed (`run`), and the time until `js.close` raises is printed. The stall detection
(`TENSORSTORE_CURL_LOW_SPEED_*`, 256 B/s for 5 s unless set) and the retries (`retries`, default 4,
0.25 s to 4 s apart) bound each request; the final "failed" status write after a failure gets at
most `jaxsinks._io.zarr_writer.FAILED_STATUS_TIMEOUT` seconds. Results: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from zarr_helpers import EXAMPLE, run_steps, steps  # noqa: E402

import jaxsinks as js  # noqa: E402
from jaxsinks.testing import local_s3_server  # noqa: E402


def time_to_error(when: str, retries: int) -> tuple[float, str]:
    with local_s3_server("jaxsinks-bench") as server:
        store = server.store(f"paused-{when}.zarr", retries=retries)
        sink = run_steps(js.ZarrSink.create(store, EXAMPLE, chunk=8), steps(0, 20))
        jax.block_until_ready(sink)
        while js.open(store).committed < 16:
            time.sleep(0.05)
        server.pause()
        started = time.monotonic()
        try:
            if when == "run":
                sink = run_steps(sink, steps(20, 60))
            js.close(sink)
            outcome = "no error"
        except js.WriteError as err:
            outcome = f"WriteError, {err.committed} frames committed"
        elapsed = time.monotonic() - started
        server.resume()
    return elapsed, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--when", nargs="+", default=["close", "run"], choices=["close", "run"])
    parser.add_argument("--retries", type=int, default=4)
    args = parser.parse_args()
    print("| paused at | retries | seconds to error | outcome |\n|---|---|---|---|")
    for when in args.when:
        elapsed, outcome = time_to_error(when, args.retries)
        print(f"| {when} | {args.retries} | {elapsed:.1f} | {outcome} |", flush=True)


if __name__ == "__main__":
    main()
