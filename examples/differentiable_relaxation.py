"""Learn a Lennard-Jones parameter through a relaxation, recording every relaxation to Zarr.

A 13-atom cluster is relaxed with a fixed number of smooth descent steps inside `lax.scan`; the
loss compares its pair distances with those of a target geometry (the same cluster relaxed with
sigma = 1.15), so it is blind to rotations and translations. The start is scaled with sigma so
every relaxation stays in the same basin. Gradient descent on sigma recovers the target's value,
with `value_and_grad` differentiating through the whole relaxation. Meanwhile a `ZarrSink` records
the relaxation trajectory of every optimisation step (every 10th relaxation step, with an
``epoch`` field), from inside the differentiated scan: the sink's flush acknowledgement is part of
its state, so `grad` cannot drop the writes (each frame is written exactly once per epoch).

The gradient is checked against central finite differences before training.

    python examples/differentiable_relaxation.py [--epochs 12] [--steps 200] [--out DIR]
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import jaxsinks as js
from jaxsinks.demo import fire, lj

TARGET_SIGMA = 1.15


def relax(sigma, positions, mask, steps, sink, epoch):
    """`steps` descent steps from `positions`, recording every 10th into `sink`."""

    def body(carry, step):
        x, v, sink = carry
        x, v = fire.descent_step(x, v, mask, sigma)
        frame = lambda: {"positions": x[0], "energy": lj.energy(x, mask, sigma)[0], "epoch": epoch}  # noqa: E731
        return (x, v, js.record(sink, step=step, frame=frame)), None

    (x, _, sink), _ = jax.lax.scan(
        body, (positions, jnp.zeros_like(positions), sink), jnp.arange(steps)
    )
    return x, sink


def pair_distances(positions: jax.Array) -> jax.Array:
    """The distances between the atoms of the first system (the diagonal is 1, not 0: smooth)."""
    d = positions[0][:, None] - positions[0][None]
    return jnp.sqrt(jnp.sum(d * d, axis=-1) + jnp.eye(d.shape[0]))


def make_loss(batch: lj.Batch, target_sigma: float, steps: int):
    """The loss of sigma: pair distances after relaxing vs. those relaxed with `target_sigma`."""
    target = pair_distances(
        fire.relax_fixed_steps(
            target_sigma * batch.positions, batch.mask, target_sigma, n_steps=steps
        )
    )

    def loss(sigma, sink, epoch):
        x, sink = relax(sigma, sigma * batch.positions, batch.mask, steps, sink, epoch)
        return jnp.mean((pair_distances(x) - target) ** 2), sink

    return loss


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--steps", type=int, default=300, help="relaxation steps per epoch")
    parser.add_argument("--lr", type=float, default=0.15, help="learning rate on sigma")
    parser.add_argument("--out", default="example-output/differentiable")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    batch = lj.pad_clusters(
        [lj.icosahedron() + 0.05 * np.random.default_rng(0).standard_normal((13, 3))]
    )
    loss = make_loss(batch, TARGET_SIGMA, args.steps)
    value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))

    frame = {"positions": batch.positions[0], "energy": jnp.float32(0), "epoch": jnp.int32(0)}
    store = out / "relaxations.zarr"
    sink = js.ZarrSink.create(
        store, frame, every=10, mode="w", attrs={"target_sigma": TARGET_SIGMA}
    )

    # Check the gradient against central finite differences (float32; h chosen for that).
    sigma, h = jnp.float32(1.0), 1e-2
    scratch = js.ZarrSink.create("memory://fd-check", frame, every=10**6)
    (_, scratch), grad = value_and_grad(sigma, scratch, jnp.int32(-1))
    (up, scratch), _ = value_and_grad(sigma + h, scratch, jnp.int32(-1))
    (down, scratch), _ = value_and_grad(sigma - h, scratch, jnp.int32(-1))
    js.close(scratch)
    fd = (up - down) / (2 * h)
    print(f"gradient at sigma=1.0: autodiff {float(grad):.6f}, finite differences {float(fd):.6f}")
    if not np.isclose(float(grad), float(fd), rtol=2e-2):
        raise SystemExit("the gradient does not match finite differences")

    losses = []
    for epoch in range(args.epochs):
        (value, sink), grad = value_and_grad(sigma, sink, jnp.int32(epoch))
        losses.append(float(value))
        print(
            f"epoch {epoch:2d}: sigma {float(sigma):.5f}  loss {float(value):.3e}  grad "
            f"{float(grad):+.3e}"
        )
        sigma = sigma - args.lr * grad
    js.close(sink)

    run = js.open(store)
    epochs = run["epoch"][:]
    per_epoch = np.bincount(epochs, minlength=args.epochs)
    print(
        f"recorded {len(run)} frames in {store}: {per_epoch.tolist()} per epoch "
        f"(every 10th of {args.steps} relaxation steps)"
    )
    print(
        f"sigma {float(sigma):.4f} (target {TARGET_SIGMA}); loss fell from {losses[0]:.3e} to "
        f"{losses[-1]:.3e}"
    )
    if not losses[-1] < 0.01 * losses[0] or not abs(float(sigma) - TARGET_SIGMA) < 1e-2:
        raise SystemExit("the loss did not fall by 100x to sigma = the target's")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
