"""Long (tidy) logs: scalar fields stored one row per (frame or system, field).

A sink created with ``table="long"`` stages and flushes its frames like any streaming sink; only
the host writer lays them out differently. Each staged row (a frame, or one system's row of a
per-system sink) of ``k`` scalar fields becomes ``k`` rows of the table

    step, time, system, name, value

in the order of the frame's fields. ``system`` is the system's index for a per-system sink and
`WHOLE_FRAME` (-1) otherwise; ``name`` is the field's name (a field ``time`` is ``time`` here: in a
long table a field name is a value, not a column, so nothing clashes with the columns); ``value``
has one dtype, `value_dtype`, that holds every field's values exactly.

A CSV log writes the rows as text (``name`` as the field's name; each value in its field's own
format, so float32 values keep 9 significant digits). A Zarr run stores five 1-d arrays along a
``row`` dimension, with ``name`` an int32 code into the ``names`` attribute of the ``name`` array
(and of the run's schema); its committed count stays in frames, each frame being `rows_per_frame`
rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._core.errors import ConfigError
from .._core.frame import FrameSpec, node_names
from .._core.types import TABLES, Table
from .layout import COLUMNS, ArrayLayout, Layout

#: The columns of a long table, in order.
LONG_COLUMNS = ("step", "time", "system", "name", "value")
#: The ``system`` of a row of a whole-frame sink: the value belongs to the frame, not a system.
WHOLE_FRAME = -1
#: The schema version of a long run: readers that do not know long tables (version 1) refuse it
#: with "upgrade jaxsinks" instead of misreading it.
LONG_SCHEMA_VERSION = 2
#: What the value column may be: the smallest of these (or of the fields' own dtypes) that holds
#: every field's values exactly.
_VALUE_DTYPES = tuple(
    np.dtype(t) for t in ("int8", "int16", "int32", "int64", "float32", "float64")
)


def check_table(owner: str, table: Any) -> Table:
    """`table` if it is ``"wide"`` or ``"long"``, else a ConfigError listing them."""
    if not isinstance(table, str) or table not in TABLES:
        raise ConfigError(f"`{owner}` needs `table` to be one of {list(TABLES)}; got {table!r}.")
    return table


@dataclasses.dataclass(frozen=True)
class LongTable:
    """How the scalar fields of a sink's frames become rows of a long table."""

    names: tuple[str, ...]  #: the fields' names, as recorded (the ``name`` column's values)
    nodes: tuple[str, ...]  #: their keys in a flushed block (the stored node names)
    dtypes: tuple[np.dtype, ...]  #: the fields' dtypes, as recorded
    value_dtype: np.dtype  #: the ``value`` column's dtype
    per_system: bool

    @property
    def rows_per_frame(self) -> int:
        """Rows of the table per staged row (frame or system row): one per field."""
        return len(self.names)

    def schema(self) -> dict[str, Any]:
        """Stored as the run's ``schema["table"]`` (wide runs have none): what an append must
        match, and what readers need."""
        return {"names": list(self.names), "value_dtype": self.value_dtype.name}

    # ------------------------------------------------------------------------------ Zarr

    def arrays(self, layout: Layout) -> tuple[ArrayLayout, ...]:
        """The stored arrays of a long run: the five columns along ``row``, compressed with the
        sink's codec and chunked so that a flush block of frames fills whole chunks (and
        shards)."""
        k = self.rows_per_frame
        shard = None if layout.chunks_per_shard is None else layout.block * k
        dtypes = {
            "step": np.dtype(np.int32),
            "time": layout.columns[1].dtype,
            "system": np.dtype(np.int32),
            "name": np.dtype(np.int32),
            "value": self.value_dtype,
        }
        return tuple(
            _LongArray(
                name=name,
                dtype=dtypes[name],
                source_dtype=dtypes[name],
                shape=(),
                chunk=(layout.chunk * k,),
                shard_frames=shard,
                codec=layout.columns[0].codec,
                dims=("row",),
                coordinates=LONG_COLUMNS[:4] if name == "value" else (),
                names=self.names if name == "name" else (),
            )
            for name in LONG_COLUMNS
        )

    def melt(self, values: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """The table's columns for the first `n` staged rows of a flushed block `values` (keyed
        by node name, with ``step``, ``time`` and, per system, ``system``)."""
        k = self.rows_per_frame
        value = np.empty((n, k), self.value_dtype)
        for j, node in enumerate(self.nodes):
            value[:, j] = values[node][:n]  # exact: value_dtype holds every field's values
        if self.per_system:
            system = np.repeat(values["system"][:n], k)
        else:
            system = np.full(n * k, WHOLE_FRAME, np.int32)
        return {
            "step": np.repeat(values["step"][:n], k),
            "time": np.repeat(values["time"][:n], k),
            "system": system,
            "name": np.tile(np.arange(k, dtype=np.int32), n),
            "value": value.reshape(-1),
        }

    # ------------------------------------------------------------------------------- CSV

    def csv_lines(self, values: dict[str, np.ndarray], n: int, time_dtype: np.dtype) -> str:
        """The CSV lines of the first `n` staged rows of a flushed block `values`: ``k`` lines
        each, every value in its own field's format (``%d``, 9 or 17 significant digits)."""
        system = ",%d" if self.per_system else f",{WHOLE_FRAME}"
        head = "%d," + value_format(time_dtype) + system
        lines = [
            f"{head},{name},{value_format(dtype)}\n" for name, dtype in zip(self.names, self.dtypes)
        ]
        columns = [values[node][:n].tolist() for node in self.nodes]
        steps = values["step"][:n].tolist()
        times = values["time"][:n].tolist()
        keys = (
            zip(steps, times, values["system"][:n].tolist())
            if self.per_system
            else zip(steps, times)
        )
        out = []
        for i, key in enumerate(keys):
            out += [line % (*key, column[i]) for line, column in zip(lines, columns)]
        return "".join(out)


def stored_arrays(layout: Layout, table: LongTable | None) -> tuple[ArrayLayout, ...]:
    """The arrays a run stores: the layout's, or those of its long table."""
    return layout.arrays if table is None else table.arrays(layout)


def run_schema(layout: Layout, table: LongTable | None) -> dict[str, Any]:
    """The schema stored with a run, and compared when it is appended to."""
    return layout.schema() if table is None else dict(layout.schema(), table=table.schema())


def value_format(dtype: np.dtype) -> str:
    """The printf format of a CSV value of `dtype`: 17 significant digits for 64-bit floats, 9
    for narrower floats (both round-trip exactly), ``%d`` for integers and bools."""
    if jnp.issubdtype(dtype, jnp.floating):
        return "%.17g" if dtype.itemsize > 4 else "%.9g"
    return "%d"


def long_table(owner: str, spec: FrameSpec, per_system: bool) -> LongTable:
    """The long table of a sink whose frames (rows, for a per-system sink) have `spec`; a
    ConfigError naming the first field that is not a scalar of a bool, integer or float dtype,
    or the fields whose values no one dtype holds exactly."""
    where = "per system (after its leading system axis)" if per_system else "per frame"
    for f in spec.fields:
        if f.shape:
            remedy = (
                "Log one scalar per field: split it into scalar fields, reduce it (e.g. its norm "
                "or maximum), or use table='wide', which writes one column per entry."
            )
            if not per_system and len(f.shape) == 1:
                remedy = (
                    "If its axis is the batch's systems, create the sink with per_system=True: "
                    "each system's row is then a scalar (one row per system). Otherwise split it "
                    "into scalar fields, or use table='wide', which writes one column per entry."
                )
            raise ConfigError(
                f"`{owner}` with table='long' logs scalar fields only, but field '{f.name}' has "
                f"shape {f.shape} {where}. {remedy}"
            )
        if not (
            jnp.issubdtype(f.dtype, jnp.bool_)
            or jnp.issubdtype(f.dtype, jnp.integer)
            or jnp.issubdtype(f.dtype, jnp.floating)
        ):
            raise ConfigError(
                f"`{owner}` with table='long' logs bool, integer and float fields; field "
                f"'{f.name}' is {np.dtype(f.dtype).name}. Log its real and imaginary parts (or "
                "its absolute value) as float fields."
            )
    dtypes = tuple(np.dtype(f.dtype) for f in spec.fields)
    return LongTable(
        names=spec.names,
        nodes=node_names(spec.names, reserved=COLUMNS),
        dtypes=dtypes,
        value_dtype=value_dtype(owner, spec.names, dtypes),
        per_system=per_system,
    )


def value_dtype(owner: str, names: Sequence[str], dtypes: Sequence[np.dtype]) -> np.dtype:
    """The ``value`` column's dtype: the smallest of the fields' dtypes and int8, ..., int64,
    float32, float64 that holds every field's values exactly (an integer when every field is an
    integer or bool). Integers and floats share float64 only if the integers have at most 53 bits
    (int32: yes; int64: no, refused rather than rounded)."""
    if len(set(dtypes)) == 1:
        return dtypes[0]
    candidates = sorted(
        {d for d in (*dtypes, *_VALUE_DTYPES) if all(exactly_holds(d, s) for s in dtypes)},
        key=lambda d: (d.itemsize, jnp.issubdtype(d, jnp.floating)),
    )
    if candidates:
        return candidates[0]
    shown = ", ".join(f"'{n}' ({d.name})" for n, d in zip(names, dtypes))
    wide = ", ".join(
        f"'{n}' ({d.name})"
        for n, d in zip(names, dtypes)
        if jnp.issubdtype(d, jnp.integer) and d.itemsize == 8
    )
    raise ConfigError(
        f"`{owner}` with table='long' stores every value in one dtype, but no dtype holds the "
        f"values of all of its fields ({shown}) exactly: float64 would round the 64-bit integers "
        f"of {wide} beyond 2**53. Cast those fields in the frame (to int32 if they stay below "
        "2**31, or to float64 if rounding beyond 2**53 is acceptable), or log them in a sink of "
        "their own."
    )


def exactly_holds(target: np.dtype, source: np.dtype) -> bool:
    """Whether every value of dtype `source` is exactly a value of dtype `target`."""
    if source == target or source == np.bool_:
        return True
    if (
        target == np.bool_
        or jnp.issubdtype(source, jnp.floating)
        and jnp.issubdtype(target, jnp.integer)
    ):
        return False
    if jnp.issubdtype(source, jnp.integer):
        if jnp.issubdtype(target, jnp.integer):
            return bool(np.can_cast(source, target, "safe"))
        bits = np.iinfo(source).bits - (1 if np.iinfo(source).min < 0 else 0)
        return bits <= jnp.finfo(target).nmant + 1
    s, t = jnp.finfo(source), jnp.finfo(target)
    return s.nmant <= t.nmant and s.maxexp <= t.maxexp and s.minexp >= t.minexp


@dataclasses.dataclass(frozen=True)
class _LongArray(ArrayLayout):
    """A stored column of a long run; the ``name`` array lists the field names it codes."""

    names: tuple[str, ...] = ()

    def metadata(self, frames: int) -> dict[str, Any]:
        meta = super().metadata(frames)
        if self.names:
            meta.setdefault("attributes", {})["names"] = list(self.names)
        return meta
