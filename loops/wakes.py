"""Wakes: a beat at once for something that happened, coalesced and guarded against floods.

``POST /api/threads/{id}/heartbeat/wake`` hands ``Waker.wake`` a checked text and a mode:

- ``now``: the thread gets one beat (trigger ``wake``) told the text as an event. While a beat of
  the thread waits to start (behind the run in flight, or for the flood guard's spacing), more
  wakes coalesce into it: their texts are joined, oldest first, and it still runs once.
- ``next-heartbeat``: the text is held in storage for the thread's next scheduled beat (which
  the scheduler's claim takes with its ``running`` row). A thread whose heartbeat is disabled
  has no next beat: the wake is refused (``ThreadDisabled``, HTTP 409), checked in the
  transaction that would hold it; disabling a thread drops what it held, with a record
  (``drop_held_wakes``).

The flood guard (``FloodGuard``, per thread, its rules the pure ``flood_verdict`` and
``start_delay``) starts a wake's beat no sooner than ``min_spacing`` seconds after the last one
a wake started (the beat waits, and the wakes meanwhile coalesce into it: 202), and accepts at
most ``per_minute`` wakes a minute in all; the excess is refused (HTTP 429 with Retry-After),
never a server error. Ledger events a thread's config wakes on come through the same path with
trigger ``ledger_event``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from enum import StrEnum
from typing import Any

import msgspec

from ledger import config as hbconfig
from ledger.errors import Conflict, HeartbeatError, NotFound, StorageBusy
from ledger.limits import WAKE_EVENTS_MAX
from ledger.records import Loop, Reason, Run, RunOutcome, RunStatus, Trigger
from ledger.storage.interface import AGENT, RunStart, Storage, Tx
from ledger.wakes import WakeMode, join_all, wakes_on
from loops.clock import Clock

__all__ = [
    "FloodGuard",
    "ThreadDisabled",
    "WakeOnIndex",
    "WakeOutcome",
    "WakeRefused",
    "WakeResult",
    "Waker",
    "drop_held_wakes",
    "flood_verdict",
    "start_delay",
]

log = logging.getLogger(__name__)

MINUTE = 60.0

# Runs one beat of a thread: (thread id, trigger, event text) -> the finished run.
# runs one beat told the event text; raises ``StorageBusy`` only when the beat did not start
BeatRunner = Callable[[str, Trigger, str], Awaitable[Run | None]]


class WakeOutcome(StrEnum):
    """What became of a wake (the ``outcome`` of the answer, and the metrics' label)."""

    STARTED = "started"  # a beat starts for it now
    QUEUED = "queued"  # a beat runs for it once the run in flight ends and the spacing passed
    COALESCED = "coalesced"  # joined to a beat that has not started yet
    HELD = "held"  # kept for the thread's next scheduled beat
    REFUSED = "refused"  # the flood guard said no


class WakeRefused(HeartbeatError, code="wake_refused", http_status=429):
    """Too many wakes for this thread; try again later."""

    def __init__(self, thread_id: str, limit: str, why: str, retry_after: float) -> None:
        wait = max(1, math.ceil(retry_after))
        super().__init__(
            f"wake for thread {thread_id!r} refused: {why}; retry in {wait} s",
            field="thread_id",
            headers={"Retry-After": str(wait)},
            extra={"limit": limit, "retry_after_seconds": wait},
        )


class ThreadDisabled(Conflict, code="thread_disabled"):
    """A wake held for the next scheduled beat of a thread whose heartbeat is disabled."""

    def __init__(self, thread_id: str) -> None:
        super().__init__(
            f"thread {thread_id!r} has its heartbeat disabled: it has no next scheduled beat to"
            " hold the wake for (wake it with mode 'now', or enable its heartbeat first)",
            field="thread_id",
            extra={"reason": "heartbeat_disabled"},
        )


def _hold_if_enabled(tx: Tx, thread_id: str, text: str) -> int | None:
    """Hold the wake in the transaction that reads the thread: never for a disabled one."""
    cfg, _ = hbconfig.decode_stored(tx.get_thread(thread_id).config_json)
    if not cfg.enabled:
        raise ThreadDisabled(thread_id)
    return tx.hold_wake(thread_id, text, max_events=WAKE_EVENTS_MAX)


def drop_held_wakes(tx: Tx, thread_id: str) -> RunOutcome | None:
    """The thread's heartbeat is being disabled: the wakes it held are dropped, recorded as a
    ``skipped`` wake row (reason ``disabled``) keeping their text, so that they never reach a
    beat after it is enabled again. Returns the outcome recorded (None: none was held)."""
    held = tx.take_held_wake(thread_id)
    if held is None:
        return None
    start = RunStart(
        thread_id=thread_id, loop=Loop.HEARTBEAT, trigger=Trigger.WAKE, event_text=held
    )
    outcome = RunOutcome(
        status=RunStatus.SKIPPED,
        reason=Reason.DISABLED,
        summary="dropped: the heartbeat was disabled while these wakes waited for a beat",
        prompt_tokens=0,
        completion_tokens=0,
    )
    tx.record_run(start, outcome)
    return outcome


class WakeResult(msgspec.Struct, frozen=True, kw_only=True):
    outcome: WakeOutcome
    events: int  # wakes now waiting in the beat this one joined (1: only this one)


def flood_verdict(
    accepted: tuple[float, ...], now: float, *, per_minute: int
) -> tuple[str, float] | None:
    """Whether the flood guard refuses a wake. Pure.

    ``accepted``: the times of the thread's wakes accepted (started, queued, coalesced or held)
    in the last minute, oldest first. Returns None to accept, or why it is refused and the
    seconds after which the same wake would be accepted.
    """
    recent = [t for t in accepted if t > now - MINUTE]
    if len(recent) >= per_minute:
        retry = recent[len(recent) - per_minute] + MINUTE - now
        return f"at most {per_minute} wakes a minute", retry
    return None


def start_delay(last_start: float | None, now: float, *, min_spacing: float) -> float:
    """Seconds a wake's beat waits before it starts: none, or until ``min_spacing`` seconds
    after the last beat a wake started (``last_start``), never longer than that. Pure."""
    if last_start is None:
        return 0.0
    return min(min_spacing, max(0.0, last_start + min_spacing - now))


class FloodGuard:
    """The flood guard's memory: each thread's wakes accepted in the last minute, and when a
    wake's beat last started. Threads quiet for a minute (and past the spacing) are forgotten."""

    def __init__(self, *, min_spacing: float, per_minute: int) -> None:
        self.min_spacing = min_spacing
        self.per_minute = per_minute
        self._accepted: dict[str, deque[float]] = {}
        self._last_start: dict[str, float] = {}

    def admit(self, thread_id: str, now: float) -> tuple[str, float] | None:
        """Check one wake (as ``flood_verdict``) and, when accepted, remember it."""
        times = self._accepted.setdefault(thread_id, deque(maxlen=self.per_minute))
        while times and times[0] <= now - MINUTE:
            times.popleft()
        verdict = flood_verdict(tuple(times), now, per_minute=self.per_minute)
        if verdict is None:
            times.append(now)
        self._forget_idle(now)
        return verdict

    def delay(self, thread_id: str, now: float) -> float:
        """Seconds the thread's next wake beat waits (``start_delay``)."""
        last = self._last_start.get(thread_id)
        return start_delay(last, now, min_spacing=self.min_spacing)

    def started(self, thread_id: str, now: float) -> None:
        """A wake's beat of the thread starts now."""
        self._last_start[thread_id] = now

    def _forget_idle(self, now: float) -> None:
        if len(self._accepted) < 1024:
            return
        horizon = now - max(MINUTE, self.min_spacing)
        for tid in [t for t, q in self._accepted.items() if not q or q[-1] <= horizon]:
            del self._accepted[tid]
            if self._last_start.get(tid, now) <= horizon:
                self._last_start.pop(tid, None)


class Waker:
    """Turns wakes into beats: one waiting beat per thread, started when the thread is idle.

    ``in_flight`` is the executor's map of threads with a run going; ``idle`` (the executor's
    ``on_idle``) must be called when a thread's run ends.
    """

    def __init__(
        self,
        store: Storage,
        run_beat: BeatRunner,
        in_flight: Mapping[str, int],
        guard: FloodGuard,
        clock: Clock,
    ) -> None:
        self.store = store
        self.run_beat = run_beat
        self.in_flight = in_flight
        self.guard = guard
        self.clock = clock
        self.counts: Counter[str] = Counter()  # wakes by outcome
        self._waiting: dict[str, tuple[Trigger, list[str]]] = {}  # the beat yet to start
        self._drivers: dict[str, asyncio.Task[None]] = {}
        self._idle: dict[str, asyncio.Event] = {}

    @property
    def waiting(self) -> int:
        """Threads with a wake's beat waiting to start."""
        return len(self._waiting)

    async def wake(
        self, thread_id: str, text: str, mode: WakeMode, trigger: Trigger = Trigger.WAKE
    ) -> WakeResult:
        """Accept (start, queue, coalesce or hold) a checked wake, or raise ``WakeRefused``;
        ``NotFound`` for an unknown thread."""
        try:
            if mode is WakeMode.NEXT_HEARTBEAT:
                result = await self._hold(thread_id, text)
            else:
                result = await self._now(thread_id, text, trigger)
        except WakeRefused:
            self.counts[WakeOutcome.REFUSED] += 1
            raise
        self.counts[result.outcome] += 1
        return result

    async def _hold(self, thread_id: str, text: str) -> WakeResult:
        if not await self.store.thread_exists(thread_id):
            raise NotFound("thread", thread_id)
        self._admit(thread_id)
        held = await self.store.write(lambda tx: _hold_if_enabled(tx, thread_id, text))
        if held is None:
            raise WakeRefused(
                thread_id,
                "events_per_beat",
                f"{WAKE_EVENTS_MAX} wakes already wait for the next beat",
                MINUTE,
            )
        return WakeResult(outcome=WakeOutcome.HELD, events=held)

    async def _now(self, thread_id: str, text: str, trigger: Trigger) -> WakeResult:
        waiting = self._waiting.get(thread_id)
        if waiting is not None:
            texts = waiting[1]
            if len(texts) >= WAKE_EVENTS_MAX:
                raise WakeRefused(
                    thread_id,
                    "events_per_beat",
                    f"{WAKE_EVENTS_MAX} wakes already wait for one beat",
                    1.0,
                )
            self._admit(thread_id)
            texts.append(text)
            return WakeResult(outcome=WakeOutcome.COALESCED, events=len(texts))
        if not await self.store.thread_exists(thread_id):
            raise NotFound("thread", thread_id)
        if thread_id in self._waiting:  # another wake got here during the read
            return await self._now(thread_id, text, trigger)
        self._admit(thread_id)
        self._waiting[thread_id] = (trigger, [text])
        busy = (
            thread_id in self.in_flight
            or thread_id in self._drivers
            or self.guard.delay(thread_id, self.clock.monotonic()) > 0
        )
        if thread_id not in self._drivers:
            task = asyncio.create_task(self._drive(thread_id), name=f"wake:{thread_id}")
            self._drivers[thread_id] = task
        return WakeResult(outcome=WakeOutcome.QUEUED if busy else WakeOutcome.STARTED, events=1)

    def _admit(self, thread_id: str) -> None:
        verdict = self.guard.admit(thread_id, self.clock.monotonic())
        if verdict is not None:
            raise WakeRefused(thread_id, "per_minute", *verdict)

    def idle(self, thread_id: str) -> None:
        """A run of the thread ended (the executor's ``on_idle``)."""
        event = self._idle.pop(thread_id, None)
        if event is not None:
            event.set()

    async def _drive(self, thread_id: str) -> None:
        """Run the thread's waiting beats one after another, each once the thread is idle and
        the spacing since the last one passed."""
        failing = False  # the database could not start the last try
        try:
            while thread_id in self._waiting:
                while (delay := self.guard.delay(thread_id, self.clock.monotonic())) > 0:
                    await self.clock.sleep(delay)
                while thread_id in self.in_flight:
                    event = self._idle.setdefault(thread_id, asyncio.Event())
                    await event.wait()
                trigger, texts = self._waiting.pop(thread_id)
                self.guard.started(thread_id, self.clock.monotonic())
                try:
                    await self.run_beat(thread_id, trigger, join_all(texts))
                except StorageBusy as exc:  # not started: the wakes wait, with those since
                    later = self._waiting.pop(thread_id, None)
                    self._waiting[thread_id] = (
                        trigger,
                        texts + ([] if later is None else later[1]),
                    )
                    if not failing:
                        log.warning(
                            "wake beat for thread %s waits for the database: tried again after"
                            " the wake spacing (%s)",
                            thread_id,
                            exc,
                        )
                    failing = True
                    continue
                except NotFound:
                    log.warning("wake for thread %s dropped: the thread is gone", thread_id)
                except Exception:
                    log.exception("wake beat for thread %s failed", thread_id)
        finally:
            self._drivers.pop(thread_id, None)

    async def close(self) -> None:
        """Cancel the waiting beats and those running (recorded ``interrupted``)."""
        self._waiting.clear()
        tasks = list(self._drivers.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    def view(self) -> dict[str, Any]:
        return {"waiting": self.waiting, "counts": dict(self.counts)}


class WakeOnIndex:
    """The threads whose config wakes on Ledger events (``wake_on``), kept by config changes, so
    a new post asks only them, not every thread."""

    def __init__(self) -> None:
        self._by_thread: dict[str, tuple[str, ...]] = {}

    def update(self, thread_id: str, wake_on: Iterable[str]) -> None:
        events = tuple(wake_on)
        if events:
            self._by_thread[thread_id] = events
        else:
            self._by_thread.pop(thread_id, None)

    def threads_for(self, kind: str, author: str, text: str) -> list[str]:
        """The threads a new Ledger ``kind`` by ``author`` saying ``text`` wakes."""
        return [
            tid
            for tid, events in self._by_thread.items()
            if wakes_on(kind, author, text, events, AGENT)
        ]
