"""``GET /openapi.json``: the API described as OpenAPI 3.1, built from one table.

Every limit in it (ranges, lengths, page sizes) is ``ledger.limits``'; the dashboard reads its
forms' bounds and hints from this document.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.routing import Route

from app.http import JSON, POST_ID, THREAD_ID
from ledger.config import HeartbeatConfig
from ledger.limits import (
    CONFIG_RANGES,
    CONFIG_TEXT_MAX,
    CONTENT_MAX,
    INSTRUCTIONS_MAX_BYTES,
    MESSAGE_MAX,
    PAGES,
    STATEMENT_MAX,
    THREAD_ID_MAX,
    TITLE_MAX,
    WAKE_TEXT_MAX,
)
from ledger.records import Loop
from ledger.wakes import WakeMode

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
    "schema": {"type": "string", "pattern": THREAD_ID.pattern},
}
_PID = {
    "name": "post_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": POST_ID.pattern},
}
_LOOP = {"name": "loop", "in": "query", "schema": {"enum": [loop.value for loop in Loop]}}


_CURSOR = {"name": "cursor", "in": "query", "schema": {"type": "string"}}


def _limit(listing: str) -> dict[str, Any]:
    default, maximum = PAGES[listing]
    schema = {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}
    return {"name": "limit", "in": "query", "schema": schema}


def _page(listing: str) -> list[dict[str, Any]]:
    return [_limit(listing), _CURSOR]


def _text(max_length: int, **more: Any) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, **more}


def _config_body() -> dict[str, Any]:
    """A config patch: HeartbeatConfig's fields (types and defaults from the Struct) with their
    limits, and the ``every`` alias."""
    (_,), structs = msgspec.json.schema_components([HeartbeatConfig])
    fields = structs[HeartbeatConfig.__name__]["properties"]
    properties: dict[str, Any] = {}
    for name, schema in fields.items():
        if name in CONFIG_RANGES:
            schema = {
                **schema,
                "minimum": CONFIG_RANGES[name].lo,
                "maximum": CONFIG_RANGES[name].hi,
            }
        if name in CONFIG_TEXT_MAX:
            schema = {**schema, "maxLength": CONFIG_TEXT_MAX[name]}
        properties[name] = schema
        if name == "every_seconds":
            properties["every"] = {
                "type": ["integer", "string"],
                "description": "seconds or 90s / 30m / 1h, within every_seconds' range",
            }
    return {"type": "object", "additionalProperties": False, "properties": properties}


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
        _config_body(),
    ),
    ("post", "/api/threads/{thread_id}/heartbeat/run-now", "Run a heartbeat now", [_TID], None),
    (
        "post",
        "/api/threads/{thread_id}/heartbeat/wake",
        "Wake the thread: a beat now, or the text held for its next beat (429 when flooded)",
        [_TID],
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["text"],
            "properties": {
                "text": _text(WAKE_TEXT_MAX, description="the event, told to the model as data"),
                "mode": {"type": "string", "enum": [m.value for m in WakeMode], "default": "now"},
            },
        },
    ),
    (
        "get",
        "/api/threads/{thread_id}/heartbeat/history",
        "Runs, newest first (?loop= for one loop only)",
        [_TID, *_page("history"), _LOOP],
        None,
    ),
    ("get", "/api/heartbeat/heartbeat.md", "HEARTBEAT.md with its parsed sections", [], None),
    (
        "post",
        "/api/heartbeat/heartbeat.md",
        "Replace HEARTBEAT.md",
        [],
        _obj(
            content=_text(
                INSTRUCTIONS_MAX_BYTES,
                description=f"at most {INSTRUCTIONS_MAX_BYTES} bytes of UTF-8",
            )
        ),
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
    ("get", "/api/threads", "Threads", _page("threads"), None),
    (
        "post",
        "/api/threads",
        "Create a thread",
        [],
        _obj(thread_id=_text(THREAD_ID_MAX, pattern=THREAD_ID.pattern), title=_text(TITLE_MAX)),
    ),
    ("get", "/api/threads/{thread_id}", "One thread", [_TID], None),
    ("get", "/api/threads/{thread_id}/messages", "Messages", [_TID, *_page("messages")], None),
    (
        "post",
        "/api/threads/{thread_id}/messages",
        "Add a message",
        [_TID],
        _obj(role={"enum": ["user", "assistant", "system"]}, content=_text(MESSAGE_MAX)),
    ),
    ("get", "/api/threads/{thread_id}/contradictions", "Open contradictions", [_TID], None),
    (
        "post",
        "/api/threads/{thread_id}/contradictions",
        "Add a contradiction",
        [_TID],
        _obj(statement_a=_text(STATEMENT_MAX), statement_b=_text(STATEMENT_MAX)),
    ),
    (
        "get",
        "/api/threads/{thread_id}/reflections",
        "Reflection journal",
        [_TID, _limit("journal")],
        None,
    ),
    (
        "get",
        "/api/threads/{thread_id}/personality",
        "Personality profile versions",
        [_TID, _limit("journal")],
        None,
    ),
    (
        "get",
        "/api/threads/{thread_id}/self-replies",
        "Self-replies",
        [_TID, _limit("journal")],
        None,
    ),
    ("get", "/api/ledger/posts", "Ledger posts, newest first", _page("posts"), None),
    (
        "post",
        "/api/ledger/posts",
        "Post as the user",
        [],
        _obj(title=_text(TITLE_MAX), content=_text(CONTENT_MAX)),
    ),
    ("get", "/api/ledger/posts/{post_id}", "A post with comments and votes", [_PID], None),
    (
        "post",
        "/api/ledger/posts/{post_id}/comments",
        "Comment as the user",
        [_PID],
        _obj(content=_text(CONTENT_MAX)),
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
