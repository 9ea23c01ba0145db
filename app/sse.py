"""``GET /api/heartbeat/events``: Server-Sent Events of runs, tokens, loop state and config.

Each finished run's event id is its history id; a client that reconnects with ``Last-Event-ID``
first receives the runs that finished while it was away. A comment ping goes out at least every
15 s. The subscription is a bounded queue (see ``loops.events``): a client that cannot keep up
is told so and disconnected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from app.http import ApiError, check_thread_id
from app.routes_heartbeat import service
from ledger.records import run_to_dict
from loops.events import Overflowed

PING_SECONDS = 15.0
QUEUE_SIZE = 512
_encode = msgspec.json.encode


def frame(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + _encode(data) + b"\n\n"


def _last_event_id(request: Request) -> int | None:
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


async def events(request: Request) -> StreamingResponse:
    svc = service(request)
    tid = request.query_params.get("thread_id") or None
    if tid is not None:
        check_thread_id(tid)
    last_id = _last_event_id(request)
    sub = svc.bus.subscribe(tid, maxsize=QUEUE_SIZE)

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 2000\n: connected\n\n"
            replayed: set[int] = set()
            if last_id is not None:
                for run in await svc.store.runs_finished_after(last_id, thread_id=tid):
                    replayed.add(run.id)
                    yield frame("run_finished", run_to_dict(run), run.id)
            while True:
                event = await sub.get(wait=PING_SECONDS)
                if event is None:
                    yield b": ping\n\n"
                    continue
                if event.id is not None and event.id in replayed:
                    continue
                yield frame(event.type, event.data, event.id)
        except Overflowed:
            yield frame(
                "error",
                {
                    "code": "too_slow",
                    "message": "this client fell behind and was disconnected;"
                    " reconnect with Last-Event-ID to catch up",
                },
            )
        finally:
            sub.close()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


routes = [Route("/api/heartbeat/events", events, methods=["GET"])]
