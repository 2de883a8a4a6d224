"""The host call: a side-effecting call from a compiled program to Python, operands as numpy.

`host_call(fn, result_avals, *args)` is how jaxsinks leaves a compiled program (a sink's flush).
It binds one primitive, built from public JAX (`jax.extend.core.Primitive`, `jax.interpreters`),
with io_callback's unordered IO effect: `jit`, `lax.scan`, `lax.cond`, `lax.while_loop` and
`shard_map` keep it and run it exactly as often as the program reaches it (inside `shard_map`
once per device, with that device's operands), and dead-code elimination keeps it. Under `grad`,
JAX still drops a call inside a differentiated `lax.scan` whose result is unused: a caller threads
a result into its loop carry (a sink adds the flush's acknowledgement to its ``flushed`` counter).
It has no derivative (operands must be `stop_gradient`-ed); `jvp` and `vmap` raise
`TransformError`.

How it reaches Python is chosen when the program is lowered, when the platform and the
partitioning are known (`_lowering_route`):

``buffer_callback``: CPU, one device or per device (`shard_map`); the default
    `jax.experimental.buffer_callback` with ``has_side_effect=True``: `fn` gets numpy views of
    XLA's own operand buffers, so no copy is made before `fn` runs (0 copies per flushed block;
    `benchmarks/bench_copies.py` counts them). The views are valid only during the call: the
    writer copies the block, or waits until TensorStore has, before returning. jaxlib's views are
    writeable; `fn` gets them through a read-only memoryview, so nothing can write into XLA's
    buffers (not even by setting the WRITEABLE flag back). Results are copied into the output
    buffers `buffer_callback` passes in.
``private``: CPU, a program partitioned automatically over several devices; older JAX
    io_callback without its `device_put`: `emit_python_callback` with io_callback's sharding,
    from ``jax._src`` internals, imported only here and only when this route is taken (never on
    the default route of a one-device or `shard_map` program). `fn` gets the numpy arrays jaxlib
    copies the operands into (1 copy). Used where ``buffer_callback`` cannot run: an automatically
    partitioned program must run the call once on device 0 with the gathered operands, and XLA
    (with Shardy) drops the maximal sharding of a buffer callback and then refuses a
    side-effecting custom call without a sharding; plain io_callback there aborts on jax 0.10.2
    with MiB blocks (its `device_put` waits for the CPU thread pool the program occupies).
``io_callback``: other platforms, and the last resort
    `jax.experimental.io_callback`, unordered (public; 2 host copies per block on CPU). A GPU
    buffer callback gets device memory, not host memory, so the block has to be copied to the host
    anyway.

The environment variable ``JAXSINKS_HOST_CALL``, read at import, forces a route for testing:
``auto`` (the default, as above), ``buffer_callback``, ``private``, ``io_callback``, or
``fallback`` (what ``auto`` becomes without `buffer_callback`: ``private`` if the internals it
needs exist, else ``io_callback``). For example ``JAXSINKS_HOST_CALL=fallback pytest
tests/test_zarr_sink.py`` runs the sink tests on the fallback. `ROUTE` holds the setting;
assigning it (tests monkeypatch it) affects programs traced afterwards. A forced
``buffer_callback`` fails in an automatically partitioned program, and a forced ``io_callback``
can abort on jax 0.10.2 with several CPU devices and MiB blocks (tests/test_sharded.py).

A Ctrl-C (SIGINT) never interrupts a host call half way (a flush half done would leave the writer
unable to tell which frames it owns). One that arrives while a host call runs on the main thread
is held until the call is done and delivered once the compiled program returns to Python, so the
sinks it returns are complete and close cleanly (`guard_interrupts` installs the handler that
holds it, wrapping the one in place). Inside `interrupt_aborts` (the drivers, whose one compiled
loop may run for hours, while the main thread waits in XLA) the next host call to finish its work
after a Ctrl-C raises it, ending the program; the signal is seen there through a wakeup pipe
(`signal.set_wakeup_fd`), since Python runs its handler only once the main thread is back.

This is the one module of jaxsinks that touches ``jax._src`` (the ``private`` route and
`distributed_client`), each use feature-detected (tests/test_layers.py checks that no other does).
"""

