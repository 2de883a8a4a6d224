"""Relaxing a padded batch of LJ clusters: FIRE, and a smooth descent to differentiate through.

* `FireParams`, `FireState`, `fire_init`, `fire_step`, `fire_relax`: FIRE (Bitzek et al., PRL 97,
  170201, 2006) with a per-system time step, mixing parameter and counter, as in ASE's `FIRE`.
  Systems converge independently: a converged system's state is frozen.
* `DescentParams`, `relax_fixed_steps`: a fixed number of damped (momentum) gradient-descent
  steps, smooth in ``sigma`` and ``epsilon``, for differentiating *through* a relaxation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .._core.pytree import pytree_dataclass, static
from .lj import Batch, _check_batch, _check_positive, converged, energy_and_forces, forces

_Carry = tuple[jax.Array, jax.Array]


def _per_system(x: jax.Array, like: jax.Array) -> jax.Array:
    """A per-system ``(B,)`` array reshaped to broadcast against `like` ``(B, ...)``."""
    return x.reshape(x.shape + (1,) * (like.ndim - x.ndim))


def _clip_per_atom(step: jax.Array, maxstep: float) -> jax.Array:
    """Scale each atom's step ``(..., 3)`` down to at most `maxstep` long."""
    length = jnp.sqrt(jnp.sum(step * step, axis=-1, keepdims=True))
    factor = maxstep / jnp.maximum(length, maxstep)
    return step * factor


# --------------------------------------------------------------------------------------------
# FIRE


@pytree_dataclass
class FireParams:
    """FIRE's parameters (Bitzek et al. 2006; defaults as in ASE). Static: hashable, not traced.

    Attributes:
        dt_max: the largest time step.
        n_min: steps downhill (``F . v >= 0``) before the time step may grow.
        f_inc: time-step growth factor after `n_min` steps downhill.
        f_dec: time-step factor after an uphill step (``F . v < 0``).
        alpha_start: the initial (and reset) mixing of velocity towards the force direction.
        f_alpha: mixing decay factor after `n_min` steps downhill.
        maxstep: the largest displacement of one atom in one step (the step of each atom is
            scaled down to this length, sigma units).
        fmax_threshold: systems whose `fmax` is below this are converged and frozen: `fire_step`
            leaves their whole state unchanged. 0 (the default) never freezes.
    """

    dt_max: float = static(default=1.0)
    n_min: int = static(default=5)
    f_inc: float = static(default=1.1)
    f_dec: float = static(default=0.5)
    alpha_start: float = static(default=0.1)
    f_alpha: float = static(default=0.99)
    maxstep: float = static(default=0.2)
    fmax_threshold: float = static(default=0.0)

    def __post_init__(self) -> None:
        for name in ("dt_max", "f_inc", "maxstep"):
            _check_positive(f"FireParams.{name}", getattr(self, name))
        for name in ("f_dec", "alpha_start", "f_alpha"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 < value <= 1.0):
                raise ValueError(f"`FireParams.{name}` is {value!r}; expected a float in (0, 1].")
        if isinstance(self.n_min, bool) or not isinstance(self.n_min, int) or self.n_min < 0:
            raise ValueError(f"`FireParams.n_min` is {self.n_min!r}; expected an int >= 0.")
        if not (isinstance(self.fmax_threshold, (int, float)) and self.fmax_threshold >= 0.0):
            raise ValueError(
                f"`FireParams.fmax_threshold` is {self.fmax_threshold!r}; expected a float >= 0 "
                "(0 never freezes a system)."
            )


#: The defaults of `fire_step` (never freezes) and of `fire_relax` (converged at fmax < 1e-3).
FIRE_DEFAULTS = FireParams()
RELAX_DEFAULTS = FireParams(fmax_threshold=1e-3)


@pytree_dataclass
class FireState:
    """The state of a batch of FIRE relaxations; every field is per system.

    Attributes:
        positions: ``(B, A, 3)``.
        velocities: ``(B, A, 3)``, zero on padded atoms.
        forces: ``(B, A, 3)``, the forces at `positions` (computed once per step).
        energy: ``(B,)``, the energy at `positions`.
        dt: ``(B,)``, each system's time step.
        alpha: ``(B,)``, each system's mixing parameter.
        n_pos: ``(B,)`` int32, steps since the last uphill step (``F . v < 0``).
        n_steps: ``(B,)`` int32, steps taken (a frozen, converged system stops counting).
    """

    positions: jax.Array
    velocities: jax.Array
    forces: jax.Array
    energy: jax.Array
    dt: jax.Array
    alpha: jax.Array
    n_pos: jax.Array
    n_steps: jax.Array


