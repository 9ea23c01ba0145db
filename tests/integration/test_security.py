"""The guard in front of the API, probed as another local web app (or a hostile page) would."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Message, Receive, Scope, Send

from app.http import JSON
from app.main import create_app
from app.security import SAFE_METHODS, SecurityMiddleware
from app.settings import Settings
from tests.conftest import AppFactory, Running, live_server
from tests.fakes.provider import ScriptedLLM
from tests.integration.test_api import err

OWN = "http://127.0.0.1:8000"  # the test client's base URL: the origin the service is reached on
BAD_ORIGINS = [
    "http://localhost:9999",
    "http://127.0.0.1:3000",
    "http://127.0.0.1",
    "https://127.0.0.1:8000",
    "http://localhost:8000",
    "http://evil.example",
    "null",
    "garbage",
]


@pytest.fixture
async def api(make_app: AppFactory) -> Running:
    return await make_app(llm=ScriptedLLM(), start_loops=False)


def routes_of(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path template) of every route, mounted ones included."""
    for route in routes:
        if isinstance(route, Route):
            for method in sorted(route.methods or ()):
                yield method, prefix + route.path
        elif isinstance(route, Mount):
            yield from routes_of(route.routes, prefix + route.path)


async def state_changing_routes(api: Running) -> list[tuple[str, str]]:
    """(method, path) of every route that is not read-only, path parameters filled in."""
    r = await api.client.post("/api/ledger/posts", json={"title": "t", "content": "c"})
    params = {"thread_id": "default", "post_id": r.json()["post_id"], "kind": "reflections"}
    return [
        (method, path.format(**params))
        for method, path in routes_of(api.app.routes)
        if method not in SAFE_METHODS
    ]


async def test_every_state_changing_route_refuses_other_origins(api: Running) -> None:
    routes = await state_changing_routes(api)
    assert ("POST", "/api/threads/default/heartbeat/run-now") in routes and len(routes) >= 10
    for method, path in routes:
        for origin in BAD_ORIGINS:
            r = await api.client.request(method, path, json={}, headers={"origin": origin})
            assert r.status_code == 403, (method, path, origin, r.text)
            assert err(r)["code"] == "cross_origin", (method, path, origin)
        r = await api.client.request(method, path, json={}, headers={"sec-fetch-site": "same-site"})
        assert r.status_code == 403 and err(r)["code"] == "cross_origin", (method, path)
        for headers in ({"origin": OWN}, {}):
            r = await api.client.request(method, path, json={}, headers=headers)
            assert r.status_code != 403, (method, path, headers, r.text)


async def test_configured_origins_may_write(make_app: AppFactory) -> None:
    api = await make_app(
        llm=ScriptedLLM(),
        start_loops=False,
        allowed_origins=("http://localhost:3000", "https://box.lan"),
    )
    post = {"title": "t", "content": "c"}
    for origin in ("http://localhost:3000", "HTTPS://BOX.LAN:443", OWN):
        r = await api.client.post("/api/ledger/posts", json=post, headers={"origin": origin})
        assert r.status_code == 201, (origin, r.text)
    for origin in ("http://localhost:3001", "http://box.lan", "null"):
        r = await api.client.post("/api/ledger/posts", json=post, headers={"origin": origin})
        assert r.status_code == 403, origin


async def test_own_origin_follows_the_host_it_was_reached_on(api: Running) -> None:
    post = {"title": "t", "content": "c"}
    headers = {"host": "localhost:8000", "origin": "http://localhost:8000"}
    r = await api.client.post("/api/ledger/posts", json=post, headers=headers)
    assert r.status_code == 201, r.text
    headers = {"host": "localhost:8000", "origin": "http://127.0.0.1:8000"}
    r = await api.client.post("/api/ledger/posts", json=post, headers=headers)
    assert r.status_code == 403


SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def assert_security_headers(r: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert r.headers.get(name) == value, (r.request.url, name, r.headers)
    csp = r.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, (r.request.url, csp)


async def test_every_response_carries_the_security_headers(api: Running) -> None:
    c = api.client
    answers = [
        await c.get("/"),
        await c.get("/static/app.js"),
        await c.get("/static/style.css"),
        await c.get("/openapi.json"),
        await c.get("/api/heartbeat/status"),
        await c.get("/api/nothing-here"),
        await c.get("/static/nothing-here.js"),
        await c.post("/api/ledger/posts", json={"title": "t"}),
        await c.post("/api/ledger/posts", json={}, headers={"origin": "null"}),
        await c.get("/api/heartbeat/status", headers={"host": "evil.example"}),
        await c.post("/api/ledger/posts", content=b"x" * (300 * 1024)),
    ]
    assert [r.status_code for r in answers] == [
        200,
        200,
        200,
        200,
        200,
        404,
        404,
        422,
        403,
        421,
        413,
    ]
    for r in answers:
        assert_security_headers(r)


async def test_the_event_stream_carries_the_security_headers(workspace: Path) -> None:
    app = create_app(Settings.for_workspace(workspace), llm=ScriptedLLM(), start_loops=False)
    async with (
        live_server(app) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        client.stream("GET", "/api/heartbeat/events") as r,
    ):
        assert r.status_code == 200
        assert_security_headers(r)


# -- bad input is a 4xx, never a 500 --------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/api/ledger/posts",
        "/api/threads/default/messages",
        "/api/threads/default/heartbeat/history",
    ],
)
@pytest.mark.parametrize("cursor", ["%C2%B2", "%D9%A3", "1%C2%B2"])
async def test_non_ascii_digits_in_a_cursor(api: Running, path: str, cursor: str) -> None:
    r = await api.client.get(f"{path}?cursor={cursor}")
    assert r.status_code == 422, r.text
    assert err(r)["code"] == "invalid_parameter" and err(r)["field"] == "cursor"


async def test_deeply_nested_json_is_refused(api: Running) -> None:
    arrays = b"[" * 5000 + b"]" * 5000
    objects = b'{"a":' * 3000 + b"1" + b"}" * 3000
    for path, body in [
        ("/api/ledger/posts", arrays),
        ("/api/threads/default/heartbeat/config", objects),
        ("/api/threads/fresh/heartbeat/config", objects),
        ("/api/threads", b'{"title": ' + b"[" * 65 + b"]" * 65 + b"}"),
    ]:
        r = await api.client.post(path, content=body)
        assert r.status_code == 400, (path, r.text)
        assert err(r)["code"] == "invalid_json" and err(r)["field"] == "body"
        assert "64 levels" in err(r)["message"]
    assert (await api.client.get("/api/threads/fresh")).status_code == 404
    shallow = b'{"title": ' + b"[" * 63 + b"]" * 63 + b"}"  # 64 levels: read, then refused
    r = await api.client.post("/api/threads", content=shallow)
    assert r.status_code == 422 and err(r)["field"] == "title"


async def test_a_non_ascii_content_length_is_not_a_crash() -> None:
    # h11 refuses such a header before it reaches the app; the middleware must not rely on it
    reached: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["path"])
        await JSON({"ok": True})(scope, receive, send)

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/ledger/posts",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-length", "\u00b2".encode("latin-1"))],
    }
    await SecurityMiddleware(app, token=None, hosts=None, max_body=10, body_timeout=5)(
        scope, receive, send
    )
    assert reached == ["/api/ledger/posts"] and sent[0]["status"] == 200


# -- input that must be refused ---------------------------------------------------------------
async def test_an_id_with_a_trailing_newline_is_refused(api: Running) -> None:
    c = api.client
    r = await c.post("/api/threads", json={"thread_id": "nl-2\n"})
    assert r.status_code == 422 and err(r)["field"] == "thread_id", r.text
    for method, path in [
        ("POST", "/api/threads/nl-2%0A/heartbeat/config"),
        ("POST", "/api/threads/nl-2%0A/heartbeat/run-now"),
        ("GET", "/api/threads/nl-2%0A"),
        ("GET", "/api/threads?cursor=nl-2%0A"),
        ("GET", "/api/heartbeat/events?thread_id=nl-2%0A"),
    ]:
        r = await c.request(method, path, json={"every": 600} if method == "POST" else None)
        assert r.status_code == 422, (path, r.text)
        assert err(r)["code"] == "invalid_thread_id", path
    assert [t["thread_id"] for t in (await c.get("/api/threads")).json()["items"]] == ["default"]
    post_id = (await c.post("/api/ledger/posts", json={"title": "t", "content": "c"})).json()[
        "post_id"
    ]
    r = await c.post(f"/api/ledger/posts/{post_id}%0A/votes", json={"direction": "up"})
    assert r.status_code == 404 and err(r)["field"] == "post_id"


