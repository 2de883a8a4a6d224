"""What a training export takes: the runs a source names, and the fields and storage dtypes to
export, checked to agree across runs before anything is written."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._core.errors import ConfigError, SchemaMismatchError
from .._io.layout import _check_storage_dtype
from .._io.location import Location
from .._read.reader import Run
from ..campaign._campaign import Campaign
from ..campaign._entry import RunEntry, check_run_id


@dataclasses.dataclass(frozen=True)
class Source:
    """One run to export, with its sample id and parameters."""

    sample_id: str
    run: Run
    params: dict[str, Any]


def select_sources(source: Any) -> tuple[list[Source], list[Location]]:
    """The runs `source` names (see `export_training`) that hold frames, or a ConfigError; and
    every store `source` reads (a campaign's root, each run's, empty runs' too), which the export
    must not overlap."""
    stores = []
    if isinstance(source, Campaign):
        stores.append(source.location)
        source = source.runs(status="closed")
    if isinstance(source, Run):
        out = [Source("run", source, {})]
    elif isinstance(source, Mapping):
        out = [Source(check_run_id(k), v, {}) for k, v in source.items()]
        bad = [s.sample_id for s in out if not isinstance(s.run, Run)]
        if bad:
            raise ConfigError(
                f"`source` maps sample ids to jaxsinks.Run objects; {bad} are not runs."
            )
    elif isinstance(source, Iterable) and not isinstance(source, (str, bytes)):
        items = list(source)
        bad = [type(e).__name__ for e in items if not isinstance(e, RunEntry)]
        if bad:
            raise ConfigError(
                f"`source` as a list must hold RunEntry objects (from campaign.runs()); got {bad}."
            )
        out = [Source(e.run_id, e.open(), e.params) for e in items]
    else:
        raise ConfigError(
            "`source` must be a Campaign, a list of RunEntry, a dict of sample id -> Run, or a "
            f"Run; got {type(source).__name__}."
        )
    stores.extend(s.run.location for s in out)
    out = [s for s in out if len(s.run)]
    if not out:
        raise ConfigError("`source` selects no frames to export (no runs, or only empty ones).")
    return out, stores


def export_fields(sources: list[Source], by: str, fields: Iterable[str] | None) -> list[str]:
    """The fields to export (`fields`, or the default for `by`), checked to agree across runs."""
    first = sources[0].run
    ragged = set(first.ragged["fields"]) if first.ragged else set()
    if fields is None:
        names = [n for n in first.fields if n not in ragged]
        if by == "points":
            names = [n for n in names if len(first[n].shape) > 1]
            lengths = {first[n].shape[1] for n in names}
            if len(lengths) > 1:
                raise ConfigError(
                    "by='points' needs fields sharing one point axis; the run's fields have point "
                    f"axes of lengths {sorted(lengths)}. Name the point-cloud fields with `fields`."
                )
    else:
        names = [fields] if isinstance(fields, str) else list(fields)
    if not names:
        raise ConfigError(
            f"There is no field to export by {by!r}; the runs' fields are {list(first.fields)}."
        )
    problems = []
    for s in sources:
        run = s.run
        for n in names:
            if n not in run.fields:
                problems.append(f"run '{s.sample_id}' has no field '{n}'")
            elif run.ragged and n in run.ragged["fields"]:
                raise ConfigError(
                    f"Field '{n}' is ragged; export_training takes fields of a fixed shape."
                )
            elif by == "points" and len(run[n].shape) < 2:
                raise ConfigError(
                    f"by='points' needs fields with a point axis; '{n}' has frames of shape "
                    f"{list(run[n].shape[1:])}."
                )
            else:
                shape = run[n].shape[1:] if by == "frames" else run[n].shape[2:]
                want = first[n].shape[1:] if by == "frames" else first[n].shape[2:]
                if (shape, run[n].dtype) != (want, first[n].dtype):
                    problems.append(
                        f"'{n}' is {run[n].dtype.name}{list(run[n].shape[1:])} in run "
                        f"'{s.sample_id}' but {first[n].dtype.name}{list(first[n].shape[1:])} in "
                        f"'{sources[0].sample_id}'"
                    )
        if by == "points" and not problems:
            lengths = {run[n].shape[1] for n in names}
            if len(lengths) > 1:
                problems.append(f"run '{s.sample_id}' has point axes of lengths {sorted(lengths)}")
    if problems:
        raise SchemaMismatchError("Cannot export these runs together: " + "; ".join(problems) + ".")
    return names


def storage_targets(run: Run, names: list[str], dtype: Any) -> dict[str, np.dtype]:
    """The dtype each of `names` is stored as, given `dtype` (one dtype, a dict, or None)."""

    def parse_dtype(value: Any, where: str) -> np.dtype:
        try:
            return np.dtype(value)
        except TypeError:
            raise ConfigError(f"`{where}` is {value!r}, which is not a dtype.") from None

    out = {n: run[n].dtype for n in names}
    if isinstance(dtype, Mapping):
        unknown = sorted(set(dtype) - set(names))
        if unknown:
            raise ConfigError(
                f"`dtype` names fields that are not exported: {unknown}; exported: {names}."
            )
        for n, d in dtype.items():
            out[n] = check_lossless(n, out[n], parse_dtype(d, f"dtype[{n!r}]"), f"dtype[{n!r}]")
    elif dtype is not None:
        target = parse_dtype(dtype, "dtype")
        for n in names:
            if np.issubdtype(out[n], np.floating):
                out[n] = check_lossless(n, out[n], target, "dtype")
    return out


def check_lossless(name: str, source: np.dtype, target: np.dtype, where: str) -> np.dtype:
    """`target` if storing field `name` (recorded as `source`) as it keeps its values (those in
    its range: others raise `OutOfRangeError` at export), else a ConfigError naming `where`.

    Refused, as a run's `FieldConfig` refuses them (`_check_storage_dtype`): complex to real,
    anything but bool to bool; and, beyond it, floating to integer, which would drop every
    fractional part (a training set is read as the values recorded).
    """
    kind = (
        "a complex"
        if jnp.issubdtype(source, jnp.complexfloating)
        else "a floating"
        if jnp.issubdtype(source, jnp.inexact)
        else "an integer"
    )
    remedy = (
        f"Choose {kind} dtype for it"
        + (
            f", leave '{name}' out of `dtype`,"
            if where != "dtype"
            else f", pass a dict of dtypes by field without '{name}',"
        )
        + " or convert the field when it is recorded."
    )
    try:
        _check_storage_dtype(name, source, target)
    except ConfigError:
        raise ConfigError(
            f"`{where}` is {target.name}, but field '{name}' is {source.name}: storing it as "
            f"{target.name} would silently drop information. {remedy}"
        ) from None
    if jnp.issubdtype(source, jnp.inexact) and not jnp.issubdtype(target, jnp.inexact):
        raise ConfigError(
            f"`{where}` is {target.name}, but field '{name}' is {source.name}: storing it as "
            f"{target.name} would silently drop every fractional part. {remedy}"
        )
    return target
