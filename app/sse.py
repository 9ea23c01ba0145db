"""``GET /api/heartbeat/events``: Server-Sent Events of runs, tokens, loop state and config.

Events: ``run_started``, ``token`` (streamed LLM text, coalesced by the executor), ``decision``,
``run_finished``, ``loop_state``, ``config_changed``. ``?thread_id=`` keeps one thread's events
(plus the service-wide ``loop_state``); ``?tokens=0`` leaves out ``token`` events.

- Each ``run_finished`` carries ``id: <run id>``. A client that reconnects with ``Last-Event-ID``
  (the header browsers send, or ``?last_event_id=``) first receives, oldest first, the runs that
  finished while it was away, then the live stream, with no run sent twice.
- A comment ping goes out at least every ``PING_SECONDS``.
- The subscription is a bounded queue (``loops.events``): a client that cannot keep up loses
  queued tokens first; if it still cannot keep up it receives an ``error`` event and the stream
  ends. If it does not even read that (its socket is full), the stream is dropped
  ``OVERFLOW_GRACE`` seconds later. Publishing never waits for any client.
- One ``Fanout`` per bus writes every stream's queued events in a single pass, each stream's
  events as one write of frames encoded once per event; streams at the same place in the bus's
  log write one shared chunk, framed for HTTP once. A publish on a quiet bus is flushed at
  once; while events keep coming the next pass waits ``GATHER_MIN``, and when the event loop is
  saturated ``GATHER_FACTOR`` times as long as the last pass took if that is longer (at most
  ``GATHER_MAX``), so fan-out takes a bounded share of a busy loop however many clients there
  are; events that arrive meanwhile share one write. A pass yields to the loop every ``SLICE``
  streams.
- Under ``Server`` (uvicorn's, used by ``heartbeat serve``), an HTTP/1.1 stream's events are
  written straight to its socket's transport as chunks; elsewhere they go through ASGI ``send``.
  A client whose socket is not draining (more than ``WRITE_HIGH`` bytes waiting) gets nothing
  more until it does, so its queue fills as described above.
- ``Server`` ends the streams when shutdown begins.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import weakref
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.http import ApiError, check_thread_id
from app.service import Service
from ledger.records import Run, run_to_dict
from loops.events import Event, EventBus, Subscription

log = logging.getLogger("heartbeat.sse")

PING_SECONDS = 15.0
QUEUE_SIZE = 512
OVERFLOW_GRACE = 10.0  # how long an overflowed client gets to take its `error` event
RETRY_MS = 2000
REPLAY_PAGE = 500
REPLAY_MAX = 5000
BATCH_MAX = 64  # replayed runs per write
# While events keep coming, passes are at least GATHER_MIN apart. When the process is also
# saturated (using at least SATURATED of a core since the last pass: its threads share one
# interpreter lock, so about one core is all the event loop can get), a pause lasts
# GATHER_FACTOR times as long as the last pass took (in CPU time) if that is longer, so that
# fan-out takes at most about 1 / (1 + GATHER_FACTOR) of a saturated loop, never more than
# GATHER_MAX. A loop with time to spare spends it on prompt delivery instead.
GATHER_MIN = 0.015  # seconds
GATHER_FACTOR = 32.0
GATHER_MAX = 0.25  # seconds
SATURATED = 0.6
SLICE = 128  # streams written per loop iteration
WRITE_HIGH = 64 * 1024  # bytes waiting in a stream's transport before it gets no more
TRANSPORT = "heartbeat.transport"  # scope key under which Server exposes the socket transport

PING = b": ping\n\n"
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "Content-Type": "text/event-stream; charset=utf-8",
}
TOO_SLOW = {
    "code": "too_slow",
    "message": "this client fell behind and was disconnected;"
    " reconnect with Last-Event-ID to catch up",
}


def frame(event: str, data: Any, event_id: int | None = None) -> bytes:
    """One SSE message. The JSON is compact, so it never holds a raw newline."""
    return Event(event, data, id=event_id).frame()


def last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if raw is None or raw.strip() == "":
        return None
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(
            422,
            "invalid_parameter",
            f"Last-Event-ID must be a run id, got {raw[:40]!r}",
            field="last_event_id",
        )
    return int(raw)


def wants_tokens(request: Request) -> bool:
    raw = request.query_params.get("tokens", "1").strip().lower()
    if raw in ("1", "true", "yes", ""):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise ApiError(
        422, "invalid_parameter", f"tokens must be 0 or 1, got {raw[:20]!r}", field="tokens"
    )


async def missed_runs(svc: Service, last_id: int, thread_id: str | None) -> list[Run]:
    """Runs that finished after run ``last_id``, oldest first, at most ``REPLAY_MAX``."""
    runs: list[Run] = []
    seen: set[int] = set()
    after = last_id
    while len(runs) < REPLAY_MAX:
        page = await svc.store.runs_finished_after(after, thread_id=thread_id, limit=REPLAY_PAGE)
        fresh = [r for r in page if r.id not in seen]
        runs.extend(fresh)
        seen.update(r.id for r in fresh)
        if len(page) < REPLAY_PAGE or not fresh:
            break
        after = page[-1].id
    return runs[:REPLAY_MAX]


# -- writing to one client ---------------------------------------------------------------------
class Stream:
    """One client's open response: its subscription and a way to write whole frames to it."""

    def __init__(self, sub: Subscription, send: Send, replayed: set[int]) -> None:
        self.sub = sub
        self.send = send
        self.replayed = replayed  # run ids already sent by the replay

    def pump(self, *, force: bool = False) -> None:
        """Write everything queued, as one write (unless the client is not draining)."""
        sub = self.sub
        if not len(sub) or (self.backlog() > WRITE_HIGH and not force):
            return
        if not self.replayed:
            chunk = sub.take_frames()  # shared by the streams at the same place
            if chunk:
                self.write(chunk)
            return
        events = [e for e in sub.take() if e.id is None or e.id not in self.replayed]
        if len(events) == 1:
            self.write(events[0].frame())
        elif events:
            self.write(b"".join([e.frame() for e in events]))

    def write(self, chunk: bytes) -> None:
        raise NotImplementedError

    def backlog(self) -> int:
        """Bytes written but not yet taken by the client's socket."""
        raise NotImplementedError

    async def finish(self, grace: float) -> None:
        """Complete the response once what is written has drained, or drop it after ``grace``."""
        raise NotImplementedError

    def stop(self) -> None:
        """The client is gone: stop any writing."""


