"""The scheduler through the real service: real SQLite, the real executor, a fake clock.

Hours of schedule run in milliseconds: ``FakeClock.advance`` wakes sleepers in time order and
waits (``idle``) until every claim and run has finished before time moves on.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.service import Service
from app.settings import Settings
from ledger.records import Run, Trigger
from loops.clock import FakeClock
from loops.lifecycle import start_row
from tests.backends import Backend
from tests.fakes.provider import ScriptedLLM

START = datetime(2026, 3, 2, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp()


def _idle(svc: Service) -> Callable[[], bool]:
    def idle() -> bool:
        sched = svc.scheduler
        running = svc.supervisor.is_running("heartbeat")
        return not sched._tasks and (not running or sched.timers.waiting)

    return idle


@asynccontextmanager
async def service(
    workspace: Path,
    clock: FakeClock,
    llm: ScriptedLLM | None = None,
    *,
    db: Path | None = None,
    start: bool = True,
    **overrides: Any,
) -> AsyncIterator[Service]:
    overrides.setdefault("timer_slack", 0.0)  # exact slot instants; one test covers the slack
    settings = Settings.for_workspace(workspace, **overrides)
    if db is not None:
        settings = Settings.for_workspace(workspace, db_path=db, **overrides)
    svc = await Service.open(settings, clock=clock, llm=llm or ScriptedLLM())
    previous = clock.idle
    clock.idle = _idle(svc)
    try:
        if start:
            await svc.start_loops()
            await clock.settle()
        yield svc
    finally:
        clock.idle = None
        await svc.close()
        clock.idle = previous


async def runs(svc: Service, thread_id: str = "default", **kw: Any) -> list[Run]:
    return list(reversed(await svc.store.history(thread_id, limit=1000, **kw)))


def heartbeat_runs(rows: list[Run]) -> list[Run]:
    return [r for r in rows if r.status not in ("skipped",)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


async def test_first_run_one_interval_after_enable_then_on_the_grid(
    workspace: Path, clock: FakeClock
) -> None:
    async with service(workspace, clock) as svc:
        # every beat decides (nothing changes between them, so none would with skipping on)
        await svc.set_config("default", {"every_seconds": 600, "skip_unchanged": False})
        anchor = clock.now()
        await clock.advance(599)
        assert await runs(svc) == []
        await clock.advance(1)
        await clock.advance(600 * 10)
        rows = await runs(svc)
        assert [r.slot for r in rows] == [anchor + 600 * k for k in range(1, 12)]
        assert [r.started_at for r in rows] == [anchor + 600 * k for k in range(1, 12)]
        assert {r.trigger for r in rows} == {"schedule"}
        assert {r.status for r in rows} == {"ok"}
        thread = await svc.store.get_thread("default")
        assert thread.next_run == anchor + 600 * 12


async def test_manual_run_does_not_shift_grid_but_suppresses_a_close_slot(
    workspace: Path, clock: FakeClock
) -> None:
    async with service(workspace, clock) as svc:
        await svc.set_config("default", {"every_seconds": 1800})
        anchor = clock.now()
        await clock.advance(1700)  # 100 s before the first slot
        manual = await svc.run_now("default")
        assert manual.trigger == "manual"
        # the slot at +1800 falls before r + every/2 and is suppressed; the grid is kept
        assert (await svc.store.get_thread("default")).next_run == anchor + 3600
        await clock.advance(1900)
        rows = await runs(svc)
        assert [(r.trigger, r.slot) for r in rows] == [
            ("manual", None),
            ("schedule", anchor + 3600),
        ]


async def test_manual_run_far_from_slot_leaves_next_run(workspace: Path, clock: FakeClock) -> None:
    async with service(workspace, clock) as svc:
        await svc.set_config("default", {"every_seconds": 1800})
        anchor = clock.now()
        await clock.advance(100)
        await svc.run_now("default")
        assert (await svc.store.get_thread("default")).next_run == anchor + 1800


async def test_restart_after_downtime_owes_exactly_one_catch_up(
    workspace: Path, clock: FakeClock
) -> None:
    async with service(workspace, clock) as svc:
        # the catch-up decides although nothing changed while the service was down
        await svc.set_config("default", {"every_seconds": 600, "skip_unchanged": False})
        anchor = clock.now()
        await clock.advance(600 * 3)
        assert len(await runs(svc)) == 3
    clock.jump(600 * 10 + 30)  # down for ten intervals: slots 2400..7800 are missed
    async with service(workspace, clock) as svc:
        await clock.advance(61)  # the catch-up is spread by at most a minute
        rows = await runs(svc)
        after = rows[3:]
        assert [r.status for r in after if r.trigger == "catch_up"].count("ok") == 1
        skipped = [r for r in after if r.status == "skipped"]
        assert [r.reason for r in skipped] == ["missed"]
        assert skipped[0].summary is not None and skipped[0].summary.startswith("10 missed")
        # after the catch-up the cadence is the old grid again, without a burst
        await clock.advance(600 * 5)
        later = [r for r in (await runs(svc))[3:] if r.trigger == "schedule"]
        assert all((r.slot - anchor) % 600 == 0 for r in later if r.slot is not None)
        gaps = [b.started_at - a.started_at for a, b in itertools.pairwise(later)]
        assert gaps and all(g == 600 for g in gaps)


async def test_restart_before_due_keeps_cadence(workspace: Path, clock: FakeClock) -> None:
    async with service(workspace, clock) as svc:
        await svc.set_config("default", {"every_seconds": 600})
        anchor = clock.now()
        await clock.advance(900)
    clock.jump(120)  # down for two minutes, back before the next slot
    async with service(workspace, clock) as svc:
        await clock.advance(600 * 3)
        rows = await runs(svc)
        assert [r.slot for r in rows] == [anchor + 600 * k for k in range(1, 5)]
        assert {r.trigger for r in rows} == {"schedule"}


async def test_slot_during_a_long_run_is_skipped_as_overlap(
    workspace: Path, clock: FakeClock
) -> None:
    llm = ScriptedLLM()
    async with service(workspace, clock, llm) as svc:
        await svc.set_config("default", {"every_seconds": 60})
        llm.gate = asyncio.Event()
        clock.idle = lambda: bool(svc.scheduler.timers.waiting)
        await clock.advance(60)  # the first run starts and hangs on the gate
        await clock.advance(60)  # the next slot comes due while it is still going
        llm.gate.set()
        clock.idle = _idle(svc)
        await clock.settle()
        rows = await runs(svc)
        assert [(r.status, r.reason) for r in rows] == [("ok", None), ("skipped", "overlap")]
        # every run records its cost, the skipped one 0
        assert [(r.prompt_tokens, r.completion_tokens) for r in rows] == [(10, 12), (0, 0)]


async def test_active_hours_in_local_time(workspace: Path, clock: FakeClock) -> None:
    async with service(workspace, clock) as svc:
        await svc.set_config(
            "default",
            {
                "every": "1h",
                "active_hours_start": 9,
                "active_hours_end": 17,
                "timezone": "America/New_York",
            },
        )
        await clock.advance(86400 * 2)
        tz = ZoneInfo("America/New_York")
        hours = [datetime.fromtimestamp(r.started_at, tz).hour for r in await runs(svc)]
        assert hours and all(9 <= h < 17 for h in hours)
        assert len(hours) == 16  # two local days of 8 hourly slots


async def test_wall_clock_jump_ten_years_gives_one_catch_up(
    workspace: Path, clock: FakeClock
) -> None:
    async with service(workspace, clock) as svc:
        # the catch-up decides although nothing changed (skipping would record it skipped)
        await svc.set_config("default", {"every_seconds": 600, "skip_unchanged": False})
        await clock.advance(600)
        clock.jump(10 * 365 * 86400)
        await clock.advance(125)  # the jump check runs at most once a minute, then the spread
        rows = await runs(svc)
        assert [r.trigger for r in rows if r.status == "ok"] == ["schedule", "catch_up"]
        missed = [r for r in rows if r.reason == "missed"]
        assert len(missed) == 1
        assert missed[0].summary is not None and int(missed[0].summary.split()[0]) > 500_000


async def test_a_reconcile_pass_during_a_late_claim_owes_no_second_catch_up(
    workspace: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The jump detector's re-arm can read the thread while a late slot's claim is in flight
    (the stored next run still the missed slot): it must not leave a catch-up planned once the
    claim has moved the slot on, or the next slot is recorded as a second catch-up."""
    async with service(workspace, clock) as svc:
        await svc.set_config("default", {"every_seconds": 60, "skip_unchanged": False})
        await clock.advance(60)
        scheduler = svc.scheduler
        claim = scheduler._claim
        reconciled: list[int] = []

        async def reconcile_first(*args: Any) -> Any:
            reconciled.append(await scheduler.arm_all())  # reads the row before the claim
            return await claim(*args)

        monkeypatch.setattr(scheduler, "_claim", reconcile_first)
        clock.jump(600 + 5)  # the host slept: the next slot's timer fires ten slots late
        await clock.advance(1)
        assert reconciled == [1]
        monkeypatch.setattr(scheduler, "_claim", claim)
        await clock.advance(60 * 3)
        rows = await runs(svc)
        assert [r.reason for r in rows].count("missed") == 1
        assert [r.trigger for r in rows if r.status == "ok"] == [
            "schedule",
            "catch_up",
            "schedule",
            "schedule",
            "schedule",
        ]


