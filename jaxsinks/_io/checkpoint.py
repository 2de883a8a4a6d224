"""The files and run metadata of a checkpointed loop (`jaxsinks.scan(..., checkpoint=...)`).

A checkpoint is one file, ``ckpt-<step>.npz`` in the checkpoint folder, holding a JSON header and
the raw bytes of every array of the loop's carry (as ``uint8``, so every dtype round-trips bit
for bit). It is written to a temporary name, fsynced, renamed into place and the folder fsynced:
a process killed at any moment leaves either the previous checkpoint or the new one, never a torn
file. Only the newest is kept.

Before a checkpoint is written, every Zarr run of the loop waits until the frames its sink
flushed are committed, and records in its metadata (``jaxsinks.checkpoint``) the loop's token,
the step and its committed count (`mark_run`). On resume the run's reference must name the same
loop at a step no older than the checkpoint's, and the run is rewound to the checkpoint's count
(`rewind_zarr`): the frames after it are recorded again, identically, by the resumed loop.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import zipfile
from typing import Any

import numpy as np

from .._core.errors import CheckpointError
from .writer import HostWriter
from .zarr_writer import ZarrWriter

#: The key of a run's checkpoint reference in its jaxsinks metadata.
META_KEY = "checkpoint"
#: The format of the checkpoint files this version writes and reads.
FORMAT = 1
_NAME = re.compile(r"^ckpt-(\d+)\.npz$")
#: The keys of a checkpoint's header, and the JSON types of their values.
_HEADER = {
    "format": int,
    "token": str,
    "step": int,
    "owner": str,
    "step0": int,
    "times": list,
    "state": list,
    "sinks": list,
    "arrays": list,
}


def save(directory: pathlib.Path, step: int, header: dict[str, Any], arrays: list[Any]) -> None:
    """Write the checkpoint of `step` atomically, then remove the older ones."""
    final = directory / f"ckpt-{step:012d}.npz"
    temp = directory / f".{final.name}.{os.getpid()}.tmp"
    payload = {f"a{i}": _as_bytes(a) for i, a in enumerate(arrays)}
    payload["header"] = np.frombuffer(json.dumps(dict(header, format=FORMAT)).encode(), np.uint8)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as file:
            np.savez(file, **payload)  # type: ignore[arg-type]  # numpy's stub types allow_pickle
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, final)
        _fsync_dir(directory)
    except OSError as err:
        temp.unlink(missing_ok=True)
        raise CheckpointError(
            f"Could not write the checkpoint {final}: {err.strerror or err}. Free space, or "
            "make the folder writable, or choose another `checkpoint` folder. Before the first "
            "checkpoint nothing has run and the sinks are untouched: pass them again. After it, "
            "the loop stopped, its runs keep their committed frames and read as interrupted: "
            "resume from the previous checkpoint with resume=True."
        ) from None
    for old in checkpoints(directory):
        if old != final:
            old.unlink(missing_ok=True)
    for left in directory.glob(".ckpt-*.tmp"):  # left by a process killed while writing one
        left.unlink(missing_ok=True)


def checkpoints(directory: pathlib.Path) -> list[pathlib.Path]:
    """The checkpoint files in `directory`, oldest first (none if it does not exist)."""
    if not directory.is_dir():
        return []
    found = [(int(m[1]), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def clear(directory: pathlib.Path) -> None:
    """Remove the checkpoints in `directory` (a loop starting afresh there)."""
    for path in checkpoints(directory):
        path.unlink(missing_ok=True)
    for temp in directory.glob(".ckpt-*.tmp") if directory.is_dir() else ():
        temp.unlink(missing_ok=True)


def load_latest(directory: pathlib.Path) -> tuple[dict[str, Any], list[np.ndarray]] | None:
    """The newest checkpoint's header and arrays (as the stored dtypes and shapes), or None."""
    found = checkpoints(directory)
    if not found:
        return None
    path = found[-1]
    try:
        with open(path, "rb") as file, np.load(file) as data:  # the file closed also on errors
            header = json.loads(data["header"].tobytes())
            _check_header(path, header)
            raw = [data[f"a{i}"] for i in range(len(header["arrays"]))]
        arrays = [
            np.frombuffer(r.tobytes(), np.dtype(_dtype(a["dtype"]))).reshape(a["shape"])
            for r, a in zip(raw, header["arrays"])
        ]
    except CheckpointError:
        raise  # another format
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"The checkpoint {path} cannot be read ({type(err).__name__}: {err}); it is not a "
            "whole checkpoint written by this version of jaxsinks (it was cut short, changed, "
            "or is another program's file). Remove it to resume from an older checkpoint in the "
            "folder, resume from another checkpoint folder, or start afresh with resume=False."
        ) from None
    return header, arrays


