"""The jaxsinks error hierarchy: every error the library raises derives from `JaxsinksError`."""

from __future__ import annotations


class JaxsinksError(Exception):
    """Base class of every error raised by jaxsinks."""


class ConfigError(JaxsinksError, ValueError):
    """An argument given to a constructor (capacity, schedule, codec, ...) is invalid."""


class FrameError(JaxsinksError, ValueError):
    """What `write` or `record` was given does not fit the sink: a frame that does not match its
    frame specification, or a `step`, `time`, `mask` or `system` of the wrong shape or dtype, or
    out of range (also from a buffer's `check`)."""


class SinkOverflowError(JaxsinksError):
    """More frames were recorded than a sink with ``overflow="error"`` can hold."""


class TransformError(JaxsinksError):
    """A sink was used under a JAX transformation in a way that cannot work."""


class StoreError(JaxsinksError):
    """A store could not be created, opened, read or written."""


class StoreExistsError(StoreError):
    """Something already exists where a new one was to be created: a run where ``mode="w-"``
    was asked to create one, files jaxsinks did not write where ``mode="w"`` was asked to replace
    a run (never deleted), an existing campaign, a campaign run id taken, a CSV log or a training
    export."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """What was to be opened is not there: a run (`js.open`, `Campaign.open_run`), a campaign, a
    training export or a CSV log."""


class StaleSinkError(StoreError):
    """A sink value older than the last one returned was flushed, written or closed.

    Sinks are values: each jitted call returns a new one, and only the newest continues the run.
    Frames from an older value are refused (nothing stored changes) and this error says so.
    """


class WriterConflictError(StoreError):
    """Another live writer (process or sink) holds the run; a run has one writer at a time."""


class SchemaMismatchError(StoreError, ValueError):
    """An existing run records frames of another structure than the one being appended."""


class WriteError(StoreError):
    """Writing recorded frames failed; ``committed`` frames are stored and readable.

    Attributes:
        committed: how many frames were durably stored before the failure.
    """

    def __init__(self, message: str, committed: int) -> None:
        super().__init__(message)
        self.committed = committed


class OutOfRangeError(WriteError, ValueError):
    """A value did not fit the narrower dtype a field is stored as; it was not stored as inf."""


class ReadIndexError(JaxsinksError, IndexError):
    """An index into a run or a field view is out of range, or not one numpy would accept (or one
    jaxsinks does not support); an `IndexError`, as numpy raises."""


class FieldNotFoundError(JaxsinksError, KeyError):
    """A run has no field of the given name; a `KeyError`, as a dict lookup raises."""


class CheckpointError(JaxsinksError, ValueError):
    """A loop's checkpoint cannot be written or used to resume: none was found, it was saved for
    another state, other sinks or other runs, or a sink cannot be checkpointed (a HostBuffer)."""
