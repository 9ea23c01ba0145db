"""``GET /openapi.json``: the API described as OpenAPI 3.1, built from one table of operations.

Every limit in it (ranges, lengths, page sizes) is ``ledger.limits``', the config's fields are
``HeartbeatConfig``'s, the enums are ``ledger.records``'. Each operation lists the error
statuses it can answer, derived from what it takes (``_error_statuses``): the edge's guard
(``app.security``) answers 421, 401, 403, 408 and 413 before any route runs. A test walks the
app's routes against this table both ways, and a fuzzer holds the service to it.
The dashboard reads its forms' bounds and hints from this document.

One idea over 600 lines: the response schemas and the table of every operation.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import msgspec
from starlette.requests import Request
from starlette.routing import Route

from app.http import CONTROL_CHARACTERS, ID_DIGITS_MAX, JSON, POST_ID, THREAD_ID
from ledger.config import HeartbeatConfig
from ledger.limits import (
    CONFIG_RANGES,
    CONFIG_TEXT_MAX,
    CONTENT_MAX,
    INSTRUCTIONS_MAX_BYTES,
    MESSAGE_MAX,
    PAGES,
    REVISION_MAX,
    STATEMENT_MAX,
    THREAD_ID_MAX,
    TITLE_MAX,
    WAKE_TEXT_MAX,
)
from ledger.records import Loop, Reason, RunStatus, Trigger
from ledger.wakes import WakeMode

Schema = dict[str, Any]

# --- schemas -----------------------------------------------------------------------------------


def _nullable(schema: Schema) -> Schema:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(**props: Schema) -> Schema:
    """An object that always holds every one of ``props``."""
    return {"type": "object", "properties": props, "required": list(props)}


def _enum(values: Any) -> Schema:
    return {"type": "string", "enum": [str(v) for v in values]}


def _text(max_length: int | None = None, **more: Any) -> Schema:
    return {"type": "string", **({} if max_length is None else {"maxLength": max_length}), **more}


def _written(max_length: int, *, required: bool = True) -> Schema:
    """Text a person writes (``app.http.text_field``): no control characters but tab and line
    breaks, at most ``max_length`` characters once trimmed, and when ``required`` not blank."""
    free = f"[^{CONTROL_CHARACTERS}]*"
    pattern = f"^{free}[^\\s{CONTROL_CHARACTERS}]{free}$" if required else f"^{free}$"
    return _text(max_length, pattern=pattern)


def _list(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _page_of(items: Schema) -> Schema:
    return _obj(items=_list(items), next_cursor=_nullable(_text()))


STR = _text()
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}
TS = {"type": "string", "format": "date-time"}
TS_OR_NULL = _nullable(TS)
STR_OR_NULL = _nullable(STR)
ANY: Schema = {}

ERROR = _obj(
    error={
        "type": "object",
        "properties": {"code": STR, "message": STR, "field": STR_OR_NULL},
        "required": ["code", "message", "field"],
    }
)
_RUN = _obj(
    run_id=INT,
    thread_id=STR,
    loop=_enum(Loop),
    trigger=_enum(Trigger),
    status=_enum(RunStatus),
    reason=_nullable(_enum(Reason)),
    action=STR_OR_NULL,
    reasoning=ANY,
    decision=_nullable({"type": "object"}),
    executed=_nullable(_list({"type": "object"})),
    dry_run=BOOL,
    summary=STR_OR_NULL,
    model=STR_OR_NULL,
    slot_at=TS_OR_NULL,
    started_at=TS,
    finished_at=TS_OR_NULL,
    error=STR_OR_NULL,
    timings=_obj(llm_ms=_nullable(NUM), total_ms=_nullable(NUM)),
    tokens=_obj(prompt=_nullable(INT), completion=_nullable(INT)),
)
_THREAD = _obj(
    thread_id=STR,
    title=STR,
    created_at=TS,
    updated_at=TS,
    heartbeat=_obj(enabled=BOOL, every_seconds=INT, dry_run=BOOL, target=STR, configured=BOOL),
    next_run_at=TS_OR_NULL,
    last_run_at=TS_OR_NULL,
    last_summary=STR_OR_NULL,
)
_POST = _obj(
    post_id=STR,
    author=STR,
    title=STR,
    content=STR,
    created_at=TS,
    score=INT,
    comment_count=INT,
)
_MESSAGE = _obj(message_id=INT, thread_id=STR, role=STR, content=STR, created_at=TS)
_CONTRADICTION = _obj(
    contradiction_id=INT,
    thread_id=STR,
    statement_a=STR,
    statement_b=STR,
    status=STR,
    created_at=TS,
)
_COMMENT = _obj(comment_id=STR, author=STR, content=STR, created_at=TS)
_VOTE = _obj(voter=STR, direction=_enum(["up", "down"]), created_at=TS)
_LOOP_STATE = _obj(
    name=STR,
    enabled=BOOL,
    running=BOOL,
    interval_seconds=NUM,
    restarts=INT,
    last_error=STR_OR_NULL,
    last_tick_at=TS_OR_NULL,
    next_tick_at=TS_OR_NULL,
    ticks=INT,
)
_LLM = _obj(provider=STR, base_url=STR_OR_NULL, model=STR_OR_NULL, why=STR_OR_NULL)
_STATUS = _obj(
    enabled=BOOL,
    running=BOOL,
    check_interval_seconds=NUM,
    armed_threads=INT,
    next_due_at=TS_OR_NULL,
    next_runs=_list(_obj(thread_id=STR, next_run_at=TS_OR_NULL)),
    in_flight={"type": "object", "additionalProperties": INT},
    queue_depth=INT,
    max_concurrency=INT,
    loops={"type": "object", "additionalProperties": _LOOP_STATE},
    llm=_LLM,
)
_SWITCH = _obj(ok=BOOL, message=STR, running=BOOL)
_MD = _obj(
    content=STR,
    exists=BOOL,
    last_modified=TS_OR_NULL,
    revision={
        **STR,
        "description": "the current revision, to send back as base_revision;"
        " '0' while nothing is saved",
    },
    stored_in=_enum(["file", "database"]),
    empty=BOOL,
    max_bytes=INT,
    sections=_obj(
        checklist=_list(_obj(text=STR, checked=BOOL)),
        rules=_list(STR),
        proactive_behaviors=_list(STR),
        other={"type": "object"},
    ),
)
_HEALTH = _obj(
    ok=BOOL,
    status=_enum(["ok", "degraded"]),
    storage=_obj(status=_enum(["ok", "failing"]), code=STR_OR_NULL, message=STR_OR_NULL),
    llm=_obj(
        provider=STR,
        base_url=STR_OR_NULL,
        reachable=BOOL,
        version=STR_OR_NULL,
        model=STR_OR_NULL,
        model_present=_nullable(BOOL),
        detail=STR_OR_NULL,
        why=STR_OR_NULL,
    ),
    scheduler_running=BOOL,
)
_JOURNALS: dict[str, Schema] = {
    "reflections": _obj(
        reflection_id=INT,
        score=NUM,
        summary=STR,
        notable=_list(STR),
        run_id=_nullable(INT),
        created_at=TS,
    ),
    "personality": _obj(
        version=INT,
        traits=_list(STR),
        tone=STR,
        interests=_list(STR),
        run_id=_nullable(INT),
        created_at=TS,
    ),
    "self-replies": _obj(
        reply_id=INT,
        reflection_id=INT,
        content=STR,
        run_id=_nullable(INT),
        created_at=TS,
    ),
}


def _config_fields() -> dict[str, Schema]:
    """HeartbeatConfig's fields as msgspec describes them (types and defaults)."""
    (_,), structs = msgspec.json.schema_components([HeartbeatConfig])
    fields: dict[str, Schema] = structs[HeartbeatConfig.__name__]["properties"]
    return fields


