"""Plots and movies of a recorded run (matplotlib, imported only when a function is called).

`plot` draws scalar series (one line per frame entry or per system) of a run, or of the CSV log
a `CsvSink` writes, against step or time, and returns the figure; `movie` renders a 2-d field
frame by frame into a GIF or MP4, reading the frames in blocks so that a long run never has to
fit in memory. Both take a run from `jaxsinks.open` or a store (a path, URL or kvstore spec; a
``.csv`` path for a log) and are what ``jaxsinks plot`` and ``jaxsinks movie`` call. Figures are
drawn on matplotlib's Agg canvas, without pyplot, so nothing is displayed and no global figure
state is touched.
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import shutil
from collections.abc import Iterator, Sequence
from typing import Any, cast

import numpy as np

from .._core.errors import ConfigError
from .._read.reader import FieldView, Run
from .sources import CsvLog, _as_run, describe_source, load, sentence, source_name

#: Frames read from the store at a time, by default (a movie never holds more than this).
READ_BLOCK = 64
MOVIE_SUFFIXES = (".gif", ".mp4")
#: The slowest and fastest frame rates a movie is made at (a GIF holds a frame at most 655 s).
MIN_FPS, MAX_FPS = 0.01, 1000.0


def plottable_fields(data: Run | CsvLog) -> list[str]:
    """The fields `plot` draws when none are named: those whose frames are real scalars or 1-d
    (in a per-system run, scalars)."""
    if isinstance(data, CsvLog):
        return list(data.fields)
    ragged = set((data.ragged or {}).get("fields", ()))
    most = 0 if data.per_system else 1
    names = [
        name
        for name in data.fields
        if name not in ragged
        and len(data[name].shape) - 1 <= most
        and not np.issubdtype(data[name].dtype, np.complexfloating)
    ]
    if not names:
        raise ConfigError(
            f"{sentence(describe_source(data))} has no field of scalar or 1-d frames to plot; "
            f"its fields are {list(data.fields)}. Use `movie` for 2-d fields."
        )
    return names


def _series(
    data: Run | CsvLog, field: str, x: str, systems: Sequence[int] | None
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if isinstance(data, Run):
        return series(data, field, x, systems)
    return csv_series(data, field, x, systems)


def csv_series(
    log: CsvLog, field: str, x: str = "step", systems: Sequence[int] | None = None
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The lines `plot` draws for `field` of a CSV log, as `series` does for a run."""
    columns = log.field_columns(field)
    xs = _x_values(log, x)
    if log.per_system:
        if len(columns) != 1:
            raise ConfigError(
                f"`plot` draws fields of scalar frames in a per-system log; '{field}' has the "
                f"columns {columns}. Plot one of them by its column name."
            )
        ids = log.column("system").astype(np.int64)
        values = log.column(columns[0])
        wanted = _check_systems(systems, np.unique(ids).tolist(), field, "systems")
        return [(f"system {s}", xs[ids == s], values[ids == s]) for s in wanted]
    if len(columns) == 1:
        if systems is not None:
            raise ConfigError(
                f"`systems` selects entries of 1-d frames, but '{field}' has scalar frames; leave "
                "`systems` out."
            )
        return [(columns[0], xs, log.column(columns[0]))]
    wanted = _check_systems(systems, list(range(len(columns))), field, "entries")
    return [(columns[k], xs, log.column(columns[k])) for k in wanted]


# ------------------------------------------------------------------------------ series (plot)


