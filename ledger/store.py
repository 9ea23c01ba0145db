"""All reads and writes of the SQLite file, through aiosqlite.

One long-lived connection writes. Every write is a plain function of a ``Tx`` handed to
``Store.write``; it runs in that connection's thread, so a whole transaction costs one thread
round trip, and writes arriving meanwhile share the next transaction (group commit). Each
transaction opens with ``BEGIN IMMEDIATE`` (so a second process waits for the file lock instead
of failing half-way) and is retried with backoff while another process holds the database
locked. A few reader connections serve reads, which WAL lets run beside the writer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import aiosqlite
import msgspec

from ledger.errors import Conflict, NotFound, StorageBusy, StoreClosed
from ledger.migrations import MIGRATIONS
from ledger.records import (
    Comment,
    Contradiction,
    Message,
    Post,
    Profile,
    Reason,
    Reflection,
    Run,
    RunContext,
    RunOutcome,
    RunStatus,
    SelfReply,
    Thread,
    Vote,
)

log = logging.getLogger("heartbeat.ledger")

USER = "user"
AGENT = "agent"

_THREAD_COLS = (
    "id, title, created_at, updated_at, heartbeat_config_json, heartbeat_anchor, "
    "heartbeat_next_run, heartbeat_last_run, heartbeat_last_summary, heartbeat_last_actions_json"
)
_RUN_COLS = (
    "id, thread_id, loop, trigger, slot, status, reason, model, action, decision_json, "
    "executed_json, summary, dry_run, error, prompt_tokens, completion_tokens, llm_ms, "
    "started_at, finished_at"
)
_POST_SELECT = (
    "SELECT p.id, p.author, p.title, p.content, p.created_at,"
    " COALESCE((SELECT SUM(v.direction) FROM ledger_votes v WHERE v.post_id = p.id), 0),"
    " (SELECT COUNT(*) FROM ledger_comments c WHERE c.post_id = p.id), p.rowid"
    " FROM ledger_posts p"
)

WRITE_BATCH = 200  # writes per group-commit transaction at most
READERS = 3  # reader connections: API reads do not queue behind the runs' context reads
T = TypeVar("T")

INTERRUPTED_ERROR = "the service stopped while this run was in flight"

_json_encode = msgspec.json.encode
_decode_list = msgspec.json.Decoder(list[dict[str, Any]])
_decode_dict = msgspec.json.Decoder(dict[str, Any])
_decode_strs = msgspec.json.Decoder(list[str])


def _dumps(value: Any) -> str | None:
    return None if value is None else _json_encode(value).decode()


def _loads_list(raw: str | None) -> list[dict[str, Any]] | None:
    if not raw:
        return None
    try:
        return _decode_list.decode(raw)
    except msgspec.DecodeError:
        return None


def _loads_dict(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        return _decode_dict.decode(raw)
    except msgspec.DecodeError:
        return None


def _loads_strs(raw: str | None) -> list[str]:
    try:
        return _decode_strs.decode(raw or "[]")
    except msgspec.DecodeError:
        return []


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def process_owner() -> str:
    """Identify this process in ``runs.owner`` so a restart can tell its own dead rows."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str | None) -> bool:
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


def _thread(row: Sequence[Any]) -> Thread:
    return Thread(
        id=row[0],
        title=row[1],
        created_at=row[2],
        updated_at=row[3],
        config_json=row[4],
        anchor=row[5],
        next_run=row[6],
        last_run=row[7],
        last_summary=row[8],
        last_actions=_loads_list(row[9]),
    )


def _run(row: Sequence[Any]) -> Run:
    return Run(
        id=row[0],
        thread_id=row[1],
        loop=row[2],
        trigger=row[3],
        slot=row[4],
        status=row[5],
        reason=row[6],
        model=row[7],
        action=row[8],
        decision=_loads_dict(row[9]),
        executed=_loads_list(row[10]),
        summary=row[11],
        dry_run=bool(row[12]),
        error=row[13],
        prompt_tokens=row[14],
        completion_tokens=row[15],
        llm_ms=row[16],
        started_at=row[17],
        finished_at=row[18],
    )


def _reflection(r: Sequence[Any]) -> Reflection:
    return Reflection(
        id=r[0],
        thread_id=r[1],
        score=r[2],
        summary=r[3],
        notable=_loads_strs(r[4]),
        last_message_id=r[5],
        run_id=r[6],
        created_at=r[7],
    )


def _post(row: Sequence[Any]) -> Post:
    return Post(
        id=row[0],
        author=row[1],
        title=row[2],
        content=row[3],
        created_at=row[4],
        score=int(row[5] or 0),
        comment_count=int(row[6] or 0),
        cursor=int(row[7]),
    )


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