from __future__ import annotations

import _thread
import contextlib
import functools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from .._core.errors import TransformError

ENV_VAR = "JAXSINKS_HOST_CALL"
ROUTES = ("buffer_callback", "private", "io_callback")

_buffer_callback: Callable[..., Any] | None
try:  # present in jax 0.10.2 and 0.12; the zero-copy route on CPU
    from jax.experimental.buffer_callback import buffer_callback as _buffer_callback
except ImportError:  # pragma: no cover - older JAX
    _buffer_callback = None


def host_call(
    fn: Callable[..., Sequence[np.ndarray]], result_avals: Sequence[Any], *args: Any
) -> list[Any]:
    """Call ``fn(*numpy_args)`` on the host from inside a compiled program; returns its results.

    `fn` receives read-only numpy arrays that are valid only during the call (copy what you keep)
    and returns one array per entry of `result_avals` (`jax.ShapeDtypeStruct`s), converted to its
    dtype. Inside `shard_map` each device calls `fn` with its own operands.
    """
    avals = tuple(jax.ShapeDtypeStruct(tuple(a.shape), np.dtype(a.dtype)) for a in result_avals)
    return list(_primitive().bind(*args, target=_Target(fn, avals), route=ROUTE))


class _Target:
    """`fn` with its result types; equal for equal `fn`s, so that programs are cached alike."""

    def __init__(self, fn: Callable[..., Sequence[np.ndarray]], avals: tuple[Any, ...]) -> None:
        self.fn = fn
        self.avals = avals

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Target) and (self.fn, self.avals) == (other.fn, other.avals)

    def __hash__(self) -> int:
        return hash((self.fn, self.avals))

    def __repr__(self) -> str:
        return f"host_call({getattr(self.fn, '__qualname__', self.fn)})"

    def results(self, operands: Sequence[np.ndarray]) -> list[np.ndarray]:
        results = list(self.fn(*operands))
        if len(results) != len(self.avals):
            raise ValueError(
                f"jaxsinks host call {self!r} returned {len(results)} results, "
                f"expected {len(self.avals)}"
            )
        out = []
        for r, aval in zip(results, self.avals):
            r = np.asarray(r, dtype=aval.dtype)
            if r.shape != aval.shape:
                raise ValueError(
                    f"jaxsinks host call {self!r} returned shape {r.shape}, expected {aval.shape}"
                )
            out.append(r)
        return out

    # buffer_callback: views of XLA's buffers in; results written into XLA's output buffers.
    def on_buffers(self, ctx: Any, outs: Sequence[Any], *operands: Any) -> None:
        del ctx
        guard_interrupts()
        for out, r in zip(outs, self.results([read_only(x) for x in operands])):
            np.copyto(np.asarray(out), r, casting="no")
        _INTERRUPT.after_call()

    # io_callback: jax.Arrays on a CPU device in; private: numpy arrays jaxlib copied. Numpy out.
    def on_arrays(self, *operands: Any) -> tuple[np.ndarray, ...]:
        guard_interrupts()
        results = tuple(self.results([read_only(x) for x in operands]))
        _INTERRUPT.after_call()
        return results


# ----------------------------------------------------------------------- Ctrl-C during a call


