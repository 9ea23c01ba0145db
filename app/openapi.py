"""``GET /openapi.json``: the API described as OpenAPI 3.1, built from one table."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from app.http import JSON
from ledger.records import Loop

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
            },
            "required": ["code", "message", "field"],
        }
    },
}

_TID = {
    "name": "thread_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"},
}
_PID = {"name": "post_id", "in": "path", "required": True, "schema": {"type": "string"}}
_PAGE = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
]
_LOOP = {"name": "loop", "in": "query", "schema": {"enum": [loop.value for loop in Loop]}}

_CONFIG_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "enabled": {"type": "boolean"},
        "every_seconds": {"type": "integer", "minimum": 60, "maximum": 86400},
        "every": {"type": ["integer", "string"], "description": "seconds or 90s / 30m / 1h"},
        "target": {"type": "string"},
        "model": {"type": ["string", "null"]},
        "max_tokens": {"type": "integer", "minimum": 10, "maximum": 4000},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "dry_run": {"type": "boolean"},
        "active_hours_start": {"type": ["integer", "null"], "minimum": 0, "maximum": 23},
        "active_hours_end": {"type": ["integer", "null"], "minimum": 1, "maximum": 24},
        "timezone": {"type": "string"},
    },
}


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


# (method, path, summary, path/query params, request body schema or None)
_TABLE: list[tuple[str, str, str, list[dict[str, Any]], dict[str, Any] | None]] = [
    ("get", "/api/heartbeat/status", "Scheduler and loop state", [], None),
    ("post", "/api/heartbeat/start", "Start the heartbeat scheduler", [], None),
    ("post", "/api/heartbeat/stop", "Stop the heartbeat scheduler", [], None),
    (
        "get",
        "/api/threads/{thread_id}/heartbeat/config",
        "A thread's heartbeat config",
        [_TID],
        None,
    ),
    (
        "post",
        "/api/threads/{thread_id}/heartbeat/config",
        "Merge fields into a thread's config (creates the thread)",
        [_TID],
        _CONFIG_BODY,
    ),
    ("post", "/api/threads/{thread_id}/heartbeat/run-now", "Run a heartbeat now", [_TID], None),
    (
        "get",
        "/api/threads/{thread_id}/heartbeat/history",
        "Runs, newest first (?loop= for one loop only)",
        [_TID, *_PAGE, _LOOP],
        None,
    ),
    ("get", "/api/heartbeat/heartbeat.md", "HEARTBEAT.md with its parsed sections", [], None),
    (
        "post",
        "/api/heartbeat/heartbeat.md",
        "Replace HEARTBEAT.md",
        [],
        _obj(content={"type": "string", "maxLength": 65536}),
    ),
    (
        "get",
        "/api/heartbeat/events",
        "Server-Sent Events",
        [
            {"name": "thread_id", "in": "query", "schema": {"type": "string"}},
            {"name": "tokens", "in": "query", "schema": {"type": "integer", "enum": [0, 1]}},
            {"name": "last_event_id", "in": "query", "schema": {"type": "integer"}},
        ],
        None,
    ),
    ("get", "/api/threads", "Threads", _PAGE, None),
    (
        "post",
        "/api/threads",
        "Create a thread",
        [],
        _obj(thread_id={"type": "string"}, title={"type": "string", "maxLength": 200}),
    ),
    ("get", "/api/threads/{thread_id}", "One thread", [_TID], None),
    ("get", "/api/threads/{thread_id}/messages", "Messages", [_TID, *_PAGE], None),
    (
        "post",
        "/api/threads/{thread_id}/messages",
        "Add a message",
        [_TID],
        _obj(role={"enum": ["user", "assistant", "system"]}, content={"type": "string"}),
    ),
    ("get", "/api/threads/{thread_id}/contradictions", "Open contradictions", [_TID], None),
    (
        "post",
        "/api/threads/{thread_id}/contradictions",
        "Add a contradiction",
        [_TID],
        _obj(statement_a={"type": "string"}, statement_b={"type": "string"}),
    ),
    ("get", "/api/threads/{thread_id}/reflections", "Reflection journal", [_TID], None),
    ("get", "/api/threads/{thread_id}/personality", "Personality profile versions", [_TID], None),
    ("get", "/api/threads/{thread_id}/self-replies", "Self-replies", [_TID], None),
    ("get", "/api/ledger/posts", "Ledger posts, newest first", _PAGE, None),
    (
        "post",
        "/api/ledger/posts",
        "Post as the user",
        [],
        _obj(
            title={"type": "string", "maxLength": 200},
            content={"type": "string", "maxLength": 5000},
        ),
    ),
    ("get", "/api/ledger/posts/{post_id}", "A post with comments and votes", [_PID], None),
    (
        "post",
        "/api/ledger/posts/{post_id}/comments",
        "Comment as the user",
        [_PID],
        _obj(content={"type": "string", "maxLength": 5000}),
    ),
    (
        "post",
        "/api/ledger/posts/{post_id}/votes",
        "Vote as the user",
        [_PID],
        _obj(direction={"enum": ["up", "down"]}),
    ),
    ("get", "/healthz", "Liveness and LLM reachability", [], None),
]


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, params, body in _TABLE:
        op: dict[str, Any] = {
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {}}},
                "4XX": {
                    "description": "The caller's mistake",
                    "content": {"application/json": {"schema": _ERROR}},
                },
            },
        }
        if body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": body}},
            }
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Heartbeat", "version": "0.1.0"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }


async def openapi(request: Request) -> JSON:
    return JSON(document())


routes = [Route("/openapi.json", openapi, methods=["GET"])]
