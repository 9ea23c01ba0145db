"""The PostgreSQL backend: ``PostgresStore`` (a ``Storage``) over psycopg 3.

The same aggregates as SQLite (``ledger.storage.aggregates``), their SQL rendered by
``ledger.storage.pg_dialect``, over a ``PostgresEngine``:

- one synchronous psycopg connection writes, in its own thread: each transaction of writes
  (group commit, a savepoint per write, as in ``ledger.storage.engine``) is one hand-over to
  that thread. A deadlock or serialization failure with another process retries the whole
  transaction with backoff, like SQLite's lock;
- a few asynchronous psycopg connections read, one statement each at a time (each statement
  sees one committed snapshot); ``fetch_many`` reads its queries in one REPEATABLE READ
  transaction, one snapshot, sent as one query string: the whole transaction is one round trip;
- values are bound on the client (psycopg's ``ClientCursor``): SQLite's untyped ``? IS NULL``
  needs no cast, and every float is sent in full (``repr``), so slots compare exactly;
- a connection found broken is replaced before its next use;
- the migrations are those of ``ledger.storage.migrations``, rendered, applied in one
  transaction under an advisory lock (however many processes start together, each is applied
  once) and recorded in the table ``heartbeat_schema``.

Open with ``await PostgresStore.open("postgresql://...", now=...)``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql as pg_sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from ledger.errors import StorageUnavailable
from ledger.records import ChangeBatch, InstructionsChange, RunChange
from ledger.storage.aggregates import SqlStore, SqlStoreTx
from ledger.storage.engine import (
    READERS,
    Disconnected,
    Engine,
    Locked,
    Query,
    apply_writes,
    pending_migrations,
)
from ledger.storage.interface import ChangeFeed, Storage
from ledger.storage.migrations import MIGRATIONS, POSTGRES_SCRIPTS
from ledger.storage.pg_dialect import Dialect, render_migration

T = TypeVar("T")
TxT_co = TypeVar("TxT_co", covariant=True)

log = logging.getLogger(f"heartbeat.{__name__}")

MIGRATION_LOCK = 0x6862_6D69  # the advisory lock key the migration transaction holds
WRITER_ID_BYTES = 6  # a store's writer id: this many random bytes, in hex
FEED_CHECK = 10.0  # seconds of silence after which the change feed checks its connection
FEED_RETRY_FIRST = 0.5  # seconds before the change feed's first attempt to reconnect, at most
FEED_RETRY_MAX = 30.0  # its longest wait between two attempts
SNAPSHOT_BEGIN = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"  # a read of several queries
_CONFLICTS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)

SyncConn = psycopg.Connection[tuple[Any, ...]]
AsyncConn = psycopg.AsyncConnection[tuple[Any, ...]]


def check_url(url: str) -> None:
    """Raise ``ValueError`` (its text without the URL, which may hold a password) if the
    driver cannot read ``url``."""
    try:
        ports = str(conninfo_to_dict(url).get("port") or "")
    except psycopg.ProgrammingError as exc:
        reason = str(exc).strip()
        raise ValueError(f"not a connection URL the driver can read ({reason})") from None
    if not all(port.isdigit() for port in ports.split(",") if port):
        raise ValueError("a port must be a number")


def location(url: str) -> str:
    """The server and database of ``url``, without credentials, for log lines."""
    info = conninfo_to_dict(url)
    return f"postgresql://{info.get('host', 'localhost')}:{info.get('port', 5432)}/" + str(
        info.get("dbname", "")
    )


def _connect(url: str, writer: str) -> SyncConn:
    """The writer's connection; its ``heartbeat.writer`` setting names it in the changes it
    makes (``ledger.storage.migrations``' notifications)."""
    conn = psycopg.connect(url, autocommit=True, cursor_factory=psycopg.ClientCursor)
    conn.execute("SELECT set_config('heartbeat.writer', %s, false)", (writer,))
    return conn


async def _connect_async(url: str) -> AsyncConn:
    return await psycopg.AsyncConnection.connect(
        url, autocommit=True, cursor_factory=psycopg.AsyncClientCursor
    )


class _Result:
    """What the aggregates read of a statement (``ledger.storage.engine.Cursor``)."""

    __slots__ = ("_rows", "lastrowid", "rowcount")

    def __init__(self, rowcount: int, lastrowid: int | None, rows: list[Any]) -> None:
        self.rowcount = rowcount
        self.lastrowid = lastrowid
        self._rows = rows

    def fetchall(self) -> list[Any]:
        return self._rows


class PgConnection:
    """The writer's connection as the aggregates use it (``ledger.storage.engine.Connection``):
    their SQLite SQL, rendered by the dialect, run on psycopg. Only in the writer's thread.

    Transaction control (``BEGIN``, the savepoints around each write of a batch) answers
    nothing the writes need, so it is not sent on its own: ``control`` keeps it, and it goes
    out in front of the next statement, in the same query string (the simple query protocol
    runs them in order; an error stops the string there, as separate statements would). A
    write of a batch costs no round trip beyond its own statements, and a transaction one more,
    its ``COMMIT``."""

    def __init__(self, url: str, dialect: Dialect, writer: str) -> None:
        self.url = url
        self.writer = writer
        self.raw = _connect(url, writer)
        self._dialect = dialect
        self._pending: list[str] = []  # transaction control not sent yet
        self._fresh = False  # nothing of the open transaction has reached the server yet

    def _reconnect(self) -> None:
        self.raw.close()
        try:
            self.raw = _connect(self.url, self.writer)
        except psycopg.OperationalError as exc:
            raise Disconnected() from exc

    def begin(self) -> None:
        """Open a transaction (its ``BEGIN`` goes out with the first statement); a connection
        found cut is replaced first. ``Disconnected`` (the transaction retries) if no new one
        can be made."""
        if self.raw.closed or self.raw.broken:
            self._reconnect()
        self._pending = ["BEGIN"]
        self._fresh = True

    def control(self, sql: str) -> None:
        """A transaction control statement: kept for the next statement, except ``COMMIT``
        (sent at once, with what is kept) and ``ROLLBACK`` (what is kept is dropped)."""
        if sql == "ROLLBACK":
            self.rollback()
        elif sql == "COMMIT":
            if self._fresh:  # nothing was sent: there is nothing to commit
                self._pending = []
            else:
                self._send(sql, ())
        else:
            self._pending.append(sql)

    def rollback(self) -> None:
        """End the transaction, if the server has one open, without its changes."""
        self._pending = []
        if not self.raw.broken and self.raw.info.transaction_status != TransactionStatus.IDLE:
            self.raw.execute("ROLLBACK")

    def _send(self, sql: str, parameters: tuple[Any, ...]) -> psycopg.Cursor[Any]:
        """``sql`` after the transaction control kept for it, in one round trip; the cursor on
        ``sql``'s result. The first query of a transaction found its connection cut (an idle
        connection the server closed, say): nothing of the transaction was made, so it goes
        once more on a new connection."""
        text = "; ".join([*self._pending, sql]) if self._pending else sql
        try:
            for attempt in (1, 2):
                try:
                    cur = self.raw.execute(text, parameters)
                    break
                except _CONFLICTS as exc:
                    raise Locked() from exc
                except psycopg.OperationalError as exc:
                    if not self.raw.broken:
                        raise
                    if not self._fresh or attempt == 2:  # cut before the commit: rolled back
                        raise Disconnected() from exc
                    self._reconnect()
        finally:  # sent, whatever its outcome: the server has the transaction now
            self._pending = []
            self._fresh = False
        while cur.nextset():  # the control statements' results come first
            pass
        return cur

    def execute(self, sql: str, parameters: Any = (), /) -> _Result:
        statement = self._dialect.statement(sql)
        cur = self._send(statement.sql, tuple(parameters))
        rows = cur.fetchall() if cur.description is not None else []
        if statement.returns_id:
            return _Result(cur.rowcount, rows[0][0] if rows else None, [])
        return _Result(cur.rowcount, None, rows)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> _Result:
        if self._pending:  # executemany may not carry other statements
            self._send("SELECT 1", ())
        with self.raw.cursor() as cur:
            try:
                cur.executemany(self._dialect.statement(sql).sql, list(parameters))
            except _CONFLICTS as exc:
                raise Locked() from exc
            except psycopg.OperationalError as exc:
                if self.raw.broken:
                    raise Disconnected() from exc
                raise
            return _Result(cur.rowcount, None, [])


def _apply(
    conn: PgConnection,
    make_tx: Callable[[PgConnection, float], Any],
    fns: list[Callable[[Any], Any]],
    now: float,
) -> list[tuple[bool, Any]]:
    """Run ``fns`` in one transaction (in the writer's thread). Returns (ok, value) per fn."""
    conn.begin()
    try:
        try:
            out, still_open = apply_writes(conn.control, make_tx(conn, now), fns)
        except psycopg.OperationalError as exc:
            if conn.raw.broken:  # a ROLLBACK found the connection cut
                raise Disconnected() from exc
            raise
        if still_open:
            try:
                conn.control("COMMIT")
            except Disconnected as exc:
                raise StorageUnavailable(  # not retried: it may have committed
                    "the connection to the database was cut while a write committed; it may"
                    " or may not have been made"
                ) from exc.__cause__
    except BaseException:
        conn.rollback()
        raise
    return out


def migrate(raw: SyncConn, migrations: Sequence[str]) -> None:
    """Apply the migrations past the recorded version, in order, in one transaction.

    The advisory lock makes processes that start together apply them one after the other:
    the first applies them, the others then find nothing to do. A database whose version is
    newer than ``migrations`` knows is refused.
    """
    with raw.transaction():
        raw.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        raw.execute("CREATE TABLE IF NOT EXISTS heartbeat_schema (version INTEGER NOT NULL)")
        row = raw.execute("SELECT version FROM heartbeat_schema").fetchone()
        if row is None:
            raw.execute("INSERT INTO heartbeat_schema (version) VALUES (0)")
        scripts = [POSTGRES_SCRIPTS.get(n, text) for n, text in enumerate(migrations, start=1)]
        for version, statements in pending_migrations(row[0] if row else 0, scripts):
            for statement in statements:
                raw.execute(render_migration(statement))
            raw.execute("UPDATE heartbeat_schema SET version = %s", (version,))


def schema_version(raw: SyncConn) -> int:
    """The recorded schema version (0 before the first migration)."""
    row = raw.execute("SELECT version FROM heartbeat_schema").fetchone()
    return int(row[0]) if row else 0


class PostgresEngine(Engine[TxT_co]):
    """An open PostgreSQL database: the writer in its own thread, async readers."""

    def __init__(
        self,
        url: str,
        writer: PgConnection,
        thread: ThreadPoolExecutor,
        readers: list[AsyncConn],
        now: Callable[[], float],
        make_tx: Callable[[PgConnection, float], TxT_co],
        dialect: Dialect,
    ) -> None:
        super().__init__(now)
        self._url = url
        self._w = writer
        self._thread = thread
        self._readers = readers
        self._free: asyncio.Queue[AsyncConn] = asyncio.Queue()
        for reader in readers:
            self._free.put_nowait(reader)
        self._make_tx = make_tx
        self._dialect = dialect

    @property
    def writer(self) -> str:
        """This engine's writer in the notifications of its changes."""
        return self._w.writer

    async def _disconnect(self) -> None:
        for reader in self._readers:
            await reader.close()
        await asyncio.get_running_loop().run_in_executor(self._thread, self._w.raw.close)
        self._thread.shutdown(wait=False)

    def _transact(self, fns: list[Callable[[Any], Any]], now: float) -> Awaitable[list[Any]]:
        return asyncio.get_running_loop().run_in_executor(
            self._thread, _apply, self._w, self._make_tx, fns, now
        )

    async def _read(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        """The rows of each query, from one snapshot. Reads change nothing, so a read that
        finds its connection cut (the server restarted, say) is made once more on a new one."""
        reader = await self._free.get()
        try:
            try:
                return await self._read_on(reader, queries)
            except psycopg.OperationalError as exc:
                if not (reader.broken or reader.closed):
                    raise
                cut: psycopg.OperationalError = exc
            try:
                fresh = await _connect_async(self._url)
                self._readers[self._readers.index(reader)] = fresh
                await reader.close()
                reader = fresh
                return await self._read_on(reader, queries)
            except psycopg.OperationalError as exc:
                if not (reader.broken or reader.closed):
                    raise
                cut = exc
            raise StorageUnavailable() from cut
        finally:
            self._free.put_nowait(reader)

    async def _read_on(
        self, reader: AsyncConn, queries: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[list[Any]]:
        render = self._dialect.statement
        if len(queries) == 1:
            sql, params = queries[0]
            return [await (await reader.execute(render(sql).sql, tuple(params))).fetchall()]
        # One query string (the simple query protocol runs its statements in order): the whole
        # transaction is one round trip and one wait on the event loop. A failed statement
        # stops the string there and leaves the transaction aborted, to be rolled back.
        texts = [render(sql).sql.rstrip().rstrip(";") for sql, _ in queries]
        out: list[list[Any]] = []
        try:
            cursor = await reader.execute(
                "; ".join([SNAPSHOT_BEGIN, *texts, "COMMIT"]),
                tuple(value for _, params in queries for value in params),
            )
            for _ in queries:
                cursor.nextset()
                out.append(await cursor.fetchall())
        finally:
            if not (reader.broken or reader.closed):
                if reader.info.transaction_status != TransactionStatus.IDLE:
                    await reader.execute("ROLLBACK")
        return out

    async def rows(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        return (await self._read([(sql, tuple(params))]))[0]

    async def _snapshot(self, queries: Sequence[Query[Any]]) -> list[list[Any]]:
        return await self._read([(q.sql, q.params) for q in queries])


async def open_engine(
    url: str,
    *,
    now: Callable[[], float],
    make_tx: Callable[[PgConnection, float], T],
    migrations: Sequence[str],
    readers: int = READERS,
) -> PostgresEngine[T]:
    """Connect, migrate (once, however many processes start together), open the readers."""
    dialect = Dialect(migrations)
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postgres-writer")
    loop = asyncio.get_running_loop()
    opened: list[AsyncConn] = []
    writer: PgConnection | None = None
    try:
        writer = await loop.run_in_executor(
            thread, PgConnection, url, dialect, secrets.token_hex(WRITER_ID_BYTES)
        )
        await loop.run_in_executor(thread, migrate, writer.raw, migrations)
        for _ in range(max(1, readers)):
            opened.append(await _connect_async(url))
    except BaseException:
        for conn in opened:
            await conn.close()
        if writer is not None:
            writer.raw.close()
        thread.shutdown(wait=False)
        raise
    return PostgresEngine(url, writer, thread, opened, now, make_tx, dialect)


def channel_name(schema: str) -> str:
    """The channel the notifications of the tables in ``schema`` go out on (as the triggers
    of ``ledger.storage.migrations`` name it: at most 63 characters)."""
    return f"heartbeat {schema}"[:63]


_decode_change = msgspec.json.Decoder(RunChange | InstructionsChange).decode


class PgChangeFeed:
    """``LISTEN`` on a connection of its own (``ChangeFeed``): the notifications the triggers
    send as each change commits, in commit order, a batch at a time (whatever arrived while
    the last batch was being handled).

    A connection that is lost (or silent for ``FEED_CHECK`` seconds and then found broken) is
    replaced, with backoff from ``FEED_RETRY_FIRST`` to ``FEED_RETRY_MAX`` seconds while the
    server does not answer; the first batch on each new connection is ``resumed``."""

    def __init__(self, url: str, writer: str) -> None:
        self._url = url
        self._writer = writer
        self.connections = 0  # connections made so far (the first, then each reconnection)

    @property
    def writer(self) -> str:
        return self._writer

    async def _connect(self) -> AsyncConn:
        """A listening connection; waits, with backoff, for the server."""
        delay = FEED_RETRY_FIRST
        while True:
            conn: AsyncConn | None = None
            try:
                conn = await _connect_async(self._url)
                row = await (await conn.execute("SELECT current_schema()")).fetchone()
                channel = channel_name(str(row[0]) if row else "public")
                await conn.execute(pg_sql.SQL("LISTEN {}").format(pg_sql.Identifier(channel)))
            except BaseException as exc:
                if conn is not None:
                    await conn.close()
                if not isinstance(exc, psycopg.OperationalError):
                    raise
                log.warning(
                    "change feed: cannot listen on %s (%s); trying again in %.1f s",
                    location(self._url),
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, FEED_RETRY_MAX)
                continue
            self.connections += 1
            return conn

    @staticmethod
    async def _pump(
        conn: AsyncConn, arrived: list[RunChange | InstructionsChange], ready: asyncio.Event
    ) -> None:
        """Queue the connection's notifications until it fails."""
        while True:
            async for note in conn.notifies(timeout=FEED_CHECK):
                try:
                    arrived.append(_decode_change(note.payload))
                except msgspec.DecodeError:
                    log.warning("change feed: a notification not understood: %.200r", note.payload)
                    continue
                ready.set()
            await conn.execute("SELECT 1")  # silent for a while: is the connection still there?

    async def batches(self) -> AsyncGenerator[ChangeBatch, None]:
        while True:
            conn = await self._connect()
            arrived: list[RunChange | InstructionsChange] = []
            ready = asyncio.Event()
            pump = asyncio.create_task(self._pump(conn, arrived, ready), name="change-feed")
            try:
                yield ChangeBatch(changes=[], resumed=True)
                while True:
                    waiter = asyncio.ensure_future(ready.wait())
                    try:
                        await asyncio.wait((waiter, pump), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waiter.cancel()
                    if arrived:
                        batch = arrived[:]
                        arrived.clear()
                        ready.clear()
                        yield ChangeBatch(changes=batch)
                    elif pump.done():
                        break
                exc = pump.exception()
                log.warning(
                    "change feed: lost its connection to %s (%s); reconnecting",
                    location(self._url),
                    exc if exc is not None else "closed",
                )
            finally:
                pump.cancel()
                try:
                    await asyncio.gather(pump, return_exceptions=True)
                finally:
                    await conn.close()


class PostgresStore(SqlStore):
    """A PostgreSQL database: reads, and writes as plain functions of a ``Tx`` (group commit)."""

    _db: PostgresEngine[SqlStoreTx]

    def __init__(self, db: PostgresEngine[SqlStoreTx], url: str) -> None:
        super().__init__(db)
        self._url = url
        self._location = location(url)

    def change_feed(self) -> PgChangeFeed:
        return PgChangeFeed(self._url, self._db.writer)

    @classmethod
    async def open(
        cls, url: str, *, now: Callable[[], float], readers: int = READERS
    ) -> PostgresStore:
        db = await open_engine(
            url, now=now, make_tx=SqlStoreTx, migrations=MIGRATIONS, readers=readers
        )
        return cls(db, url)

    @property
    def shared(self) -> bool:
        return True

    @property
    def location(self) -> str:
        return self._location


if TYPE_CHECKING:  # the type checker verifies that PostgresStore implements Storage
    _: type[Storage] = PostgresStore
    _feed: type[ChangeFeed] = PgChangeFeed
