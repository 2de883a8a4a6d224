"""Pure slot writes into preallocated buffers, with derivative rules that keep reverse mode linear.

Two facts decide this module (see docs/design.md):

* On XLA:CPU, *reading* a slot of a loop-carried buffer and then updating the buffer in the same
  iteration copies the whole buffer. So a skipped write never reads the old slot back: it goes to a
  spare *trash* row at index ``capacity`` that no reader sees.
* The exact transpose of ``dynamic_update_slice`` zeroes the written slot of the cotangent, which
  is such a read-then-write: reverse mode through N writes into an N-slot buffer becomes O(N^2).
  A slot that is written at most once held a constant fill value before, so its tangent there was
  zero and the update equals an *add* into the tangent buffer. Adds transpose to a pass-through
  cotangent plus a gather of the written row: O(frame) per step. This is the ``write_once`` rule.

Ring buffers overwrite slots, so they use JAX's exact rules; their reverse pass costs O(capacity)
per step, which is linear in the number of steps for a fixed capacity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def put(buffer: jax.Array, value: jax.Array, index: jax.Array, *, write_once: bool) -> jax.Array:
    """``buffer[index] = value`` along the leading axis, in place inside loops."""
    if write_once and jnp.issubdtype(buffer.dtype, jnp.inexact):
        return _put_write_once(buffer, value, index)
    return _put(buffer, value, index)


def scatter(buffer: jax.Array, rows: jax.Array, dest: jax.Array, *, write_once: bool) -> jax.Array:
    """``buffer[dest[i]] = rows[i]`` for every row (duplicate `dest` only at the trash row)."""
    if write_once and jnp.issubdtype(buffer.dtype, jnp.inexact):
        return _scatter_write_once(buffer, rows, dest)
    return _scatter(buffer, rows, dest)


def _put(buffer: jax.Array, value: jax.Array, index: jax.Array) -> jax.Array:
    return lax.dynamic_update_index_in_dim(buffer, value, index, 0)


def _scatter(buffer: jax.Array, rows: jax.Array, dest: jax.Array) -> jax.Array:
    return buffer.at[dest].set(rows, mode="promise_in_bounds")


@jax.custom_jvp
def _put_write_once(buffer: jax.Array, value: jax.Array, index: jax.Array) -> jax.Array:
    return _put(buffer, value, index)


@_put_write_once.defjvp
def _put_write_once_jvp(primals, tangents):
    buffer, value, index = primals
    d_buffer, d_value, _ = tangents
    return _put(buffer, value, index), d_buffer.at[index].add(d_value, mode="promise_in_bounds")


@jax.custom_jvp
def _scatter_write_once(buffer: jax.Array, rows: jax.Array, dest: jax.Array) -> jax.Array:
    return _scatter(buffer, rows, dest)


@_scatter_write_once.defjvp
def _scatter_write_once_jvp(primals, tangents):
    buffer, rows, dest = primals
    d_buffer, d_rows, _ = tangents
    return _scatter(buffer, rows, dest), d_buffer.at[dest].add(d_rows, mode="promise_in_bounds")