async def test_a_refused_config_creates_no_thread(api: Running) -> None:
    c = api.client
    r = await c.post("/api/threads/ghost/heartbeat/config", json={"every_seconds": 5})
    assert r.status_code == 422 and err(r)["field"] == "every_seconds"
    r = await c.post("/api/threads/ghost/heartbeat/config", json={"nope": 1})
    assert r.status_code == 422 and err(r)["field"] == "nope"
    assert (await c.get("/api/threads/ghost")).status_code == 404
    r = await c.post("/api/threads/ghost/heartbeat/config", json={"every_seconds": 600})
    assert r.status_code == 200 and r.json()["every_seconds"] == 600
    assert (await c.get("/api/threads/ghost")).json()["title"] == "ghost"


async def test_control_characters_are_refused_in_text(api: Running) -> None:
    c = api.client
    post_id = (await c.post("/api/ledger/posts", json={"title": "t", "content": "c"})).json()[
        "post_id"
    ]
    cases = [
        ("/api/threads", {"thread_id": "ctl", "title": "a\x00b"}, "title"),
        ("/api/ledger/posts", {"title": "nul\x00", "content": "c"}, "title"),
        ("/api/ledger/posts", {"title": "t", "content": "esc\x1b[2J"}, "content"),
        (f"/api/ledger/posts/{post_id}/comments", {"content": "bell\x07"}, "content"),
        ("/api/threads/default/messages", {"content": "a\x00"}, "content"),
        (
            "/api/threads/default/contradictions",
            {"statement_a": "\x01", "statement_b": "b"},
            "statement_a",
        ),
    ]
    for path, body, field in cases:
        r = await c.post(path, json=body)
        assert r.status_code == 422, (path, r.text)
        assert err(r)["field"] == field and "control character" in err(r)["message"], r.text
    assert (await c.get("/api/threads/ctl")).status_code == 404
    assert len((await c.get("/api/ledger/posts")).json()["items"]) == 1
    r = await c.post("/api/ledger/posts", json={"title": "t", "content": "line\n\ttab\r\n"})
    assert r.status_code == 201 and r.json()["content"] == "line\n\ttab"


async def test_a_host_dependent_time_zone_is_refused(api: Running) -> None:
    r = await api.client.post(
        "/api/threads/default/heartbeat/config", json={"timezone": "localtime"}
    )
    assert r.status_code == 422 and err(r)["field"] == "timezone", r.text
    r = await api.client.get("/api/threads/default/heartbeat/config")
    assert r.json()["timezone"] == "UTC"


# -- slow clients -----------------------------------------------------------------------------
async def test_a_body_that_does_not_arrive_in_time_is_a_408(make_app: AppFactory) -> None:
    api = await make_app(llm=ScriptedLLM(), start_loops=False, body_timeout=0.3)
    chunks = [b'{"title": "t", ']  # half a body, then nothing more

    async def receive() -> Message:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(), "more_body": True}
        await asyncio.Event().wait()  # the client never sends the rest
        raise AssertionError("not reached")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "method": "POST",
        "path": "/api/ledger/posts",
        "raw_path": b"/api/ledger/posts",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")],
    }
    started = time.monotonic()
    await asyncio.wait_for(api.app(scope, receive, send), 5)
    assert 0.3 <= time.monotonic() - started < 3
    assert sent[0]["status"] == 408
    headers = dict(sent[0]["headers"])
    assert headers[b"connection"] == b"close" and b"content-security-policy" in headers
    body = json.loads(sent[1]["body"])
    assert body["error"]["code"] == "body_timeout" and body["error"]["field"] == "body"
    assert (await api.client.get("/api/ledger/posts")).json()["items"] == []


async def test_an_event_stream_outlives_the_body_deadline(workspace: Path) -> None:
    settings = Settings.for_workspace(workspace, body_timeout=0.2)
    app = create_app(settings, llm=ScriptedLLM(), start_loops=False)
    async with (
        live_server(app) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
        client.stream("GET", "/api/heartbeat/events") as r,
    ):
        lines = r.aiter_lines()
        assert (await anext(lines)).startswith("retry:")
        await asyncio.sleep(0.6)
        r2 = await client.post("/api/threads/default/heartbeat/run-now")
        assert r2.status_code == 200
        async with asyncio.timeout(5):
            async for line in lines:
                if line.startswith("event: run_finished"):
                    break
