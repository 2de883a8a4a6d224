"""The ``jaxsinks`` command line: ``info``, ``plot``, ``movie``, ``bench`` and ``demo``.

Every command returns an exit status; errors the user can fix (a missing store or field, a field
of the wrong shape, an output that cannot be written) print one line on stderr and return 2. When
the reader of the output goes away (``jaxsinks info --json | head -1``), the command stops quietly
with the status of a process ended by SIGPIPE, 141, as other command-line tools do.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import pathlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .. import open as open_run
from .._core.errors import ConfigError, JaxsinksError, StoreError
from .._read.reader import Run
from .bench import (
    DATA_KINDS,
    DEFAULT_CHUNKS,
    DEFAULT_CODECS,
    fields_from_shape,
    fields_like,
    iter_bench,
)
from .sources import load, source_name
from .viz import default_movie_path, movie, movie_frames, plot

EXIT_USAGE = 2
#: The status of a process ended by SIGPIPE (128 + 13): the output's reader went away.
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``jaxsinks`` with `argv` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:  # everything after `demo` belongs to the demo's own parser
        return run_command("demo", lambda: demo(argv[1:]))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2), already printed by argparse
        return int(exit_.code or 0)
    return run_command(args.command, lambda: args.handler(args))


def run_command(command: str, handler: Callable[[], int]) -> int:
    """Run a command's `handler`: its exit status; 2 after one line on stderr for an error the
    user can fix (jaxsinks' own errors, and files that cannot be read or written)."""
    try:
        code = handler()
        if sys.stdout is not None:  # None when the command was started with stdout closed
            sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        silence_stdout()
        return EXIT_BROKEN_PIPE
    except (JaxsinksError, OSError) as err:
        if sys.stderr is not None:  # None when started with stderr closed: the status still tells
            print(f"jaxsinks {command}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_USAGE


def silence_stdout() -> None:
    """Point stdout at /dev/null after its reader went away, so that Python's final flush at exit
    does not print a second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):  # not a real file (captured in tests)
        pass


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="jaxsinks", description="Inspect, plot and benchmark jaxsinks runs (Zarr v3 stores)."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser(
        "info",
        help="summarize a run: status, schedule, fields, sizes",
        description="Summarize a run: its status, schedule, attributes, and "
        "per field its layout, codecs, sizes and compression ratio.",
    )
    info.add_argument("store", help="the run (a path, or a file://, s3://, gs:// URL)")
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    info.set_defaults(handler=cmd_info)

    plot = commands.add_parser(
        "plot",
        help="plot scalar series of a run or a CSV log against step or time (PNG)",
        description="Plot fields of scalar frames (one line) or 1-d frames "
        "(one line per entry) against step or time, one subplot per field, from a run or from "
        "the CSV log a CsvSink writes.",
    )
    plot.add_argument("store", help="the run, or a CSV log (a path ending in .csv)")
    plot.add_argument(
        "fields",
        nargs="*",
        metavar="FIELD",
        help="fields to plot (default: every field of scalar or 1-d frames)",
    )
    plot.add_argument(
        "--x", choices=("step", "time"), default="step", help="the x axis (default: step)"
    )
    plot.add_argument(
        "--out", type=pathlib.Path, help="the PNG to write (default: FIELD.png, or RUN.png)"
    )
    plot.add_argument("--title", help="the plot's title (default: the run's name)")
    plot.add_argument("--systems", type=int_list, help="entries to draw, e.g. 0,3,5 (default: all)")
    plot.add_argument(
        "--log",
        type=str_list,
        default=[],
        metavar="FIELDS",
        help="fields drawn on a log y axis, e.g. fmax (default: none)",
    )
    plot.set_defaults(handler=cmd_plot)

    movie = commands.add_parser(
        "movie",
        help="render a 2-d field over frames (GIF or MP4)",
        description="Render a 2-d field frame by frame into a GIF, or an "
        "MP4 if ffmpeg is installed; the title shows step and time.",
    )
    movie.add_argument("store", help="the run")
    movie.add_argument("field", help="a field whose frames are 2-d")
    movie.add_argument(
        "--out", type=pathlib.Path, help="the .gif or .mp4 to write (default: FIELD.gif)"
    )
    movie.add_argument("--fps", type=float, default=10.0, help="frames per second (default: 10)")
    movie.add_argument("--vmin", type=float, help="color range minimum (default: over the frames)")
    movie.add_argument("--vmax", type=float, help="color range maximum (default: over the frames)")
    movie.add_argument("--every", type=int, default=1, help="show every K-th frame (default: 1)")
    movie.add_argument("--cmap", default="viridis", help="matplotlib colormap (default: viridis)")
    movie.add_argument("--index", type=int, help="for 3-d frames: the entry of the leading axis")
    movie.add_argument(
        "--t-start", type=float, help="show the frames from this time on (default: the first)"
    )
    movie.add_argument(
        "--t-end", type=float, help="show the frames up to this time (default: the last)"
    )
    movie.set_defaults(handler=cmd_movie)

    bench = commands.add_parser(
        "bench",
        help="measure write throughput and compression per codec and chunk size",
        description="Record synthetic frames with ZarrSink (create, a jitted scan recording every "
        "step, close) for each codec x chunk size into a temporary directory (deleted afterwards), "
        "and print MB/s, compression ratio and stored size as a markdown table.",
    )
    like = bench.add_mutually_exclusive_group()
    like.add_argument(
        "--shape",
        type=int_list,
        help="frame shape, e.g. 64,38,3; '' for scalars (default: 64,38,3)",
    )
    like.add_argument("--like", metavar="STORE", help="use the fields of an existing run")
    bench.add_argument("--dtype", help="frame dtype with --shape (default: float32)")
    bench.add_argument(
        "--frames", type=int, default=2000, help="frames per configuration (default: 2000)"
    )
    bench.add_argument(
        "--codecs",
        type=str_list,
        default=list(DEFAULT_CODECS),
        help=f"codecs: none, zstdN, blosc-CNAME[-LEVEL] (default: {','.join(DEFAULT_CODECS)})",
    )
    bench.add_argument(
        "--chunks",
        type=int_list,
        default=list(DEFAULT_CHUNKS),
        help=f"frames per chunk (default: {','.join(map(str, DEFAULT_CHUNKS))})",
    )
    bench.add_argument(
        "--data",
        choices=DATA_KINDS,
        default="smooth",
        help="smooth fields plus small noise (compressible) or noise (default: smooth)",
    )
    bench.add_argument(
        "--dir",
        type=pathlib.Path,
        help="where the temporary directory goes (default: the system temp directory)",
    )
    bench.set_defaults(handler=cmd_bench)

    commands.add_parser(
        "demo",
        add_help=False,
        help="run the demo job (arguments go to the demo: `jaxsinks demo --help`)",
    )
    return parser


# ------------------------------------------------------------------------------- commands


def cmd_info(args: argparse.Namespace) -> int:
    run = open_run(args.store)
    with missing_entries(args.store):
        description = run.describe()
    if args.json:
        print(json.dumps(description, indent=2))
    else:
        print(format_info(description, per_system=run.per_system, ragged=run.ragged))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    data = load(args.store)
    fields = args.fields or None
    out = args.out if args.out is not None else default_plot_out(fields, source_name(data))
    with missing_entries(args.store):
        plot(data, fields, x=args.x, systems=args.systems, log=args.log, out=out, title=args.title)
    print(f"wrote {out}")
    return 0


@contextlib.contextmanager
def missing_entries(store: str) -> Iterator[None]:
    """Turn a KeyError for an entry missing from a damaged run's metadata (one that opening the
    run does not check) into a StoreError naming the run and the entry."""
    try:
        yield
    except KeyError as err:
        if isinstance(err, JaxsinksError):  # a FieldNotFoundError says what it means
            raise
        raise StoreError(
            f"The run at {store} has damaged metadata: an entry of its zarr.json's 'jaxsinks' "
            f"attributes, {one_line(err)!r}, is missing. Restore its zarr.json from a copy, or "
            "read its arrays with zarr-python directly."
        ) from None


def default_plot_out(fields: Sequence[str] | None, name: str) -> pathlib.Path:
    """``FIELD.png`` (fields joined by ``_``), or ``<run name>.png`` when no field is named."""
    if fields:
        return pathlib.Path("_".join(f.replace("/", "_") for f in fields) + ".png")
    return pathlib.Path(pathlib.Path(name).stem + ".png")


def cmd_movie(args: argparse.Namespace) -> int:
    run = load(args.store)
    out = args.out if args.out is not None else default_movie_path(args.field)
    with missing_entries(args.store):
        out = movie(
            run,
            args.field,
            out,
            fps=args.fps,
            vmin=args.vmin,
            vmax=args.vmax,
            every=args.every,
            cmap=args.cmap,
            index=args.index,
            t_start=args.t_start,
            t_end=args.t_end,
        )
    assert isinstance(run, Run)  # movie refused a CSV log
    frames = len(movie_frames(run, every=args.every, t_start=args.t_start, t_end=args.t_end))
    print(f"wrote {out} ({frames} frames)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.like is not None:
        if args.dtype is not None:
            raise ConfigError(
                "`--dtype` goes with `--shape`; with `--like` the run's dtypes are used."
            )
        fields = fields_like(args.like)
    else:
        shape = (64, 38, 3) if args.shape is None else args.shape  # "" is a scalar frame
        fields = fields_from_shape(shape, args.dtype or "float32")
    rows = iter_bench(  # checks its arguments before the table starts
        fields,
        frames=args.frames,
        codecs=args.codecs,
        chunks=args.chunks,
        data=args.data,
        directory=args.dir,
    )
    print(bench_preamble(fields, args.frames, args.data))
    print()
    print("| codec | chunk | MB/s | ratio | stored MiB |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        cells = (
            row.codec,
            row.chunk,
            f"{row.mb_per_s:.1f}",
            f"{row.ratio:.2f}",
            f"{row.stored_mib:.2f}",
        )
        print("| " + " | ".join(map(str, cells)) + " |", flush=True)
    return 0


def demo(argv: Sequence[str]) -> int:
    """Run the demo job, ``jaxsinks.demo.relax.main(argv)``."""
    try:
        relax = importlib.import_module("jaxsinks.demo.relax")
    except ImportError as err:
        print(
            f"jaxsinks demo: error: the demo is not available: importing jaxsinks.demo.relax "
            f"failed ({one_line(err)}). Reinstall jaxsinks with its demo, or run an example from "
            "examples/ instead.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        return int(relax.main(list(argv)) or 0)
    except SystemExit as exit_:  # --help (0) or a usage error (2), printed by the demo's parser
        return int(exit_.code or 0)


# ----------------------------------------------------------------------------- formatting


def format_info(
    description: dict[str, Any], per_system: bool = False, ragged: dict[str, Any] | None = None
) -> str:
    """The text `jaxsinks info` prints for a `Run.describe()` dict (`ragged`: the run's
    `Run.ragged`, whose fields show the shape of one atom's row)."""
    d = description
    ragged = ragged or {}
    ragged_fields = set(ragged.get("fields", ()))
    readable = "" if d["frames"] == d["committed"] else f" ({d['frames']} readable)"
    lines = [
        f"store      {d['store']}",
        f"status     {d['status']}",
        f"frames     {d['committed']} committed{readable}",
        f"schedule   {format_schedule(d['schedule'])}",
        f"attrs      {shorten(json.dumps(d['attrs']), 200) if d['attrs'] else '(none)'}",
    ]
    if per_system:
        lines.append("layout     per-system rows (each frame is one system; see the system column)")
    if ragged_fields:
        lines.append(
            f"ragged     {', '.join(sorted(ragged_fields))}: per system s, {ragged['count']}[s] "
            "rows of the shape shown (marked 'per atom')"
        )
    if d.get("table") == "long":
        lines.append(
            "table      long: each frame is one row per field of the arrays step, time, system, "
            "name and value"
        )
    header = ("field", "shape", "dtype", "chunks", "shards", "codecs", "logical", "stored", "ratio")
    rows = [
        (
            f["name"],
            str(tuple(f["shape"])) + (" per atom" if f["name"] in ragged_fields else ""),
            f["dtype"]
            if f["dtype"] == f["source_dtype"]
            else f"{f['dtype']} (from {f['source_dtype']})",
            "x".join(map(str, f["chunks"])),
            "-" if f["shards"] is None else "x".join(map(str, f["shards"])),
            ",".join(f["codecs"]),
            human_bytes(f["logical_bytes"]),
            human_bytes(f["stored_bytes"]),
            ratio(f["logical_bytes"], f["stored_bytes"]),
        )
        for f in d["fields"]
    ]
    logical = sum(f["logical_bytes"] for f in d["fields"])
    stored = sum(f["stored_bytes"] for f in d["fields"])
    total = (
        "total",
        "",
        "",
        "",
        "",
        "",
        human_bytes(logical),
        human_bytes(stored),
        ratio(logical, stored),
    )
    lines += ["", *table(header, rows, total), ""]
    lines.append(
        f"store total: {human_bytes(d['logical_bytes'])} logical, {human_bytes(d['stored_bytes'])} "
        "stored (with step/time columns and metadata); compression ratio "
        f"{ratio(d['logical_bytes'], d['stored_bytes'])}"
    )
    return "\n".join(lines)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], total: Sequence[str]) -> list[str]:
    """Left-aligned text columns (sizes right-aligned), a rule under the header and above
    `total`."""
    widths = [max(len(r[i]) for r in [header, *rows, total]) for i in range(len(header))]
    numeric = {len(header) - 3, len(header) - 2, len(header) - 1}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(header), rule, *map(line, rows), rule, line(total)]


