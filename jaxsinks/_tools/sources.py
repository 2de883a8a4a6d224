"""Where pictures come from: a recorded run, or the CSV log a `CsvSink` writes, loaded alike."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import numpy as np

from .._core.errors import ConfigError, FieldNotFoundError, StoreError, StoreNotFoundError
from .._core.frame import stored_name
from .._io.long_table import LONG_COLUMNS, WHOLE_FRAME
from .._read.reader import Run
from .._read.reader import open as open_run


@dataclasses.dataclass(frozen=True)
class CsvLog:
    """The CSV log a `CsvSink` wrote: its columns (``step``, ``time``[, ``system``], then one per
    field entry) and its rows as float64. A long log (``table="long"``) is read into this wide
    form: one row per frame (or system row), one column per field name."""

    path: pathlib.Path
    columns: tuple[str, ...]
    rows: np.ndarray  # (n, len(columns))

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def column(self, name: str) -> np.ndarray:
        return self.rows[:, self.columns.index(name)]

    @property
    def steps(self) -> np.ndarray:
        return self.column("step").astype(np.int64)

    @property
    def times(self) -> np.ndarray:
        return self.column("time")

    @property
    def per_system(self) -> bool:
        return "system" in self.columns

    @property
    def fields(self) -> tuple[str, ...]:
        """The logged fields, in order: ``v`` for the columns ``v[0]``, ``v[1]``, ..."""
        names = [c.split("[", 1)[0] for c in self.columns if c not in _CSV_COLUMNS]
        return tuple(dict.fromkeys(names))

    def field_columns(self, field: str) -> list[str]:
        """The columns of `field`: the column of that name, or those of the vector `field`."""
        if field in self.columns and field not in _CSV_COLUMNS:
            return [field]
        found = [c for c in self.columns if c.startswith(field + "[")]
        if not found:
            raise FieldNotFoundError(
                f"The CSV log {self.path} has no field '{field}'; its fields are "
                f"{list(self.fields)} (columns {list(self.columns)})."
            )
        return found


_CSV_COLUMNS = ("step", "time", "system")


def read_csv_log(path: Any) -> CsvLog:
    """Read the CSV log at `path` (written by a `CsvSink`); a torn last line is left out."""
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StoreNotFoundError(f"There is no CSV log at {path}.") from None
    except UnicodeDecodeError:
        raise StoreError(
            f"{path} is not a CsvSink log: it is not text (not UTF-8). Plot a run (a Zarr store) "
            "or a log written by jaxsinks.CsvSink."
        ) from None
    lines = text.split("\n")
    columns = tuple(lines[0].strip().split(","))
    if columns[:2] != ("step", "time"):
        raise StoreError(
            f"{path} is not a CsvSink log: its header {lines[0][:200]!r} does not start with "
            "'step,time'. Plot a run (a Zarr store) or a log written by jaxsinks.CsvSink."
        )
    body = [line for line in lines[1:-1] if line.strip()]  # the last piece is '' or torn
    if columns == LONG_COLUMNS:
        return _widen(path, body)
    cells = [line.split(",") for line in body]
    for i, line in enumerate(cells):
        if len(line) != len(columns):
            raise StoreError(
                f"Line {i + 2} of the CSV log {path} has {len(line)} values for "
                f"{len(columns)} columns; the file is not a CsvSink log, or was edited."
            )
    return CsvLog(path, columns, _numbers(path, cells, len(columns)))


def load(source: Any) -> Run | CsvLog:
    """`source` as a run or a CSV log: a `Run` as it is, a path ending in ``.csv`` as the log
    there, anything else (a path, URL or kvstore spec) as the run `jaxsinks.open` opens."""
    if isinstance(source, (Run, CsvLog)):
        return source
    if isinstance(source, (str, os.PathLike)) and str(source).lower().endswith(".csv"):
        return read_csv_log(source)
    return open_run(source)


def _as_run(source: Any, command: str) -> Run:
    data = load(source)
    if isinstance(data, CsvLog):
        raise ConfigError(
            f"`{command}` renders fields of a run, not of a CSV log ({data.path}); a log holds "
            "scalars only. Plot it with `plot` instead."
        )
    return data


def source_name(data: Run | CsvLog) -> str:
    """A short name for titles: the last component of the store's path (or the log's file
    name); the store's description if it has no path."""
    if isinstance(data, CsvLog):
        return data.path.name
    path = str(data.location.kvstore.get("path", "")).rstrip("/")
    return path.rsplit("/", 1)[-1] or str(data.location)


def describe_source(data: Run | CsvLog) -> str:
    """``the run at <store>`` or ``the CSV log <path>``, for messages."""
    if isinstance(data, CsvLog):
        return f"the CSV log {data.path}"
    return f"the run at {data.location}"


def sentence(text: str) -> str:
    """`text` with its first character upper-cased (the rest, a path in it say, kept as it is)."""
    return text[:1].upper() + text[1:]


def _numbers(path: pathlib.Path, cells: list[list[str]], width: int) -> np.ndarray:
    """The CSV log's `cells` (rows of `width` strings) as float64 numbers; a StoreError if one
    is not a number."""
    try:
        return np.array([[float(c) for c in row] for row in cells]).reshape(-1, width)
    except ValueError as err:
        raise StoreError(
            f"The CSV log {path} holds a value that is not a number ({err}); the file is not a "
            "CsvSink log, or was edited."
        ) from None


def _widen(path: pathlib.Path, body: list[str]) -> CsvLog:
    """A long CSV log's lines as a wide `CsvLog`: the lines of each frame (or system row), one per
    field in the order of the fields, become one row; a frame torn by a crash is left out."""
    cells = [line.split(",") for line in body]
    if not cells:
        return CsvLog(path, ("step", "time"), np.zeros((0, 2)))
    bad = next((i for i, c in enumerate(cells) if len(c) != len(LONG_COLUMNS)), None)
    names = [c[3] for c in cells]
    # the fields: the names up to the first one seen twice (the next frame's first line)
    k = next((i for i in range(len(names)) if names[i] in names[:i]), len(names))
    fields = names[:k]
    whole = len(cells) // k * k
    keys = [tuple(c[:3]) for c in cells[:whole]]
    if bad is None:
        bad = next(
            (i for i in range(whole) if names[i] != fields[i % k] or keys[i] != keys[i - i % k]),
            None,
        )
    if bad is not None or len(set(fields)) != k:
        line = 2 if bad is None else bad + 2
        raise StoreError(
            f"Line {line} of the long CSV log {path} does not continue its pattern: each frame "
            f"(or system row) is one line per field {fields}, with the same step, time and "
            "system. The file is not a CsvSink log, or was edited."
        )
    values = _numbers(path, [[c[j] for j in (0, 1, 2, 4)] for c in cells[:whole]], 4)
    values = values.reshape(-1, k, 4)
    # the columns step, time (system): those of each frame's first line; then one per field
    per_system = whole > 0 and bool(np.any(values[:, 0, 2] != WHOLE_FRAME))
    head = values[:, 0, :3] if per_system else values[:, 0, :2]
    # a field named like a column is under its stored name (``time_``), as in a wide log
    named = [stored_name(f, _CSV_COLUMNS) for f in fields]
    columns = ("step", "time", *(("system",) if per_system else ()), *named)
    return CsvLog(path, columns, np.concatenate([head, values[:, :, 3]], axis=1))
