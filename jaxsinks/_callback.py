"""The flush callback: a side-effecting host call that receives the block as numpy arrays.

`jax.experimental.io_callback` first `device_put`s its operands onto a CPU device and hands the
callback `jax.Array`s. On the CPU backend, reading those back needs XLA's CPU thread pool, which
the running program occupies: with several devices on few cores (a sharded sink), every device
waits in its callback for a copy the pool never runs, and the program deadlocks once blocks are
large (measured: 2 CPU devices on 2 cores, 4 MiB per flush). It also costs a full copy of every
block.

This primitive is io_callback without that step: the same effect (so `jit`, `scan`, `cond`,
`shard_map` and dead-code elimination treat it exactly as an unordered io_callback) and the same
lowering (`emit_python_callback`), but the host function gets the operands as numpy arrays that
are valid during the call. `jaxsinks._writer.host_flush` copies them into its pool before
returning, as it must anyway.

It uses JAX internals (`jax._src.callback`), pinned by the supported JAX versions and covered by
tests/test_sharded.py and tests/test_zarr_sink.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from jax._src import callback as jax_callback
from jax._src import core, dispatch
from jax._src.interpreters import ad, batching, mlir

from ._errors import TransformError

flush_p = core.Primitive("jaxsinks_flush")
flush_p.multiple_results = True
dispatch.prim_requires_devices_during_lowering.add(flush_p)
flush_p.def_impl(functools.partial(dispatch.apply_primitive, flush_p))


def host_call(fn: Callable[..., Sequence[np.ndarray]], result_avals: Sequence[Any], *args: Any) -> list[Any]:
    """Call ``fn(*numpy_args)`` on the host from inside a compiled program; returns its results.

    `result_avals` are `jax.ShapeDtypeStruct`s of the results. Inside `shard_map` each device
    calls `fn` with its own operands.
    """
    avals = tuple(core.ShapedArray(a.shape, a.dtype) for a in result_avals)
    return flush_p.bind(*args, fn=fn, result_avals=avals)


@flush_p.def_effectful_abstract_eval
def _abstract_eval(*avals, fn, result_avals):
    del avals, fn
    return result_avals, {jax_callback._IOEffect}


def _lowering(ctx, *args, fn, result_avals):
    del result_avals

    def call(*operands: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(np.asarray(r) for r in fn(*operands))

    sharding = jax_callback._callback_op_sharding(ctx.module_context.axis_context, None, ctx.avals_out)
    result, _, _ = jax_callback.emit_python_callback(
        ctx, call, None, list(args), ctx.avals_in, ctx.avals_out,
        has_side_effect=True, returns_token=False, sharding=sharding,
    )
    return result


mlir.register_lowering(flush_p, _lowering, cacheable=False)


def _no_transform(name: str):
    def rule(*args, **kwargs):
        raise TransformError(f"A sink's flush cannot be transformed by {name}; record outside it.")

    return rule


ad.primitive_jvps[flush_p] = _no_transform("jvp")
ad.primitive_transposes[flush_p] = _no_transform("transpose")
batching.primitive_batchers[flush_p] = _no_transform("vmap")