async def test_wall_clock_jump_back_one_hour_runs_no_slot_twice(
    workspace: Path, clock: FakeClock
) -> None:
    async with service(workspace, clock) as svc:
        await svc.set_config("default", {"every_seconds": 600})
        await clock.advance(600 * 3)
        clock.jump(-3600)
        await clock.advance(3600 + 600 * 2)
        slots = [r.slot for r in await runs(svc) if r.slot is not None]
        assert len(slots) == len(set(slots))
        assert len(slots) == 5


async def test_disable_disarms_and_reenable_reanchors(workspace: Path, clock: FakeClock) -> None:
    async with service(workspace, clock) as svc:
        await svc.set_config("default", {"every_seconds": 600})
        await clock.advance(600)
        await svc.set_config("default", {"enabled": False})
        assert "default" not in svc.scheduler.timers
        await clock.advance(3000)
        assert len(await runs(svc)) == 1
        await svc.set_config("default", {"enabled": True})
        again = clock.now()
        await clock.advance(600)
        rows = await runs(svc)
        assert rows[-1].slot == again + 600


async def test_stop_and_start_rearm_from_database(workspace: Path, clock: FakeClock) -> None:
    async with service(workspace, clock) as svc:
        await svc.set_config("default", {"every_seconds": 600})
        anchor = clock.now()
        await svc.supervisor.stop("heartbeat")
        assert len(svc.scheduler.timers) == 0
        await clock.advance(1800)
        assert await runs(svc) == []
        await svc.supervisor.start("heartbeat")
        await clock.advance(61)
        rows = await runs(svc)
        assert [r.trigger for r in rows if r.status == "ok"] == ["catch_up"]
        assert (await svc.store.get_thread("default")).next_run == anchor + 2400


