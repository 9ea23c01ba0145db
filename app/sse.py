"""``GET /api/heartbeat/events``: Server-Sent Events of runs, tokens, loop state and config.

Events: ``run_started``, ``token`` (streamed LLM text, coalesced by the executor), ``decision``,
``run_finished``, ``loop_state``, ``config_changed``. ``?thread_id=`` keeps one thread's events
(plus the service-wide ``loop_state``); ``?tokens=0`` leaves out ``token`` events.

- Each ``run_finished`` carries ``id: <run id>``. A client that reconnects with ``Last-Event-ID``
  (the header browsers send, or ``?last_event_id=``) first receives, oldest first, the runs that
  finished while it was away, then the live stream, with no run sent twice.
- A comment ping goes out at least every ``PING_SECONDS``.
- The stream is Starlette's ``StreamingResponse``, so every middleware applies and uvicorn's
  flow control holds a write until the client's socket drains. Each stream reads a bounded
  subscription of its own (``loops.events``). A quiet stream writes an event as soon as it is
  published; after a write, what comes next gathers until the next multiple of ``GATHER``
  seconds on the event loop's clock (sooner once a quarter of the queue is waiting), so a
  client gets at most one write per ``GATHER`` however many events there are, and all the
  streams write in the same turn of the loop.
- A client that cannot keep up loses queued tokens first; if it still cannot keep up it
  receives an ``error`` event and the stream ends. If it does not even read that (its socket is
  full), the stream is dropped ``OVERFLOW_GRACE`` seconds after the overflow. Publishing never
  waits for any client.
- ``serve`` runs uvicorn's server as ``heartbeat serve`` does, ending the streams as soon as
  shutdown begins (uvicorn waits for open responses before it shuts the app down).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.http import ApiError, check_thread_id, whole_number
from app.service import Service
from ledger.records import Run, run_to_dict
from loops.events import Closed, Event, Overflowed, Subscription

log = logging.getLogger(f"heartbeat.{__name__}")

PING_SECONDS = 15.0
QUEUE_SIZE = 512
GATHER = 0.05  # seconds: a stream writes at most once per multiple of this on the loop clock
OVERFLOW_GRACE = 10.0  # how long an overflowed client gets to take its `error` event
RETRY_MS = 2000
REPLAY_PAGE = 500
REPLAY_MAX = 5000
BATCH_MAX = 64  # replayed runs per write
EXIT_POLL = 0.1  # seconds between looks at whether the server is shutting down

PING = b": ping\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
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
    value = whole_number(raw.strip())
    if value is None:
        raise ApiError(
            422,
            "invalid_parameter",
            f"Last-Event-ID must be a run id, got {raw[:40]!r}",
            field="last_event_id",
        )
    return value


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


class EventStream(StreamingResponse):
    """One client's stream: greeting and replay, then its subscription's events and pings."""

    sub: Subscription  # from the start of the response on

    def __init__(
        self, svc: Service, thread_id: str | None, last_id: int | None, *, tokens: bool = True
    ) -> None:
        self.frames = self._frames()
        super().__init__(self.frames, headers=HEADERS, media_type="text/event-stream")
        self.svc = svc
        self.thread_id = thread_id
        self.last_id = last_id
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": b""})
            return
        # Subscribe before reading the history, so nothing falls between replay and live.
        self.sub = self.svc.bus.subscribe(self.thread_id, maxsize=QUEUE_SIZE, tokens=self.tokens)
        streaming = asyncio.ensure_future(super().__call__(scope, receive, send))
        done = asyncio.ensure_future(self.sub.wait_done())
        try:
            await asyncio.wait((streaming, done), return_when=asyncio.FIRST_COMPLETED)
            if not streaming.done():  # overflowed, or the bus closed: the stream is ending
                await asyncio.wait((streaming,), timeout=OVERFLOW_GRACE)
            if streaming.done():
                streaming.result()
            else:
                client = scope.get("client") or ("?", 0)
                log.warning(
                    "SSE client %s:%s stopped reading; dropped its stream", client[0], client[1]
                )
        finally:
            self.sub.close()
            for task in (streaming, done):
                task.cancel()
            await asyncio.gather(streaming, done, return_exceptions=True)
            await self.frames.aclose()

    async def _frames(self) -> AsyncGenerator[bytes, None]:
        yield f"retry: {RETRY_MS}\n: connected\n\n".encode()
        replayed: set[int] = set()  # run ids already sent by the replay
        if self.last_id is not None:
            missed = await missed_runs(self.svc, self.last_id, self.thread_id)
            replayed.update(run.id for run in missed)
            for i in range(0, len(missed), BATCH_MAX):
                page = missed[i : i + BATCH_MAX]
                yield b"".join(frame("run_finished", run_to_dict(r), r.id) for r in page)
        sub = self.sub
        loop = asyncio.get_running_loop()
        ping_at = loop.time() + PING_SECONDS
        wrote = False
        while True:
            try:
                if wrote:  # let what comes next gather, unless it fills a quarter of the queue
                    await sub.wait(GATHER - loop.time() % GATHER, count=max(1, sub.maxsize // 4))
                await sub.wait(max(0.0, ping_at - loop.time()))
            except Overflowed:
                log.warning(
                    "SSE client fell behind (%d tokens dropped); sending error and closing",
                    sub.dropped,
                )
                yield frame("error", TOO_SLOW)
                return
            except Closed:  # the service is shutting down; what was queued went out
                yield b": the service is shutting down\n\n"
                return
            events = sub.take()
            if replayed:
                events = [e for e in events if e.id is None or e.id not in replayed]
            chunk = b"".join([e.frame() for e in events])
            if loop.time() >= ping_at:
                chunk += PING
                ping_at = loop.time() + PING_SECONDS
            wrote = bool(chunk)
            if chunk:
                yield chunk


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


async def serve(server: uvicorn.Server) -> None:
    """Run uvicorn's ``server``; as soon as it begins to shut down, end the event streams.

    uvicorn waits for open responses before it shuts the app down, so without this every open
    dashboard would hold a shutdown for the whole graceful timeout, then be cancelled."""

    async def end_streams_on_exit() -> None:
        while not server.should_exit:  # noqa: ASYNC110 - uvicorn has a flag, which it polls too
            await asyncio.sleep(EXIT_POLL)
        close_streams(server.config.app)

    watcher = asyncio.create_task(end_streams_on_exit(), name="sse-shutdown")
    try:
        await server.serve()
    finally:
        watcher.cancel()


routes = [Route("/api/heartbeat/events", events, methods=["GET"])]
