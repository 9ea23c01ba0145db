"""Wakes held for a thread's next scheduled beat: rows, writes, reads.

A thread holds at most one row: the event texts of its held wakes joined (``ledger.wakes``) and
how many there are. The scheduler's claim takes the row in the transaction that writes the
beat's ``running`` row, so a held wake is told to exactly one beat, even across a restart.
"""

from __future__ import annotations

from ledger.errors import NotFound
from ledger.storage.engine import Engine, SqlTx
from ledger.wakes import join_events


class Writes(SqlTx):
    """The wake writes of a transaction (see ``ledger.storage.interface.WakeWrites``)."""

    def hold_wake(self, thread_id: str, text: str, *, max_events: int) -> int | None:
        row = self._one(
            "SELECT event_text, events FROM held_wakes WHERE thread_id = ?", (thread_id,)
        )
        if row is None:
            if self._one("SELECT 1 FROM threads WHERE id = ?", (thread_id,)) is None:
                raise NotFound("thread", thread_id)
            self.conn.execute(
                "INSERT INTO held_wakes (thread_id, event_text, events, first_at, last_at)"
                " VALUES (?, ?, 1, ?, ?)",
                (thread_id, text, self.now, self.now),
            )
            return 1
        held, events = row
        if events >= max_events:
            return None
        self.conn.execute(
            "UPDATE held_wakes SET event_text = ?, events = ?, last_at = ? WHERE thread_id = ?",
            (join_events(held, text), events + 1, self.now, thread_id),
        )
        return int(events) + 1

    def take_held_wake(self, thread_id: str) -> str | None:
        row = self._one(
            "DELETE FROM held_wakes WHERE thread_id = ? RETURNING event_text", (thread_id,)
        )
        return None if row is None else str(row[0])


class Reads:
    """The wake reads of the store (see ``ledger.storage.interface.WakeReads``)."""

    _db: Engine[Writes]

    async def held_wake(self, thread_id: str) -> tuple[str, int] | None:
        row = await self._db.row(
            "SELECT event_text, events FROM held_wakes WHERE thread_id = ?", (thread_id,)
        )
        return None if row is None else (str(row[0]), int(row[1]))
