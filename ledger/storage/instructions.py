"""HEARTBEAT.md kept in the database by revision: rows, writes, reads.

Each save inserts the next revision (1, 2, ...); the newest row is the current text, and only
the newest ``INSTRUCTIONS_REVISIONS_KEPT`` are kept. A save made on top of a revision (``base``)
is refused with ``RevisionConflict`` once another revision came after it, and two saves that
race for the same revision (from two processes) cannot both win: the revision is the key, so
the second one's insert does nothing and it is refused too. A save without a base is made on
top of whatever is current.
"""

from __future__ import annotations

from typing import Any

from ledger.errors import RevisionConflict
from ledger.limits import INSTRUCTIONS_REVISIONS_KEPT
from ledger.records import StoredInstructions
from ledger.storage.engine import Engine, SqlTx

WHAT = "HEARTBEAT.md"
_COLS = "revision, content, saved_at"
_CURRENT = "SELECT MAX(revision) FROM instructions"
SAVE_TRIES = 3  # a save without a base tries this many revisions raced by other processes


def _stored(row: Any) -> StoredInstructions:
    return StoredInstructions(revision=int(row[0]), content=row[1], saved_at=row[2])


class Writes(SqlTx):
    """The instructions' writes of a transaction (see ``InstructionsWrites``)."""

    def _current_revision(self) -> int:
        row = self._one(_CURRENT)
        return int(row[0]) if row is not None and row[0] is not None else 0

    def save_instructions(self, content: str, base: int | None = None) -> StoredInstructions:
        for _ in range(SAVE_TRIES):
            current = self._current_revision()
            if base is not None and base != current:
                raise RevisionConflict(WHAT, str(base), str(current))
            revision = current + 1
            cur = self.conn.execute(
                "INSERT INTO instructions (revision, content, saved_at) VALUES (?, ?, ?)"
                " ON CONFLICT (revision) DO NOTHING",
                (revision, content, self.now),
            )
            if cur.rowcount == 1:
                self.conn.execute(
                    "DELETE FROM instructions WHERE revision <= ?",
                    (revision - INSTRUCTIONS_REVISIONS_KEPT,),
                )
                return StoredInstructions(revision=revision, content=content, saved_at=self.now)
            # another process saved this revision meanwhile: a save on top of ``current``
            # lost the race; one without a base tries the next revision
            if base is not None:
                raise RevisionConflict(WHAT, str(base), str(self._current_revision()))
        raise RevisionConflict(WHAT, "current", str(self._current_revision()))


class Reads:
    """The instructions' reads of the store (see ``InstructionsReads``)."""

    _db: Engine[Writes]

    async def instructions(self) -> StoredInstructions | None:
        row = await self._db.row(f"SELECT {_COLS} FROM instructions ORDER BY revision DESC LIMIT 1")
        return None if row is None else _stored(row)

    async def instruction_revisions(self, *, limit: int = 20) -> list[StoredInstructions]:
        rows = await self._db.rows(
            f"SELECT {_COLS} FROM instructions ORDER BY revision DESC LIMIT ?", (limit,)
        )
        return [_stored(r) for r in rows]
