"""HTTP plumbing shared by the providers: error bodies, status and transport error mapping."""

from __future__ import annotations

import email.utils
import errno
import json
import math
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict, TypeVar

import httpx
import msgspec

from .base import ChatRequest, ChatResult, Health, LLMError, TokenSink
from .retry import RetryPolicy, run_with_retries

__all__ = [
    "HEALTH_TIMEOUT",
    "HTTPOptions",
    "HTTPProvider",
    "decode_chunk",
    "error_text",
    "payload_error_text",
    "read_capped",
    "snippet",
    "status_error",
    "stream_error",
    "transport_error",
]

ProviderName = Literal["ollama", "openai"]
# Health probes read metadata only: a short limit for each phase.
HEALTH_TIMEOUT = httpx.Timeout(5.0)
R = TypeVar("R")


def snippet(text: str, limit: int = 200) -> str:
    """One line of at most ``limit`` characters, for quoting a server in a message."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def payload_error_text(obj: Any) -> str | None:
    """The human part of an error payload in any shape of docs/llm-protocols.md, Error bodies.

    Ollama ``{"error": "…"}``; OpenAI / llama.cpp / new vLLM ``{"error": {"message", "type",
    "code"}}``; FastAPI ``{"detail": "…"}`` or a validation list; old vLLM flat
    ``{"object": "error", "message": …}``.
    """
    if not isinstance(obj, dict):
        return None
    err = obj.get("error")
    if isinstance(err, str) and err.strip():
        return snippet(err)
    if isinstance(err, dict):
        return _with_kind(err)
    detail = obj.get("detail")
    if isinstance(detail, str) and detail.strip():
        return snippet(detail)
    if isinstance(detail, list) and detail:
        parts = []
        for item in detail:
            if isinstance(item, dict) and isinstance(item.get("msg"), str):
                loc = item.get("loc")
                where = ".".join(str(p) for p in loc) if isinstance(loc, list) else ""
                parts.append(f"{where}: {item['msg']}" if where else item["msg"])
        if parts:
            return snippet("; ".join(parts))
    if obj.get("object") == "error" or "message" in obj:
        return _with_kind(obj)
    return None


def _with_kind(err: dict[str, Any]) -> str | None:
    message = err.get("message")
    text = snippet(message) if isinstance(message, str) and message.strip() else None
    kinds = [
        str(err[key]) for key in ("type", "code") if isinstance(err.get(key), str) and err[key]
    ]
    if text is None:
        return ", ".join(kinds) or None
    return f"{text} ({', '.join(kinds)})" if kinds else text


def error_text(body: bytes) -> str | None:
    """The server's own words from an error body, JSON or not; None when it said nothing."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return snippet(text)
    return payload_error_text(obj) or snippet(text)


def decode_chunk(decoder: msgspec.json.Decoder[R], text: str, *, base_url: str, what: str) -> R:
    """One streamed chunk decoded; one that is not ``what`` (e.g. "line 3 is not an Ollama chat
    chunk") raises a ``bad_response`` quoting it."""
    try:
        return decoder.decode(text)
    except msgspec.DecodeError as exc:
        raise LLMError(
            "bad_response",
            f"unreadable reply from the LLM at {base_url}: {what} ({exc}): {snippet(text, 120)!r}",
        ) from None


