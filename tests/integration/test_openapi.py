"""The OpenAPI document is the app's: every route documented, every documented route served,
the methods the same, and the document itself valid OpenAPI 3.1."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from starlette.routing import Mount, Route

from app.main import create_app
from app.openapi import document
from app.settings import Settings
from tests.conftest import Running

from .test_api import api, err, llm  # noqa: F401 - fixtures

DOCUMENTED_METHODS = {"get", "post", "put", "patch", "delete"}


def served(workspace: Path) -> dict[str, set[str]]:
    """Each path the app routes, with its methods (HEAD aside: it comes with GET)."""
    app = create_app(Settings.for_workspace(workspace, llm_provider="ollama"))
    paths: dict[str, set[str]] = {}
    for route in app.routes:
        if isinstance(route, Mount) and route.path == "/static":
            continue  # the dashboard's files
        assert isinstance(route, Route), route
        methods = {m.lower() for m in route.methods or ()} - {"head"}
        paths.setdefault(route.path, set()).update(methods)
    return paths


def test_every_route_is_documented_and_every_documented_route_served(workspace: Path) -> None:
    doc = document()["paths"]
    documented = {path: set(ops) & DOCUMENTED_METHODS for path, ops in doc.items()}
    assert documented == served(workspace)


def test_the_document_is_valid_openapi() -> None:
    validate(document())


def test_each_operation_documents_its_success_and_errors() -> None:
    for path, ops in document()["paths"].items():
        for method, op in ops.items():
            statuses = set(op["responses"])
            assert statuses & {"200", "201", "202"}, (method, path)
            assert {"421", "413"} <= statuses, (method, path)  # the guard's, on every route
            if path.startswith("/api/"):
                assert "401" in statuses, (method, path)
            if method == "post":
                assert "403" in statuses, (method, path)
            if "requestBody" in op:
                assert {"400", "415", "422", "408"} <= statuses, (method, path)
            if "{thread_id}" in path or "{post_id}" in path:
                assert "404" in statuses, (method, path)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/ledger/posts", "201"),
        ("/api/threads", "201"),
        ("/api/threads/{thread_id}/messages", "201"),
        ("/api/threads/{thread_id}/contradictions", "201"),
        ("/api/ledger/posts/{post_id}/comments", "201"),
        ("/api/ledger/posts/{post_id}/votes", "200"),
        ("/api/threads/{thread_id}/heartbeat/config", "200"),
    ],
)
def test_created_answers_are_documented(path: str, status: str) -> None:
    assert status in document()["paths"][path]["post"]["responses"]


def test_required_fields_are_declared() -> None:
    paths = document()["paths"]

    def body(path: str) -> dict[str, Any]:
        schema: dict[str, Any] = paths[path]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ]
        return schema

    assert body("/api/ledger/posts")["required"] == ["title", "content"]
    assert body("/api/threads/{thread_id}/messages")["required"] == ["content"]
    assert body("/api/threads")["required"] == []
    assert body("/api/ledger/posts/{post_id}/votes")["required"] == ["direction"]
    assert body("/api/heartbeat/heartbeat.md")["required"] == ["content"]


async def test_405_allows_every_method_of_the_path(api: Running) -> None:  # noqa: F811
    """A path with GET and POST says both; a POST-only path says POST."""
    for path, allow in [
        ("/api/threads", "GET, HEAD, POST"),
        ("/api/ledger/posts", "GET, HEAD, POST"),
        ("/api/threads/default/messages", "GET, HEAD, POST"),
        ("/api/threads/default/heartbeat/config", "GET, HEAD, POST"),
        ("/api/heartbeat/heartbeat.md", "GET, HEAD, POST"),
        ("/api/heartbeat/start", "POST"),
        ("/api/threads/default/reflections", "GET, HEAD"),
    ]:
        r = await api.client.delete(path)
        assert r.status_code == 405 and err(r)["code"] == "method_not_allowed", path
        assert r.headers["allow"] == allow, path


async def test_an_unknown_journal_is_not_found_for_any_method(api: Running) -> None:  # noqa: F811
    for method in ("GET", "POST"):
        r = await api.client.request(method, "/api/threads/default/diary")
        assert r.status_code == 404 and err(r)["code"] == "not_found", method


async def test_event_ids_past_the_documented_maximum_are_refused(api: Running) -> None:  # noqa: F811
    """The largest event id documented has as many digits as the stream takes; a longer one,
    or digits that are not ASCII ("²" is a digit to str.isdigit), is a 422, never a 500."""
    params = document()["paths"]["/api/heartbeat/events"]["get"]["parameters"]
    maximum = next(p for p in params if p["name"] == "Last-Event-ID")["schema"]["maximum"]
    for given in (str(maximum + 1), "\u00b2", "1\u00b9"):
        for request in (
            {"headers": {"Last-Event-ID": given.encode()}},
            {"params": {"last_event_id": given}},
        ):
            r = await api.client.get("/api/heartbeat/events", **request)  # type: ignore[arg-type]
            assert r.status_code == 422, (given, request)
            assert err(r)["field"] == "last_event_id"


async def test_text_is_held_to_its_documented_length_and_pattern_as_sent(
    api: Running,  # noqa: F811
) -> None:
    """maxLength and the pattern describe the string sent: spaces around a title count, and
    a control character that trimming would drop is refused all the same."""
    body = document()["paths"]["/api/ledger/posts"]["post"]["requestBody"]
    title = body["content"]["application/json"]["schema"]["properties"]["title"]
    size = title["maxLength"]
    for bad, code in [("  " + "x" * (size - 1), "too_long"), ("\x0bHello", "invalid_value")]:
        assert not (len(bad) <= size and re.fullmatch(title["pattern"].strip("^$"), bad))
        r = await api.client.post("/api/ledger/posts", json={"title": bad, "content": "c"})
        assert r.status_code == 422 and err(r)["code"] == code, r.text
    r = await api.client.post("/api/ledger/posts", json={"title": " Hello ", "content": "c"})
    assert r.status_code == 201 and r.json()["title"] == "Hello"
