"""The heartbeat scheduler: durable per-thread cadence on one timer set.

Each enabled thread has a stored anchor and next run; the grid is anchor + k·every. When a timer
fires, the slot is claimed in the database by compare-and-set of the stored next run (so two
processes on one file never run a slot twice), the next slot is stored, and the run starts.
Claims are made in batches with a yield between batches, so thousands of due threads never stall
the event loop. Pure schedule math lives in ``loops.schedule``.

A beat that yielded to the user (``user_active``) is owed once the thread has been quiet for
``quiet_after_user_seconds``: ``defer`` keeps that instant and the thread's one timer fires at
the earlier of it and the next slot. When it fires the quiet end is computed anew from the
thread's messages (a newer message puts it off, with no row), and the beat starts with trigger
``schedule``, its slot the quiet end, told the wakes held for it. Any other heartbeat run of the
thread that finishes meanwhile (``finished``: a run-now, a wake, a slot) settles what was owed.
When the scheduler starts, and whenever a thread comes to this replica's timers from another's,
the beats owed so are read back from the database (``_restore_deferred``: a thread whose last
heartbeat run yielded to the user owes one at its quiet end, by ``loops.spend.still_deferred``),
so neither a restart nor a thread moving replica loses one.

A claim the database cannot take (``StorageBusy``: it cannot be reached, or another process
holds it locked past the storage's own retries; ``StorageFault``: its disk is full, its file
read-only or damaged) changes nothing stored, so the slots stay owed:
their timers are armed again after a back-off, and the claim, once it goes through, runs each
slot late (or as the catch-up of the slots it passed, by the usual rule). The outage is logged
once as it starts and once as it ends, however many slots and retries it spans. A claim whose
connection was cut during its ``COMMIT`` (or whose pass failed after it committed) may have
written its ``running`` rows all the same: the next pass that reaches the database runs those,
late (``loops.unsure``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from ledger import config as hbconfig
from ledger.errors import StorageFault
from ledger.limits import WAKE_EVENTS_MAX
from ledger.records import Loop, PlanFix, Reason, Run, RunOutcome, RunStatus, Thread, Trigger
from ledger.storage.interface import USER, RunStart, Storage, Tx
from loops import schedule as sched
from loops.clock import Clock
from loops.lifecycle import RunPlan, start_row
from loops.outage import WAITED_OUT, Outage
from loops.spend import last_user_at, quiet_until, still_deferred
from loops.unsure import UnsureClaims

log = logging.getLogger(f"heartbeat.{__name__}")

CLAIM_BATCH = 200
START_CHUNK = 100
CATCH_UP_SPREAD = 60.0
LATE_TOLERANCE = 5.0  # a slot this late is still an ordinary run, not a catch-up
CLAIM_RETRY_FIRST = 1.0  # seconds before claims the database could not take are tried again
CLAIM_RETRY_MAX = 10.0  # the longest wait between two tries

# Timer slack: a wake-up waits this long past the earliest due slot and takes every slot due by
# then, so runs due close together are claimed in one transaction (as systemd's AccuracySec or
# the kernel's timer slack do). Heartbeats are minutes apart; 0.1 s late costs nothing.
TIMER_SLACK = 0.1

HeartbeatPlan = RunPlan[hbconfig.HeartbeatConfig]
# What a run of the thread (as read at the claim) needs, for a trigger and a slot.
Planner = Callable[[Thread, Trigger, float], HeartbeatPlan]
# Carries out a claimed run, given its plan with the id of the ``running`` row the claim wrote;
# None when it recorded the row a skipped overlap instead (a run of the thread had started).
Runner = Callable[[HeartbeatPlan], Awaitable[Run | None]]
# Told each row the scheduler records itself, without a run: (trigger, outcome) (metrics).
SkipObserver = Callable[[Trigger, RunOutcome], None]
# Told the runs of gone replicas a claim interrupted, ending their leases (to publish them).
InterruptedObserver = Callable[[list[Run]], None]


def skipped_overlap(model: str | None = None) -> RunOutcome:
    """A slot that came while the thread's previous run was still going."""
    return RunOutcome(
        status=RunStatus.SKIPPED,
        reason=Reason.OVERLAP,
        model=model,
        summary="skipped: the previous run was still going",
        prompt_tokens=0,
        completion_tokens=0,
    )


