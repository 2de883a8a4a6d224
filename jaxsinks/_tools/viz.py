"""Plots and movies of a recorded run (matplotlib, imported only when a function is called).

`plot_series` draws scalar series (one line per frame entry or per system) against step or time;
`movie` renders a 2-d field frame by frame into a GIF or MP4, reading the frames in blocks so
that a long run never has to fit in memory. Figures are drawn on matplotlib's Agg canvas, without
pyplot, so nothing is displayed and no global figure state is touched.
"""

from __future__ import annotations

import pathlib
import shutil
from collections.abc import Iterator, Sequence
from typing import Any, cast

import numpy as np

from .._core.errors import ConfigError
from .._read.reader import FieldView, Run

#: Frames read from the store at a time, by default (a movie never holds more than this).
READ_BLOCK = 64
MOVIE_SUFFIXES = (".gif", ".mp4")


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
        wanted = (
            _check_systems(systems, None, field) if systems is not None else np.unique(ids).tolist()
        )
        return [(f"system {s}", xs[ids == s], values[ids == s]) for s in wanted]
    if len(frame_shape) == 0:
        if systems is not None:
            raise ConfigError(
                f"`systems` selects entries of 1-d frames, but '{field}' has scalar frames; leave "
                "`systems` out."
            )
        return [(field, xs, values)]
    if len(frame_shape) == 1:
        wanted = (
            range(frame_shape[0])
            if systems is None
            else _check_systems(systems, frame_shape[0], field)
        )
        return [(f"{field}[{k}]", xs, values[:, k]) for k in wanted]
    raise ConfigError(
        f"`plot` draws fields whose frames are scalars or 1-d (one line per entry); '{field}' has "
        f"frames of shape {tuple(frame_shape)}. Use `jaxsinks movie` for a 2-d field."
    )


def plot_series(
    run: Run,
    fields: str | Sequence[str],
    x: str = "step",
    systems: Sequence[int] | None = None,
    out: Any = None,
    log: Sequence[str] = (),
) -> pathlib.Path:
    """Plot scalar series of `run` against step or time into a PNG; returns its path.

    Args:
        run: a run from `jaxsinks.open` (or a selection of one).
        fields: a field name, or several: one subplot per field, sharing the x axis.
        x: ``"step"`` or ``"time"``.
        systems: indices of the entries of 1-d frames (or the systems of a per-system run) to
            draw; all by default.
        out: the PNG to write; by default ``<field>.png`` in the current directory.
        log: the fields drawn on a logarithmic y axis (e.g. a force norm falling by decades).
    """
    fields = [fields] if isinstance(fields, str) else list(fields)
    unknown = sorted(set(log) - set(fields))
    if unknown:
        raise ConfigError(
            f"`log` names {unknown}, which are not among the plotted fields {fields}."
        )
    if not fields:
        raise ConfigError("`plot_series` needs at least one field in `fields`; got none.")
    if len(run) == 0:
        raise ConfigError(f"The run at {run.location} has no frames to plot.")
    out = _output_path(out if out is not None else default_plot_path(fields), (".png",), "out")
    lines = {field: series(run, field, x, systems) for field in fields}

    figure, canvas = _figure(7.0, 1.0 + 2.6 * len(fields))
    axes = figure.subplots(len(fields), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (field, field_lines) in zip(axes, lines.items()):
        marker = "." if run.per_system else None
        for label, xs, ys in field_lines:
            ax.plot(xs, ys, marker=marker, label=label, linewidth=1.0)
        ax.set_ylabel(field)
        if field in log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if 1 < len(field_lines) <= 12:
            ax.legend(fontsize="small", loc="best")
    axes[-1].set_xlabel(x)
    axes[0].set_title(str(run.location))
    figure.tight_layout()
    canvas.print_png(str(out))
    return out


def default_plot_path(fields: Sequence[str]) -> pathlib.Path:
    """``<field>.png`` (fields joined by ``_``) in the current directory."""
    return pathlib.Path("_".join(f.replace("/", "_") for f in fields) + ".png")


def fixed_view(run: Run, field: str, command: str) -> FieldView:
    """``run[field]`` (a KeyError naming the fields if it is missing), if its frames have a fixed
    shape."""
    view = run[field]
    if not isinstance(view, FieldView):
        raise ConfigError(
            f"`{command}` needs a field whose frames all have one shape; '{field}' is ragged "
            "(systems of different sizes). Read it with jaxsinks.open(store)[field][i]."
        )
    return view


def _x_values(run: Run, x: str) -> np.ndarray:
    if x == "step":
        return run.steps
    if x == "time":
        return run.times
    raise ConfigError(f"`x` must be 'step' or 'time'; got {x!r}.")


def _check_systems(systems: Sequence[int], size: int | None, field: str) -> list[int]:
    wanted = [int(s) for s in systems]
    if not wanted:
        raise ConfigError("`systems` is empty; pass at least one index, or leave it out for all.")
    if size is not None:
        bad = [s for s in wanted if not 0 <= s < size]
        if bad:
            raise ConfigError(
                f"`systems` has indices {bad} outside the {size} entries of '{field}' "
                f"(0..{size - 1})."
            )
    return wanted


# ---------------------------------------------------------------------------------- movie


def movie(
    run: Run,
    field: str,
    out: Any,
    fps: float = 10,
    vmin: float | None = None,
    vmax: float | None = None,
    every: int = 1,
    cmap: str = "viridis",
    index: int | None = None,
) -> pathlib.Path:
    """Render the 2-d `field` of `run` frame by frame into a GIF or MP4; returns its path.

    Args:
        run: a run from `jaxsinks.open` (or a selection of one).
        field: a field whose frames are 2-d, or 3-d with a leading axis that `index` selects
            from (a leading axis of size 1 is selected without it).
        out: a ``.gif`` (written with Pillow) or ``.mp4`` (needs ffmpeg on PATH).
        fps: frames per second.
        vmin, vmax: the color range; by default the minimum and maximum over the frames shown.
        every: show every `every`-th frame.
        cmap: a matplotlib colormap name.
        index: the entry of a 3-d frame's leading axis to show.
    """
    from matplotlib import animation, colormaps

    out = _output_path(out, MOVIE_SUFFIXES, "out")
    if not fps > 0:
        raise ConfigError(f"`fps` must be positive; got {fps!r}.")
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
    selected = run[::every]
    view = fixed_view(selected, field, "movie")
    select = frame_selector(field, view.shape[1:], index)
    if len(view) == 0:
        raise ConfigError(f"The run at {run.location} has no frames to make a movie of.")
    if vmin is None or vmax is None:
        lo, hi = value_range(view, select)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax

    steps, times = selected.steps, selected.times
    figure, _ = _figure(5.0, 4.2)
    ax = figure.subplots()
    first = np.asarray(view[(0, *select)], dtype=np.float32)
    image = ax.imshow(
        first, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest"
    )
    figure.colorbar(image, ax=ax)
    title = ax.set_title(frame_title(field, steps[0], times[0]))
    writer = (
        # matplotlib's stubs say int; the writers take any positive fps
        animation.PillowWriter(fps=cast(int, fps))
        if out.suffix.lower() == ".gif"
        else animation.FFMpegWriter(fps=cast(int, fps))
    )
    with writer.saving(figure, str(out), dpi=100):
        k = 0
        for block in blocks(view, select):
            for frame in block:
                image.set_data(frame)
                title.set_text(frame_title(field, steps[k], times[k]))
                writer.grab_frame()
                k += 1
    return out


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
    """A movie frame's title: the field, its step and its time."""
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