class TransportStream(Stream):
    """Writes chunks of an HTTP/1.1 chunked body straight to the socket's transport."""

    def __init__(
        self, sub: Subscription, send: Send, replayed: set[int], transport: asyncio.WriteTransport
    ) -> None:
        super().__init__(sub, send, replayed)
        self.transport = transport

    # the last chunk framed and its framing: streams at the same place write the same chunk
    _last: tuple[bytes, bytes] = (b"", b"")

    def write(self, chunk: bytes) -> None:
        if self.transport.is_closing():
            return
        last = TransportStream._last
        if last[0] is not chunk:
            last = TransportStream._last = (chunk, b"%x\r\n%b\r\n" % (len(chunk), chunk))
        self.transport.write(last[1])

    def backlog(self) -> int:
        return self.transport.get_write_buffer_size()

    async def finish(self, grace: float) -> None:
        try:
            async with asyncio.timeout(grace):  # the server's send waits for the socket to drain
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            self.transport.abort()


class SendStream(Stream):
    """Writes through ASGI ``send``, from a task of its own: any server, any HTTP version."""

    def __init__(self, sub: Subscription, send: Send, replayed: set[int]) -> None:
        super().__init__(sub, send, replayed)
        self.outbox: list[bytes] = []
        self.pending = 0  # bytes in the outbox or being sent
        self.kick = asyncio.Event()
        self.ending = False
        self.task = asyncio.create_task(self._send(), name="sse-sender")

    def write(self, chunk: bytes) -> None:
        self.outbox.append(chunk)
        self.pending += len(chunk)
        self.kick.set()

    def backlog(self) -> int:
        return self.pending

    async def _send(self) -> None:
        while True:
            await self.kick.wait()
            self.kick.clear()
            while self.outbox:
                chunk = b"".join(self.outbox)
                self.outbox.clear()
                await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
                self.pending -= len(chunk)
            if self.ending:
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})
                return

    async def finish(self, grace: float) -> None:
        self.ending = True
        self.kick.set()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), grace)
        except TimeoutError:
            self.stop()

    def stop(self) -> None:
        self.task.cancel()