@functools.lru_cache(maxsize=4096)
def _decoded(config_json: str | None) -> tuple[hbconfig.HeartbeatConfig, sched.Schedule]:
    """The stored config and its schedule; many threads share a config text, so cache it."""
    cfg, _ = hbconfig.decode_stored(config_json)
    return cfg, schedule_of(cfg)


def schedule_of(cfg: hbconfig.HeartbeatConfig) -> sched.Schedule:
    return sched.Schedule(
        every=cfg.every_seconds,
        start_hour=cfg.active_hours_start,
        end_hour=cfg.active_hours_end,
        tz=cfg.timezone,
    )


def plan_config_change(
    old: hbconfig.HeartbeatConfig | None,
    new: hbconfig.HeartbeatConfig,
    anchor: float | None,
    next_run: float | None,
    now: float,
) -> tuple[float | None, float | None]:
    """(anchor, next_run) after a config change. Pure.

    Enabling or changing the interval re-anchors at ``now`` (first run one interval later);
    other changes keep the grid and recompute the next slot inside the active hours.
    """
    if not new.enabled:
        return anchor, None
    reanchor = (
        old is None or not old.enabled or old.every_seconds != new.every_seconds or anchor is None
    )
    if reanchor:
        anchor = now
        return anchor, sched.next_run(schedule_of(new), anchor, now + new.every_seconds)
    assert anchor is not None
    floor = now if next_run is None else min(max(now, next_run), now + new.every_seconds)
    return anchor, sched.next_run(schedule_of(new), anchor, floor)


def _start_told(tx: Tx, plan: HeartbeatPlan, owner: str | None) -> HeartbeatPlan | None:
    """Start a claimed slot's run, told the wakes held for the thread's next beat (which it
    takes); if the slot's row exists already, the held wakes stay for the next one."""
    held = tx.take_held_wake(plan.thread_id)
    run = start_row(tx, msgspec.structs.replace(plan, event=held), owner)
    if run is None and held is not None:
        tx.hold_wake(plan.thread_id, held, max_events=WAKE_EVENTS_MAX)
    return run


@dataclass(frozen=True, slots=True)
class _Claimed:
    won: set[str]  # the threads whose slots this process claimed
    started: list[HeartbeatPlan]  # their runs, with the ids of the ``running`` rows written
    recorded: list[tuple[Trigger, RunOutcome]]  # the skips written (overlaps, missed slots)
    interrupted: list[Run]  # runs of gone replicas whose leases the claim ended