class _HeldInterrupt:
    """The SIGINT handler that holds a Ctrl-C arriving during a host call (see the module doc).

    A held Ctrl-C is delivered again (`_thread.interrupt_main`) every `RETRY_S` seconds from a
    helper thread until it lands outside a host call, where the wrapped handler runs (Python's
    default raises `KeyboardInterrupt`). Inside `interrupt_aborts`, a host call that finishes its
    work after a Ctrl-C (held here, or seen in the wakeup pipe) raises `KeyboardInterrupt` itself.
    """

    RETRY_S = 0.02

    def __init__(self) -> None:
        self.wrapped: Any = None  # the handler in place when this one was installed
        self.held = threading.Event()
        self.lock = threading.Lock()
        self.aborts: list[int] = []  # read ends of the wakeup pipes of `interrupt_aborts` blocks
        self.codes = frozenset({_Target.on_buffers.__code__, _Target.on_arrays.__code__})

    def __call__(self, signum: int, frame: Any) -> Any:
        if not self.in_host_call(frame):
            self.held.clear()
            return self.wrapped(signum, frame)
        if not self.held.is_set():
            self.held.set()
            threading.Thread(target=self.redeliver, name="jaxsinks-interrupt", daemon=True).start()
        return None

    def in_host_call(self, frame: Any) -> bool:
        """Whether `frame` runs inside a host call (ours, or JAX's wrapper around it)."""
        while frame is not None:
            code = frame.f_code
            if code in self.codes or code.co_filename.endswith(_JAX_CALLBACK_FILES):
                return True
            frame = frame.f_back
        return False

    def after_call(self) -> None:
        """At the end of a host call's work: inside `interrupt_aborts`, raise a Ctrl-C that came."""
        if self.aborts and (self.held.is_set() or self.signalled()):
            self.held.clear()  # raised once: the close that follows must run
            _SEEN.clear()
            raise KeyboardInterrupt

    def signalled(self) -> bool:
        """Whether a SIGINT was written to the wakeup pipe (kept there for the next caller)."""
        with self.lock:
            fd = self.aborts[-1] if self.aborts else None
            if fd is None:
                return False
            try:
                seen = os.read(fd, 4096)
            except BlockingIOError:
                return False
            _SEEN.extend(seen)
            return signal.SIGINT in _SEEN

    def redeliver(self) -> None:
        while self.held.is_set():
            time.sleep(self.RETRY_S)
            if self.held.is_set():
                _thread.interrupt_main()


_JAX_CALLBACK_FILES = (
    os.path.join("jax", "_src", "buffer_callback.py"),
    os.path.join("jax", "_src", "callback.py"),
)
_MAIN = threading.main_thread()
_INTERRUPT = _HeldInterrupt()
_SEEN = bytearray()  # the signal numbers read from the wakeup pipe, for the previous reader


def guard_interrupts() -> None:
    """Install the handler that holds a Ctrl-C during host calls, wrapping the SIGINT handler in
    place, when called on the main thread and that handler is a Python callable (Python's default
    one, or the user's); a no-op otherwise and once installed."""
    if threading.current_thread() is not _MAIN:
        return
    current = signal.getsignal(signal.SIGINT)
    if current is _INTERRUPT or not callable(current):
        return
    _INTERRUPT.wrapped = current
    signal.signal(signal.SIGINT, _INTERRUPT)


def raise_if_interrupted() -> None:
    """Inside `interrupt_aborts`, raise `KeyboardInterrupt` if a Ctrl-C came (from any thread:
    another host callback, such as a progress bar's, can end the program too)."""
    _INTERRUPT.after_call()


@contextlib.contextmanager
def interrupt_aborts() -> Iterator[None]:
    """Within this block (on the main thread) a Ctrl-C ends the compiled program at the next host
    call that finishes its work (the drivers' one long loop), not after the program returns.

    A wakeup pipe (`signal.set_wakeup_fd`) lets host calls on XLA's threads see the signal while
    the main thread waits in XLA; the file descriptor in place before is restored afterwards, and
    the signal numbers read meanwhile are written to it (asyncio's loop, if one set it, sees them).
    Elsewhere (another thread) the block changes nothing.
    """
    if threading.current_thread() is not _MAIN:
        yield
        return
    guard_interrupts()
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    with _INTERRUPT.lock:
        _INTERRUPT.aborts.append(read)
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous, warn_on_full_buffer=False)
        with _INTERRUPT.lock:
            _INTERRUPT.aborts.remove(read)
            with contextlib.suppress(BlockingIOError):
                _SEEN.extend(os.read(read, 4096))
            if previous >= 0 and _SEEN:
                with contextlib.suppress(OSError):
                    os.write(previous, bytes(_SEEN))
            _SEEN.clear()
        os.close(read)
        os.close(write)


