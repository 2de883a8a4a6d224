"""Campaigns: many runs under one root (a parameter sweep, an ensemble of trajectories), each run
recording its own entry, listed and opened as one collection.

    campaign = jaxsinks.campaign.Campaign.create("sweep.zarr")
    sink = campaign.create_run("T=300", frame, params={"T": 300})

`Campaign`, `RunConfig` and `RunEntry` are also importable from `jaxsinks` itself (as before).
"""

from ._campaign import Campaign as Campaign
from ._config import RunConfig as RunConfig
from ._entry import RunEntry as RunEntry

__all__ = ["Campaign", "RunConfig", "RunEntry"]
