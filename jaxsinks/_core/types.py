"""The type aliases every layer shares: the pytree alias, and one `Literal` per closed set of
options (with its values as a tuple, for validation and error messages)."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias, get_args

import numpy as np

#: Any JAX pytree: a frame, a simulation state, a tuple of sinks.
PyTree: TypeAlias = Any

#: How `create` treats an existing store: ``"w-"`` refuses it, ``"w"`` replaces a jaxsinks run,
#: ``"a"`` appends to it.
Mode: TypeAlias = Literal["w-", "w", "a"]
#: What a sink does past its capacity: raise at read/close, keep the first frames, or the newest.
Overflow: TypeAlias = Literal["error", "drop", "ring"]
#: Where `jaxsinks.s3` takes keys from (besides a dict of keys).
CredentialSource: TypeAlias = Literal["default", "environment", "anonymous"]
#: Blosc's compressors and byte shuffles.
BloscName: TypeAlias = Literal["blosclz", "lz4", "lz4hc", "snappy", "zlib", "zstd"]
BloscShuffle: TypeAlias = Literal["noshuffle", "shuffle", "bitshuffle"]
#: What a training export shuffles: whole frames, or each frame's points.
ExportBy: TypeAlias = Literal["frames", "points"]
#: How a CSV log or Zarr run lays out scalar fields: ``"wide"``, one column per field entry (per
#: frame, one row); ``"long"`` (tidy), one row per (frame or system, field) with the columns
#: ``step, time, system, name, value``.
Table: TypeAlias = Literal["wide", "long"]
#: What `jaxsinks.close` does with an older value of a streaming sink: raise `StaleSinkError`
#: (the run stays open for the newest value), or close the run at the frames its writer has.
Stale: TypeAlias = Literal["raise", "close"]

MODES: tuple[Mode, ...] = get_args(Mode)
OVERFLOW_POLICIES: tuple[Overflow, ...] = get_args(Overflow)
CREDENTIAL_SOURCES: tuple[CredentialSource, ...] = get_args(CredentialSource)
BLOSC_CNAMES: tuple[BloscName, ...] = get_args(BloscName)
BLOSC_SHUFFLES: tuple[BloscShuffle, ...] = get_args(BloscShuffle)
EXPORT_BY: tuple[ExportBy, ...] = get_args(ExportBy)
TABLES: tuple[Table, ...] = get_args(Table)
STALE: tuple[Stale, ...] = get_args(Stale)


def as_bool(value: Any) -> Any:
    """A numpy bool as the Python bool it holds (a flag read from an array or a config file);
    anything else as it is, for the caller to check."""
    return bool(value) if isinstance(value, np.bool_) else value


def as_int(value: Any) -> int | None:
    """`value` as a Python int if it is an integer, numpy's included (a count read from an array
    or a config file); None for anything else, bools too."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return None
    return int(value)
