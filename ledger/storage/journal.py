"""The journal: reflections on a thread, its personality profiles, self-replies to reflections.

Reflections and profiles each record the newest message they cover (``last_message_id``); a
thread is owed one while it has a newer message. A reflection gets at most one self-reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.records import NewProfile, NewReflection, Profile, Reflection, SelfReply
from ledger.storage.columns import dumps, loads_strs
from ledger.storage.engine import Engine, Query, SqlTx

_REFLECTED = "SELECT COALESCE(MAX(last_message_id), 0) FROM reflections WHERE thread_id = ?"
_PROFILED = "SELECT COALESCE(MAX(last_message_id), 0) FROM personality_profiles WHERE thread_id = ?"


def _behind(table: str) -> str:
    """Threads with a message newer than the newest one ``table`` covers, by id, at most ?."""
    return (
        "SELECT m.thread_id FROM messages m GROUP BY m.thread_id HAVING MAX(m.id) >"
        f" COALESCE((SELECT MAX(j.last_message_id) FROM {table} j"
        " WHERE j.thread_id = m.thread_id), 0) ORDER BY m.thread_id LIMIT ?"
    )


_NEEDING_REFLECTION = _behind("reflections")
_NEEDING_PROFILE = _behind("personality_profiles")


def _reflection(r: Sequence[Any]) -> Reflection:
    return Reflection(
        id=r[0],
        thread_id=r[1],
        score=r[2],
        summary=r[3],
        notable=loads_strs(r[4]),
        last_message_id=r[5],
        run_id=r[6],
        created_at=r[7],
    )


def profiles_query(thread_id: str, limit: int) -> Query[list[Profile]]:
    """A thread's newest ``limit`` profiles, newest version first."""
    return Query(
        "SELECT id, thread_id, version, traits_json, tone, interests_json, last_message_id,"
        " run_id, created_at FROM personality_profiles WHERE thread_id = ?"
        " ORDER BY version DESC LIMIT ?",
        (thread_id, limit),
        lambda rows: [
            Profile(
                id=r[0],
                thread_id=r[1],
                version=r[2],
                traits=loads_strs(r[3]),
                tone=r[4],
                interests=loads_strs(r[5]),
                last_message_id=r[6],
                run_id=r[7],
                created_at=r[8],
            )
            for r in rows
        ],
    )


class Writes(SqlTx):
    """The journal writes of a transaction (see ``ledger.storage.interface.JournalWrites``)."""

    def add_reflection(self, new: NewReflection) -> int:
        cur = self.conn.execute(
            "INSERT INTO reflections (thread_id, score, summary, notable_json, last_message_id,"
            " run_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                new.thread_id,
                new.score,
                new.summary,
                dumps(new.notable),
                new.last_message_id,
                new.run_id,
                self.now,
            ),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def add_profile(self, new: NewProfile) -> int:
        row = self._one(
            "SELECT COALESCE(MAX(version), 0) FROM personality_profiles WHERE thread_id = ?",
            (new.thread_id,),
        )
        version = int(row[0]) + 1
        self.conn.execute(
            "INSERT INTO personality_profiles (thread_id, version, traits_json, tone,"
            " interests_json, last_message_id, run_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                new.thread_id,
                version,
                dumps(new.traits),
                new.tone,
                dumps(new.interests),
                new.last_message_id,
                new.run_id,
                self.now,
            ),
        )
        return version

    def add_self_reply(
        self, reflection_id: int, thread_id: str, content: str, run_id: int | None
    ) -> bool:
        cur = self.conn.execute(
            "INSERT INTO self_replies (reflection_id, thread_id, content, run_id, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (reflection_id) DO NOTHING",
            (reflection_id, thread_id, content, run_id, self.now),
        )
        return cur.rowcount == 1

    def reflected_up_to(self, thread_id: str) -> int:
        row = self._one(_REFLECTED, (thread_id,))
        return int(row[0]) if row else 0

    def profiled_up_to(self, thread_id: str) -> int:
        row = self._one(_PROFILED, (thread_id,))
        return int(row[0]) if row else 0


class Reads:
    """The journal reads of the store (see ``ledger.storage.interface.JournalReads``)."""

    _db: Engine[object]

    async def reflections(self, thread_id: str, *, limit: int = 20) -> list[Reflection]:
        rows = await self._db.rows(
            "SELECT id, thread_id, score, summary, notable_json, last_message_id, run_id,"
            " created_at FROM reflections WHERE thread_id = ? ORDER BY id DESC LIMIT ?",
            (thread_id, limit),
        )
        return [_reflection(r) for r in rows]

    async def last_reflected_message(self, thread_id: str) -> int:
        return int((await self._db.row(_REFLECTED, (thread_id,)))[0])

    async def threads_needing_reflection(self, *, limit: int = 100) -> list[str]:
        return [r[0] for r in await self._db.rows(_NEEDING_REFLECTION, (limit,))]

    async def profile(self, thread_id: str) -> Profile | None:
        rows = await self.profiles(thread_id, limit=1)
        return rows[0] if rows else None

    async def profiles(self, thread_id: str, *, limit: int = 20) -> list[Profile]:
        return await self._db.fetch(profiles_query(thread_id, limit))

    async def threads_needing_profile(self, *, limit: int = 100) -> list[str]:
        return [r[0] for r in await self._db.rows(_NEEDING_PROFILE, (limit,))]

    async def unanswered_reflections(self, *, limit: int = 100) -> list[Reflection]:
        rows = await self._db.rows(
            "SELECT r.id, r.thread_id, r.score, r.summary, r.notable_json, r.last_message_id,"
            " r.run_id, r.created_at FROM reflections r LEFT JOIN self_replies s"
            " ON s.reflection_id = r.id WHERE s.id IS NULL ORDER BY r.id LIMIT ?",
            (limit,),
        )
        return [_reflection(r) for r in rows]

    async def self_replies(self, thread_id: str, *, limit: int = 20) -> list[SelfReply]:
        rows = await self._db.rows(
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
