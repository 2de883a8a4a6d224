"""The Zarr v3 layout of a run, built by pure functions: frame spec + options -> JSON.

One group per run. One array per frame leaf (its pytree path is its node path) with a leading
``frame`` axis, plus the ``step`` and ``time`` columns (and ``system`` for per-system sinks). A
leaf whose path starts with a column's name is stored under that part with ``_`` appended
(``time`` as ``time_``, ``time/x`` as ``time_/x``); the schema records its field name. Field arrays
name the columns in their CF ``coordinates`` attribute, so that xarray shows the columns as
coordinates; a closed run's ``zarr.json`` holds zarr-python's consolidated metadata. The
frame axis is chunked by the flush block (``chunk`` frames, or ``chunk * chunks_per_shard`` when
sharded) so that every flush writes whole chunks or shards. Group attributes hold the run's
metadata under the ``jaxsinks`` key and the user's attributes beside it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

from .._core.errors import ConfigError, StoreError
from .._core.frame import FrameSpec, node_names
from .codecs import (
    Codec,
    FieldConfig,
    check_storable,
    codec_chain,
    drops_fractions,
    is_float,
    narrowing_range,
    rounds_integers,
)

SCHEMA_VERSION = 1
ATTRS_KEY = "jaxsinks"
#: User attributes are rewritten with every committed count: keep them small.
MAX_ATTRS_BYTES = 2**20
COLUMNS = ("step", "time", "system")


def check_schema_version(doc: Any, what: str, schema: str, supported: int) -> dict[str, Any]:
    """`doc` if it is a JSON object whose ``schema_version`` is an int from 1 to `supported` (the
    newest version of the `schema` JSON that this jaxsinks reads); else a StoreError naming
    `what` and the version read: one above `supported` asks to upgrade jaxsinks, anything else
    (missing, not an int, below 1: no jaxsinks wrote it) says the file is damaged."""
    if not isinstance(doc, dict):
        raise StoreError(f"{what} is not a JSON object; it was not written by jaxsinks.")
    version = doc.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        got = "missing" if "schema_version" not in doc else f"of type {type(version).__name__}"
        raise StoreError(
            f"{what} is damaged or was not written by jaxsinks: it has {schema} schema version "
            f"{version!r} ({got}), but every jaxsinks writes an int from 1 up (in "
            "`schema_version`). Restore it from a copy if there is one."
        )
    if version > supported:
        raise StoreError(
            f"{what} was written with {schema} schema version {version}; this jaxsinks reads "
            f"versions up to {supported}. Upgrade jaxsinks to read it."
        )
    return doc


def fill_value(dtype: np.dtype) -> Any:
    """The zarr fill value of `dtype` (what an unwritten chunk reads as): NaN for floats
    (bfloat16 too; both parts of a complex), False for bool, 0 otherwise."""
    if np.issubdtype(dtype, np.complexfloating):
        return ["NaN", "NaN"]
    if is_float(dtype):
        return "NaN"
    return False if dtype == np.bool_ else 0


def array_metadata(
    shape: tuple[int, ...],
    dtype: np.dtype,
    chunk: tuple[int, ...],
    codec: Codec,
    dims: tuple[str, ...],
    *,
    fill: Any = None,
    inner_chunk: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """The zarr v3 metadata (TensorStore ``zarr3`` driver form) of an array of `shape` and
    `dtype`, chunked by `chunk` (the shards, with `inner_chunk` chunks inside each), compressed
    with `codec`, with axes named `dims` and unwritten values `fill` (default: `fill_value`)."""
    return {
        "shape": list(shape),
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunk)}},
        "chunk_key_encoding": {"name": "default"},
        "fill_value": fill_value(dtype) if fill is None else fill,
        "codecs": codec_chain(codec, dtype, None if inner_chunk is None else list(inner_chunk)),
        "dimension_names": list(dims),
    }


@dataclasses.dataclass(frozen=True)
class ArrayLayout:
    """One stored array: its node name, dtypes, per-frame shape, chunking, codec and axis names."""

    name: str
    dtype: np.dtype  # as stored
    source_dtype: np.dtype  # as recorded on the device
    shape: tuple[int, ...]  # of one frame
    chunk: tuple[int, ...]  # zarr chunk, frame axis first (the inner chunk when sharded)
    shard_frames: int | None  # frames per shard when sharded
    codec: Codec
    dims: tuple[str, ...]  # frame axis first (the atom axis, for ragged fields)
    ragged_axes: int = 0  # ragged fields: how many leading per-frame axes fold into the atom axis
    shards: int = 1  # sharded fields: each device records shape[0] of the stored shards * shape[0]
    field: str | None = None  # the frame's field name, where the node is renamed (`node_names`)
    coordinates: tuple[str, ...] = ()  # the columns, named in the CF `coordinates` attribute

    @property
    def field_name(self) -> str:
        """The name of the field in the frame (its node name unless that was renamed)."""
        return self.name if self.field is None else self.field

    @property
    def stored_shape(self) -> tuple[int, ...]:
        """The shape of one stored entry: a frame (all shards), or for ragged fields one atom."""
        if self.shards > 1:
            return (self.shards * self.shape[0], *self.shape[1:])
        return self.shape[self.ragged_axes :]

    @property
    def fill_value(self) -> Any:
        """The dtype's fill value (`fill_value`), except -1 for the integer columns."""
        if self.name in COLUMNS and np.issubdtype(self.dtype, np.integer):
            return -1
        return fill_value(self.dtype)

    @property
    def max_atoms(self) -> int:
        """A ragged field's padded size: the length of its padded atom axis."""
        return self.shape[self.ragged_axes - 1]

    def real_atoms(self, xp: Any, count: Any) -> Any:
        """Which padded atoms of this ragged field are real, for the ragged `count` (numpy or
        jax.numpy, as `xp`): ``arange(max_atoms) < count[..., None]``, of count's shape followed
        by ``max_atoms``."""
        atoms = xp.arange(self.max_atoms, dtype=count.dtype)
        return atoms.reshape((1,) * count.ndim + atoms.shape) < count[..., None]

    @property
    def narrowing(self) -> tuple[float, float] | None:
        """The storage dtype's range, if recording into it can go out of range."""
        return narrowing_range(self.source_dtype, self.dtype)

    @property
    def rounds(self) -> bool:
        """Whether the storage dtype, a float one, does not hold every integer of this integer
        field exactly (`rounds_integers`): each value is checked when it is flushed."""
        return rounds_integers(self.source_dtype, self.dtype)

    def metadata(self, frames: int) -> dict[str, Any]:
        """The zarr v3 array metadata (TensorStore ``zarr3`` driver form) for `frames` frames."""
        if self.shard_frames is None:
            grid, inner = self.chunk, None
        else:
            grid, inner = (self.shard_frames, *self.chunk[1:]), self.chunk
        meta = array_metadata(
            (frames, *self.stored_shape),
            self.dtype,
            grid,
            self.codec,
            self.dims,
            fill=self.fill_value,
            inner_chunk=inner,
        )
        if self.coordinates:
            meta["attributes"] = {"coordinates": " ".join(self.coordinates)}
        return meta

    def schema(self) -> dict[str, Any]:
        """What must match for a run to be appended to."""
        out: dict[str, Any] = {
            "name": self.name,
            "shape": list(self.stored_shape if self.shards > 1 else self.shape),
            "dtype": self.source_dtype.name,
            "storage_dtype": self.dtype.name,
            "codec": repr(self.codec),
            "dims": list(self.dims),
        }
        if self.ragged_axes:
            out["ragged"] = True
        if self.field is not None:
            out["field"] = self.field
        return out


