"""ZarrSink: frames streamed from inside the compiled loop to a Zarr v3 run through TensorStore."""

from __future__ import annotations

from typing import Any, final

import jax.numpy as jnp
import numpy as np

from .._core import sharding as _sharding
from .._core.deprecation import deprecated_arguments
from .._core.errors import ConfigError
from .._core.frame import FrameSpec
from .._core.pytree import pytree_dataclass
from .._core.schedule import Schedule
from .._core.sink import RecordOptions, check_capacity, check_mode
from .._core.types import Mode, Overflow, Table
from .._io import writer as _writer
from .._io import zarr_writer as _zarr_writer
from .._io.codecs import Blosc, Codec, FieldConfig, check_codec
from .._io.layout import Ragged, check_user_attributes, make_layout
from .._io.location import parse
from .._io.long_table import check_table, long_table
from .._io.progress import Progress
from .stream import StreamSink, check_progress

#: Default flush block: about this many bytes of frames.
TARGET_BLOCK_BYTES = 8 * 2**20
MAX_DEFAULT_CHUNK = 1024


@final
@pytree_dataclass
class ZarrSink(StreamSink):
    """Records frames to a Zarr v3 run (local disk, memory, S3, GCS) from inside compiled loops.

    Create it on the host with `ZarrSink.create`, carry it through the loop like a `DeviceBuffer`,
    and finish with `jaxsinks.close`. Read the run with `jaxsinks.open`. Device memory is one flush
    block; see `StreamSink` for the state it carries.
    """

    @classmethod
    @deprecated_arguments("ZarrSink.create", renamed={"fields": "field_config"})
    def create(
        cls,
        store: Any,
        frame: Any,
        *,
        every: int | Schedule | None = None,
        chunk: int | None = None,
        chunks_per_shard: int | None = None,
        codec: Codec = Blosc("lz4", 5, "shuffle"),
        field_config: dict[str, FieldConfig] | None = None,
        per_system: bool = False,
        once: bool = False,
        table: Table = "wide",
        ragged: Ragged | None = None,
        capacity: int | None = None,
        overflow: Overflow = "error",
        mode: Mode = "w-",
        attrs: dict[str, Any] | None = None,
        time_dtype: Any = jnp.float32,
        progress: Progress | None = None,
        max_inflight_bytes: int = _writer.DEFAULT_MAX_INFLIGHT_BYTES,
        mesh: Any = None,
        axis: str | None = None,
    ) -> ZarrSink:
        """Create the run at `store` (host side) and return an empty sink that streams to it.

        Args:
            store: a local path (the default kind), ``file://``, ``memory://``, ``s3://`` or
                ``gs://`` URL, or a TensorStore kvstore spec dict.
            frame: an example frame (arrays or `jax.ShapeDtypeStruct`s).
            every: the schedule `jaxsinks.record` follows (an int n, or a `Schedule`).
            chunk: frames per zarr chunk along the frame axis. By default about 8 MiB of frames,
                at most 1024 (and at least one batch of rows for a per-system sink).
            chunks_per_shard: if given, chunks are packed into shards of this many chunks with the
                sharding codec, and each flush writes one whole shard.
            codec: `Blosc(cname, clevel, shuffle)` (default: lz4 with byte shuffle, the fastest
                and among the best ratios on float frames measured here; see the compression
                guide), `Zstd(level)`, or None for no compression.
            field_config: per-field storage overrides, field name -> `FieldConfig` (dtype,
                codec, chunk, dims). Formerly `fields` (still accepted, with a
                DeprecationWarning).
            per_system: record the rows of a batch selected by a mask (see `DeviceBuffer`).
            once: with `per_system`, record each system at most once (when first selected).
            table: ``"wide"`` stores one array per field (default); ``"long"`` stores a log of
                scalar fields as a tidy table, one row per (frame or system, field), in the arrays
                ``step``, ``time``, ``system`` (-1 for a whole-frame sink), ``name`` (an index
                into the ``names`` attribute of the ``name`` array) and ``value`` along a ``row``
                dimension. Every field must be a scalar (per system); ``value`` has the smallest
                dtype that holds every field's values exactly (int64 beside floats is refused).
                `field_config`, `ragged`, `mesh` and ``overflow="ring"`` are not available with it.
            ragged: store padded fields of systems of different sizes CSR-style (see `Ragged`).
            capacity: the most frames the run holds (None: unbounded).
            overflow: past `capacity`, as for `DeviceBuffer`: ``"error"`` (default) keeps the
                first `capacity` frames and raises `SinkOverflowError` at close, ``"drop"`` keeps
                them silently, ``"ring"`` keeps the newest `capacity` frames and needs
                `capacity` to be a multiple of the flush block. ``"drop"`` and ``"ring"`` need a
                `capacity`.
            mode: ``"w-"`` create and fail if a store exists (default); ``"w"`` overwrite;
                ``"a"`` append to the run there (created if missing), continuing its frames;
                the frame, `chunk`, `chunks_per_shard`, `codec`, `field_config`, `time_dtype`,
                `capacity` and `overflow` must be those of the stored run.
            attrs: user attributes stored with the run (JSON only).
            time_dtype: the dtype of the time column.
            progress: a `Progress` bar advanced to the step of each flushed block.
            max_inflight_bytes: the most bytes of flushed blocks not yet durable; a flush waits
                for older commits beyond it (back-pressure).
            mesh: with `axis`, record frames split along their leading axis over a mesh axis
                (e.g. an ensemble spread over devices). `frame` is the whole frame; the sink is
                recorded inside `shard_map` (in/out spec `sink.partition_spec`), each device
                flushing its own part to its own chunks of the store: nothing is gathered. The
                stored run is the same as a one-device run whose fields are chunked by one
                device's part (``FieldConfig(chunk=...)``). With `jax.distributed`, each process
                writes its own devices' parts; see the multi-host guide.
            axis: the name of the mesh axis the frames' leading axis is split over.
        """
        owner = "ZarrSink.create"
        mode = check_mode(owner, mode)
        codec = check_codec(codec, owner)
        shard = _sharding.shard_info(owner, mesh, axis)
        if check_table(owner, table) == "long":
            given = [
                arg
                for arg, value in (
                    ("field_config", field_config),
                    ("ragged", ragged),
                    ("mesh", mesh),
                )
                if value is not None
            ] + (["overflow='ring'"] if overflow == "ring" else [])
            if given:
                raise ConfigError(
                    f"`{owner}` with table='long' stores a log of scalar fields as one table of "
                    f"rows; it cannot be combined with {', '.join(given)}. Record those frames "
                    "in a sink with table='wide'."
                )
        if shard is not None:
            if per_system or ragged is not None or overflow == "ring":
                raise ConfigError(
                    f"`{owner}` records sharded frames as whole frames: per_system, ragged and "
                    "overflow='ring' are not available with `mesh`."
                )
            frame = _sharding.local_frame(owner, frame, shard)
        options = RecordOptions.check(
            owner,
            frame,
            capacity=capacity,
            overflow=overflow,
            every=every,
            per_system=per_system,
            once=once,
            time_dtype=time_dtype,
        )
        spec, batch_size, capacity = options.spec, options.batch_size, options.capacity
        rows = None if table == "wide" else long_table(owner, spec, batch_size is not None)
        chunk = default_chunk(owner, chunk, spec, batch_size)
        if chunks_per_shard is not None:
            chunks_per_shard = check_capacity(owner, "chunks_per_shard", chunks_per_shard)
        if field_config is not None and not isinstance(field_config, dict):
            raise ConfigError(
                f"`{owner}` needs `field_config` to be a dict of field name -> "
                f"jaxsinks.FieldConfig; got {type(field_config).__name__}."
            )
        field_config = dict(field_config or {})
        for name, cfg in field_config.items():
            if not isinstance(cfg, FieldConfig):
                raise ConfigError(
                    f"`field_config['{name}']` must be a jaxsinks.FieldConfig; got "
                    f"{type(cfg).__name__}."
                )
        progress = check_progress(progress)
        layout = make_layout(
            spec,
            chunk=chunk,
            chunks_per_shard=chunks_per_shard,
            codec=codec,
            field_config=field_config,
            time_dtype=np.dtype(options.time_dtype),
            batch_size=batch_size,
            ragged=ragged,
            shards=1 if shard is None else shard.count,
        )
        if batch_size is not None and layout.block < batch_size:
            raise ConfigError(
                f"`{owner}` needs the flush block ({layout.block} frames) to hold at least one "
                f"batch of {batch_size} systems; pass chunk >= {batch_size}."
            )
        ring = overflow == "ring" and capacity is not None
        if ring and capacity is not None and capacity % layout.block:
            raise ConfigError(
                f"`{owner}` with overflow='ring' needs `capacity` to be a multiple of the flush "
                f"block ({layout.block} frames); got capacity={capacity}."
            )
        if ring and ragged is not None:
            raise ConfigError(
                f"`{owner}` cannot combine a ring (overflow='ring') with ragged fields."
            )
        user_attrs = check_user_attributes(attrs)
        location = parse(store)
        meta = {"schedule": options.schedule.to_json(), "capacity": capacity, "overflow": overflow}
        shards = (0,) if shard is None else _sharding.local_shards(mesh, shard)
        writer = _zarr_writer.create_run(
            location,
            layout,
            mode=mode,
            meta=meta,
            user_attrs=user_attrs,
            capacity=capacity,
            ring=ring,
            max_inflight_bytes=max_inflight_bytes,
            progress=progress,
            shards=shards,
            table=rows,
        )
        return cls._empty(writer, options, layout, shard=shard, mesh=mesh)


def default_chunk(owner: str, chunk: int | None, spec: FrameSpec, batch_size: int | None) -> int:
    """`chunk` if given (checked), else about `TARGET_BLOCK_BYTES` of frames (at least a batch)."""
    if chunk is not None:
        return check_capacity(owner, "chunk", chunk)
    frame_bytes = max(1, spec.nbytes)
    return max(batch_size or 1, min(MAX_DEFAULT_CHUNK, TARGET_BLOCK_BYTES // frame_bytes or 1))