def series(
    run: Run, field: str, x: str = "step", systems: Sequence[int] | None = None
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The lines `plot_series` draws for `field`: ``(label, x values, y values)`` each.

    A field of scalar frames is one line (in a per-system run, one line per system); a field of
    1-d frames, e.g. per-system energies of shape ``(B,)``, is one line per entry. `systems`
    selects entries (or systems) by index.
    """
    xs = _x_values(run, x)
    view = fixed_view(run, field, "plot")
    frame_shape = view.shape[1:]
    values = np.asarray(view[:], dtype=np.float64)
    if run.per_system:
        if frame_shape:
            raise ConfigError(
                f"`plot` draws fields of scalar frames in a per-system run; '{field}' has frames "
                f"of shape {tuple(frame_shape)}. Plot a scalar field, or read it with "
                "jaxsinks.open."
            )
        ids = run.systems
        assert ids is not None  # a per-system run has systems
        wanted = _check_systems(systems, np.unique(ids).tolist(), field, "systems")
        return [(f"system {s}", xs[ids == s], values[ids == s]) for s in wanted]
    if len(frame_shape) == 0:
        if systems is not None:
            raise ConfigError(
                f"`systems` selects entries of 1-d frames, but '{field}' has scalar frames; leave "
                "`systems` out."
            )
        return [(field, xs, values)]
    if len(frame_shape) == 1:
        wanted = _check_systems(systems, list(range(frame_shape[0])), field, "entries")
        return [(f"{field}[{k}]", xs, values[:, k]) for k in wanted]
    raise ConfigError(
        f"`plot` draws fields whose frames are scalars or 1-d (one line per entry); '{field}' has "
        f"frames of shape {tuple(frame_shape)}. Use `jaxsinks movie` for a 2-d field."
    )


def plot(
    source: Any,
    fields: str | Sequence[str] | None = None,
    *,
    x: str = "step",
    systems: Sequence[int] | None = None,
    log: Sequence[str] = (),
    out: Any = None,
    title: str | None = None,
) -> Any:
    """`jaxsinks.plot` (documented there): draw the series, return the figure."""
    data = load(source)
    fields = plottable_fields(data) if fields is None else fields
    fields = [fields] if isinstance(fields, str) else list(fields)
    if not fields:
        raise ConfigError("`plot` needs at least one field in `fields`; got none.")
    unknown = sorted(set(log) - set(fields))
    if unknown:
        raise ConfigError(
            f"`log` names {unknown}, which are not among the plotted fields {fields}."
        )
    if len(data) == 0:
        raise ConfigError(f"{sentence(describe_source(data))} has no frames to plot.")
    path = None if out is None else _output_path(out, (".png",), "out")
    lines = {field: _series(data, field, x, systems) for field in fields}

    figure, canvas = _figure(7.0, 1.0 + 2.6 * len(fields))
    axes = figure.subplots(len(fields), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (field, field_lines) in zip(axes, lines.items()):
        marker = "." if data.per_system else None
        for label, xs, ys in field_lines:
            ax.plot(xs, ys, marker=marker, label=label, linewidth=1.0)
        ax.set_ylabel(field)
        if field in log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if 1 < len(field_lines) <= 12:
            ax.legend(fontsize="small", loc="best")
    axes[-1].set_xlabel(x)
    axes[0].set_title(source_name(data) if title is None else title)
    figure.tight_layout()
    if path is not None:
        canvas.print_png(str(path))
    return figure


def plot_series(
    run: Any,
    fields: str | Sequence[str],
    x: str = "step",
    systems: Sequence[int] | None = None,
    out: Any = None,
    log: Sequence[str] = (),
) -> pathlib.Path:
    """`plot` into a PNG (by default ``<field>.png`` in the current directory); returns its
    path."""
    names = [fields] if isinstance(fields, str) else list(fields)
    path = pathlib.Path(out) if out is not None else default_plot_path(names)
    plot(run, names, x=x, systems=systems, log=log, out=path)
    return path


def default_plot_path(fields: Sequence[str]) -> pathlib.Path:
    """``<field>.png`` (fields joined by ``_``) in the current directory."""
    return pathlib.Path("_".join(f.replace("/", "_") for f in fields) + ".png")


def fixed_view(run: Run, field: str, command: str) -> FieldView:
    """``run[field]`` (a KeyError naming the fields if it is missing), if its frames have a fixed
    shape and real values."""
    view = run[field]
    if not isinstance(view, FieldView):
        raise ConfigError(
            f"`{command}` needs a field whose frames all have one shape; '{field}' is ragged "
            "(systems of different sizes). Read it with jaxsinks.open(store)[field][i]."
        )
    if np.issubdtype(view.dtype, np.complexfloating):  # drawing it would drop the imaginary part
        raise ConfigError(
            f"`{command}` draws real values; '{field}' is {view.dtype}. Read it with "
            f"jaxsinks.open(store)['{field}'] and draw np.abs, .real or .imag of it, or record "
            "that real quantity as a field of its own."
        )
    return view


def _x_values(source: Run | CsvLog, x: str) -> np.ndarray:
    if x == "step":
        return source.steps
    if x != "time":
        raise ConfigError(f"`x` must be 'step' or 'time'; got {x!r}.")
    times = source.times
    if times.size and np.all(np.isnan(times)):
        raise ConfigError(
            f"`x='time'` plots against the simulation time, but {describe_source(source)} has no "
            "times: it was recorded without `time=` (every time is NaN). Plot against the step "
            "instead (x='step'; --x step on the command line), or pass `time=` to record."
        )
    return times


def _check_systems(
    systems: Sequence[int] | None, available: list[int], field: str, what: str
) -> list[int]:
    """The entries (or systems) of `field` to draw: `systems`, each one of `available`; all of
    them if `systems` is None."""
    if systems is None:
        return available
    wanted = [int(s) for s in systems]
    if not wanted:
        raise ConfigError("`systems` is empty; pass at least one index, or leave it out for all.")
    bad = [s for s in wanted if s not in set(available)]
    if bad:
        if available == list(range(len(available))):
            there = f"0..{len(available) - 1}"
        else:
            there = ", ".join(map(str, available[:20])) + (", ..." if len(available) > 20 else "")
        raise ConfigError(
            f"`systems` has indices {bad} outside the {len(available)} {what} of '{field}' "
            f"({there}); choose among those, or leave `systems` out for all."
        )
    return wanted


# ---------------------------------------------------------------------------------- movie


def movie(
    source: Any,
    field: str,
    out: Any = None,
    *,
    fps: float = 10,
    vmin: float | None = None,
    vmax: float | None = None,
    every: int = 1,
    cmap: str = "viridis",
    index: int | None = None,
    t_start: float | None = None,
    t_end: float | None = None,
) -> pathlib.Path:
    """`jaxsinks.movie` (documented there): render the frames, return the path."""
    from matplotlib import animation, colormaps, rc_context

    out = _output_path(out if out is not None else default_movie_path(field), MOVIE_SUFFIXES, "out")
    if not MIN_FPS <= fps <= MAX_FPS:
        raise ConfigError(
            f"`fps` must be between {MIN_FPS:g} (a frame every {1 / MIN_FPS:g} s) and {MAX_FPS:g}; "
            f"got {fps!r}."
        )
    for name, value in (("vmin", vmin), ("vmax", vmax)):
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"`{name}` must be a finite number; got {value!r}.")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"`every` must be a positive int (show every k-th frame); got {every!r}.")
    if cmap not in colormaps:
        raise ConfigError(
            f"`cmap` {cmap!r} is not a matplotlib colormap; try 'viridis', 'magma' or 'RdBu'."
        )
    if out.suffix.lower() == ".mp4" and shutil.which("ffmpeg") is None:
        raise ConfigError(
            f"Writing {out.name} needs ffmpeg on PATH, which was not found. Install ffmpeg, or "
            "write a GIF instead (an output ending in .gif)."
        )
    run = _as_run(source, "movie")
    selected = movie_frames(run, every=every, t_start=t_start, t_end=t_end)
    view = fixed_view(selected, field, "movie")
    select = frame_selector(field, view.shape[1:], index)
    if len(view) == 0:
        raise ConfigError(f"The run at {run.location} has no frames to make a movie of.")
    image_shape = tuple(view.shape[1 + len(select) :])
    if 0 in image_shape:
        raise ConfigError(
            f"'{field}' has images of shape {image_shape}, which hold no values: there is nothing "
            "to show. Make a movie of a field with non-empty 2-d frames."
        )
    if vmin is None or vmax is None:
        lo, hi = value_range(view, select)
        if vmin is not None and vmin > hi or vmax is not None and vmax < lo:
            raise ConfigError(
                f"The color range [{vmin}, {vmax}] given is outside the frames' values "
                f"[{lo:.6g}, {hi:.6g}]; pass both --vmin and --vmax, or neither."
            )
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    if vmin > vmax:
        raise ConfigError(f"`vmin` ({vmin}) must not be above `vmax` ({vmax}).")

    steps, times = selected.steps, selected.times
    first = np.asarray(view[(0, *select)], dtype=np.float32)
    figure, image, title = movie_figure(
        first,
        view.dims[-2:],
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        title=frame_title(field, steps[0], times[0]),
    )
    writer = (
        # matplotlib's stubs say int; the writers take any positive fps
        animation.PillowWriter(fps=cast(int, fps))
        if out.suffix.lower() == ".gif"
        else animation.FFMpegWriter(fps=cast(int, fps))
    )
    # Written beside `out` and renamed over it once complete: an error part-way (a damaged
    # chunk) leaves `out` as it was.
    partial = out.with_name(f".{out.stem}.partial-{os.getpid()}{out.suffix}")
    try:
        with rc_context({"savefig.bbox": None}):  # as writer.saving(), which finishes on errors
            writer.setup(figure, str(partial), dpi=100)
            try:
                k = 0
                for block in blocks(view, select):
                    for frame in block:
                        image.set_data(frame)
                        title.set_text(frame_title(field, steps[k], times[k]))
                        writer.grab_frame()
                        k += 1
            except BaseException:
                with contextlib.suppress(Exception):  # ends ffmpeg; the error is the one above
                    writer.finish()
                raise
            writer.finish()
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def movie_frames(
    run: Run, *, every: int = 1, t_start: float | None = None, t_end: float | None = None
) -> Run:
    """The frames `movie` shows: those in ``[t_start, t_end]``, then every `every`-th."""
    if t_start is not None or t_end is not None:
        in_range = run.extract_time_range(t_start, t_end)
        if len(in_range) == 0:
            raise ConfigError(
                f"The run at {run.location} has no frames with {_range_text(t_start, t_end)}; "
                f"{_time_span(run)}. Choose a time range inside it."
            )
        run = in_range
    return run[::every]


def movie_figure(
    first: np.ndarray,
    dims: Sequence[str],
    *,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    title: str = "",
) -> tuple[Any, Any, Any]:
    """The figure of a movie, showing `first`: ``(figure, image, title)``; the x axis is the
    image's last axis (``dims[-1]``), the y axis its first (``dims[-2]``), origin at the bottom."""
    figure, _ = _figure(5.0, 4.2)
    ax = figure.subplots()
    image = ax.imshow(
        first, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest"
    )
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(dims[-1])
    ax.set_ylabel(dims[-2])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # ticks at whole indices
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    rows, cols = first.shape
    figure.colorbar(image, ax=ax, fraction=0.046 * min(1.0, rows / cols), pad=0.04)
    return figure, image, ax.set_title(title)


def default_movie_path(field: str) -> pathlib.Path:
    """``<field>.gif`` in the current directory."""
    return pathlib.Path(field.replace("/", "_") + ".gif")


def _range_text(t_start: float | None, t_end: float | None) -> str:
    if t_start is not None and t_end is not None:
        return f"{t_start} <= time <= {t_end}"
    return f"time >= {t_start}" if t_start is not None else f"time <= {t_end}"


def _time_span(run: Run) -> str:
    times = run.times
    finite = times[np.isfinite(times)]
    if finite.size == 0:
        return "it has no times (it was recorded without `time=`), so select frames by step"
    return f"its times span [{float(finite.min()):.6g}, {float(finite.max()):.6g}]"


def frame_selector(field: str, frame_shape: Sequence[int], index: int | None) -> tuple[Any, ...]:
    """The index into one frame of `field` that gives the 2-d image a movie shows."""
    shape = tuple(frame_shape)
    if len(shape) == 2:
        if index is not None:
            raise ConfigError(
                f"`index` selects from 3-d frames, but '{field}' has 2-d frames {shape}; leave it "
                "out."
            )
        return ()
    if len(shape) == 3:
        if index is None and shape[0] == 1:
            return (0,)
        if index is None:
            raise ConfigError(
                f"'{field}' has 3-d frames of shape {shape}; pass `index` (--index I, "
                f"0..{shape[0] - 1}) to pick one entry of the leading axis."
            )
        if not -shape[0] <= index < shape[0]:
            raise ConfigError(
                f"`index` {index} is outside the leading axis of '{field}' (size {shape[0]}); "
                f"pass 0..{shape[0] - 1}."
            )
        return (index,)
    raise ConfigError(
        f"A movie needs a field whose frames are 2-d (or 3-d with a leading axis to pick from with "
        f"--index); '{field}' has frames of shape {shape}. Use `jaxsinks plot` for scalar series."
    )


def blocks(
    view: FieldView, select: tuple[Any, ...], size: int = READ_BLOCK
) -> Iterator[np.ndarray]:
    """The frames of `view` (each indexed by `select`) as float arrays, `size` frames at a time."""
    for start in range(0, len(view), size):
        yield np.asarray(view[(slice(start, start + size), *select)], dtype=np.float32)


def value_range(view: FieldView, select: tuple[Any, ...] = ()) -> tuple[float, float]:
    """The finite minimum and maximum of `view`, read block by block; ``(0, 1)`` if none is
    finite."""
    lo, hi = np.inf, -np.inf
    for block in blocks(view, select):
        finite = block[np.isfinite(block)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return (lo, hi) if lo <= hi else (0.0, 1.0)


def frame_title(field: str, step: Any, time: Any) -> str:
    """A movie frame's title: the field, its step and its time (left out when there is none)."""
    if math.isnan(float(time)):
        return f"{field}   step {int(step)}"
    return f"{field}   step {int(step)}   t = {float(time):.6g}"


# ------------------------------------------------------------------------------- helpers


def _figure(width: float, height: float) -> tuple[Any, Any]:
    """A matplotlib figure on its own Agg canvas (no pyplot, no display, nothing to close)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    return figure, FigureCanvasAgg(figure)


def _output_path(out: Any, suffixes: Sequence[str], name: str) -> pathlib.Path:
    """`out` as a path with one of `suffixes`, in a directory that exists; else a ConfigError."""
    path = pathlib.Path(out)
    if path.is_dir():
        raise ConfigError(
            f"`{name}` '{path}' is a directory; give a file name ending in {suffixes[0]}."
        )
    if path.suffix.lower() not in suffixes:
        raise ConfigError(f"`{name}` must end in {' or '.join(suffixes)}; got '{path}'.")
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(
            f"Cannot write '{path}': its directory '{parent}' does not exist. Create it first or "
            "choose another output path."
        )
    return path
