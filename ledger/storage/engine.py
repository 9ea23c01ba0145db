"""The storage engine: one writer thread with group commit (``Engine``, shared by every
backend), and SQLite's (``SqliteEngine``): its connections, a pool of readers, the migrations.

Domain-free: it runs functions of a transaction object it is told how to make, and queries it
is given; it knows no table.

One long-lived connection writes. Every write is a plain function of a transaction object,
handed to ``Engine.write``; it runs in that connection's thread, so a whole transaction costs
one thread round trip, and writes arriving meanwhile share the next transaction (group commit),
each in its own savepoint, so a failing write rolls back only itself. A batch holds at most
``WRITE_BATCH`` writes; writes given with ``first=True`` go ahead of the queued ones. Each
transaction opens with ``BEGIN IMMEDIATE`` (so a second process waits for the file lock instead
of failing half-way) and is retried with backoff while another process holds the database
locked. A few reader connections serve reads, which WAL lets run beside the writer; several
queries can be read from one snapshot in one thread round trip. ``ledger.storage.postgres``
makes the same transactions on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import re
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, cast

import aiosqlite

from ledger.errors import (
    Conflict,
    HeartbeatError,
    StorageBusy,
    StorageFault,
    StorageUnavailable,
    StoreClosed,
)
from ledger.storage.faults import is_locked, storage_fault

log = logging.getLogger(f"heartbeat.{__name__}")

WRITE_BATCH = 200  # writes per group-commit transaction at most
READERS = 3  # reader connections: API reads do not queue behind the runs' context reads
BUSY_ATTEMPTS = 8  # transactions tried while another process holds the write lock

T = TypeVar("T")
TxT = TypeVar("TxT")
TxT_co = TypeVar("TxT_co", covariant=True)

# A write and the future its caller awaits.
_Pending = tuple[Callable[[Any], Any], asyncio.Future[Any]]


@dataclass(frozen=True, slots=True)
class Query(Generic[T]):
    """A read: its SQL, its parameters and how its rows become records."""

    sql: str
    params: tuple[Any, ...]
    build: Callable[[list[Any]], T]


class Cursor(Protocol):
    """What the aggregates read of a statement's cursor (``sqlite3.Cursor`` has it)."""

    @property
    def rowcount(self) -> int: ...

    @property
    def lastrowid(self) -> int | None: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The writer's connection as the aggregates use it: SQLite's SQL with ``?`` placeholders.

    ``sqlite3.Connection`` is one; another backend hands over an adapter that translates the
    SQL to its dialect (``ledger.storage.pg_dialect``).
    """

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...


class SqlTx:
    """What every transaction object holds: the writer's connection and the transaction's time.

    Used only in the writer's thread, inside the transaction the engine opened.
    """

    def __init__(self, conn: Connection, now: float) -> None:
        self.conn = conn
        self.now = now

    def _one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        rows = self.conn.execute(sql, tuple(params)).fetchall()
        return next(iter(rows), None)


# -- the one use of aiosqlite's private insides -----------------------------------------------
# aiosqlite's public API hands over one statement per thread round trip. To run a whole
# transaction (or one snapshot's queries) in the connection's own thread, where its sqlite3
# connection lives, ``in_thread`` uses ``Connection._execute`` and ``Connection._conn``. This is
# why pyproject.toml pins aiosqlite below 0.23; tests/integration/test_engine.py fails with a
# clear message if a release changes either.
PRIVATE_API = ("_execute", "_conn")


def check_aiosqlite() -> None:
    """Raise a clear error if aiosqlite no longer has what ``in_thread`` relies on."""
    execute = getattr(aiosqlite.Connection, "_execute", None)
    missing = [name for name in PRIVATE_API if not hasattr(aiosqlite.Connection, name)]
    if missing or not inspect.iscoroutinefunction(execute):
        version = getattr(aiosqlite, "__version__", "?")
        raise RuntimeError(
            f"aiosqlite {version} changed Connection.{' and Connection.'.join(PRIVATE_API)},"
            " which ledger/storage/engine.py (in_thread) uses to run a whole transaction in"
            " the connection's thread; install the aiosqlite version pinned in pyproject.toml"
        )


def in_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
    """Run ``fn(sqlite3_connection, *args)`` in ``conn``'s own thread; one round trip."""
    run = cast(Callable[..., Awaitable[T]], conn._execute)
    return run(fn, conn._conn, *args)