class HeartbeatScheduler:
    def __init__(
        self,
        store: Storage,
        clock: Clock,
        runner: Runner,
        *,
        is_running: Callable[[str], int | None],
        plan: Planner,
        spread: float = CATCH_UP_SPREAD,
        slack: float = TIMER_SLACK,
        owns: Callable[[str], bool] = lambda _thread_id: True,
        window: int = 20,
    ) -> None:
        from loops.timers import TimerSet

        self.store = store
        self.clock = clock
        self.runner = runner
        self.is_running = is_running
        self.plan = plan
        self.spread = spread
        self.slack = slack
        self.owns = owns  # whether this replica's timers hold a thread (``loops.replicas``)
        self.window = window  # the messages a beat reads (where the user's last one is found)
        self.timers = TimerSet(clock)
        self._catch_up: dict[str, int] = {}
        self._deferred: dict[str, float] = {}  # thread id -> when its deferred beat is owed
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started_runs = 0
        self.lost_claims = 0  # slots another process claimed first
        self.missed_slots = 0  # grid slots coalesced into catch-up runs
        self.skip_observers: list[SkipObserver] = []  # told each skip recorded without a run
        self.claim_failures = 0  # claims the database could not take (each retried)
        self._outage = Outage(  # claims failing
            clock,
            log,
            first=CLAIM_RETRY_FIRST,
            most=CLAIM_RETRY_MAX,
            down="[HEARTBEAT] claims wait for the database %(kind)s: %(kept)d due slot(s) kept,"
            " tried again with a back-off from %(first).0f s to %(most).0f s (%(exc)s)",
            back="[HEARTBEAT] the database is back after %(seconds).0f s: claims go on",
        )
        self._unsure = UnsureClaims(store, log)  # the starts of a pass that failed
        self.on_interrupted: InterruptedObserver | None = None

    # -- arming -------------------------------------------------------------------------
    async def arm_all(self) -> int:
        """Arm every enabled thread from the database, applying the catch-up rule; a thread
        its timers did not hold (at the start, or moved here from another replica) with the
        beat it was deferred for the user, if it still owes one."""
        armed = 0
        async for batch in self.store.iter_threads(batch=2000):
            newcomers = [t for t in batch if t.id not in self.timers]
            armed += await self.arm_threads(batch)
            await self._restore_deferred(newcomers)
            await asyncio.sleep(0)
        return armed

    async def _restore_deferred(self, threads: list[Thread]) -> None:
        """The beats these threads owed the user when the process stopped, read from their last
        heartbeat run (a ``user_active`` skip) and their messages, deferred again."""
        now = self.clock.now()
        for thread in threads:
            cfg, s = _decoded(thread.config_json)
            quiet = cfg.quiet_after_user_seconds
            if not cfg.enabled or quiet is None or thread.id in self._deferred:
                continue
            if thread.next_run is None or not self.owns(thread.id):
                continue
            last = await self.store.history(thread.id, limit=1, loop=Loop.HEARTBEAT)
            if not last or last[0].reason != Reason.USER_ACTIVE:
                continue
            messages = await self.store.messages(thread.id, limit=self.window)
            end = quiet_until(last_user_at(messages, USER), quiet)
            open_then = end is not None and sched.in_active_hours(s, end)
            until = still_deferred(last[0].reason, end, now, open_then)
            if until is not None:
                self.defer(thread.id, until)

    async def arm_threads(self, threads: list[Thread]) -> int:
        """Arm (or disarm) these threads as read, applying the catch-up rule; how many armed."""
        now = self.clock.now()
        armed = 0
        fixes: list[PlanFix] = []
        for thread in threads:
            due = self._plan_arm(thread, now, fixes)
            if due is not None:
                self._arm(thread.id, due)
                armed += 1
        if fixes:
            stored = await self.store.write(lambda tx: tx.store_plans(fixes))
            for fix in fixes:
                if fix.thread_id not in stored:  # its config changed since the read
                    await self.rearm(fix.thread_id)
        return armed

    def _plan_arm(
        self,
        thread: Thread,
        now: float,
        fixes: list[PlanFix],
    ) -> float | None:
        if not self.owns(thread.id):  # another replica's timers hold it
            self.timers.disarm(thread.id)
            self._catch_up.pop(thread.id, None)
            self._deferred.pop(thread.id, None)
            return None
        cfg, schedule = _decoded(thread.config_json)
        if not cfg.enabled:
            self.timers.disarm(thread.id)
            self._deferred.pop(thread.id, None)
            if thread.next_run is not None:
                fixes.append(PlanFix(thread.id, thread.anchor, None, thread.config_json))
            return None
        if thread.anchor is None or thread.next_run is None:
            anchor, nxt = plan_config_change(None, cfg, None, None, now)
            fixes.append(PlanFix(thread.id, anchor, nxt, thread.config_json))
            return nxt
        if thread.id in self.timers and thread.id not in self._catch_up:
            if self.timers.due(thread.id) == self._due_with_deferral(thread.id, thread.next_run):
                return thread.next_run  # a live timer already holds this slot
        if thread.next_run > now - LATE_TOLERANCE:
            self._catch_up.pop(thread.id, None)
            return thread.next_run
        if thread.id in self._catch_up and thread.id in self.timers:
            return self.timers.due(thread.id)  # a catch-up is already planned
        owed = sched.catch_up(schedule, thread.anchor, thread.next_run, now)
        if owed is None:  # pragma: no cover - next_run <= now always owes a run
            return thread.next_run
        self._catch_up[thread.id] = owed.missed
        # Spread the catch-ups of a restart over a minute, but within half an interval, so every
        # thread still runs inside its first interval after the restart (timer slack included).
        spread = min(self.spread, schedule.every / 2)
        return owed.run_at + sched.spread_offset(thread.id, spread)

    async def rearm(self, thread_id: str) -> None:
        """Re-read one thread and (re)arm or disarm its timer (after a config change)."""
        thread = await self.store.get_thread(thread_id)
        fixes: list[PlanFix] = []
        due = self._plan_arm(thread, self.clock.now(), fixes)
        if due is None:
            self.timers.disarm(thread_id)
        else:
            self._arm(thread_id, due)

    def disarm_all(self) -> None:
        self.timers.clear()
        self._catch_up.clear()
        self._deferred.clear()

    def _due_with_deferral(self, thread_id: str, when: float) -> float:
        deferred = self._deferred.get(thread_id)
        return when if deferred is None else min(when, deferred)

    def _arm(self, thread_id: str, when: float) -> None:
        """Arm the thread's timer for ``when`` or its deferred beat, whichever comes first."""
        self.timers.arm(thread_id, self._due_with_deferral(thread_id, when))

    # -- beats deferred for the user ------------------------------------------------------
    def defer(self, thread_id: str, until: float) -> None:
        """A beat of the thread yielded to the user: one is owed at ``until`` (the quiet end,
        ``loops.spend.quiet_until``), unless another run of the thread settles it first."""
        if not self.owns(thread_id):
            return
        self._deferred[thread_id] = until
        due = self.timers.due(thread_id)
        if due is None or until < due:
            self.timers.arm(thread_id, until)

    def deferred(self, thread_id: str) -> float | None:
        """When the thread's deferred beat is owed (None: none is)."""
        return self._deferred.get(thread_id)

    @property
    def deferred_beats(self) -> int:
        """Threads owed a beat deferred for the user."""
        return len(self._deferred)

    def _skipped(self, trigger: Trigger, outcome: RunOutcome) -> None:
        for observe in self.skip_observers:
            observe(trigger, outcome)

    def finished(self, run: Run) -> None:
        """A run finished (``Lifecycle.observers``): a heartbeat of the thread that did not
        yield to the user again, and was not cut short before it decided (``interrupted``),
        settles the beat deferred for it."""
        if (
            run.loop == Loop.HEARTBEAT
            and run.reason != Reason.USER_ACTIVE
            and run.status != RunStatus.INTERRUPTED
        ):
            self._deferred.pop(run.thread_id, None)

    async def _deferred_due(self, thread: Thread, now: float) -> HeartbeatPlan | None:
        """The thread's deferred beat came due: started, put off (the user wrote again) or
        dropped (disabled, outside its active hours, or a run of it in flight)."""
        thread_id = thread.id
        self._deferred.pop(thread_id, None)
        cfg, s = _decoded(thread.config_json)
        if not cfg.enabled or thread.anchor is None or not self.owns(thread_id):
            return None
        messages = await self.store.messages(thread_id, limit=self.window)
        until = quiet_until(last_user_at(messages, USER), cfg.quiet_after_user_seconds)
        if until is not None and until > now:  # the user wrote again: wait for the new end
            self._deferred[thread_id] = until
            return None
        if not sched.in_active_hours(s, now) or self.is_running(thread_id) is not None:
            return None  # the next slot (in its hours), or the run in flight, decides
        slot = now if until is None else until
        owner = self.store.owner
        self._unsure.add(thread_id, slot)

        def start(tx: Tx) -> HeartbeatPlan | None:
            current = tx.get_thread(thread_id)
            if not _decoded(current.config_json)[0].enabled:
                return None
            if tx.running_heartbeat(thread_id) is not None:
                return None
            return _start_told(tx, self.plan(current, Trigger.SCHEDULE, slot), owner)

        return await self.store.write(start, first=True)

    # -- firing -------------------------------------------------------------------------
    async def dispatch(self) -> None:
        """Forever: wait for the earliest timer, claim what is due in batches, start runs."""
        while True:
            await self.timers.wait(self.slack)
            # Claim everything due first (the claims are the herd's latency: starting runs
            # meanwhile would only slow them), then start the runs in chunks.
            starts: list[HeartbeatPlan] = []
            while True:
                due = self.timers.pop_due(self.clock.now(), CLAIM_BATCH)
                if not due:
                    break
                claimed = await self._claim_or_retry(due)
                if claimed is None:
                    break
                starts.extend(claimed)
            for i in range(0, len(starts), START_CHUNK):
                for plan in starts[i : i + START_CHUNK]:
                    self._spawn(plan)
                await asyncio.sleep(0)

    async def _claim_or_retry(self, due: list[tuple[str, float]]) -> list[HeartbeatPlan] | None:
        """``_claim_due``, or None when the database could not take the claims: then every
        due slot (these and those still armed) is kept for a retry after the back-off."""
        owed = {tid: self._catch_up[tid] for tid, _ in due if tid in self._catch_up}
        try:
            adopted = await self._unsure.committed(self._load, self.plan)
            for plan in adopted:
                self._catch_up.pop(plan.thread_id, None)  # that run is the catch-up owed
            started = await self._claim_due(due)
        except WAITED_OUT as exc:
            now = self.clock.now()
            self.claim_failures += 1
            self._catch_up.update(owed)  # popped by the failed pass, still owed
            kept = [*due, *self.timers.pop_due(now, len(self.timers))]
            retry_at = now + self._outage.failed(exc, kept=len(kept))
            for thread_id, _when in kept:
                self.timers.arm(thread_id, retry_at)
            return None
        self._outage.succeeded()
        self._unsure.clear()
        return adopted + started

    async def _claim_due(self, due: list[tuple[str, float]]) -> list[HeartbeatPlan]:
        """Claim the due slots in one transaction; returns the started runs' plans."""
        now = self.clock.now()
        threads = {t.id: t for t in await self._load([tid for tid, _ in due])}
        claims: list[tuple[str, float, float]] = []
        starts: list[HeartbeatPlan] = []
        deferred_starts: list[HeartbeatPlan] = []  # beats deferred for the user, started
        skipped: list[tuple[str, Trigger, RunOutcome, float | None]] = []
        coalesced: dict[str, int] = {}  # thread id -> the slots its catch-up coalesces
        for thread_id, _when in due:
            thread = threads.get(thread_id)
            if thread is None or thread.next_run is None:
                continue
            cfg, s = _decoded(thread.config_json)
            if not cfg.enabled or thread.anchor is None:
                self._deferred.pop(thread_id, None)
                continue
            if thread.next_run > now:  # moved by a config change or another process
                deferred = self._deferred.get(thread_id)
                if deferred is not None and deferred <= now:
                    plan = await self._deferred_due(thread, now)
                    if plan is not None:
                        deferred_starts.append(plan)
                self._arm(thread_id, thread.next_run)
                continue
            if self._deferred.get(thread_id, now + 1) <= now:
                del self._deferred[thread_id]  # the slot's beat is the one owed
            slot = thread.next_run
            missed = self._catch_up.pop(thread_id, 0)
            if not missed and now - slot >= s.every:  # the clock jumped or the host slept
                owed = sched.catch_up(s, thread.anchor, slot, now)
                if owed is not None:
                    if owed.run_at > now + 1.0:  # outside active hours: wait for the opening
                        self._catch_up[thread_id] = owed.missed
                        self.timers.arm(thread_id, owed.run_at)
                        continue
                    missed = owed.missed
            nxt = sched.next_run(s, thread.anchor, sched.spacing_floor(now, s.every, now))
            claims.append((thread_id, slot, nxt))
            if self.is_running(thread_id) is not None:
                skipped.append((thread_id, Trigger.SCHEDULE, skipped_overlap(), slot))
                continue
            trigger = Trigger.SCHEDULE
            if missed > 0:
                trigger = Trigger.CATCH_UP
                coalesced[thread_id] = missed
                skipped.append(
                    (
                        thread_id,
                        Trigger.CATCH_UP,
                        RunOutcome(
                            status=RunStatus.SKIPPED,
                            reason=Reason.MISSED,
                            summary=f"{missed} missed slot(s) coalesced into one catch-up run",
                        ),
                        None,
                    )
                )
            starts.append(self.plan(thread, trigger, slot))
        claimed = await self._claim(claims, skipped, starts)
        for trigger, outcome in claimed.recorded:
            self._skipped(trigger, outcome)
        if claimed.interrupted and self.on_interrupted is not None:
            self.on_interrupted(claimed.interrupted)
        self.missed_slots += sum(n for tid, n in coalesced.items() if tid in claimed.won)
        for thread_id, _slot, nxt in claims:
            if thread_id in claimed.won:
                # the stored next run is ``nxt`` now: a catch-up planned meanwhile by a re-arm
                # that read the missed slot (the jump detector's pass) is owed no more
                self._catch_up.pop(thread_id, None)
                if self.owns(thread_id):
                    self._arm(thread_id, nxt)
            else:
                self.lost_claims += 1
                await self.rearm(thread_id)
        for plan in deferred_starts:  # a beat off the grid spaces the next slot, as run-now
            await self.after_manual_run(plan.thread_id, now)
        return claimed.started + deferred_starts

    async def _load(self, ids: list[str]) -> list[Thread]:
        out: list[Thread] = []
        for i in range(0, len(ids), 400):
            out.extend(await self.store.threads_by_ids(ids[i : i + 400]))
        return out

    async def _claim(
        self,
        claims: list[tuple[str, float, float]],
        skipped: list[tuple[str, Trigger, RunOutcome, float | None]],
        starts: list[HeartbeatPlan],
    ) -> _Claimed:
        """One transaction: move the won slots on, record skips, write the ``running`` rows."""
        if not claims:
            return _Claimed(set(), [], [], [])
        owner = self.store.owner
        self._unsure.add_starts(starts)

        def claim(tx: Tx) -> _Claimed:
            won = tx.claim_slots(claims)
            recorded: list[tuple[Trigger, RunOutcome]] = []
            for thread_id, trigger, outcome, slot in skipped:
                if thread_id in won:
                    start = RunStart(
                        thread_id=thread_id, loop=Loop.HEARTBEAT, trigger=trigger, slot=slot
                    )
                    if tx.record_run(start, outcome) is not None:
                        recorded.append((trigger, outcome))
            started = []
            # a run of the thread in flight on another replica (the claim holds the threads'
            # row locks, which its start took too): the slot is skipped as an overlap, unless
            # that replica's lease ran out: its lease is ended here, its runs interrupted (a
            # late finish of theirs is refused; ``on_interrupted`` publishes them), and the
            # slot runs
            busy = tx.running_heartbeat_threads() if starts else set()
            interrupted = tx.end_expired_leases() if busy else []
            if interrupted:
                busy = tx.running_heartbeat_threads()
            for plan in starts:
                if plan.thread_id not in won:
                    continue
                if plan.thread_id in busy:
                    start = RunStart(
                        thread_id=plan.thread_id,
                        loop=Loop.HEARTBEAT,
                        trigger=plan.trigger,
                        slot=plan.slot,
                    )
                    overlap = skipped_overlap(plan.model)
                    if tx.record_run(start, overlap) is not None:
                        recorded.append((plan.trigger, overlap))
                elif (run := _start_told(tx, plan, owner)) is not None:
                    started.append(run)
            return _Claimed(won, started, recorded, interrupted)

        return await self.store.write(claim, first=True)

    def _spawn(self, plan: HeartbeatPlan) -> None:
        task = asyncio.create_task(self._run(plan), name=f"heartbeat:{plan.thread_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, plan: HeartbeatPlan) -> None:
        self.started_runs += 1
        try:
            if await self.runner(plan) is None:  # a run of the thread had started meanwhile
                self._skipped(plan.trigger, skipped_overlap(plan.model))
        except StorageFault as fault:  # logged whole by the storage and the run's lifecycle
            log.error(
                "[HEARTBEAT] scheduled run for thread %s failed: %s", plan.thread_id, fault.code
            )
        except Exception:
            log.exception("[HEARTBEAT] scheduled run for thread %s failed", plan.thread_id)

    async def after_manual_run(self, thread_id: str, ran_at: float) -> None:
        """Spacing rule: a run at ``ran_at`` suppresses slots before ran_at + every/2."""

        def space(tx: Tx) -> float | None:  # read and move in one transaction
            thread = tx.get_thread(thread_id)
            cfg, schedule = _decoded(thread.config_json)
            if not cfg.enabled or thread.anchor is None or thread.next_run is None:
                return None
            floor = ran_at + cfg.every_seconds / 2
            if thread.next_run >= floor:
                return None
            nxt = sched.next_run(schedule, thread.anchor, floor)
            tx.set_next_run(thread_id, nxt)
            return nxt

        moved = await self.store.write(space)
        if moved is not None and thread_id in self.timers:
            self._arm(thread_id, moved)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def drain(self, grace: float) -> None:
        """Let in-flight runs finish within ``grace`` seconds, then cancel the rest."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)
