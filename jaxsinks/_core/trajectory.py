"""What a sink hands back to the host: recorded frames in order, with their steps and times."""

from __future__ import annotations

import dataclasses

import numpy as np

from .types import PyTree


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """Recorded frames read back to the host, oldest first.

    Attributes:
        frames: the frame pytree with numpy leaves, each with a leading frame axis.
        steps: the step of each frame (int32).
        times: the simulation time of each frame (NaN where none was given).
        systems: for per-system sinks, the row (system index) each frame came from; else None.
    """

    frames: PyTree
    steps: np.ndarray
    times: np.ndarray
    systems: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.steps.shape[0])
