"""Compression codecs and per-field storage options, as zarr v3 codec JSON (pure functions)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from .._core.errors import ConfigError
from .._core.types import BLOSC_CNAMES, BLOSC_SHUFFLES, BloscName, BloscShuffle


def _level(value: Any, owner: str, name: str, low: int, high: int) -> int:
    """`value` as a Python int in [low, high] (numpy ints too, bools not), or a ConfigError."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or not low <= value <= high
    ):
        raise ConfigError(
            f"`{owner}` needs `{name}` to be an int in [{low}, {high}]; got {value!r}."
        )
    return int(value)


@dataclasses.dataclass(frozen=True)
class Zstd:
    """Zstandard compression at `level` (1 fast ... 22 small; negative levels are faster still)."""

    level: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", _level(self.level, "Zstd", "level", -131072, 22))

    def to_json(self, dtype: np.dtype) -> dict[str, Any]:
        """The zarr v3 codec JSON for data of `dtype`."""
        return {"name": "zstd", "configuration": {"level": self.level, "checksum": False}}


@dataclasses.dataclass(frozen=True)
class Blosc:
    """Blosc with compressor `cname`, level `clevel` (0-9) and byte `shuffle`."""

    cname: BloscName = "zstd"
    clevel: int = 5
    shuffle: BloscShuffle = "shuffle"

    def __post_init__(self) -> None:
        if self.cname not in BLOSC_CNAMES:
            raise ConfigError(f"`Blosc` needs `cname` in {list(BLOSC_CNAMES)}; got {self.cname!r}.")
        object.__setattr__(self, "clevel", _level(self.clevel, "Blosc", "clevel", 0, 9))
        if self.shuffle not in BLOSC_SHUFFLES:
            raise ConfigError(
                f"`Blosc` needs `shuffle` in {list(BLOSC_SHUFFLES)}; got {self.shuffle!r}."
            )

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
    """Storage overrides for one field, given by its name in
    ``ZarrSink.create(field_config={name: FieldConfig(...)})``.

    Attributes:
        dtype: the dtype stored on disk (e.g. ``"float32"`` or ``"float16"``; bool, (u)int8-64,
            float16, bfloat16, float32, float64, complex64 or complex128). A run with a
            bfloat16 array (stored so, or recorded so without this) opens only through
            `jaxsinks.open`: zarr-python and xarray do not read Zarr's bfloat16 data type; store
            such a field as ``"float32"`` for them.
            Narrowing is checked when each block is flushed: a finite value (either part of a
            complex one) out of the storage dtype's range fails the write instead of being stored
            as inf, and so does an integer that a float storage dtype does not hold exactly
            (float16 holds every integer up to 2048, bfloat16 up to 256). A float (or complex)
            field is not stored as an integer dtype, which would drop its fractions: round and
            cast it in the frame (``jnp.round(x).astype(jnp.int8)``). A byte order is dropped
            (``">f4"`` is float32): Zarr's ``bytes`` codec sets it on disk.
        codec: the compression codec for this field (`Zstd`, `Blosc`, or None for none).
        chunk: the chunk shape of the field's own axes (the frame axis is shared by all fields),
            each at most its axis's size.
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
            chunk = _sequence(self.chunk, "chunk", "positive ints, one per axis of the field")
            if not all(
                isinstance(c, (int, np.integer)) and not isinstance(c, (bool, np.bool_)) and c >= 1
                for c in chunk
            ):
                raise ConfigError(
                    f"`FieldConfig` needs `chunk` to be positive ints, one per axis of the field; "
                    f"got {_show(self.chunk)}."
                )
            object.__setattr__(self, "chunk", tuple(int(c) for c in chunk))
        if self.dims is not None:
            dims = _sequence(self.dims, "dims", "axis names (strings), one per axis of the field")
            if not all(isinstance(d, str) and d for d in dims):
                raise ConfigError(
                    f"`FieldConfig` needs `dims` to be non-empty strings, one per axis of the "
                    f"field; got {_show(self.dims)}."
                )
            object.__setattr__(self, "dims", dims)


def _sequence(value: Any, name: str, what: str) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes, dict, set)) or not hasattr(value, "__iter__"):
        raise ConfigError(
            f"`FieldConfig` needs `{name}` to be a tuple of {what}; got {_show(value)}."
        )
    return tuple(value)


def check_codec(codec: Any, owner: str) -> Codec:
    """`codec` if it is a codec or None, else a ConfigError."""
    if codec is not None and not isinstance(codec, (Zstd, Blosc)):
        raise ConfigError(
            f"`{owner}` needs `codec` to be jaxsinks.Zstd(...), jaxsinks.Blosc(...) or None (no "
            f"compression); got {codec!r}."
        )
    return codec


#: The dtypes a field can be stored as: what Zarr v3 (through TensorStore) stores and jaxsinks
#: reads back, with a NaN fill for the float types. All but bfloat16 are core Zarr v3 data types
#: that zarr-python and xarray read too; bfloat16 is Zarr v3's ``bfloat16`` extension data type,
#: which TensorStore and `jaxsinks.open` read (into ml_dtypes' bfloat16, which JAX ships) but
#: zarr-python (as of 3.1) and so xarray do not: a run with a bfloat16 array opens only through
#: `jaxsinks.open` (`BFLOAT16_LIMITATION`). Sub-byte and 8-bit float types (int4, float8_*) are not
#: storable.
STORABLE = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "complex64",
    "complex128",
)


#: What a message that suggests bfloat16 adds: who cannot read it.
BFLOAT16_LIMITATION = (
    "a run with a bfloat16 array opens only through jaxsinks.open: zarr-python and xarray do not "
    "read Zarr's bfloat16 data type"
)


def storage_dtype(dtype: Any, owner: str) -> np.dtype:
    """`dtype` as a numpy dtype that JAX can hold (it is cast on the device) and a run can store,
    or a ConfigError."""
    try:
        np_dtype = np.dtype(dtype)
    except (TypeError, ValueError):  # numpy raises TypeError for most names, ValueError for some
        raise ConfigError(f"`{owner}` got `dtype={_show(dtype)}`, which is not a dtype.") from None
    if not (jax.numpy.issubdtype(np_dtype, jax.numpy.number) or np_dtype == np.bool_):
        raise ConfigError(
            f"`{owner}` got `dtype={np_dtype}`, which is not a numeric dtype. Store fields as "
            "bool, integers, floats or complex numbers (e.g. dtype='float16')."
        )
    # A data type has no byte order in Zarr v3 (the `bytes` codec writes little-endian) and JAX
    # holds only native ones: '>f4' is float32.
    np_dtype = np_dtype.newbyteorder("=")
    check_storable(np_dtype, f"`{owner}` got `dtype={np_dtype}`, which")
    if np.dtype(jax.dtypes.canonicalize_dtype(np_dtype)) != np_dtype:
        raise ConfigError(
            f"`{owner}` got `dtype={np_dtype}`, which JAX cannot hold with the current settings "
            "(enable jax_enable_x64 for 64-bit types)."
        )
    return np_dtype


def check_storable(dtype: np.dtype, what: str, remedy: str | None = None) -> None:
    """A ConfigError (`what` + " cannot be stored ...") unless a run can store `dtype`; its remedy
    is a `FieldConfig` dtype unless `remedy` says another."""
    if dtype.name not in STORABLE:
        raise ConfigError(
            f"{what} cannot be stored in a run: fields are stored as one of {list(STORABLE)}. "
            + (
                remedy
                or "Choose one of those, e.g. FieldConfig(dtype='float32'), which every Zarr "
                "reader reads, or FieldConfig(dtype='float16') to save space. 'bfloat16' saves "
                f"space too, but {BFLOAT16_LIMITATION}."
            )
        )


def is_float(dtype: np.dtype) -> bool:
    """Whether `dtype` is a real floating type (bfloat16 included, which numpy does not know)."""
    return bool(jax.numpy.issubdtype(dtype, jax.numpy.floating))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def codec_chain(
    codec: Codec, dtype: np.dtype, inner_chunk: list[int] | None
) -> list[dict[str, Any]]:
    """The zarr v3 ``codecs`` list: bytes, then `codec`; inside a sharding codec if
    `inner_chunk`."""
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
    """``(lowest, highest)`` values of `source` that fit `target`, if casting `source` to it can
    go out of range; None when every value of `source` fits (after rounding) into `target`.

    The bounds are values `source` holds exactly (so that comparing in `source`'s own dtype is
    exact: float32 stored as int32 fits up to 2147483520, the largest float32 below 2**31) and
    lie inside `source`'s range (int32 stored as uint32: 0 to 2**31 - 1). For complex types they
    bound each part (real and imaginary): complex128 stored as complex64 narrows like float64
    stored as float32. bfloat16 is a float type here (numpy alone does not know it).
    """
    if source == target or source == np.bool_ or target == np.bool_:
        return None
    lo, hi = _range(target)
    low, high = _range(source)
    if (_inexact(target) or not _inexact(source)) and low >= lo and high <= hi:
        return None
    lo, hi = max(lo, low), min(hi, high)
    if _inexact(source):
        lo, hi = _held(lo, source, up=True), _held(hi, source, up=False)
    return lo, hi  # ints for an integer source: exact in its own dtype


def drops_fractions(source: np.dtype, target: np.dtype) -> bool:
    """Whether storing values of `source` as `target` would drop their fractional parts: a
    floating (or complex; bfloat16 too) type stored as an integer one."""
    return _inexact(source) and target.kind in "iu"


def rounds_integers(source: np.dtype, target: np.dtype) -> bool:
    """Whether casting the integer type `source` to the floating (or complex) type `target` can
    change a value: `target` holds every integer only up to ``2**(nmant + 1)`` in magnitude
    (float16: 2048, bfloat16: 256, float32: 2**24), so int8 as float16 cannot, int32 as float32
    can (257 as bfloat16 is 256)."""
    if source.kind not in "iu" or not _inexact(target):
        return False
    exact = 2 ** (int(jax.numpy.finfo(target).nmant) + 1)
    low, high = _range(source)
    return -low > exact or high > exact


def inexact_integers(xp: Any, flat: Any, stored: Any) -> Any:
    """Which integers of `flat` (numpy or jax.numpy arrays, as `xp`) `stored`, `flat` cast to a
    floating (or complex) storage dtype, does not hold exactly: those that rounded to another
    integer (257 as bfloat16 is 256), to inf (70000 as float16), or beyond `flat`'s own range
    (2**31 - 1 as float32 is 2**31, which a saturating cast back would hide).

    Costs a cast back and a comparison per value; asked only where `rounds_integers`.
    """
    real = xp.real(stored) if xp.iscomplexobj(stored) else stored
    held = xp.isfinite(real)
    bounds = narrowing_range(np.dtype(real.dtype), np.dtype(flat.dtype))
    if bounds is not None:  # bounds that the float type holds exactly
        lo, hi = (xp.asarray(bound, dtype=real.dtype) for bound in bounds)
        held = held & (real >= lo) & (real <= hi)
    with np.errstate(invalid="ignore", over="ignore"):
        back = xp.where(held, real, xp.zeros((), real.dtype)).astype(flat.dtype)
    return ~held | (back != flat)


def _held(bound: float, dtype: np.dtype, *, up: bool) -> float:
    """The value of `dtype` (of its parts, if complex) nearest `bound` on its inner side."""
    part = jax.numpy.finfo(dtype).dtype
    with np.errstate(over="ignore"):
        value = np.asarray(bound, part)
    if up and float(value) < bound:
        value = np.nextafter(value, np.asarray(np.inf, part))
    elif not up and float(value) > bound:
        value = np.nextafter(value, np.asarray(-np.inf, part))
    return float(value)


def _inexact(dtype: np.dtype) -> bool:
    return bool(jax.numpy.issubdtype(dtype, jax.numpy.inexact))


def _range(dtype: np.dtype) -> tuple[float, float]:
    """The lowest and highest finite values of `dtype` (of each part, for complex types); exact
    Python ints for integer types (2**64 - 1 is no float)."""
    if _inexact(dtype):
        info = jax.numpy.finfo(dtype)
        return float(info.min), float(info.max)
    iinfo = jax.numpy.iinfo(dtype)
    return int(iinfo.min), int(iinfo.max)
