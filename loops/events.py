"""In-process publish/subscribe for live events (run lifecycle, tokens, loop state, config).

``publish`` never blocks and never awaits: each subscriber has a bounded queue. When a queue is
full, queued ``token`` events are dropped first; if it is still full the subscriber is marked
overflowed and its stream ends, so a slow client can never slow the loops or other clients.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import msgspec

EVENT_TYPES = frozenset(
    {"run_started", "token", "decision", "run_finished", "loop_state", "config_changed"}
)


class Event(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    data: dict[str, Any]
    id: int | None = None
    thread_id: str | None = None


class Overflowed(Exception):
    """The subscriber fell too far behind and was disconnected."""


class Subscription:
    def __init__(self, bus: EventBus, thread_id: str | None, maxsize: int) -> None:
        self._bus = bus
        self.thread_id = thread_id
        self.maxsize = maxsize
        self._items: deque[Event] = deque()
        self._ready = asyncio.Event()
        self.overflowed = False
        self.dropped = 0

    def wants(self, event: Event) -> bool:
        return self.thread_id is None or event.thread_id in (None, self.thread_id)

    def offer(self, event: Event) -> None:
        if self.overflowed:
            return
        if len(self._items) >= self.maxsize:
            before = len(self._items)
            self._items = deque(e for e in self._items if e.type != "token")
            self.dropped += before - len(self._items)
            if event.type == "token":
                self.dropped += 1
                return
            if len(self._items) >= self.maxsize:
                self.overflowed = True
                self._ready.set()
                return
        self._items.append(event)
        self._ready.set()

    async def get(self, wait: float | None = None) -> Event | None:
        """The next event, or None when ``wait`` seconds pass first. Raises ``Overflowed``."""
        while not self._items:
            if self.overflowed:
                raise Overflowed()
            self._ready.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._ready.wait()
            except TimeoutError:
                return None
        if self.overflowed:
            raise Overflowed()
        return self._items.popleft()

    def close(self) -> None:
        self._bus.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self.published = 0

    def subscribe(self, thread_id: str | None = None, *, maxsize: int = 256) -> Subscription:
        sub = Subscription(self, thread_id, maxsize)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def publish(
        self,
        type: str,
        data: dict[str, Any],
        *,
        id: int | None = None,
        thread_id: str | None = None,
    ) -> None:
        event = Event(type=type, data=data, id=id, thread_id=thread_id)
        self.published += 1
        for sub in tuple(self._subs):
            if sub.wants(event):
                sub.offer(event)