@dataclass(frozen=True, slots=True)
class _Query(Generic[T]):
    """A read: its SQL, its parameters and how its rows become records."""

    sql: str
    params: tuple[Any, ...]
    build: Callable[[list[Any]], T]


def _read_all(conn: sqlite3.Connection, queries: Sequence[_Query[Any]]) -> list[list[Any]]:
    """Run ``queries`` in one read transaction (in a reader's thread)."""
    conn.execute("BEGIN")
    try:
        return [conn.execute(q.sql, q.params).fetchall() for q in queries]
    finally:
        conn.execute("COMMIT")


def _messages_q(thread_id: str, limit: int, before: int | None) -> _Query[list[Message]]:
    return _Query(
        "SELECT id, thread_id, role, content, created_at FROM messages"
        " WHERE thread_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
        (thread_id, before if before is not None else 2**62, limit),
        lambda rows: [
            Message(id=r[0], thread_id=r[1], role=r[2], content=r[3], created_at=r[4])
            for r in reversed(rows)
        ],
    )


def _contradictions_q(
    thread_id: str, status: str | None, limit: int
) -> _Query[list[Contradiction]]:
    return _Query(
        "SELECT id, thread_id, statement_a, statement_b, status, created_at"
        " FROM contradictions WHERE thread_id = ? AND (? IS NULL OR status = ?)"
        " ORDER BY id DESC LIMIT ?",
        (thread_id, status, status, limit),
        lambda rows: [
            Contradiction(
                id=r[0],
                thread_id=r[1],
                statement_a=r[2],
                statement_b=r[3],
                status=r[4],
                created_at=r[5],
            )
            for r in rows
        ],
    )


def _posts_q(limit: int, before: int | None) -> _Query[list[Post]]:
    return _Query(
        f"{_POST_SELECT} WHERE p.rowid < ? ORDER BY p.rowid DESC LIMIT ?",
        (before if before is not None else 2**62, limit),
        lambda rows: [_post(r) for r in rows],
    )


def _recent_actions_q(thread_id: str, limit: int) -> _Query[list[Run]]:
    return _Query(
        f"SELECT {_RUN_COLS} FROM runs WHERE thread_id = ? AND loop = 'heartbeat'"
        " AND status IN ('ok', 'dry_run') ORDER BY id DESC LIMIT ?",
        (thread_id, limit),
        lambda rows: [_run(r) for r in rows],
    )


def _profiles_q(thread_id: str, limit: int) -> _Query[list[Profile]]:
    return _Query(
        "SELECT id, thread_id, version, traits_json, tone, interests_json, last_message_id,"
        " run_id, created_at FROM personality_profiles WHERE thread_id = ?"
        " ORDER BY version DESC LIMIT ?",
        (thread_id, limit),
        lambda rows: [
            Profile(
                id=r[0],
                thread_id=r[1],
                version=r[2],
                traits=_loads_strs(r[3]),
                tone=r[4],
                interests=_loads_strs(r[5]),
                last_message_id=r[6],
                run_id=r[7],
                created_at=r[8],
            )
            for r in rows
        ],
    )


class _Locked(Exception):
    """BEGIN IMMEDIATE found the database locked by another process's writer."""


