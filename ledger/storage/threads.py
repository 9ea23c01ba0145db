"""Threads and their heartbeat schedule (config, anchor, next and last run): rows, writes, reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from ledger.errors import NotFound
from ledger.records import PlanFix, Thread
from ledger.storage.columns import dumps, loads_list
from ledger.storage.engine import Engine, SqlTx

_COLS = (
    "id, title, created_at, updated_at, heartbeat_config_json, heartbeat_anchor, "
    "heartbeat_next_run, heartbeat_last_run, heartbeat_last_summary, heartbeat_last_actions_json"
)
_BY_ID = f"SELECT {_COLS} FROM threads WHERE id = ?"
_EXISTS = "SELECT 1 FROM threads WHERE id = ?"
_MOVE_IF = "UPDATE threads SET heartbeat_next_run = ? WHERE id = ? AND heartbeat_next_run = ?"


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
        last_actions=loads_list(row[9]),
    )


class Writes(SqlTx):
    """The thread writes of a transaction (see ``ledger.storage.interface.ThreadWrites``)."""

    def get_thread(self, thread_id: str) -> Thread:
        row = self._one(_BY_ID, (thread_id,))
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
        if expect is None:
            cur = self.conn.execute(
                "UPDATE threads SET heartbeat_next_run = ? WHERE id = ?", (next_run, thread_id)
            )
        else:
            cur = self.conn.execute(_MOVE_IF, (next_run, thread_id, expect))
        return cur.rowcount == 1

    def claim_slots(self, claims: Sequence[tuple[str, float, float]]) -> set[str]:
        won: set[str] = set()
        execute, sql = self.conn.execute, _MOVE_IF
        for thread_id, slot, nxt in claims:
            if execute(sql, (nxt, thread_id, slot)).rowcount == 1:
                won.add(thread_id)
        return won

    def store_plans(self, fixes: Sequence[PlanFix]) -> set[str]:
        stored: set[str] = set()
        execute = self.conn.execute
        for fix in fixes:
            cur = execute(
                "UPDATE threads SET heartbeat_anchor = ?, heartbeat_next_run = ? WHERE id = ?"
                " AND heartbeat_config_json IS NOT DISTINCT FROM ?",
                (fix.anchor, fix.next_run, fix.thread_id, fix.config_json),
            )
            if cur.rowcount == 1:
                stored.add(fix.thread_id)
        return stored

    def note_heartbeat(
        self, thread_id: str, summary: str | None, actions: list[dict[str, Any]]
    ) -> None:
        self.conn.execute(
            "UPDATE threads SET heartbeat_last_run = ?, heartbeat_last_summary = ?,"
            " heartbeat_last_actions_json = ? WHERE id = ?",
            (self.now, summary, dumps(actions), thread_id),
        )


class Reads:
    """The thread reads of the store (see ``ledger.storage.interface.ThreadReads``)."""

    _db: Engine[object]

    async def get_thread(self, thread_id: str) -> Thread:
        row = await self._db.row(_BY_ID, (thread_id,))
        if row is None:
            raise NotFound("thread", thread_id)
        return _thread(row)

    async def threads_by_ids(self, ids: Sequence[str]) -> list[Thread]:
        if not ids:
            return []
        marks = ", ".join("?" for _ in ids)
        rows = await self._db.rows(f"SELECT {_COLS} FROM threads WHERE id IN ({marks})", ids)
        return [_thread(r) for r in rows]

    async def thread_exists(self, thread_id: str) -> bool:
        return await self._db.row(_EXISTS, (thread_id,)) is not None

    async def threads_changed_since(self, since: float) -> list[Thread]:
        rows = await self._db.rows(
            f"SELECT {_COLS} FROM threads WHERE updated_at >= ? ORDER BY updated_at", (since,)
        )
        return [_thread(r) for r in rows]

    async def list_threads(self, *, limit: int = 100, after: str | None = None) -> list[Thread]:
        rows = await self._db.rows(
            f"SELECT {_COLS} FROM threads WHERE id > ? ORDER BY id LIMIT ?", (after or "", limit)
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
        return [r[0] for r in await self._db.rows("SELECT id FROM threads ORDER BY id")]
