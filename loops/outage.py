"""A database outage as a retrying loop sees it: one warning as it starts, one line as it ends,
and the back-off between its tries.

A loop whose work the database cannot take (``WAITED_OUT``) keeps an ``Outage``. After a try
that failed, ``failed(exc)`` returns how long to wait before the next one (``first``, doubling
up to ``most``; a fixed interval is ``first == most``) and, the first time only, logs the
warning. After a try that went through, ``succeeded()`` logs the end with the seconds since the
first failure, if there was one, and starts the back-off over.

The lines are the caller's, logged by its logger, with ``%(name)s`` fields: the warning has
``kind`` (``waits_for``: "connection", "lock", "file to take writes (storage_read_only)" …),
``first``, ``most`` and ``exc``, the end line ``seconds``; each has too the fields
given to ``failed`` or ``succeeded``.
Time is the injected clock's.
"""

from __future__ import annotations

import logging

from ledger.errors import (
    StorageBusy,
    StorageFault,
    StorageFull,
    StorageReadOnly,
    StorageUnavailable,
)
from loops.clock import Clock

# what a retrying loop waits out: the database away or locked (``StorageBusy``), or its file
# refusing (``StorageFault``: a full disk or a read-only file clears by itself; a damaged one
# needs a restart anyway, and nothing owed is dropped meanwhile)
WAITED_OUT: tuple[type[Exception], ...] = (StorageBusy, StorageFault)


def waits_for(exc: Exception) -> tuple[str, str]:
    """What a try that failed with ``exc`` waits for, worded to follow "waits for the
    database", and what ends the wait, worded to follow "after"."""
    if isinstance(exc, StorageUnavailable):
        return "connection", "the database connection came back"
    if isinstance(exc, StorageFull):
        return "disk to have space again (storage_full)", "space was freed on the database's disk"
    if isinstance(exc, StorageReadOnly):
        return "file to take writes (storage_read_only)", "the database took writes again"
    if isinstance(exc, StorageFault):
        return f"file to be repaired ({exc.code})", "the database file was repaired"
    return "lock", "the database lock freed"


class Outage:
    def __init__(
        self,
        clock: Clock,
        log: logging.Logger,
        *,
        first: float,
        most: float,
        down: str,
        back: str,
    ) -> None:
        self.clock = clock
        self.log = log
        self.first = first  # the wait after the first failed try
        self.most = most  # the longest wait between two tries
        self.down = down  # the warning as the outage starts
        self.back = back  # the line as it ends
        self.since: float | None = None  # when the tries began to fail, while they do
        self.delay = first  # the wait after the next failed try

    def failed(self, exc: Exception, **fields: object) -> float:
        """A try failed: the seconds to wait before the next. The first failure of an outage
        logs the warning."""
        delay = self.delay
        self.delay = min(delay * 2, self.most)
        if self.since is None:
            self.since = self.clock.now()
            facts = {"kind": waits_for(exc)[0], "first": self.first, "most": self.most, "exc": exc}
            self.log.warning(self.down, {**facts, **fields})
        return delay

    def succeeded(self, **fields: object) -> None:
        """A try went through: the end of the outage is logged, if there was one."""
        if self.since is not None:
            self.log.info(self.back, {"seconds": self.clock.now() - self.since, **fields})
        self.since, self.delay = None, self.first
