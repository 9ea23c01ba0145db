"""A thread's messages and its contradictions: rows, writes, reads."""

from __future__ import annotations

from ledger.records import Contradiction, Message
from ledger.storage.engine import Engine, Query, SqlTx


def messages_query(thread_id: str, limit: int, before: int | None) -> Query[list[Message]]:
    """The newest ``limit`` messages older than ``before``, oldest first."""
    return Query(
        "SELECT id, thread_id, role, content, created_at FROM messages"
        " WHERE thread_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
        (thread_id, before if before is not None else 2**62, limit),
        lambda rows: [
            Message(id=r[0], thread_id=r[1], role=r[2], content=r[3], created_at=r[4])
            for r in reversed(rows)
        ],
    )


def contradictions_query(
    thread_id: str, status: str | None, limit: int
) -> Query[list[Contradiction]]:
    """The newest ``limit`` contradictions of a thread (of any status when ``status`` is None)."""
    return Query(
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


class Writes(SqlTx):
    """The message writes of a transaction (see ``ledger.storage.interface.MessageWrites``)."""

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
            id=cur.lastrowid, thread_id=thread_id, role=role, content=content, created_at=self.now
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


class Reads:
    """The message reads of the store (see ``ledger.storage.interface.MessageReads``)."""

    _db: Engine[object]

    async def messages(
        self, thread_id: str, *, limit: int = 50, before: int | None = None
    ) -> list[Message]:
        return await self._db.fetch(messages_query(thread_id, limit, before))

    async def last_message_id(self, thread_id: str) -> int:
        row = await self._db.row(
            "SELECT COALESCE(MAX(id), 0) FROM messages WHERE thread_id = ?", (thread_id,)
        )
        return int(row[0])

    async def contradictions(
        self, thread_id: str, *, status: str | None = "open", limit: int = 100
    ) -> list[Contradiction]:
        return await self._db.fetch(contradictions_query(thread_id, status, limit))
