"""The I/O benchmark behind `jaxsinks bench`: write throughput and compression ratio per codec and
chunk size, on synthetic frames shaped like the user's.

Each configuration records its frames the real way: `ZarrSink.create`, a jitted `lax.scan` that
records every step, and `jaxsinks.close` (which waits until the frames are durable). The scan is
compiled before the clock starts, and the page cache is synced between configurations, so that
one configuration's compile or write-back is not charged to another. Everything is written to a
temporary directory that is always deleted afterwards.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from .. import Blosc, FieldConfig, ZarrSink, Zstd, close, record
from .. import open as open_run
from .._core.errors import ConfigError, StoreError
from .._core.frame import FrameSpec, nested
from .._core.types import BloscName
from .._io.layout import check_new_run, make_layout

Codec = Zstd | Blosc | None

DEFAULT_CODECS = ("none", "zstd1", "zstd3", "blosc-lz4", "blosc-zstd")
DEFAULT_CHUNKS = (16, 64, 256)
DATA_KINDS = ("smooth", "noise")
#: Size of the noise on top of the smooth fields (values 1..11): the low mantissa bits are random.
SMOOTH_NOISE = 1e-3
#: Most bytes of random frames held on the device for the noise.
POOL_BYTES = 256 * 2**20


@dataclasses.dataclass(frozen=True)
class FieldShape:
    """One synthetic field: its name (``/`` nests), frame shape, dtype, and dtype on disk."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    stored_dtype: np.dtype | None = None


@dataclasses.dataclass(frozen=True)
class BenchRow:
    """The result of one codec x chunk configuration."""

    codec: str
    chunk: int
    frames: int
    logical_bytes: int
    stored_bytes: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        """Logical megabytes (10^6 bytes) recorded per second, create to durable close."""
        return self.logical_bytes / self.seconds / 1e6

    @property
    def ratio(self) -> float:
        """Compression ratio: logical bytes over the stored bytes of the fields' arrays (the
        run's own metadata and step/time columns are left out: they do not depend on the codec)."""
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else float("nan")

    @property
    def stored_mib(self) -> float:
        return self.stored_bytes / 2**20


def parse_codec(name: str) -> Codec:
    """A codec from its benchmark name: ``none``, ``zstdN`` (e.g. ``zstd3``) or
    ``blosc-CNAME[-LEVEL]`` (e.g. ``blosc-lz4``, ``blosc-zstd-5``; level 5 by default)."""
    if name == "none":
        return None
    if match := re.fullmatch(r"zstd(-?\d+)?", name):
        return Zstd(int(match.group(1)) if match.group(1) else 3)
    if match := re.fullmatch(r"blosc-([a-z0-9]+?)(?:-(\d))?", name):
        return Blosc(cast(BloscName, match.group(1)), int(match.group(2) or 5), "shuffle")
    raise ConfigError(
        f"Unknown codec name {name!r}; use 'none', 'zstdN' (e.g. 'zstd3') or 'blosc-CNAME[-LEVEL]' "
        "(e.g. 'blosc-lz4', 'blosc-zstd-5')."
    )