@dataclasses.dataclass(frozen=True)
class Layout:
    """All arrays of a run and the flush block size."""

    fields: tuple[ArrayLayout, ...]
    columns: tuple[ArrayLayout, ...]
    chunk: int
    chunks_per_shard: int | None
    batch_size: int | None
    ragged: Ragged | None = None

    @property
    def block(self) -> int:
        """Frames per flush: one chunk, or one shard when sharded."""
        return self.chunk * (self.chunks_per_shard or 1)

    @property
    def arrays(self) -> tuple[ArrayLayout, ...]:
        return self.fields + self.columns

    @property
    def groups(self) -> tuple[str, ...]:
        """Intermediate groups needed by nested field names (``a`` for ``a/b``), parents first."""
        out: list[str] = []
        for f in self.fields:
            parts = f.name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                name = "/".join(parts[:i])
                if name not in out:
                    out.append(name)
        return tuple(out)

    @property
    def ragged_fields(self) -> tuple[ArrayLayout, ...]:
        return tuple(a for a in self.fields if a.ragged_axes)

    def schema(self) -> dict[str, Any]:
        return {
            "fields": [a.schema() for a in self.fields],
            "time_dtype": self.columns[1].dtype.name,
            "per_system": self.batch_size,
            "chunk": self.chunk,
            "chunks_per_shard": self.chunks_per_shard,
            "ragged": None if self.ragged is None else self.ragged.to_json(),
        }


