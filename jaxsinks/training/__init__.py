"""Training sets from recorded runs: frames (or each frame's points) shuffled once into a chunked
Zarr store, so that drawing N random items reads one random chunk.

    training_set = jaxsinks.training.export_training(campaign, "train.zarr", sample_size=256)
    batch = training_set.sample(256, rng=0)

`export_training`, `TrainingSet` and `Sample` are also importable from `jaxsinks` itself.
"""

from ._export import export_training as export_training
from ._set import Sample as Sample
from ._set import TrainingSet as TrainingSet

__all__ = ["Sample", "TrainingSet", "export_training"]
