"""Frame specifications: the static structure, shapes and dtypes of what a sink records.

A *frame* is any pytree of arrays. A sink is created from an example frame (arrays, numpy arrays,
Python scalars or `jax.ShapeDtypeStruct`s) and keeps its `FrameSpec` as static metadata; every
frame written later is checked against it at trace time.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .errors import ConfigError, FrameError
from .types import PyTree

#: The name given to a frame that is a single array rather than a container of arrays.
BARE_FIELD_NAME = "data"


@dataclasses.dataclass(frozen=True)
class Field:
    """One leaf of a frame: its name (the pytree path joined by ``/``), shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of one value of this field."""
        return math.prod(self.shape) * self.dtype.itemsize

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype.name}{list(self.shape)}"


def _flatten(tree: PyTree, what: str, error: type[Exception]) -> tuple[list[Any], Any]:
    """`tree`'s (path, leaf) pairs and treedef; `error` naming `what` if JAX cannot flatten it."""
    try:
        return jax.tree_util.tree_flatten_with_path(tree)
    except ValueError as err:  # a dict whose keys do not sort (ints beside strings)
        raise error(
            f"{what} could not be read as a pytree: {err} (JAX sorts the keys of every dict in "
            "it, so they must be of one kind). Use string keys, e.g. `{'1': x, 'a': y}`."
        ) from None


@dataclasses.dataclass(frozen=True)
class FrameSpec:
    """The static description of a frame: its pytree structure and one `Field` per leaf."""

    treedef: jax.tree_util.PyTreeDef
    fields: tuple[Field, ...]

    @classmethod
    def from_example(cls, example: PyTree) -> FrameSpec:
        """The spec of `example`: a pytree of arrays, scalars or `jax.ShapeDtypeStruct`s."""
        paths_leaves, treedef = _flatten(example, "The example frame", ConfigError)
        if not paths_leaves:
            raise ConfigError(
                "The example frame has no arrays in it. Pass a pytree of arrays or "
                "`jax.ShapeDtypeStruct`s, e.g. `{'x': jnp.zeros(3)}`."
            )
        fields = tuple(
            Field(path_name(path), tuple(_shape(leaf)), _dtype(leaf, path))
            for path, leaf in paths_leaves
        )
        names = [f.name for f in fields]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(
                f"The example frame has several leaves named {duplicates} once their pytree paths "
                "are joined with '/'. Rename the keys so that every leaf has its own path."
            )
        return cls(treedef, fields)

    @property
    def names(self) -> tuple[str, ...]:
        """The field names, in pytree flattening order."""
        return tuple(f.name for f in self.fields)

    @property
    def nbytes(self) -> int:
        """Bytes of one frame."""
        return sum(f.nbytes for f in self.fields)

    def batched(self, size: int) -> FrameSpec:
        """This spec with a leading axis of `size` added to every field."""
        return FrameSpec(
            self.treedef,
            tuple(dataclasses.replace(f, shape=(size, *f.shape)) for f in self.fields),
        )

    def unbatched(self) -> tuple[FrameSpec, int]:
        """Split off the leading "system" axis shared by every field: ``(row spec, size)``."""
        sizes = {f.shape[0] if f.shape else None for f in self.fields}
        if None in sizes or len(sizes) != 1:
            shapes = ", ".join(f"{f.name}{list(f.shape)}" for f in self.fields)
            raise ConfigError(
                "A per-system sink needs every field of the example frame to have the same leading "
                f"(system) axis, but the fields have shapes {shapes}. Give every field a leading "
                "axis of the batch size, or create the sink with `per_system=False`."
            )
        (size,) = sizes
        assert size is not None  # checked above
        rows = tuple(dataclasses.replace(f, shape=f.shape[1:]) for f in self.fields)
        return FrameSpec(self.treedef, rows), size

    def shape_dtype_structs(self) -> PyTree:
        """The spec as a pytree of `jax.ShapeDtypeStruct`."""
        return self.unflatten([jax.ShapeDtypeStruct(f.shape, f.dtype) for f in self.fields])

    def zeros(self, leading: tuple[int, ...] = ()) -> list[jax.Array]:
        """Zero-filled leaves, each with the extra `leading` axes."""
        return [jnp.zeros((*leading, *f.shape), f.dtype) for f in self.fields]

    def unflatten(self, leaves: Sequence[Any]) -> PyTree:
        """Rebuild a frame of this structure from its leaves."""
        return jax.tree_util.tree_unflatten(self.treedef, list(leaves))

    def check(self, frame: PyTree, *, argname: str = "frame") -> list[jax.Array]:
        """Validate `frame` against this spec (at trace time) and return its leaves as arrays.

        Raises:
            FrameError: naming every field whose structure, shape or dtype differs.
        """
        paths_leaves, treedef = _flatten(frame, f"`{argname}`", FrameError)
        if treedef != self.treedef:
            got = [path_name(p) for p, _ in paths_leaves]
            missing = [n for n in self.names if n not in got]
            extra = [n for n in got if n not in self.names]
            detail = []
            if missing:
                detail.append(f"missing fields {missing}")
            if extra:
                detail.append(f"unexpected fields {extra}")
            if not detail:
                detail.append(f"expected the structure {self.treedef}, got {treedef}")
            raise FrameError(
                f"`{argname}` does not have the structure of the sink's frames: "
                f"{'; '.join(detail)}. Record frames with the same pytree structure as the "
                "example the sink was created from."
            )
        problems = [
            p
            for f, (_, leaf) in zip(self.fields, paths_leaves)
            if (p := _out_of_canonical_range(f, leaf)) is not None
        ]
        leaves = [] if problems else [_as_array(leaf) for _, leaf in paths_leaves]
        for field, leaf in zip(self.fields, leaves):
            if tuple(leaf.shape) != field.shape:
                problems.append(
                    f"field '{field.name}' has shape {tuple(leaf.shape)}, expected {field.shape}"
                )
            if _canonical(leaf.dtype) != field.dtype:
                problems.append(
                    f"field '{field.name}' has dtype {leaf.dtype}, expected {field.dtype}"
                )
        if problems:
            raise FrameError(
                f"`{argname}` does not match the sink's frame specification: "
                + "; ".join(problems)
                + ". Cast or reshape the frame, or create the sink from an example with these "
                "shapes and dtypes."
            )
        return leaves


