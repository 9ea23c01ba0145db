"""Routes over the stored data: threads, messages, contradictions, journal, and the Ledger."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Final

from starlette.requests import Request
from starlette.routing import Route

from app.http import (
    JSON,
    ApiError,
    check_thread_id,
    cursor_param,
    limit_param,
    only_fields,
    post_id,
    read_object,
    text_field,
    thread_id,
)
from app.routes_heartbeat import service
from ledger import config as hbconfig
from ledger.limits import CONTENT_MAX, MESSAGE_MAX, PAGES, STATEMENT_MAX, TITLE_MAX
from ledger.records import (
    Contradiction,
    Message,
    Profile,
    Reflection,
    SelfReply,
    Thread,
    iso,
    post_to_dict,
    shown,
)
from ledger.storage.interface import USER


def thread_view(thread: Thread) -> dict[str, Any]:
    cfg, _ = hbconfig.decode_stored(thread.config_json)
    return {
        "thread_id": thread.id,
        "title": thread.title,
        "created_at": iso(thread.created_at),
        "updated_at": iso(thread.updated_at),
        "heartbeat": {
            "enabled": cfg.enabled,
            "every_seconds": cfg.every_seconds,
            "dry_run": cfg.dry_run,
            "target": cfg.target,
            "configured": thread.config_json is not None,
        },
        "next_run_at": iso(thread.next_run) if cfg.enabled else None,
        "last_run_at": iso(thread.last_run),
        "last_summary": thread.last_summary,
    }


async def list_threads(request: Request) -> JSON:
    svc = service(request)
    limit = limit_param(request, PAGES["threads"])
    after = request.query_params.get("cursor") or None
    if after is not None:
        check_thread_id(after, "cursor")
    threads = await svc.store.list_threads(limit=limit + 1, after=after)
    page = threads[:limit]
    nxt = page[-1].id if len(threads) > limit else None
    return JSON({"items": [thread_view(t) for t in page], "next_cursor": nxt})


async def create_thread(request: Request) -> JSON:
    svc = service(request)
    data = await read_object(request)
    only_fields(data, {"thread_id", "title"})
    tid = data.get("thread_id")
    if tid is None:
        tid = f"t_{secrets.token_hex(5)}"
    check_thread_id(tid)
    title = text_field(data, "title", max_len=TITLE_MAX, required=False, default=tid) or tid
    created = await svc.store.write(lambda tx: tx.create_thread(tid, title, None))
    thread = await svc.store.get_thread(tid)
    return JSON(thread_view(thread), status_code=201 if created else 200)


async def get_thread(request: Request) -> JSON:
    svc = service(request)
    return JSON(thread_view(await svc.store.get_thread(thread_id(request))))


async def list_messages(request: Request) -> JSON:
    svc = service(request)
    tid = thread_id(request)
    await svc.store.get_thread(tid)
    limit = limit_param(request, PAGES["messages"])
    msgs = await svc.store.messages(tid, limit=limit + 1, before=cursor_param(request))
    older = len(msgs) > limit
    page = msgs[-limit:]
    return JSON(
        {
            "items": [_message(m) for m in page],
            "next_cursor": str(page[0].id) if older and page else None,
        }
    )


async def add_message(request: Request) -> JSON:
    svc = service(request)
    tid = thread_id(request)
    await svc.store.get_thread(tid)
    data = await read_object(request)
    only_fields(data, {"role", "content"})
    role = data.get("role", "user")
    if role not in ("user", "assistant", "system"):
        raise ApiError(
            422,
            "invalid_value",
            f"role must be user, assistant or system; got {str(role)[:40]!r}",
            field="role",
        )
    content = text_field(data, "content", max_len=MESSAGE_MAX)
    msg = await svc.store.write(lambda tx: tx.add_message(tid, role, content))
    return JSON(_message(msg), status_code=201)


def _message(m: Message) -> dict[str, Any]:
    return shown(m, ("thread_id", "role", "content", "created_at"), id_as="message_id")


async def list_contradictions(request: Request) -> JSON:
    svc = service(request)
    tid = thread_id(request)
    await svc.store.get_thread(tid)
    status = request.query_params.get("status", "open")
    if status not in ("open", "resolved", "all"):
        raise ApiError(
            422, "invalid_parameter", "status must be open, resolved or all", field="status"
        )
    rows = await svc.store.contradictions(tid, status=None if status == "all" else status)
    return JSON({"items": [_contradiction(c) for c in rows], "next_cursor": None})


def _contradiction(c: Contradiction) -> dict[str, Any]:
    fields = ("thread_id", "statement_a", "statement_b", "status", "created_at")
    return shown(c, fields, id_as="contradiction_id")


async def add_contradiction(request: Request) -> JSON:
    svc = service(request)
    tid = thread_id(request)
    await svc.store.get_thread(tid)
    a, b = await _texts(request, statement_a=STATEMENT_MAX, statement_b=STATEMENT_MAX)
    row = await svc.store.write(lambda tx: tx.add_contradiction(tid, a, b))
    return JSON(_contradiction(row), status_code=201)


async def _texts(request: Request, **max_len: int) -> list[str]:
    """A body of exactly these required text fields (each at most its length), in this order."""
    data = await read_object(request)
    only_fields(data, set(max_len))
    return [text_field(data, name, max_len=limit) for name, limit in max_len.items()]


async def journal(request: Request, kind: str) -> JSON:
    """The other loops' results for a thread: reflections, personality versions, self-replies
    (``kind``, one of ``JOURNALS``)."""
    svc = service(request)
    tid = thread_id(request)
    await svc.store.get_thread(tid)
    limit = limit_param(request, PAGES["journal"])
    rows: Sequence[Reflection | Profile | SelfReply]
    if kind == "reflections":
        rows = await svc.store.reflections(tid, limit=limit)
    elif kind == "personality":
        rows = await svc.store.profiles(tid, limit=limit)
    elif kind == "self-replies":
        rows = await svc.store.self_replies(tid, limit=limit)
    else:
        raise ValueError(f"no journal {kind!r}")
    fields, id_as = _JOURNAL_SHOWN[kind]
    items = [shown(row, fields, id_as=id_as) for row in rows]
    return JSON({"items": items, "next_cursor": None})


# What the journal routes show of each kind of entry: its fields, and the name of its id.
_JOURNAL_SHOWN: Final[Mapping[str, tuple[tuple[str, ...], str | None]]] = {
    "reflections": (("score", "summary", "notable", "run_id", "created_at"), "reflection_id"),
    "personality": (("version", "traits", "tone", "interests", "run_id", "created_at"), None),
    "self-replies": (("reflection_id", "content", "run_id", "created_at"), "reply_id"),
}
JOURNALS = tuple(_JOURNAL_SHOWN)  # one route each


# -- the Ledger -----------------------------------------------------------------------------
async def list_posts(request: Request) -> JSON:
    svc = service(request)
    limit = limit_param(request, PAGES["posts"])
    posts = await svc.store.posts(limit=limit + 1, before=cursor_param(request))
    page = posts[:limit]
    nxt = str(page[-1].cursor) if len(posts) > limit else None
    return JSON({"items": [post_to_dict(p) for p in page], "next_cursor": nxt})


async def create_post(request: Request) -> JSON:
    svc = service(request)
    title, content = await _texts(request, title=TITLE_MAX, content=CONTENT_MAX)
    post = await svc.store.write(lambda tx: tx.create_post(USER, title, content))
    await svc.ledger_event("post", USER, post.id, title, content)
    return JSON(post_to_dict(post), status_code=201)


async def get_post(request: Request) -> JSON:
    svc = service(request)
    post = await svc.store.get_post(post_id(request))
    body = post_to_dict(post)
    body["comments"] = [
        shown(c, ("author", "content", "created_at"), id_as="comment_id")
        for c in await svc.store.comments(post.id)
    ]
    body["votes"] = [
        shown(v, ("voter", "direction", "created_at")) for v in await svc.store.votes(post.id)
    ]
    return JSON(body)


async def add_comment(request: Request) -> JSON:
    svc = service(request)
    pid = post_id(request)
    (content,) = await _texts(request, content=CONTENT_MAX)
    comment = await svc.store.write(lambda tx: tx.add_comment(pid, USER, content))
    await svc.ledger_event("comment", USER, pid, "", content)
    return JSON(
        {
            "comment_id": comment.id,
            "post_id": pid,
            "author": USER,
            "content": content,
            "created_at": iso(comment.created_at),
        },
        status_code=201,
    )


async def add_vote(request: Request) -> JSON:
    svc = service(request)
    pid = post_id(request)
    data = await read_object(request)
    only_fields(data, {"direction"})
    direction = data.get("direction")
    if direction not in ("up", "down"):
        raise ApiError(
            422,
            "invalid_value",
            f'direction must be "up" or "down", got {str(direction)[:40]!r}',
            field="direction",
        )
    await svc.store.write(lambda tx: tx.vote(pid, USER, direction))
    post = await svc.store.get_post(pid)
    return JSON({"post_id": pid, "voter": USER, "direction": direction, "score": post.score})


routes = [
    Route("/api/threads", list_threads, methods=["GET"]),
    Route("/api/threads", create_thread, methods=["POST"]),
    Route("/api/threads/{thread_id}", get_thread, methods=["GET"]),
    Route("/api/threads/{thread_id}/messages", list_messages, methods=["GET"]),
    Route("/api/threads/{thread_id}/messages", add_message, methods=["POST"]),
    Route("/api/threads/{thread_id}/contradictions", list_contradictions, methods=["GET"]),
    Route("/api/threads/{thread_id}/contradictions", add_contradiction, methods=["POST"]),
    *(
        Route(f"/api/threads/{{thread_id}}/{kind}", functools.partial(journal, kind=kind))
        for kind in JOURNALS
    ),
    Route("/api/ledger/posts", list_posts, methods=["GET"]),
    Route("/api/ledger/posts", create_post, methods=["POST"]),
    Route("/api/ledger/posts/{post_id}", get_post, methods=["GET"]),
    Route("/api/ledger/posts/{post_id}/comments", add_comment, methods=["POST"]),
    Route("/api/ledger/posts/{post_id}/votes", add_vote, methods=["POST"]),
]
