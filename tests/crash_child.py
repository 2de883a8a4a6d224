"""A recording that runs until it is killed: the child process of the crash and fault tests.

    python tests/crash_child.py STORE CHUNK STEPS_PER_CALL [--loop scan|while]
        [--max-inflight-bytes N] [--sync-bytes N] [--until STEPS] [--recording]
        [--fields N] [--salt S] [--mode a|w|w-] [--markers] [--warmup] [--linger]
        [--control DIR [--hold]]

It records `zarr_helpers.frame_at(step)` for every step, in jitted calls of STEPS_PER_CALL steps
(a `lax.scan`, or a `lax.while_loop` with ``--loop while``), continuing the run at STORE
(``mode="a"``), and prints the frames recorded so far after each call (which waits for the call).
With ``--until STEPS`` it stops once STEPS frames are recorded and closes the run, printing
``closed N``. With ``--recording`` the loop runs inside ``jaxsinks.recording`` (the Ctrl-C test
sends SIGINT). With ``--driver`` it records steps 0, 1, ... through one `jaxsinks.scan` of
10**7 steps (the Ctrl-C test of the drivers) and prints ``driving`` before it starts. Otherwise it
runs until it is killed.

Options used by ``benchmarks/fault_kill.py`` (none changes the behaviour above when left out):

* ``--fields N`` adds N scalar float32 fields ``f00``, ``f01``, ... (``step + 1000 * (k + 1)``), so
  that creating the run's arrays takes a while; ``--salt S`` adds S to every recorded value (the
  step and time columns excepted), so that two writers' frames can be told apart.
* ``--mode`` is the mode given to `ZarrSink.create`.
* ``--markers`` prints timestamped events instead of bare counts, one per line, as
  ``EVENT VALUE MONOTONIC`` (``time.monotonic()``, comparable across processes on Linux):
  ``start``, ``creating`` (just before `ZarrSink.create`), ``created`` (the sink's ``flushed``),
  ``recorded`` (after each call), ``closing`` (just before `jaxsinks.close`) and ``closed``
  (and ``ready`` and ``holding`` with ``--control``).
* ``--warmup`` compiles the recording (one call on a ``memory://`` run) before creating the run,
  so that the first flushes follow `create` at once.
* ``--linger`` waits, after closing, until the process is killed.
* ``--kill-in-consolidate WHEN`` kills the process (SIGKILL, itself) inside the close's writing
  of consolidated metadata: ``before`` it reads the nodes' metadata, ``before-write`` (read, not
  yet written), or ``after-write`` (written, before close returns).
* ``--control DIR`` records in rounds: before round k (1, 2, ...) it prints ``ready`` and waits
  for the file ``DIR/go<k>``, which holds the total to record to (or ``exit``); it then creates
  the sink (``--mode``), records to that total and closes. With ``--hold`` it prints ``holding``
  and waits for ``DIR/close<k>`` before closing.
"""

import argparse
import os
import pathlib
import signal
import sys
import time as clock

import jax
import jax.numpy as jnp
from zarr_helpers import EXAMPLE, frame_at, run_steps, steps

import jaxsinks as js

#: Set by `main` before the first trace: the extra fields and the salt of the recorded frames.
FIELDS = 0
SALT = 0.0


def extra_field(k: int) -> str:
    return f"f{k:02d}"


def example() -> dict:
    return {**EXAMPLE, **{extra_field(k): jnp.zeros((), jnp.float32) for k in range(FIELDS)}}


def frame(step):
    """`frame_at(step)`, with the `--fields` extras and the `--salt` added."""
    out = dict(frame_at(step))
    s = jnp.asarray(step).astype(jnp.float32)
    out.update({extra_field(k): s + jnp.float32(1000 * (k + 1)) for k in range(FIELDS)})
    if SALT:
        out = {name: value + jnp.float32(SALT) for name, value in out.items()}
    return out


@jax.jit
def run_scan(sink, steps):
    """`zarr_helpers.run_steps` with the frames of `frame` (the same frames without options)."""

    def body(sink, step):
        time = 0.25 * step.astype(jnp.float32)
        return js.record(sink, step=step, time=time, frame=lambda: frame(step)), None

    return jax.lax.scan(body, sink, steps)[0]


@jax.jit
def run_while(sink, start, stop):
    """The same recording as `run_steps`, as a `lax.while_loop` over steps ``start..stop``."""

    def body(carry):
        sink, step = carry
        time = 0.25 * step.astype(jnp.float32)
        return js.record(sink, step=step, time=time, frame=lambda: frame(step)), step + 1

    return jax.lax.while_loop(lambda c: c[1] < stop, body, (sink, start))[0]


def run_call(sink, start: int, stop: int, loop: str):
    if loop == "while":
        return run_while(sink, jnp.int32(start), jnp.int32(stop))
    if not FIELDS and not SALT:
        return run_steps(sink, steps(start, stop))
    return run_scan(sink, steps(start, stop))