def _config_body() -> Schema:
    """A config patch: HeartbeatConfig's fields with their limits, and the ``every`` alias."""
    properties: dict[str, Schema] = {}
    for name, schema in _config_fields().items():
        if name in CONFIG_RANGES:
            lo, hi = CONFIG_RANGES[name]
            schema = {**schema, "minimum": lo, "maximum": hi}
        if name in CONFIG_TEXT_MAX:
            schema = {**schema, "maxLength": CONFIG_TEXT_MAX[name]}
        properties[name] = schema
        if name == "every_seconds":
            properties["every"] = {
                "type": ["integer", "string"],
                "description": "seconds or 90s / 30m / 1h, within every_seconds' range",
            }
    return {"type": "object", "additionalProperties": False, "properties": properties}


def _config_view() -> Schema:
    """A thread's config: every field of HeartbeatConfig, the schedule and the ranges."""
    fields = {name: _strip_default(s) for name, s in _config_fields().items()}
    view = _obj(
        **fields,
        thread_id=STR,
        next_run_at=TS_OR_NULL,
        last_run_at=TS_OR_NULL,
        anchor_at=TS_OR_NULL,
        limits=_obj(
            **{name: {**_list(NUM), "minItems": 2, "maxItems": 2} for name in CONFIG_RANGES}
        ),
    )
    view["properties"]["warning"] = STR
    return view


