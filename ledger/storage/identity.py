"""Which process owns a ``running`` row (``host:pid``), and whether that process still lives.

A restart marks the rows of dead owners ``interrupted`` and leaves live processes' rows alone,
so two processes can share one database file.
"""

from __future__ import annotations

import os
import socket


def process_owner() -> str:
    """Identify this process in ``runs.owner`` so a restart can tell its own dead rows."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str | None) -> bool:
    """Whether ``owner`` names a live process on this host (another host's counts as dead)."""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