def format_schedule(schedule: dict[str, Any]) -> str:
    """``{"type": "every", "n": 10, "start": 0}`` -> ``every(n=10, start=0)``."""
    if not schedule:
        return "(unknown)"
    args = ", ".join(
        f"{k}={shorten(json.dumps(v), 60)}" for k, v in schedule.items() if k != "type"
    )
    return f"{schedule.get('type', '?')}({args})"


def human_bytes(n: float) -> str:
    """A size in B, KiB, MiB, GiB or TiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def ratio(logical: int, stored: int) -> str:
    """The compression ratio logical/stored, as ``"3.21"`` (``"-"`` when nothing is stored)."""
    return f"{logical / stored:.2f}" if stored else "-"


def bench_preamble(fields: Sequence[Any], frames: int, data: str) -> str:
    """The line above the benchmark table: what each configuration records."""
    shapes = ", ".join(
        f"{f.name} {tuple(f.shape)} {np.dtype(f.stored_dtype or f.dtype).name}" for f in fields
    )
    return (
        f"jaxsinks bench: {frames} frames of [{shapes}], {data} data, per codec x chunk; "
        "MB/s = logical bytes / (create + scan + close), compile excluded."
    )


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def one_line(err: BaseException) -> str:
    """An exception's message on one line (a KeyError's without the quotes repr adds)."""
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(message).split()) or type(err).__name__


# ----------------------------------------------------------------------------- arguments


def int_list(text: str) -> list[int]:
    """``"64,38,3"`` -> ``[64, 38, 3]``, for argparse."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0,1,2; got {text!r}"
        ) from None


def str_list(text: str) -> list[str]:
    """``"none,zstd3"`` -> ``["none", "zstd3"]``, for argparse."""
    return [part.strip() for part in text.split(",") if part.strip()]
