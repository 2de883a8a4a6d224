"""The drivers: `jaxsinks.scan` and `jaxsinks.while_loop` run a user's step function under `jit`
with sinks, and own what a hand-written loop leaves to the user.

A driver takes the step (``state -> state``), the initial state and a pytree of sinks; it checks
them (`plan`; a streaming sink that can no longer record is refused on the host first, `live`),
compiles one program that steps, records ``frame(state)`` into each sink through
`jaxsinks.record` (each sink with its own schedule, frame function and mask) and threads the
sinks (`loops`), then closes them on the host. When anything raises, also a
``KeyboardInterrupt``, the sinks are ended before the error propagates: the committed frames stay
readable, and a run whose newest sink value was lost with the loop reads as ``"interrupted"``
(`ending`). With ``checkpoint=`` the loop runs in segments with a checkpoint of its carry after
each (`segments`, `checkpoint`), and ``resume=True`` continues it from the newest one.
"""
