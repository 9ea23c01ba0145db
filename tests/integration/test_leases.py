"""Replica leases on both backends: taken, renewed, given up, ended once by whoever finds
them run out, with the gone replica's running runs interrupted."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from ledger.errors import RunEnded
from ledger.limits import LEASE_SECONDS
from ledger.records import Lease, RunOutcome, RunStart
from ledger.storage.interface import Storage, Tx
from loops.clock import FakeClock
from loops.replicas import owner_of
from tests.backends import Backend
from tests.fakes.provider import ScriptedLLM
from tests.integration.test_scheduler import START, runs, service

GONE = "other-host:7:7"  # a replica of another host: only its lease tells whether it lives


def _start(owner: str, slot: float) -> RunStart:
    return RunStart(thread_id="t", loop="heartbeat", trigger="schedule", slot=slot, owner=owner)


async def _gone_replica_with_runs(store: Storage, expires_at: float) -> list[int | None]:
    def seed(tx: Tx) -> list[int | None]:
        tx.create_thread("t", "T", None)
        tx.hold_lease(GONE, expires_at)
        return [tx.start_run(_start(GONE, slot)) for slot in (1.0, 2.0)]

    return await store.write(seed)


async def _with_gone_replica(
    backend: Backend, expires_at: float
) -> tuple[Storage, list[float], list[int | None]]:
    """A store at time 100 (the list moves it) and the runs of a gone replica's lease."""
    now = [100.0]
    store = await backend.open(now=lambda: now[0])
    return store, now, await _gone_replica_with_runs(store, expires_at=expires_at)


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
    store, now, (first, second) = await _with_gone_replica(backend, 115.0)
    assert len(await store.mark_interrupted()) == 0  # its lease still holds
    assert [r.status for r in await store.history("t")] == ["running", "running"]
    now[0] = 115.0
    ended = await store.mark_interrupted()  # the rows as marked, for their run_finished
    assert [run.id for run in ended] == [first, second]
    for run_id in (first, second):
        assert run_id is not None
        run = await store.get_run(run_id)
        assert (run.status, run.reason, run.finished_at) == ("interrupted", "process_died", 115.0)
        assert ended[[first, second].index(run_id)] == run
    assert await store.leases() == []
    assert len(await store.mark_interrupted()) == 0  # nothing left to end


async def test_replicas_racing_to_end_a_lease_end_it_exactly_once(backend: Backend) -> None:
    now = [100.0]
    stores = [await backend.open(now=lambda: now[0]) for _ in range(3)]
    await _gone_replica_with_runs(stores[0], expires_at=110.0)
    now[0] = 120.0
    (lease,) = await stores[0].leases()
    ended = await asyncio.gather(*(s.write(lambda tx: tx.end_lease(lease)) for s in stores))
    assert ended.count(None) == 2
    assert [len(e) for e in ended if e is not None] == [2]
    counted = await asyncio.gather(*(s.mark_interrupted() for s in stores))
    assert counted == [[], [], []]
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
    assert len(await store.mark_interrupted()) == 2
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
    assert len(await store.mark_interrupted()) == 1
    status = {r.id: r.status for r in await store.history("t")}
    assert (status[leased], status[unleased], status[mine]) == (
        "running",
        "interrupted",
        "running",
    )


async def test_a_late_finish_of_an_interrupted_run_is_refused_with_its_effect(
    backend: Backend,
) -> None:
    store, now, (first, _) = await _with_gone_replica(backend, 110.0)
    assert first is not None
    now[0] = 111.0
    assert len(await store.mark_interrupted()) == 2

    # the replica was only paused: it wakes and finishes its run, with the run's effect
    def late(tx: Tx) -> None:
        tx.create_post("agent", "late", "x", run_id=first)
        tx.finish_run(first, RunOutcome(status="ok", summary="late"))

    with pytest.raises(RunEnded) as refused:
        await store.write(late)
    assert (refused.value.run_id, refused.value.status) == (first, "interrupted")
    run = await store.get_run(first)
    assert (run.status, run.reason, run.summary) == ("interrupted", "process_died", None)
    assert backend.query("SELECT COUNT(*) FROM ledger_posts") == [(0,)]  # rolled back with it


POST = {"action": "post", "title": "Digest", "content": "Quiet day.", "reasoning": "routine"}


async def test_a_run_ended_by_another_replica_meanwhile_keeps_its_row_and_logs_the_lost_outcome(
    backend: Backend, workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(START)
    llm = ScriptedLLM(POST)
    async with service(workspace, clock, llm, **backend.settings()) as svc:
        store = svc.store
        llm.gate = asyncio.Event()
        running = asyncio.create_task(svc.run_now("default"))
        async with asyncio.timeout(10):
            while llm.active == 0:
                await asyncio.sleep(0.01)
        # this replica's lease ran out while it was alive (paused): another one ends it
        me = store.owner
        lease = Lease(me, 0.0, 0.0, clock.now() - 1)
        await store.write(lambda tx: tx.hold_lease(me, lease.expires_at))
        assert len(await store.write(lambda tx: tx.end_lease(lease)) or []) == 1
        with caplog.at_level(logging.ERROR, logger="heartbeat"):
            llm.gate.set()
            row = await running
        assert (row.status, row.reason) == ("interrupted", "process_died")
        assert (await store.get_run(row.id)).status == "interrupted"
        assert backend.query("SELECT COUNT(*) FROM ledger_posts") == [(0,)]
        assert svc.executor.lifecycle.lost_finishes == 1
        assert f"run {row.id} for thread default finished after it was marked interrupted" in (
            caplog.text
        )
        assert '"status":"ok"' in caplog.text  # the lost outcome, logged whole


@pytest.mark.parametrize("lease_left", [30.0, -0.5], ids=["alive", "run-out"])
async def test_a_running_row_of_a_replica_whose_lease_ran_out_is_no_overlap(
    backend: Backend, workspace: Path, lease_left: float
) -> None:
    clock = FakeClock(START)
    async with service(workspace, clock, **backend.settings()) as svc:
        # a thread this replica's timers hold while the other one counts as alive
        me = svc.store.owner
        thread = next(t for t in (f"t{i}" for i in range(99)) if owner_of(t, [me, GONE]) == me)
        await clock.advance(2.5)  # the slot falls between two renewals (every 5 s)
        await svc.set_config(thread, {"every_seconds": 60})
        slot = clock.now() + 60

        def other_replica_runs_it(tx: Tx) -> int | None:
            tx.hold_lease(GONE, slot + lease_left)
            return tx.start_run(
                RunStart(thread_id=thread, loop="heartbeat", trigger="manual", owner=GONE)
            )

        assert await svc.store.write(other_replica_runs_it) is not None
        await clock.advance(60)
        rows = [(r.trigger, r.slot, r.status, r.reason) for r in await runs(svc, thread)]
        if lease_left > 0:  # its replica lives: the slot is an overlap
            assert rows == [
                ("manual", None, "running", None),
                ("schedule", slot, "skipped", "overlap"),
            ]
        else:  # gone just before the slot: the claim ends its lease and runs the slot
            assert rows == [
                ("manual", None, "interrupted", "process_died"),
                ("schedule", slot, "ok", None),
            ]
            assert GONE not in {lease.owner for lease in await svc.store.leases()}
