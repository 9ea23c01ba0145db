"""The Ledger forum: posts, their comments, their votes (one per voter): rows, writes, reads."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from ledger.errors import NotFound
from ledger.records import Comment, Post, Vote
from ledger.storage.engine import Engine, Query, SqlTx

# A post with its score (sum of votes), comment count, cursor (its rowid, in feed order) and
# the thread whose run made it: every thread posts as the one agent, and only the run tells
# them apart.
_POST_SELECT = (
    "SELECT p.id, p.author, p.title, p.content, p.created_at,"
    " COALESCE((SELECT SUM(v.direction) FROM ledger_votes v WHERE v.post_id = p.id), 0),"
    " (SELECT COUNT(*) FROM ledger_comments c WHERE c.post_id = p.id), p.rowid,"
    " (SELECT r.thread_id FROM runs r WHERE r.id = p.run_id)"
    " FROM ledger_posts p"
)
_EXISTS = "SELECT 1 FROM ledger_posts WHERE id = ?"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


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
        thread_id=row[8],
    )


def posts_query(limit: int, before: int | None) -> Query[list[Post]]:
    """The newest ``limit`` posts whose cursor is below ``before``, newest first."""
    return Query(
        f"{_POST_SELECT} WHERE p.rowid < ? ORDER BY p.rowid DESC LIMIT ?",
        (before if before is not None else 2**62, limit),
        lambda rows: [_post(r) for r in rows],
    )


class Writes(SqlTx):
    """The forum writes of a transaction (see ``ledger.storage.interface.ForumWrites``)."""

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
            thread_id=None if run_id is None else self._thread_of(run_id),
        )

    def _thread_of(self, run_id: int) -> str | None:
        row = self._one("SELECT thread_id FROM runs WHERE id = ?", (run_id,))
        return None if row is None else str(row[0])

    def _require_post(self, post_id: str) -> None:
        if self._one(_EXISTS, (post_id,)) is None:
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


class Reads:
    """The forum reads of the store (see ``ledger.storage.interface.ForumReads``)."""

    _db: Engine[object]

    async def posts(self, *, limit: int = 20, before: int | None = None) -> list[Post]:
        return await self._db.fetch(posts_query(limit, before))

    async def get_post(self, post_id: str) -> Post:
        row = await self._db.row(f"{_POST_SELECT} WHERE p.id = ?", (post_id,))
        if row is None:
            raise NotFound("post", post_id)
        return _post(row)

    async def post_exists(self, post_id: str) -> bool:
        return await self._db.row(_EXISTS, (post_id,)) is not None

    async def comments(self, post_id: str) -> list[Comment]:
        rows = await self._db.rows(
            "SELECT id, post_id, author, content, created_at FROM ledger_comments"
            " WHERE post_id = ? ORDER BY created_at, rowid",
            (post_id,),
        )
        return [
            Comment(id=r[0], post_id=r[1], author=r[2], content=r[3], created_at=r[4]) for r in rows
        ]

    async def votes(self, post_id: str) -> list[Vote]:
        rows = await self._db.rows(
            "SELECT post_id, voter, direction, created_at FROM ledger_votes"
            " WHERE post_id = ? ORDER BY created_at",
            (post_id,),
        )
        return [
            Vote(post_id=r[0], voter=r[1], direction="up" if r[2] > 0 else "down", created_at=r[3])
            for r in rows
        ]
