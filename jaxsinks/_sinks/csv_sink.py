"""CsvSink: scalar logs (step, energies, fmax, user scalars) streamed to a CSV file.

The seeds' LoggingHook, inside the compiled loop: frames of scalars (or small arrays, one column
per entry) are staged on the device like any streaming sink and written by the host writer a
block at a time, asynchronously. There is no per-step host sync.

The file has a header ``step,time[,system],<columns>``, one column per entry of each field:
``energy`` for a scalar, ``energy[0]``, ``energy[1]``, ... for a vector, ``f[i][j]`` for a matrix,
none for a zero-size field (shape ``(0,)`` or ``(3, 0)``: it has no entries).
A field named like a column is headed by its stored name (``time_`` for a field ``time``,
``time_/x`` for ``time/x``; see `jaxsinks._core.frame.stored_name`). With ``table="long"`` the
header is ``step,time,system,name,value`` and each frame (or system row) of scalar fields is one
line per field (see `jaxsinks._io.long_table`). The file is written by `jaxsinks._io.csv_log`.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, final

import jax.numpy as jnp
import numpy as np

from .._core.deprecation import deprecated_arguments
from .._core.errors import ConfigError
from .._core.pytree import pytree_dataclass
from .._core.schedule import Schedule
from .._core.sink import RecordOptions, check_capacity, check_mode
from .._core.types import Mode, Overflow, Table
from .._io import writer as _writer
from .._io.csv_log import CsvWriter
from .._io.long_table import check_table, long_table
from .._io.progress import Progress
from .stream import StreamSink, check_progress, row_layout

#: Default rows per flush (the staging block).
DEFAULT_BLOCK = 256


@final
@pytree_dataclass
class CsvSink(StreamSink):
    """Logs frames of scalars to a CSV file from inside compiled loops (see `CsvSink.create`)."""

    @classmethod
    @deprecated_arguments("CsvSink.create", renamed={"chunk": "block"})
    def create(
        cls,
        path: str | os.PathLike,
        frame: Any,
        *,
        every: int | Schedule | None = None,
        block: int = DEFAULT_BLOCK,
        per_system: bool = False,
        once: bool = False,
        table: Table = "wide",
        capacity: int | None = None,
        overflow: Overflow = "error",
        mode: Mode = "w-",
        time_dtype: Any = jnp.float32,
        progress: Progress | None = None,
        max_inflight_bytes: int = _writer.DEFAULT_MAX_INFLIGHT_BYTES,
    ) -> CsvSink:
        """Create the CSV file at `path` (host side) and return an empty sink that logs to it.

        Args:
            path: a local file path.
            frame: an example frame: scalars or small arrays (each entry becomes a column; a
                zero-size field has no column).
            every: the schedule `jaxsinks.record` follows (default: every step).
            block: rows per flush, the size of the device staging block (`sink.block`).
                Formerly `chunk` (still accepted, with a DeprecationWarning).
            per_system: one row per selected system, with a ``system`` column.
            once: with `per_system`, log each system at most once.
            table: ``"wide"``: one line per frame (or system row), one column per field entry
                (default). ``"long"`` (tidy): one line per (frame or system, field), with the
                columns ``step,time,system,name,value``; ``system`` is -1 for a whole-frame sink.
                Every field must be a scalar (per system, with `per_system`); the values are
                written in their fields' own formats, and must share one dtype exactly
                (int64 beside floats is refused).
            capacity: the most rows the file holds (None: unbounded), as for `ZarrSink`.
            overflow: ``"error"`` or ``"drop"``, as for `ZarrSink` (a file cannot be a ring).
            mode: ``"w-"`` create and fail if the file exists (default); ``"w"`` overwrite a
                CSV log (a file whose header starts ``step,time,``, or an empty file; anything
                else is refused, not deleted); ``"a"`` append (the header must match; a torn
                last line from a crash is removed). A log has one writer: the sink locks the
                file until it closes, and another process's CsvSink on it is refused
                (`WriterConflictError`); so is an open one of this process, except that
                ``"w"`` retires it (re-running a notebook cell).
            time_dtype: the dtype of the time column.
            progress: a `Progress` bar advanced at every flushed block.
            max_inflight_bytes: the most bytes of flushed blocks not yet durable; a flush waits
                for older commits beyond it (back-pressure).
        """
        owner = "CsvSink.create"
        mode = check_mode(owner, mode)
        if not isinstance(path, (str, os.PathLike)) or "://" in str(path):
            raise ConfigError(
                f"`{owner}` writes a local file: `path` must be a local path; got {path!r}."
            )
        if "\x00" in os.fspath(path):
            raise ConfigError(
                f"`{owner}`: `path` {path!r} contains a NUL byte, which no file name holds. "
                "Choose a path without it."
            )
        if overflow == "ring":
            raise ConfigError(
                f"`{owner}` cannot keep a ring in a file; use overflow='error' or 'drop'."
            )
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
        block = check_capacity(owner, "block", block)
        rows = None
        if check_table(owner, table) == "long":
            rows = long_table(owner, options.spec, options.batch_size is not None)
        complex_fields = [
            f.name for f in options.spec.fields if np.issubdtype(f.dtype, np.complexfloating)
        ]
        if complex_fields:
            raise ConfigError(
                f"`{owner}` cannot write complex fields {complex_fields} as CSV columns."
            )
        layout = row_layout(options, block)
        writer = CsvWriter(
            pathlib.Path(path),
            layout,
            mode=mode,
            progress=check_progress(progress),
            max_inflight_bytes=_writer.check_inflight_bytes(owner, max_inflight_bytes),
            table=rows,
        )
        return cls._empty(writer, options, layout)