# -- in the writer's thread -------------------------------------------------------------------
class Locked(HeartbeatError, code="storage_locked"):
    """Another process's writer held the database (or a row) locked: the transaction retries."""


class Disconnected(Locked, code="storage_disconnected"):
    """The connection was cut before the transaction committed (so the server rolled it back):
    the transaction retries, on a new connection."""


def apply_writes(
    execute: Callable[[str], object],
    tx: Any,
    fns: list[Callable[[Any], Any]],
    in_transaction: Callable[[], bool] = lambda: True,
) -> tuple[list[tuple[bool, Any]], bool]:
    """Run ``fns`` on ``tx`` inside an open transaction, each isolated; used by every backend.

    Returns (ok, value) per fn, and whether the transaction is still open (to be committed).
    A lone write runs bare: if it raises, the whole transaction is rolled back here. Several
    share the transaction, each in its own savepoint, so one that raises rolls back only itself.
    ``Locked`` (a lock conflict with another process) ends the whole transaction, to be retried.
    Some faults end the transaction in the database itself (SQLite on a full disk):
    ``in_transaction`` tells, and a batch whose transaction is gone fails whole.
    """
    if len(fns) == 1:
        try:
            return [(True, fns[0](tx))], True
        except Locked:
            raise
        except Exception as exc:
            if in_transaction():
                execute("ROLLBACK")
            return [(False, exc)], False
    out: list[tuple[bool, Any]] = []
    for fn in fns:
        execute("SAVEPOINT one_write")
        try:
            out.append((True, fn(tx)))
        except Locked:  # the whole transaction is retried
            raise
        except Exception as exc:
            if not in_transaction():  # the database rolled back all: the batch failed
                raise
            execute("ROLLBACK TO SAVEPOINT one_write")
            out.append((False, exc))
        execute("RELEASE SAVEPOINT one_write")
    return out, True