def fields_from_shape(shape: Sequence[int], dtype: Any) -> list[FieldShape]:
    """One field ``x`` with frames of `shape` and `dtype`."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ConfigError(f"`dtype` {dtype!r} is not a dtype; try 'float32'.") from None
    shape = tuple(int(n) for n in shape)
    if any(n < 1 for n in shape):
        raise ConfigError(f"`shape` must have positive sizes; got {shape}.")
    return [FieldShape("x", shape, dt)]


def fields_like(store: Any) -> list[FieldShape]:
    """The fields of the run at `store` (frame shapes, source and stored dtypes), to mimic it."""
    run = open_run(store)
    fields = []
    for f in run.meta["schema"]["fields"]:
        try:
            dtype = np.dtype(f["dtype"])
            shape = tuple(f["shape"])
            if not all(isinstance(n, int) and n >= 0 for n in shape):
                raise ValueError(f"shape {f['shape']!r} is not a list of sizes")
            fields.append(
                FieldShape(f["name"], shape, dtype, np.dtype(f.get("storage_dtype", dtype)))
            )
        except (KeyError, TypeError, ValueError) as err:
            problem = f"it has no {err.args[0]!r}" if isinstance(err, KeyError) else str(err)
            raise StoreError(
                f"The run at {run.location} has damaged metadata: the schema entry of its field "
                f"{f['name']!r} does not give a frame shape and dtype ({problem}), so `--like` "
                "cannot mimic it. Benchmark with --shape and --dtype instead."
            ) from None
    return fields


def run_bench(
    fields: Sequence[FieldShape],
    *,
    frames: int = 2000,
    codecs: Sequence[str] = DEFAULT_CODECS,
    chunks: Sequence[int] = DEFAULT_CHUNKS,
    data: str = "smooth",
    directory: Any = None,
) -> list[BenchRow]:
    """Benchmark every codec x chunk on `frames` synthetic frames of `fields`; see `iter_bench`."""
    return list(
        iter_bench(
            fields, frames=frames, codecs=codecs, chunks=chunks, data=data, directory=directory
        )
    )


def iter_bench(
    fields: Sequence[FieldShape],
    *,
    frames: int = 2000,
    codecs: Sequence[str] = DEFAULT_CODECS,
    chunks: Sequence[int] = DEFAULT_CHUNKS,
    data: str = "smooth",
    directory: Any = None,
) -> Iterator[BenchRow]:
    """One `BenchRow` per codec x chunk, yielded as each finishes; the arguments are checked at
    once, before the first configuration runs.

    Args:
        fields: the synthetic fields of each frame.
        frames: frames recorded per configuration (one per scan step).
        codecs: codec names (see `parse_codec`).
        chunks: frames per zarr chunk.
        data: ``"smooth"`` (smooth fields plus small noise: compressible, like relaxed
            structures) or ``"noise"`` (standard normal: incompressible).
        directory: where the temporary directory goes (default: the system's temp directory);
            it is deleted afterwards, whatever happens.
    """
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ConfigError(f"`frames` must be a positive int; got {frames!r}.")
    if data not in DATA_KINDS:
        raise ConfigError(f"`data` must be one of {list(DATA_KINDS)}; got {data!r}.")
    if not fields:
        raise ConfigError("`fields` is empty; give at least one field to benchmark.")
    for f in fields:
        if jax.dtypes.canonicalize_dtype(f.dtype) != f.dtype:
            raise ConfigError(
                f"Field '{f.name}' has dtype {f.dtype.name}, but JAX would record it as "
                f"{jax.dtypes.canonicalize_dtype(f.dtype).name}: 64-bit types are off. Set "
                "JAX_ENABLE_X64=1 in the environment to benchmark 64-bit frames, or use a "
                "32-bit dtype."
            )
    parsed = {name: parse_codec(name) for name in codecs}
    chunks = [_positive("chunks", c) for c in chunks]
    if not parsed or not chunks:
        raise ConfigError("`codecs` and `chunks` each need at least one entry.")
    if directory is not None and not pathlib.Path(directory).is_dir():
        problem = "is not a directory" if pathlib.Path(directory).exists() else "does not exist"
        raise ConfigError(
            f"`directory` '{directory}' {problem}; give an existing directory, or leave it out."
        )
    example, overrides = _example(fields)
    layout = make_layout(  # a field no run can store is refused now, not after the header
        FrameSpec.from_example(example),
        chunk=chunks[0],
        chunks_per_shard=None,
        codec=None,
        field_config=overrides,
        time_dtype=np.dtype("float32"),
        batch_size=None,
    )
    check_new_run(layout)
    return _bench(fields, frames, parsed, chunks, data, directory)


def _example(fields: Sequence[FieldShape]) -> tuple[Any, dict[str, FieldConfig]]:
    """The example frame of `fields`, and the storage dtypes that differ from theirs."""
    example = nested({f.name: jax.ShapeDtypeStruct(f.shape, f.dtype) for f in fields})
    overrides = {
        f.name: FieldConfig(dtype=f.stored_dtype)
        for f in fields
        if f.stored_dtype is not None and f.stored_dtype != f.dtype
    }
    return example, overrides


def _bench(
    fields: Sequence[FieldShape],
    frames: int,
    parsed: dict[str, Codec],
    chunks: list[int],
    data: str,
    directory: Any,
) -> Iterator[BenchRow]:
    """`iter_bench`'s rows, its arguments checked."""
    example, overrides = _example(fields)
    pool = pool_size(fields, chunks)
    rng = np.random.default_rng(0)
    bases = [jnp.asarray(_smooth_base(f.shape)) for f in fields]
    noises = [jnp.asarray(rng.standard_normal((pool, *f.shape), dtype=np.float32)) for f in fields]
    scan = jax.jit(_recorder(fields, data, frames, pool))
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="jaxsinks-bench-", dir=directory))
    first = True
    try:
        for name, codec in parsed.items():
            for chunk in chunks:

                def create(store: pathlib.Path, codec=codec, chunk=chunk) -> ZarrSink:
                    return ZarrSink.create(
                        store, example, chunk=chunk, codec=codec, field_config=overrides
                    )

                warmup = create(tmp / "warmup.zarr")
                compiled = scan.lower(warmup, bases, noises).compile()  # compile time is not timed
                if first:  # the process's first recording also starts threads and callbacks
                    warmup, first = compiled(warmup, bases, noises), False
                close(warmup)
                shutil.rmtree(tmp / "warmup.zarr")
                os.sync()  # the previous configuration's write-back is not charged to this one
                store = tmp / f"{name}-{chunk}.zarr"
                start = time.perf_counter()
                close(compiled(create(store), bases, noises))
                seconds = time.perf_counter() - start
                described = open_run(store).describe()
                shutil.rmtree(store)
                yield BenchRow(
                    name,
                    chunk,
                    frames,
                    described["logical_bytes"],
                    sum(f["stored_bytes"] for f in described["fields"]),
                    seconds,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _recorder(fields: Sequence[FieldShape], data: str, frames: int, pool: int):
    """A function ``(sink, bases, noises) -> sink`` recording `frames` frames, one per step.

    Frame ``i`` takes its noise from entry ``i % pool`` of a pool of random frames made once on
    the host: drawing fresh random numbers inside the scan would cost more than the recording
    that is being measured. `pool` exceeds the largest chunk, so no chunk holds a frame twice.
    """

    def frame(bases: list[jax.Array], noises: list[jax.Array], step: jax.Array) -> dict[str, Any]:
        slot = step % pool
        wave = 1.0 + 0.05 * jnp.sin(0.01 * step.astype(jnp.float32))
        values = {}
        for f, base, noise in zip(fields, bases, noises):
            x = noise[slot] if data == "noise" else base * wave + SMOOTH_NOISE * noise[slot]
            values[f.name] = _cast(x, f.dtype)
        return nested(values)

    def run(sink: ZarrSink, bases: list[jax.Array], noises: list[jax.Array]) -> ZarrSink:
        def body(sink, step):
            return record(
                sink,
                step=step,
                time=step.astype(jnp.float32),
                frame=lambda: frame(bases, noises, step),
            ), None

        return jax.lax.scan(body, sink, jnp.arange(frames, dtype=jnp.int32))[0]

    return run


def pool_size(fields: Sequence[FieldShape], chunks: Sequence[int]) -> int:
    """Random frames in the noise pool: one more than the largest chunk, within `POOL_BYTES`."""
    frame_bytes = sum(4 * math.prod(f.shape) for f in fields) or 1
    return max(2, min(max(chunks) + 1, POOL_BYTES // frame_bytes))


def _smooth_base(shape: tuple[int, ...]) -> np.ndarray:
    """A smooth float32 field of `shape`, between 1 and 11 (like coordinates of a structure)."""
    grids = np.meshgrid(*[np.linspace(0.0, 1.0, n) for n in shape], indexing="ij")
    phase = sum((k + 1.0) * g for k, g in enumerate(grids)) if grids else np.float64(0.3)
    return (6.0 + 5.0 * np.sin(2.0 * np.pi * phase)).astype(np.float32)


def _cast(x: jax.Array, dtype: np.dtype) -> jax.Array:
    if dtype == np.bool_:
        return x > 0.0
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return jnp.clip(jnp.round(1000.0 * x), float(info.min), float(info.max)).astype(dtype)
    return x.astype(dtype)


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"`{name}` must hold positive ints; got {value!r}.")
    return int(value)
