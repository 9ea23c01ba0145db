"""A thread's heartbeat memo (``beat_memos``) and its day's runs: rows, writes, reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.records import BeatDay, BeatMemo
from ledger.storage.engine import Engine, Query, SqlTx

_COLS = (
    "thread_id, fingerprint, decision_key, repeats, last_cost, failure, failures, paused, pauses,"
    " probe_at, paused_config, rest_fingerprint, seen_posts"
)

# every column but the key, replaced by the new row's on an upsert (SQLite and PostgreSQL alike)
_UPDATE = ", ".join(f"{c} = excluded.{c}" for c in _COLS.replace(" ", "").split(",")[1:])


def _memo(row: Sequence[Any]) -> BeatMemo:
    return BeatMemo(
        thread_id=row[0],
        fingerprint=row[1],
        decision_key=row[2],
        repeats=row[3],
        last_cost=row[4],
        failure=row[5],
        failures=row[6],
        paused=row[7],
        pauses=row[8],
        probe_at=row[9],
        paused_config=row[10],
        rest_fingerprint=row[11],
        seen_posts=None if row[12] is None else tuple(row[12].split()),
    )


def memo_query(thread_id: str) -> Query[BeatMemo]:
    """The thread's memo (a fresh one when it has none)."""
    return Query(
        f"SELECT {_COLS} FROM beat_memos WHERE thread_id = ?",
        (thread_id,),
        lambda rows: _memo(rows[0]) if rows else BeatMemo(thread_id=thread_id),
    )


class Writes(SqlTx):
    """The memo writes of a transaction (see ``ledger.storage.interface.BeatWrites``)."""

    def beat_memo(self, thread_id: str) -> BeatMemo:
        row = self._one(f"SELECT {_COLS} FROM beat_memos WHERE thread_id = ?", (thread_id,))
        return BeatMemo(thread_id=thread_id) if row is None else _memo(row)

    def set_beat_memo(self, memo: BeatMemo) -> None:
        self.conn.execute(
            f"INSERT INTO beat_memos ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            f" ON CONFLICT (thread_id) DO UPDATE SET {_UPDATE}",
            (
                memo.thread_id,
                memo.fingerprint,
                memo.decision_key,
                memo.repeats,
                memo.last_cost,
                memo.failure,
                memo.failures,
                memo.paused,
                memo.pauses,
                memo.probe_at,
                memo.paused_config,
                memo.rest_fingerprint,
                None if memo.seen_posts is None else " ".join(memo.seen_posts),
            ),
        )


class Reads:
    """The memo reads of the store (see ``ledger.storage.interface.BeatReads``)."""

    _db: Engine[Writes]

    async def beat_memo(self, thread_id: str) -> BeatMemo:
        memo: BeatMemo = (await self._db.fetch_many([memo_query(thread_id)]))[0]
        return memo

    async def beat_day(self, thread_id: str, since: float) -> BeatDay:
        rows = await self._db.rows(
            "SELECT status, reason, COUNT(*),"
            " SUM(COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0))"
            " FROM runs WHERE thread_id = ? AND loop = 'heartbeat' AND started_at >= ?"
            " AND status != 'running' GROUP BY status, reason",
            (thread_id, since),
        )
        runs: dict[str, int] = {}
        tokens = 0
        for status, reason, count, spent in rows:
            key = status if reason is None else f"{status}/{reason}"
            runs[key] = runs.get(key, 0) + int(count)
            tokens += int(spent or 0)
        return BeatDay(since=since, tokens=tokens, runs=runs)
