"""The owner of a running row names one start of one process, not only its PID."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from ledger.storage.identity import owner_alive, process_owner, start_time

HOST = socket.gethostname()


def test_this_start_is_alive_and_another_start_with_our_pid_is_not() -> None:
    me = process_owner()
    assert me.startswith(f"{HOST}:{os.getpid()}:")
    assert owner_alive(me)
    # the same PID after a restart (always so for PID 1 in a container): another start
    assert not owner_alive(f"{HOST}:{os.getpid()}:1")
    assert not owner_alive(f"{HOST}:{os.getpid()}:r0123")
    assert not owner_alive(f"{HOST}:{os.getpid()}")  # written before starts were recorded


def test_other_processes_are_judged_by_pid_and_start_time() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = start_time(child.pid)
        assert started is not None
        assert owner_alive(f"{HOST}:{child.pid}:{started}")
        assert owner_alive(f"{HOST}:{child.pid}")
        assert not owner_alive(f"{HOST}:{child.pid}:{int(started) - 1}")  # PID reused since
    finally:
        child.kill()
        child.wait()
    assert not owner_alive(f"{HOST}:{child.pid}:{started}")


def test_malformed_and_foreign_owners_are_dead() -> None:
    for owner in (None, "", "x", f"{HOST}:abc:1", f"{HOST}:\u00b2:1", f"{HOST}:1:2:3"):
        assert not owner_alive(owner)
    assert not owner_alive(f"not-{HOST}:{os.getpid()}:1")
