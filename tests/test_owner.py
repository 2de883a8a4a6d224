"""Telling a live writer from a killed one: pids, pid reuse, reboots, other hosts."""

import os
import socket
import subprocess
import sys

from jaxsinks._io import owner as _owner


def test_process_alive_tells_dead_and_reused_pids():
    me = os.getpid()
    host = socket.gethostname()
    start = _owner.proc_stat(me)[1]
    assert _owner.process_alive(host, me, _owner.this_boot_id(), start) is True
    assert _owner.process_alive(host, me, None, start + 1) is False  # the pid was reused
    assert _owner.process_alive(host, me, "another-boot", start) is False  # the machine rebooted
    assert _owner.process_alive("some-other-host", me, None, None) is None
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert _owner.process_alive(host, child.pid, None, None) is False


def test_an_owner_round_trips_and_knows_it_is_this_process():
    me = _owner.Owner.me()
    again = _owner.Owner.from_json(me.to_json())
    assert again == me and again.alive is True and again.in_this_process
    assert _owner.Owner.me().token != me.token  # one token per writer
    assert _owner.Owner.from_json({"host": "h"}) is None and _owner.Owner.from_json("junk") is None
    assert str(me).startswith(f"process {os.getpid()} on host")