def _check_header(path: pathlib.Path, header: Any) -> None:
    """A CheckpointError if `header` is of another format, a ValueError if it is not a
    checkpoint's header."""
    if isinstance(header, dict) and header.get("format", FORMAT) != FORMAT:
        raise CheckpointError(
            f"The checkpoint {path} has format {header.get('format')!r}; this version of jaxsinks "
            f"reads format {FORMAT}. Resume with the version that wrote it, or start afresh."
        )
    if not isinstance(header, dict):
        raise ValueError(f"its header is a JSON {type(header).__name__}, not an object")
    wrong = [
        f"{key!r} ({'missing' if key not in header else type(header[key]).__name__})"
        for key, kind in _HEADER.items()
        if not isinstance(header.get(key), kind) or isinstance(header.get(key), bool)
    ]
    if wrong:
        raise ValueError(
            "its header lacks or has the wrong type of the entries " + ", ".join(wrong)
        )


def run_reference(writer: HostWriter) -> dict[str, Any] | None:
    """The checkpoint reference stored in a Zarr run's metadata, or None."""
    ref = getattr(writer, "meta", {}).get(META_KEY)
    return ref if isinstance(ref, dict) else None


def mark_run(writer: ZarrWriter, token: str, step: int, committed: int) -> None:
    """Record durably in the run's metadata that the loop `token` checkpoints it at `step`."""
    with writer._meta_lock:
        writer.meta[META_KEY] = {"token": token, "step": step, "committed": committed}
    writer._write_attrs("open")


def rewind_zarr(writer: ZarrWriter, committed: int, atoms: int) -> None:
    """Rewind a reopened run to `committed` frames (and `atoms` atoms of its ragged fields).

    The count is made durable first, then the arrays are shortened; a process killed in between
    leaves a run that reopens at `committed`. Nothing may have been flushed to `writer` yet.
    """
    with writer._lock, writer._cond:
        writer.committed = writer.start = committed
        writer._durable = dict.fromkeys(writer._durable, committed)
        writer._next = dict.fromkeys(writer._next, committed)
        writer.atoms = writer.committed_atoms = atoms
    writer._write_attrs("open")
    ragged = sorted(writer._ragged)
    frames = [k for k in writer.arrays if k not in writer._ragged]
    if writer.frames != committed:
        writer.frames = writer._grow(frames, committed)
    if ragged and writer.atom_frames != atoms:
        writer.atom_frames = writer._grow(ragged, atoms)


def run_atoms(writer: HostWriter) -> int:
    """The atoms committed to a Zarr run's ragged fields (0 for any other writer)."""
    return int(getattr(writer, "committed_atoms", 0))


def _as_bytes(array: Any) -> np.ndarray:
    return np.frombuffer(np.ascontiguousarray(array).tobytes(), np.uint8)


def _dtype(name: str) -> Any:
    import jax.numpy as jnp  # ml_dtypes' names (bfloat16, float8_*) are known to JAX's dtypes

    return jnp.dtype(name)


def _fsync_dir(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