def read_only(x: Any) -> np.ndarray:
    """A read-only numpy view of `x` (anything with ``__array__`` on the host), without a copy.

    Built on a read-only memoryview, so its WRITEABLE flag cannot be turned back on.
    """
    a = np.asarray(x)
    if not a.flags.c_contiguous:  # not for XLA's buffers (dense, row-major); keep it a view
        view = a.view()
        view.flags.writeable = False
        return view
    raw = a.reshape(-1).view(np.uint8).data.toreadonly()  # as bytes: any dtype (bfloat16 too)
    return np.frombuffer(raw, dtype=a.dtype).reshape(a.shape)


# ------------------------------------------------------------------------------ the primitive


@functools.cache
def _primitive() -> Any:
    """jaxsinks' host-call primitive, from public JAX (`jax.extend`, `jax.interpreters`).

    It has io_callback's unordered IO effect (so `jit`, control flow, `shard_map` and DCE treat it
    as an io_callback) and is lowered, once the platform and the partitioning are known, through
    the route chosen by `_lowering_route`.
    """
    from jax.experimental import io_callback
    from jax.extend.core import Primitive
    from jax.interpreters import ad, batching, mlir

    def probe():
        return io_callback(lambda: np.int32(0), jax.ShapeDtypeStruct((), np.int32), ordered=False)

    (effect,) = jax.make_jaxpr(probe)().effects

    prim = Primitive("jaxsinks_host_call")
    prim.multiple_results = True

    @prim.def_impl
    def _impl(*args, target, route):  # eager: compile the call alone
        return jax.jit(functools.partial(prim.bind, target=target, route=route))(*args)

    @prim.def_effectful_abstract_eval
    def _abstract_eval(*avals, target, route):
        del avals, route
        return [jax.typeof(a) for a in target.avals], {effect}

    def _lowering(ctx, *args, target, route):
        route = _lowering_route(ctx, route)
        if route == "private":
            return _private_lowering(ctx, *args, target=target)
        call = _on_cpu_buffers if route == "buffer_callback" else _io_call
        return mlir.lower_fun(functools.partial(call, target), multiple_results=True)(ctx, *args)

    mlir.register_lowering(prim, _lowering, cacheable=False)

    def no_transform(name: str):
        def rule(*args, **kwargs):
            remedy = "record outside it" if name == "vmap" else "stop_gradient its operands"
            raise TransformError(
                f"A jaxsinks host call (a sink's flush) cannot be transformed by {name}; {remedy}."
            )

        return rule

    ad.primitive_jvps[prim] = no_transform("jvp")
    ad.primitive_transposes[prim] = no_transform("transpose")
    batching.primitive_batchers[prim] = no_transform("vmap")
    return prim


