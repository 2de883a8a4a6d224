"""A campaign's runs read as one table: every frame as a dict (`frames`), or one
`xarray.Dataset` (`to_xarray`), with the run id and the parameters beside each frame's fields."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .._core.errors import ConfigError, FieldNotFoundError, SchemaMismatchError
from .._core.frame import stored_name
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
    columns = [
        _columns(entry, run, run.fields if names is None else names, ("run",))
        for entry, run in opened
    ]
    return _frames(opened, names, columns)


def _frames(
    opened: list[tuple[RunEntry, Run]], names: list[str] | None, columns: list[dict[str, str]]
) -> Iterator[dict[str, Any]]:
    for (entry, run), renamed in zip(opened, columns):
        for frame in run.iter_frames(names):
            out = {renamed.get(k, k): v for k, v in frame.items()}
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
    params = _shared_scalar_params(entries)
    reserved = ("run", *(f"param_{key}" for key in params))
    parts = []
    for entry, run in zip(entries, runs):
        # a field named like a coordinate (`time`, `run`, `param_T`) is `time_`, `run_`, ...
        nodes = _columns(entry, run, names, reserved)
        data = {nodes[run._nodes[name]]: (run[name].dims, run[name][:]) for name in names}
        coords = {
            "run": ("frame", np.full(len(run), entry.run_id, dtype=object)),
            "step": ("frame", run.steps),
            "time": ("frame", run.times),
        }
        parts.append(xr.Dataset(data, coords=coords))
    dataset = xr.concat(
        parts, dim="frame", data_vars="all", coords="different", compat="equals", join="exact"
    )
    lengths = [len(r) for r in runs]
    for key in params:
        values = np.repeat(_param_column([e.params[key] for e in entries]), lengths)
        dataset = dataset.assign_coords({f"param_{key}": ("frame", values)})
    dataset.attrs["campaign"] = campaign
    return dataset


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


def _columns(
    entry: RunEntry, run: Run, names: Iterable[str], reserved: tuple[str, ...]
) -> dict[str, str]:
    """The node name of each field of `names` in `run` (``time_`` for a field ``time``) -> its
    name beside the campaign's columns `reserved` (`stored_name`: ``run`` -> ``run_``); a
    ConfigError if two fields get one name."""
    nodes = run._nodes
    out: dict[str, str] = {}
    owner: dict[str, str] = {}
    for name in names:
        column = out[nodes[name]] = stored_name(nodes[name], reserved)
        other = owner.setdefault(column, name)
        if other != name:
            raise ConfigError(
                f"Fields '{other}' and '{name}' of run '{entry.run_id}' would both be '{column}': "
                f"a field whose first name part is one of {list(reserved)} (the campaign's run "
                "id and parameter columns) gets a trailing '_'. Select one of them with `fields`."
            )
    return out


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
    problems = []
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


def _describe(spec: tuple[Any, ...]) -> str:
    shape, dtype, dims = spec
    return f"{dtype}{list(shape)} with axes {list(dims)}"


def _shared_scalar_params(entries: list[RunEntry]) -> list[str]:
    keys = set.intersection(*(set(e.params) for e in entries))
    scalar = (bool, int, float, str)
    return sorted(k for k in keys if all(isinstance(e.params[k], scalar) for e in entries))
