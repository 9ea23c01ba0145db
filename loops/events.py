"""In-process publish/subscribe for live events (run lifecycle, tokens, loop state, config).

``EventBus.publish`` is synchronous: it never awaits and never blocks, whatever the subscribers
do. Each ``Subscription`` holds a bounded queue. When a queue is full, the ``token`` events in it
are dropped first (they are a preview; the decision and the finished run follow anyway); if it is
still full the subscription is *overflowed*: it is taken off the bus, its queue is freed, and its
reader gets ``Overflowed`` on the next ``get``. A slow reader therefore costs the publisher one
length check and never slows the loops or the other readers.

An event's JSON is encoded once, on first use, and shared by every subscriber.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import msgspec

EVENT_TYPES = frozenset(
    {"run_started", "token", "decision", "run_finished", "loop_state", "config_changed"}
)
TOKEN = "token"

_encode = msgspec.json.encode


class Event:
    """One published event. ``thread_id`` None means "for every subscriber"."""

    __slots__ = ("_json", "data", "id", "thread_id", "type")

    def __init__(
        self,
        type: str,
        data: dict[str, Any],
        *,
        id: int | None = None,
        thread_id: str | None = None,
    ) -> None:
        self.type = type
        self.data = data
        self.id = id
        self.thread_id = thread_id
        self._json: bytes | None = None

    def json(self) -> bytes:
        """``data`` as compact JSON, encoded once however many subscribers send it."""
        if self._json is None:
            self._json = _encode(self.data)
        return self._json

    def __repr__(self) -> str:
        return f"Event({self.type!r}, id={self.id!r}, thread_id={self.thread_id!r})"


class Overflowed(Exception):
    """The subscriber fell too far behind and was disconnected."""


class Closed(Exception):
    """The bus was closed: the service is shutting down."""


class Subscription:
    """A bounded queue of events for one reader, optionally filtered to one thread."""

    def __init__(self, bus: EventBus, thread_id: str | None, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self._bus = bus
        self.thread_id = thread_id
        self.maxsize = maxsize
        self._items: deque[Event] = deque()
        self._tokens = 0  # how many of _items are token events
        self._ready = asyncio.Event()
        self._gone = asyncio.Event()
        self.overflowed = False
        self.ended = False
        self.dropped = 0  # token events dropped to make room
        self.delivered = 0

    def __len__(self) -> int:
        return len(self._items)

    def wants(self, event: Event) -> bool:
        return event.thread_id is None or self.thread_id in (None, event.thread_id)

    def offer(self, event: Event) -> None:
        """Queue ``event`` without waiting; called by the bus for every matching event."""
        if self.overflowed:
            return
        if len(self._items) >= self.maxsize:
            if event.type == TOKEN:
                self.dropped += 1
                return
            if self._tokens:
                self._drop_tokens()
            if len(self._items) >= self.maxsize:
                self._overflow()
                return
        self._items.append(event)
        if event.type == TOKEN:
            self._tokens += 1
        self._ready.set()

    def _drop_tokens(self) -> None:
        kept = deque(e for e in self._items if e.type != TOKEN)
        self.dropped += len(self._items) - len(kept)
        self._items = kept
        self._tokens = 0

    def _overflow(self) -> None:
        self.overflowed = True
        self._items.clear()
        self._tokens = 0
        self._bus.unsubscribe(self)
        self._ready.set()
        self._gone.set()

    def end(self) -> None:
        """No more events will come: ``get`` returns what is queued, then raises ``Closed``."""
        self.ended = True
        self._ready.set()

    async def get(self, wait: float | None = None) -> Event | None:
        """The next event, or None when ``wait`` seconds pass first.

        Raises ``Overflowed`` once the subscriber was cut off, ``Closed`` once the bus closed.
        """
        while not self._items:
            if self.overflowed:
                raise Overflowed()
            if self.ended:
                raise Closed()
            self._ready.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._ready.wait()
            except TimeoutError:
                return None
        if self.overflowed:
            raise Overflowed()
        event = self._items.popleft()
        if event.type == TOKEN:
            self._tokens -= 1
        self.delivered += 1
        return event

    def take(self, limit: int) -> list[Event]:
        """Up to ``limit`` events that are already queued, without waiting (none if overflowed)."""
        if self.overflowed:
            return []
        batch: list[Event] = []
        items = self._items
        while items and len(batch) < limit:
            event = items.popleft()
            if event.type == TOKEN:
                self._tokens -= 1
            batch.append(event)
        self.delivered += len(batch)
        return batch

    async def wait_overflowed(self) -> None:
        """Return once this subscription has overflowed."""
        await self._gone.wait()

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
        self.overflows = 0
        self.closed = False

    def subscribe(self, thread_id: str | None = None, *, maxsize: int = 256) -> Subscription:
        sub = Subscription(self, thread_id, maxsize)
        if self.closed:
            sub.end()
        else:
            self._subs.add(sub)
        return sub

    def close(self) -> None:
        """End every subscription (they drain what is queued first); later ones end at once."""
        self.closed = True
        for sub in tuple(self._subs):
            sub.end()
        self._subs.clear()

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.discard(sub)
            if sub.overflowed:
                self.overflows += 1

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
        """Offer an event to every matching subscriber. Never blocks, never awaits."""
        self.published += 1
        if not self._subs:
            return
        event = Event(type, data, id=id, thread_id=thread_id)
        for sub in tuple(self._subs):  # a copy: an overflowing subscriber leaves the set
            if sub.wants(event):
                sub.offer(event)
