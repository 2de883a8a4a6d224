"""jaxsinks: JAX-native recording inside jit, scan, while_loop, vmap and grad."""

from ._device_buffer import DeviceBuffer as DeviceBuffer
from ._errors import ConfigError as ConfigError
from ._errors import FrameError as FrameError
from ._errors import JaxsinksError as JaxsinksError
from ._errors import SinkOverflowError as SinkOverflowError
from ._errors import TransformError as TransformError
from ._flags import Flag as Flag
from ._frame import Field as Field
from ._frame import FrameSpec as FrameSpec
from ._record import is_sink as is_sink
from ._record import record as record
from ._schedule import Every as Every
from ._schedule import Interval as Interval
from ._schedule import Schedule as Schedule
from ._schedule import Times as Times
from ._schedule import When as When
from ._sink import Sink as Sink
from ._trajectory import Trajectory as Trajectory

__version__ = "0.1.0"
