"""The sinks users create: `DeviceBuffer` (all on the device) and the streaming sinks
(`ZarrSink`, `CsvSink`, `HostBuffer`), which stage frames on the device (`stream`) and hand full
blocks to a host writer from `jaxsinks._io`. The only layer that joins the device side to the
host side.
"""
