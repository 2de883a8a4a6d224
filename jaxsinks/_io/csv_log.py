"""The CSV log on disk: the writer that appends a `CsvSink`'s blocks of rows to one file.

One writer per log: the file is opened with an exclusive `flock` held until close, so that a
CsvSink of another process is refused, and a CsvSink of this process still open on the path is
refused or, with ``mode="w"``, retired. A block is committed once it is fsynced; a crash can leave
a torn last line, which the next append removes (see `CsvWriter`).
"""

from __future__ import annotations

import fcntl
import itertools
import math
import os
import pathlib
from collections.abc import Iterable

from .._core.errors import SchemaMismatchError, StoreError, StoreExistsError, WriterConflictError
from . import writer as _writer
from .layout import ArrayLayout, Layout
from .long_table import LONG_COLUMNS, LongTable, value_format
from .progress import Progress


def header(layout: Layout) -> list[str]:
    """The CSV column names: ``step``, ``time`` (``system``), then one per field entry, by the
    field's stored name."""
    names = [c.name for c in layout.columns]
    for field in layout.fields:
        if not field.shape:
            names.append(field.name)
        else:
            names += [
                field.name + "".join(f"[{i}]" for i in idx)
                for idx in itertools.product(*(range(d) for d in field.shape))
            ]
    return names


def row_formats(arrays: Iterable[ArrayLayout]) -> list[str]:
    """The %-format of each CSV column of `arrays`, in order: one per entry, in the array's
    dtype's format; a scalar has one entry, a zero-size field none (like its `header`)."""
    formats = []
    for array in arrays:
        formats += [value_format(array.dtype)] * math.prod(array.shape)
    return formats


def _retire_or_refuse(path: pathlib.Path, mode: str) -> None:
    """A CsvSink of this process still open on `path` is retired by ``mode="w"`` (re-running a
    notebook cell: its later flushes and its close are refused); other modes are refused."""
    live = _writer.REGISTRY.find(lambda w: isinstance(w, CsvWriter) and w.path == path)
    if live is None:
        return
    if mode == "w":
        live.discard("was replaced by a new CsvSink created at the same path with mode='w'")
        return
    raise WriterConflictError(
        f"The CSV log {path} is being written by a CsvSink of this process that is still open "
        "(close it first with jaxsinks.close). A log has one writer at a time: two would "
        "interleave their rows. Wait until it closes, or log to another path."
    )


def _open_alone(path: pathlib.Path, *, create: bool) -> int:
    """Open the CSV log at `path` to append to, holding an exclusive lock on the file (`flock`)
    until the descriptor is closed, so that a CsvSink of another process is refused instead of
    deleting or interleaving this one's rows. `create`: the file must not exist yet."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | (os.O_EXCL if create else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        raise StoreExistsError(
            f"The CSV log {path} was created by someone else at the same moment; nothing was "
            "written to it. Choose another path, or pass mode='a' to append to it."
        ) from None
    except OSError as err:
        raise StoreError(f"Could not open the CSV log {path}: {err.strerror}.") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WriterConflictError(
            f"The CSV log {path} is being written by another process (its CsvSink holds the "
            "file's lock). A log has one writer at a time: two would interleave their rows, or "
            "delete them. Wait until it closes, or log to another path."
        ) from None
    except OSError:
        pass  # a file system without locks: one writer is then the user's to keep
    return fd


class _Fsync:
    """A future whose `result` makes the file durable."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def result(self) -> None:
        os.fsync(self.fd)


