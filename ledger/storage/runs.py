"""Runs, the history of every loop's work: rows, writes, reads, and the runs cut short.

A run is inserted ``running`` (owned by its process, see ``ledger.storage.identity``) and later
finished with its outcome; a slot's run is unique per (thread, loop, slot). Runs whose process
stopped are marked ``interrupted``: on shutdown by the process itself, after a crash by the next
start or, for a replica holding a lease (``ledger.storage.replicas``), by the replica that ends
its lease.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ledger.errors import NotFound, RunEnded
from ledger.records import Reason, Run, RunOutcome, RunStart, RunStatus
from ledger.storage.columns import dumps, loads_dict, loads_list
from ledger.storage.engine import Engine, Query, SqlTx

log = logging.getLogger(f"heartbeat.{__name__}")

INTERRUPTED_ERROR = "the service stopped while this run was in flight"
UNCONFIRMED_ERROR = (
    "the database connection was lost as this run's start committed; the start was reported"
    " failed, so nothing ran it"
)
BY_IDS_CHUNK = 400  # ids per query of ``runs_by_ids``

_COLS = (
    "id, thread_id, loop, trigger, slot, status, reason, model, action, decision_json, "
    "executed_json, summary, dry_run, error, prompt_tokens, completion_tokens, llm_ms, "
    "started_at, finished_at, event_text"
)
_INTERRUPT = (
    "UPDATE runs SET status = 'interrupted', reason = ?, error = ?, finished_at = ?"
    " WHERE status = 'running'"
)


def interrupt_owner(tx: SqlTx, owner: str, reason: Reason) -> list[Run]:
    """Mark the ``running`` rows of ``owner`` ``interrupted``; the rows as marked, by id."""
    rows = tx.conn.execute(
        f"{_INTERRUPT} AND owner = ? RETURNING {_COLS}", (reason, INTERRUPTED_ERROR, tx.now, owner)
    ).fetchall()
    return sorted((_run(r) for r in rows), key=lambda run: run.id)


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
        decision=loads_dict(row[9]),
        executed=loads_list(row[10]),
        summary=row[11],
        dry_run=bool(row[12]),
        error=row[13],
        prompt_tokens=row[14],
        completion_tokens=row[15],
        llm_ms=row[16],
        started_at=row[17],
        finished_at=row[18],
        event_text=row[19],
    )


def recent_actions_query(thread_id: str, limit: int) -> Query[list[Run]]:
    """A thread's newest ``limit`` heartbeat runs that acted (``ok`` or ``dry_run``)."""
    return Query(
        f"SELECT {_COLS} FROM runs WHERE thread_id = ? AND loop = 'heartbeat'"
        " AND status IN ('ok', 'dry_run') ORDER BY id DESC LIMIT ?",
        (thread_id, limit),
        lambda rows: [_run(r) for r in rows],
    )


