"""Who writes a run: the identity of a recording process, and whether it is still alive.

A run (and a campaign's run entry) records its writer: host, pid, Linux boot id, the pid's start
time and a random token naming one writer. Another process uses it to tell a live writer (refuse
to write beside it) from a killed one (take its run over), including after pid reuse or a reboot.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import pathlib
import socket
import uuid
from typing import Any


@dataclasses.dataclass(frozen=True)
class Owner:
    """One writer of one run: its process and a token unique to it."""

    host: str
    pid: int
    boot_id: str | None
    pid_start: int | None
    started: str
    token: str

    @classmethod
    def me(cls) -> Owner:
        """A new writer of this process."""
        pid = os.getpid()
        stat = proc_stat(pid)
        return cls(
            host=socket.gethostname(),
            pid=pid,
            boot_id=this_boot_id(),
            pid_start=None if stat is None else stat[1],
            started=now(),
            token=uuid.uuid4().hex,
        )

    @classmethod
    def from_json(cls, doc: Any) -> Owner | None:
        """The owner recorded in a run's metadata, or None if there is none (or it is
        unreadable)."""
        if not isinstance(doc, dict):
            return None
        try:
            return cls(
                host=str(doc["host"]),
                pid=int(doc["pid"]),
                boot_id=doc.get("boot_id"),
                pid_start=doc.get("pid_start"),
                started=str(doc.get("started", "?")),
                token=str(doc["token"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def alive(self) -> bool | None:
        """Whether the writer's process still runs (None: it runs on another host, unknown)."""
        return process_alive(self.host, self.pid, self.boot_id, self.pid_start)

    @property
    def in_this_process(self) -> bool:
        return self.host == socket.gethostname() and self.pid == os.getpid() and self.alive is True

    def __str__(self) -> str:
        return f"process {self.pid} on host '{self.host}', writing since {self.started}"


def process_alive(host: str, pid: int, boot_id: str | None, pid_start: int | None) -> bool | None:
    """Whether process `pid` of `host` still runs; None when `host` is not this machine.

    On this host a process is dead if its pid is gone, is a zombie, or now belongs to a process
    started at another time (pid reuse), or if the machine rebooted since (Linux boot id).
    """
    if host != socket.gethostname():
        return None
    if boot_id is not None and this_boot_id() not in (None, boot_id):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    stat = proc_stat(pid)
    if stat is None:
        return True  # no /proc: the pid exists, which is all we can tell
    state, start = stat
    return state not in ("Z", "X") and (pid_start is None or start == pid_start)


def proc_stat(pid: int) -> tuple[str, int] | None:
    """``(state, start time in clock ticks since boot)`` from Linux's ``/proc/<pid>/stat``."""
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return rest[0], int(rest[19])


def this_boot_id() -> str | None:
    try:
        return pathlib.Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
