"""Errors raised by the storage layer.

LedgerError
├── NotFound            a thread, post or run that does not exist
├── Conflict            a state that forbids the write (e.g. a run already in flight)
├── StorageBusy         the database stayed locked by another writer past every retry
└── StoreClosed         a write after the store was closed (shutdown)
"""

from __future__ import annotations


class LedgerError(Exception):
    """The storage layer failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())
        self.message = message or (self.__doc__ or "").strip()


class NotFound(LedgerError):
    """The requested record does not exist."""

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident!r} does not exist")
        self.kind = kind
        self.ident = ident


class Conflict(LedgerError):
    """The write conflicts with the current state."""


class StorageBusy(LedgerError):
    """The database stayed locked by another writer; try again shortly."""


class StoreClosed(LedgerError):
    """The database is closed: the service is shutting down."""