def _apply(
    conn: sqlite3.Connection,
    make_tx: Callable[[sqlite3.Connection, float], Any],
    fns: list[Callable[[Any], Any]],
    now: float,
) -> list[tuple[bool, Any]]:
    """Run ``fns`` in one transaction (in the writer's thread). Returns (ok, value) per fn."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if is_locked(exc):
            raise Locked() from exc
        raise
    try:
        out, still_open = apply_writes(
            conn.execute, make_tx(conn, now), fns, lambda: conn.in_transaction
        )
        if still_open:
            conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return out


def _read_all(conn: sqlite3.Connection, queries: Sequence[Query[Any]]) -> list[list[Any]]:
    """Run ``queries`` in one read transaction (in a reader's thread)."""
    conn.execute("BEGIN")
    try:
        return [conn.execute(q.sql, q.params).fetchall() for q in queries]
    finally:
        conn.execute("COMMIT")


class Engine(Generic[TxT_co]):
    """Writes of ``TxT_co`` objects with group commit, and reads of rows; any backend.

    A backend subclass says how one transaction of writes is made in its writer thread
    (``_transact``, raising ``Locked`` to be retried), how rows are read (``rows``,
    ``fetch_many``) and how its connections close (``_disconnect``). See the module doc.
    """

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._pending: deque[_Pending] = deque()
        self._first: deque[_Pending] = deque()
        self._pump: asyncio.Task[None] | None = None
        self.busy_retries = 0
        self.transactions = 0  # committed write transactions (each may hold several writes)
        self.closed = False
        self.where: str | None = None  # the database's file, named in a fault's message
        # the storage fault the database last answered; a full disk's or a read-only file's
        # ends with the next write that succeeds, a damaged file's or the disk's (``lasting``)
        # only with a restart
        self.fault: StorageFault | None = None
        self._logged: set[type[StorageFault]] = set()  # each kind is logged once while it lasts

    def _fault(self, exc: BaseException) -> StorageFault | None:
        """``exc`` as a storage fault (recorded; logged the first time its kind is met), or
        None when it is not one."""
        fault = storage_fault(exc, self.where)
        if fault is None:
            return None
        fault.__cause__ = exc
        if self.fault is None or not self.fault.lasting:
            self.fault = fault
        if type(fault) not in self._logged:
            self._logged.add(type(fault))
            log.error("storage fault: %s", fault.message)
        return fault

    @contextlib.contextmanager
    def _faults(self) -> Iterator[None]:
        """Raise a storage fault in place of SQLite's error that is one."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            fault = self._fault(exc)
            if fault is None:
                raise
            raise fault from exc

    def _fault_or(self, value: Any) -> Any:
        return self._fault(value) or value

    def _wrote(self) -> None:
        """A write succeeded: a fault that only stopped writes is over."""
        if self.fault is not None and not self.fault.lasting:
            log.info("the database accepts writes again (%s is over)", self.fault.code)
            self._logged.discard(type(self.fault))
            self.fault = None

    def now(self) -> float:
        return self._now()

    async def close(self) -> None:
        """Refuse new writes, finish the queued ones, then close every connection."""
        self.closed = True
        while self._pump is not None:
            await asyncio.shield(self._pump)
        await self._disconnect()

    async def _disconnect(self) -> None:
        raise NotImplementedError

    def _transact(self, fns: list[Callable[[Any], Any]], now: float) -> Awaitable[list[Any]]:
        """One transaction of ``fns`` in the writer's thread: (ok, value) per fn."""
        raise NotImplementedError

    # -- writing ----------------------------------------------------------------------------
    async def write(self, fn: Callable[[TxT_co], T], *, first: bool = False) -> T:
        """Run ``fn`` inside a write transaction in the writer's thread and return its result.

        ``fn`` must not block on anything but the database. It commits with the other writes of its
        batch; if it raises, its own changes are rolled back and the exception is raised here.
        A write with ``first`` goes ahead of the queued ones.
        """
        if self.closed:
            raise StoreClosed()
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        (self._first if first else self._pending).append((fn, fut))
        if self._pump is None:
            self._pump = asyncio.create_task(self._pump_writes(), name="store-writer")
        return await fut

    async def _pump_writes(self) -> None:
        try:
            while self._first or self._pending:
                # A bounded batch (resolving it wakes its callers in one loop iteration). A
                # write whose caller was cancelled before its batch started is not made.
                batch: list[_Pending] = []
                for queue in (self._first, self._pending):
                    while queue and len(batch) < WRITE_BATCH:
                        fn, fut = queue.popleft()
                        if not fut.done():
                            batch.append((fn, fut))
                if not batch:
                    continue
                try:
                    results = await self._commit([fn for fn, _ in batch])
                except Exception as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                except BaseException:  # cancelled: the batch may or may not have committed
                    for _, fut in batch:
                        fut.cancel()
                    raise
                for (_, fut), (ok, value) in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(value)
        finally:
            self._pump = None
            for queue in (self._first, self._pending):  # only when the pump was cancelled
                while queue:
                    queue.popleft()[1].cancel()

    async def _commit(
        self, fns: list[Callable[[Any], Any]], *, attempts: int = BUSY_ATTEMPTS
    ) -> list[tuple[bool, Any]]:
        """One transaction for ``fns``; waits with backoff while another process writes."""
        delay = 0.05
        for attempt in range(1, attempts + 1):
            try:
                with self._faults():
                    results = await self._transact(fns, self._now())
            except Locked as exc:
                cut = isinstance(exc, Disconnected)
                if attempt == attempts:
                    raise (StorageUnavailable() if cut else StorageBusy()) from exc.__cause__
                self.busy_retries += 1
                if cut:
                    log.warning(
                        "lost the database connection (%s); retry %d", exc.__cause__, attempt
                    )
                else:
                    log.warning("database locked by another writer; retry %d", attempt)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
                continue
            self.transactions += 1
            if any(ok for ok, _ in results):
                self._wrote()
            return [(ok, value if ok else self._fault_or(value)) for ok, value in results]
        raise AssertionError("unreachable")  # pragma: no cover

    # -- reading ----------------------------------------------------------------------------
    async def rows(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        raise NotImplementedError

    async def row(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return next(iter(await self.rows(sql, params)), None)

    async def fetch(self, query: Query[T]) -> T:
        return query.build(await self.rows(query.sql, query.params))

    async def fetch_many(self, queries: Sequence[Query[Any]]) -> list[Any]:
        """Several queries in one read transaction (one snapshot)."""
        results = await self._snapshot(queries)
        return [q.build(rows) for q, rows in zip(queries, results, strict=True)]

    async def _snapshot(self, queries: Sequence[Query[Any]]) -> list[list[Any]]:
        """The rows of each query, all read from one snapshot."""
        raise NotImplementedError


class SqliteEngine(Engine[TxT_co]):
    """An open SQLite file: its writer connection and its readers (aiosqlite)."""

    def __init__(
        self,
        writer: aiosqlite.Connection,
        readers: list[aiosqlite.Connection],
        now: Callable[[], float],
        make_tx: Callable[[sqlite3.Connection, float], TxT_co],
    ) -> None:
        super().__init__(now)
        self._w = writer
        self._readers = readers
        self._free: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        for reader in readers:
            self._free.put_nowait(reader)
        self._make_tx = make_tx

    async def _disconnect(self) -> None:
        for reader in self._readers:
            await reader.close()
        await self._w.close()

    def _transact(self, fns: list[Callable[[Any], Any]], now: float) -> Awaitable[list[Any]]:
        return in_thread(self._w, _apply, self._make_tx, fns, now)

    # One statement at a time per reader connection: overlapping statements would keep its
    # read transaction (its WAL snapshot) open, and later reads would miss commits made since.
    async def rows(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        reader = await self._free.get()
        try:
            with self._faults():  # execute and fetch in one round trip: the snapshot closes
                return list(await reader.execute_fetchall(sql, tuple(params)))
        finally:
            self._free.put_nowait(reader)

    async def _snapshot(self, queries: Sequence[Query[Any]]) -> list[list[Any]]:
        reader = await self._free.get()  # one thread round trip
        try:
            with self._faults():
                return await in_thread(reader, _read_all, queries)
        finally:
            self._free.put_nowait(reader)


async def open_engine(
    path: Path,
    *,
    now: Callable[[], float],
    make_tx: Callable[[sqlite3.Connection, float], TxT],
    migrations: Sequence[str],
    readers: int = READERS,
) -> SqliteEngine[TxT]:
    """Open (creating if need be) and migrate the file; a writer and ``readers`` readers."""
    check_aiosqlite()
    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
    writer = await aiosqlite.connect(str(path), isolation_level=None)
    opened: list[aiosqlite.Connection] = []
    try:
        await writer.execute("PRAGMA busy_timeout = 2000")
        await writer.execute("PRAGMA journal_mode = WAL")
        await writer.execute("PRAGMA synchronous = NORMAL")
        await writer.execute("PRAGMA foreign_keys = ON")
        await migrate(writer, migrations)
        for _ in range(max(1, readers)):
            reader = await aiosqlite.connect(str(path), isolation_level=None)
            opened.append(reader)
            await reader.execute("PRAGMA busy_timeout = 2000")
            await reader.execute("PRAGMA query_only = ON")
    except BaseException as exc:
        for conn in opened:
            await conn.close()
        await writer.close()
        fault = storage_fault(exc, str(path))
        if fault is not None:
            raise fault from exc
        raise
    engine = SqliteEngine(writer, opened, now, make_tx)
    engine.where = str(path)
    return engine


def pending_migrations(current: int, migrations: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
    """The migrations past version ``current``: (version, its statements), in order.

    A database whose version is newer than ``migrations`` knows is refused (``Conflict``).
    """
    if current > len(migrations):
        raise Conflict(
            f"database schema version {current} is newer than this program knows"
            f" ({len(migrations)}); upgrade heartbeat"
        )
    for version, script in enumerate(migrations[current:], start=current + 1):
        log.info("applying database migration %d", version)
        yield version, split_statements(script)


_DOLLAR_QUOTE = re.compile(r"\$\w*\$")


def split_statements(script: str) -> list[str]:
    """A migration script's statements: split at each ``;`` outside a dollar-quoted body (the
    body of a PostgreSQL function holds semicolons of its own); blank ones left out."""
    statements: list[str] = []
    start = pos = 0
    while (end := script.find(";", pos)) != -1:
        quote = _DOLLAR_QUOTE.search(script, pos, end)
        if quote is not None:  # skip to the end of the quoted body
            close = script.find(quote.group(0), quote.end())
            if close == -1:
                break
            pos = close + len(quote.group(0))
            continue
        statements.append(script[start:end])
        start = pos = end + 1
    statements.append(script[start:])
    return [statement for statement in statements if statement.strip()]


async def migrate(conn: aiosqlite.Connection, migrations: Sequence[str]) -> None:
    """Apply the migrations past ``PRAGMA user_version``, in order, recording each one there.

    Safe when two processes start on one file at once (``BEGIN IMMEDIATE``). A file whose
    version is newer than ``migrations`` knows is refused.
    """
    await conn.execute("BEGIN IMMEDIATE")
    try:
        async with conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        for version, statements in pending_migrations(int(row[0]) if row else 0, migrations):
            for statement in statements:
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {version:d}")
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