def _strip_default(schema: Schema) -> Schema:
    return {k: v for k, v in schema.items() if k != "default"}


# --- parameters --------------------------------------------------------------------------------

_TID = {
    "name": "thread_id",
    "in": "path",
    "required": True,
    "schema": _text(THREAD_ID_MAX, pattern=f"^{THREAD_ID.pattern}$"),
}
_PID = {
    "name": "post_id",
    "in": "path",
    "required": True,
    "schema": _text(pattern=f"^{POST_ID.pattern}$"),
}
_NUMBER_CURSOR = _text(
    pattern=f"^([0-9]{{1,{ID_DIGITS_MAX}}})?$", description="a next_cursor, unchanged"
)
_EVENT_ID = {"type": "integer", "minimum": 0, "maximum": 10**ID_DIGITS_MAX - 1}
_THREAD_CURSOR = _text(pattern=f"^({THREAD_ID.pattern})?$", description="a next_cursor, unchanged")


def _query(name: str, schema: Schema, **more: Any) -> Schema:
    """A query parameter; given empty (``?limit=``) it means the same as left out."""
    return {"name": name, "in": "query", "schema": schema, "allowEmptyValue": True, **more}


_LOOP = _query("loop", _enum(Loop))


def _limit(listing: str) -> Schema:
    default, maximum = PAGES[listing]
    return _query(
        "limit", {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}
    )


def _page(listing: str, cursor: Schema = _NUMBER_CURSOR) -> list[Schema]:
    return [_limit(listing), _query("cursor", cursor)]


# --- the operations ----------------------------------------------------------------------------


class Op(NamedTuple):
    """One documented operation."""

    method: str
    path: str
    summary: str
    response: Schema
    params: list[Schema] = []  # noqa: RUF012 - a NamedTuple's default, never mutated
    body: Schema | None = None
    status: int = 200  # the success status; 201 also means "created"
    created: bool = False  # answers 201 when it creates, 200 when it already existed
    errors: frozenset[int] = frozenset()  # statuses beyond the ones derived from the rest
    media: str = "application/json"


_STORAGE = frozenset({503})  # the database busy, closed, full, read only, damaged or failing

