"""The SQLite backend: ``SqliteStore`` (a ``Storage``) and ``SqliteTx`` (its ``Tx``).

Both are composed of the aggregates' halves (``threads``, ``messages``, ``forum``, ``runs``,
``journal``, ``beats``) over one ``Engine``. Open with ``await SqliteStore.open(path,
now=...)``; close with ``close()``. Only the composition root names this module; the rest of the
program sees the Protocols of ``ledger.storage.interface``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ledger.errors import StorageBusy
from ledger.records import RunContext
from ledger.storage import beats, forum, journal, messages, runs, threads
from ledger.storage.engine import READERS, Engine, open_engine
from ledger.storage.identity import process_owner
from ledger.storage.interface import Storage, Tx
from ledger.storage.messages import contradictions_query, messages_query
from ledger.storage.migrations import MIGRATIONS

log = logging.getLogger("heartbeat.ledger")

T = TypeVar("T")


class SqliteTx(
    threads.Writes, messages.Writes, forum.Writes, runs.Writes, journal.Writes, beats.Writes
):
    """The writes available inside one transaction, run in the writer's thread."""


class SqliteStore(
    threads.Reads, messages.Reads, forum.Reads, runs.Reads, journal.Reads, beats.Reads
):
    """The SQLite file: reads, and writes as plain functions of a ``SqliteTx`` (group commit)."""

    _db: Engine[SqliteTx]

    def __init__(self, db: Engine[SqliteTx], path: Path) -> None:
        self._db = db
        self.path = path
        self.owner = process_owner()

    @classmethod
    async def open(
        cls, path: Path | str, *, now: Callable[[], float], readers: int = READERS
    ) -> SqliteStore:
        path = Path(path)
        db = await open_engine(
            path, now=now, make_tx=SqliteTx, migrations=MIGRATIONS, readers=readers
        )
        return cls(db, path)

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def transactions(self) -> int:
        return self._db.transactions

    @property
    def busy_retries(self) -> int:
        return self._db.busy_retries

    @property
    def closed(self) -> bool:
        return self._db.closed

    def now(self) -> float:
        return self._db.now()

    def write(self, fn: Callable[[Tx], T], *, first: bool = False) -> Coroutine[Any, Any, T]:
        # the engine's coroutine itself: no extra await frame per write
        return self._db.write(fn, first=first)

    async def close(self) -> None:
        if self._db.closed:
            return
        owner = self.owner
        try:
            await self._db.write(lambda tx: tx.interrupt_own_runs(owner))
        except (sqlite3.Error, StorageBusy):  # pragma: no cover - the next start marks them
            log.exception("could not mark this process's running runs interrupted")
        await self._db.close()

    async def run_context(
        self, thread_id: str, *, messages: int, posts: int, recent: int = 5
    ) -> RunContext:
        msgs, contradictions, profiles, feed, actions = await self._db.fetch_many(
            [
                messages_query(thread_id, messages, None),
                contradictions_query(thread_id, "open", 20),
                journal.profiles_query(thread_id, 1),
                forum.posts_query(posts, None),
                runs.recent_actions_query(thread_id, recent),
            ]
        )
        return RunContext(
            messages=msgs,
            contradictions=contradictions,
            profile=profiles[0] if profiles else None,
            posts=feed,
            recent=actions,
        )


if TYPE_CHECKING:  # the type checker verifies that SqliteStore implements Storage
    _: type[Storage] = SqliteStore
