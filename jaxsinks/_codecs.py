"""Compression codecs and per-field storage options, as zarr v3 codec JSON (pure functions)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from ._errors import ConfigError

BLOSC_CNAMES = ("blosclz", "lz4", "lz4hc", "snappy", "zlib", "zstd")
BLOSC_SHUFFLES = ("noshuffle", "shuffle", "bitshuffle")


@dataclasses.dataclass(frozen=True)
class Zstd:
    """Zstandard compression at `level` (1 fast ... 22 small; negative levels are faster still)."""

    level: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.level, bool) or not isinstance(self.level, int) or not -131072 <= self.level <= 22:
            raise ConfigError(f"`Zstd` needs `level` to be an int in [-131072, 22]; got {self.level!r}.")

    def to_json(self, dtype: np.dtype) -> dict[str, Any]:
        """The zarr v3 codec JSON for data of `dtype`."""
        return {"name": "zstd", "configuration": {"level": self.level, "checksum": False}}


@dataclasses.dataclass(frozen=True)
class Blosc:
    """Blosc with compressor `cname`, level `clevel` (0-9) and byte `shuffle`."""

    cname: str = "zstd"
    clevel: int = 5
    shuffle: str = "shuffle"

    def __post_init__(self) -> None:
        if self.cname not in BLOSC_CNAMES:
            raise ConfigError(f"`Blosc` needs `cname` in {list(BLOSC_CNAMES)}; got {self.cname!r}.")
        if isinstance(self.clevel, bool) or not isinstance(self.clevel, int) or not 0 <= self.clevel <= 9:
            raise ConfigError(f"`Blosc` needs `clevel` to be an int in [0, 9]; got {self.clevel!r}.")
        if self.shuffle not in BLOSC_SHUFFLES:
            raise ConfigError(f"`Blosc` needs `shuffle` in {list(BLOSC_SHUFFLES)}; got {self.shuffle!r}.")

    def to_json(self, dtype: np.dtype) -> dict[str, Any]:
        """The zarr v3 codec JSON for data of `dtype` (the shuffle's type size is its item size)."""
        return {
            "name": "blosc",
            "configuration": {
                "cname": self.cname,
                "clevel": self.clevel,
                "shuffle": self.shuffle,
                "typesize": dtype.itemsize,
                "blocksize": 0,
            },
        }


Codec = Zstd | Blosc | None


@dataclasses.dataclass(frozen=True)
class FieldConfig:
    """Storage overrides for one field.

    Attributes:
        dtype: the dtype stored on disk (e.g. ``"float16"``). Narrowing is checked when each block
            is flushed: a finite value out of the storage dtype's range fails the write instead of
            being stored as inf.
        codec: the compression codec for this field (`Zstd`, `Blosc`, or None for none).
        chunk: the chunk shape of the field's own axes (the frame axis is shared by all fields).
        dims: names of the field's own axes (used by xarray).
    """

    dtype: Any = None
    codec: Any = dataclasses.field(default="inherit")
    chunk: tuple[int, ...] | None = None
    dims: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.dtype is not None:
            object.__setattr__(self, "dtype", storage_dtype(self.dtype, "FieldConfig"))
        if self.codec != "inherit":
            check_codec(self.codec, "FieldConfig")
        if self.chunk is not None:
            object.__setattr__(self, "chunk", tuple(self.chunk))
        if self.dims is not None:
            object.__setattr__(self, "dims", tuple(self.dims))


def check_codec(codec: Any, owner: str) -> Codec:
    """`codec` if it is a codec or None, else a ConfigError."""
    if codec is not None and not isinstance(codec, (Zstd, Blosc)):
        raise ConfigError(
            f"`{owner}` needs `codec` to be jaxsinks.Zstd(...), jaxsinks.Blosc(...) or None (no "
            f"compression); got {codec!r}."
        )
    return codec


def storage_dtype(dtype: Any, owner: str) -> np.dtype:
    """`dtype` as a numpy dtype that JAX can hold (it is cast on the device), or a ConfigError."""
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        raise ConfigError(f"`{owner}` got `dtype={dtype!r}`, which is not a dtype.") from None
    if not (jax.numpy.issubdtype(np_dtype, jax.numpy.number) or np_dtype == np.bool_):
        raise ConfigError(
            f"`{owner}` got `dtype={np_dtype}`, which is not a numeric dtype. Store fields as bool, "
            "integers, floats or complex numbers (e.g. dtype='float16')."
        )
    if np.dtype(jax.dtypes.canonicalize_dtype(np_dtype)) != np_dtype:
        raise ConfigError(
            f"`{owner}` got `dtype={np_dtype}`, which JAX cannot hold with the current settings "
            "(enable jax_enable_x64 for 64-bit types)."
        )
    return np_dtype


def codec_chain(codec: Codec, dtype: np.dtype, inner_chunk: list[int] | None) -> list[dict[str, Any]]:
    """The zarr v3 ``codecs`` list: bytes, then `codec`; inside a sharding codec if `inner_chunk`."""
    chain: list[dict[str, Any]] = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if codec is not None:
        chain.append(codec.to_json(dtype))
    if inner_chunk is None:
        return chain
    return [
        {
            "name": "sharding_indexed",
            "configuration": {
                "chunk_shape": inner_chunk,
                "codecs": chain,
                "index_codecs": [
                    {"name": "bytes", "configuration": {"endian": "little"}},
                    {"name": "crc32c"},
                ],
                "index_location": "end",
            },
        }
    ]


def narrowing_range(source: np.dtype, target: np.dtype) -> tuple[float, float] | None:
    """``(lowest, highest)`` that `target` holds, if casting `source` to it can go out of range.

    None when every value of `source` fits (after rounding) into `target`.
    """
    if source == target or source == np.bool_ or target == np.bool_:
        return None
    info = np.finfo if np.issubdtype(target, np.inexact) else np.iinfo
    src = np.finfo if np.issubdtype(source, np.inexact) else np.iinfo
    if np.issubdtype(target, np.complexfloating) or np.issubdtype(source, np.complexfloating):
        return None
    lo, hi = float(info(target).min), float(info(target).max)
    if np.issubdtype(target, np.integer) and np.issubdtype(source, np.inexact):
        return lo, hi
    if float(src(source).min) >= lo and float(src(source).max) <= hi:
        return None
    return lo, hi
