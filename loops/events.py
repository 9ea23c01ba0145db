"""In-process publish/subscribe for live events (run lifecycle, tokens, loop state, config).

``EventBus.publish`` is synchronous: it never awaits and never blocks, whatever the subscribers
do. Each ``Subscription`` holds a bounded queue. When a queue is full, the ``token`` events in it
are dropped first (they are a preview; the decision and the finished run follow anyway); if it is
still full the subscription is *overflowed*: it is taken off the bus, its queue is freed, and its
reader gets ``Overflowed`` on the next ``get``. A slow reader therefore never slows the loops or
the other readers.

A subscription may leave out ``token`` events (``tokens=False``). The bus keeps its subscribers
in groups, one per thread filter and choice of tokens, so an event is offered only to the groups
that want it, with no per-subscriber test. A group keeps one log of its events, and a
subscription that keeps up is only a cursor into that log: publishing appends an event once
however many subscribe, and readers at the same place share one encoded chunk of frames
(``Subscription.take_frames``). Only a subscription whose queue filled up gets a queue of its
own, checked event by event, until a read empties it and it rejoins the log. An event's JSON
and its Server-Sent Events frame are encoded once, on first use. ``EventBus.listen`` registers
a callback run once per published event that reached at least one subscriber (the SSE writer
uses it to schedule a pass).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec

from ledger.errors import HeartbeatError

EVENT_TYPES = frozenset(
    {"run_started", "token", "decision", "run_finished", "loop_state", "config_changed"}
)
TOKEN = "token"

_encode = msgspec.json.encode


class Event:
    """One published event. ``thread_id`` None means "for every subscriber"."""

    __slots__ = ("_frame", "_json", "data", "id", "thread_id", "type")

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
        self._frame: bytes | None = None

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


class Subscription:
    """A bounded queue of events for one reader, optionally filtered to one thread and with or
    without ``token`` events.

    While it keeps up, the queue is a cursor into its group's shared log (see ``_Group``); once
    it is full it holds a queue of its own, until a read empties that queue."""

    def __init__(
        self, bus: EventBus, thread_id: str | None, maxsize: int, *, tokens: bool = True
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self._bus = bus
        self.thread_id = thread_id
        self.tokens = tokens
        self.maxsize = maxsize
        self._group: _Group | None = None
        self._shared = False  # True: the queue is the group's log from ``_cursor`` on
        self._cursor = 0
        self._items: deque[Event] = deque()  # the queue of its own, while not shared
        self._ready = asyncio.Event()
        self._gone = asyncio.Event()  # overflowed
        self._done = asyncio.Event()  # overflowed or ended
        self.overflowed = False
        self.ended = False
        self.dropped = 0  # token events dropped to make room
        self.delivered = 0

    def __len__(self) -> int:
        if self._shared:
            group = self._group
            assert group is not None
            return group.base + len(group.log) - self._cursor
        return len(self._items)

    def wants(self, event: Event) -> bool:
        if event.type == TOKEN and not self.tokens:
            return False
        return event.thread_id is None or self.thread_id in (None, event.thread_id)

    def offer(self, event: Event) -> None:
        """Queue ``event`` in the queue of its own without waiting, dropping tokens or
        overflowing when it is full (the bus's slow path)."""
        if self.overflowed:
            return
        items = self._items
        if len(items) >= self.maxsize:
            if event.type == TOKEN:
                self.dropped += 1
                return
            self._drop_tokens()
            if len(items) >= self.maxsize:
                self._overflow()
                return
        items.append(event)
        self._ready.set()

    def _drop_tokens(self) -> None:
        items = self._items
        kept = [e for e in items if e.type != TOKEN]
        if len(kept) < len(items):
            self.dropped += len(items) - len(kept)
            items.clear()
            items.extend(kept)

    def _overflow(self) -> None:
        self.overflowed = True
        self._items.clear()
        self._bus.unsubscribe(self)
        self._ready.set()
        self._gone.set()
        self._done.set()

    def _read(self, count: int) -> None:
        """``count`` events were taken from the queue."""
        self.delivered += count
        group = self._group
        if group is not None:
            if self._shared:
                self._cursor += count
                group.room = None  # to be measured again
            elif not self._items:
                group.attach(self)  # caught up: back on the shared log

    def end(self) -> None:
        """No more events will come: ``get`` returns what is queued, then raises ``Closed``."""
        self.ended = True
        self._ready.set()
        self._done.set()

    async def get(self, wait: float | None = None) -> Event | None:
        """The next event, or None when ``wait`` seconds pass first.

        Raises ``Overflowed`` once the subscriber was cut off, ``Closed`` once the bus closed.
        """
        while not len(self):
            if self.overflowed:
                raise Overflowed()
            if self.ended:
                raise Closed()
            self._ready.clear()
            group = self._group
            if group is not None:
                group.waiters += 1  # the bus's fast path wakes waiters only when there are any
            try:
                async with asyncio.timeout(wait):
                    await self._ready.wait()
            except TimeoutError:
                return None
            finally:
                if group is not None:
                    group.waiters -= 1
        if self.overflowed:
            raise Overflowed()
        if self._shared:
            group = self._group
            assert group is not None
            event = group.log[self._cursor - group.base]
        else:
            event = self._items.popleft()
        self._read(1)
        return event

    def take(self, limit: int | None = None) -> list[Event]:
        """Up to ``limit`` (default all) events already queued, without waiting (none if
        overflowed)."""
        if self.overflowed:
            return []
        if self._shared:
            group = self._group
            assert group is not None
            start = self._cursor - group.base
            stop = len(group.log) if limit is None else min(len(group.log), start + limit)
            batch = group.log[start:stop]
        else:
            items = self._items
            if limit is None or limit >= len(items):
                batch = list(items)
                items.clear()
            else:
                batch = [items.popleft() for _ in range(limit)]
        if batch:
            self._read(len(batch))
        return batch

    def take_frames(self) -> bytes:
        """Everything queued, taken, as one chunk of Server-Sent Events frames (b"" if none).

        Subscriptions of a group at the same place in its log share one chunk, built once."""
        if self._shared:
            group = self._group
            assert group is not None
            stop = group.base + len(group.log)
            if stop == self._cursor:
                return b""
            chunk = group.frames(self._cursor, stop)
            self._read(stop - self._cursor)
            return chunk
        events = self.take()
        if len(events) == 1:
            return events[0].frame()
        return b"".join([e.frame() for e in events])

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


class _Group:
    """The subscriptions with one thread filter and one choice of tokens.

    The group keeps one log of its events; a subscription that keeps up is only a cursor into
    it, so publishing appends an event once however many subscribe, and subscriptions at the
    same cursor share one encoded chunk. ``room`` is a lower bound on the free places left in
    the shared subscriptions' queues (None: to be measured; measuring also trims the log to the
    slowest cursor). When it runs out, every shared subscription whose queue is full is
    *detached*: its queued events are copied into a queue of its own, which its ``offer``
    fills from then on (dropping tokens, overflowing), until a read empties it and it is
    attached again at the end of the log."""

    __slots__ = ("_chunk", "base", "log", "private", "room", "shared", "waiters")

    def __init__(self) -> None:
        self.log: list[Event] = []
        self.base = 0  # the position of log[0] since the group began
        self.shared: dict[Subscription, None] = {}  # insertion-ordered sets
        self.private: dict[Subscription, None] = {}
        self.room: int | None = None
        self.waiters = 0  # subscriptions blocked in ``get``
        self._chunk: tuple[int, int, bytes] = (0, 0, b"")  # the last chunk built: start, stop

    def __bool__(self) -> bool:
        return bool(self.shared or self.private)

    def add(self, sub: Subscription) -> None:
        sub._group = self
        self.attach(sub)

    def attach(self, sub: Subscription) -> None:
        self.private.pop(sub, None)
        if not self.shared:  # nobody reads the log: start it afresh
            self.base += len(self.log)
            self.log.clear()
        sub._shared = True
        sub._cursor = self.base + len(self.log)
        self.shared[sub] = None
        self.room = None

    def detach(self, sub: Subscription) -> None:
        del self.shared[sub]
        sub._items.extend(self.log[sub._cursor - self.base :])
        sub._shared = False
        self.private[sub] = None
        self.room = None

    def discard(self, sub: Subscription) -> None:
        self.shared.pop(sub, None)
        self.private.pop(sub, None)
        sub._shared = False
        sub._group = None
        self.room = None

    def close(self) -> None:
        """Give every shared subscription its queued events to keep, and leave them."""
        for sub in tuple(self.shared):
            self.detach(sub)
        for sub in tuple(self.private):
            self.discard(sub)
        self.log.clear()

    def measure(self) -> int:
        """The free places left in the fullest shared queue; trims the log to the slowest."""
        end = self.base + len(self.log)
        low, room = end, 1 << 62
        for sub in self.shared:
            cursor = sub._cursor
            if cursor < low:
                low = cursor
            free = sub.maxsize - (end - cursor)
            if free < room:
                room = free
        if low > self.base:
            del self.log[: low - self.base]
            self.base = low
        return room

    def offer(self, event: Event) -> None:
        if self.shared:
            room = self.room
            if room is None:
                room = self.measure()
            if room <= 0:
                end = self.base + len(self.log)
                for sub in [s for s in self.shared if end - s._cursor >= s.maxsize]:
                    self.detach(sub)
                room = self.measure()
            if self.shared:
                self.log.append(event)
                self.room = room - 1
        for sub in tuple(self.private):  # a copy: an overflowing subscriber leaves the group
            sub.offer(event)
        if self.waiters:
            for sub in self.shared:
                sub._ready.set()

    def frames(self, start: int, stop: int) -> bytes:
        """The frames of the log's events from ``start`` to ``stop``, as one chunk."""
        last = self._chunk
        if last[0] == start and last[1] == stop:
            return last[2]
        events = self.log[start - self.base : stop - self.base]
        chunk = events[0].frame() if len(events) == 1 else b"".join([e.frame() for e in events])
        self._chunk = (start, stop, chunk)
        return chunk


class EventBus:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        # (thread filter, wants tokens) -> subscriptions; filter None means every thread
        self._groups: dict[tuple[str | None, bool], _Group] = {}
        self._listeners: list[Callable[[], None]] = []
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
            self._subs.add(sub)
            group = self._groups.get((thread_id, tokens))
            if group is None:
                group = self._groups[(thread_id, tokens)] = _Group()
            group.add(sub)
        return sub

    def listen(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after each publish that reached a subscriber (it must not block)."""
        self._listeners.append(callback)

    def close(self) -> None:
        """End every subscription (they drain what is queued first); later ones end at once."""
        self.closed = True
        for group in self._groups.values():
            group.close()
        for sub in self._subs:
            sub.end()
        self._subs.clear()
        self._groups.clear()

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.discard(sub)
            key = (sub.thread_id, sub.tokens)
            group = self._groups.get(key)
            if group is not None:
                group.discard(sub)
                if not group:
                    del self._groups[key]
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
        groups = self._groups
        token = type == TOKEN
        if thread_id is None:
            targets = [g for (_, tokens), g in groups.items() if tokens or not token]
        else:
            keys: list[tuple[str | None, bool]] = [(None, True), (thread_id, True)]
            if not token:
                keys += [(None, False), (thread_id, False)]
            targets = [g for g in map(groups.get, keys) if g is not None]
        if not targets:
            return
        for group in targets:
            group.offer(event)
        for listener in self._listeners:
            listener()
