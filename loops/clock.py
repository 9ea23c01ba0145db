"""The only place that touches real time.

``Clock.now()`` is wall-clock POSIX seconds (what schedules are made of);
``Clock.sleep_until(t)`` waits until the wall clock reaches ``t``. The system clock waits on the
monotonic clock in bounded steps, so a wall-clock jump or a host suspend is noticed within
``max_step`` seconds. ``FakeClock`` advances only when told to, so tests run hours of schedule in
milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep_until(self, when: float) -> None: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Real time. Sleeps are capped at ``max_step`` so a jump of the wall clock is noticed."""

    def __init__(self, max_step: float = 60.0) -> None:
        self.max_step = max_step

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep_until(self, when: float) -> None:
        while True:
            remaining = when - time.time()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, self.max_step))

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that moves only when ``advance``/``set`` are awaited.

    Sleepers wake in time order; ``advance`` lets every coroutine woken at each step run before
    moving on, so the order of events matches what real time would produce.
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        self._mono = 1000.0
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        # Optional quiescence test: ``settle`` waits (in real time) until it returns True, so
        # work that leaves the event loop (database threads) finishes before time moves on.
        self.idle: Callable[[], bool] | None = None

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    async def sleep_until(self, when: float) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._seq), fut))
        await fut

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + max(0.0, seconds))

    @property
    def next_wakeup(self) -> float | None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    async def settle(self, rounds: int = 20, limit: float = 30.0) -> None:
        """Let ready coroutines run, then wait until ``idle()`` (if set) says all is quiet."""
        for _ in range(rounds):
            await asyncio.sleep(0)
        if self.idle is None:
            return
        give_up = time.monotonic() + limit
        quiet = 0
        while quiet < 3:  # quiet for a few consecutive checks, not a lucky instant
            quiet = quiet + 1 if self.idle() else 0
            if time.monotonic() > give_up:
                raise TimeoutError("FakeClock.settle: the system never became idle")
            await asyncio.sleep(0.001)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers in order."""
        await self.run_until(self._now + seconds)

    async def run_until(self, target: float) -> None:
        await self.settle()
        while True:
            nxt = self.next_wakeup
            if nxt is None or nxt > target:
                break
            self._mono += max(0.0, nxt - self._now)
            self._now = max(self._now, nxt)
            while self._sleepers and self._sleepers[0][0] <= self._now:
                _, _, fut = heapq.heappop(self._sleepers)
                if not fut.done():
                    fut.set_result(None)
            await self.settle()
        self._mono += max(0.0, target - self._now)
        self._now = max(self._now, target)
        await self.settle()

    def jump(self, seconds: float) -> None:
        """Move the wall clock only (a clock change or host suspend); sleepers are not woken."""
        self._now += seconds
