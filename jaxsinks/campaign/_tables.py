"""A campaign's runs read as one table: every frame as a dict (`frames`), or one
`xarray.Dataset` (`to_xarray`), with the run id and the parameters beside each frame's fields."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from typing import Any

import numpy as np

from .._core.errors import ConfigError, FieldNotFoundError, SchemaMismatchError
from .._core.frame import unreserved_names
from .._read.index import show
from .._read.reader import Run
from ._entry import RunEntry


def frames(entries: list[RunEntry], names: list[str] | None) -> Iterator[dict[str, Any]]:
    """Every frame of the runs of `entries` (see `Campaign.frames`); `names` as `field_list`
    gives them."""
    opened = [(entry, entry.open()) for entry in entries]
    lacking = [
        f"run '{entry.run_id}' has no fields {missing} (its fields are {list(run.fields)})"
        for entry, run in opened
        if (missing := [n for n in names or () if n not in run.fields])
    ]
    if lacking:
        more = len(lacking) - 5
        shown = lacking[:5] + ([f"and {more} more runs"] if more > 0 else [])
        raise FieldNotFoundError(
            f"`fields` is {names}, but " + "; ".join(shown) + ". Pass fields every "
            "selected run has, or select runs that have them (status=, params=, where=)."
        )
    columns = column_names([run for _, run in opened], ("run", "step", "time", "system"))
    return _frames(opened, names, columns)


def _frames(
    opened: list[tuple[RunEntry, Run]], names: list[str] | None, columns: dict[str, str]
) -> Iterator[dict[str, Any]]:
    for entry, run in opened:
        for frame in run.iter_frames(names):
            out = {columns.get(k, k): v for k, v in frame.items()}
            out["run"] = entry.run_id
            yield out


def to_xarray(entries: list[RunEntry], fields: str | Iterable[str] | None, campaign: str) -> Any:
    """The frames of the runs of `entries` (at least one) as one Dataset (see
    `Campaign.to_xarray`); `campaign` is the campaign's location, kept in its attributes."""
    import xarray as xr

    runs = [e.open() for e in entries]
    names = field_list(fields)
    names = list(runs[0].fields) if names is None else names
    _check_agree(entries, runs, names)
    params = {f"param_{key}": key for key in _shared_scalar_params(entries)}
    # a field named like a coordinate or a dimension (`run`, `frame`, `param_T`, a field's own
    # axis) is `run_`, ...
    axes = {name for run in runs for name in run._axis_names()}
    columns = column_names(runs, ("frame", "run", "step", "time", "system", *params, *axes))
    parts = [_dataset(e, r, names, columns) for e, r in zip(entries, runs)]
    dataset = xr.concat(
        parts, dim="frame", data_vars="all", coords="different", compat="equals", join="exact"
    )
    lengths = [len(r) for r in runs]
    for coordinate, key in params.items():
        values = np.repeat(_param_column([e.params[key] for e in entries]), lengths)
        dataset = dataset.assign_coords({coordinate: ("frame", values)})
    dataset.attrs["campaign"] = campaign
    return dataset


def _dataset(entry: RunEntry, run: Run, names: list[str], columns: dict[str, str]) -> Any:
    """The frames of `run` (of `entry`) as a Dataset: its fields `names`, each the variable
    `columns` names, with the coordinates ``run``, ``step``, ``time`` (and ``system``)."""
    import xarray as xr

    data = {columns[run._nodes[n]]: (run[n].dims, run[n][:]) for n in names}
    coords: dict[str, tuple[str, Any]] = {
        "run": ("frame", np.full(len(run), entry.run_id, dtype=object)),
        "step": ("frame", run.steps),
        "time": ("frame", run.times),
    }
    if run.per_system:
        coords["system"] = ("frame", run.systems)
    return xr.Dataset(data, coords=coords)


def field_list(fields: str | Iterable[str] | None) -> list[str] | None:
    """`fields` (one name, names, or None for all) as a list of names."""
    if fields is None:
        return None
    if isinstance(fields, str):
        return [fields]
    if not isinstance(fields, Iterable):
        raise ConfigError(
            f"`fields` must be field names (an iterable of str) or None; got {show(fields)}."
        )
    return list(fields)


def column_names(runs: Iterable[Run], reserved: Collection[str]) -> dict[str, str]:
    """The node name of every field of `runs` -> its name beside the campaign's columns
    `reserved` (`unreserved_names`): the same in every run, whichever fields are selected."""
    return unreserved_names(
        sorted({node for run in runs for node in run._nodes.values()}), reserved
    )


def _param_column(values: list[Any]) -> np.ndarray:
    """One scalar parameter of each run, typed as pandas types a column of them: bool, int64,
    float64 (ints beside floats become floats) or str when all are of that kind, else object, each
    value kept as it is (``True`` beside ``1``; ``1`` beside ``"a"``)."""
    kinds = {type(v) for v in values}
    dtype: Any = object
    if kinds == {bool}:
        dtype = bool
    elif kinds == {str}:
        dtype = str
    elif kinds == {int}:
        dtype = np.int64
    elif kinds <= {int, float}:
        dtype = np.float64
    try:
        return np.array(values, dtype=dtype)
    except OverflowError:  # an int beyond int64 stays a Python int
        return np.array(values, dtype=object)


def _ragged(run: Run) -> set[str]:
    return set(run.ragged["fields"]) if run.ragged else set()


def _check_agree(entries: list[RunEntry], runs: list[Run], names: list[str]) -> None:
    first: dict[str, tuple[str, Any]] = {}
    problems = _per_system_problems(entries, runs)
    for entry, run in zip(entries, runs):
        for name in names:
            if name not in run.fields:
                problems.append(f"run '{entry.run_id}' has no field '{name}'")
                continue
            if name in _ragged(run):
                raise ConfigError(
                    f"Field '{name}' of run '{entry.run_id}' is ragged; to_xarray across runs "
                    "takes only fields of a fixed shape."
                )
            view = run[name]
            got = (view.shape[1:], view.dtype.name, view.dims)
            want = first.setdefault(name, (entry.run_id, got))
            if got != want[1]:
                problems.append(
                    f"field '{name}' is {_describe(got)} in run '{entry.run_id}' but "
                    f"{_describe(want[1])} in run '{want[0]}'"
                )
    if problems:
        raise SchemaMismatchError(
            "The selected runs' schemas do not agree: "
            + "; ".join(problems)
            + ". Select runs of one schema (status=, params=, where=) or fewer fields."
        )


def _per_system_problems(entries: list[RunEntry], runs: list[Run]) -> list[str]:
    """The runs recorded per system (their frames are rows of one system) beside runs that are
    not, as a problem for `_check_agree` (none when all are alike)."""
    per_system = [e.run_id for e, r in zip(entries, runs) if r.per_system]
    other = [e.run_id for e, r in zip(entries, runs) if not r.per_system]
    if not (per_system and other):
        return []
    return [f"runs {per_system} record a row per system and frame, but runs {other} do not"]


def _describe(spec: tuple[Any, ...]) -> str:
    shape, dtype, dims = spec
    return f"{dtype}{list(shape)} with axes {list(dims)}"


def _shared_scalar_params(entries: list[RunEntry]) -> list[str]:
    keys = set.intersection(*(set(e.params) for e in entries))
    scalar = (bool, int, float, str)
    return sorted(k for k in keys if all(isinstance(e.params[k], scalar) for e in entries))
