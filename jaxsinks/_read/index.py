"""Numpy-style indexing planned on shapes alone (pure): which box of stored values an index touches,
and how numpy then indexes that box, so that a view reads only what the index asks for."""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

from .._core.errors import ReadIndexError


def plan_index(
    index: Any, shape: tuple[int, ...], name: str
) -> tuple[list[tuple[Any, Any]], list[Any]]:
    """How numpy reads `index` for an array of `shape`: for each axis, ``(where, kind)`` (the
    position in `rel` that indexes it, None for axes an Ellipsis or the end covers; and what
    selects along it: ``("all",)``, ``("int", i)``, ``("slice", range)`` or ``("array", ints)``,
    all checked and non-negative), and `rel`: the index, item by item, with each kept as it is
    (None, Ellipsis) or to be replaced by its part relative to the box that is read.
    """
    items = list(index) if isinstance(index, tuple) else [index]
    kinds = [item_kind(item, index, name) for item in items]
    consumed = sum(k[1] for k in kinds if k[0] != "none" and k[0] != "ellipsis")
    ellipses = sum(1 for k in kinds if k[0] == "ellipsis")
    if ellipses > 1:
        raise ReadIndexError(
            f"An index can only have a single ellipsis ('...'); got {show(index)}."
        )
    if consumed > len(shape):
        raise ReadIndexError(
            f"Too many indices for field '{name}': it has {len(shape)} axes (frames first, "
            f"shape {shape}) but {show(index)} indexes {consumed}."
        )
    plan: list[tuple[Any, Any]] = []
    rel: list[Any] = []
    arrays: list[tuple[int, ...]] = []
    for kind in kinds:
        tag = kind[0]
        if tag == "none":
            rel.append(None)
        elif tag == "ellipsis":
            rel.append(Ellipsis)
            plan.extend((None, ("all",)) for _ in range(len(shape) - consumed))
        elif tag == "int":
            axis, n = len(plan), shape[len(plan)]
            if not -n <= kind[2] < n:
                raise ReadIndexError(
                    f"Index {kind[2]} is out of range for axis {axis} of field '{name}', "
                    f"of size {n} (shape {shape})."
                )
            plan.append((len(rel), ("int", kind[2] % n)))
            rel.append(None)
        elif tag == "slice":
            axis, n = len(plan), shape[len(plan)]
            plan.append((len(rel), ("slice", range(*kind[2].indices(n)))))
            rel.append(None)
        elif tag == "bool":
            mask = kind[2]
            axis = len(plan)
            axes = shape[axis : axis + mask.ndim]
            if any(m not in (0, n) for m, n in zip(mask.shape, axes, strict=True)):
                raise ReadIndexError(
                    f"A boolean index of shape {mask.shape} does not match axes "
                    f"{axis}..{axis + mask.ndim - 1} of field '{name}' (shape {shape}): a mask "
                    "must have the shape of the axes it selects (an empty mask may have size 0 "
                    "along any of them, as numpy allows)."
                )
            for part in mask.nonzero():
                plan.append((len(rel), ("array", part)))
                rel.append(None)
                arrays.append(part.shape)
        else:  # "array"
            plan.append((len(rel), ("array", kind[2])))
            rel.append(None)
            arrays.append(kind[2].shape)
    plan.extend((None, ("all",)) for _ in range(len(shape) - len(plan)))
    try:
        selected = math.prod(np.broadcast_shapes(*arrays))
    except ValueError:
        raise ReadIndexError(
            f"Shape mismatch: the index arrays of {show(index)} cannot be broadcast together "
            f"(shapes {arrays})."
        ) from None
    for axis, (where, kind) in enumerate(plan):
        if kind[0] != "array":
            continue
        ints, n = kind[1], shape[axis]
        if selected == 0:  # numpy checks no index array when they select nothing
            plan[axis] = (where, ("nothing", ints))
            continue
        if ints.size and (ints.min() < -n or ints.max() >= n):
            bad = ints[(ints < -n) | (ints >= n)].flat[0]
            raise ReadIndexError(
                f"Index {bad} is out of range for axis {axis} of field '{name}', of size "
                f"{n} (shape {shape})."
            )
        plan[axis] = (where, ("array", np.where(ints < 0, ints + n, ints)))
    return plan, rel