class Writes(SqlTx):
    """The run writes of a transaction (see ``ledger.storage.interface.RunWrites``)."""

    def start_run(self, run: RunStart) -> int | None:
        cur = self.conn.execute(
            "INSERT INTO runs (thread_id, loop, trigger, slot, status, model, dry_run,"
            " started_at, owner, event_text) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)"
            " ON CONFLICT (thread_id, loop, slot) DO NOTHING",
            (
                run.thread_id,
                run.loop,
                run.trigger,
                run.slot,
                run.model,
                int(run.dry_run),
                self.now,
                run.owner,
                run.event_text,
            ),
        )
        if cur.rowcount != 1:
            return None
        return cur.lastrowid

    def record_run(self, run: RunStart, outcome: RunOutcome) -> int | None:
        cur = self.conn.execute(
            "INSERT INTO runs (thread_id, loop, trigger, slot, status, reason, model, action,"
            " summary, dry_run, error, prompt_tokens, completion_tokens, started_at, finished_at,"
            " event_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (thread_id, loop, slot) DO NOTHING",
            (
                run.thread_id,
                run.loop,
                run.trigger,
                run.slot,
                outcome.status,
                outcome.reason,
                outcome.model if outcome.model is not None else run.model,
                outcome.action,
                outcome.summary,
                int(run.dry_run),
                outcome.error,
                outcome.prompt_tokens or 0,  # a run recorded whole never called the model
                outcome.completion_tokens or 0,
                self.now,
                self.now,
                run.event_text,
            ),
        )
        return cur.lastrowid if cur.rowcount == 1 else None

    def running_heartbeat(self, thread_id: str) -> int | None:
        # the thread's row lock first (PostgreSQL), so replicas starting one thread's run at
        # once are made one after the other and the second sees the first's row
        self.conn.execute(
            "UPDATE threads SET heartbeat_last_run = heartbeat_last_run WHERE id = ?",
            (thread_id,),
        )
        row = self._one(
            "SELECT id FROM runs WHERE thread_id = ? AND loop = 'heartbeat'"
            " AND status = 'running' ORDER BY id LIMIT 1",
            (thread_id,),
        )
        return None if row is None else int(row[0])

    def running_heartbeat_threads(self) -> set[str]:
        rows = self.conn.execute(
            "SELECT thread_id FROM runs WHERE status = 'running' AND loop = 'heartbeat'"
        ).fetchall()
        return {r[0] for r in rows}

    def finish_run(self, run_id: int, outcome: RunOutcome) -> Run:
        row = self._one(
            "UPDATE runs SET status = ?, reason = ?, model = COALESCE(?, model), action = ?,"
            " decision_json = ?, executed_json = ?, summary = ?, error = ?, prompt_tokens = ?,"
            " completion_tokens = ?, llm_ms = ?, finished_at = ? WHERE id = ?"
            f" AND status = 'running' RETURNING {_COLS}",
            (
                outcome.status,
                outcome.reason,
                outcome.model,
                outcome.action,
                dumps(outcome.decision),
                dumps(outcome.executed),
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
            # ended meanwhile by someone else (interrupted when its replica's lease ran out):
            # the late outcome is refused, and the caller's effect rolls back with it
            now = self._one("SELECT status FROM runs WHERE id = ?", (run_id,))
            if now is None:
                raise NotFound("run", str(run_id))
            raise RunEnded(run_id, str(now[0]))
        return _run(row)

    def interrupt_dead_runs(self, run_ids: Sequence[int]) -> list[Run]:
        """Mark these ``running`` rows, whose process died, ``interrupted``; the rows as marked
        (those still ``running``), by id."""
        ended: list[Run] = []
        for i in range(0, len(run_ids), BY_IDS_CHUNK):
            chunk = tuple(run_ids[i : i + BY_IDS_CHUNK])
            marks = ", ".join("?" * len(chunk))
            rows = self.conn.execute(
                f"{_INTERRUPT} AND id IN ({marks}) RETURNING {_COLS}",
                (Reason.PROCESS_DIED, INTERRUPTED_ERROR, self.now, *chunk),
            ).fetchall()
            ended.extend(_run(r) for r in rows)
        return sorted(ended, key=lambda run: run.id)

    def end_unconfirmed_starts(self, run_ids: Sequence[int], owner: str) -> list[Run]:
        """Mark these ``running`` rows of ``owner`` without a slot, whose start was reported
        failed, ``interrupted`` (``start_unconfirmed``); the rows as marked, by id."""
        ended: list[Run] = []
        for i in range(0, len(run_ids), BY_IDS_CHUNK):
            chunk = tuple(run_ids[i : i + BY_IDS_CHUNK])
            marks = ", ".join("?" * len(chunk))
            rows = self.conn.execute(
                f"{_INTERRUPT} AND owner = ? AND slot IS NULL AND id IN ({marks})"
                f" RETURNING {_COLS}",
                (Reason.START_UNCONFIRMED, UNCONFIRMED_ERROR, self.now, owner, *chunk),
            ).fetchall()
            ended.extend(_run(r) for r in rows)
        return sorted(ended, key=lambda run: run.id)

    def interrupt_own_runs(self, owner: str) -> None:
        """Mark the ``running`` rows of ``owner`` (this process, shutting down) ``interrupted``
        and give up its lease."""
        interrupt_owner(self, owner, Reason.SHUTDOWN)
        self.conn.execute("DELETE FROM replicas WHERE owner = ?", (owner,))


class Reads:
    """The run reads of the store, and recording runs cut short (see ``RunReads``)."""

    _db: Engine[Writes]

    async def get_run(self, run_id: int) -> Run:
        row = await self._db.row(f"SELECT {_COLS} FROM runs WHERE id = ?", (run_id,))
        if row is None:
            raise NotFound("run", str(run_id))
        return _run(row)

    async def history(
        self, thread_id: str, *, limit: int = 20, before: int | None = None, loop: str | None = None
    ) -> list[Run]:
        rows = await self._db.rows(
            f"SELECT {_COLS} FROM runs WHERE thread_id = ? AND id < ?"
            " AND (? IS NULL OR loop = ?) ORDER BY id DESC LIMIT ?",
            (thread_id, before if before is not None else 2**62, loop, loop, limit),
        )
        return [_run(r) for r in rows]

    async def runs_finished_after(
        self, last_id: int, *, thread_id: str | None = None, limit: int = 500
    ) -> list[Run]:
        row = await self._db.row("SELECT finished_at FROM runs WHERE id = ?", (last_id,))
        since = row[0] if row and row[0] is not None else None
        rows = await self._db.rows(
            f"SELECT {_COLS} FROM runs WHERE status != 'running'"
            " AND (id > ? OR (? IS NOT NULL AND finished_at > ?))"
            " AND (? IS NULL OR thread_id = ?) ORDER BY finished_at, id LIMIT ?",
            (last_id, since, since, thread_id, thread_id, limit),
        )
        return [_run(r) for r in rows if r[0] != last_id]

    async def running_runs(self, *, owner: str | None = None) -> list[Run]:
        rows = await self._db.rows(
            f"SELECT {_COLS} FROM runs WHERE status = 'running' AND (? IS NULL OR owner = ?)",
            (owner, owner),
        )
        return [_run(r) for r in rows]

    async def runs_by_ids(self, ids: Sequence[int]) -> list[Run]:
        runs: list[Run] = []
        for i in range(0, len(ids), BY_IDS_CHUNK):
            chunk = ids[i : i + BY_IDS_CHUNK]
            marks = ", ".join("?" * len(chunk))
            runs.extend(
                _run(r)
                for r in await self._db.rows(
                    f"SELECT {_COLS} FROM runs WHERE id IN ({marks})", tuple(chunk)
                )
            )
        return sorted(runs, key=lambda run: run.id)

    async def last_finished_run(self) -> int | None:
        row = await self._db.row(
            "SELECT id FROM runs WHERE finished_at IS NOT NULL"
            " ORDER BY finished_at DESC, id DESC LIMIT 1"
        )
        return None if row is None else int(row[0])

    async def recent_actions(self, thread_id: str, *, limit: int = 5) -> list[Run]:
        return await self._db.fetch(recent_actions_query(thread_id, limit))

    async def count_runs(self, *, status: str | None = None) -> int:
        row = await self._db.row(
            "SELECT COUNT(*) FROM runs WHERE (? IS NULL OR status = ?)", (status, status)
        )
        return int(row[0])

    async def interrupt_run(self, run_id: int, model: str | None) -> None:
        if self._db.closed:
            return
        outcome = RunOutcome(
            status=RunStatus.INTERRUPTED,
            reason=Reason.SHUTDOWN,
            model=model,
            error=INTERRUPTED_ERROR,
        )
        try:
            await self._db.write(lambda tx: tx.finish_run(run_id, outcome))
        except RunEnded:
            pass  # ended already by another replica, which found this one's lease run out
        except Exception:
            if not self._db.closed:
                log.exception("could not record interrupted run %d", run_id)
