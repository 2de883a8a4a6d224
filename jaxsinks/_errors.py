"""The jaxsinks error hierarchy: every error the library raises derives from `JaxsinksError`."""

from __future__ import annotations


class JaxsinksError(Exception):
    """Base class of every error raised by jaxsinks."""


class ConfigError(JaxsinksError, ValueError):
    """An argument given to a constructor (capacity, schedule, codec, ...) is invalid."""


class FrameError(JaxsinksError, ValueError):
    """A frame given to `write` or `record` does not match the sink's frame specification."""


class SinkOverflowError(JaxsinksError):
    """More frames were recorded than a sink with ``overflow="error"`` can hold."""


class TransformError(JaxsinksError):
    """A sink was used under a JAX transformation in a way that cannot work."""
