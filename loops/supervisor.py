"""One supervisor coroutine per loop kind, each restarted with backoff if it dies.

The heartbeat kind runs the scheduler's dispatcher plus a watchdog that re-arms every enabled
thread each ``CRT_HEARTBEAT_LOOP_SECONDS`` and whenever the wall clock jumps against the
monotonic clock (a clock change or a host suspend). Arming that the database cannot serve
(``StorageBusy``: it is away, or locked past the storage's retries; or a ``StorageFault`` of
its file), at the start or in a
reconcile pass, is tried again with a back-off, logged once as it starts failing and once as
it goes through: an outage restarts nothing. Interval kinds (reflection, personality,
self-reply) call their ``tick`` every ``seconds``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ledger.errors import StorageFault
from ledger.records import Loop, iso
from loops.clock import Clock
from loops.events import EventBus
from loops.outage import WAITED_OUT, Outage

log = logging.getLogger(f"heartbeat.{__name__}")

JUMP_TOLERANCE = 5.0
JUMP_CHECK_SECONDS = 60.0
MAX_BACKOFF = 60.0
ARM_RETRY_FIRST = 1.0  # seconds before arming the database could not serve is tried again
ARM_RETRY_MAX = 30.0  # the longest wait between two tries


def freeze_startup_heap() -> None:
    """Move everything alive after start-up (modules, classes, settings) out of the collector's
    reach. A full collection then scans only what runs create: with thousands of runs in
    flight it pauses the event loop about half as long. Call once per process, at start-up:
    frozen objects are never collected."""
    gc.collect()
    gc.freeze()


@dataclass
class LoopState:
    name: str
    enabled: bool
    interval: float
    running: bool = False
    restarts: int = 0
    last_error: str | None = None
    last_tick_at: float | None = None
    next_tick_at: float | None = None
    ticks: int = 0

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "enabled": self.enabled,
            "running": self.running,
            "interval_seconds": self.interval,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_tick_at": iso(self.last_tick_at),
            "next_tick_at": iso(self.next_tick_at),
            "ticks": self.ticks,
        }


@dataclass
class LoopKind:
    """What a supervised loop does: ``body`` runs until cancelled; it may raise to be restarted."""

    state: LoopState
    body: Callable[[LoopState], Awaitable[None]]
    on_stop: Callable[[], Awaitable[None]] | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    def __init__(self, clock: Clock, bus: EventBus) -> None:
        self.clock = clock
        self.bus = bus
        self.kinds: dict[str, LoopKind] = {}

    def add(self, kind: LoopKind) -> None:
        self.kinds[kind.state.name] = kind

    def is_running(self, name: str) -> bool:
        kind = self.kinds.get(name)
        return bool(kind and kind.task and not kind.task.done())

    async def start(self, name: str) -> bool:
        kind = self.kinds[name]
        if self.is_running(name):
            return False
        kind.state.running = True
        kind.task = asyncio.create_task(self._supervise(kind), name=f"supervisor:{name}")
        log.info("[%s] %s loop started", _tag(name), name)
        self._publish(kind)
        return True

    async def stop(self, name: str) -> bool:
        kind = self.kinds[name]
        if not self.is_running(name):
            kind.state.running = False
            return False
        assert kind.task is not None
        kind.task.cancel()
        try:
            await kind.task
        except asyncio.CancelledError:
            pass
        kind.task = None
        kind.state.running = False
        kind.state.next_tick_at = None
        if kind.on_stop is not None:
            await kind.on_stop()
        log.info(
            "[%s] %s", _tag(name), "Scheduler stopped" if name == Loop.HEARTBEAT else "stopped"
        )
        self._publish(kind)
        return True

    async def stop_all(self) -> None:
        for name in list(self.kinds):
            await self.stop(name)

    def _publish(self, kind: LoopKind) -> None:
        self.bus.publish("loop_state", kind.state.view())

    async def _supervise(self, kind: LoopKind) -> None:
        backoff = 1.0
        while True:
            started = self.clock.monotonic()
            try:
                await kind.body(kind.state)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                kind.state.restarts += 1
                cause = _cause(exc)
                kind.state.last_error = f"{type(cause).__name__}: {cause}"
                if self.clock.monotonic() - started > 4 * backoff:
                    backoff = 1.0
                _failed(
                    exc, "[HEARTBEAT] %s loop died; restarting in %.0f s", kind.state.name, backoff
                )
                self._publish(kind)
                await self.clock.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)


def _cause(exc: BaseException) -> BaseException:
    """What failed: a loop's task group wraps what its one failing task raised."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _failed(exc: Exception, msg: str, *args: object) -> None:
    """Log a loop's failure: with its traceback, but for a storage fault (the storage logs
    that once, with what to do), which gets one line naming it."""
    fault = _cause(exc)
    if isinstance(fault, StorageFault):
        log.warning(f"{msg}: %s", *args, fault.code)
    else:
        log.exception(msg, *args)


