"""The guard in front of every request (pure ASGI middleware).

- ``Host`` must name this service (DNS rebinding), unless it is bound to all interfaces with a token
  and no host list.
- A state-changing request that carries an ``Origin`` is refused (CSRF) unless that origin is the
  service's own (scheme, host and port it was reached on) or one configured in
  ``HEARTBEAT_ALLOWED_ORIGINS``; ``Origin: null`` is refused. A request without ``Origin`` (curl)
  passes unless the browser marks it cross-site or same-site.
- With ``HEARTBEAT_API_TOKEN`` set, every ``/api`` call and ``/metrics`` need
  ``Authorization: Bearer <token>`` (the event stream may pass ``?token=`` because browsers'
  EventSource cannot set headers).
- Request bodies are capped in size, and in time: a body not complete within ``body_timeout``
  seconds of the request's start is answered 408 and its connection closed.
- Every response says it may not be framed, sniffed, or leak a referrer, and carries the
  dashboard's Content-Security-Policy (scripts, styles and connections from this origin only).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http import ApiError, error_response, whole_number
from ledger.errors import HeartbeatError

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}

_NETLOC = re.compile(r"(?:[a-z0-9._~-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?", re.I | re.A)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
    " frame-ancestors 'none'"
)
RESPONSE_HEADERS: tuple[tuple[bytes, bytes], ...] = tuple(
    (name.encode(), value.encode())
    for name, value in (
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    )
)

_CLOSE = {"Connection": "close"}

Origin = tuple[str, str, int]  # scheme, host (lower case, IPv6 without brackets), port


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


@functools.lru_cache(maxsize=256)
def _origin_of(scheme: str, netloc: str) -> Origin | None:
    if scheme not in DEFAULT_PORTS or _NETLOC.fullmatch(netloc) is None:
        return None
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return scheme, parts.hostname, port or DEFAULT_PORTS[scheme]


def parse_origin(value: str) -> Origin | None:
    """``scheme://host[:port]`` (an ``Origin`` header) as (scheme, host, port), the default port
    filled in; None for ``null`` or anything else."""
    scheme, sep, netloc = value.strip().partition("://")
    return _origin_of(scheme.lower(), netloc) if sep else None


def own_origin(scope: Scope, host_header: str | None) -> Origin | None:
    """The origin this request reached: its scheme and ``Host``, else the bound address."""
    scheme = str(scope.get("scheme", "http"))
    if host_header:
        return _origin_of(scheme, host_header.strip())
    server = scope.get("server")
    if not server or server[1] is None:
        return None
    host, port = server
    return _origin_of(scheme, f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


def _with_response_headers(send: Send) -> Send:
    """``send`` adding ``RESPONSE_HEADERS`` to the response's start (no route sets them)."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *RESPONSE_HEADERS]}
        await send(message)

    return sending


class _TooLarge(HeartbeatError, code="body_too_large", http_status=413, headers=_CLOSE):
    """The request body is over the limit."""


class _TooSlow(HeartbeatError, code="body_timeout", http_status=408, headers=_CLOSE):
    """The request body did not arrive in time."""


class SecurityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        hosts: frozenset[str] | None,
        max_body: int,
        body_timeout: float,
        origins: frozenset[Origin] = frozenset(),
    ) -> None:
        self.app = app
        self.token = token
        self.hosts = hosts
        self.origins = origins
        self.body_timeout = body_timeout
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_response_headers(send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._check(scope, headers)
        if refusal is not None:
            await error_response(refusal)(scope, receive, send)
            return
        length = headers.get("content-length")
        declared = None if length is None else whole_number(length.strip(), 30)
        if declared is not None and declared > self.max_body:
            await error_response(self._too_large())(scope, receive, send)
            return
        received = 0
        body_done = False
        deadline = asyncio.get_running_loop().time() + self.body_timeout

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # later calls wait for the disconnect (event streams): no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise self._too_slow() from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
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
        except _TooSlow as exc:
            if not started:
                await error_response(exc)(scope, receive, send)

    def _too_slow(self) -> _TooSlow:
        message = f"the request body did not arrive within {self.body_timeout:g} seconds"
        return _TooSlow(message, field="body")

    def _too_large(self) -> _TooLarge:
        # the rest of the body is not read: the connection cannot be reused (Connection: close)
        return _TooLarge(f"the request body is over {self.max_body} bytes", field="body")

    def _check(self, scope: Scope, headers: dict[str, str]) -> ApiError | None:
        if self.hosts is not None:
            host = _host_only(headers.get("host", ""))
            if host not in self.hosts:
                return ApiError(421, "bad_host", f"Host {host[:100]!r} is not served here")
        method = scope["method"]
        if method not in SAFE_METHODS:
            origin = headers.get("origin", "").strip()
            if origin:
                if not self._origin_allowed(scope, origin, headers.get("host")):
                    return ApiError(
                        403, "cross_origin", f"requests from {origin[:100]!r} are refused"
                    )
            elif headers.get("sec-fetch-site") in ("cross-site", "same-site"):
                return ApiError(403, "cross_origin", "requests from other sites are refused")
        path: str = scope["path"]
        if self.token and (path.startswith("/api/") or path == "/metrics"):
            if not self._authorized(scope, headers):
                return ApiError(
                    401,
                    "unauthorized",
                    "this API needs Authorization: Bearer <token>",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return None

    def _origin_allowed(self, scope: Scope, origin: str, host: str | None) -> bool:
        if host is not None and origin == f"{scope.get('scheme', 'http')}://{host}":
            return True  # a browser on this very origin (the common case, no parsing)
        given = parse_origin(origin)
        return given is not None and (given in self.origins or given == own_origin(scope, host))

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