@dataclasses.dataclass(frozen=True)
class Ragged:
    """Store fields of a padded batch CSR-style: each system's atoms at their true count.

    A batch of systems of different sizes is padded on the device: a field like ``positions`` has
    shape ``(systems, max_atoms, 3)`` (per frame), and the integer field `count` (shape
    ``(systems,)``) says how many atoms each system really has. With ``Ragged(count="natoms",
    fields=("positions", "forces"))`` those fields are stored with the padding removed: the real
    atoms of every recorded frame concatenated along an ``atom`` axis, and `count` stored as an
    ordinary field, from which readers rebuild each system's arrays. For per-system sinks each
    recorded row is one system (``positions`` is ``(max_atoms, 3)`` per row, `count` a scalar).
    Appending never rereads what is stored: the writer keeps the running atom count.
    """

    count: str
    fields: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.count, str) or not self.count:
            raise ConfigError(
                f"`Ragged` needs `count` to be the name of a field; got {self.count!r}."
            )
        fields = (self.fields,) if isinstance(self.fields, str) else tuple(self.fields)
        if not fields or not all(isinstance(f, str) for f in fields):
            raise ConfigError(
                f"`Ragged` needs `fields` to name at least one field; got {self.fields!r}."
            )
        if self.count in fields:
            raise ConfigError(f"`Ragged` cannot make its count field '{self.count}' ragged itself.")
        object.__setattr__(self, "fields", fields)

    def to_json(self) -> dict[str, Any]:
        """A JSON description, stored with the run's schema."""
        return {"count": self.count, "fields": list(self.fields)}


