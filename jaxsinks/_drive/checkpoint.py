"""checkpoint: a driven loop's carry saved at segment boundaries, and restored to resume it.

With ``checkpoint=`` a driver runs its loop in segments of ``checkpoint_every`` steps
(`segments`). At the start and after each segment, `Keeper.save` waits until every run has
committed what its sink flushed, marks each Zarr run with the loop's token and step, and writes
the carry (the state, every sink's arrays, including a streaming sink's staged frames and its
schedule state, and the step) to the checkpoint folder (`jaxsinks._io.checkpoint`). With
``resume=True``, `Keeper.start` reads the newest checkpoint, checks it against the call (the
state's and the sinks' structure, shapes and dtypes, the runs and their committed counts: every
mismatch at once, before anything is changed), rewinds each run to the checkpoint's count and
returns the restored carry. The resumed loop records the same frames again from there.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pathlib
import uuid
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from .._core.errors import CheckpointError, ConfigError
from .._core.sink import Sink
from .._io import checkpoint as _files
from .._io.csv_log import CsvWriter
from .._io.zarr_writer import ZarrWriter
from .._sinks.stream import StreamSink
from . import plan as _plan

log = logging.getLogger("jaxsinks")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The checked ``checkpoint``, ``checkpoint_every`` and ``resume`` arguments of a driver."""

    directory: pathlib.Path
    every: int | None
    resume: bool | str


def check_settings(owner: str, checkpoint: Any, every: Any, resume: Any) -> Settings | None:
    """The checkpoint settings of a driver call, None when it does not checkpoint."""
    if resume not in (False, True, "auto") or not isinstance(resume, (bool, str)):
        raise ConfigError(f"`{owner}` needs `resume` to be False, True or 'auto'; got {resume!r}.")
    if checkpoint is None:
        extra = [n for n, v in (("checkpoint_every", every), ("resume", resume)) if v]
        if extra:
            raise ConfigError(
                f"`{owner}` got {' and '.join(f'`{n}`' for n in extra)} without `checkpoint`: "
                "pass checkpoint='a/folder' (where the loop's checkpoints are kept) as well."
            )
        return None
    if not isinstance(checkpoint, (str, os.PathLike)) or "://" in str(checkpoint):
        raise ConfigError(
            f"`{owner}` needs `checkpoint` to be a local folder path (str or pathlib.Path); got "
            f"{checkpoint!r}. Checkpoints are written to local files, also when the runs are in "
            "an object store."
        )
    if not os.fspath(checkpoint):
        raise ConfigError(
            f"`{owner}` needs `checkpoint` to be a folder path; got an empty path. Name a folder "
            "of its own (e.g. checkpoint='run.ckpt'): the loop writes and removes ckpt-*.npz "
            "files there."
        )
    if os.path.exists(checkpoint) and not os.path.isdir(checkpoint):
        raise ConfigError(
            f"`{owner}` needs `checkpoint` to be a folder, where the loop keeps its checkpoints; "
            f"{os.fspath(checkpoint)!r} is a file. Name a folder (it is created if missing)."
        )
    if every is not None:
        count = _plan.check_count(owner, "checkpoint_every", every)
        if not count:
            raise ConfigError(
                f"`{owner}` needs `checkpoint_every` to be an int >= 1 (steps between "
                f"checkpoints) or None (only at the start and the end); got {every!r}."
            )
        every = count
    return Settings(pathlib.Path(checkpoint), every, resume)