OPS: list[Op] = [
    Op("get", "/api/heartbeat/status", "Scheduler and loop state", _STATUS),
    Op("post", "/api/heartbeat/start", "Start the heartbeat scheduler", _SWITCH, errors=_STORAGE),
    Op("post", "/api/heartbeat/stop", "Stop the heartbeat scheduler", _SWITCH, errors=_STORAGE),
    Op(
        "get",
        "/api/threads/{thread_id}/heartbeat/config",
        "A thread's heartbeat config",
        _config_view(),
        [_TID],
        errors=_STORAGE,
    ),
    Op(
        "post",
        "/api/threads/{thread_id}/heartbeat/config",
        "Merge fields into a thread's config (creates the thread)",
        _config_view(),
        [_TID],
        _config_body(),
        errors=_STORAGE,
    ),
    Op(
        "post",
        "/api/threads/{thread_id}/heartbeat/run-now",
        "Run a heartbeat now and answer its record",
        _RUN,
        [_TID],
        errors=_STORAGE | {409},
    ),
    Op(
        "post",
        "/api/threads/{thread_id}/heartbeat/wake",
        "Wake the thread: a beat now, or the text held for its next beat (429 when flooded;"
        " 409 thread_disabled to hold one for a thread whose heartbeat is off)",
        _obj(
            ok=BOOL,
            thread_id=STR,
            mode=_enum(WakeMode),
            outcome=_enum(["started", "queued", "coalesced", "held"]),
            events=INT,
        ),
        [_TID],
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["text"],
            "properties": {
                "text": _written(WAKE_TEXT_MAX),
                "mode": {**_nullable(_enum(WakeMode)), "default": "now"},  # null: now
            },
        },
        status=202,
        errors=_STORAGE | {409, 429},
    ),
    Op(
        "get",
        "/api/threads/{thread_id}/heartbeat/history",
        "Runs, newest first (?loop= for one loop only)",
        _page_of(_RUN),
        [_TID, *_page("history"), _LOOP],
        errors=_STORAGE,
    ),
    Op("get", "/api/heartbeat/heartbeat.md", "HEARTBEAT.md with its parsed sections", _MD),
    Op(
        "post",
        "/api/heartbeat/heartbeat.md",
        "Replace HEARTBEAT.md (409 revision_conflict when base_revision is no longer current)",
        _MD,
        body={
            "type": "object",
            "additionalProperties": False,
            "required": ["content"],
            "properties": {
                "content": _text(
                    INSTRUCTIONS_MAX_BYTES,
                    pattern="^[^\\x00]*$",
                    description=f"at most {INSTRUCTIONS_MAX_BYTES} bytes of UTF-8, no NUL",
                ),
                "base_revision": _nullable(
                    _text(
                        REVISION_MAX,
                        description="the revision the text was edited from (GET's revision):"
                        " the save is refused with 409 revision_conflict, naming"
                        " current_revision, once another save came after it; left out or"
                        " null, the save replaces whatever is current",
                    )
                ),
            },
        },
        errors=_STORAGE | {409},
    ),
    Op(
        "get",
        "/api/heartbeat/events",
        "Server-Sent Events (run_started, token, decision, run_finished, loop_state, ...)",
        _text(),
        [
            _query("thread_id", _text(THREAD_ID_MAX, pattern=f"^{THREAD_ID.pattern}$")),
            _query("tokens", {"type": "integer", "enum": [0, 1], "default": 1}),
            _query("last_event_id", _EVENT_ID),
            _query("token", STR, description="the API token (EventSource sets no header)"),
            {"name": "Last-Event-ID", "in": "header", "schema": _EVENT_ID},
        ],
        errors=_STORAGE | {404, 422},
        media="text/event-stream",
    ),
    Op(
        "get",
        "/api/threads",
        "Threads",
        _page_of(_THREAD),
        _page("threads", _THREAD_CURSOR),
        errors=_STORAGE,
    ),
    Op(
        "post",
        "/api/threads",
        "Create a thread (200 with the thread if it already exists; no thread_id: a new id)",
        _THREAD,
        body={
            **_obj(
                thread_id=_nullable(_text(THREAD_ID_MAX, pattern=f"^{THREAD_ID.pattern}$")),
                title=_nullable(_written(TITLE_MAX, required=False)),
            ),
            "required": [],
            "additionalProperties": False,
        },
        status=201,
        created=True,
        errors=_STORAGE,
    ),
    Op("get", "/api/threads/{thread_id}", "One thread", _THREAD, [_TID], errors=_STORAGE),
    Op(
        "get",
        "/api/threads/{thread_id}/messages",
        "Messages, oldest first; next_cursor pages to older ones",
        _page_of(_MESSAGE),
        [_TID, *_page("messages")],
        errors=_STORAGE,
    ),
    Op(
        "post",
        "/api/threads/{thread_id}/messages",
        "Add a message",
        _MESSAGE,
        [_TID],
        {
            **_obj(
                role={**_enum(["user", "assistant", "system"]), "default": "user"},
                content=_written(MESSAGE_MAX),
            ),
            "required": ["content"],
            "additionalProperties": False,
        },
        status=201,
        errors=_STORAGE,
    ),
    Op(
        "get",
        "/api/threads/{thread_id}/contradictions",
        "Contradictions (?status=open, resolved or all)",
        _page_of(_CONTRADICTION),
        [_TID, {"name": "status", "in": "query", "schema": _enum(["open", "resolved", "all"])}],
        errors=_STORAGE,
    ),
    Op(
        "post",
        "/api/threads/{thread_id}/contradictions",
        "Add a contradiction",
        _CONTRADICTION,
        [_TID],
        {
            **_obj(
                statement_a=_written(STATEMENT_MAX),
                statement_b=_written(STATEMENT_MAX),
            ),
            "additionalProperties": False,
        },
        status=201,
        errors=_STORAGE,
    ),
    *(
        Op(
            "get",
            f"/api/threads/{{thread_id}}/{kind}",
            summary,
            _page_of(_JOURNALS[kind]),
            [_TID, _limit("journal")],
            errors=_STORAGE,
        )
        for kind, summary in [
            ("reflections", "Reflection journal, newest first"),
            ("personality", "Personality profile versions, newest first"),
            ("self-replies", "Self-replies, newest first"),
        ]
    ),
    Op(
        "get",
        "/api/ledger/posts",
        "Ledger posts, newest first",
        _page_of(_POST),
        _page("posts"),
        errors=_STORAGE,
    ),
    Op(
        "post",
        "/api/ledger/posts",
        "Post as the user",
        _POST,
        body={
            **_obj(title=_written(TITLE_MAX), content=_written(CONTENT_MAX)),
            "additionalProperties": False,
        },
        status=201,
        errors=_STORAGE,
    ),
    Op(
        "get",
        "/api/ledger/posts/{post_id}",
        "A post with comments and votes",
        {
            **_POST,
            "properties": {
                **_POST["properties"],
                "comments": _list(_COMMENT),
                "votes": _list(_VOTE),
            },
            "required": [*_POST["required"], "comments", "votes"],
        },
        [_PID],
        errors=_STORAGE,
    ),
    Op(
        "post",
        "/api/ledger/posts/{post_id}/comments",
        "Comment as the user",
        _obj(comment_id=STR, post_id=STR, author=STR, content=STR, created_at=TS),
        [_PID],
        {**_obj(content=_written(CONTENT_MAX)), "additionalProperties": False},
        status=201,
        errors=_STORAGE,
    ),
    Op(
        "post",
        "/api/ledger/posts/{post_id}/votes",
        "Vote as the user (a second vote replaces the first)",
        _obj(post_id=STR, voter=STR, direction=_enum(["up", "down"]), score=INT),
        [_PID],
        {**_obj(direction=_enum(["up", "down"])), "additionalProperties": False},
        errors=_STORAGE,
    ),
    Op("get", "/healthz", "Liveness, storage faults and LLM reachability", _HEALTH),
    Op("get", "/openapi.json", "This document", {"type": "object"}),
    Op("get", "/", "The dashboard", _text(), media="text/html"),
    Op(
        "get",
        "/metrics",
        "Runs, skips, wakes, LLM latency, tokens and queue depth in Prometheus' text format",
        _text(),
        errors=frozenset({401}),  # the API token applies here too when one is set
        media="text/plain",
    ),
]
"""Every operation the app serves (``/static/`` files aside)."""