def make_layout(
    spec: FrameSpec,
    *,
    chunk: int,
    chunks_per_shard: int | None,
    codec: Codec,
    field_config: dict[str, FieldConfig] | None,
    time_dtype: np.dtype,
    batch_size: int | None,
    ragged: Ragged | None = None,
    shards: int = 1,
) -> Layout:
    """The layout of a run recording frames of `spec` (rows of it, for per-system sinks).

    With `shards` > 1, `spec` is one device's part of a frame split along its leading axis: the
    stored arrays hold all `shards` parts, chunked so that each device writes whole chunks.
    `field_config` None: the sink takes no per-field options (its fields are stored as recorded).
    """
    configurable = field_config is not None
    field_config = field_config or {}
    unknown = sorted(set(field_config) - set(spec.names))
    if unknown:
        raise ConfigError(
            f"`field_config` configures {unknown}, which the frame does not have; its fields are "
            f"{list(spec.names)}."
        )
    nodes = dict(zip(spec.names, node_names(spec.names, reserved=COLUMNS)))
    ragged_axes = _check_ragged(spec, ragged)
    names = COLUMNS if batch_size is not None else COLUMNS[:2]
    arrays = []
    for f in spec.fields:
        cfg = field_config.get(f.name, FieldConfig())
        _check_storage_dtype(f.name, f.dtype, cfg.dtype)
        if cfg.dtype is None:
            if configurable:
                what = (
                    f"Field '{f.name}' is recorded as {f.dtype.name}, which (without "
                    f"field_config={{'{f.name}': FieldConfig(dtype=...)}})"
                )
                check_storable(f.dtype, what)
            else:
                check_storable(
                    f.dtype,
                    f"Field '{f.name}' is recorded as {f.dtype.name}, which",
                    "Cast the field to one of those in the frame you record, e.g. "
                    "x.astype(jnp.float32) (this sink takes no field_config).",
                )
        axes = ragged_axes.get(f.name, 0)
        stored = f.shape[axes:]
        own_chunk = _field_chunk(f.name, stored, cfg.chunk)
        if shards > 1 and f.shape[0] % own_chunk[0]:
            raise ConfigError(
                f"The chunk of field '{f.name}' along its sharded axis ({own_chunk[0]}) must "
                f"divide one device's part ({f.shape[0]}), so that each device writes whole chunks."
            )
        if axes:  # chunk the atom axis by the most atoms one flush block can hold
            first = chunk * int(np.prod(f.shape[:axes], dtype=np.int64))
            dims = ("atom", *_dims(f.name, len(stored), cfg.dims, spec.names, lead="atom")[1:])
            shard = None
        else:
            first = chunk
            dims = _dims(f.name, len(stored), cfg.dims, spec.names)
            shard = None if chunks_per_shard is None else chunk * chunks_per_shard
        arrays.append(
            ArrayLayout(
                name=nodes[f.name],
                dtype=cfg.dtype if cfg.dtype is not None else f.dtype,
                source_dtype=f.dtype,
                shape=f.shape,
                chunk=(first, *own_chunk),
                shard_frames=shard,
                codec=codec if cfg.codec == "inherit" else cfg.codec,
                dims=dims,
                ragged_axes=axes,
                shards=shards,
                field=None if nodes[f.name] == f.name else f.name,
                coordinates=names,
            )
        )
    column_dtypes = {
        "step": np.dtype(np.int32),
        "time": np.dtype(time_dtype),
        "system": np.dtype(np.int32),
    }
    columns = tuple(
        ArrayLayout(
            name=n,
            dtype=column_dtypes[n],
            source_dtype=column_dtypes[n],
            shape=(),
            chunk=(chunk,),
            shard_frames=None if chunks_per_shard is None else chunk * chunks_per_shard,
            codec=codec,
            dims=("frame",),
        )
        for n in names
    )
    if ragged is not None:  # by node name, as the writer and the stored schema know the fields
        ragged = Ragged(nodes[ragged.count], tuple(nodes[n] for n in ragged.fields))
    _check_dim_sizes(arrays)
    return Layout(tuple(arrays), columns, chunk, chunks_per_shard, batch_size, ragged)


def _check_dim_sizes(arrays: list[ArrayLayout]) -> None:
    """A ConfigError if two fields name an axis alike (`FieldConfig.dims`) with other sizes: a
    reader that aligns arrays by their axis names (xarray) could not open the run."""
    seen: dict[str, tuple[int, str]] = {}
    for a in arrays:
        for dim, size in zip(a.dims[1:], a.stored_shape):  # after the frame (or atom) axis
            first = seen.setdefault(dim, (size, a.field_name))
            if first[0] != size:
                raise ConfigError(
                    f"Axis '{dim}' has size {first[0]} in field '{first[1]}' but {size} in "
                    f"field '{a.field_name}': readers such as xarray align fields by axis name. "
                    "Name the axes of different sizes differently (FieldConfig(dims=...))."
                )