def path_name(path: tuple[Any, ...]) -> str:
    """The field name of a pytree path: its keys joined with ``/`` (``data`` for a bare array)."""
    if not path:
        return BARE_FIELD_NAME
    return "/".join(_key_name(k) for k in path)


_NODE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
#: Characters of one part of a field name: a directory name on common file systems (255 bytes),
#: with room for the '.__lock' files TensorStore writes beside keys.
MAX_NODE_NAME = 200


#: Appended to the first part of a field name that is one of the sink's column names (``time`` is
#: stored as ``time_``, ``time/x`` as ``time_/x``): see `node_names`.
RESERVED_SUFFIX = "_"


def check_node_name(name: str) -> None:
    """Raise `ConfigError` unless every ``/``-separated part of `name` is a safe store node name."""
    for part in name.split("/"):
        if (
            part in {".", "..", "zarr.json"}
            or part.startswith("__")
            or part.endswith(".__lock")
            or not _NODE_NAME.match(part)
            or len(part) > MAX_NODE_NAME
        ):
            shown = name if len(name) <= 80 else name[:77] + "..."
            raise ConfigError(
                f"Field name '{shown}' cannot be used as a store node name: each part between "
                f"slashes must match {_NODE_NAME.pattern!r} (letters, digits, '_', '.', '-'; not "
                f"'.', '..', 'zarr.json', a leading '__' or a trailing '.__lock'; at most "
                f"{MAX_NODE_NAME} characters). Rename the key in the frame pytree."
            )


def check_node_names(names: Sequence[str]) -> None:
    """`check_node_name` for each of `names`, and a `ConfigError` naming both fields if one field's
    node would be the group of another's (``a`` and ``a/b``: ``a`` cannot be an array and a group).
    """
    node_names(names)


def stored_name(name: str, reserved: Sequence[str]) -> str:
    """The store node (and CSV column, ``.npz`` key) name of field `name`: `name` itself, unless
    its first part is one of the sink's column names `reserved`, which gets `RESERVED_SUFFIX`
    (``time`` -> ``time_``, ``time/x`` -> ``time_/x``; ``a/time`` stays)."""
    top, sep, rest = name.partition("/")
    return top + RESERVED_SUFFIX + sep + rest if top in reserved else name


def nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a/b": v}`` -> ``{"a": {"b": v}}``: values by field name (the path of each leaf,
    joined with '/') back to the frame's nested dicts."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def unreserved_names(names: Iterable[str], reserved: Collection[str]) -> dict[str, str]:
    """Each of the distinct `names` -> a distinct name whose first part is not one of `reserved`
    (the columns, coordinates and dimensions of a table or Dataset built from a run's fields).

    A name stays unless its first ``/``-separated part is reserved; then that part takes
    `RESERVED_SUFFIX` (as in `stored_name`: ``run`` -> ``run_``, ``run/x`` -> ``run_/x``) again
    until the name is neither reserved nor another's (``run`` beside a name ``run_`` is
    ``run__``). So every name keeps a variable of its own; the answer depends only on `names`
    and their order.
    """
    names = list(names)

    def clashes(name: str) -> bool:
        return name.partition("/")[0] in reserved

    taken = {name for name in names if not clashes(name)}
    out: dict[str, str] = {}
    for name in names:
        free = name
        while clashes(name) and (clashes(free) or free in taken):
            top, sep, rest = free.partition("/")
            free = top + RESERVED_SUFFIX + sep + rest
        out[name] = free
        taken.add(free)
    return out


