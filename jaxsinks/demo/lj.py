"""Lennard-Jones clusters of different sizes in one padded batch, relaxed with FIRE: pure JAX.

A batch holds ``B`` clusters padded to ``A`` atoms: ``positions (B, A, 3)``, ``natoms (B,)`` and
``mask (B, A)`` (True for real atoms). Every function is a pure, jit-able function of arrays with
static shapes, and every reduction is per system, so the systems of a batch never interact.

* `make_batch` / `pad_clusters` / `icosahedron`: initial geometries.
* `energy`, `forces`, `energy_and_forces`, `fmax`, `converged`: the masked LJ potential.
  Padded atoms and the ``i == j`` pairs go through the "double where" (the distance is replaced
  *before* the power, the energy after), so values *and gradients* are finite wherever padded
  atoms sit, even on top of each other or of a real atom.
* `FireParams`, `FireState`, `fire_init`, `fire_step`, `fire_relax`: FIRE (Bitzek et al., PRL 97,
  170201, 2006) with a per-system time step, mixing parameter and counter, as in ASE's `FIRE`.
* `DescentParams`, `relax_fixed_steps`: a fixed number of damped (momentum) gradient-descent
  steps, smooth in ``sigma`` and ``epsilon``, for differentiating *through* a relaxation.

Units are LJ units: lengths in ``sigma``, energies in ``epsilon``, unit masses.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

T = TypeVar("T")
_Carry = tuple[jax.Array, jax.Array]

#: Distance of the minimum of the pair potential, in units of sigma.
R_MIN = 2.0 ** (1.0 / 6.0)


def _pytree(cls: type[T]) -> type[T]:
    """A frozen, keyword-only dataclass pytree; fields marked `_static` are metadata."""
    cls = dataclasses.dataclass(frozen=True, kw_only=True)(cls)
    return jax.tree_util.register_dataclass(cls)


def _static(**kwargs: Any) -> Any:
    return dataclasses.field(metadata={"static": True}, **kwargs)


# --------------------------------------------------------------------------------------------
# Helpers


def _per_system(x: jax.Array, like: jax.Array) -> jax.Array:
    """A per-system ``(B,)`` array reshaped to broadcast against `like` ``(B, ...)``."""
    return x.reshape(x.shape + (1,) * (like.ndim - x.ndim))


def _clip_per_atom(step: jax.Array, maxstep: float) -> jax.Array:
    """Scale each atom's step ``(..., 3)`` down to at most `maxstep` long."""
    length = jnp.sqrt(jnp.sum(step * step, axis=-1, keepdims=True))
    factor = maxstep / jnp.maximum(length, maxstep)
    return step * factor


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0.0:
        raise ValueError(f"`{name}` is {value!r}; expected a number > 0.")


# --------------------------------------------------------------------------------------------
# Batches and initial geometries


@_pytree
class Batch:
    """Clusters of different sizes, padded to a common number of atoms.

    Attributes:
        positions: ``(B, A, 3)`` float32; padded atoms sit at the origin and are masked out.
        natoms: ``(B,)`` int32, the number of real atoms of each cluster.
        mask: ``(B, A)`` bool, True for the real atoms (the first ``natoms[b]`` of each row).
    """

    positions: jax.Array
    natoms: jax.Array
    mask: jax.Array


def pad_clusters(clusters: Sequence[ArrayLike], max_atoms: int | None = None) -> Batch:
    """A `Batch` of the given clusters, each an ``(n, 3)`` array, padded to `max_atoms` atoms.

    `max_atoms` defaults to the largest cluster. Runs on the host (it builds the arrays).
    """
    arrays = [np.asarray(c, dtype=np.float32) for c in clusters]
    if not arrays:
        raise ValueError("`clusters` is empty: pass at least one (n, 3) array of positions.")
    for index, array in enumerate(arrays):
        if array.ndim != 2 or array.shape[1] != 3 or array.shape[0] < 1:
            raise ValueError(
                f"`clusters[{index}]` has shape {array.shape}; expected (n, 3) with n >= 1 "
                "(one row of x, y, z per atom)."
            )
    sizes = [a.shape[0] for a in arrays]
    width = _check_max_atoms(max_atoms, sizes)
    positions = np.zeros((len(arrays), width, 3), np.float32)
    for index, array in enumerate(arrays):
        positions[index, : array.shape[0]] = array
    natoms = np.asarray(sizes, np.int32)
    mask = np.arange(width)[None, :] < natoms[:, None]
    return Batch(
        positions=jnp.asarray(positions), natoms=jnp.asarray(natoms), mask=jnp.asarray(mask)
    )


