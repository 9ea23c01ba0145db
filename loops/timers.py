"""A timer per key on one sleeping coroutine.

``TimerSet`` keeps each key's due time in a heap (lazy deletion) and one coroutine sleeps on the
injected clock until the earliest one; arming an earlier timer wakes it. Idle cost is one sleeping
task however many timers are armed — no per-key wakeups, no polling.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Iterator

from loops.clock import Clock


class TimerSet:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._changed = asyncio.Event()
        self.waiting = False  # True while the dispatcher sleeps (lets tests detect quiescence)

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: str) -> bool:
        return key in self._due

    def due(self, key: str) -> float | None:
        return self._due.get(key)

    def items(self) -> Iterator[tuple[str, float]]:
        return iter(self._due.items())

    def soonest(self, n: int) -> list[tuple[str, float]]:
        """The ``n`` earliest timers as (key, due), earliest first."""
        return heapq.nsmallest(n, self._due.items(), key=lambda item: item[1])

    def arm(self, key: str, when: float) -> None:
        earliest = self.next_due()
        self._due[key] = when
        heapq.heappush(self._heap, (when, next(self._seq), key))
        if earliest is None or when < earliest:
            self._changed.set()
        if len(self._heap) > 2 * len(self._due) + 1024:
            self._compact()

    def disarm(self, key: str) -> None:
        self._due.pop(key, None)

    def clear(self) -> None:
        self._due.clear()
        self._heap.clear()
        self._changed.set()

    def next_due(self) -> float | None:
        heap = self._heap
        while heap and self._due.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float, limit: int) -> list[tuple[str, float]]:
        """Remove and return up to ``limit`` timers due at ``now``, earliest first."""
        out: list[tuple[str, float]] = []
        heap = self._heap
        while heap and len(out) < limit:
            when, _, key = heap[0]
            if self._due.get(key) != when:
                heapq.heappop(heap)
                continue
            if when > now:
                break
            heapq.heappop(heap)
            del self._due[key]
            out.append((key, when))
        return out

    async def wait(self, slack: float = 0.0) -> None:
        """Sleep until ``slack`` seconds past the earliest timer, or until an earlier one is
        armed. The slack lets timers due close together be served by one wake-up."""
        self._changed.clear()
        nxt = self.next_due()
        if nxt is not None:
            nxt += slack
            if nxt <= self.clock.now():
                return
        waiter = asyncio.ensure_future(self._changed.wait())
        sleeper = (
            asyncio.ensure_future(self.clock.sleep_until(nxt))
            if nxt is not None
            else asyncio.ensure_future(self.clock.sleep(60.0))
        )
        self.waiting = True
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.waiting = False
            for fut in (waiter, sleeper):
                if not fut.done():
                    fut.cancel()

    def _compact(self) -> None:
        self._heap = [(w, next(self._seq), k) for k, w in self._due.items()]
        heapq.heapify(self._heap)