def node_names(names: Sequence[str], *, reserved: Sequence[str] = ()) -> tuple[str, ...]:
    """The store node names of fields `names` (`stored_name`), each checked by `check_node_name`.

    Raises:
        ConfigError: for an unsafe name, or naming both fields when two would be stored under the
            same node, or one's node would be the group of another's (``a`` and ``a/b``): e.g.
            ``time`` (stored as ``time_``) beside a field ``time_``.
    """
    stored = tuple(stored_name(n, reserved) for n in names)
    for name, node in zip(names, stored):
        check_node_name(name)
        check_node_name(node)
    arrays = set(stored)
    owners: dict[str, str] = {}  # every node a field needs (its array, its groups) -> the field
    clash = None
    for name, node in zip(names, stored):
        parts = node.split("/")
        for i in range(1, len(parts) + 1):
            key = "/".join(parts[:i])
            other = owners.setdefault(key, name)
            if other != name and (i == len(parts) or key in arrays):
                clash = (other, name, key)
                break
        if clash:
            break
    if clash is None:
        return stored
    first, second, key = clash
    renamed = [n for n in (first, second) if stored_name(n, reserved) != n]
    why = "".join(
        f" '{n}' is stored as '{stored_name(n, reserved)}' because '{n.split('/')[0]}' is one of "
        f"the reserved names {list(reserved)} of the sinks' own columns."
        for n in renamed
    )
    if stored_name(first, reserved) == stored_name(second, reserved):
        what = f"both would be stored as '{key}'."
    else:
        held, holder = (first, second) if stored_name(first, reserved) == key else (second, first)
        what = f"'{key}' would be the array of '{held}' and also the group holding '{holder}'."
    raise ConfigError(
        f"Fields '{first}' and '{second}' cannot both be stored: {what}{why} Rename one of them in "
        f"the frame pytree (e.g. the key '{first.split('/')[0]}' to "
        f"'{first.split('/')[0]}_value')."
    )


def _key_name(key: Any) -> str:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def _shape(leaf: Any) -> tuple[int, ...]:
    return tuple(np.shape(leaf)) if not hasattr(leaf, "shape") else tuple(leaf.shape)


def _dtype(leaf: Any, path: tuple[Any, ...]) -> np.dtype:
    if hasattr(leaf, "dtype"):
        dtype = leaf.dtype
    elif isinstance(leaf, (bool, int, float, complex)):
        try:
            dtype = jnp.asarray(leaf).dtype
        except OverflowError as err:
            raise ConfigError(
                f"The example frame's leaf '{path_name(path)}' is {leaf!r}: {err}."
            ) from None
    else:
        raise ConfigError(
            f"The example frame's leaf '{path_name(path)}' is a {type(leaf).__name__}, not an "
            "array. Frames are pytrees of arrays, scalars or `jax.ShapeDtypeStruct`s."
        )
    if not (jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)):
        raise ConfigError(
            f"The example frame's leaf '{path_name(path)}' has dtype {np.dtype(dtype)}, which "
            "cannot be recorded: frames hold bool, integer, float or complex arrays. Convert it "
            "to numbers, or keep it out of the frame (e.g. in the run's `attrs`)."
        )
    return _canonical(dtype)


def _out_of_canonical_range(field: Field, leaf: Any) -> str | None:
    """A problem if host values `leaf` (numpy, Python) would change when cast to the field's
    dtype because JAX runs without x64 (int64 wrapping, float64 beyond float32 becoming inf)."""
    if isinstance(leaf, jax.Array):  # tracers included
        return None
    try:
        raw = np.asarray(leaf)
    except (TypeError, ValueError, OverflowError):
        return None  # _as_array reports it
    if raw.dtype.kind not in "iufc" or raw.dtype == field.dtype or raw.size == 0:
        return None
    if raw.dtype.kind in "iu" and field.dtype.kind in "iu":
        info = np.iinfo(field.dtype)
        bad = (raw < info.min) | (raw > info.max)
    elif raw.dtype.kind == field.dtype.kind and raw.dtype.kind in "fc":  # complex: each part
        parts = (raw.real, raw.imag) if raw.dtype.kind == "c" else (raw,)
        bad = np.zeros(raw.shape, bool)
        for part in parts:
            bad |= np.isfinite(part) & (np.abs(part) > np.finfo(field.dtype).max)
    else:
        return None
    if not np.any(bad):
        return None
    return (
        f"field '{field.name}' holds {raw.dtype} values out of the range of {field.dtype} (e.g. "
        f"{raw[bad].flat[0]}), which JAX would not store as given (without jax_enable_x64 it "
        f"holds {field.dtype})"
    )


def _canonical(dtype: Any) -> np.dtype:
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def _as_array(leaf: Any) -> jax.Array:
    if isinstance(leaf, jax.Array):
        return leaf
    try:
        return jnp.asarray(leaf)
    except (TypeError, OverflowError) as err:
        raise FrameError(
            f"A frame leaf of type {type(leaf).__name__} is not an array: {err}."
        ) from None
