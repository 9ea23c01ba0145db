"""The leases of the replicas sharing one database: rows, writes, reads.

A replica holds one ``replicas`` row, keyed by its ``runs.owner``, and renews it. Another
replica that finds the lease run out (``ledger.storage.identity.lease_expired``) ends it: it
deletes the row only if it is still the one it read (compare-and-set on ``expires_at``), and in
the same transaction marks the gone replica's ``running`` runs ``interrupted``, so of replicas
racing to end one lease exactly one does, and a lease renewed meanwhile is not ended.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ledger.records import Lease, Reason, Run
from ledger.storage import runs
from ledger.storage.engine import Engine
from ledger.storage.identity import lease_expired, owner_alive, owner_state

log = logging.getLogger(f"heartbeat.{__name__}")

_COLS = "owner, started_at, renewed_at, expires_at"


def _lease(row: Sequence[Any]) -> Lease:
    return Lease(owner=row[0], started_at=row[1], renewed_at=row[2], expires_at=row[3])


class Writes(runs.Writes):
    """The lease writes of a transaction (see ``ledger.storage.interface.ReplicaWrites``); they
    extend the run writes, as ending a lease interrupts its runs."""

    def hold_lease(self, owner: str, expires_at: float) -> bool:
        cur = self.conn.execute(
            "UPDATE replicas SET renewed_at = ?, expires_at = ? WHERE owner = ?",
            (self.now, expires_at, owner),
        )
        if cur.rowcount == 1:
            return True
        self.conn.execute(
            f"INSERT INTO replicas ({_COLS}) VALUES (?, ?, ?, ?)",
            (owner, self.now, self.now, expires_at),
        )
        return False

    def release_lease(self, owner: str) -> None:
        self.conn.execute("DELETE FROM replicas WHERE owner = ?", (owner,))

    def end_lease(self, lease: Lease) -> list[Run] | None:
        cur = self.conn.execute(
            "DELETE FROM replicas WHERE owner = ? AND expires_at = ?",
            (lease.owner, lease.expires_at),
        )
        if cur.rowcount != 1:
            return None
        return runs.interrupt_owner(self, lease.owner, Reason.PROCESS_DIED)

    def end_expired_leases(self) -> list[Run]:
        rows = self.conn.execute(
            f"SELECT {_COLS} FROM replicas WHERE expires_at <= ?", (self.now,)
        ).fetchall()
        interrupted: list[Run] = []
        for row in rows:
            ended = self.end_lease(_lease(row))
            if ended is not None:
                log.warning(
                    "[HEARTBEAT] replica %s is gone (its lease ran out): %d run(s) interrupted",
                    row[0],
                    len(ended),
                )
                interrupted.extend(ended)
        return interrupted


class Reads:
    """The lease reads of the store (see ``ledger.storage.interface.ReplicaReads``)."""

    _db: Engine[Writes]
    owner: str

    async def leases(self) -> list[Lease]:
        rows = await self._db.rows(f"SELECT {_COLS} FROM replicas ORDER BY owner")
        return [_lease(r) for r in rows]

    async def mark_interrupted(self) -> list[Run]:
        # The running rows first, the leases after: a row's owner held its lease before it
        # wrote the row, so an owner missing from the leases read after it has given it up.
        rows = await self._db.rows("SELECT id, owner FROM runs WHERE status = 'running'")
        leases = await self.leases()
        now = self._db.now()
        marked: list[Run] = []
        for lease in leases:
            if lease.owner == self.owner:
                continue
            if not lease_expired(lease, now, owner_state(lease.owner)):
                continue
            ended = await self._end_lease(lease)
            if ended is not None:
                log.warning(
                    "[HEARTBEAT] replica %s is gone (its lease ended): %d run(s) interrupted",
                    lease.owner,
                    len(ended),
                )
                marked.extend(ended)
        held = {lease.owner for lease in leases}
        dead = [r[0] for r in rows if r[1] not in held and not owner_alive(r[1])]
        if dead:
            marked.extend(await self._db.write(lambda tx: tx.interrupt_dead_runs(dead)))
        return marked

    async def _end_lease(self, lease: Lease) -> list[Run] | None:
        return await self._db.write(lambda tx: tx.end_lease(lease))
