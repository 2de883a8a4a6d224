"""Lennard-Jones clusters of different sizes in one padded batch: geometries and the potential.

A batch holds ``B`` clusters padded to ``A`` atoms: ``positions (B, A, 3)``, ``natoms (B,)`` and
``mask (B, A)`` (True for real atoms). Every function is a pure, jit-able function of arrays with
static shapes, and every reduction is per system, so the systems of a batch never interact.

* `make_batch` / `pad_clusters` / `icosahedron`: initial geometries.
* `energy`, `forces`, `energy_and_forces`, `fmax`, `converged`: the masked LJ potential.
  Padded atoms and the ``i == j`` pairs go through the "double where" (the distance is replaced
  *before* the power, the energy after), so values *and gradients* are finite wherever padded
  atoms sit, even on top of each other or of a real atom.

Relaxation (FIRE, and a smooth fixed-step descent for differentiating through it) is in
`jaxsinks.demo.fire`.

Units are LJ units: lengths in ``sigma``, energies in ``epsilon``, unit masses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .._core.pytree import pytree_dataclass

#: Distance of the minimum of the pair potential, in units of sigma.
R_MIN = 2.0 ** (1.0 / 6.0)


# --------------------------------------------------------------------------------------------
# Helpers


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0.0:
        raise ValueError(f"`{name}` is {value!r}; expected a number > 0.")


# --------------------------------------------------------------------------------------------
# Batches and initial geometries


@pytree_dataclass
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
    corners: list[tuple[float, float, float]] = []
    for a in (-1.0, 1.0):
        for b in (-phi, phi):
            corners += [(0.0, a, b), (a, b, 0.0), (b, 0.0, a)]
    vertices = np.asarray(corners) * (radius / math.hypot(1.0, phi))
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
