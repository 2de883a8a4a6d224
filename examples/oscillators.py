"""An ensemble of damped oscillators, recorded inside one compiled scan.

Shows the core of jaxsinks: a `DeviceBuffer` recording every 10th frame of a vmapped ensemble,
a per-system buffer catching each oscillator the first time its energy falls below a threshold,
and a gradient of a loss computed from the recorded trajectory.

    python examples/oscillators.py [--replicas 64] [--steps 2000]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import jaxsinks as js


def step(state, damping, dt=0.01):
    x, v = state
    v = v - dt * (x + damping * v)
    return x + dt * v, v


def energy(state):
    x, v = state
    return 0.5 * (x**2 + v**2)


def simulate(damping, steps, every):
    replicas = damping.shape[0]
    state = (jnp.ones(replicas), jnp.zeros(replicas))
    example = {"x": state[0], "energy": energy(state)}
    trajectory = js.DeviceBuffer.create(example, capacity=steps // every + 1, every=every)
    quiet = js.DeviceBuffer.create(example, capacity=replicas, per_system=True, overflow="drop")
    done = jnp.zeros(replicas, bool)

    def body(carry, i):
        state, done, (trajectory, quiet) = carry
        state = step(state, damping)
        frame = {"x": state[0], "energy": energy(state)}
        trajectory = js.record(trajectory, step=i, time=0.01 * i.astype(jnp.float32), frame=frame)
        newly = (frame["energy"] < 0.01) & ~done  # each oscillator once, when it first gets quiet
        quiet = quiet.write(frame, step=i, mask=newly)
        return (state, done | newly, (trajectory, quiet)), None

    carry = (state, done, (trajectory, quiet))
    (_, _, sinks), _ = jax.lax.scan(body, carry, jnp.arange(steps))
    return sinks


def mean_energy(damping, steps, every):
    trajectory, _ = simulate(damping, steps, every)
    e = jnp.where(trajectory.valid[:, None], trajectory.frames["energy"], 0.0)
    return jnp.sum(e) / (trajectory.size * damping.shape[0]).astype(jnp.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=10)
    args = parser.parse_args()

    damping = jnp.linspace(0.05, 2.0, args.replicas)
    run = jax.jit(simulate, static_argnums=(1, 2))
    trajectory, quiet = run(damping, args.steps, args.every)
    traj, caught = trajectory.read(), quiet.read()
    print(
        f"trajectory: {len(traj)} frames of {traj.frames['x'].shape[1:]} "
        f"(steps {traj.steps[0]}..{traj.steps[-1]}, t = {traj.times[-1]:.2f})"
    )
    print(
        f"quiet: {len(caught)} of {args.replicas} oscillators fell below E = 0.01; "
        f"the first was system {caught.systems[0]} at step {caught.steps[0]}"
    )

    grad = jax.jit(jax.grad(mean_energy), static_argnums=(1, 2))(damping, args.steps, args.every)
    print(
        f"d(mean recorded energy)/d(damping): first {float(grad[0]):.3e}, last "
        f"{float(grad[-1]):.3e}"
    )


if __name__ == "__main__":
    main()
