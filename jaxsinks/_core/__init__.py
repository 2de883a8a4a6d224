"""The device side: pure JAX, no threads, no TensorStore, no files.

What a frame is (`frame`), where it goes in a sink's rows (`slots`, `columns`), when it is
recorded (`schedule`), what went wrong in the loop (`flags`), the sink base class (`sink`) and
the functions that dispatch over sinks (`record`, `close`), plus the errors every
layer raises (`errors`). Everything here runs under `jit`, `vmap` and `grad`;
tests/test_layers.py fails if it imports the I/O layer or TensorStore.
"""
