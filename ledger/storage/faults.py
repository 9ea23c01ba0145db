"""SQLite's faults of the database's file or disk, as the service names them (pure but for
``unusable``, which opens the file).

``storage_fault`` maps what SQLite raises (its result code, or its words when there is none)
to the service's error: a full disk, a read-only file, a damaged file or one that is not a
database, an I/O error; anything else (a lock, a constraint) is not a fault. ``unusable`` is the
check before the service starts, so that a file that cannot serve stops it with one line.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ledger.errors import (
    StorageCorrupt,
    StorageFault,
    StorageFull,
    StorageIOError,
    StorageReadOnly,
)

__all__ = ["FAULT_CODES", "is_locked", "storage_fault", "unusable"]


def is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


# SQLite's primary result codes (the low byte of an extended one, e.g. SQLITE_IOERR_SHORT_READ)
# that are faults of the database's file or disk, and the service's error for each.
FAULT_CODES: dict[int, type[StorageFault]] = {
    sqlite3.SQLITE_FULL: StorageFull,
    sqlite3.SQLITE_READONLY: StorageReadOnly,
    sqlite3.SQLITE_CORRUPT: StorageCorrupt,
    sqlite3.SQLITE_NOTADB: StorageCorrupt,
    sqlite3.SQLITE_IOERR: StorageIOError,
}
_NOT_FAULTS = frozenset({sqlite3.SQLITE_IOERR_NOMEM})  # an I/O code for memory, not the disk
# An error that carries no code (made by hand, or by a wrapper) is told by SQLite's words.
_FAULT_WORDS: tuple[tuple[str, type[StorageFault]], ...] = (
    ("disk is full", StorageFull),
    ("disk full", StorageFull),
    ("readonly", StorageReadOnly),
    ("read-only", StorageReadOnly),
    ("malformed", StorageCorrupt),
    ("not a database", StorageCorrupt),
    ("disk i/o error", StorageIOError),
)


def storage_fault(exc: BaseException, path: str | None = None) -> StorageFault | None:
    """The service's error for a fault of the database's file or disk that SQLite reports (a
    full disk, a read-only file, a damaged file or one that is not a database, an I/O error),
    naming the file at ``path``; None for any other exception (a lock, a constraint...)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        fault = None if code in _NOT_FAULTS else FAULT_CODES.get(code & 0xFF)
    else:
        text = str(exc).lower()
        fault = next((cls for words, cls in _FAULT_WORDS if words in text), None)
    return None if fault is None else fault(path=path, cause=str(exc))


def unusable(path: Path) -> str | None:
    """Why the database file at ``path`` cannot serve, in one line naming the file, or None if
    it can (or if another process holds it locked: that one writes). Checked before the service
    starts, so that it stops with one line instead of failing in its start-up: the file must
    open for writing, be a database, pass SQLite's ``quick_check`` (which reads every page
    once: about 0.3 s per 200 MB) and, if it holds tables, have Heartbeat's schema version."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=0.1, isolation_level=None)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            found = [str(row[0]) for row in conn.execute("PRAGMA quick_check(3)").fetchall()]
            if found != ["ok"]:  # its rows may run over lines: one line of them
                said = " ".join(" ".join(found).replace("*** in database main ***", "").split())
                return StorageCorrupt(path=str(path), cause=said).message
            if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                # another program's database: Heartbeat's tables are not to be added to it
                foreign = "it holds tables, but no Heartbeat schema version"
                return StorageCorrupt(path=str(path), found=foreign).message
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(f"PRAGMA user_version = {version:d}")  # a write, rolled back
            finally:
                conn.execute("ROLLBACK")
        finally:
            conn.close()
    except OSError as exc:
        return f"cannot write the database {path}: {exc.strerror or exc}"
    except sqlite3.Error as exc:
        if isinstance(exc, sqlite3.OperationalError) and is_locked(exc):
            return None
        fault = storage_fault(exc, str(path))
        if isinstance(fault, StorageCorrupt | StorageIOError):
            return fault.message
        return f"cannot write the database {path}: {exc}"
    return None