def _tag(name: str) -> str:
    return name.upper().replace("-", "_")


def interval_body(
    clock: Clock, tick: Callable[[], Awaitable[int]]
) -> Callable[[LoopState], Awaitable[None]]:
    """A loop that calls ``tick`` every ``state.interval`` seconds (first tick one interval in)."""

    async def body(state: LoopState) -> None:
        while True:
            state.next_tick_at = clock.now() + state.interval
            await clock.sleep_until(state.next_tick_at)
            state.last_tick_at = clock.now()
            try:
                done = await tick()
            except Exception as exc:  # one bad tick never stops the loop
                state.last_error = f"{type(exc).__name__}: {exc}"
                _failed(exc, "[%s] tick failed", state.name.upper())
                continue
            state.ticks += 1
            log.debug("[%s] tick handled %d item(s)", state.name.upper(), done)

    return body


async def arm_through_outage(clock: Clock, arm_all: Callable[[], Awaitable[int]], what: str) -> int:
    """``arm_all()``, tried again with a back-off for as long as the database cannot serve it
    (``StorageBusy``); one warning as it starts failing, one line when it goes through."""
    outage = Outage(
        clock,
        log,
        first=ARM_RETRY_FIRST,
        most=ARM_RETRY_MAX,
        down="[HEARTBEAT] %(what)s waits for the database %(kind)s: tried again with a back-off"
        " from %(first).0f s to %(most).0f s (%(exc)s)",
        back="[HEARTBEAT] %(what)s went through after %(seconds).0f s",
    )
    while True:
        try:
            armed = await arm_all()
        except WAITED_OUT as exc:
            await clock.sleep(outage.failed(exc, what=what))
            continue
        outage.succeeded(what=what)
        return armed


def heartbeat_body(
    clock: Clock,
    dispatch: Callable[[], Coroutine[Any, Any, None]],
    arm_all: Callable[[], Awaitable[int]],
) -> Callable[[LoopState], Awaitable[None]]:
    """Dispatcher + reconcile watchdog + wall-clock jump detector, as one supervised body."""

    async def watchdog(state: LoopState) -> None:
        offset = clock.now() - clock.monotonic()
        last_reconcile = clock.monotonic()
        while True:
            await clock.sleep(min(JUMP_CHECK_SECONDS, state.interval))
            new_offset = clock.now() - clock.monotonic()
            jumped = abs(new_offset - offset) > JUMP_TOLERANCE
            if jumped:
                log.warning(
                    "[HEARTBEAT] wall clock moved by %+.0f s; re-arming all threads",
                    new_offset - offset,
                )
            offset = new_offset
            if jumped or clock.monotonic() - last_reconcile >= state.interval:
                last_reconcile = clock.monotonic()
                state.last_tick_at = clock.now()
                armed = await arm_through_outage(clock, arm_all, "the reconcile pass")
                state.ticks += 1
                log.debug("[HEARTBEAT] reconcile pass armed %d thread(s)", armed)

    async def body(state: LoopState) -> None:
        armed = await arm_through_outage(clock, arm_all, "arming the threads")
        log.info(
            "[HEARTBEAT] Scheduler started (%d thread(s) armed, reconcile every %.0f s)",
            armed,
            state.interval,
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(dispatch(), name="heartbeat:dispatch")
            tg.create_task(watchdog(state), name="heartbeat:watchdog")

    return body