def item_kind(item: Any, index: Any, name: str) -> tuple[Any, ...]:
    """``(tag, axes consumed, value)`` of one index item; a ReadIndexError for what numpy
    refuses."""
    if item is None:
        return ("none", 0)
    if item is Ellipsis:
        return ("ellipsis", 0)
    if isinstance(item, slice):
        bounds = (item.start, item.stop, item.step)
        if any(
            b is not None and (isinstance(b, (bool, np.bool_)) or not hasattr(b, "__index__"))
            for b in bounds
        ):
            raise ReadIndexError(
                f"Slice bounds must be integers or None; got {show(item)} in {show(index)}."
            )
        start, stop, step = (None if b is None else operator.index(b) for b in bounds)
        if step == 0:
            raise ReadIndexError(f"A slice step cannot be zero ({show(index)}).")
        return ("slice", 1, slice(start, stop, step))
    if isinstance(item, (bool, np.bool_)):
        raise ReadIndexError(_SCALAR_BOOL.format(item=show(item), name=name))
    if isinstance(item, (int, np.integer)):
        return ("int", 1, int(item))
    if isinstance(item, (str, bytes)) or not (
        isinstance(item, (list, tuple, range)) or hasattr(item, "__array__")
    ):
        if hasattr(item, "__index__"):
            return ("int", 1, operator.index(item))
        raise ReadIndexError(_NOT_AN_INDEX.format(item=show(item), name=name))
    try:
        array = np.asarray(item)
    except (ValueError, TypeError):
        raise ReadIndexError(
            f"{show(item)} is not a valid index for field '{name}': index lists must be "
            "rectangular lists of integers or booleans."
        ) from None
    if array.dtype == np.bool_:
        if array.ndim == 0:
            raise ReadIndexError(_SCALAR_BOOL.format(item=show(item), name=name))
        return ("bool", array.ndim, array)
    if array.size == 0 and isinstance(item, (list, tuple, range)):
        array = array.astype(np.intp)  # numpy reads an empty list as an empty integer index
    if array.dtype.kind not in "iu":
        raise ReadIndexError(_NOT_AN_INDEX.format(item=show(item), name=name))
    if array.ndim == 0:
        return ("int", 1, int(array))
    return ("array", 1, array.astype(np.int64))


_SCALAR_BOOL = (
    "A scalar boolean index ({item}) is not supported when reading field '{name}'; use None to "
    "add an axis, or a boolean array over an axis."
)
_NOT_AN_INDEX = (
    "{item} is not a valid index for field '{name}': only integers, slices (':'), ellipsis "
    "('...'), None and integer or boolean arrays are."
)


def frame_rows(kind: tuple[Any, ...], frames: np.ndarray) -> tuple[np.ndarray, Any]:
    """The physical rows to read for the frame axis, in order, and what then indexes them."""
    if kind[0] == "all":
        return frames, None
    if kind[0] == "int":
        return frames[kind[1] : kind[1] + 1], 0
    if kind[0] == "slice":
        r = kind[1]  # a range: slicing keeps any step, even one beyond int64
        return frames[r.start :: r.step][: len(r)], slice(None)
    if kind[0] == "nothing":
        return frames[:0], kind[1]
    unique, inverse = np.unique(kind[1], return_inverse=True)
    return frames[unique], inverse.reshape(kind[1].shape)


def read_box(kind: tuple[Any, ...], n: int) -> tuple[slice, Any]:
    """The box (a slice with step 1) to read along an axis of size `n`, and what then indexes it."""
    if kind[0] == "all":
        return slice(0, n), None
    if kind[0] == "int":
        return slice(kind[1], kind[1] + 1), 0
    if kind[0] == "slice":
        r = kind[1]
        if len(r) == 0:
            return slice(0, 0), slice(None)
        lo, hi = min(r[0], r[-1]), max(r[0], r[-1])
        start = 0 if r.step > 0 else hi - lo
        return slice(lo, hi + 1), slice(start, None, r.step)
    ints = kind[1]
    if kind[0] == "nothing" or ints.size == 0:
        return slice(0, 0), ints
    lo = int(ints.min())
    return slice(lo, int(ints.max()) + 1), ints - lo


def select_frames(key: Any, n: int, what: str) -> np.ndarray:
    """``np.arange(n)[key]`` for a key along the frame axis only (``...`` is every frame), with
    numpy's answer, or a ReadIndexError (numpy's IndexError, TypeError, ValueError or
    OverflowError, said of `what`). None and a bool, which add an axis, are refused."""
    if isinstance(key, tuple) and len(key) == 1 and not isinstance(key[0], tuple):
        key = key[0]
    if isinstance(key, tuple) or key is None or isinstance(key, (bool, np.bool_)):
        raise ReadIndexError(
            f"Index {what} with one int, slice, `...`, or integer or boolean array; got "
            f"{show(key)}."
        )
    try:
        return np.arange(n)[key]
    except (IndexError, TypeError, ValueError, OverflowError) as err:
        raise ReadIndexError(f"Cannot index {what} ({n}) with {show(key)}: {err}.") from None


def show(index: Any) -> str:
    """`index` as shown in a message: its repr, cut to 80 characters."""
    text = repr(index)
    return text if len(text) <= 80 else text[:77] + "..."