def _apply(conn: sqlite3.Connection, fns: list[Callable[[Tx], Any]], now: float) -> list[Any]:
    """Run ``fns`` in one transaction (in the writer's thread). Returns (ok, value) per fn."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if _is_locked(exc):
            raise _Locked() from exc
        raise
    tx = Tx(conn, now)
    out: list[tuple[bool, Any]] = []
    try:
        if len(fns) == 1:
            try:
                out.append((True, fns[0](tx)))
            except Exception as exc:
                conn.execute("ROLLBACK")
                return [(False, exc)]
        else:
            for fn in fns:
                conn.execute("SAVEPOINT one_write")
                try:
                    out.append((True, fn(tx)))
                except Exception as exc:
                    conn.execute("ROLLBACK TO one_write")
                    out.append((False, exc))
                conn.execute("RELEASE one_write")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return out


class Tx:
    """The writes available inside one transaction, run in the writer's thread.

    Obtained as the argument of a function given to ``Store.write``.
    """

    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self.conn = conn
        self.now = now

    def _one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        rows = self.conn.execute(sql, tuple(params)).fetchall()
        return next(iter(rows), None)

    # threads ---------------------------------------------------------------------------
    def get_thread(self, thread_id: str) -> Thread:
        row = self._one(f"SELECT {_THREAD_COLS} FROM threads WHERE id = ?", (thread_id,))
        if row is None:
            raise NotFound("thread", thread_id)
        return _thread(row)

    def create_thread(self, thread_id: str, title: str, config_json: str | None) -> bool:
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO threads (id, title, created_at, updated_at,"
            " heartbeat_config_json) VALUES (?, ?, ?, ?, ?)",
            (thread_id, title, self.now, self.now, config_json),
        )
        return cur.rowcount == 1

    def set_config(
        self, thread_id: str, config_json: str, anchor: float | None, next_run: float | None
    ) -> None:
        self.conn.execute(
            "UPDATE threads SET heartbeat_config_json = ?, heartbeat_anchor = ?,"
            " heartbeat_next_run = ?, updated_at = ? WHERE id = ?",
            (config_json, anchor, next_run, self.now, thread_id),
        )

    def set_next_run(
        self, thread_id: str, next_run: float | None, *, expect: float | None = None
    ) -> bool:
        """Move a thread's next run; with ``expect``, only if it still holds that value (CAS)."""
        if expect is None:
            cur = self.conn.execute(
                "UPDATE threads SET heartbeat_next_run = ? WHERE id = ?", (next_run, thread_id)
            )
        else:
            cur = self.conn.execute(
                "UPDATE threads SET heartbeat_next_run = ? WHERE id = ? AND heartbeat_next_run = ?",
                (next_run, thread_id, expect),
            )
        return cur.rowcount == 1

    def claim_slots(self, claims: Sequence[tuple[str, float, float]]) -> set[str]:
        """Compare-and-set many threads' next run at once: (thread, expected slot, new next).

        Returns the ids whose stored next run still held the expected slot (and now moved on).
        """
        won: set[str] = set()
        execute = self.conn.execute
        for thread_id, slot, nxt in claims:
            cur = execute(
                "UPDATE threads SET heartbeat_next_run = ? WHERE id = ? AND heartbeat_next_run = ?",
                (nxt, thread_id, slot),
            )
            if cur.rowcount == 1:
                won.add(thread_id)
        return won

    # messages and contradictions ---------------------------------------------------------
    def add_message(
        self, thread_id: str, role: str, content: str, run_id: int | None = None
    ) -> Message:
        cur = self.conn.execute(
            "INSERT INTO messages (thread_id, role, content, created_at, run_id)"
            " VALUES (?, ?, ?, ?, ?)",
            (thread_id, role, content, self.now, run_id),
        )
        assert cur.lastrowid is not None
        self.conn.execute("UPDATE threads SET updated_at = ? WHERE id = ?", (self.now, thread_id))
        return Message(
            id=cur.lastrowid,
            thread_id=thread_id,
            role=role,
            content=content,
            created_at=self.now,
        )

    def add_contradiction(self, thread_id: str, a: str, b: str) -> Contradiction:
        cur = self.conn.execute(
            "INSERT INTO contradictions (thread_id, statement_a, statement_b, status, created_at)"
            " VALUES (?, ?, ?, 'open', ?)",
            (thread_id, a, b, self.now),
        )
        assert cur.lastrowid is not None
        return Contradiction(
            id=cur.lastrowid,
            thread_id=thread_id,
            statement_a=a,
            statement_b=b,
            status="open",
            created_at=self.now,
        )

    def set_contradiction_status(self, contradiction_id: int, status: str) -> bool:
        cur = self.conn.execute(
            "UPDATE contradictions SET status = ? WHERE id = ?", (status, contradiction_id)
        )
        return cur.rowcount == 1

    # ledger ------------------------------------------------------------------------------
    def create_post(self, author: str, title: str, content: str, run_id: int | None = None) -> Post:
        post_id = new_id("post")
        cur = self.conn.execute(
            "INSERT INTO ledger_posts (id, author, title, content, created_at, run_id)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (post_id, author, title, content, self.now, run_id),
        )
        return Post(
            id=post_id,
            author=author,
            title=title,
            content=content,
            created_at=self.now,
            cursor=cur.lastrowid or 0,
        )

    def _require_post(self, post_id: str) -> None:
        if self._one("SELECT 1 FROM ledger_posts WHERE id = ?", (post_id,)) is None:
            raise NotFound("post", post_id)

    def add_comment(
        self, post_id: str, author: str, content: str, run_id: int | None = None
    ) -> Comment:
        self._require_post(post_id)
        comment_id = new_id("comment")
        self.conn.execute(
            "INSERT INTO ledger_comments (id, post_id, author, content, created_at, run_id)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (comment_id, post_id, author, content, self.now, run_id),
        )
        return Comment(
            id=comment_id, post_id=post_id, author=author, content=content, created_at=self.now
        )

    def vote(self, post_id: str, voter: str, direction: str, run_id: int | None = None) -> Vote:
        """One vote per voter per post: a new vote replaces the old one."""
        self._require_post(post_id)
        value = 1 if direction == "up" else -1
        self.conn.execute(
            "INSERT INTO ledger_votes (post_id, voter, direction, created_at, run_id)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (post_id, voter) DO UPDATE SET"
            " direction = excluded.direction, created_at = excluded.created_at,"
            " run_id = excluded.run_id",
            (post_id, voter, value, self.now, run_id),
        )
        return Vote(post_id=post_id, voter=voter, direction=direction, created_at=self.now)

    # runs --------------------------------------------------------------------------------
    def start_run(
        self,
        thread_id: str,
        loop: str,
        trigger: str,
        *,
        slot: float | None = None,
        model: str | None = None,
        dry_run: bool = False,
        owner: str | None = None,
    ) -> int | None:
        """Insert a ``running`` row. Returns None when the (thread, loop, slot) is taken."""
        cur = self.conn.execute(
            "INSERT INTO runs (thread_id, loop, trigger, slot, status, model, dry_run,"
            " started_at, owner) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?)"
            " ON CONFLICT (thread_id, loop, slot) DO NOTHING",
            (thread_id, loop, trigger, slot, model, int(dry_run), self.now, owner),
        )
        if cur.rowcount != 1:
            return None
        return cur.lastrowid

    def record_run(
        self,
        thread_id: str,
        loop: str,
        trigger: str,
        outcome: RunOutcome,
        *,
        slot: float | None = None,
        dry_run: bool = False,
    ) -> int | None:
        """Insert an already finished row (e.g. a ``skipped`` slot)."""
        cur = self.conn.execute(
            "INSERT INTO runs (thread_id, loop, trigger, slot, status, reason, model, action,"
            " summary, dry_run, error, started_at, finished_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (thread_id, loop, slot) DO NOTHING",
            (
                thread_id,
                loop,
                trigger,
                slot,
                outcome.status,
                outcome.reason,
                outcome.model,
                outcome.action,
                outcome.summary,
                int(dry_run),
                outcome.error,
                self.now,
                self.now,
            ),
        )
        return cur.lastrowid if cur.rowcount == 1 else None

    def finish_run(self, run_id: int, outcome: RunOutcome) -> Run:
        """Record a run's outcome; returns the finished row."""
        row = self._one(
            "UPDATE runs SET status = ?, reason = ?, model = COALESCE(?, model), action = ?,"
            " decision_json = ?, executed_json = ?, summary = ?, error = ?, prompt_tokens = ?,"
            " completion_tokens = ?, llm_ms = ?, finished_at = ? WHERE id = ?"
            f" RETURNING {_RUN_COLS}",
            (
                outcome.status,
                outcome.reason,
                outcome.model,
                outcome.action,
                _dumps(outcome.decision),
                _dumps(outcome.executed),
                outcome.summary,
                outcome.error,
                outcome.prompt_tokens,
                outcome.completion_tokens,
                outcome.llm_ms,
                self.now,
                run_id,
            ),
        )
        if row is None:
            raise NotFound("run", str(run_id))
        return _run(row)

    def note_heartbeat(
        self, thread_id: str, summary: str | None, actions: list[dict[str, Any]]
    ) -> None:
        self.conn.execute(
            "UPDATE threads SET heartbeat_last_run = ?, heartbeat_last_summary = ?,"
            " heartbeat_last_actions_json = ? WHERE id = ?",
            (self.now, summary, _dumps(actions), thread_id),
        )

    # journal -----------------------------------------------------------------------------
    def add_reflection(
        self,
        thread_id: str,
        score: float,
        summary: str,
        notable: list[str],
        last_message_id: int,
        run_id: int | None,
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO reflections (thread_id, score, summary, notable_json, last_message_id,"
            " run_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (thread_id, score, summary, _dumps(notable), last_message_id, run_id, self.now),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def add_profile(
        self,
        thread_id: str,
        traits: list[str],
        tone: str,
        interests: list[str],
        last_message_id: int,
        run_id: int | None,
    ) -> int:
        row = self._one(
            "SELECT COALESCE(MAX(version), 0) FROM personality_profiles WHERE thread_id = ?",
            (thread_id,),
        )
        version = int(row[0]) + 1
        self.conn.execute(
            "INSERT INTO personality_profiles (thread_id, version, traits_json, tone,"
            " interests_json, last_message_id, run_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                thread_id,
                version,
                _dumps(traits),
                tone,
                _dumps(interests),
                last_message_id,
                run_id,
                self.now,
            ),
        )
        return version

    def reflected_up_to(self, thread_id: str) -> int:
        """The newest message id a reflection of the thread already covers (0 for none)."""
        row = self._one(
            "SELECT COALESCE(MAX(last_message_id), 0) FROM reflections WHERE thread_id = ?",
            (thread_id,),
        )
        return int(row[0])

    def profiled_up_to(self, thread_id: str) -> int:
        """The newest message id a profile of the thread already covers (0 for none)."""
        row = self._one(
            "SELECT COALESCE(MAX(last_message_id), 0) FROM personality_profiles"
            " WHERE thread_id = ?",
            (thread_id,),
        )
        return int(row[0])

    def add_self_reply(
        self, reflection_id: int, thread_id: str, content: str, run_id: int | None
    ) -> bool:
        cur = self.conn.execute(
            "INSERT INTO self_replies (reflection_id, thread_id, content, run_id, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (reflection_id) DO NOTHING",
            (reflection_id, thread_id, content, run_id, self.now),
        )
        return cur.rowcount == 1


