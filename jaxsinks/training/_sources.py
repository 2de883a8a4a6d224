"""What a training export takes: the runs a source names, and the fields and storage dtypes to
export, checked to agree across runs before anything is written."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._core.errors import ConfigError, FieldNotFoundError, SchemaMismatchError
from .._io.codecs import drops_fractions, is_float
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
        stores.extend(campaign_root(e) for e in items)
        out = [Source(e.run_id, e.open(), e.params) for e in items]
    else:
        raise ConfigError(
            "`source` must be a Campaign, a list of RunEntry, a dict of sample id -> Run, or a "
            f"Run; got {type(source).__name__}."
        )
    check_unique([s.sample_id for s in out])
    stores.extend(s.run.location for s in out)
    out = [s for s in out if len(s.run)]
    if not out:
        raise ConfigError("`source` selects no frames to export (no runs, or only empty ones).")
    return out, stores


def campaign_root(entry: RunEntry) -> Location:
    """The root of the campaign that holds `entry`: its run is stored at ``<root>/runs/<run_id>/``
    (`Campaign`'s layout), so a list of entries reads that campaign as a whole does."""
    spec = dict(entry.store)
    path = str(spec.get("path", ""))
    suffix = f"runs/{entry.run_id}/"
    spec["path"] = path[: -len(suffix)] if path.endswith(suffix) else path
    return Location(spec)


def check_unique(sample_ids: list[str]) -> None:
    """A ConfigError naming the ids that occur more than once in `sample_ids`: the frames of two
    runs of one id would be labelled alike, and a points export writes one group per id."""
    counts = collections.Counter(sample_ids)
    repeated = sorted(i for i, k in counts.items() if k > 1)
    if repeated:
        raise ConfigError(
            f"`source` names the sample ids {repeated} more than once (it selects "
            f"{len(sample_ids)} runs, of {len(counts)} distinct ids); an export labels each frame "
            "by its run's id, so each must be one run. Select each run once; to export runs of "
            "two campaigns that share run ids, pass a dict of distinct ids to runs, e.g. "
            "{'a-' + e.run_id: e.open() for e in ca.runs()} | {'b-' + e.run_id: e.open() for e "
            "in cb.runs()}."
        )


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
        names = field_names(fields)
    if not names:
        raise ConfigError(
            f"There is no field to export by {by!r}; the runs' fields are {list(first.fields)}."
        )
    check_present(sources, names, fields)
    problems = []
    for s in sources:
        run = s.run
        for n in names:
            if run.ragged and n in run.ragged["fields"]:
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


def field_names(fields: Any) -> list[str]:
    """`fields` (a field name or an iterable of them) as a list, or a ConfigError."""
    names = [fields] if isinstance(fields, str) else fields
    if isinstance(names, Iterable) and not isinstance(names, (bytes, Mapping)):
        names = list(names)
        if all(isinstance(n, str) for n in names):
            return names
    raise ConfigError(
        f"`fields` must be a field name or a list of field names (str); got "
        f"{type(fields).__name__} {fields!r}. Pass e.g. fields=['x'], or None for the default."
    )


def check_present(sources: list[Source], names: list[str], fields: Any) -> None:
    """A FieldNotFoundError naming every run that lacks one of `names` (`fields`, or the default
    if it is None), and its fields."""
    lacking = [
        f"run '{s.sample_id}' has no fields {missing} (its fields are {list(s.run.fields)})"
        for s in sources
        if (missing := [n for n in names if n not in s.run.fields])
    ]
    if lacking:
        more = len(lacking) - 5
        shown = lacking[:5] + ([f"and {more} more runs"] if more > 0 else [])
        raise FieldNotFoundError(
            (
                f"`fields` is None, so the first run's fields {names} are exported"
                if fields is None
                else f"`fields` is {names}"
            )
            + ", but "
            + "; ".join(shown)
            + ". Pass fields every selected run has, or select runs that have them."
        )


def storage_targets(run: Run, names: list[str], dtype: Any) -> dict[str, np.dtype]:
    """The dtype each of `names` is stored as, given `dtype` (one dtype, a dict, or None)."""

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
            if is_float(out[n]):  # bfloat16 too, which numpy alone does not take for floating
                out[n] = check_lossless(n, out[n], target, "dtype")
    return out


def parse_dtype(value: Any, where: str) -> np.dtype:
    """`value` as a numeric numpy dtype (bool, integer, floating, bfloat16 and float8 included,
    or complex), else a ConfigError naming the argument `where`."""
    try:
        parsed = np.dtype(value)
    except (TypeError, ValueError):  # numpy raises either, depending on the name
        raise ConfigError(
            f"`{where}` is {value!r}, which is not a dtype. Pass a numeric dtype, e.g. 'float16'."
        ) from None
    if parsed.kind in "biufc" or is_float(parsed):
        return parsed
    raise ConfigError(
        f"`{where}` is {parsed.name}, which is not a numeric dtype: an export stores fields as "
        "bool, integers, floats or complex numbers. Pass one of those, e.g. 'float16'."
    )


def check_lossless(name: str, source: np.dtype, target: np.dtype, where: str) -> np.dtype:
    """`target` if storing field `name` (recorded as `source`) as it keeps its values (those in
    its range: others raise `OutOfRangeError` at export), else a ConfigError naming `where`.

    Refused, as a run's `FieldConfig` refuses them (`_check_storage_dtype`): complex to real,
    anything but bool to bool, and floating to integer (`drops_fractions`), which would drop
    every fractional part.
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
    if drops_fractions(source, target):
        raise ConfigError(
            f"`{where}` is {target.name}, but field '{name}' is {source.name}: storing it as "
            f"{target.name} would silently drop every fractional part. {remedy}"
        )
    return target
