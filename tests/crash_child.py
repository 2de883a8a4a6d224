"""A recording that runs until it is killed: the child process of the crash tests.

    python tests/crash_child.py STORE CHUNK STEPS_PER_CALL

It records `zarr_helpers.frame_at(step)` for every step, in jitted calls of STEPS_PER_CALL steps,
and prints the number of calls done after each one.
"""

import sys

import jaxsinks as js
from zarr_helpers import EXAMPLE, run_steps, steps


def main() -> None:
    store, chunk, per_call = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sink = js.ZarrSink.create(store, EXAMPLE, chunk=chunk, mode="a")
    start = int(sink.flushed)
    call = 0
    while True:
        sink = run_steps(sink, steps(start + call * per_call, start + (call + 1) * per_call))
        call += 1
        print(call, flush=True)


if __name__ == "__main__":
    main()
