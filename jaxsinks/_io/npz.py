"""``.npz`` files written without `np.savez`'s keyword-argument keys (`HostBuffer.save_npz`)."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from .codecs import is_float


def write_npz(path: Any, arrays: Mapping[str, np.ndarray], *, compressed: bool) -> None:
    """Write `arrays` to a ``.npz`` file as `np.savez` (or `np.savez_compressed`) does, each
    under its own key, whatever the key: `np.savez` takes the keys as keyword arguments, so it
    would take an array named ``allow_pickle`` (or ``file``) for its own argument.

    A path (str or path-like) without the ``.npz`` suffix gets it, as with `np.savez`; a file
    object is written as it is.
    """
    if not hasattr(path, "write"):
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
    compression = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, mode="w", compression=compression, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def npz_array(array: np.ndarray) -> np.ndarray:
    """`array` as `HostBuffer.save_npz` saves it: as it is if numpy knows its dtype, else (a float
    type of ml_dtypes, such as bfloat16, which numpy would save as raw bytes) as float32, which
    holds each of its values exactly."""
    if array.dtype.kind == "V" and is_float(array.dtype):
        return array.astype(np.float32)
    return array
