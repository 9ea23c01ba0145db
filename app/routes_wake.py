"""The wake route: ``POST /api/threads/{thread_id}/heartbeat/wake`` (see ``loops.wakes``).

Body ``{"text": "...", "mode": "now" | "next-heartbeat"}`` (mode ``now`` when left out). Every
accepted wake is answered 202 with what became of it (``outcome``: started, queued, coalesced,
held) and how many wakes wait in its beat; the flood guard's refusals are 429 with Retry-After.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from app.http import JSON, ApiError, only_fields, read_object, text_field, thread_id
from app.service import Service
from ledger.limits import WAKE_TEXT_MAX
from ledger.records import iso
from ledger.wakes import WakeMode

MODES = ", ".join(m.value for m in WakeMode)


def _mode(raw: object) -> WakeMode:
    if raw is None:
        return WakeMode.NOW
    if isinstance(raw, str):
        try:
            return WakeMode(raw)
        except ValueError:
            pass
    raise ApiError(
        422, "invalid_value", f"mode must be one of {MODES}; got {raw!r}"[:300], field="mode"
    )


async def wake(request: Request) -> JSON:
    svc: Service = request.app.state.service
    tid = thread_id(request)
    data = await read_object(request)
    only_fields(data, {"text", "mode"})
    text = text_field(data, "text", max_len=WAKE_TEXT_MAX)
    mode = _mode(data.get("mode"))
    # NotFound (404) for an unknown thread, WakeRefused (429) from the flood guard
    result = await svc.waker.wake(tid, text, mode)
    body = {
        "ok": True,
        "thread_id": tid,
        "mode": mode,
        "outcome": result.outcome,
        "events": result.events,
    }
    if mode is WakeMode.NEXT_HEARTBEAT:
        thread = await svc.store.get_thread(tid)
        body["next_run_at"] = iso(thread.next_run)
    return JSON(body, status_code=202)


routes = [Route("/api/threads/{thread_id}/heartbeat/wake", wake, methods=["POST"])]