def make_batch(
    sizes: Sequence[int], max_atoms: int | None = None, seed: int = 0, *, jitter: float = 0.05
) -> Batch:
    """A deterministic batch of compact LJ clusters with `sizes` atoms, padded to `max_atoms`.

    Each cluster is made of the ``n`` sites of a face-centred cubic lattice (nearest-neighbour
    distance ``2**(1/6)``, so the number density is 1 in LJ units) closest to a random centre,
    each displaced uniformly by up to `jitter` along every axis. With the default `jitter` no pair
    is closer than 0.94 sigma. The same `seed` gives the same batch; cluster ``b`` depends only on
    ``(seed, b, sizes[b])``.
    """
    sizes = [_check_size(i, n) for i, n in enumerate(sizes)]
    if not sizes:
        raise ValueError("`sizes` is empty: pass the number of atoms of each cluster, e.g. [13].")
    limit = (R_MIN - 0.9) / (2.0 * math.sqrt(3.0))
    if not 0.0 <= jitter <= limit:
        raise ValueError(
            f"`jitter` is {jitter}; expected 0 <= jitter <= {limit:.4f} so that no two atoms "
            "start closer than 0.9 sigma."
        )
    clusters = []
    for index, n in enumerate(sizes):
        rng = np.random.default_rng([seed, index])
        clusters.append(_fcc_cluster(n, rng, jitter))
    return pad_clusters(clusters, max_atoms)


def icosahedron(radius: float = 1.1) -> np.ndarray:
    """The 13-atom icosahedron: a central atom and 12 at distance `radius`, ``(13, 3)`` float32.

    It relaxes to the LJ13 global minimum (energy -44.326801 epsilon); the relaxed centre-vertex
    distance is about 1.09 sigma.
    """
    phi = (1.0 + math.sqrt(5.0)) / 2.0
    vertices = []
    for a in (-1.0, 1.0):
        for b in (-phi, phi):
            vertices += [(0.0, a, b), (a, b, 0.0), (b, 0.0, a)]
    vertices = np.asarray(vertices) * (radius / math.hypot(1.0, phi))
    return np.concatenate([np.zeros((1, 3)), vertices]).astype(np.float32)