# -- writing to every client -------------------------------------------------------------------
class Fanout:
    """Flushes the queued events of every stream on one bus, in passes (see the module doc)."""

    def __init__(self, bus: EventBus) -> None:
        self.loop = asyncio.get_running_loop()
        self.streams: dict[Stream, None] = {}  # insertion-ordered set
        self.handle: asyncio.Handle | None = None
        self.next_at = 0.0  # loop time before which no new pass starts
        self.todo: list[Stream] = []  # the rest of the current pass
        self.cost = 0.0  # seconds spent so far in the current pass
        self.again = False  # events arrived during the current pass
        self.waiting = 0  # events published since the current or last pass began
        self.paused = False  # the handle is a pause's timer
        self.mark = (self.loop.time(), time.process_time())  # (wall, CPU) at the last pass's end
        self.busy = 0.0  # the process's recent CPU share of one core
        bus.listen(self.wake)

    def add(self, stream: Stream) -> None:
        self.streams[stream] = None
        self._schedule()  # for what it queued during its replay

    def remove(self, stream: Stream) -> None:
        self.streams.pop(stream, None)

    def wake(self) -> None:
        """Something was published: make sure a pass will run."""
        self.waiting += 1
        self._schedule()

    def _schedule(self) -> None:
        # A pause never lets a quarter of a queue's room fill up, so that gathering alone never
        # cuts off a client that keeps up.
        crowded = self.waiting >= max(1, QUEUE_SIZE // 4)
        if self.handle is not None:
            if self.todo:  # a pass is under way
                self.again = True
            elif self.paused and crowded:
                self.handle.cancel()
                self.paused = False
                self.handle = self.loop.call_soon(self._pass)
        elif self.loop.time() < self.next_at and not crowded:
            self.paused = True
            self.handle = self.loop.call_at(self.next_at, self._pass)
        else:
            self.paused = False
            self.handle = self.loop.call_soon(self._pass)

    def _pass(self) -> None:
        self.paused = False
        if not self.todo:
            self.todo = list(self.streams)
            self.cost = 0.0
            self.again = False
            self.waiting = 0
        t0 = time.thread_time()  # CPU time: waits for the GIL or a busy machine do not count
        todo = self.todo
        for stream in todo[-SLICE:]:
            stream.pump()
        del todo[-SLICE:]
        self.cost += time.thread_time() - t0
        if todo:
            self.handle = self.loop.call_soon(self._pass)
            return
        now, cpu = self.loop.time(), time.process_time()
        wall0, cpu0 = self.mark
        self.mark = (now, cpu)
        if now > wall0:  # smoothed, so that one busy moment does not start long pauses
            self.busy = 0.7 * self.busy + 0.3 * (cpu - cpu0) / (now - wall0)
        pause = GATHER_MIN
        if self.busy >= SATURATED:
            pause = min(GATHER_MAX, max(GATHER_MIN, GATHER_FACTOR * self.cost))
        self.next_at = now + pause
        self.handle = None
        if self.again:
            self._schedule()


_fanouts: weakref.WeakKeyDictionary[EventBus, Fanout] = weakref.WeakKeyDictionary()


def fanout_for(bus: EventBus) -> Fanout:
    fan = _fanouts.get(bus)
    if fan is None or fan.loop is not asyncio.get_running_loop():
        fan = _fanouts[bus] = Fanout(bus)
    return fan


# -- the response -------------------------------------------------------------------------------
class EventStream(Response):
    """The streaming body: greeting and replay, then the bus's fan-out writes, pings and the end."""

    def __init__(
        self, svc: Service, thread_id: str | None, last_id: int | None, *, tokens: bool = True
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(HEADERS)  # no body attribute, so no Content-Length: the body streams
        self.svc = svc
        self.thread_id = thread_id
        self.last_id = last_id
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": b""})
            return
        bus = self.svc.bus
        # Subscribe before reading the history, so nothing falls between replay and live.
        sub = bus.subscribe(self.thread_id, maxsize=QUEUE_SIZE, tokens=self.tokens)
        disconnect = asyncio.create_task(_until_disconnect(receive), name="sse-disconnect")
        done = asyncio.create_task(sub.wait_done(), name="sse-done")
        fan: Fanout | None = None
        stream: Stream | None = None
        try:
            replayed = await self._start(send, disconnect)
            if replayed is None:  # the client left during the replay
                return
            transport = scope.get(TRANSPORT)
            if transport is not None and scope.get("http_version") == "1.1":
                stream = TransportStream(sub, send, replayed, transport)
            else:
                stream = SendStream(sub, send, replayed)
            fan = fanout_for(bus)
            fan.add(stream)
            while True:
                finished, _ = await asyncio.wait(
                    (disconnect, done), timeout=PING_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                if finished:
                    break
                stream.write(PING)
            if disconnect.done():
                return
            fan.remove(stream)
            if sub.overflowed:
                log.warning(
                    "SSE client fell behind (%d tokens dropped); sending error and closing",
                    sub.dropped,
                )
                stream.write(frame("error", TOO_SLOW))
            else:  # the bus closed: the service is shutting down
                stream.pump(force=True)
                stream.write(b": the service is shutting down\n\n")
            await stream.finish(OVERFLOW_GRACE)
            if sub.overflowed and not stream_completed(stream):
                client = scope.get("client") or ("?", 0)
                log.warning(
                    "SSE client %s:%s stopped reading; dropped its stream", client[0], client[1]
                )
        finally:
            sub.close()
            if fan is not None and stream is not None:
                fan.remove(stream)
            if stream is not None:
                stream.stop()
            for task in (disconnect, done):
                task.cancel()
            await asyncio.gather(disconnect, done, return_exceptions=True)

    async def _start(self, send: Send, disconnect: asyncio.Task[None]) -> set[int] | None:
        """Headers, greeting and replayed runs, through ``send``. None if the client left."""
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def out(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        await out(f"retry: {RETRY_MS}\n: connected\n\n".encode())
        replayed: set[int] = set()
        if self.last_id is not None:
            missed = await missed_runs(self.svc, self.last_id, self.thread_id)
            replayed.update(run.id for run in missed)
            for i in range(0, len(missed), BATCH_MAX):
                if disconnect.done():
                    return None
                page = missed[i : i + BATCH_MAX]
                await out(b"".join(frame("run_finished", run_to_dict(r), r.id) for r in page))
        return replayed


def stream_completed(stream: Stream) -> bool:
    if isinstance(stream, TransportStream):
        return not stream.transport.is_closing() or stream.backlog() == 0
    return isinstance(stream, SendStream) and stream.task.done() and not stream.task.cancelled()


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def events(request: Request) -> Response:
    svc: Service = request.app.state.service
    tid = request.query_params.get("thread_id") or None
    if tid is not None:
        check_thread_id(tid)
        await svc.store.get_thread(tid)  # 404 for a thread that does not exist
    return EventStream(svc, tid, last_event_id(request), tokens=wants_tokens(request))


def close_streams(app: object) -> None:
    """End the app's open event streams (each completes its response)."""
    state = getattr(app, "state", None)
    svc = getattr(state, "service", None)
    if svc is not None:
        svc.bus.close()


class _ExposeTransport:
    """Puts the connection's transport in the scope, for event streams to write to directly."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if isinstance(transport, asyncio.WriteTransport):
                scope[TRANSPORT] = transport
        await self.app(scope, receive, send)


class Server(uvicorn.Server):
    """uvicorn's server, ending the open event streams as soon as shutdown begins.

    uvicorn waits for open responses before it shuts the app down, so without this every open
    dashboard would hold a shutdown for the whole graceful timeout, then be cancelled. It also
    hands event streams their socket's transport (uvicorn's ``send`` is a method of the
    request's cycle, which holds it), so that fan-out skips the ASGI layers.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        if not config.loaded:
            config.load()
        config.loaded_app = _ExposeTransport(config.loaded_app)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        close_streams(self.config.app)
        await super().shutdown(sockets)


routes = [Route("/api/heartbeat/events", events, methods=["GET"])]
