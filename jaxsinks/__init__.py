"""jaxsinks: JAX-native recording inside jit, scan, while_loop, vmap and grad."""

from ._core.close import close as close
from ._core.errors import CheckpointError as CheckpointError
from ._core.errors import ConfigError as ConfigError
from ._core.errors import FieldNotFoundError as FieldNotFoundError
from ._core.errors import FrameError as FrameError
from ._core.errors import JaxsinksError as JaxsinksError
from ._core.errors import OutOfRangeError as OutOfRangeError
from ._core.errors import ReadIndexError as ReadIndexError
from ._core.errors import SchemaMismatchError as SchemaMismatchError
from ._core.errors import SinkOverflowError as SinkOverflowError
from ._core.errors import StaleSinkError as StaleSinkError
from ._core.errors import StoreError as StoreError
from ._core.errors import StoreExistsError as StoreExistsError
from ._core.errors import StoreNotFoundError as StoreNotFoundError
from ._core.errors import TransformError as TransformError
from ._core.errors import WriteError as WriteError
from ._core.errors import WriterConflictError as WriterConflictError
from ._core.flags import Flag as Flag
from ._core.frame import Field as Field
from ._core.frame import FrameSpec as FrameSpec
from ._core.record import is_sink as is_sink
from ._core.record import record as record
from ._core.schedule import Every as Every
from ._core.schedule import Interval as Interval
from ._core.schedule import Schedule as Schedule
from ._core.schedule import Times as Times
from ._core.schedule import When as When
from ._core.sink import Sink as Sink
from ._core.trajectory import Trajectory as Trajectory
from ._drive.loops import scan as scan
from ._drive.loops import while_loop as while_loop
from ._drive.recording import Recording as Recording
from ._drive.recording import recording as recording
from ._io.cloud import gcs as gcs
from ._io.cloud import s3 as s3
from ._io.codecs import Blosc as Blosc
from ._io.codecs import FieldConfig as FieldConfig
from ._io.codecs import Zstd as Zstd
from ._io.layout import Ragged as Ragged
from ._io.progress import Progress as Progress
from ._read.pictures import movie as movie
from ._read.pictures import plot as plot
from ._read.reader import FieldView as FieldView
from ._read.reader import Run as Run
from ._read.reader import open as open  # noqa: A004
from ._read.views import RaggedView as RaggedView
from ._sinks.csv_sink import CsvSink as CsvSink
from ._sinks.device_buffer import DeviceBuffer as DeviceBuffer
from ._sinks.host_buffer import HostBuffer as HostBuffer
from ._sinks.stream import StreamSink as StreamSink
from ._sinks.zarr_sink import ZarrSink as ZarrSink
from .campaign import Campaign as Campaign
from .campaign import RunConfig as RunConfig
from .campaign import RunEntry as RunEntry
from .training import Sample as Sample
from .training import TrainingSet as TrainingSet
from .training import export_training as export_training

__version__ = "0.1.0"

#: The public API: what users create, call and receive. `StreamSink` (the streaming sinks' base),
#: `FrameSpec` and `Field` (how a sink describes its frames) stay importable from here for one
#: release, but are internals (jaxsinks._sinks.stream, jaxsinks._core.frame), not API.
__all__ = [
    "Blosc",
    "Campaign",
    "CheckpointError",
    "ConfigError",
    "CsvSink",
    "DeviceBuffer",
    "Every",
    "FieldConfig",
    "FieldNotFoundError",
    "FieldView",
    "Flag",
    "FrameError",
    "HostBuffer",
    "Interval",
    "JaxsinksError",
    "OutOfRangeError",
    "Progress",
    "Ragged",
    "RaggedView",
    "ReadIndexError",
    "Recording",
    "Run",
    "RunConfig",
    "RunEntry",
    "Sample",
    "Schedule",
    "SchemaMismatchError",
    "Sink",
    "SinkOverflowError",
    "StaleSinkError",
    "StoreError",
    "StoreExistsError",
    "StoreNotFoundError",
    "Times",
    "TrainingSet",
    "Trajectory",
    "TransformError",
    "When",
    "WriteError",
    "WriterConflictError",
    "ZarrSink",
    "Zstd",
    "close",
    "export_training",
    "gcs",
    "is_sink",
    "movie",
    "open",
    "plot",
    "record",
    "recording",
    "s3",
    "scan",
    "while_loop",
]
