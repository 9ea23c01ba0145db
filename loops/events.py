"""In-process publish/subscribe for live events (run lifecycle, tokens, loop state, config).

``EventBus.publish`` is synchronous: it never awaits and never blocks, whatever the subscribers
do. Each ``Subscription`` holds a bounded queue of its own, optionally filtered to one thread
and with or without ``token`` events. When a queue is full, the ``token`` events in it are
dropped first (they are a preview; the decision and the finished run follow anyway); if it is
still full the subscription is *overflowed*: it is taken off the bus, its queue is freed, and
its reader gets ``Overflowed`` on the next read. A slow reader therefore never slows the loops
or the other readers. An event's JSON and its Server-Sent Events frame are encoded once, on
first use, however many subscribers send it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import msgspec

from ledger.errors import HeartbeatError

EVENT_TYPES = frozenset(
    {"run_started", "token", "decision", "run_finished", "loop_state", "config_changed"}
)
TOKEN = "token"

_encode = msgspec.json.encode


@dataclass(slots=True, eq=False, repr=False)
class Event:
    """One published event. ``thread_id`` None means "for every subscriber"."""

    type: str
    data: dict[str, Any]
    _: KW_ONLY
    id: int | None = None
    thread_id: str | None = None
    _json: bytes | None = field(default=None, init=False)
    _frame: bytes | None = field(default=None, init=False)

    def json(self) -> bytes:
        """``data`` as compact JSON, encoded once however many subscribers send it."""
        if self._json is None:
            self._json = _encode(self.data)
        return self._json

    def frame(self) -> bytes:
        """The event as one Server-Sent Events message, encoded once for every subscriber.

        The JSON is compact, so it never holds a raw newline."""
        if self._frame is None:
            head = f"event: {self.type}\ndata: "
            if self.id is not None:
                head = f"id: {self.id}\n{head}"
            self._frame = head.encode() + self.json() + b"\n\n"
        return self._frame

    def __repr__(self) -> str:
        return f"Event({self.type!r}, id={self.id!r}, thread_id={self.thread_id!r})"


class Overflowed(HeartbeatError, code="subscriber_overflowed"):
    """The subscriber fell too far behind and was disconnected."""


class Closed(HeartbeatError, code="bus_closed"):
    """The bus was closed: the service is shutting down."""


def _resolve(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


class Subscription:
    """A bounded queue of events for one reader, optionally filtered to one thread and with or
    without ``token`` events."""

    def __init__(
        self, bus: EventBus, thread_id: str | None, maxsize: int, *, tokens: bool = True
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self._bus = bus
        self.thread_id = thread_id
        self.tokens = tokens
        self.maxsize = maxsize
        self._items: deque[Event] = deque()
        self._waiter: asyncio.Future[bool] | None = None  # a reader's, until ``_wanted`` are queued
        self._wanted = 1
        self._gone = asyncio.Event()  # overflowed
        self._done = asyncio.Event()  # overflowed or ended
        self.overflowed = False
        self.ended = False
        self.dropped = 0  # token events dropped to make room

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, event: Event) -> None:
        """Queue ``event`` without waiting, dropping tokens or overflowing when full."""
        items = self._items
        if len(items) >= self.maxsize:
            if event.type == TOKEN:
                self.dropped += 1
                return
            kept = [e for e in items if e.type != TOKEN]
            if len(kept) == len(items):
                self._overflow()
                return
            self.dropped += len(items) - len(kept)
            items.clear()
            items.extend(kept)
        items.append(event)
        if self._waiter is not None and len(items) >= self._wanted:
            _resolve(self._waiter, True)

    def _overflow(self) -> None:
        self.overflowed = True
        self._items.clear()
        self._bus.unsubscribe(self)
        self._wake()
        self._gone.set()
        self._done.set()

    def end(self) -> None:
        """No more events will come: reads return what is queued, then raise ``Closed``."""
        self.ended = True
        self._wake()
        self._done.set()

    def _wake(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter, True)

    async def wait(self, seconds: float | None = None, *, count: int = 1) -> bool:
        """Wait until ``count`` events are queued (True) or ``seconds`` pass first (False).

        Raises ``Overflowed`` once the subscriber was cut off, ``Closed`` once the bus closed
        and the queue is empty (a closed bus's queue is returned as it is)."""
        while len(self._items) < count:
            if self.overflowed:
                raise Overflowed()
            if self.ended:
                if self._items:
                    return True
                raise Closed()
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            self._wanted = count
            timer = None if seconds is None else loop.call_later(seconds, _resolve, waiter, False)
            try:
                if not await waiter:
                    return False
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        return True

    async def get(self, wait: float | None = None) -> Event | None:
        """The next event, or None when ``wait`` seconds pass first (raises as ``wait``)."""
        if not await self.wait(wait):
            return None
        return self._items.popleft()

    def take(self, limit: int | None = None) -> list[Event]:
        """Up to ``limit`` (default all) events already queued, without waiting."""
        items = self._items
        if limit is None or limit >= len(items):
            batch = list(items)
            items.clear()
        else:
            batch = [items.popleft() for _ in range(limit)]
        return batch

    async def wait_overflowed(self) -> None:
        """Return once this subscription has overflowed."""
        await self._gone.wait()

    async def wait_done(self) -> None:
        """Return once this subscription has overflowed or ended."""
        await self._done.wait()

    def close(self) -> None:
        self._bus.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        self._subs: dict[Subscription, None] = {}  # insertion-ordered set
        self.published = 0
        self.overflows = 0
        self.closed = False

    def subscribe(
        self, thread_id: str | None = None, *, maxsize: int = 256, tokens: bool = True
    ) -> Subscription:
        sub = Subscription(self, thread_id, maxsize, tokens=tokens)
        if self.closed:
            sub.end()
        else:
            self._subs[sub] = None
        return sub

    def close(self) -> None:
        """End every subscription (they drain what is queued first); later ones end at once."""
        self.closed = True
        for sub in self._subs:
            sub.end()
        self._subs.clear()

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            del self._subs[sub]
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
        token = type == TOKEN
        # the filters and the common case of ``Subscription.offer`` inline: this loop runs for
        # every subscriber of every event
        for sub in list(self._subs):  # a copy: an overflowing subscriber leaves the bus
            if token and not sub.tokens:
                continue
            if thread_id is not None and sub.thread_id is not None and sub.thread_id != thread_id:
                continue
            items = sub._items
            if len(items) >= sub.maxsize:
                sub.offer(event)
                continue
            items.append(event)
            if sub._waiter is not None and len(items) >= sub._wanted:
                _resolve(sub._waiter, True)