def _fcc_cluster(n: int, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """The `n` FCC sites closest to a random point of the unit cell, jittered, centred at 0."""
    a = R_MIN * math.sqrt(2.0)  # cubic cell edge: 4 atoms per a**3 = 4 gives density 1
    reach = math.ceil((3.0 * n / (4.0 * math.pi)) ** (1.0 / 3.0) / a) + 2
    cells = np.arange(-reach, reach + 1)
    corners = np.stack(np.meshgrid(cells, cells, cells, indexing="ij"), -1).reshape(-1, 1, 3)
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    sites = ((corners + basis[None]) * a).reshape(-1, 3)
    centre = rng.uniform(0.0, a, size=3)
    order = np.argsort(np.linalg.norm(sites - centre, axis=1), kind="stable")
    chosen = sites[order[:n]] + rng.uniform(-jitter, jitter, size=(n, 3))
    return (chosen - chosen.mean(axis=0)).astype(np.float32)


def _check_size(index: int, n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`sizes[{index}]` is {n!r}; expected a number of atoms >= 1.")
    return int(n)


def _check_max_atoms(max_atoms: int | None, sizes: Sequence[int]) -> int:
    largest = max(sizes)
    if max_atoms is None:
        return largest
    if isinstance(max_atoms, bool) or not isinstance(max_atoms, (int, np.integer)):
        raise ValueError(f"`max_atoms` is {max_atoms!r}; expected an int or None.")
    if max_atoms < largest:
        raise ValueError(
            f"`max_atoms` is {max_atoms} but the largest cluster has {largest} atoms; "
            f"pass max_atoms >= {largest} or None (the largest cluster)."
        )
    return int(max_atoms)


# --------------------------------------------------------------------------------------------
# The potential


def _check_batch(positions: jax.Array, mask: jax.Array) -> None:
    """Trace-time checks of the shapes of `positions` and `mask`."""
    if positions.ndim != 3 or positions.shape[-1] != 3:
        raise ValueError(
            f"`positions` has shape {positions.shape}; expected (B, A, 3): a batch of B systems "
            "of A atoms (add a leading axis for a single system)."
        )
    if mask.shape != positions.shape[:2]:
        raise ValueError(
            f"`mask` has shape {mask.shape} but `positions` has shape {positions.shape}; "
            f"expected a mask of shape {positions.shape[:2]} (B, A)."
        )
    if mask.dtype != jnp.bool_:
        raise ValueError(f"`mask` has dtype {mask.dtype}; expected bool (True for real atoms).")


def _system_energy(
    positions: jax.Array, mask: jax.Array, sigma: jax.Array, epsilon: jax.Array
) -> jax.Array:
    """The LJ energy of one system: positions ``(A, 3)``, mask ``(A,)`` -> scalar."""
    index = jnp.arange(positions.shape[0])
    pair = mask[:, None] & mask[None, :] & (index[:, None] < index[None, :])
    delta = positions[:, None, :] - positions[None, :, :]
    r2 = jnp.sum(delta * delta, axis=-1)
    # Double where: uncounted pairs get a harmless distance before the division (so neither the
    # value nor its derivative is inf/NaN), and their energy is dropped after it.
    r2 = jnp.where(pair, r2, jnp.ones_like(r2))
    s6 = (sigma * sigma / r2) ** 3
    pair_energy = 4.0 * epsilon * (s6 * s6 - s6)
    return jnp.sum(jnp.where(pair, pair_energy, jnp.zeros_like(pair_energy)))


@jax.jit
def _batched_energy(
    positions: jax.Array, mask: jax.Array, sigma: jax.Array, epsilon: jax.Array
) -> jax.Array:
    # Jitted so that eager calls compile once per shape instead of dispatching op by op.
    return jax.vmap(_system_energy, in_axes=(0, 0, None, None))(positions, mask, sigma, epsilon)


@jax.jit
def _batched_energy_and_forces(
    positions: jax.Array, mask: jax.Array, sigma: jax.Array, epsilon: jax.Array
) -> tuple[jax.Array, jax.Array]:
    value_and_grad = jax.vmap(jax.value_and_grad(_system_energy), in_axes=(0, 0, None, None))
    e, grad = value_and_grad(positions, mask, sigma, epsilon)
    return e, jnp.where(mask[..., None], -grad, jnp.zeros_like(grad))


def _as_param(x: ArrayLike, dtype: Any) -> jax.Array:
    return jnp.asarray(x).astype(dtype)


def energy(
    positions: jax.Array, mask: jax.Array, sigma: ArrayLike = 1.0, epsilon: ArrayLike = 1.0
) -> jax.Array:
    """Per-system LJ energy ``(B,)``: ``4 eps ((s/r)**12 - (s/r)**6)`` over pairs of real atoms.

    No cutoff (clusters are small). Padded atoms contribute nothing, and the derivatives with
    respect to `positions`, `sigma` and `epsilon` are finite wherever the padded atoms are.
    """
    _check_batch(positions, mask)
    sigma, epsilon = _as_param(sigma, positions.dtype), _as_param(epsilon, positions.dtype)
    return _batched_energy(positions, mask, sigma, epsilon)


def energy_and_forces(
    positions: jax.Array, mask: jax.Array, sigma: ArrayLike = 1.0, epsilon: ArrayLike = 1.0
) -> tuple[jax.Array, jax.Array]:
    """``(energy (B,), forces (B, A, 3))`` in one pass; forces = ``-grad(energy)``, 0 on padding."""
    _check_batch(positions, mask)
    sigma, epsilon = _as_param(sigma, positions.dtype), _as_param(epsilon, positions.dtype)
    return _batched_energy_and_forces(positions, mask, sigma, epsilon)


def forces(
    positions: jax.Array, mask: jax.Array, sigma: ArrayLike = 1.0, epsilon: ArrayLike = 1.0
) -> jax.Array:
    """Forces ``(B, A, 3)``: minus the gradient of `energy`; exactly zero on padded atoms."""
    return energy_and_forces(positions, mask, sigma, epsilon)[1]


def fmax(forces: jax.Array, mask: jax.Array) -> jax.Array:
    """Per-system largest force norm over the real atoms, ``(B,)`` (0 for a system of one atom)."""
    _check_batch(forces, mask)
    f2 = jnp.sum(forces * forces, axis=-1)
    return jnp.sqrt(jnp.max(jnp.where(mask, f2, jnp.zeros_like(f2)), axis=-1))


def converged(forces: jax.Array, mask: jax.Array, fmax_threshold: ArrayLike) -> jax.Array:
    """Per-system ``fmax(forces, mask) < fmax_threshold``, ``(B,)`` bool."""
    f = fmax(forces, mask)
    return f < _as_param(fmax_threshold, f.dtype)


# --------------------------------------------------------------------------------------------
# FIRE


@_pytree
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

    dt_max: float = _static(default=1.0)
    n_min: int = _static(default=5)
    f_inc: float = _static(default=1.1)
    f_dec: float = _static(default=0.5)
    alpha_start: float = _static(default=0.1)
    f_alpha: float = _static(default=0.99)
    maxstep: float = _static(default=0.2)
    fmax_threshold: float = _static(default=0.0)

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


@_pytree
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


@_pytree
class DescentParams:
    """Parameters of `relax_fixed_steps` (damped gradient descent). Static: hashable, not traced.

    Attributes:
        step_size: the learning rate ``eta`` in ``x <- x + eta v``.
        momentum: the velocity kept from one step to the next (0 is plain gradient descent).
        maxstep: the scale of the smooth per-atom step limit: a step ``d`` becomes
            ``d / sqrt(1 + |d|**2 / maxstep**2)``, never longer than `maxstep` (sigma units).
    """

    step_size: float = _static(default=0.002)
    momentum: float = _static(default=0.9)
    maxstep: float = _static(default=0.1)

    def __post_init__(self) -> None:
        _check_positive("DescentParams.step_size", self.step_size)
        _check_positive("DescentParams.maxstep", self.maxstep)
        if not (isinstance(self.momentum, (int, float)) and 0.0 <= self.momentum < 1.0):
            raise ValueError(
                f"`DescentParams.momentum` is {self.momentum!r}; expected a float in [0, 1)."
            )


#: The defaults of `relax_fixed_steps`.
DESCENT_DEFAULTS = DescentParams()


def relax_fixed_steps(
    positions: jax.Array,
    mask: jax.Array,
    sigma: ArrayLike = 1.0,
    epsilon: ArrayLike = 1.0,
    n_steps: int = 500,
    params: DescentParams = DESCENT_DEFAULTS,
) -> jax.Array:
    """The positions ``(B, A, 3)`` after `n_steps` damped gradient-descent steps, differentiable.

    ``v <- momentum v + F; x <- x + soft_clip(step_size v)`` in a `lax.scan` of static length
    `n_steps`. Not FIRE: FIRE's uphill resets and time-step changes are discrete decisions, which
    make the relaxed positions jump when `sigma` or `epsilon` cross a switching value, so finite
    differences and gradients disagree. Every operation here is smooth in `positions`, `sigma`
    and `epsilon` (the step limit is a smooth function too), so `jax.grad` of any smooth function
    of the result is the derivative of what is computed. Padded atoms never move.
    """
    _check_batch(positions, mask)
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"`n_steps` is {n_steps!r}; expected a static int >= 0 (the scan length).")
    scale = 1.0 / (params.maxstep * params.maxstep)

    def body(carry: _Carry, _: None) -> tuple[_Carry, None]:
        x, v = carry
        v = params.momentum * v + forces(x, mask, sigma, epsilon)
        step = params.step_size * v
        step = step * jax.lax.rsqrt(1.0 + scale * jnp.sum(step * step, axis=-1, keepdims=True))
        return (x + jnp.where(mask[..., None], step, jnp.zeros_like(step)), v), None

    (positions, _), _ = jax.lax.scan(body, (positions, jnp.zeros_like(positions)), None, n_steps)
    return positions