def _check_ragged(spec: FrameSpec, ragged: Ragged | None) -> dict[str, int]:
    """For each ragged field, how many leading axes fold into the atom axis; or a ConfigError."""
    if ragged is None:
        return {}
    if not isinstance(ragged, Ragged):
        raise ConfigError(
            "`ragged` must be a jaxsinks.Ragged(count=..., fields=...); got "
            f"{type(ragged).__name__}."
        )
    by_name = {f.name: f for f in spec.fields}
    count = by_name.get(ragged.count)
    if count is None:
        raise ConfigError(
            f"`Ragged` names the count field '{ragged.count}', which the frame does not have; its "
            f"fields are {list(spec.names)}."
        )
    if not np.issubdtype(count.dtype, np.integer):
        raise ConfigError(
            f"The ragged count field '{ragged.count}' must hold integers; it is {count.dtype}."
        )
    axes = {}
    for name in ragged.fields:
        field = by_name.get(name)
        if field is None:
            raise ConfigError(
                f"`Ragged` names the field '{name}', which the frame does not have; its fields are "
                f"{list(spec.names)}."
            )
        k = len(count.shape)
        if field.shape[:k] != count.shape or len(field.shape) <= k:
            raise ConfigError(
                f"Ragged field '{name}' has shape {list(field.shape)}, but with count field "
                f"'{ragged.count}' of shape {list(count.shape)} it must be {list(count.shape)} + "
                "[max_atoms, ...]: one padded atom axis after the count's axes."
            )
        axes[name] = k + 1
    return axes


def group_metadata(attributes: dict[str, Any], consolidated: dict[str, Any] | None = None) -> bytes:
    """The ``zarr.json`` of a group with `attributes` (and the `consolidated` metadata of its
    nodes, from `consolidated_metadata`)."""
    doc: dict[str, Any] = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
    if consolidated is not None:
        doc["consolidated_metadata"] = consolidated
    if consolidated is not None:  # one compact line: it holds every node's metadata
        return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    return json.dumps(doc, indent=1, allow_nan=False).encode()