def _lowering_route(ctx: Any, route: str) -> str:
    """The route of this lowering: `route`, or for ``auto`` the best one for the platform and the
    partitioning, known only now.

    * CPU, one device or per device (inside `shard_map`): ``buffer_callback``.
    * CPU, a program partitioned automatically over several devices (jit with sharded inputs,
      outside `shard_map`): the call must run once, on device 0, with the gathered operands. XLA
      refuses a side-effecting custom call without a sharding there, and drops the maximal
      sharding io_callback's lowering would give a buffer callback (Shardy keeps it only for its
      own Python callback targets), so this takes ``private`` (io_callback there aborts on
      jax 0.10.2 with MiB blocks: rendezvous timeout), or ``io_callback`` without it.
    * Other platforms (a GPU buffer callback gets device memory, not host memory), and a
      `shard_map` that leaves mesh axes automatic (JAX raises its own error): ``io_callback``.
    """
    if route != "auto":
        return route
    platforms = getattr(ctx, "platforms", None) or ctx.module_context.platforms
    axis_context = ctx.module_context.axis_context
    manual = getattr(axis_context, "manual_axes", None)
    if tuple(platforms) != ("cpu",) or _buffer_callback is None:
        return "io_callback"
    if manual is not None:  # SPMDAxisContext (shard_map): per device when every axis is manual
        every_axis = manual == frozenset(axis_context.mesh.axis_names)
        return "buffer_callback" if every_axis else "io_callback"
    if getattr(axis_context, "num_devices", 1) > 1:  # ShardingContext over several devices
        return "private" if _private_available() else "io_callback"
    return "buffer_callback"  # one device, or pmap (ReplicaAxisContext: per device)


def _on_cpu_buffers(target: _Target, *args: Any) -> list[Any]:
    assert _buffer_callback is not None
    call = _buffer_callback(target.on_buffers, list(target.avals), has_side_effect=True)
    return list(call(*args))


def _io_call(target: _Target, *args: Any) -> list[Any]:
    from jax.experimental import io_callback

    return list(io_callback(target.on_arrays, list(target.avals), *args, ordered=False))


# ------------------------------------------------------------------ the private route (jax._src)


def _private_lowering(ctx: Any, *args: Any, target: _Target) -> Any:
    """io_callback's lowering without its device_put: `fn` gets the numpy arrays jaxlib made."""
    from jax._src import callback as jax_callback

    axis_context = ctx.module_context.axis_context
    sharding = jax_callback._callback_op_sharding(axis_context, None, ctx.avals_out)
    result, _, _ = jax_callback.emit_python_callback(
        ctx,
        target.on_arrays,
        None,
        list(args),
        ctx.avals_in,
        ctx.avals_out,
        has_side_effect=True,
        returns_token=False,
        sharding=sharding,
    )
    return result


@functools.cache
def _private_available() -> bool:
    """Whether the JAX internals of the private route exist (only checked when it is asked for,
    or when buffer_callback is missing)."""
    try:
        from jax._src import callback as jax_callback
    except ImportError:  # pragma: no cover
        return False
    return all(hasattr(jax_callback, n) for n in ("emit_python_callback", "_callback_op_sharding"))


def _choose(requested: str) -> str:
    requested = (requested or "auto").strip().lower()
    if requested == "auto" and _buffer_callback is not None:
        return "auto"
    if requested in ("auto", "fallback"):
        return "private" if _private_available() else "io_callback"
    if requested == "buffer_callback" and _buffer_callback is None:
        raise ImportError(
            f"{ENV_VAR}=buffer_callback, but this JAX ({jax.__version__}) has no "
            "jax.experimental.buffer_callback"
        )
    if requested not in ROUTES:
        choices = ", ".join(("auto", "fallback", *ROUTES))
        raise ValueError(f"{ENV_VAR}={requested!r}: expected one of {choices}")
    return requested


#: The route setting: ``auto`` (chosen per lowering, see `_lowering_route`), ``buffer_callback``,
#: ``private`` or ``io_callback``.
ROUTE: str = _choose(os.environ.get(ENV_VAR, "auto"))


def distributed_client() -> Any | None:
    """The key-value client of `jax.distributed` (None when it was not initialized).

    JAX has no public accessor for it; this module is the one place jaxsinks reaches into
    `jax._src`, so the multi-host coordinator (`jaxsinks._io.multihost`) asks here.
    """
    try:
        from jax._src.distributed import global_state
    except ImportError:  # pragma: no cover - a JAX that moved it
        return None
    return getattr(global_state, "client", None)
