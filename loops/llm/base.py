"""The provider-neutral face of the LLM clients: request, result, health, error, protocol.

Errors
------
Every failure of a provider call is raised as one exception type (code ``llm_error``, under
``ledger.errors.HeartbeatError``)::

    LLMError            .reason   a stable code (see ``ErrorReason``)
                        .message  a sentence naming the server address
                        .retryable whether the retry policy may try again
                        .status   the LLM server's HTTP status, when there was one
                        .attempts how many attempts were made (set by the retry loop)

Callers match on ``.reason``, never on the text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

import msgspec

from ledger.errors import HeartbeatError

__all__ = [
    "ChatRequest",
    "ChatResult",
    "ErrorReason",
    "Health",
    "LLMError",
    "LLMProvider",
    "TokenSink",
]

ErrorReason = Literal[
    "unreachable",  # could not connect
    "model_missing",  # HTTP 404: the model is not there
    "busy",  # HTTP 503 / 429: queue full or model loading
    "bad_request",  # HTTP 400 / 422 (and other 4xx): the request itself is wrong
    "auth",  # HTTP 401 / 403
    "server_error",  # other HTTP 5xx
    "stream_error",  # an error object arrived in the middle of a 200 stream
    "truncated",  # the reply stopped early: no done / no finish_reason / incomplete read
    "length",  # the reply hit max_tokens (done_reason / finish_reason "length")
    "timeout",  # idle limit between chunks, or the overall deadline
    "bad_response",  # the server answered with something that is not the protocol
]

TokenSink = Callable[[str], None]
"""Receives each content fragment as it arrives. After a retry the fragments start again."""


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One chat call: the conversation, the reply's JSON Schema and the sampling limits."""

    model: str
    messages: list[dict[str, str]]  # {"role": ..., "content": ...}
    schema: dict[str, Any] | None  # JSON Schema the reply must match (None = free text)
    temperature: float
    max_tokens: int


class ChatResult(msgspec.Struct, frozen=True, kw_only=True):
    """The complete reply text of a call that passed the truncation checklist."""

    text: str
    model: str
    done_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    load_ms: float | None
    total_ms: float | None
    attempts: int


class Health(msgspec.Struct):
    """What a cheap metadata probe learned about a server; never loads a model."""

    provider: str
    base_url: str
    reachable: bool
    version: str | None
    model: str
    model_present: bool | None
    detail: str | None


class LLMError(HeartbeatError, code="llm_error"):
    """The LLM call failed."""

    def __init__(
        self,
        reason: ErrorReason,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.reason: ErrorReason = reason
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.attempts = attempts

    def __repr__(self) -> str:
        return (
            f"LLMError(reason={self.reason!r}, status={self.status!r}, "
            f"retryable={self.retryable!r}, attempts={self.attempts!r}, message={self.message!r})"
        )


class LLMProvider(Protocol):
    """A streaming chat client for one server."""

    name: str  # "ollama" / "openai"
    base_url: str

    async def chat(
        self, req: ChatRequest, *, on_token: TokenSink | None = None, deadline: float | None = None
    ) -> ChatResult:
        """Stream one reply. ``deadline`` is seconds for the whole call, retries included."""
        ...

    async def health(self, model: str) -> Health:
        """Probe liveness and whether ``model`` is available, without generating."""
        ...

    async def aclose(self) -> None:
        """Release the HTTP client if the provider owns it."""
        ...
