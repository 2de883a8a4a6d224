"""The demo's physics: masked Lennard-Jones clusters, batched FIRE, a differentiable relaxation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsinks.demo import fire, lj

#: Global minimum energies (Cambridge Cluster Database), epsilon = sigma = 1.
GLOBAL_MINIMUM = {7: -16.505384, 13: -44.326801, 19: -72.659782, 38: -173.928427}


def reference_energy(x: np.ndarray, sigma: float = 1.0, epsilon: float = 1.0) -> float:
    """LJ energy of one cluster ``(n, 3)`` in float64 numpy, pairs i < j."""
    i, j = np.triu_indices(len(x), k=1)
    r = np.linalg.norm(x[i] - x[j], axis=1)
    s6 = (sigma / r) ** 6
    return float(np.sum(4.0 * epsilon * (s6 * s6 - s6)))


def perturbed_icosahedron(seed: int = 0, amplitude: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return lj.icosahedron() + rng.uniform(-amplitude, amplitude, (13, 3)).astype(np.float32)


def radius_of_gyration(x: jax.Array, mask: jax.Array) -> jax.Array:
    w = mask.astype(jnp.float32)
    n = jnp.sum(w, axis=1)
    centre = jnp.sum(x * w[..., None], axis=1) / n[:, None]
    r2 = jnp.sum((x - centre[:, None, :]) ** 2, axis=-1)
    return jnp.sqrt(jnp.sum(r2 * w, axis=1) / n)


# ------------------------------------------------------------------------------------------
# Potential


@pytest.mark.parametrize(("sigma", "epsilon"), [(1.0, 1.0), (1.5, 2.0)])
def test_dimer_at_the_pair_minimum(maybe_jit, sigma, epsilon):
    r = sigma * 2.0 ** (1.0 / 6.0)
    x = jnp.array([[[0.0, 0.0, 0.0], [r, 0.0, 0.0]]])
    mask = jnp.ones((1, 2), bool)
    e, f = maybe_jit(lj.energy_and_forces)(x, mask, sigma, epsilon)
    assert e.shape == (1,) and e.dtype == jnp.float32
    np.testing.assert_allclose(e, [-epsilon], rtol=1e-6)
    np.testing.assert_allclose(f, 0.0, atol=1e-4)
    np.testing.assert_array_equal(maybe_jit(lj.energy)(x, mask, sigma, epsilon), e)
    # Closer: repulsive (atom 0 pushed to -x); farther: attractive.
    closer = maybe_jit(lj.forces)(x * 0.95, mask, sigma, epsilon)
    farther = maybe_jit(lj.forces)(x * 1.05, mask, sigma, epsilon)
    assert closer[0, 0, 0] < -1.0 and closer[0, 1, 0] > 1.0
    assert farther[0, 0, 0] > 0.1 and farther[0, 1, 0] < -0.1


def test_energy_and_forces_match_a_float64_reference_and_its_finite_differences(maybe_jit):
    x = np.asarray(lj.make_batch([6], seed=4).positions[0], np.float64)
    mask = jnp.ones((1, 6), bool)
    e, f = maybe_jit(lj.energy_and_forces)(jnp.asarray(x[None], jnp.float32), mask, 1.1, 0.7)
    np.testing.assert_allclose(e[0], reference_energy(x, 1.1, 0.7), rtol=1e-5)
    h = 1e-5
    numeric = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        step = np.zeros_like(x)
        step[index] = h
        up, down = reference_energy(x + step, 1.1, 0.7), reference_energy(x - step, 1.1, 0.7)
        numeric[index] = -(up - down) / (2.0 * h)
    assert np.abs(numeric).max() > 0.1  # not a trivially flat configuration
    np.testing.assert_allclose(f[0], numeric, rtol=1e-4, atol=1e-4)
    # Newton's third law: the forces of a cluster sum to zero.
    np.testing.assert_allclose(jnp.sum(f[0], axis=0), 0.0, atol=1e-4)


def test_padding_changes_nothing_and_gives_finite_gradients():
    cluster = np.asarray(lj.make_batch([7], seed=2).positions[0])
    tight = lj.pad_clusters([cluster])
    padded = lj.pad_clusters([cluster, lj.icosahedron()], max_atoms=16)
    # Worst case for the masking: padded atoms on top of each other and of a real atom.
    positions = padded.positions.at[0, 7:].set(padded.positions[0, 3])
    e0, f0 = jax.jit(lj.energy_and_forces)(tight.positions, tight.mask)
    e1, f1 = jax.jit(lj.energy_and_forces)(positions, padded.mask)
    np.testing.assert_allclose(e1[0], e0[0], rtol=1e-6)
    np.testing.assert_allclose(f1[0, :7], f0[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(f1[0, 7:], 0.0)
    np.testing.assert_array_equal(f1[1, 13:], 0.0)
    np.testing.assert_allclose(e1[1], reference_energy(lj.icosahedron()), rtol=1e-5)

    def total(x, sigma, epsilon):
        return jnp.sum(lj.energy(x, padded.mask, sigma, epsilon))

    grads = jax.jit(jax.grad(total, argnums=(0, 1, 2)))(positions, 1.0, 1.0)
    for g in grads:
        assert bool(jnp.all(jnp.isfinite(g)))
    np.testing.assert_array_equal(grads[0][0, 7:], 0.0)
    # d(energy)/d(epsilon) = energy / epsilon.
    np.testing.assert_allclose(grads[2], jnp.sum(e1), rtol=1e-5)


def test_fmax_and_converged_look_only_at_real_atoms():
    f = jnp.zeros((2, 3, 3)).at[0, 1].set(jnp.array([3.0, 4.0, 0.0])).at[1, 2].set(100.0)
    mask = jnp.array([[True, True, False], [True, True, False]])
    np.testing.assert_allclose(lj.fmax(f, mask), [5.0, 0.0])
    np.testing.assert_array_equal(lj.converged(f, mask, 1e-3), [False, True])
    np.testing.assert_array_equal(lj.converged(f, mask, 5.5), [True, True])


def test_shape_errors_name_the_argument():
    x = jnp.zeros((2, 4, 3))
    with pytest.raises(ValueError, match=r"`positions` has shape \(4, 3\); expected \(B, A, 3\)"):
        lj.energy(x[0], jnp.ones(4, bool))
    with pytest.raises(ValueError, match=r"`mask` has shape \(2, 5\).*expected a mask of shape"):
        lj.forces(x, jnp.ones((2, 5), bool))
    with pytest.raises(ValueError, match="`mask` has dtype int32; expected bool"):
        lj.energy(x, jnp.ones((2, 4), jnp.int32))


# ------------------------------------------------------------------------------------------
# Batches


def test_make_batch_is_deterministic_padded_and_well_spaced():
    batch = lj.make_batch([13, 7, 38], max_atoms=40, seed=5)
    assert batch.positions.shape == (3, 40, 3) and batch.positions.dtype == jnp.float32
    assert batch.natoms.dtype == jnp.int32 and batch.mask.dtype == jnp.bool_
    np.testing.assert_array_equal(batch.natoms, [13, 7, 38])
    np.testing.assert_array_equal(jnp.sum(batch.mask, axis=1), [13, 7, 38])
    np.testing.assert_array_equal(batch.mask[1, :8], [True] * 7 + [False])
    np.testing.assert_array_equal(batch.positions[1, 7:], 0.0)
    again = lj.make_batch([13, 7, 38], max_atoms=40, seed=5)
    np.testing.assert_array_equal(again.positions, batch.positions)
    other = lj.make_batch([13, 7, 38], max_atoms=40, seed=6)
    assert not np.array_equal(other.positions, batch.positions)
    for b, n in enumerate([13, 7, 38]):
        x = np.asarray(batch.positions[b, :n], np.float64)
        distances = np.linalg.norm(x[:, None] - x[None], axis=-1)[np.triu_indices(n, k=1)]
        assert distances.min() >= 0.9
        np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-5)
    # Density about 1: the 38-atom cluster's gyration radius is that of a uniform ball of
    # volume 38, within 15 %.
    x = np.asarray(batch.positions[2, :38], np.float64)
    rg = np.sqrt(np.mean(np.sum((x - x.mean(axis=0)) ** 2, axis=1)))
    ball = np.sqrt(3.0 / 5.0) * (3.0 * 38 / (4.0 * np.pi)) ** (1.0 / 3.0)
    np.testing.assert_allclose(rg, ball, rtol=0.15)


def test_batch_arguments_are_checked():
    with pytest.raises(ValueError, match="`max_atoms` is 10 but the largest cluster has 13 atoms"):
        lj.make_batch([13, 7], max_atoms=10)
    with pytest.raises(ValueError, match=r"`sizes\[1\]` is 0; expected a number of atoms >= 1"):
        lj.make_batch([13, 0])
    with pytest.raises(ValueError, match="`sizes` is empty"):
        lj.make_batch([])
    with pytest.raises(ValueError, match=r"`jitter` is 0\.5; expected 0 <= jitter"):
        lj.make_batch([13], jitter=0.5)
    with pytest.raises(ValueError, match=r"`clusters\[0\]` has shape \(4, 2\)"):
        lj.pad_clusters([np.zeros((4, 2))])
    with pytest.raises(ValueError, match=r"`FireParams.f_dec` is 1.5; expected a float in \(0, 1"):
        fire.FireParams(f_dec=1.5)
    with pytest.raises(ValueError, match=r"`FireParams\.maxstep` is -0\.1; expected a number > 0"):
        fire.FireParams(maxstep=-0.1)
    with pytest.raises(ValueError, match=r"`DescentParams.momentum` is 1.0; expected a float in"):
        fire.DescentParams(momentum=1.0)
    batch = lj.make_batch([3])
    with pytest.raises(ValueError, match=r"`params\.fmax_threshold` is 0\.0; `fire_relax` stops"):
        fire.fire_relax(fire.fire_init(batch), batch.mask, params=fire.FireParams())


# ------------------------------------------------------------------------------------------
# FIRE

PARAMS = fire.FireParams(fmax_threshold=1e-3)
SIZES = [13, 7, 19, 38]


@jax.jit
def relax(state: fire.FireState, mask: jax.Array, max_steps: jax.Array) -> fire.FireState:
    return fire.fire_relax(state, mask, params=PARAMS, max_steps=max_steps)


def fire_batch(order=(0, 1, 2, 3)) -> lj.Batch:
    lattice = lj.make_batch(SIZES, seed=1)
    clusters = [perturbed_icosahedron()] + [
        np.asarray(lattice.positions[b, :n]) for b, n in enumerate(SIZES) if b > 0
    ]
    return lj.pad_clusters([clusters[i] for i in order])


@pytest.fixture(scope="module")
def relaxed() -> tuple[lj.Batch, fire.FireState, fire.FireState]:
    batch = fire_batch()
    start = fire.fire_init(batch)
    return batch, start, relax(start, batch.mask, jnp.int32(3000))


def test_fire_relaxes_every_cluster_in_one_jitted_loop(relaxed):
    batch, start, end = relaxed
    assert end.positions.shape == (4, 38, 3)
    assert bool(jnp.all(lj.fmax(end.forces, batch.mask) < 1e-3))
    assert bool(jnp.all(lj.converged(end.forces, batch.mask, 1e-3)))
    assert bool(jnp.all(end.energy < start.energy - 0.5))
    np.testing.assert_allclose(end.energy[0], GLOBAL_MINIMUM[13], atol=1e-3)
    for b, n in enumerate(SIZES):  # nothing below the known global minima
        assert float(end.energy[b]) >= GLOBAL_MINIMUM[n] - 1e-3
    # The cached energy and forces are those of the final positions.
    e, f = lj.energy_and_forces(end.positions, batch.mask)
    np.testing.assert_allclose(end.energy, e, rtol=1e-6)
    np.testing.assert_allclose(end.forces, f, atol=1e-6)
    # The 38-atom cluster (fmax < 1e-2 asked) well within a few thousand steps.
    assert int(end.n_steps[3]) < 3000


def test_padded_atoms_never_move_and_have_no_velocity(relaxed):
    batch, start, end = relaxed
    padding = ~batch.mask
    assert int(jnp.sum(padding)) == 4 * 38 - sum(SIZES)
    np.testing.assert_array_equal(end.positions[padding], start.positions[padding])
    np.testing.assert_array_equal(end.velocities[padding], 0.0)
    np.testing.assert_array_equal(end.forces[padding], 0.0)
    assert bool(jnp.all(jnp.isfinite(end.positions)))


def test_systems_converge_independently(relaxed):
    _, _, end = relaxed
    steps = np.asarray(end.n_steps)
    assert len(set(steps.tolist())) > 1, steps  # each system took its own number of steps
    assert np.all(steps > 0)
    # A batch in another order gives each system the same relaxation.
    order = (2, 0, 3, 1)
    shuffled = fire_batch(order)
    other = relax(fire.fire_init(shuffled), shuffled.mask, jnp.int32(3000))
    np.testing.assert_array_equal(np.asarray(other.n_steps), steps[list(order)])
    np.testing.assert_allclose(other.positions, end.positions[jnp.array(order)], atol=1e-5)
    np.testing.assert_allclose(other.energy, end.energy[jnp.array(order)], rtol=1e-6)


def test_a_converged_system_is_frozen(relaxed):
    batch, start, end = relaxed
    first = int(np.argmin(end.n_steps))
    stop = int(end.n_steps[first]) + 5
    assert stop < int(jnp.max(end.n_steps))
    early = relax(start, batch.mask, jnp.int32(stop))
    # The first system to converge stopped at its step count and never moved afterwards...
    assert int(early.n_steps[first]) == int(end.n_steps[first])
    np.testing.assert_array_equal(early.positions[first], end.positions[first])
    np.testing.assert_array_equal(early.velocities[first], end.velocities[first])
    # ...while the others were still running.
    others = np.delete(np.arange(len(SIZES)), first)
    np.testing.assert_array_equal(np.asarray(early.n_steps)[others], stop)
    # Stepping a fully converged batch changes nothing.
    again = jax.jit(fire.fire_step, static_argnames="params")(end, batch.mask, params=PARAMS)
    for new, old in zip(jax.tree.leaves(again), jax.tree.leaves(end), strict=True):
        np.testing.assert_array_equal(new, old)


def test_fire_step_follows_the_fire_rules():
    batch = lj.pad_clusters([[[0.0, 0.0, 0.0], [1.6, 0.0, 0.0]]])  # a stretched dimer
    state = fire.fire_init(batch, dt_start=0.05)
    params = fire.FireParams(n_min=2, f_inc=1.5, dt_max=0.1)
    step = jax.jit(fire.fire_step, static_argnames="params")
    dts = []
    for _ in range(5):
        state = step(state, batch.mask, params=params)
        dts.append(float(state.dt[0]))
    # Downhill from rest: dt grows only after more than n_min steps downhill, capped at dt_max.
    np.testing.assert_allclose(dts, [0.05, 0.05, 0.05, 0.075, 0.1], rtol=1e-6)
    np.testing.assert_array_equal(state.n_pos, [5])
    np.testing.assert_allclose(state.alpha, [0.1 * 0.99**2], rtol=1e-6)
    # Uphill (velocity against the force): velocity zeroed, dt halved, alpha reset, counter 0.
    uphill = dataclasses.replace(state, velocities=-state.forces)
    after = step(uphill, batch.mask, params=params)
    np.testing.assert_allclose(after.dt, [0.05], rtol=1e-6)
    np.testing.assert_allclose(after.alpha, [0.1], rtol=1e-6)
    np.testing.assert_array_equal(after.n_pos, [0])
    np.testing.assert_allclose(after.velocities, 0.05 * uphill.forces, rtol=1e-6)


def test_maxstep_limits_each_atom():
    x = jnp.array([[[0.0, 0.0, 0.0], [0.8, 0.0, 0.0], [5.0, 0.0, 0.0]]])  # a squeezed pair
    mask = jnp.array([[True, True, False]])
    state = fire.fire_init(lj.Batch(positions=x, natoms=jnp.array([2], jnp.int32), mask=mask))
    params = fire.FireParams(maxstep=0.05)
    after = jax.jit(fire.fire_step, static_argnames="params")(state, mask, params=params)
    moved = jnp.linalg.norm(after.positions - x, axis=-1)
    np.testing.assert_allclose(moved[0, :2], [0.05, 0.05], rtol=1e-5)
    assert float(moved[0, 2]) == 0.0


# ------------------------------------------------------------------------------------------
# Differentiable relaxation


@pytest.fixture(scope="module")
def small_batch() -> lj.Batch:
    lattice = lj.make_batch([7], seed=1)
    return lj.pad_clusters([perturbed_icosahedron(), np.asarray(lattice.positions[0, :7])])


def relaxed_loss(sigma, epsilon, batch, n_steps):
    x = fire.relax_fixed_steps(batch.positions, batch.mask, sigma, epsilon, n_steps=n_steps)
    energy = jnp.sum(lj.energy(x, batch.mask, sigma, epsilon))
    return energy + 10.0 * jnp.sum(radius_of_gyration(x, batch.mask))


def test_gradient_through_relaxation_matches_finite_differences(small_batch):
    value_and_grad = jax.jit(jax.value_and_grad(relaxed_loss, argnums=(0, 1)), static_argnums=3)

    def loss(sigma, epsilon):
        return float(value_and_grad(sigma, epsilon, small_batch, 30)[0])

    sigma, epsilon, h = 1.0, 1.0, 3e-3
    _, (g_sigma, g_epsilon) = value_and_grad(sigma, epsilon, small_batch, 30)
    assert np.isfinite(g_sigma) and np.isfinite(g_epsilon)
    fd_sigma = (loss(sigma + h, epsilon) - loss(sigma - h, epsilon)) / (2 * h)
    fd_epsilon = (loss(sigma, epsilon + h) - loss(sigma, epsilon - h)) / (2 * h)
    assert abs(float(g_sigma)) > 1.0 and abs(float(g_epsilon)) > 1.0
    np.testing.assert_allclose(g_sigma, fd_sigma, rtol=1e-2)
    np.testing.assert_allclose(g_epsilon, fd_epsilon, rtol=1e-2)


def test_relaxed_clusters_scale_with_sigma_and_epsilon(small_batch):
    mask = small_batch.mask

    def observables(sigma, epsilon):
        x = fire.relax_fixed_steps(small_batch.positions, mask, sigma, epsilon, n_steps=300)
        e = lj.energy(x, mask, sigma, epsilon)
        f = lj.fmax(lj.forces(x, mask, sigma, epsilon), mask)
        return (e, radius_of_gyration(x, mask)), (x, e, f)

    jacobian = jax.jit(jax.jacfwd(observables, argnums=(0, 1), has_aux=True))
    ((de_dsigma, de_depsilon), (drg_dsigma, _)), (x, e, f) = jacobian(1.0, 1.0)
    assert bool(jnp.all(f < 1e-3))
    np.testing.assert_allclose(e[0], GLOBAL_MINIMUM[13], atol=1e-3)
    np.testing.assert_array_equal(x[1, 7:], small_batch.positions[1, 7:])
    # At a minimum, E* = epsilon E*(1, 1) and the cluster's size is proportional to sigma:
    # dE*/d(epsilon) = E*, dE*/d(sigma) = 0 and d(Rg)/d(sigma) = Rg.
    np.testing.assert_allclose(de_depsilon, e, rtol=1e-3)
    np.testing.assert_allclose(de_dsigma, 0.0, atol=1e-2)
    np.testing.assert_allclose(drg_dsigma, radius_of_gyration(x, mask), rtol=1e-3)
