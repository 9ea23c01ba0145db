"""Replica leases on both backends: taken, renewed, given up, ended once by whoever finds
them run out, with the gone replica's running runs interrupted."""

from __future__ import annotations

import asyncio

from ledger.limits import LEASE_SECONDS
from ledger.records import Lease, RunStart
from ledger.storage.interface import Storage, Tx
from tests.backends import Backend

GONE = "other-host:7:7"  # a replica of another host: only its lease tells whether it lives


def _start(owner: str, slot: float) -> RunStart:
    return RunStart(thread_id="t", loop="heartbeat", trigger="schedule", slot=slot, owner=owner)


async def _gone_replica_with_runs(store: Storage, expires_at: float) -> list[int | None]:
    def seed(tx: Tx) -> list[int | None]:
        tx.create_thread("t", "T", None)
        tx.hold_lease(GONE, expires_at)
        return [tx.start_run(_start(GONE, slot)) for slot in (1.0, 2.0)]

    return await store.write(seed)


async def test_a_lease_is_taken_renewed_and_given_up(backend: Backend) -> None:
    now = [100.0]
    store = await backend.open(now=lambda: now[0])
    me = store.owner
    assert await store.write(lambda tx: tx.hold_lease(me, tx.now + LEASE_SECONDS)) is False
    now[0] = 105.0
    assert await store.write(lambda tx: tx.hold_lease(me, tx.now + LEASE_SECONDS)) is True
    assert await store.leases() == [Lease(me, 100.0, 105.0, 105.0 + LEASE_SECONDS)]
    await store.close()  # gives the lease up
    reopened = await backend.open(now=lambda: now[0])
    assert await reopened.leases() == []


async def test_a_live_lease_keeps_its_runs_and_a_run_out_one_ends_with_them(
    backend: Backend,
) -> None:
    now = [100.0]
    store = await backend.open(now=lambda: now[0])
    first, second = await _gone_replica_with_runs(store, expires_at=115.0)
    assert await store.mark_interrupted() == 0  # its lease still holds
    assert [r.status for r in await store.history("t")] == ["running", "running"]
    now[0] = 115.0
    assert await store.mark_interrupted() == 2
    for run_id in (first, second):
        assert run_id is not None
        run = await store.get_run(run_id)
        assert (run.status, run.reason, run.finished_at) == ("interrupted", "process_died", 115.0)
    assert await store.leases() == []
    assert await store.mark_interrupted() == 0  # nothing left to end


async def test_replicas_racing_to_end_a_lease_end_it_exactly_once(backend: Backend) -> None:
    now = [100.0]
    stores = [await backend.open(now=lambda: now[0]) for _ in range(3)]
    await _gone_replica_with_runs(stores[0], expires_at=110.0)
    now[0] = 120.0
    (lease,) = await stores[0].leases()
    ended = await asyncio.gather(*(s.write(lambda tx: tx.end_lease(lease)) for s in stores))
    assert sorted(ended, key=str) == [2, None, None]
    counted = await asyncio.gather(*(s.mark_interrupted() for s in stores))
    assert counted == [0, 0, 0]
    assert await stores[0].count_runs(status="interrupted") == 2


async def test_a_lease_renewed_after_it_was_read_is_not_ended(backend: Backend) -> None:
    now = [100.0]
    store = await backend.open(now=lambda: now[0])
    await _gone_replica_with_runs(store, expires_at=110.0)
    (stale,) = await store.leases()
    assert await store.write(lambda tx: tx.hold_lease(GONE, 130.0)) is True
    assert await store.write(lambda tx: tx.end_lease(stale)) is None
    assert await store.count_runs(status="running") == 2


async def test_a_lapsed_lease_ended_by_another_is_taken_anew(backend: Backend) -> None:
    now = [100.0]
    store = await backend.open(now=lambda: now[0])
    await _gone_replica_with_runs(store, expires_at=110.0)
    now[0] = 111.0
    assert await store.mark_interrupted() == 2
    # the replica comes back (its connection was away past its lease): a new lease
    assert await store.write(lambda tx: tx.hold_lease(GONE, 126.0)) is False
    assert [lease.owner for lease in await store.leases()] == [GONE]


async def test_runs_without_a_lease_are_still_judged_by_their_process(backend: Backend) -> None:
    store = await backend.open(now=lambda: 5.0)

    def seed(tx: Tx) -> list[int | None]:
        tx.create_thread("t", "T", None)
        tx.hold_lease(GONE, 50.0)  # a lease names the replica: its PID is not looked at
        return [
            tx.start_run(_start(owner, slot))
            for owner, slot in ((GONE, 1.0), ("other-host:8:8", 2.0), (store.owner, 3.0))
        ]

    leased, unleased, mine = await store.write(seed)
    assert await store.mark_interrupted() == 1
    status = {r.id: r.status for r in await store.history("t")}
    assert (status[leased], status[unleased], status[mine]) == (
        "running",
        "interrupted",
        "running",
    )