_ERRORS = {
    400: "The body is not JSON",
    401: "The API token is missing or wrong (when one is set)",
    403: "A cross-origin write",
    404: "No such record",
    408: "The request body did not arrive in time",
    409: "The write conflicts with the current state (a run already in flight, HEARTBEAT.md"
    " saved meanwhile: current_revision names the current one, a wake held for a thread whose"
    " heartbeat is disabled)",
    413: "The request body (or HEARTBEAT.md) is over its limit",
    415: "The body is not sent as JSON",
    421: "The Host header does not name this service",
    422: "A field, parameter or id is invalid",
    503: "Storage is busy, closed, full, read only, damaged (storage_corrupt) or failing at the"
    " disk (storage_io_error); the message says what to do, Retry-After when to retry",
    429: "Too many wakes: the flood guard refused this one; Retry-After says when to retry",
}


def _error_statuses(op: Op) -> set[int]:
    """What ``op`` can answer besides its success, from the guard and what the route takes."""
    statuses = {421, 413} | set(op.errors)  # the Host check; a Content-Length over the limit
    if op.path.startswith("/api/"):
        statuses.add(401)
    if op.method not in ("get", "head", "options"):
        statuses.add(403)
    if op.body is not None:
        statuses |= {400, 408, 415, 422}
    if any(p["in"] == "query" for p in op.params):
        statuses.add(422)
    if "{thread_id}" in op.path:
        statuses |= {404, 422}
    if "{post_id}" in op.path:
        statuses.add(404)
    return statuses


def operation_id(op: Op) -> str:
    """``get_api_threads_thread_id``: the method and the path's words."""
    return re.sub(r"[^A-Za-z0-9]+", "_", f"{op.method} {op.path}").strip("_")


def _links(op: Op) -> Schema:
    """What a created record's id opens: every operation with that id in its path."""
    if op.status != 201:
        return {}
    ids = [name for name in ("thread_id", "post_id") if name in op.response["properties"]]
    return {
        operation_id(other): {
            "operationId": operation_id(other),
            "parameters": {name: f"$response.body#/{name}"},
        }
        for name in ids
        for other in OPS
        if f"{{{name}}}" in other.path
    }


def _operation(op: Op) -> Schema:
    success: Schema = {
        "description": "Created" if op.status == 201 else "OK",
        "content": {op.media: {"schema": op.response}},
    }
    if links := _links(op):
        success["links"] = links
    responses: dict[str, Schema] = {str(op.status): success}
    if op.created:
        responses["200"] = {**success, "description": "It already existed"}
    for status in sorted(_error_statuses(op)):
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    out: Schema = {
        "operationId": operation_id(op),
        "summary": op.summary,
        "parameters": op.params,
        "responses": responses,
    }
    if op.path.startswith("/api/"):
        out["security"] = [{}, {"bearer": []}]
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": op.body}},
        }
    return out


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in OPS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Heartbeat", "version": "0.1.0"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR},
            "responses": {
                f"Error{status}": {
                    "description": description,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
                for status, description in _ERRORS.items()
            },
        },
        "paths": paths,
    }


async def openapi(request: Request) -> JSON:
    return JSON(document())


routes = [Route("/openapi.json", openapi, methods=["GET"])]