def consolidated_metadata(nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ``consolidated_metadata`` member of a root group's ``zarr.json``, as zarr-python 3
    writes and reads it: every node below the root (the ``zarr.json`` documents `nodes`, by path
    relative to the root) in one place, so that readers need not list the store.

    Groups get an empty consolidated member of their own, as zarr-python writes them (their
    children are listed by full path at the root). Consolidated metadata is not part of the
    Zarr v3 specification: other readers ignore it (``must_understand`` is false).
    """
    metadata = {}
    for path in sorted(nodes, key=lambda p: (p.count("/"), p)):
        doc = dict(nodes[path])
        if doc.get("node_type") == "group":
            doc.setdefault("attributes", {})
            doc["consolidated_metadata"] = _consolidated({})
        metadata[path] = doc
    return _consolidated(metadata)


def _consolidated(metadata: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "inline", "must_understand": False, "metadata": metadata}


def _check_storage_dtype(name: str, source: np.dtype, target: np.dtype | None) -> None:
    """Refuse storage dtypes that would silently drop information: complex to real, or
    anything but bool to bool (a new run also refuses float to integer: `check_new_run`).
    (Out-of-range values of other narrowings are caught per block.)"""
    if target is None or target == source:
        return
    lossy = (
        np.issubdtype(source, np.complexfloating) and not np.issubdtype(target, np.complexfloating)
    ) or (target == np.bool_ and source != np.bool_)
    if lossy:
        raise ConfigError(
            f"Field '{name}' is recorded as {source.name} and cannot be stored as {target.name}: "
            "that would silently drop information. Choose a storage dtype that holds its values "
            f"(field_config={{'{name}': FieldConfig(dtype=...)}}), or convert the field in the "
            "frame."
        )


def check_new_run(layout: Layout) -> None:
    """Refuse a new run whose layout stores a float field as an integer dtype, which would drop
    the fractional parts (`drops_fractions`): the field is cast in the frame instead, rounded as
    its user wants. Runs stored so before this was refused are still appended to."""
    for array in layout.fields:
        _check_fractions(array.name, array.source_dtype, array.dtype)


def _check_fractions(name: str, source: np.dtype, target: np.dtype) -> None:
    if not drops_fractions(source, target):
        return
    raise ConfigError(
        f"Field '{name}' is recorded as {source.name} and cannot be stored as {target.name}: "
        "that would silently drop the fractional part of every value (1.7 would be stored as 1). "
        f"Store it as a floating dtype (field_config={{'{name}': FieldConfig(dtype='float16')}}, "
        "or no dtype to keep its own), or cast it in the frame you record, e.g. "
        f"jnp.round(x).astype(jnp.{target.name}), and record it as {target.name}."
    )


def check_user_attributes(attrs: Any) -> dict[str, Any]:
    """`attrs` if it is a JSON object (str keys, finite numbers), else a ConfigError naming the
    key."""
    if attrs is None:
        return {}
    if not isinstance(attrs, dict):
        raise ConfigError(f"`attrs` must be a dict of JSON values; got {type(attrs).__name__}.")
    if ATTRS_KEY in attrs:
        raise ConfigError(
            f"`attrs` may not use the key '{ATTRS_KEY}': jaxsinks keeps its metadata there."
        )
    check_json(attrs, "attrs")
    size = len(json.dumps(attrs))
    if size > MAX_ATTRS_BYTES:
        raise ConfigError(
            f"`attrs` is {size / 2**20:.1f} MiB as JSON; at most {MAX_ATTRS_BYTES // 2**20} MiB "
            "are allowed, because the run's attributes are rewritten each time frames are "
            "committed. Record large data as a field, or store it in a file beside the run."
        )
    return json.loads(json.dumps(attrs))


def check_json(value: Any, where: str) -> None:
    """Raise `ConfigError` naming the first part of `value` (at `where`) that JSON cannot hold."""
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"`{where}` is {value}, which JSON cannot hold. Store it as a string."
            )
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(
                    f"`{where}` has the key {key!r}; JSON object keys must be strings."
                )
            check_json(item, f"{where}[{key!r}]")
        return
    kind = type(value).__qualname__
    if type(value).__module__ != "builtins":
        kind = f"{type(value).__module__}.{kind}"
    raise ConfigError(
        f"`{where}` is a {kind}, which is not JSON. Use str, "
        "int, float, bool, None, lists and dicts (convert numpy values with .item() or .tolist())."
    )


def _field_chunk(
    name: str, shape: tuple[int, ...], chunk: tuple[int, ...] | None
) -> tuple[int, ...]:
    if chunk is None:
        return tuple(max(1, d) for d in shape)
    if len(chunk) != len(shape) or any(
        isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= max(1, d)
        for c, d in zip(chunk, shape)
    ):
        raise ConfigError(
            f"The chunk of field '{name}' must give one positive int per axis of the field "
            f"{list(shape)}, at most the axis's size (the frame axis is chunked by the sink's "
            f"`chunk`); got {list(chunk)}."
        )
    return chunk


def _dims(
    name: str,
    ndim: int,
    dims: tuple[str, ...] | None,
    names: tuple[str, ...] = (),
    lead: str = "frame",
) -> tuple[str, ...]:
    """The axis names of field `name` (of `ndim` axes after the frame's): the given `dims`, or
    by default ``<name>_<i>`` with '/' as '.', unless another of the frame's `names` is that.
    `lead` names the stored leading axis (``"atom"`` for a ragged field), which `dims` may not."""
    if dims is None:
        flat = name.replace("/", ".")
        if flat != name and flat in names:  # 'a/b' beside a field 'a.b'
            flat = name
        return ("frame", *(f"{flat}_{i}" for i in range(ndim)))
    if len(dims) != ndim or len(set(dims)) != ndim or {"frame", lead} & set(dims):
        taken = "'frame', which is" if lead == "frame" else "'atom' or 'frame': 'atom' is"
        raise ConfigError(
            f"`dims` of field '{name}' must name each of its {ndim} axes once (not {taken} the "
            f"leading axis); got {list(dims)}."
        )
    return ("frame", *dims)