def next_boundary(settings: Settings, step0: int, n: int, end: int) -> int:
    """The step the segment starting at `n` ends at: the next multiple of `every` after `step0`,
    or `end`."""
    if settings.every is None:
        return end
    return min(end, step0 + ((n - step0) // settings.every + 1) * settings.every)


class Keeper:
    """Saves and restores the carry of one driver call."""

    def __init__(
        self,
        owner: str,
        settings: Settings,
        sinks: list[Sink],
        arrays: tuple[Any, ...],
        record_initial: bool,
    ) -> None:
        self.owner, self.settings, self.sinks = owner, settings, sinks
        self.record_initial = record_initial
        _refuse_traced(owner, arrays)
        self.step0 = int(arrays[0])
        self.times = [_number(owner, "t0", arrays[1]), _number(owner, "dt", arrays[2])]
        self.token = uuid.uuid4().hex
        self.initial = False  # whether a segment has run (and offered the initial state)
        for i, sink in enumerate(sinks):
            _check_sink(owner, i, sink)

    # --------------------------------------------------------------------------- start

    def start(
        self, state: Any, end: int | None, prepare: Callable[[int, Any, list[Sink]], None]
    ) -> tuple[Any, list[Sink], int]:
        """The carry to start from, ``(state, sinks, step)``: restored from the newest checkpoint
        when resuming, else the given one (saved as the first checkpoint). ``prepare(step,
        state, sinks)`` (tracing the first segment) is called with it once it is checked, before
        anything is changed: a run rewound, a checkpoint removed or saved."""
        _refuse_traced(self.owner, state)
        directory = self.settings.directory
        loaded = _files.load_latest(directory) if self.settings.resume else None
        if loaded is None and self.settings.resume is True:
            raise CheckpointError(
                f"`{self.owner}` was asked to resume (resume=True), but the folder {directory} "
                "holds no checkpoint. Pass the folder given as `checkpoint` to the interrupted "
                "call, or resume='auto' to start afresh when there is none. Nothing was changed."
            )
        if loaded is not None:
            return self._resume(state, end, prepare, *loaded)
        state = _restore_all(_host_leaves(state)[1], state)  # the types a resumed loop gets
        prepare(self.step0, state, list(self.sinks))
        _files.clear(directory)
        self.save(self.step0, state, self.sinks)
        return state, list(self.sinks), self.step0

    def _resume(
        self,
        state: Any,
        end: int | None,
        prepare: Callable[[int, Any, list[Sink]], None],
        header: dict[str, Any],
        arrays: list[np.ndarray],
    ) -> tuple[Any, list[Sink], int]:
        step, problems = int(header["step"]), []
        now = {"owner": self.owner, "step0": self.step0, "times": self.times}
        now["record_initial"] = self.record_initial
        saved = {"record_initial": self.record_initial, **header}  # older ones have none
        for key, mine in now.items():
            if saved[key] != mine:
                problems.append(f"{key} is {saved[key]!r} in the checkpoint but {mine!r} now")
        if end is not None and step > end:
            problems.append(f"the checkpoint is at step {step}, after this call's last step {end}")
        problems += _compare("state", header["state"], _describe(state))
        sinks = header["sinks"]
        if len(sinks) != len(self.sinks):
            problems.append(
                f"the checkpoint has {len(sinks)} sinks but {len(self.sinks)} are given"
            )
        runs = []
        for i, (saved, sink) in enumerate(zip(sinks, self.sinks)):
            mine = _describe_sink(sink)
            if isinstance(saved["sink"].get("schedule"), str):  # written before 2026-11-29
                mine["schedule"] = str(sink.schedule)
            problems += _compare(f"sinks[{i}]", saved["sink"], mine)
            if isinstance(sink, StreamSink):
                found, writer = _check_run(i, saved, sink, header)
                problems += found
                runs.append((writer, saved))
        if problems:
            raise CheckpointError(
                f"`{self.owner}` cannot resume from the checkpoint "
                f"{_files.checkpoints(self.settings.directory)[-1]} (step {step}): "
                + "; ".join(problems)
                + ". Nothing was changed. Resume with the arguments and sinks of the interrupted "
                "call (streaming sinks reopened with mode='a'), or start afresh with resume=False."
            )
        self.initial = bool(header.get("initial", step != self.step0))
        state, restored = self._restored(state, arrays, len(header["state"]))
        prepare(step, state, restored)
        self.token = header["token"]
        for writer, saved in runs:
            log.info(
                "jaxsinks: %s rewinds %s from %d to %d committed frames (the checkpoint's)",
                self.owner,
                writer.description,
                writer.committed,
                saved["committed"],
            )
            if isinstance(writer, ZarrWriter):
                _files.rewind_zarr(writer, saved["committed"], saved["atoms"])
            else:
                assert isinstance(writer, CsvWriter)
                writer.truncate_rows(saved["committed"])
        log.info("jaxsinks: %s resumed from its checkpoint at step %d", self.owner, step)
        return state, restored, step

    def _restored(self, state: Any, arrays: list[np.ndarray], count: int) -> tuple[Any, list[Sink]]:
        """The state and sinks of a checkpoint's `arrays` (the first `count` are the state's),
        on the devices and in the types of the given ones."""
        restored = _restore_all(arrays[:count], state)
        sinks = []
        for sink in self.sinks:
            paths, leaves, treedef = _sink_leaves(sink)
            taken = arrays[count : count + len(paths)]
            count += len(paths)
            new = [_restore(a, like) for a, like in zip(taken, leaves)]
            sinks.append(_unflatten_sink(sink, treedef, new))
        return restored, sinks

    # ---------------------------------------------------------------------------- save

    def save(self, step: int, state: Any, sinks: list[Sink]) -> None:
        """Checkpoint the carry at `step`, once every run has committed what its sink flushed."""
        state, sinks = jax.device_get((state, sinks))
        described, arrays = _host_leaves(state)
        entries = []
        for sink in sinks:
            paths, leaves, _ = _sink_leaves(sink)
            arrays += [_to_host(x) for x in leaves]
            entry: dict[str, Any] = {"sink": _describe_sink(sink)}
            if isinstance(sink, StreamSink):
                writer = sink._writer_or_raise("checkpoint")
                flushed = int(sink.flushed)
                if not writer.wait_committed(flushed):
                    log.error(
                        "jaxsinks: no checkpoint at step %d: writing %s failed (raised at close)",
                        step,
                        writer.description,
                    )
                    return
                entry.update(
                    run=writer.description, committed=flushed, atoms=_files.run_atoms(writer)
                )
            entries.append(entry)
        for sink in sinks:
            if isinstance(sink, StreamSink):
                writer = sink._writer_or_raise("checkpoint")
                if isinstance(writer, ZarrWriter):
                    _files.mark_run(writer, self.token, step, int(sink.flushed))
        header = {
            "token": self.token,
            "step": step,
            "owner": self.owner,
            "step0": self.step0,
            "initial": self.initial,
            "record_initial": self.record_initial,
            "times": self.times,
            "state": described,
            "sinks": entries,
            "arrays": [{"dtype": str(a.dtype), "shape": list(a.shape)} for a in arrays],
        }
        _files.save(self.settings.directory, step, header, arrays)


# ------------------------------------------------------------------------------- helpers


def _refuse_traced(owner: str, tree: Any) -> None:
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree)):
        raise CheckpointError(
            f"`{owner}` with `checkpoint` was called inside a JAX transformation (jit, grad, "
            "vmap): checkpoints are written on the host between segments of the loop. Call it "
            "outside the transformation, or drop `checkpoint`."
        )


