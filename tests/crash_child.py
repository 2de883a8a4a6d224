"""A recording that runs until it is killed: the child process of the crash and fault tests.

    python tests/crash_child.py STORE CHUNK STEPS_PER_CALL [--loop scan|while]
        [--max-inflight-bytes N] [--until STEPS] [--recording]

It records `zarr_helpers.frame_at(step)` for every step, in jitted calls of STEPS_PER_CALL steps
(a `lax.scan`, or a `lax.while_loop` with ``--loop while``), continuing the run at STORE
(``mode="a"``), and prints the frames recorded so far after each call (which waits for the call).
With ``--until STEPS`` it stops once STEPS frames are recorded and closes the run, printing
``closed N``. With ``--recording`` the loop runs inside ``jaxsinks.recording`` (the Ctrl-C test
sends SIGINT). Otherwise it runs until it is killed.
"""

import argparse
import sys

import jax
import jax.numpy as jnp

import jaxsinks as js
from zarr_helpers import EXAMPLE, frame_at, run_steps, steps


@jax.jit
def run_while(sink, start, stop):
    """The same recording as `run_steps`, as a `lax.while_loop` over steps ``start..stop``."""

    def body(carry):
        sink, step = carry
        time = 0.25 * step.astype(jnp.float32)
        return js.record(sink, step=step, time=time, frame=lambda: frame_at(step)), step + 1

    return jax.lax.while_loop(lambda c: c[1] < stop, body, (sink, start))[0]


def run_call(sink, start: int, stop: int, loop: str):
    if loop == "while":
        return run_while(sink, jnp.int32(start), jnp.int32(stop))
    return run_steps(sink, steps(start, stop))


def parse_args(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("chunk", type=int)
    parser.add_argument("per_call", type=int)
    parser.add_argument("--loop", choices=("scan", "while"), default="scan")
    parser.add_argument("--max-inflight-bytes", type=int, default=None)
    parser.add_argument("--until", type=int, default=None)
    parser.add_argument("--recording", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    options = {} if args.max_inflight_bytes is None else {"max_inflight_bytes": args.max_inflight_bytes}
    sink = js.ZarrSink.create(args.store, EXAMPLE, chunk=args.chunk, mode="a", **options)
    start = int(sink.flushed)
    if args.recording:
        with js.recording(sink) as rec:
            done = start
            while args.until is None or done < args.until:
                rec.sinks = run_call(rec.sinks, done, next_stop(done, args), args.loop)
                done = int(rec.sinks.recorded)
                print(done, flush=True)
        print("closed", int(rec.sinks.flushed), flush=True)
        return
    done = start
    while args.until is None or done < args.until:
        sink = run_call(sink, done, next_stop(done, args), args.loop)
        done = int(sink.recorded)
        print(done, flush=True)
    sink = js.close(sink)
    print("closed", int(sink.flushed), flush=True)


def next_stop(done: int, args) -> int:
    stop = done + args.per_call
    return stop if args.until is None else min(stop, args.until)

if __name__ == "__main__":
    main()
