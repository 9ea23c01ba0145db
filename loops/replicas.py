"""Replicas sharing one database: this replica's lease, which replicas are alive, whose
timers hold which thread.

Each replica on a shared database (``Storage.shared``: PostgreSQL) holds a lease, renewed every
``LEASE_RENEW_SECONDS`` (``ledger.limits``). At each renewal it also ends the leases that ran out
(``Storage.mark_interrupted``: their ``running`` runs become ``interrupted``, each by exactly one
replica) and reads which replicas are alive. Every thread is armed on one live replica, chosen by
rendezvous hashing (``owner_of``), so a replica that goes or comes moves only its own share of
the threads; when the set changes the scheduler re-arms from the database. The claim in the
database (``loops.scheduler``) stays what makes a slot run once: while replicas disagree on the
set for a moment, two may hold a thread's timer, and one of them wins its slot.

A config another replica saved is seen at the next renewal: the threads changed since the last
one are re-read and armed by their owner. A renewal the database cannot take (``StorageBusy``:
it is away, or locked past the storage's retries) is tried at the next one; one warning is
logged when renewals start failing and one line when one goes through again. On SQLite (one
host, processes judged by their PID) there is no lease: this process arms every thread, as
before.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from ledger.errors import StorageBusy
from ledger.limits import LEASE_RENEW_SECONDS, LEASE_SECONDS
from ledger.records import Run, Thread
from ledger.storage.identity import lease_expired, owner_state
from ledger.storage.interface import Storage
from loops.clock import Clock
from loops.outage import Outage

log = logging.getLogger(f"heartbeat.{__name__}")


def _weight(replica: str, thread_id: str) -> int:
    digest = hashlib.blake2b(f"{replica}\0{thread_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner_of(thread_id: str, replicas: Sequence[str]) -> str:
    """The replica whose timers hold ``thread_id``: of ``replicas`` (not empty), the one with the
    highest hash of (replica, thread). Pure; the same on every replica that sees the same set."""
    return max(replicas, key=lambda replica: _weight(replica, thread_id))


async def take_lease(store: Storage) -> bool:
    """Take or renew this replica's lease (a shared database only); True if it was renewed."""
    if not store.shared:
        return True
    owner = store.owner
    return await store.write(lambda tx: tx.hold_lease(owner, tx.now + LEASE_SECONDS), first=True)


class ReplicaSet:
    """This replica's view of the replicas on its database, kept by a renewal task."""

    def __init__(self, store: Storage, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.me = store.owner
        self.live: tuple[str, ...] = (self.me,)
        self._owned: dict[str, bool] = {}  # by thread, for the current ``live``
        self._seen_at = clock.now()  # threads changed since then are re-read at the next tick
        self._task: asyncio.Task[None] | None = None
        # told when the live set changed (re-arm every thread), and of threads others changed
        self.on_change: Callable[[], Awaitable[object]] | None = None
        self.on_threads: Callable[[list[Thread]], Awaitable[object]] | None = None
        # told the runs of gone replicas this one interrupted, ending their leases
        self.on_interrupted: Callable[[list[Run]], None] | None = None
        self.renewals = 0
        self.lapses = 0  # renewals that found the lease ended by another replica
        self.failures = 0  # renewals the database could not take
        self._outage = Outage(  # renewals failing
            clock,
            log,
            first=LEASE_RENEW_SECONDS,
            most=LEASE_RENEW_SECONDS,
            down="[HEARTBEAT] lease renewals wait for the database %(kind)s: tried again every"
            " %(first).0f s (%(exc)s)",
            back="[HEARTBEAT] the lease is renewed again after %(seconds).0f s",
        )

    def owns(self, thread_id: str) -> bool:
        """Whether this replica's timers hold ``thread_id``."""
        if len(self.live) == 1:
            return True
        owned = self._owned.get(thread_id)
        if owned is None:
            owned = self._owned[thread_id] = owner_of(thread_id, self.live) == self.me
        return owned

    async def refresh(self) -> bool:
        """Read the leases and set ``live``; True (and ``on_change`` told) if it changed."""
        if not self.store.shared:
            return False
        now = self.clock.now()
        live = {self.me}
        for lease in await self.store.leases():
            if not lease_expired(lease, now, owner_state(lease.owner)):
                live.add(lease.owner)
        ordered = tuple(sorted(live))
        if ordered == self.live:
            return False
        log.info(
            "[HEARTBEAT] %d replica(s) share the database: %s", len(ordered), ", ".join(ordered)
        )
        self.live = ordered
        self._owned.clear()
        if self.on_change is not None:
            await self.on_change()
        return True

    async def tick(self) -> None:
        """Renew the lease, end the leases that ran out, re-read the live set and the threads
        other replicas changed since the last tick."""
        if not await take_lease(self.store):
            self.lapses += 1
            log.warning("[HEARTBEAT] this replica's lease had run out; it holds a new one")
        self.renewals += 1
        if interrupted := await self.store.mark_interrupted():
            log.warning(
                "[HEARTBEAT] %d run(s) of gone replicas marked interrupted", len(interrupted)
            )
            if self.on_interrupted is not None:
                self.on_interrupted(interrupted)
        changed = await self.refresh()
        since, self._seen_at = self._seen_at, self.clock.now()
        if changed or len(self.live) == 1 or self.on_threads is None:
            return
        # a margin of one lease for the clocks of the replicas that wrote ``updated_at``
        threads = await self.store.threads_changed_since(since - LEASE_SECONDS)
        if threads:
            await self.on_threads(threads)

    def start(self) -> None:
        if self.store.shared and self._task is None:
            self._task = asyncio.create_task(self._keep(), name="replica-lease")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _keep(self) -> None:
        while True:
            await self.clock.sleep(LEASE_RENEW_SECONDS)
            try:
                await self.tick()
            except StorageBusy as exc:  # the database is away: the next tick tries again
                self.failures += 1
                self._outage.failed(exc)  # its wait is the renewals' own (a fixed interval)
                continue
            except Exception:  # a bug: logged whole every time, the next tick tries again
                log.exception("[HEARTBEAT] could not renew this replica's lease")
                continue
            self._outage.succeeded()