def _check_sink(owner: str, i: int, sink: Sink) -> None:
    """A CheckpointError for a sink whose state cannot be saved and restored."""
    if not isinstance(sink, StreamSink):
        return
    kind = type(sink).__name__
    writer = sink._writer_or_raise("checkpoint")
    why = None
    if not isinstance(writer, (ZarrWriter, CsvWriter)):
        why = (
            "its frames are kept in this process's memory, which a killed process loses, so a "
            "resumed loop could not restore them. Record to a ZarrSink (or a DeviceBuffer) "
            "instead"
        )
    elif sink.shard is not None:
        why = "it is sharded over a mesh (not supported by checkpoints yet). Drop `mesh`"
    elif isinstance(writer, ZarrWriter) and (writer.ring or writer.coordinator is not None):
        why = (
            "it is a ring (overflow='ring') or written by several processes (not supported by "
            "checkpoints yet). Record without the ring"
        )
    if why is not None:
        raise CheckpointError(
            f"`{owner}` cannot checkpoint the {kind} at position {i} of the sinks (in flattened "
            f"order), writing {writer.description}: {why}, or drop `checkpoint`."
        )


def _check_run(
    i: int, saved: dict[str, Any], sink: StreamSink, header: dict[str, Any]
) -> tuple[list[str], Any]:
    """What keeps the run of the streaming sink at position `i` from resuming (empty if
    nothing), and its writer."""
    writer = sink._writer_or_raise("resume")
    where = f"sinks[{i}] ({writer.description})"
    if saved.get("run") != writer.description:
        return [f"sinks[{i}] writes {writer.description}, but the checkpoint was saved for "
                f"{saved.get('run')}"], writer  # fmt: skip
    if writer.blocks_written or writer.next_offset() != writer.committed:
        return [f"{where} has recorded frames since it was created; pass a new sink"], writer
    found = []
    if writer.committed < saved["committed"]:
        found.append(
            f"{where} has {writer.committed} committed frames, fewer than the "
            f"{saved['committed']} of the checkpoint (was it recreated with mode='w', or "
            "replaced by an older copy?)"
        )
    if isinstance(writer, ZarrWriter):
        ref = _files.run_reference(writer)
        if ref is None or ref.get("token") != header["token"]:
            found.append(
                f"{where} was not checkpointed by the loop that saved this checkpoint (its "
                "metadata names " + ("no checkpoint" if ref is None else "another loop") + ")"
            )
        elif int(ref.get("step", -1)) < int(header["step"]):
            found.append(
                f"{where} was last checkpointed at step {ref.get('step')}, before the "
                f"checkpoint's step {header['step']} (an older copy of the run?)"
            )
    return found, writer


