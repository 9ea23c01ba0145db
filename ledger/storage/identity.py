"""Which start of which process owns a ``running`` row (``host:pid:start``), and whether it lives:
by its process (on this host) and by its lease (any host, see ``lease_expired``).

A restart marks the rows of dead owners ``interrupted`` and leaves live processes' rows alone,
so two processes can share one database file. The PID alone cannot tell one start of the
service from the next: in a container the service is PID 1 at every start, and outside one a
PID is reused. So the owner also names the start: the process's start time (in clock ticks
since boot, from ``/proc/<pid>/stat``) where the system tells it, else a random token made once
per process. A row is alive only when its PID lives and, for this process or any process whose
start time can be read, that start is the row's. Rows written as ``host:pid`` (before the start
was recorded) are judged by the PID alone.

Replicas on other hosts cannot be seen this way: a replica sharing a database with others holds
a lease (a ``replicas`` row it renews, ``ledger.storage.replicas``), and counts as gone once
the lease runs out or, on this host, once its process is seen gone (``lease_expired``).
"""

from __future__ import annotations

import os
import secrets
import socket
from functools import cache

from ledger.records import Lease


def start_time(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot; None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    fields = stat.rpartition(b")")[2].split()
    if len(fields) < 20 or not fields[19].isdigit():
        return None
    return fields[19].decode()  # field 22, starttime


@cache
def _this_start() -> str:
    return start_time(os.getpid()) or f"r{secrets.token_hex(8)}"


def process_owner() -> str:
    """Identify this start of this process in ``runs.owner`` so a restart can tell dead rows."""
    return f"{socket.gethostname()}:{os.getpid()}:{_this_start()}"


def owner_alive(owner: str | None) -> bool:
    """Whether ``owner`` names a live start of a process on this host (another host's counts as
    dead)."""
    return owner_state(owner) is True


def owner_state(owner: str | None) -> bool | None:
    """Whether ``owner``'s process lives: True or False where this host can tell, None for a
    process of another host (only its lease can tell)."""
    if not owner:
        return False
    parts = owner.split(":")
    if len(parts) not in (2, 3):
        return False
    host, pid, start = parts[0], parts[1], parts[2] if len(parts) == 3 else ""
    if host != socket.gethostname():
        return None
    if not (pid.isascii() and pid.isdigit() and len(pid) < 10):
        return False
    number = int(pid)
    if number == os.getpid():
        return start == _this_start()  # this process writes its start: any other is dead
    try:
        os.kill(number, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    if start and not start.startswith("r"):  # a start time: the PID's process must match it
        return start_time(number) in (start, None)
    return True


def lease_expired(lease: Lease, now: float, process: bool | None) -> bool:
    """Whether the replica holding ``lease`` is gone at ``now``. Pure.

    ``process`` is what this host knows of the replica's process (``owner_state``): False when
    it is seen gone, None on another host. A lease runs out at ``expires_at``; a process seen
    gone ends its lease early (a restart on one host need not wait for it), and a live process
    whose lease ran out is gone all the same (it could not renew it: its threads are others'
    now).
    """
    return process is False or now >= lease.expires_at
