"""Routes of the heartbeat itself: status, start/stop, per-thread config, run-now, history,
HEARTBEAT.md."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from app.http import (
    JSON,
    ApiError,
    cursor_param,
    limit_param,
    only_fields,
    read_object,
    thread_id,
)
from app.service import Service
from heartbeat_md import parse as parse_instructions
from ledger import config as hbconfig
from ledger.limits import CONFIG_RANGES, INSTRUCTIONS_MAX_BYTES, PAGES, REVISION_MAX
from ledger.records import Loop, RunStatus, Thread, iso, run_to_dict
from ledger.redact import redact
from loops.instructions import Found
from loops.spend import day_start

_DECIDED = (RunStatus.OK, RunStatus.DRY_RUN, RunStatus.REJECTED)


def service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


async def beats_today(svc: Service, thread: Thread) -> dict[str, Any]:
    """A thread's heartbeat today (its local day): tokens and budget, beats decided and skipped
    by reason, whether it paused itself and why, and its next beat."""
    cfg, _ = hbconfig.decode_stored(thread.config_json)
    day = await svc.store.beat_day(thread.id, day_start(svc.clock.now(), cfg.timezone))
    memo = await svc.store.beat_memo(thread.id)
    skipped: dict[str, int] = {}
    for key, count in day.runs.items():
        status, _, reason = key.partition("/")
        if status == RunStatus.SKIPPED:
            skipped[reason or "other"] = skipped.get(reason or "other", 0) + count
    return {
        "thread_id": thread.id,
        "day_started_at": iso(day.since),
        "tokens_today": day.tokens,
        "daily_token_budget": cfg.daily_token_budget,
        "decided_today": sum(n for key, n in day.runs.items() if key.partition("/")[0] in _DECIDED),
        "skipped_today": skipped,
        "failed_today": sum(
            n for key, n in day.runs.items() if key.partition("/")[0] == RunStatus.FAILED
        ),
        "paused": memo.paused is not None,
        "paused_reason": memo.paused,
        "next_probe_at": iso(memo.probe_at) if memo.paused is not None else None,
        "next_run_at": iso(thread.next_run) if cfg.enabled else None,
    }


async def status(request: Request) -> JSON:
    svc = service(request)
    shown = await svc.store.list_threads(limit=PAGES["threads"].default)
    hb = svc.supervisor.kinds[Loop.HEARTBEAT].state
    nxt = svc.scheduler.timers.next_due() if svc.supervisor.is_running(Loop.HEARTBEAT) else None
    loops = {name: kind.state.view() for name, kind in svc.supervisor.kinds.items()}
    return JSON(
        {
            "enabled": hb.enabled,
            "running": svc.supervisor.is_running(Loop.HEARTBEAT),
            "check_interval_seconds": hb.interval,
            "armed_threads": len(svc.scheduler.timers),
            "next_due_at": iso(nxt),
            "next_runs": [
                {"thread_id": tid, "next_run_at": iso(due)}
                for tid, due in svc.scheduler.timers.soonest(20)
            ],
            "in_flight": dict(svc.executor.in_flight),
            "queue_depth": svc.executor.llm_waiting,
            "wakes": svc.waker.view(),
            "max_concurrency": svc.settings.max_concurrency,
            "loops": loops,
            "llm": {
                "provider": svc.llm.name,
                "base_url": redact(svc.llm.base_url),
                "model": svc.executor.opts.default_model,
                "why": redact(svc.llm_reason),
            },
            "threads": [await beats_today(svc, t) for t in shown],
        }
    )


async def start(request: Request) -> JSON:
    svc = service(request)
    started = await svc.supervisor.start(Loop.HEARTBEAT)
    message = "heartbeat scheduler started" if started else "heartbeat scheduler already running"
    return JSON({"ok": True, "message": message, "running": True})


async def stop(request: Request) -> JSON:
    svc = service(request)
    stopped = await svc.supervisor.stop(Loop.HEARTBEAT)
    message = (
        "heartbeat scheduler stopped; in-flight runs finish on their own"
        if stopped
        else "heartbeat scheduler was not running"
    )
    return JSON({"ok": True, "message": message, "running": False})


async def config_view(svc: Service, tid: str) -> dict[str, Any]:
    thread = await svc.store.get_thread(tid)
    cfg, warning = hbconfig.decode_stored(thread.config_json)
    body = hbconfig.to_dict(cfg)
    body.update(
        thread_id=tid,
        next_run_at=iso(thread.next_run) if cfg.enabled else None,
        last_run_at=iso(thread.last_run),
        anchor_at=iso(thread.anchor),
        limits=dict(CONFIG_RANGES),
        status=await beats_today(svc, thread),
    )
    if warning:
        body["warning"] = warning
    return body


async def get_config(request: Request) -> JSON:
    return JSON(await config_view(service(request), thread_id(request)))


async def post_config(request: Request) -> JSON:
    svc = service(request)
    tid = thread_id(request)
    patch = await read_object(request)
    await svc.set_config(tid, patch)
    return JSON(await config_view(svc, tid))


async def run_now(request: Request) -> JSON:
    svc = service(request)
    tid = thread_id(request)
    run = await svc.run_now(tid)  # NotFound (404) for an unknown thread, RunInFlight (409)
    return JSON(run_to_dict(run))


async def history(request: Request) -> JSON:
    svc = service(request)
    tid = thread_id(request)
    await svc.store.get_thread(tid)
    limit = limit_param(request, PAGES["history"])
    loop = request.query_params.get("loop") or None
    if loop is not None and loop not in set(Loop):
        raise ApiError(
            422,
            "invalid_parameter",
            f"loop must be one of {', '.join(Loop)}; got {loop[:40]!r}",
            field="loop",
        )
    runs = await svc.store.history(tid, limit=limit + 1, before=cursor_param(request), loop=loop)
    page = runs[:limit]
    nxt = str(page[-1].id) if len(runs) > limit else None
    return JSON({"items": [run_to_dict(r) for r in page], "next_cursor": nxt})


async def _md_view(svc: Service, found: Found | None = None) -> dict[str, Any]:
    found = found or await svc.instructions.current()
    parsed = parse_instructions(found.content)
    return {
        "content": found.content,
        "exists": found.exists,
        "last_modified": iso(found.modified),
        "revision": found.revision,
        "stored_in": svc.instructions.where,
        "empty": parsed.is_empty,
        "max_bytes": INSTRUCTIONS_MAX_BYTES,
        "sections": {
            "checklist": [{"text": i.text, "checked": i.checked} for i in parsed.checklist],
            "rules": parsed.rules,
            "proactive_behaviors": parsed.proactive_behaviors,
            "other": parsed.sections,
        },
    }


async def get_md(request: Request) -> JSON:
    return JSON(await _md_view(service(request)))


async def post_md(request: Request) -> JSON:
    """Replace HEARTBEAT.md; with ``base_revision`` (the ``revision`` the text was edited
    from), only while that is still the current one: else 409 ``revision_conflict`` naming the
    current revision, and nothing is written."""
    svc = service(request)
    data = await read_object(request)
    only_fields(data, {"content", "base_revision"})
    content = data.get("content")
    if not isinstance(content, str):
        raise ApiError(422, "invalid_type", "content must be a string", field="content")
    if "\x00" in content:
        raise ApiError(422, "invalid_value", "content must not contain NUL bytes", field="content")
    base = data.get("base_revision")
    if base is not None and (not isinstance(base, str) or len(base) > REVISION_MAX):
        raise ApiError(
            422,
            "invalid_type",
            f"base_revision must be a revision (a string of at most {REVISION_MAX} characters)",
            field="base_revision",
        )
    # InstructionsTooLarge (413), RevisionConflict (409)
    saved = await svc.instructions.save(content, base)
    return JSON(await _md_view(svc, saved))


routes = [
    Route("/api/heartbeat/status", status, methods=["GET"]),
    Route("/api/heartbeat/start", start, methods=["POST"]),
    Route("/api/heartbeat/stop", stop, methods=["POST"]),
    Route("/api/threads/{thread_id}/heartbeat/config", get_config, methods=["GET"]),
    Route("/api/threads/{thread_id}/heartbeat/config", post_config, methods=["POST"]),
    Route("/api/threads/{thread_id}/heartbeat/run-now", run_now, methods=["POST"]),
    Route("/api/threads/{thread_id}/heartbeat/history", history, methods=["GET"]),
    Route("/api/heartbeat/heartbeat.md", get_md, methods=["GET"]),
    Route("/api/heartbeat/heartbeat.md", post_md, methods=["POST"]),
]