def _sink_leaves(sink: Sink) -> tuple[list[str], list[Any], Any]:
    """A sink's array leaves that a checkpoint holds (all but a streaming sink's writer id),
    their paths, and the sink's treedef."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(sink)
    kept = [(jax.tree_util.keystr(p), x) for p, x in flat if jax.tree_util.keystr(p) != ".writer"]
    return [p for p, _ in kept], [x for _, x in kept], treedef


def _unflatten_sink(template: Sink, treedef: Any, leaves: list[Any]) -> Sink:
    flat = jax.tree_util.tree_flatten_with_path(template)[0]
    merged, it = [], iter(leaves)
    for path, x in flat:
        merged.append(x if jax.tree_util.keystr(path) == ".writer" else next(it))
    return jax.tree_util.tree_unflatten(treedef, merged)


def _describe(tree: Any) -> list[list[Any]]:
    """``[path, dtype, shape]`` of every leaf of `tree`."""
    out = []
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out.append([jax.tree_util.keystr(path), str(jax.numpy.result_type(x)), list(np.shape(x))])
    return out


def _describe_sink(sink: Sink) -> dict[str, Any]:
    paths, leaves, _ = _sink_leaves(sink)
    return {
        "type": type(sink).__name__,
        # By value, as JSON: a repr shows a `When` predicate's address, new in each process.
        "schedule": sink.schedule.to_json(),
        "capacity": sink.capacity,
        "leaves": [
            [p, str(jax.numpy.result_type(x)), list(np.shape(x))] for p, x in zip(paths, leaves)
        ],
    }


def _compare(what: str, saved: Any, now: Any) -> list[str]:
    """The differences between a saved description and the current one, as sentences."""
    if saved == now:
        return []
    if isinstance(saved, dict) and isinstance(now, dict):
        return [
            f"{what} {key} is {saved.get(key)!r} in the checkpoint but {now.get(key)!r} now"
            for key in sorted(set(saved) | set(now))
            if saved.get(key) != now.get(key)
        ]
    saved_by, now_by = {s[0]: s[1:] for s in saved}, {s[0]: s[1:] for s in now}
    out = []
    for path in list(now_by) + [p for p in saved_by if p not in now_by]:
        old, new = saved_by.get(path), now_by.get(path)
        if old != new:
            show = lambda d: "missing" if d is None else f"{d[0]}{d[1]}"  # noqa: E731
            out.append(f"{what}{path} is {show(old)} in the checkpoint but {show(new)} now")
    return out or [f"{what} has another structure than in the checkpoint"]


def _host_leaves(tree: Any) -> tuple[list[list[Any]], list[np.ndarray]]:
    return _describe(tree), [_to_host(x) for x in jax.tree.leaves(tree)]


def _to_host(x: Any) -> np.ndarray:
    dtype = jax.numpy.result_type(x)
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
        dtype = x.dtype
    return np.asarray(jax.device_get(x), dtype=dtype)


def _restore_all(arrays: list[np.ndarray], like: Any) -> Any:
    leaves, treedef = jax.tree.flatten(like)
    return jax.tree.unflatten(treedef, [_restore(a, x) for a, x in zip(arrays, leaves)])


def _restore(array: np.ndarray, like: Any) -> Any:
    """`array` on the device `like` is on (with its sharding), as a key array if `like` is one."""
    dtype = jax.numpy.result_type(like)
    where = like.sharding if isinstance(like, jax.Array) else None
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return jax.device_put(
            jax.random.wrap_key_data(jax.numpy.asarray(array), impl=jax.random.key_impl(like)),
            where,
        )
    return jax.device_put(np.array(array), where)


def _number(owner: str, name: str, value: Any) -> float:
    number = float(np.asarray(value))
    if not math.isfinite(number):
        raise ConfigError(f"`{owner}` needs `{name}` to be finite; got {number!r}.")
    return number