def fire_init(
    batch: Batch,
    sigma: ArrayLike = 1.0,
    epsilon: ArrayLike = 1.0,
    *,
    dt_start: float = 0.1,
    params: FireParams = FIRE_DEFAULTS,
) -> FireState:
    """The initial FIRE state of `batch`: zero velocities, ``dt = dt_start``, ``alpha_start``."""
    _check_positive("dt_start", dt_start)
    positions = jnp.asarray(batch.positions, jnp.float32)
    e, f = energy_and_forces(positions, batch.mask, sigma, epsilon)
    size = positions.shape[0]
    return FireState(
        positions=positions,
        velocities=jnp.zeros_like(positions),
        forces=f,
        energy=e,
        dt=jnp.full((size,), dt_start, positions.dtype),
        alpha=jnp.full((size,), params.alpha_start, positions.dtype),
        n_pos=jnp.zeros((size,), jnp.int32),
        n_steps=jnp.zeros((size,), jnp.int32),
    )


def fire_step(
    state: FireState,
    mask: jax.Array,
    sigma: ArrayLike = 1.0,
    epsilon: ArrayLike = 1.0,
    params: FireParams = FIRE_DEFAULTS,
) -> FireState:
    """One FIRE step of every system that has not converged.

    As in ASE's FIRE: with ``P = F . v`` (per system), a downhill step (``P >= 0``) mixes the
    velocity towards the force, ``v <- (1 - alpha) v + alpha |v| F/|F|``, and after more than
    `n_min` such steps grows ``dt`` by `f_inc` (up to `dt_max`) and shrinks ``alpha`` by `f_alpha`;
    an uphill step zeroes the velocity, multiplies ``dt`` by `f_dec` and resets ``alpha``. Then
    ``v <- v + dt F`` and each atom moves by ``dt v``, scaled down to at most `maxstep` (the
    velocity is not scaled). Padded atoms never move. One force evaluation per step: the forces
    at the new positions are kept in the state for the next step.

    Systems with ``fmax < params.fmax_threshold`` at the start of the step are frozen: their
    state, `n_steps` included, is returned unchanged.
    """
    _check_batch(state.positions, mask)
    moved = _fire_update(state, mask, sigma, epsilon, params)
    active = ~converged(state.forces, mask, params.fmax_threshold)

    def keep_converged(new: jax.Array, old: jax.Array) -> jax.Array:
        return jnp.where(_per_system(active, new), new, old)

    return jax.tree.map(keep_converged, moved, state)


def _fire_update(
    state: FireState, mask: jax.Array, sigma: ArrayLike, epsilon: ArrayLike, params: FireParams
) -> FireState:
    """`fire_step` for every system, converged or not."""
    f, v = state.forces, state.velocities
    power = jnp.sum(f * v, axis=(1, 2))
    f_norm = jnp.sqrt(jnp.sum(f * f, axis=(1, 2)))
    v_norm = jnp.sqrt(jnp.sum(v * v, axis=(1, 2)))
    f_hat = f / _per_system(jnp.where(f_norm > 0.0, f_norm, jnp.ones_like(f_norm)), f)
    alpha = _per_system(state.alpha, v)
    mixed = (1.0 - alpha) * v + alpha * _per_system(v_norm, f) * f_hat

    downhill = power >= 0.0
    grow = downhill & (state.n_pos > params.n_min)
    dt = jnp.where(
        downhill,
        jnp.where(grow, jnp.minimum(state.dt * params.f_inc, params.dt_max), state.dt),
        state.dt * params.f_dec,
    )
    alpha = jnp.where(
        downhill,
        jnp.where(grow, state.alpha * params.f_alpha, state.alpha),
        jnp.full_like(state.alpha, params.alpha_start),
    )
    n_pos = jnp.where(downhill, state.n_pos + 1, jnp.zeros_like(state.n_pos))

    v = jnp.where(_per_system(downhill, mixed), mixed, jnp.zeros_like(mixed))
    v = v + _per_system(dt, f) * f
    step = _clip_per_atom(_per_system(dt, v) * v, params.maxstep)
    step = jnp.where(mask[..., None], step, jnp.zeros_like(step))
    positions = state.positions + step
    e, f = energy_and_forces(positions, mask, sigma, epsilon)
    return FireState(
        positions=positions,
        velocities=v,
        forces=f,
        energy=e,
        dt=dt,
        alpha=alpha,
        n_pos=n_pos,
        n_steps=state.n_steps + 1,
    )