class Store:
    """The SQLite file. Open with ``await Store.open(path, now=...)``; close with ``close()``.

    Writes go through ``write(fn)``: ``fn`` is a plain function of a ``Tx`` run in the writer's
    thread. Writes that arrive while a transaction is being written are gathered and committed
    together in the next one (group commit), each inside its own savepoint, so one failing write
    rolls back only itself and every caller still sees the outcome of exactly its own function.
    """

    def __init__(
        self,
        writer: aiosqlite.Connection,
        readers: list[aiosqlite.Connection],
        path: Path,
        now: Callable[[], float],
    ) -> None:
        self._w = writer
        self._readers = readers
        self._free: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        for reader in readers:
            self._free.put_nowait(reader)
        self.path = path
        self._now = now
        self._pending: deque[tuple[Callable[[Tx], Any], asyncio.Future[Any]]] = deque()
        self._first: deque[tuple[Callable[[Tx], Any], asyncio.Future[Any]]] = deque()
        self._pump: asyncio.Task[None] | None = None
        self.owner = process_owner()
        self.busy_retries = 0
        self.transactions = 0  # committed write transactions (each may hold several writes)
        self.closed = False

    @classmethod
    async def open(
        cls, path: Path | str, *, now: Callable[[], float], readers: int = READERS
    ) -> Store:
        path = Path(path)
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        writer = await aiosqlite.connect(str(path), isolation_level=None)
        opened: list[aiosqlite.Connection] = []
        try:
            await writer.execute("PRAGMA busy_timeout = 2000")
            await writer.execute("PRAGMA journal_mode = WAL")
            await writer.execute("PRAGMA synchronous = NORMAL")
            await writer.execute("PRAGMA foreign_keys = ON")
            await _migrate(writer)
            for _ in range(max(1, readers)):
                reader = await aiosqlite.connect(str(path), isolation_level=None)
                opened.append(reader)
                await reader.execute("PRAGMA busy_timeout = 2000")
                await reader.execute("PRAGMA query_only = ON")
        except BaseException:
            for conn in opened:
                await conn.close()
            await writer.close()
            raise
        return cls(writer, opened, path, now)

    async def close(self) -> None:
        """Finish queued writes, mark this process's unfinished runs interrupted, then close."""
        if self.closed:
            return
        owner = self.owner

        def interrupted(tx: Tx) -> None:
            tx.conn.execute(
                "UPDATE runs SET status = 'interrupted', reason = 'shutdown',"
                " error = ?, finished_at = ? WHERE status = 'running' AND owner = ?",
                (INTERRUPTED_ERROR, tx.now, owner),
            )

        try:
            await self.write(interrupted)
        except (sqlite3.Error, StorageBusy):  # pragma: no cover - the next start marks them
            log.exception("could not mark this process's running runs interrupted")
        self.closed = True
        while self._pump is not None:
            await asyncio.shield(self._pump)
        for reader in self._readers:
            await reader.close()
        await self._w.close()

    def now(self) -> float:
        return self._now()

    # -- writing ----------------------------------------------------------------------------
    async def write(self, fn: Callable[[Tx], T], *, first: bool = False) -> T:
        """Run ``fn`` inside a write transaction in the writer's thread and return its result.

        ``fn`` must not block on anything but SQLite. It commits with the other writes of its
        batch; if it raises, its own changes are rolled back and the exception is raised here.
        A write with ``first`` goes ahead of the queued ones (the scheduler's claims do, so a
        herd's runs finishing do not delay the claims of the runs still waiting to start).
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
                batch: list[tuple[Callable[[Tx], Any], asyncio.Future[Any]]] = []
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
        self, fns: list[Callable[[Tx], Any]], *, attempts: int = 8
    ) -> list[tuple[bool, Any]]:
        """One transaction for ``fns``; waits with backoff while another process writes."""
        delay = 0.05
        for attempt in range(1, attempts + 1):
            try:
                # aiosqlite runs the function in the connection's own thread, where the
                # sqlite3 connection lives: the whole batch costs one thread round trip.
                in_thread = cast(Callable[..., Awaitable[Any]], self._w._execute)
                results: list[tuple[bool, Any]] = await in_thread(
                    _apply, self._w._conn, fns, self._now()
                )
            except _Locked as exc:
                if attempt == attempts:
                    raise StorageBusy() from exc.__cause__
                self.busy_retries += 1
                log.warning("database locked by another writer; retry %d", attempt)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)
                continue
            self.transactions += 1
            return results
        raise AssertionError("unreachable")  # pragma: no cover

    # -- reading ----------------------------------------------------------------------------
    # One statement at a time per reader connection: overlapping statements would keep its
    # read transaction (its WAL snapshot) open, and later reads would miss commits made since.
    async def _all(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        reader = await self._free.get()
        try:
            # execute and fetch in one thread round trip, so the cursor (and snapshot) closes
            return list(await reader.execute_fetchall(sql, tuple(params)))
        finally:
            self._free.put_nowait(reader)

    async def _one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return next(iter(await self._all(sql, params)), None)

    async def _fetch(self, query: _Query[T]) -> T:
        return query.build(await self._all(query.sql, query.params))

    async def _fetch_many(self, queries: Sequence[_Query[Any]]) -> list[Any]:
        """Several queries in one read transaction (one snapshot), one thread round trip."""
        reader = await self._free.get()
        try:
            in_thread = cast(Callable[..., Awaitable[Any]], reader._execute)
            results: list[list[Any]] = await in_thread(_read_all, reader._conn, queries)
        finally:
            self._free.put_nowait(reader)
        return [q.build(rows) for q, rows in zip(queries, results, strict=True)]

    async def interrupt_run(self, run_id: int, model: str | None) -> None:
        """Record a run cancelled by shutdown. Never raises: if the store is closing, ``close``
        (or the next start) marks the run interrupted instead."""
        if self.closed:
            return
        outcome = RunOutcome(
            status=RunStatus.INTERRUPTED,
            reason=Reason.SHUTDOWN,
            model=model,
            error=INTERRUPTED_ERROR,
        )
        try:
            await self.write(lambda tx: tx.finish_run(run_id, outcome))
        except Exception:
            if not self.closed:
                log.exception("could not record interrupted run %d", run_id)

    # start-up -----------------------------------------------------------------------------
    async def mark_interrupted(self) -> int:
        """Mark ``running`` rows whose process is gone as ``interrupted``."""
        rows = await self._all("SELECT id, owner FROM runs WHERE status = 'running'")
        dead = [r[0] for r in rows if not _owner_alive(r[1])]
        if not dead:
            return 0

        def mark(tx: Tx) -> None:
            tx.conn.executemany(
                "UPDATE runs SET status = 'interrupted', reason = 'process_died',"
                " error = ?, finished_at = ? WHERE id = ? AND status = 'running'",
                [(INTERRUPTED_ERROR, tx.now, run_id) for run_id in dead],
            )

        await self.write(mark)
        return len(dead)

    # threads ------------------------------------------------------------------------------
    async def get_thread(self, thread_id: str) -> Thread:
        row = await self._one(f"SELECT {_THREAD_COLS} FROM threads WHERE id = ?", (thread_id,))
        if row is None:
            raise NotFound("thread", thread_id)
        return _thread(row)

    async def threads_by_ids(self, ids: Sequence[str]) -> list[Thread]:
        if not ids:
            return []
        marks = ", ".join("?" for _ in ids)
        rows = await self._all(f"SELECT {_THREAD_COLS} FROM threads WHERE id IN ({marks})", ids)
        return [_thread(r) for r in rows]

    async def thread_exists(self, thread_id: str) -> bool:
        return await self._one("SELECT 1 FROM threads WHERE id = ?", (thread_id,)) is not None

    async def list_threads(self, *, limit: int = 100, after: str | None = None) -> list[Thread]:
        rows = await self._all(
            f"SELECT {_THREAD_COLS} FROM threads WHERE id > ? ORDER BY id LIMIT ?",
            (after or "", limit),
        )
        return [_thread(r) for r in rows]

    async def iter_threads(self, *, batch: int = 1000) -> AsyncIterator[list[Thread]]:
        after = ""
        while True:
            rows = await self.list_threads(limit=batch, after=after)
            if not rows:
                return
            yield rows
            after = rows[-1].id

    async def thread_ids(self) -> list[str]:
        return [r[0] for r in await self._all("SELECT id FROM threads ORDER BY id")]

    # messages -----------------------------------------------------------------------------
    async def messages(
        self, thread_id: str, *, limit: int = 50, before: int | None = None
    ) -> list[Message]:
        """The newest ``limit`` messages (older than ``before``), returned oldest first."""
        return await self._fetch(_messages_q(thread_id, limit, before))

    async def last_message_id(self, thread_id: str) -> int:
        row = await self._one(
            "SELECT COALESCE(MAX(id), 0) FROM messages WHERE thread_id = ?", (thread_id,)
        )
        return int(row[0])

    async def contradictions(
        self, thread_id: str, *, status: str | None = "open", limit: int = 100
    ) -> list[Contradiction]:
        return await self._fetch(_contradictions_q(thread_id, status, limit))

    # ledger -------------------------------------------------------------------------------
    async def posts(self, *, limit: int = 20, before: int | None = None) -> list[Post]:
        return await self._fetch(_posts_q(limit, before))

    async def get_post(self, post_id: str) -> Post:
        row = await self._one(f"{_POST_SELECT} WHERE p.id = ?", (post_id,))
        if row is None:
            raise NotFound("post", post_id)
        return _post(row)

    async def post_exists(self, post_id: str) -> bool:
        return await self._one("SELECT 1 FROM ledger_posts WHERE id = ?", (post_id,)) is not None

    async def comments(self, post_id: str) -> list[Comment]:
        rows = await self._all(
            "SELECT id, post_id, author, content, created_at FROM ledger_comments"
            " WHERE post_id = ? ORDER BY created_at, rowid",
            (post_id,),
        )
        return [
            Comment(id=r[0], post_id=r[1], author=r[2], content=r[3], created_at=r[4]) for r in rows
        ]

    async def votes(self, post_id: str) -> list[Vote]:
        rows = await self._all(
            "SELECT post_id, voter, direction, created_at FROM ledger_votes"
            " WHERE post_id = ? ORDER BY created_at",
            (post_id,),
        )
        return [
            Vote(post_id=r[0], voter=r[1], direction="up" if r[2] > 0 else "down", created_at=r[3])
            for r in rows
        ]

    # runs ---------------------------------------------------------------------------------
    async def get_run(self, run_id: int) -> Run:
        row = await self._one(f"SELECT {_RUN_COLS} FROM runs WHERE id = ?", (run_id,))
        if row is None:
            raise NotFound("run", str(run_id))
        return _run(row)

    async def history(
        self,
        thread_id: str,
        *,
        limit: int = 20,
        before: int | None = None,
        loop: str | None = None,
    ) -> list[Run]:
        rows = await self._all(
            f"SELECT {_RUN_COLS} FROM runs WHERE thread_id = ? AND id < ?"
            " AND (? IS NULL OR loop = ?) ORDER BY id DESC LIMIT ?",
            (thread_id, before if before is not None else 2**62, loop, loop, limit),
        )
        return [_run(r) for r in rows]

    async def runs_finished_after(
        self, last_id: int, *, thread_id: str | None = None, limit: int = 500
    ) -> list[Run]:
        """Finished runs a reconnecting event client missed, oldest first.

        A run that started before ``last_id`` but finished after it counts as missed too.
        """
        row = await self._one("SELECT finished_at FROM runs WHERE id = ?", (last_id,))
        since = row[0] if row and row[0] is not None else None
        rows = await self._all(
            f"SELECT {_RUN_COLS} FROM runs WHERE status != 'running'"
            " AND (id > ? OR (? IS NOT NULL AND finished_at > ?))"
            " AND (? IS NULL OR thread_id = ?) ORDER BY finished_at, id LIMIT ?",
            (last_id, since, since, thread_id, thread_id, limit),
        )
        return [_run(r) for r in rows if r[0] != last_id]

    async def running_runs(self) -> list[Run]:
        rows = await self._all(f"SELECT {_RUN_COLS} FROM runs WHERE status = 'running'")
        return [_run(r) for r in rows]

    async def recent_actions(self, thread_id: str, *, limit: int = 5) -> list[Run]:
        return await self._fetch(_recent_actions_q(thread_id, limit))

    async def count_runs(self, *, status: str | None = None) -> int:
        row = await self._one(
            "SELECT COUNT(*) FROM runs WHERE (? IS NULL OR status = ?)", (status, status)
        )
        return int(row[0])

    # journal ------------------------------------------------------------------------------
    async def reflections(self, thread_id: str, *, limit: int = 20) -> list[Reflection]:
        rows = await self._all(
            "SELECT id, thread_id, score, summary, notable_json, last_message_id, run_id,"
            " created_at FROM reflections WHERE thread_id = ? ORDER BY id DESC LIMIT ?",
            (thread_id, limit),
        )
        return [_reflection(r) for r in rows]

    async def last_reflected_message(self, thread_id: str) -> int:
        row = await self._one(
            "SELECT COALESCE(MAX(last_message_id), 0) FROM reflections WHERE thread_id = ?",
            (thread_id,),
        )
        return int(row[0])

    async def threads_needing_reflection(self, *, limit: int = 100) -> list[str]:
        rows = await self._all(
            "SELECT m.thread_id FROM messages m GROUP BY m.thread_id HAVING MAX(m.id) >"
            " COALESCE((SELECT MAX(r.last_message_id) FROM reflections r"
            " WHERE r.thread_id = m.thread_id), 0) ORDER BY m.thread_id LIMIT ?",
            (limit,),
        )
        return [r[0] for r in rows]

    async def profile(self, thread_id: str) -> Profile | None:
        rows = await self.profiles(thread_id, limit=1)
        return rows[0] if rows else None

    async def profiles(self, thread_id: str, *, limit: int = 20) -> list[Profile]:
        return await self._fetch(_profiles_q(thread_id, limit))

    async def run_context(
        self, thread_id: str, *, messages: int, posts: int, recent: int = 5
    ) -> RunContext:
        """What a heartbeat run reads, from one snapshot in one thread round trip."""
        msgs, contradictions, profiles, feed, actions = await self._fetch_many(
            [
                _messages_q(thread_id, messages, None),
                _contradictions_q(thread_id, "open", 20),
                _profiles_q(thread_id, 1),
                _posts_q(posts, None),
                _recent_actions_q(thread_id, recent),
            ]
        )
        return RunContext(
            messages=msgs,
            contradictions=contradictions,
            profile=profiles[0] if profiles else None,
            posts=feed,
            recent=actions,
        )

    async def threads_needing_profile(self, *, limit: int = 100) -> list[str]:
        rows = await self._all(
            "SELECT m.thread_id FROM messages m GROUP BY m.thread_id HAVING MAX(m.id) >"
            " COALESCE((SELECT MAX(p.last_message_id) FROM personality_profiles p"
            " WHERE p.thread_id = m.thread_id), 0) ORDER BY m.thread_id LIMIT ?",
            (limit,),
        )
        return [r[0] for r in rows]

    async def unanswered_reflections(self, *, limit: int = 100) -> list[Reflection]:
        rows = await self._all(
            "SELECT r.id, r.thread_id, r.score, r.summary, r.notable_json, r.last_message_id,"
            " r.run_id, r.created_at FROM reflections r LEFT JOIN self_replies s"
            " ON s.reflection_id = r.id WHERE s.id IS NULL ORDER BY r.id LIMIT ?",
            (limit,),
        )
        return [_reflection(r) for r in rows]

    async def self_replies(self, thread_id: str, *, limit: int = 20) -> list[SelfReply]:
        rows = await self._all(
            "SELECT id, reflection_id, thread_id, content, run_id, created_at FROM self_replies"
            " WHERE thread_id = ? ORDER BY id DESC LIMIT ?",
            (thread_id, limit),
        )
        return [
            SelfReply(
                id=r[0],
                reflection_id=r[1],
                thread_id=r[2],
                content=r[3],
                run_id=r[4],
                created_at=r[5],
            )
            for r in rows
        ]


async def _migrate(conn: aiosqlite.Connection) -> None:
    """Apply pending migrations; safe when two processes start on one file at once."""
    await conn.execute("BEGIN IMMEDIATE")
    try:
        async with conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        current = int(row[0]) if row else 0
        if current > len(MIGRATIONS):
            raise Conflict(
                f"database schema version {current} is newer than this program knows"
                f" ({len(MIGRATIONS)}); upgrade heartbeat"
            )
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            log.info("applying database migration %d", version)
            for statement in script.split(";"):
                if statement.strip():
                    await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {version:d}")
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
