"""Progress: a progress bar over simulation steps, advanced when a sink flushes.

A sink given ``progress=`` reports the step of the last frame of every block it flushes, from the
flush callback: the bar costs nothing inside the compiled loop (no per-step host sync) and moves
at flush boundaries. It uses tqdm (an optional dependency), and is off when standard error is not
a terminal, unless asked for.

The drivers (`jaxsinks.scan`, `jaxsinks.while_loop`) also advance a bar from a host callback a
hundred times per run, and end it with `finish`: complete at the step the loop stopped, with the
reason (e.g. "converged at step 1117").
"""

from __future__ import annotations

import sys
import threading
from typing import IO, Any

from .._core.errors import ConfigError
from .._core.types import as_int


class Progress:
    """A progress bar over `total` steps, advanced by the sinks it is given to.

    Args:
        total: the number of steps of the run (None: unknown).
        desc: the bar's label.
        disable: True to turn it off, False to force it on; None (default) shows it only when the
            output is a terminal.
        file: where to draw it (default: standard error).
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        desc: str = "steps",
        disable: bool | None = None,
        file: IO[str] | None = None,
    ) -> None:
        number = None if total is None else as_int(total)
        if total is not None and (number is None or number < 0):
            raise ConfigError(
                f"`Progress` needs `total` to be a non-negative int or None; got {total!r}."
            )
        if not isinstance(desc, str):
            raise ConfigError(f"`Progress` needs `desc` to be a str; got {desc!r}.")
        if disable is not None and not isinstance(disable, bool):
            raise ConfigError(
                f"`Progress` needs `disable` to be True, False or None (shown only on a "
                f"terminal); got {disable!r}."
            )
        if file is not None and not callable(getattr(file, "write", None)):
            raise ConfigError(
                "`Progress` needs `file` to be a text stream with a write method (e.g. "
                f"sys.stderr, or open(path, 'w') for a file); got {file!r}."
            )
        total = number
        stream = file if file is not None else sys.stderr
        if disable is None:
            disable = not (hasattr(stream, "isatty") and stream.isatty())
        self.total = total
        self.position = 0
        self.reason: str | None = None
        self._lock = threading.Lock()
        self._bar: Any = None
        if not disable:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                raise ConfigError(
                    "`Progress` draws with tqdm, which is not installed: pip install tqdm (or the "
                    "jaxsinks[extras] extra), or pass disable=True."
                ) from None
            self._bar = tqdm(total=total, desc=desc, unit="step", file=stream, dynamic_ncols=True)

    @property
    def enabled(self) -> bool:
        """Whether the bar is drawn."""
        return self._bar is not None

    def update_to(self, step: int) -> None:
        """Advance the bar to `step` steps done (it never moves back)."""
        with self._lock:
            if step > self.position:
                if self._bar is not None:
                    self._bar.update(step - self.position)
                self.position = step

    def finish(self, reason: str, *, position: int | None = None, complete: bool = True) -> None:
        """End the bar with `reason` shown after it (e.g. "converged at step 1117").

        Args:
            reason: why the run ended, shown after the bar.
            position: the steps done (default: the bar's position).
            complete: end the bar full at `position`: a loop that stopped before `total` steps
                sets `total` to it, so the bar is not left part-way. Without it (an interrupted
                run), the bar stays where it was.
        """
        with self._lock:
            self.reason = reason
            if position is not None:
                self.position = position
            if complete:
                self.total = self.position
            if self._bar is not None:
                if complete:
                    self._bar.total = self.position
                    self._bar.n = self.position
                self._bar.set_postfix_str(reason, refresh=False)
                self._bar.refresh()
                self._bar.close()
                self._bar = None

    def close(self) -> None:
        """Finish the bar (sinks do this when they are closed)."""
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def __repr__(self) -> str:
        reason = "" if self.reason is None else f", reason={self.reason!r}"
        return (
            f"Progress(total={self.total}, position={self.position}, enabled={self.enabled}"
            f"{reason})"
        )
