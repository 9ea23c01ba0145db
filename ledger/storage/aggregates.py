"""The store composed of the aggregates over any ``Engine``: ``SqlStore`` and ``SqlStoreTx``.

The aggregates' halves (``threads``, ``messages``, ``forum``, ``runs``, ``replicas``,
``journal``, ``wakes``, ``beats``, ``instructions``) make both:
``SqlStoreTx`` holds their writes, ``SqlStore`` their reads, the writes' hand-over to the
engine and shutdown. A backend (``ledger.storage.sqlite``, ``ledger.storage.postgres``) adds
only how it is opened and where its data lives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ledger.errors import StorageFault
from ledger.records import BeatMemo, RunContext
from ledger.storage import (
    beats,
    forum,
    instructions,
    journal,
    messages,
    replicas,
    runs,
    threads,
    wakes,
)
from ledger.storage.engine import Engine, Query
from ledger.storage.identity import process_owner
from ledger.storage.interface import ChangeFeed, Storage, Tx
from ledger.storage.messages import contradictions_query, messages_query

log = logging.getLogger(f"heartbeat.{__name__}")

T = TypeVar("T")


class SqlStoreTx(
    threads.Writes,
    messages.Writes,
    forum.Writes,
    replicas.Writes,
    runs.Writes,
    journal.Writes,
    wakes.Writes,
    beats.Writes,
    instructions.Writes,
):
    """The writes available inside one transaction, run in the writer's thread."""


class SqlStore(
    threads.Reads,
    messages.Reads,
    forum.Reads,
    runs.Reads,
    replicas.Reads,
    journal.Reads,
    wakes.Reads,
    beats.Reads,
    instructions.Reads,
):
    """Reads, and writes as plain functions of a ``SqlStoreTx`` (group commit)."""

    _db: Engine[SqlStoreTx]

    def __init__(self, db: Engine[SqlStoreTx]) -> None:
        self._db = db
        self.owner = process_owner()

    @property
    def location(self) -> str:
        raise NotImplementedError

    @property
    def shared(self) -> bool:
        raise NotImplementedError

    @property
    def transactions(self) -> int:
        return self._db.transactions

    @property
    def busy_retries(self) -> int:
        return self._db.busy_retries

    @property
    def closed(self) -> bool:
        return self._db.closed

    @property
    def fault(self) -> StorageFault | None:
        return self._db.fault

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
        except Exception as exc:  # the next start marks them
            log.warning("could not mark this process's running runs interrupted: %s", exc)
        await self._db.close()

    def change_feed(self) -> ChangeFeed | None:
        return None  # a backend whose database other processes share says otherwise

    async def run_context(
        self, thread_id: str, *, messages: int, posts: int, recent: int = 5
    ) -> RunContext:
        found = await self._db.fetch_many(_context_queries(thread_id, messages, posts, recent))
        return _context(found)

    async def beat_inputs(
        self, thread_id: str, *, messages: int, posts: int, recent: int = 5
    ) -> tuple[BeatMemo, RunContext]:
        queries = [
            beats.memo_query(thread_id),
            *_context_queries(thread_id, messages, posts, recent),
        ]
        memo, *found = await self._db.fetch_many(queries)
        return memo, _context(found)


def _context_queries(thread_id: str, messages: int, posts: int, recent: int) -> list[Query[Any]]:
    return [
        messages_query(thread_id, messages, None),
        contradictions_query(thread_id, "open", 20),
        journal.profiles_query(thread_id, 1),
        forum.posts_query(posts, None),
        runs.recent_actions_query(thread_id, recent),
    ]


def _context(found: list[Any]) -> RunContext:
    msgs, contradictions, profiles, feed, actions = found
    return RunContext(
        messages=msgs,
        contradictions=contradictions,
        profile=profiles[0] if profiles else None,
        posts=feed,
        recent=actions,
    )


if TYPE_CHECKING:  # the type checker verifies that SqlStore implements Storage
    _: type[Storage] = SqlStore