async def test_two_services_on_one_database_never_run_a_slot_twice(
    workspace: Path, clock: FakeClock, backend: Backend
) -> None:
    shared = backend.settings()
    async with service(workspace, clock, start=False, **shared) as a:
        for i in range(30):
            await a.set_config(f"t{i}", {"every_seconds": 60})
        async with service(workspace, clock, start=False, **shared) as b:
            await a.start_loops()
            await b.start_loops()
            both = [a, b]
            clock.idle = lambda: all(_idle(s)() for s in both)
            await clock.advance(600)
            total = await a.store.count_runs()
            rows = backend.query("SELECT thread_id, slot FROM runs WHERE slot IS NOT NULL")
            assert len(rows) == len(set(rows)) == total == 30 * 10
            assert a.scheduler.started_runs > 0 and b.scheduler.started_runs > 0


async def test_closing_marks_in_flight_runs_interrupted(workspace: Path, clock: FakeClock) -> None:
    llm = ScriptedLLM()
    llm.gate = asyncio.Event()
    svc = await Service.open(Settings.for_workspace(workspace), clock=clock, llm=llm)
    task = asyncio.create_task(svc.run_now("default"))
    for _ in range(500):
        if llm.active:
            break
        await asyncio.sleep(0.01)
    await svc.close()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with service(workspace, clock, start=False) as again:
        rows = await runs(again)
        assert [(r.status, r.reason) for r in rows] == [("interrupted", "shutdown")]