def stream_error(base_url: str, said: str) -> LLMError:
    """The server reported an error in the middle of a streamed reply (worth another try)."""
    return LLMError(
        "stream_error",
        f"the LLM at {base_url} reported an error mid-reply: {said}",
        retryable=True,
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


async def read_capped(response: httpx.Response, limit: int = 64 * 1024) -> bytes:
    """Up to ``limit`` bytes of an (error) body; whatever arrived if the connection breaks."""
    buf = bytearray()
    chunks = response.aiter_bytes()
    try:
        async for piece in chunks:
            buf += piece
            if len(buf) >= limit:
                break
    except httpx.HTTPError:
        pass
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    return bytes(buf[:limit])


def _model_hint(provider: ProviderName, model: str) -> str:
    if provider == "ollama":
        name = model.removesuffix(":latest")
        return f" — run `ollama pull {name}`"
    return " — check the model name against GET /models and that the base URL ends in /v1"


def status_error(
    status: int,
    body: bytes,
    headers: httpx.Headers,
    *,
    base_url: str,
    model: str,
    provider: ProviderName,
) -> LLMError:
    """Map a non-200 answer that came before any body to an ``LLMError``, by status only."""
    said = error_text(body)
    quoted = f"HTTP {status}: {said}" if said else f"HTTP {status}"
    retry_after = parse_retry_after(headers.get("retry-after"))
    if status == 404:
        return LLMError(
            "model_missing",
            f"model '{model}' not found on {base_url}{_model_hint(provider, model)} ({quoted})",
            status=status,
        )
    if status in (401, 403):
        return LLMError(
            "auth",
            f"LLM server at {base_url} refused the request ({quoted}) — check the API key",
            status=status,
        )
    if status in (429, 503):
        return LLMError(
            "busy",
            f"LLM server at {base_url} is busy ({quoted})",
            retryable=True,
            status=status,
            retry_after=retry_after,
        )
    if status == 408:
        return LLMError(
            "timeout",
            f"LLM server at {base_url} timed out reading the request ({quoted})",
            retryable=True,
            status=status,
            retry_after=retry_after,
        )
    if 400 <= status < 500:
        return LLMError(
            "bad_request",
            f"LLM server at {base_url} rejected the request for model '{model}' ({quoted})",
            status=status,
        )
    if status >= 500:
        return LLMError(
            "server_error",
            f"LLM server at {base_url} failed ({quoted})",
            retryable=status in (500, 502, 504),
            status=status,
            retry_after=retry_after,
        )
    location = headers.get("location")
    extra = f" to {location}" if location and 300 <= status < 400 else ""
    return LLMError(
        "bad_response",
        f"unexpected answer from the LLM at {base_url}: {quoted}{extra}",
        status=status,
    )


def _refused(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return True
        if isinstance(current, OSError) and current.errno == errno.ECONNREFUSED:
            return True
        current = current.__cause__ or current.__context__
    return "refused" in str(exc).lower()


def _detail(exc: BaseException) -> str:
    """The first non-empty text along the exception chain (httpx often wraps a silent one)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionResetError):
            return "connection reset by peer"
        text = str(current).strip()
        if text:
            return snippet(text)
        current = current.__cause__ or current.__context__
    return type(exc).__name__


def transport_error(
    exc: httpx.HTTPError,
    *,
    base_url: str,
    in_body: bool,
    policy_idle: float,
    policy_connect: float,
) -> LLMError:
    """Map an httpx exception to an ``LLMError``; ``in_body`` = the headers had arrived."""
    if isinstance(exc, httpx.ConnectTimeout):
        return LLMError(
            "unreachable",
            f"LLM unreachable at {base_url} (no connection within {policy_connect:g} s)",
            retryable=True,
        )
    if isinstance(exc, httpx.ConnectError):
        why = "connection refused" if _refused(exc) else _detail(exc)
        return LLMError("unreachable", f"LLM unreachable at {base_url} ({why})", retryable=True)
    if isinstance(exc, httpx.ReadTimeout):
        if in_body:
            text = (
                f"no data from the LLM at {base_url} for {policy_idle:g} s "
                "(idle limit between chunks)"
            )
        else:
            text = (
                f"no response from the LLM at {base_url} within {policy_idle:g} s "
                "(idle limit; a cold model load may need a longer one)"
            )
        return LLMError("timeout", text, retryable=True)
    if isinstance(exc, httpx.TimeoutException):
        return LLMError(
            "timeout",
            f"timed out talking to the LLM at {base_url} ({type(exc).__name__})",
            retryable=True,
        )
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        if in_body:
            text = f"the reply from {base_url} was cut off mid-stream ({_detail(exc)})"
        else:
            text = (
                f"the LLM at {base_url} closed the connection without a response ({_detail(exc)})"
            )
        return LLMError("truncated", text, retryable=True)
    if isinstance(exc, httpx.DecodingError):
        return LLMError(
            "bad_response", f"could not decode the reply from {base_url} ({_detail(exc)})"
        )
    if isinstance(exc, httpx.TransportError):
        return LLMError("unreachable", f"LLM unreachable at {base_url} ({_detail(exc)})")
    return LLMError("bad_response", f"unexpected reply from the LLM at {base_url} ({_detail(exc)})")


class HTTPOptions(TypedDict, total=False):
    """The keyword arguments every HTTP provider takes (defaults: ``HTTPProvider``)."""

    client: httpx.AsyncClient | None  # a client of the caller's (then never closed here)
    transport: httpx.AsyncBaseTransport | None  # or a transport for a client of our own
    idle_timeout: float
    backoff_base: float
    max_attempts: int
    rng: random.Random | None


class HTTPProvider:
    """What the HTTP providers share: one httpx client, the retry policy and ``chat``.

    A subclass sets ``base_url`` and provides ``request_body`` and one streamed ``_attempt``.
    """

    name: str
    base_url: str

    def __init__(
        self,
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        idle_timeout: float = 60.0,
        backoff_base: float = 0.5,
        max_attempts: int = 3,
        rng: random.Random | None = None,
    ) -> None:
        if client is not None and transport is not None:
            raise ValueError("pass either client or transport, not both")
        self.policy = RetryPolicy(
            idle_timeout=idle_timeout, backoff_base=backoff_base, max_attempts=max_attempts
        )
        self._rng = rng
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            transport=transport, timeout=self.policy.httpx_timeout(), trust_env=False
        )

    def request_body(self, req: ChatRequest) -> dict[str, Any]:
        raise NotImplementedError

    async def _stream(
        self,
        path: str,
        payload: bytes,
        *,
        headers: dict[str, str],
        model: str,
        provider: ProviderName,
        read: Callable[[httpx.Response], Awaitable[R]],
        refused: Callable[[LLMError, bytes], LLMError] | None = None,
    ) -> R:
        """One streamed ``POST {base_url}{path}``, its 200 answer consumed by ``read``.

        Any other status raises the ``LLMError`` of ``status_error`` (or what ``refused`` makes
        of it and the error body); a transport failure raises that of ``transport_error``.
        """
        in_body = False
        try:
            async with self._client.stream(
                "POST",
                f"{self.base_url}{path}",
                content=payload,
                headers=headers,
                timeout=self.policy.httpx_timeout(),
            ) as response:
                in_body = True
                if response.status_code != 200:
                    body = await read_capped(response)
                    err = status_error(
                        response.status_code,
                        body,
                        response.headers,
                        base_url=self.base_url,
                        model=model,
                        provider=provider,
                    )
                    raise err if refused is None else refused(err, body)
                return await read(response)
        except httpx.HTTPError as exc:
            raise transport_error(
                exc,
                base_url=self.base_url,
                in_body=in_body,
                policy_idle=self.policy.idle_timeout,
                policy_connect=self.policy.connect_timeout,
            ) from exc

    async def _attempt(
        self, req: ChatRequest, payload: bytes, on_token: TokenSink | None
    ) -> ChatResult:
        raise NotImplementedError

    def _health(
        self,
        model: str,
        reachable: bool,
        present: bool | None,
        detail: str | None,
        version: str | None = None,
    ) -> Health:
        """What a health probe of this server found."""
        return Health(
            provider=self.name,
            base_url=self.base_url,
            reachable=reachable,
            version=version,
            model=model,
            model_present=present,
            detail=detail,
        )

    def _probe_failed(self, exc: httpx.HTTPError) -> str:
        """Why a health probe's request failed, as a sentence."""
        return transport_error(
            exc,
            base_url=self.base_url,
            in_body=False,
            policy_idle=HEALTH_TIMEOUT.read or 5.0,
            policy_connect=HEALTH_TIMEOUT.connect or 5.0,
        ).message

    async def chat(
        self, req: ChatRequest, *, on_token: TokenSink | None = None, deadline: float | None = None
    ) -> ChatResult:
        return await run_with_retries(
            self._attempts(req, on_token),
            policy=self.policy,
            deadline=deadline,
            base_url=self.base_url,
            rng=self._rng,
        )

    def _attempts(
        self, req: ChatRequest, on_token: TokenSink | None
    ) -> Callable[[], Awaitable[ChatResult]]:
        """What one attempt at ``req`` does; the retry loop of ``chat`` calls it again."""
        payload = msgspec.json.encode(self.request_body(req))

        async def attempt() -> ChatResult:
            return await self._attempt(req, payload, on_token)

        return attempt

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
