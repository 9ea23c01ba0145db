"""The one root of every error the service raises, and the storage layer's errors.

An error carries what the HTTP edge answers: its ``code`` (the error body's code) and
``http_status``, both named in the class statement, a ``message`` (by default the first
paragraph of the class docstring), and optionally the ``field`` it is about, response
``headers`` and ``extra`` fields of the body. The edge (``app.http.handle_error``) answers
``{"error": {"code", "message", "field", **extra}}``. An error of status 500 is internal: it is
logged with its traceback and the caller gets ``internal_error`` without its message, whatever
its class. Internal errors have codes of their own all the same: logs and run records name them.

The tree (class, module, status, code)::

    HeartbeatError           ledger.errors          500 internal_error
    ├── ApiError             app.http               4xx as raised: a request the edge refuses
    ├── _TooLarge            app.security           413 body_too_large
    ├── SettingsError        app.settings           500 invalid_settings: stops start-up
    ├── ConfigError          ledger.config          422 invalid_config
    ├── NotFound             ledger.errors          404 not_found
    ├── Conflict             ledger.errors          409 conflict
    │   ├── RevisionConflict ledger.errors          409 revision_conflict (+ current_revision)
    │   ├── RunEnded         ledger.errors          409 run_ended
    │   └── RunInFlight      loops.executor         409 run_in_flight (+ run_id)
    ├── WakeRefused          loops.wakes            429 wake_refused (Retry-After; + limit)
    ├── LedgerError          ledger.errors          500 storage_error
    │   ├── StorageBusy      ledger.errors          503 storage_busy (Retry-After: 1)
    │   │   └── StorageUnavailable ledger.errors    503 storage_unavailable (Retry-After: 5)
    │   ├── StorageFault     ledger.errors          503 storage_fault: what SQLite's file met
    │   │   ├── StorageFull      ledger.errors      503 storage_full
    │   │   ├── StorageReadOnly  ledger.errors      503 storage_read_only
    │   │   ├── StorageCorrupt   ledger.errors      503 storage_corrupt (damaged, not a database)
    │   │   └── StorageIOError   ledger.errors      503 storage_io_error
    │   └── StoreClosed      ledger.errors          503 shutting_down (Retry-After: 5)
    ├── InstructionsTooLarge loops.workspace        413 too_large
    ├── InstructionsUnusable loops.workspace        409 instructions_unusable
    ├── LLMError             loops.llm.base         500 llm_error (what failed: ``.reason``)
    ├── _Stopped             loops.llm.embedded     500 generation_stopped
    ├── EndRun               loops.lifecycle        500 run_ended (a step ends its run)
    ├── OutputError          loops.journal_prompts  500 invalid_output
    ├── Overflowed           loops.events           500 subscriber_overflowed
    └── Closed               loops.events           500 bus_closed
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "Conflict",
    "HeartbeatError",
    "LedgerError",
    "NotFound",
    "RevisionConflict",
    "StorageBusy",
    "StorageCorrupt",
    "StorageFault",
    "StorageFull",
    "StorageIOError",
    "StorageReadOnly",
    "StorageUnavailable",
    "StoreClosed",
]


class HeartbeatError(Exception):
    """Something went wrong inside the service."""

    code: str = "internal_error"
    http_status: int = 500
    headers: Mapping[str, str] | None = None

    def __init_subclass__(
        cls,
        *,
        code: str | None = None,
        http_status: int | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code
        if http_status is not None:
            cls.http_status = http_status
        if headers is not None:
            cls.headers = headers

    def __init__(
        self,
        message: str | None = None,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.message = message or _default_message(type(self))
        super().__init__(self.message)
        self.field = field
        if headers is not None:
            self.headers = headers
        self.extra: Mapping[str, Any] = extra or {}

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # copy and pickle rebuild the instance from its attributes, whatever its __init__ takes
        return (_rebuild, (type(self), self.args), self.__dict__)


def _default_message(cls: type[HeartbeatError]) -> str:
    """The first paragraph of the nearest docstring in the class's ancestry, on one line."""
    for klass in cls.__mro__:
        doc = klass.__dict__.get("__doc__")
        if doc:
            return " ".join(doc.strip().split("\n\n")[0].split())
    return "internal error"


def _rebuild(cls: type[HeartbeatError], args: tuple[Any, ...]) -> HeartbeatError:
    err = cls.__new__(cls)
    err.args = args
    return err