def fire_relax(
    state: FireState,
    mask: jax.Array,
    sigma: ArrayLike = 1.0,
    epsilon: ArrayLike = 1.0,
    params: FireParams = RELAX_DEFAULTS,
    *,
    max_steps: int = 10_000,
) -> FireState:
    """`fire_step` in a `lax.while_loop` until every system has converged or `max_steps` steps.

    Each system stops (is frozen) as soon as its own `fmax` is below ``params.fmax_threshold``;
    ``state.n_steps`` says how many steps each took. Check `converged` on the result to see
    whether `max_steps` was enough.
    """
    if params.fmax_threshold <= 0.0:
        raise ValueError(
            f"`params.fmax_threshold` is {params.fmax_threshold}; `fire_relax` stops when every "
            "system's fmax is below it, so pass FireParams(fmax_threshold=...) with a value > 0."
        )

    def running(carry: tuple[FireState, jax.Array]) -> jax.Array:
        state, steps = carry
        return (steps < max_steps) & ~jnp.all(converged(state.forces, mask, params.fmax_threshold))

    def body(carry: tuple[FireState, jax.Array]) -> tuple[FireState, jax.Array]:
        state, steps = carry
        return fire_step(state, mask, sigma, epsilon, params), steps + 1

    state, _ = jax.lax.while_loop(running, body, (state, jnp.zeros((), jnp.int32)))
    return state


# --------------------------------------------------------------------------------------------
# Differentiable relaxation


@pytree_dataclass
class DescentParams:
    """Parameters of `relax_fixed_steps` (damped gradient descent). Static: hashable, not traced.

    Attributes:
        step_size: the learning rate ``eta`` in ``x <- x + eta v``.
        momentum: the velocity kept from one step to the next (0 is plain gradient descent).
        maxstep: the scale of the smooth per-atom step limit: a step ``d`` becomes
            ``d / sqrt(1 + |d|**2 / maxstep**2)``, never longer than `maxstep` (sigma units).
    """

    step_size: float = static(default=0.002)
    momentum: float = static(default=0.9)
    maxstep: float = static(default=0.1)

    def __post_init__(self) -> None:
        _check_positive("DescentParams.step_size", self.step_size)
        _check_positive("DescentParams.maxstep", self.maxstep)
        if not (isinstance(self.momentum, (int, float)) and 0.0 <= self.momentum < 1.0):
            raise ValueError(
                f"`DescentParams.momentum` is {self.momentum!r}; expected a float in [0, 1)."
            )


#: The defaults of `relax_fixed_steps`.
DESCENT_DEFAULTS = DescentParams()


def descent_step(
    positions: jax.Array,
    velocities: jax.Array,
    mask: jax.Array,
    sigma: ArrayLike = 1.0,
    epsilon: ArrayLike = 1.0,
    params: DescentParams = DESCENT_DEFAULTS,
) -> tuple[jax.Array, jax.Array]:
    """One smooth damped gradient-descent step: ``(positions, velocities)`` after it.

    ``v <- momentum v + F; x <- x + soft_clip(step_size v)``; padded atoms never move.
    """
    v = params.momentum * velocities + forces(positions, mask, sigma, epsilon)
    step = params.step_size * v
    scale = 1.0 / (params.maxstep * params.maxstep)
    step = step * jax.lax.rsqrt(1.0 + scale * jnp.sum(step * step, axis=-1, keepdims=True))
    return positions + jnp.where(mask[..., None], step, jnp.zeros_like(step)), v


def relax_fixed_steps(
    positions: jax.Array,
    mask: jax.Array,
    sigma: ArrayLike = 1.0,
    epsilon: ArrayLike = 1.0,
    n_steps: int = 500,
    params: DescentParams = DESCENT_DEFAULTS,
) -> jax.Array:
    """The positions ``(B, A, 3)`` after `n_steps` damped gradient-descent steps, differentiable.

    `descent_step` in a `lax.scan` of static length `n_steps`. Not FIRE: FIRE's uphill resets and
    time-step changes are discrete decisions, which make the relaxed positions jump when `sigma` or
    `epsilon` cross a switching value, so finite differences and gradients disagree. Every operation
    here is smooth in `positions`, `sigma` and `epsilon` (the step limit is a smooth function too),
    so `jax.grad` of any smooth function of the result is the derivative of what is computed. Padded
    atoms never move.
    """
    _check_batch(positions, mask)
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"`n_steps` is {n_steps!r}; expected a static int >= 0 (the scan length).")

    def body(carry: _Carry, _: None) -> tuple[_Carry, None]:
        return descent_step(*carry, mask, sigma, epsilon, params), None

    (positions, _), _ = jax.lax.scan(body, (positions, jnp.zeros_like(positions)), None, n_steps)
    return positions
