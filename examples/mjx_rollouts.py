"""Recording many MuJoCo MJX rollouts at once: a batch of cart-poles, one `vmap`ped step.

MuJoCo MJX is optional: ``pip install jaxsinks[recipes]`` (or ``pip install mujoco-mjx``).

A cart-pole written inline in MJCF is put on the device (`mjx.put_model`), and `--envs` copies
of it start with random pole angles and cart positions (one `mjx.Data` with a leading batch
axis). Each environment balances its pole with a linear feedback controller, scaled by its own
gain (from 5% to 100% of one that works): ``jax.vmap(step)`` advances them all in one
`jaxsinks.scan`, which writes ``qpos``, ``qvel`` and ``ctrl``, each with the batch
as its leading axis, every `--every` steps into a `ZarrSink` (``run["qpos"]`` is
``(frames, envs, nq)``). The stored bytes are the frames the loop gave (the last one is the final
state); they equal the same rollout without a sink within float32 rounding (the recording loop is
another compiled program, which XLA may fuse differently). tests/test_recipes.py checks both.

    python examples/mjx_rollouts.py [--envs 256] [--steps 1000] [--every 10]
        [--out example-output/mjx_rollouts]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxsinks as js

with contextlib.redirect_stdout(io.StringIO()):  # MJX prints that its optional Warp backend
    import mujoco  # is missing
    from mujoco import mjx

CARTPOLE = """
<mujoco model="cartpole">
  <option timestep="0.01"/>
  <worldbody>
    <body name="cart">
      <joint name="slider" type="slide" axis="1 0 0" damping="0.1"/>
      <geom type="box" size="0.2 0.1 0.05" mass="1" contype="0" conaffinity="0"/>
      <body name="pole">
        <joint name="hinge" type="hinge" axis="0 1 0" damping="0.01"/>
        <geom type="capsule" fromto="0 0 0 0 0 0.6" size="0.03" mass="0.1"
              contype="0" conaffinity="0"/>
      </body>
    </body>
  </worldbody>
  <actuator>
    <motor joint="slider" gear="10" ctrlrange="-1 1" ctrllimited="true"/>
  </actuator>
</mujoco>
"""

#: Feedback on (cart position, pole angle, cart velocity, pole angular velocity).
GAINS = np.array([1.0, 10.0, 1.5, 1.0], dtype=np.float32)


def make_envs(envs: int, seed: int) -> tuple[Any, Any, jax.Array]:
    """The device model, the batched initial `mjx.Data` and each environment's gains."""
    model = mjx.put_model(mujoco.MjModel.from_xml_string(CARTPOLE))
    cart, angle = jax.random.uniform(jax.random.key(seed), (2, envs), minval=-0.3, maxval=0.3)

    def start(x: jax.Array, theta: jax.Array) -> Any:
        data = mjx.make_data(model)
        return data.replace(qpos=jnp.stack([x, theta]))

    gains = jnp.linspace(0.05, 1.0, envs)[:, None] * GAINS
    return model, jax.vmap(start)(cart, angle), gains


def batched_step(model: Any, gains: jax.Array) -> Callable[[Any], Any]:
    """One step of every environment: its controller, then `mjx.step`."""

    def step(data: Any, gain: jax.Array) -> Any:
        observation = jnp.concatenate([data.qpos, data.qvel])
        ctrl = jnp.clip(jnp.dot(gain, observation), -1.0, 1.0)
        return mjx.step(model, data.replace(ctrl=ctrl[None]))

    return lambda data: jax.vmap(step)(data, gains)


def frame(data: Any) -> dict[str, jax.Array]:
    return {"qpos": data.qpos, "qvel": data.qvel, "ctrl": data.ctrl}


def rollout(model: Any, data: Any, gains: jax.Array, steps: int) -> jax.Array:
    """The positions after each of `steps` steps, ``(steps, envs, nq)``, without recording."""
    step = batched_step(model, gains)

    def body(data, _):
        data = step(data)
        return data, data.qpos

    return jax.lax.scan(body, data, length=steps)[1]


def recorded_rollout(
    sink: js.ZarrSink, model: Any, data: Any, gains: jax.Array, steps: int
) -> tuple[Any, js.ZarrSink]:
    """`steps` steps in one `jaxsinks.scan`, offering the state to `sink` as steps 0 (the start)
    to `steps`; returns the final state and the closed sink."""
    return js.scan(
        batched_step(model, gains),
        data,
        sink,
        steps=steps,
        frame=frame,
        time=lambda data: data.time[0],
        record_initial=True,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1000, help="steps of 0.01 s")
    parser.add_argument("--every", type=int, default=10, help="record every n steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("example-output/mjx_rollouts")
    )
    args = parser.parse_args(argv)
    model, data, gains = make_envs(args.envs, args.seed)

    args.out.mkdir(parents=True, exist_ok=True)
    sink = js.ZarrSink.create(
        args.out / "cartpole.zarr",
        frame(data),
        every=args.every,
        mode="w",
        attrs={"model": "cartpole", "timestep": 0.01, "gains": np.asarray(gains).tolist()},
    )
    data, sink = recorded_rollout(sink, model, data, gains, steps=args.steps)

    run = js.open(args.out / "cartpole.zarr")
    angle = run["qpos"][-1, :, 1]
    upright = np.abs(angle) < 0.05
    print(
        f"{args.envs} cart-poles, {args.steps} steps of 0.01 s: {len(run)} frames of "
        f"{run['qpos'].shape[1:]} qpos (steps {run.steps[0]}..{run.steps[-1]})"
    )
    print(
        f"pole upright (|angle| < 0.05) at t = {run.times[-1]:.2f} in {upright.sum()} of "
        f"{args.envs} environments (gains 5% to 100%)"
    )
    print(f"saved {args.out / 'cartpole.zarr'}")


if __name__ == "__main__":
    main()
