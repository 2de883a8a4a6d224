"""The host side: every thread, lock, registry, file and network call.

The host call that leaves a compiled program (`callback`, the one module that may touch
`jax._src`), the three-stage writer pipeline (`writer`) and its stores (`zarr_writer`; CSV and
host memory live with their sinks), the Zarr layout and codecs (`layout`, `codecs`), locations
and cloud credentials (`location`, `cloud`), TensorStore calls (`tsio`), who is writing a run
(`owner`), several hosts writing one run (`multihost`), and progress bars (`progress`).
"""
