"""Status flags carried in a sink's state: set inside jit, raised on by the host."""

from __future__ import annotations

import enum


class Flag(enum.IntFlag):
    """Bits of a sink's ``flags`` array."""

    #: A frame was recorded when there was no room for it (``overflow="error"`` or ``"drop"``).
    OVERFLOW = 1
    #: A value was out of range of its narrower storage dtype (it was not stored as inf).
    OUT_OF_RANGE = 2
    #: The host writer failed (or was closed); frames from the failure on are not stored.
    WRITE_FAILED = 4
    #: A flush came from an older value of the sink (or one already closed) and was refused.
    STALE = 8
    #: A traced step outside the int32 range was recorded (stored as the nearest int32).
    STEP_OUT_OF_RANGE = 16
    #: A traced time beyond the range of the sink's `time_dtype` was recorded (stored as inf).
    TIME_OUT_OF_RANGE = 32
