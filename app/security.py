"""The guard in front of every request (pure ASGI middleware).

- ``Host`` must name this service (DNS rebinding), unless it is bound to all interfaces with a token
  and no host list.
- A state-changing request whose ``Origin`` is another site is refused (CSRF).
- With ``HEARTBEAT_API_TOKEN`` set, every ``/api`` call needs ``Authorization: Bearer <token>``
  (the event stream may pass ``?token=`` because browsers' EventSource cannot set headers).
- Request bodies are capped.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http import ApiError, error_response
from ledger.errors import HeartbeatError

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _host_only(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def allowed_host_names(bind_host: str, extra: Iterable[str]) -> frozenset[str] | None:
    """The Host names to accept, or None to accept any (all-interfaces bind, no list given)."""
    extra = [_host_only(h) for h in extra]
    if bind_host in ("0.0.0.0", "::", "") and not extra:
        return None
    names = set(LOOPBACK_NAMES) | set(extra)
    names.add(_host_only(bind_host) if ":" not in bind_host else f"[{bind_host}]")
    names.add(bind_host.lower())
    return frozenset(names)


class _TooLarge(HeartbeatError, code="body_too_large", http_status=413):
    """The request body is over the limit."""


class SecurityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        hosts: frozenset[str] | None,
        max_body: int,
    ) -> None:
        self.app = app
        self.token = token
        self.hosts = hosts
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._check(scope, headers)
        if refusal is not None:
            await error_response(refusal)(scope, receive, send)
            return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await error_response(self._too_large())(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise self._too_large()
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge as exc:
            if not started:
                await error_response(exc)(scope, receive, send)

    def _too_large(self) -> _TooLarge:
        return _TooLarge(f"the request body is over {self.max_body} bytes", field="body")

    def _check(self, scope: Scope, headers: dict[str, str]) -> ApiError | None:
        if self.hosts is not None:
            host = _host_only(headers.get("host", ""))
            if host not in self.hosts:
                return ApiError(421, "bad_host", f"Host {host[:100]!r} is not served here")
        method = scope["method"]
        if method not in SAFE_METHODS:
            origin = headers.get("origin")
            if origin and origin != "null":
                origin_host = _host_only(urlsplit(origin).netloc)
                request_host = _host_only(headers.get("host", ""))
                if origin_host != request_host and (
                    self.hosts is None or origin_host not in self.hosts
                ):
                    return ApiError(
                        403, "cross_origin", f"requests from {origin[:100]!r} are refused"
                    )
            elif headers.get("sec-fetch-site") == "cross-site":
                return ApiError(403, "cross_origin", "cross-site requests are refused")
        path: str = scope["path"]
        if self.token and path.startswith("/api/"):
            if not self._authorized(scope, headers):
                return ApiError(
                    401,
                    "unauthorized",
                    "this API needs Authorization: Bearer <token>",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return None

    def _authorized(self, scope: Scope, headers: dict[str, str]) -> bool:
        assert self.token is not None
        given = ""
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        elif scope["path"] == "/api/heartbeat/events":
            query: dict[str, Any] = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = (query.get("token") or [""])[0]
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())
