"""Shared benchmark helpers: interleaved timing (robust on a shared, noisy machine) and tables."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import jax


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, timed in interleaved rounds after one warm-up call each.

    Interleaving puts every variant under the same background load, so ratios measured in one run
    are meaningful even where absolute times drift.
    """
    for fn in fns.values():
        jax.block_until_ready(fn())
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub-markdown table."""
    cells = [header] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join(
        [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        + [line(r) for r in cells[1:]]
    )


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


#: Thread groups of `cpu_seconds`, by the start of the thread's name (Linux truncates names to 15
#: characters). XLA's threads are not told apart: with one core it runs a loop on an unnamed one.
THREAD_GROUPS = {"ts_": "tensorstore", "jaxsinks-": "jaxsinks"}


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far (Linux only): by the whole ``machine`` (every core's busy time), by
    this ``process`` (ended threads included), and by its live threads: `THREAD_GROUPS`, and the
    ``rest`` (the main thread, XLA's, Python's). Between two calls, the process's CPU minus that
    of its live threads is what threads that ended meanwhile used."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    used = {"machine": (sum(fields) - fields[3] - fields[4]) / tick}  # all but idle and iowait
    used["process"] = time.process_time()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        group = next((g for p, g in THREAD_GROUPS.items() if name.startswith(p)), "rest")
        ticks = rest.split()
        used[group] = used.get(group, 0.0) + (int(ticks[11]) + int(ticks[12])) / tick
    return used
