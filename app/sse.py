"""``GET /api/heartbeat/events``: Server-Sent Events of runs, tokens, loop state and config.

Events: ``run_started``, ``token`` (streamed LLM text, coalesced by the executor), ``decision``,
``run_finished``, ``loop_state``, ``config_changed``; ``?thread_id=`` keeps one thread's events
(plus the service-wide ``loop_state``).

- Each ``run_finished`` carries ``id: <run id>``. A client that reconnects with ``Last-Event-ID``
  (the header browsers send, or ``?last_event_id=``) first receives, oldest first, the runs that
  finished while it was away, then the live stream, with no run sent twice.
- A comment ping goes out at least every ``PING_SECONDS``.
- The subscription is a bounded queue (``loops.events``): a client that cannot keep up loses
  queued tokens first; if it still cannot keep up it receives an ``error`` event and the stream
  ends. If it does not even read that (its socket is full), the stream is dropped
  ``OVERFLOW_GRACE`` seconds later. Publishing never waits for any client.
- Events that arrive together go out in one write; a writer lingers a few ms (longer with many
  subscribers, at most ``LINGER_MAX``) to gather them, which bounds what fan-out costs the loop.
- ``Server`` (uvicorn's, used by ``heartbeat serve``) ends the streams when shutdown begins.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import msgspec
import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.http import ApiError, check_thread_id
from app.service import Service
from ledger.records import Run, run_to_dict
from loops.events import Closed, Event, Overflowed, Subscription

log = logging.getLogger("heartbeat.sse")

PING_SECONDS = 15.0
QUEUE_SIZE = 512
OVERFLOW_GRACE = 10.0  # how long an overflowed client gets to take its `error` event
RETRY_MS = 2000
REPLAY_PAGE = 500
REPLAY_MAX = 5000
BATCH_MAX = 64  # events joined into one write when a client has several waiting
# After the first event, wait a moment for more before writing: one write per subscriber per
# burst (run_started, decision and run_finished often land within a few ms) costs the event loop
# far less than one write per event. The wait grows with the number of subscribers, so that a
# thousand of them cost the loops a bounded number of writes per second.
LINGER_SECONDS = 0.02  # up to LINGER_PER subscribers
LINGER_PER = 50
LINGER_MAX = 0.25

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
    return _frame(event, msgspec.json.encode(data), event_id)


def _frame(event: str, payload: bytes, event_id: int | None) -> bytes:
    head = f"event: {event}\ndata: "
    if event_id is not None:
        head = f"id: {event_id}\n{head}"
    return head.encode() + payload + b"\n\n"


def event_frame(event: Event) -> bytes:
    return _frame(event.type, event.json(), event.id)


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


class EventStream(Response):
    """The streaming body: a writer, a disconnect listener and an overflow watchdog."""

    def __init__(self, svc: Service, thread_id: str | None, last_id: int | None) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(HEADERS)  # no body attribute, so no Content-Length: the body streams
        self.svc = svc
        self.thread_id = thread_id
        self.last_id = last_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": b""})
            return
        # Subscribe before reading the history, so nothing falls between replay and live.
        sub = self.svc.bus.subscribe(self.thread_id, maxsize=QUEUE_SIZE)
        tasks = [
            asyncio.create_task(self._write(sub, send), name="sse-writer"),
            asyncio.create_task(_until_disconnect(receive), name="sse-disconnect"),
            asyncio.create_task(self._watchdog(sub, scope), name="sse-watchdog"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sub.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        writer = tasks[0]
        if writer in done and not writer.cancelled():
            failure = writer.exception()
            if failure is not None:
                raise failure

    async def _write(self, sub: Subscription, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def out(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        await out(f"retry: {RETRY_MS}\n: connected\n\n".encode())
        replayed: set[int] = set()
        if self.last_id is not None:
            missed = await missed_runs(self.svc, self.last_id, self.thread_id)
            replayed.update(run.id for run in missed)
            for i in range(0, len(missed), BATCH_MAX):
                page = missed[i : i + BATCH_MAX]
                await out(b"".join(frame("run_finished", run_to_dict(r), r.id) for r in page))
        next_ping = time.monotonic() + PING_SECONDS
        while True:
            try:
                event = await sub.get(wait=max(0.0, next_ping - time.monotonic()))
            except Overflowed:
                log.warning(
                    "SSE client fell behind (%d tokens dropped); sending error and closing",
                    sub.dropped,
                )
                await out(frame("error", TOO_SLOW))
                break
            except Closed:
                await out(b": the service is shutting down\n\n")
                break
            if event is not None:
                if LINGER_SECONDS:
                    await asyncio.sleep(self._linger())
                # Whatever else is queued by now goes out in the same write.
                batch = [event, *sub.take(BATCH_MAX - 1)]
                chunk = b"".join(
                    event_frame(e) for e in batch if e.id is None or e.id not in replayed
                )
                if chunk:
                    await out(chunk)
            if time.monotonic() >= next_ping:
                await out(PING)
                next_ping = time.monotonic() + PING_SECONDS
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _linger(self) -> float:
        crowd = max(1.0, self.svc.bus.subscriber_count / LINGER_PER)
        return min(LINGER_MAX, LINGER_SECONDS * crowd)

    async def _watchdog(self, sub: Subscription, scope: Scope) -> None:
        """Finish (dropping the stream) when an overflowed client does not take its error."""
        await sub.wait_overflowed()
        await asyncio.sleep(OVERFLOW_GRACE)
        client = scope.get("client") or ("?", 0)
        log.warning("SSE client %s:%s stopped reading; dropping its stream", client[0], client[1])


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def events(request: Request) -> Response:
    svc: Service = request.app.state.service
    tid = request.query_params.get("thread_id") or None
    if tid is not None:
        check_thread_id(tid)
        await svc.store.get_thread(tid)  # 404 for a thread that does not exist
    return EventStream(svc, tid, last_event_id(request))


def close_streams(app: object) -> None:
    """End the app's open event streams (each completes its response)."""
    state = getattr(app, "state", None)
    svc = getattr(state, "service", None)
    if svc is not None:
        svc.bus.close()


class Server(uvicorn.Server):
    """uvicorn's server, ending the open event streams as soon as shutdown begins.

    uvicorn waits for open responses before it shuts the app down, so without this every open
    dashboard would hold a shutdown for the whole graceful timeout, then be cancelled.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        close_streams(self.config.app)
        await super().shutdown(sockets)


routes = [Route("/api/heartbeat/events", events, methods=["GET"])]