def parse_args(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("chunk", type=int)
    parser.add_argument("per_call", type=int)
    parser.add_argument("--loop", choices=("scan", "while"), default="scan")
    parser.add_argument("--max-inflight-bytes", type=int, default=None)
    parser.add_argument("--sync-bytes", type=int, default=None)
    parser.add_argument("--until", type=int, default=None)
    parser.add_argument("--recording", action="store_true")
    parser.add_argument("--driver", action="store_true")
    parser.add_argument(
        "--kill-in-consolidate", choices=("before", "before-write", "after-write"), default=None
    )
    parser.add_argument("--fields", type=int, default=0)
    parser.add_argument("--salt", type=float, default=0.0)
    parser.add_argument("--mode", choices=("a", "w", "w-"), default="a")
    parser.add_argument("--markers", action="store_true")
    parser.add_argument("--warmup", action="store_true")
    parser.add_argument("--linger", action="store_true")
    parser.add_argument("--control", default=None)
    parser.add_argument("--hold", action="store_true")
    return parser.parse_args(argv)


class Out:
    """What the child prints: bare counts (the original format) or timestamped events."""

    def __init__(self, markers: bool) -> None:
        self.markers = markers

    def event(self, name: str, value: int = 0) -> None:
        if self.markers:
            print(name, value, repr(clock.monotonic()), flush=True)

    def count(self, n: int) -> None:
        print(f"recorded {n} {clock.monotonic()!r}" if self.markers else n, flush=True)

    def closed(self, n: int) -> None:
        print(f"closed {n} {clock.monotonic()!r}" if self.markers else f"closed {n}", flush=True)


def main(argv=None) -> None:
    global FIELDS, SALT
    args = parse_args(sys.argv[1:] if argv is None else argv)
    FIELDS, SALT = args.fields, args.salt
    if args.recording or args.driver:
        # The Ctrl-C tests send SIGINT. A process started from a shell's background job inherits
        # SIGINT ignored (bash ignores it for `cmd &` without job control), and Python keeps an
        # ignored SIGINT ignored: the child would never see the Ctrl-C the test is about.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.kill_in_consolidate:
        kill_in_consolidate(args.kill_in_consolidate)
    if args.sync_bytes is not None:  # sync between records once this many bytes are written
        from jaxsinks._io.zarr_writer import ZarrWriter

        ZarrWriter.sync_bytes = args.sync_bytes
    out = Out(args.markers)
    out.event("start")
    options = (
        {} if args.max_inflight_bytes is None else {"max_inflight_bytes": args.max_inflight_bytes}
    )
    if args.warmup:
        warm = js.ZarrSink.create(
            f"memory://warmup-{os.getpid()}", example(), chunk=args.chunk, **options
        )
        js.close(run_call(warm, 0, args.per_call, args.loop))
    if args.control is not None:
        rounds(args, options, out)
        return
    out.event("creating")
    sink = js.ZarrSink.create(args.store, example(), chunk=args.chunk, mode=args.mode, **options)
    start = int(sink.flushed)
    out.event("created", start)
    if args.driver:
        print("driving", flush=True)
        js.scan(
            lambda n: n + 1,
            jnp.int32(start),
            sink,
            steps=10**7,
            step0=start,
            frame=frame,
            time=lambda n: 0.25 * n.astype(jnp.float32),
            record_initial=True,
        )
        return
    if args.recording:
        with js.recording(sink) as rec:
            done = start
            while args.until is None or done < args.until:
                rec.sinks = run_call(
                    rec.sinks, done, next_stop(done, args.per_call, args.until), args.loop
                )
                done = int(rec.sinks.recorded)
                out.count(done)
            out.event("closing", done)
        out.closed(int(rec.sinks.flushed))
        return
    sink = record_to(sink, start, args.until, args, out)
    out.event("closing", int(sink.recorded))
    sink = js.close(sink)
    out.closed(int(sink.flushed))
    linger(args)


def record_to(sink, done: int, until, args, out: Out):
    while until is None or done < until:
        sink = run_call(sink, done, next_stop(done, args.per_call, until), args.loop)
        done = int(sink.recorded)
        out.count(done)
    return sink


def rounds(args, options, out: Out) -> None:
    """The ``--control`` rounds: wait for ``go<k>``, create, record to its total, close."""
    control = pathlib.Path(args.control)
    for k in range(1, 1_000_000):
        out.event("ready")
        order = wait_for(control / f"go{k}")
        if order == "exit":
            return
        total = int(order)
        out.event("creating")
        sink = js.ZarrSink.create(
            args.store, example(), chunk=args.chunk, mode=args.mode, **options
        )
        start = int(sink.flushed)
        out.event("created", start)
        sink = record_to(sink, start, total, args, out)
        if args.hold:
            out.event("holding", int(sink.recorded))
            wait_for(control / f"close{k}")
        out.event("closing", int(sink.recorded))
        sink = js.close(sink)
        out.closed(int(sink.flushed))
    linger(args)


def kill_in_consolidate(when: str) -> None:
    """SIGKILL this process at `when` inside `ZarrWriter._consolidate` (see the module doc)."""
    import signal

    from jaxsinks._io import tsio, zarr_writer

    def die(*_):
        os.kill(os.getpid(), signal.SIGKILL)

    consolidate, read_all = zarr_writer.ZarrWriter._consolidate, tsio.read_all

    def consolidating(self, committed):
        if when == "before":
            die()
        if when == "before-write":  # die once the nodes' metadata is read
            tsio.read_all = lambda *args, **kwargs: die(read_all(*args, **kwargs))
        consolidate(self, committed)
        if when == "after-write":
            die()

    zarr_writer.ZarrWriter._consolidate = consolidating


def wait_for(path: pathlib.Path) -> str:
    """The content of `path` once it exists (it is written whole, then renamed into place)."""
    while True:
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            clock.sleep(0.0005)


def linger(args) -> None:
    while args.linger:
        clock.sleep(1.0)


def next_stop(done: int, per_call: int, until) -> int:
    stop = done + per_call
    return stop if until is None else min(stop, until)


if __name__ == "__main__":
    main()
