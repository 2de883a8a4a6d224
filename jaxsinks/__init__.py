"""jaxsinks: JAX-native recording inside jit, scan, while_loop, vmap and grad."""

from ._campaign import Campaign as Campaign
from ._close import close as close
from ._cloud import gcs as gcs
from ._cloud import s3 as s3
from ._codecs import Blosc as Blosc
from ._codecs import FieldConfig as FieldConfig
from ._codecs import Zstd as Zstd
from ._csv_sink import CsvSink as CsvSink
from ._device_buffer import DeviceBuffer as DeviceBuffer
from ._errors import ConfigError as ConfigError
from ._errors import FieldNotFoundError as FieldNotFoundError
from ._errors import FrameError as FrameError
from ._errors import JaxsinksError as JaxsinksError
from ._errors import OutOfRangeError as OutOfRangeError
from ._errors import ReadIndexError as ReadIndexError
from ._errors import SchemaMismatchError as SchemaMismatchError
from ._errors import SinkOverflowError as SinkOverflowError
from ._errors import StaleSinkError as StaleSinkError
from ._errors import StoreError as StoreError
from ._errors import StoreExistsError as StoreExistsError
from ._errors import StoreNotFoundError as StoreNotFoundError
from ._errors import TransformError as TransformError
from ._errors import WriteError as WriteError
from ._errors import WriterConflictError as WriterConflictError
from ._export import Sample as Sample
from ._export import TrainingSet as TrainingSet
from ._export import export_training as export_training
from ._flags import Flag as Flag
from ._frame import Field as Field
from ._frame import FrameSpec as FrameSpec
from ._host_buffer import HostBuffer as HostBuffer
from ._layout import Ragged as Ragged
from ._progress import Progress as Progress
from ._reader import FieldView as FieldView
from ._reader import Run as Run
from ._reader import open as open  # noqa: A004
from ._record import is_sink as is_sink
from ._record import record as record
from ._recording import Recording as Recording
from ._recording import recording as recording
from ._run_config import RunConfig as RunConfig
from ._run_entry import RunEntry as RunEntry
from ._schedule import Every as Every
from ._schedule import Interval as Interval
from ._schedule import Schedule as Schedule
from ._schedule import Times as Times
from ._schedule import When as When
from ._sink import Sink as Sink
from ._stream import StreamSink as StreamSink
from ._trajectory import Trajectory as Trajectory
from ._zarr_sink import ZarrSink as ZarrSink

__version__ = "0.1.0"