class NotFound(HeartbeatError, code="not_found", http_status=404):
    """The requested record does not exist."""

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident!r} does not exist", field=f"{kind}_id")
        self.kind = kind
        self.ident = ident


class Conflict(HeartbeatError, code="conflict", http_status=409):
    """The write conflicts with the current state."""


class RevisionConflict(Conflict, code="revision_conflict"):
    """A save that was made on top of a revision that is no longer the current one."""

    def __init__(self, what: str, base: str, current: str) -> None:
        super().__init__(
            f"{what} was saved by someone else meanwhile: this save was made on revision"
            f" {base!r}, the current revision is {current!r}; reload it and save again",
            field="base_revision",
            extra={"current_revision": current},
        )
        self.base = base
        self.current = current


class RunEnded(Conflict, code="run_ended"):
    """A run's finish came after the run was ended by someone else (marked ``interrupted`` when
    its replica's lease ran out): the row keeps what it says, the late outcome is not written."""

    def __init__(self, run_id: int, status: str) -> None:
        super().__init__(f"run {run_id} is {status} already; its late outcome is not recorded")
        self.run_id = run_id
        self.status = status


class LedgerError(HeartbeatError, code="storage_error"):
    """The storage layer failed."""


class StorageBusy(LedgerError, code="storage_busy", http_status=503, headers={"Retry-After": "1"}):
    """The database stayed locked by another writer; try again shortly."""


class StorageUnavailable(StorageBusy, code="storage_unavailable", headers={"Retry-After": "5"}):
    """The connection to the database was lost and could not be made again yet (the server
    restarted, the network is away); try again shortly. A ``StorageBusy``: what waits out a
    lock (a run's finishing write) waits this out too."""

    def __init__(self, message: str = "the database cannot be reached; try again shortly") -> None:
        super().__init__(message)


class StorageFault(LedgerError, code="storage_fault", http_status=503):
    """The database's file or disk failed; what failed and what to do is in the message.

    Raised as one of its subclasses, made from SQLite's error by
    ``ledger.storage.faults.storage_fault``. ``path`` is the database file, when known (the
    message names it); ``cause`` SQLite's own words, or ``found`` what the service itself found.
    """

    says: str | None = None
    """The message, naming ``{file}`` (the database file, by its path when known) and
    ``{said}`` (SQLite's words, or what was found); None: the docstring's first paragraph."""
    lasting = False
    """Whether the fault lasts until someone repairs the file (not until space is freed)."""

    def __init__(
        self,
        message: str | None = None,
        *,
        path: str | None = None,
        cause: str | None = None,
        found: str | None = None,
    ) -> None:
        if message is None and self.says is not None:
            said = f" ({found})" if found else f" (SQLite: {cause})" if cause else ""
            file = f"the database file {path}" if path else "the database file"
            message = self.says.format(file=file, said=said)
        super().__init__(message)
        self.path = path
        self.cause = cause


class StorageFull(StorageFault, code="storage_full"):
    """The database's disk is full: nothing can be written until space is freed (reads work)."""

    says = (
        "{file} cannot grow: its disk is full{said}; free space on that disk: nothing can be"
        " written until then (reads work meanwhile)"
    )


class StorageReadOnly(StorageFault, code="storage_read_only"):
    """The database is read-only (file, directory or disk): nothing can be written (reads
    work)."""

    says = (
        "{file} is read-only{said}; make the file, its directory and its disk writable: nothing"
        " can be written until then (reads work meanwhile)"
    )


class StorageCorrupt(StorageFault, code="storage_corrupt"):
    """The database file is damaged or is not a Heartbeat database."""

    says = (
        "{file} is damaged or is not a Heartbeat database{said}; with the service stopped,"
        " restore the file from a backup, or move it away together with its -wal and -shm files"
        " to start on a new, empty database"
    )
    lasting = True


class StorageIOError(StorageFault, code="storage_io_error"):
    """Reading or writing the database file failed at the disk."""

    says = (
        "reading or writing {file} failed at the disk{said}; check the disk and its file system"
        " (the system log names the failure), then restart the service"
    )
    lasting = True


class StoreClosed(LedgerError, code="shutting_down", http_status=503, headers={"Retry-After": "5"}):
    """The database is closed: the service is shutting down."""