async def test_timer_slack_claims_close_slots_together_and_never_early(
    workspace: Path, clock: FakeClock
) -> None:
    async with service(workspace, clock, timer_slack=0.5) as svc:
        for i in range(3):
            await svc.set_config(f"s{i}", {"every_seconds": 60})
            await clock.advance(0.1)
        first = clock.now() - 0.3 + 60
        await clock.advance(first + 0.49 - clock.now())
        assert await svc.store.count_runs() == 0  # due, but inside the slack
        await clock.advance(0.02)
        rows = [r for i in range(3) for r in await runs(svc, f"s{i}")]
        assert [r.slot for r in rows] == pytest.approx([first, first + 0.1, first + 0.2])
        assert len({r.started_at for r in rows}) == 1  # one wake-up, one claim
        assert rows[0].started_at == pytest.approx(first + 0.5)
        assert all(r.slot is not None and r.started_at >= r.slot for r in rows)


async def test_claimed_slot_becomes_an_overlap_skip_if_a_manual_run_slipped_in(
    workspace: Path, clock: FakeClock
) -> None:
    async with service(workspace, clock, start=False) as svc:
        await svc.set_config("default", {"every_seconds": 600})
        thread = await svc.store.get_thread("default")
        slot = thread.next_run
        owner = svc.store.owner
        assert slot is not None
        plan = svc.executor.plan(thread, Trigger.SCHEDULE, slot)
        claimed = await svc.store.write(lambda tx: start_row(tx, plan, owner))
        assert claimed is not None
        run_id = claimed.id
        svc.executor.in_flight["default"] = 999  # a manual run started after the claim
        assert await svc.executor.run_claimed(claimed) is None
        run = await svc.store.get_run(run_id)
        assert (run.status, run.reason, run.slot) == ("skipped", "overlap", slot)
        assert svc.executor.in_flight == {"default": 999}  # the manual run is left alone


async def test_catch_ups_after_a_restart_all_come_within_the_first_interval(
    workspace: Path, clock: FakeClock
) -> None:
    ids = [f"m{i:02d}" for i in range(40)]
    async with service(workspace, clock, timer_slack=0.1) as svc:
        for tid in ids:
            # every catch-up decides although nothing changed
            await svc.set_config(tid, {"every_seconds": 60, "skip_unchanged": False})
        await clock.advance(90)
    clock.jump(600)
    restarted = clock.now()
    async with service(workspace, clock, timer_slack=0.1) as svc:
        await clock.advance(60)
        for tid in ids:
            late = [r for r in await runs(svc, tid) if r.started_at >= restarted]
            catch_ups = [r for r in late if r.trigger == "catch_up" and r.status == "ok"]
            assert len(catch_ups) == 1, (tid, late)
            assert catch_ups[0].started_at < restarted + 60
        offsets = {r.started_at - restarted for tid in ids for r in await runs(svc, tid)}
        assert max(offsets) <= 30 + 0.1 + 1e-6  # spread over half the interval, plus slack
        assert len({round(o) for o in offsets if o > 0}) > 10  # and actually spread