class CsvWriter(_writer.HostWriter):
    """Appends blocks of rows to a CSV file; a block is committed once fsynced."""

    def __init__(
        self,
        path: pathlib.Path,
        layout: Layout,
        *,
        mode: str,
        progress: Progress | None,
        max_inflight_bytes: int,
        table: LongTable | None = None,
    ) -> None:
        self.path = path.resolve()
        self.fd: int | None = None
        self.table = table
        self.columns = header(layout) if table is None else list(LONG_COLUMNS)
        self._time_dtype = layout.columns[1].dtype
        self._check_path(mode)
        _retire_or_refuse(self.path, mode)
        self.fd = _open_alone(self.path, create=mode == "w-")
        try:
            rows = self._prepare(mode)
            if rows is None:
                os.write(self.fd, (",".join(self.columns) + "\n").encode())
                os.fsync(self.fd)
                rows = 0
        except OSError as err:
            self._release()
            raise StoreError(f"Could not write the CSV log {self.path}: {err.strerror}.") from None
        except BaseException:
            self._release()
            raise
        # Columns first in the file, fields after; layout.arrays has fields first.
        n_fields = len(layout.fields)
        self._order = list(range(n_fields, len(layout.arrays))) + list(range(n_fields))
        self._formats = row_formats(layout.arrays[k] for k in self._order)
        super().__init__(
            layout,
            description=str(self.path),
            committed=rows,
            max_inflight_bytes=max_inflight_bytes,
            progress=progress,
        )

    def _check_path(self, mode: str) -> None:
        """Refuse, before opening it, a path that is not a file or that `mode` may not touch."""
        if not os.path.lexists(self.path):
            return
        if not self.path.is_file():
            raise StoreExistsError(
                f"{self.path} is a directory (or another non-file), not a CSV log: a CsvSink "
                f"writes one file. Choose a file path, e.g. {self.path / 'log.csv'}."
            )
        if mode == "w-":
            raise StoreExistsError(
                f"The CSV log {self.path} already exists. Pass mode='w' to overwrite it, mode='a' "
                "to append to it, or choose another path."
            )

    def _prepare(self, mode: str) -> int | None:
        """Check the open file for `mode`; the data rows already there (append), or None (an
        empty file, to start with the header)."""
        assert self.fd is not None
        with open(self.fd, "rb", closefd=False) as file:
            data = file.read()
        if not data:
            return None  # new, or emptied before its header was written (a kill in create)
        first = data.split(b"\n", 1)[0].decode(errors="replace")
        if mode == "w":
            if not first.startswith("step,time,"):
                raise StoreExistsError(
                    f"{self.path} is not a CSV log (its first line is {first[:80]!r}, not a header "
                    "starting 'step,time,'); mode='w' replaces only a CSV log, so nothing was "
                    "deleted. Choose another path, or remove that file yourself."
                )
            os.ftruncate(self.fd, 0)
            return None
        if first.split(",") != self.columns:
            raise SchemaMismatchError(
                f"Cannot append to the CSV log {self.path}: its columns are {first.split(',')}, "
                f"but these frames log {self.columns}. Log the same fields, or write a new file."
            )
        if b"\n" not in data:  # the header alone, its newline lost in a crash
            os.write(self.fd, b"\n")
            return 0
        if not data.endswith(b"\n"):  # a torn last line from a crash
            data = data[: data.rfind(b"\n") + 1]
            os.ftruncate(self.fd, len(data))
        if self.table is not None:
            return self._long_frames(data)
        return data.count(b"\n") - 1

    def _long_frames(self, data: bytes) -> int:
        """The frames (staged rows) of the long log `data` to append to: its lines must name this
        sink's fields in turn; a frame torn by a crash (some of its lines) is removed."""
        assert self.table is not None
        lines = data.split(b"\n")[1:-1]
        names = [(line.split(b",") + [b""] * 4)[3].decode(errors="replace") for line in lines]
        k, expected = self.table.rows_per_frame, list(self.table.names)
        if any(name != expected[i % k] for i, name in enumerate(names)):
            raise SchemaMismatchError(
                f"Cannot append to the long CSV log {self.path}: it logs the fields "
                f"{list(dict.fromkeys(names))}, but these frames log {expected}, one line each "
                "in turn. Log the same fields, or write a new file."
            )
        whole = len(names) // k
        if whole * k != len(names):  # keep the header and the whole frames
            cut = sum(len(line) + 1 for line in data.split(b"\n")[: 1 + whole * k])
            assert self.fd is not None
            os.ftruncate(self.fd, cut)
        return whole

    def truncate_rows(self, rows: int) -> None:
        """Cut the file after its first `rows` data rows (a resumed loop logs the rest again).
        Nothing may have been flushed to this writer yet."""
        data = self.path.read_bytes()
        cut, found = 0, -1
        lines = rows * (1 if self.table is None else self.table.rows_per_frame)
        for _ in range(lines + 1):  # the header, then the rows' lines
            found = data.find(b"\n", cut)
            if found < 0:
                raise StoreError(
                    f"The CSV log {self.path} holds fewer than {rows} rows; cannot resume there."
                )
            cut = found + 1
        assert self.fd is not None
        os.ftruncate(self.fd, cut)
        os.fsync(self.fd)
        with self._lock, self._cond:
            self.committed = rows
            self._durable = dict.fromkeys(self._durable, rows)
            self._next = dict.fromkeys(self._next, rows)

    def _issue(self, offset, n, values, shard):
        assert self.fd is not None
        if self.table is not None:
            payload = self.table.csv_lines(values, n, self._time_dtype).encode()
            os.write(self.fd, payload)
            return [_Fsync(self.fd)], len(payload), None
        arrays = list(values.values())
        # Row by row from Python scalars (as np.savetxt does), each column in its own dtype: a
        # common float64 table would round int64 values beyond 2**53.
        columns = [arrays[k][:n].reshape(n, -1).tolist() for k in self._order]
        line = ",".join(self._formats) + "\n"
        payload = "".join(
            line % tuple(itertools.chain.from_iterable(row)) for row in zip(*columns)
        ).encode()
        os.write(self.fd, payload)
        return [_Fsync(self.fd)], len(payload), None

    def _record_committed(self) -> None:
        """The rows are the record: once fsynced they are committed; nothing else to write."""

    def _finalize(self, status: str) -> None:
        self._release()

    def _release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
