"""Pictures of a recorded run, as functions of the public API (`jaxsinks.plot`, `jaxsinks.movie`).

The drawing lives in `jaxsinks._tools.viz` (matplotlib), imported only when a picture is made, so
`import jaxsinks` stays free of plotting libraries; the CLI's ``plot`` and ``movie`` call the same
functions.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any


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
    """Plot scalar series of a run or a CSV log against step or time; returns the figure.

    Args:
        source: a run from `jaxsinks.open` (or a selection of one), a store to open (a path, URL
            or kvstore spec), or the path of a CSV log written by a `CsvSink` (ending in .csv).
        fields: a field name, or several: one subplot per field, sharing the x axis. By default
            every field that can be drawn (scalar or 1-d frames). In a CSV log a field is a
            column (``energy``), or the columns of one vector field (``v`` for ``v[0]``,
            ``v[1]``, ...).
        x: ``"step"`` or ``"time"`` (an error if the run has no times).
        systems: indices of the entries of 1-d frames (or the systems of a per-system run) to
            draw; all by default.
        log: the fields drawn on a logarithmic y axis (e.g. a force norm falling by decades).
        out: if given, the PNG to write the figure to.
        title: the figure's title; by default the run's name (the last component of its path).

    Returns:
        The `matplotlib.figure.Figure` (on an Agg canvas; ``figure.savefig`` writes it).
    """
    from .._tools import viz  # matplotlib, only when drawing

    return viz.plot(source, fields, x=x, systems=systems, log=log, out=out, title=title)


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
    """Render the 2-d `field` of a run frame by frame into a GIF or MP4; returns its path.

    The axes are labelled with the field's dimension names (`FieldView.dims`, set with
    ``FieldConfig(dims=...)``), and each frame's title shows its step and time.

    Args:
        source: a run from `jaxsinks.open` (or a selection of one), or a store to open.
        field: a field whose frames are 2-d, or 3-d with a leading axis that `index` selects
            from (a leading axis of size 1 is selected without it).
        out: a ``.gif`` (written with Pillow) or ``.mp4`` (needs ffmpeg on PATH); by default
            ``<field>.gif`` in the current directory.
        fps: frames per second.
        vmin: the bottom of the color range; by default the minimum over the frames shown.
        vmax: the top of the color range; by default the maximum over the frames shown.
        every: show every `every`-th frame (of those in the time range).
        cmap: a matplotlib colormap name.
        index: the entry of a 3-d frame's leading axis to show.
        t_start: show only the frames with ``time >= t_start`` (None: from the first), as
            `Run.extract_time_range`.
        t_end: show only the frames with ``time <= t_end`` (None: to the last).
    """
    from .._tools import viz  # matplotlib, only when drawing

    return viz.movie(
        source,
        field,
        out,
        fps=fps,
        vmin=vmin,
        vmax=vmax,
        every=every,
        cmap=cmap,
        index=index,
        t_start=t_start,
        t_end=t_end,
    )
