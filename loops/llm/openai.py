"""OpenAI-compatible streaming chat completions.

``POST {base}/chat/completions`` with ``stream: true`` answers Server-Sent Events: ``data: <json>``
events separated by blank lines, ``:`` comment lines (pings), a usage chunk with ``choices: []``
and a final ``data: [DONE]``. The call succeeded only if no error payload arrived, a
``finish_reason`` of ``stop`` was seen and ``[DONE]`` arrived.

Works with Ollama's ``/v1``, llama.cpp's server, llama-cpp-python's server, vLLM and LM Studio.

Structured output (``response_format``) comes in three forms, and servers differ in which they
accept:

* ``json_schema``: OpenAI's ``{"type": "json_schema", "json_schema": {"name", "strict",
  "schema"}}`` (OpenAI, Ollama, llama.cpp, vLLM, LM Studio);
* ``json_object``: ``{"type": "json_object", "schema": …}`` (llama-cpp-python, whose server
  answers the first form with HTTP 500 "Input should be 'text' or 'json_object'"; llama.cpp);
* ``none``: no ``response_format`` at all; the prompt carries the schema and the caller
  validates the reply anyway.

With ``schema_form="auto"`` (the default) the provider tries them in that order, moving on only
when the server rejects the request in words that name the form (``names_schema_form``), and
remembers the first form that worked for the rest of its life. A provider talks to one base URL,
so what it learns is per server. Any other value forces that one form.

The schema goes out without its long ``maxLength`` bounds (``grammar_schema``): these servers
compile it into a llama.cpp grammar, whose parser refuses a repetition of thousands (a post's
content may be 5000 characters), and llama-cpp-python's server dies of it mid-request. The reply
is validated, and over-long text truncated, after it arrives.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Unpack

import httpx
import msgspec

from ._http import (
    HEALTH_TIMEOUT,
    HTTPOptions,
    HTTPProvider,
    decode_chunk,
    error_text,
    payload_error_text,
    snippet,
    status_error,
    stream_error,
)
from .base import ChatRequest, ChatResult, Health, LLMError, TokenSink
from .embedded import grammar_schema
from .ollama import normalize_model_name
from .retry import close_lines, drain_lines, next_line

__all__ = [
    "SCHEMA_FORMS",
    "OpenAIProvider",
    "SchemaForm",
    "names_schema_form",
    "normalize_openai_base_url",
    "parse_schema_form",
]

log = logging.getLogger(f"heartbeat.{__name__}")

SchemaForm = Literal["auto", "json_schema", "json_object", "none"]
SCHEMA_FORMS: tuple[SchemaForm, ...] = ("auto", "json_schema", "json_object", "none")
#: The order ``auto`` tries the forms in: the most precise first, no constraint last.
_AUTO_ORDER: tuple[SchemaForm, ...] = ("json_schema", "json_object", "none")
#: Statuses with which servers reject a request body they cannot read: 400 (llama.cpp), 422
#: (FastAPI validation), 500 (llama-cpp-python wraps its validation error; older llama.cpp).
_FORM_REJECTION_STATUSES = (400, 422, 500)
#: Words that only an objection to the ``response_format`` field contains.
_FORM_WORDS = ("response_format", "json_schema", "json_object")
_SCHEMA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def normalize_openai_base_url(value: str) -> str:
    """``http://h:8080``, ``http://h:8080/``, ``h:8080/v1`` → ``http://h:8080/v1``."""
    raw = value.strip()
    if not raw:
        raise ValueError(
            "the OpenAI-compatible base URL is empty; expected e.g. http://127.0.0.1:8080/v1"
        )
    if "://" not in raw:
        raw = f"http://{raw}"
    base = raw.split("#", 1)[0].split("?", 1)[0].rstrip("/")
    base = base.removesuffix("/chat/completions")
    if not base.endswith("/v1"):
        base = f"{base}/v1"
    try:
        url = httpx.URL(base)
    except httpx.InvalidURL as exc:
        raise ValueError(f"invalid OpenAI-compatible base URL {value!r}: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(
            f"the OpenAI-compatible base URL must be http(s)://host[:port][/v1], got {value!r}"
        )
    return base


def parse_schema_form(value: str) -> SchemaForm:
    """``auto`` (also for an empty value), ``json_schema``, ``json_object`` or ``none``."""
    wanted = value.strip().lower() or "auto"
    for form in SCHEMA_FORMS:
        if form == wanted:
            return form
    raise ValueError(f"must be one of {', '.join(SCHEMA_FORMS)}, got {value!r}")


def names_schema_form(status: int, body: bytes) -> bool:
    """Whether an error answer rejects the ``response_format`` form rather than anything else:
    a 400, 422 or 500 whose body names the field or one of its types (e.g. llama-cpp-python's
    500 ``Input should be 'text' or 'json_object'`` at ``('body', 'response_format', 'type')``).
    An error that names none of them (a crash, an overflow, a missing model) is not one."""
    if status not in _FORM_REJECTION_STATUSES:
        return False
    text = body.decode("utf-8", "replace").lower()
    return any(word in text for word in _FORM_WORDS)


def response_format(schema: dict[str, Any], form: SchemaForm) -> dict[str, Any] | None:
    """The ``response_format`` for ``schema`` in ``form`` (None for ``none``)."""
    if form == "none":
        return None
    if form == "json_object":
        return {"type": "json_object", "schema": schema}
    title = schema.get("title")
    name = title if isinstance(title, str) and _SCHEMA_NAME.fullmatch(title) else "response"
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


class _FormRejected(LLMError):
    """The server rejected the request's ``response_format`` form; the message quotes it.
    Raised only while the form is negotiated, and caught there: the next form is tried."""


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _Timings(msgspec.Struct):
    prompt_ms: float | None = None
    predicted_ms: float | None = None


class _Chunk(msgspec.Struct):
    model: str | None = None
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    timings: _Timings | None = None
    error: Any = None
    object: str | None = None


class _Model(msgspec.Struct):
    id: str


class _Models(msgspec.Struct):
    data: list[_Model]


_chunk_decoder = msgspec.json.Decoder(_Chunk)
_models_decoder = msgspec.json.Decoder(_Models)


@dataclass
class _StreamState:
    parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    done: bool = False
    model: str | None = None
    usage: _Usage | None = None
    timings: _Timings | None = None
    events: int = 0


class OpenAIProvider(HTTPProvider):
    """Streams ``POST {base}/chat/completions`` from one OpenAI-compatible server."""

    name: str = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        schema_form: SchemaForm = "auto",
        **options: Unpack[HTTPOptions],
    ) -> None:
        if schema_form not in SCHEMA_FORMS:
            raise ValueError(
                f"schema_form must be one of {', '.join(SCHEMA_FORMS)}, got {schema_form!r}"
            )
        self.base_url = normalize_openai_base_url(base_url)
        self.schema_form: SchemaForm = schema_form
        # auto: the index in _AUTO_ORDER of the first form this server has not rejected
        self._auto_index = 0
        self._announced: SchemaForm | None = None
        super().__init__(**options)
        self._api_key = api_key
        log.info("LLM provider openai at %s (response_format %s)", self.base_url, schema_form)

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    @property
    def form_in_use(self) -> SchemaForm:
        """The ``response_format`` form the next structured request is sent with."""
        if self.schema_form != "auto":
            return self.schema_form
        return _AUTO_ORDER[self._auto_index]

    def request_body(self, req: ChatRequest, form: SchemaForm | None = None) -> dict[str, Any]:
        """The JSON body of ``POST /chat/completions`` for ``req``, with ``response_format`` in
        ``form`` (default: ``form_in_use``)."""
        body: dict[str, Any] = {
            "model": req.model,
            "messages": req.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": req.temperature,
            "max_tokens": req.max_tokens,
        }
        if req.schema is not None:
            fmt = response_format(grammar_schema(req.schema), form or self.form_in_use)
            if fmt is not None:
                body["response_format"] = fmt
        return body

    def _attempts(
        self, req: ChatRequest, on_token: TokenSink | None
    ) -> Callable[[], Awaitable[ChatResult]]:
        negotiate = self.schema_form == "auto" and req.schema is not None

        async def attempt() -> ChatResult:
            # A rejected form is not a failed attempt: the next form is sent at once. Each
            # rejection moves form_in_use on, and "none" is never rejected, so this ends.
            while True:
                form = self.form_in_use
                payload = msgspec.json.encode(self.request_body(req, form))
                try:
                    result = await self._attempt(
                        req, payload, on_token, form=form if negotiate else None
                    )
                except _FormRejected as err:
                    self._rejected(form, err)
                    continue
                if negotiate:
                    self._accepted(form)
                return result

        return attempt

    def _rejected(self, form: SchemaForm, err: LLMError) -> None:
        index = _AUTO_ORDER.index(form)
        if self._auto_index <= index:  # a concurrent call may have moved on already
            self._auto_index = index + 1
            log.warning(
                "LLM server at %s rejected response_format %s (%s); trying %s",
                self.base_url,
                form,
                err.message,
                _AUTO_ORDER[self._auto_index],
            )

    def _accepted(self, form: SchemaForm) -> None:
        if self._announced != form:
            self._announced = form
            log.info(
                "LLM server at %s answers with response_format %s; used from now on",
                self.base_url,
                form,
            )

    async def _attempt(
        self,
        req: ChatRequest,
        payload: bytes,
        on_token: TokenSink | None,
        *,
        form: SchemaForm | None = None,
    ) -> ChatResult:
        """One streamed call. ``form``: the automatic form being tried (a rejection of it is
        raised as ``_FormRejected``); None when the form is not negotiated."""
        headers = self._headers("text/event-stream")
        headers["Content-Type"] = "application/json"

        def refused(err: LLMError, body: bytes) -> LLMError:
            if form not in (None, "none") and names_schema_form(err.status or 0, body):
                said = error_text(body) or ""
                return _FormRejected(err.reason, f"HTTP {err.status}: {said}", status=err.status)
            return err

        state = await self._stream(
            "/chat/completions",
            payload,
            headers=headers,
            model=req.model,
            provider="openai",
            read=lambda response: self._read_events(response, on_token),
            refused=refused,
        )
        return self._result(state, req)

    async def _read_events(
        self, response: httpx.Response, on_token: TokenSink | None
    ) -> _StreamState:
        state = _StreamState()
        data: list[str] = []
        lines = response.aiter_lines()
        try:
            while not state.done:
                line = await next_line(lines, idle=self.policy.idle_timeout, base_url=self.base_url)
                if line is None:
                    break
                if line == "":
                    if data:
                        self._handle_event("\n".join(data), state, on_token)
                        data.clear()
                    continue
                if line.startswith(":"):
                    continue  # comment, e.g. sse-starlette's ": ping - <time>"
                name, colon, value = line.partition(":")
                if colon and value.startswith(" "):
                    value = value[1:]
                if name == "data":
                    data.append(value)
            if state.done:
                await drain_lines(lines)
        finally:
            await close_lines(lines)
        if not state.done and "\n".join(data).strip() == "[DONE]":
            state.done = True  # a last event without its blank line
        return state

    def _handle_event(self, data: str, state: _StreamState, on_token: TokenSink | None) -> None:
        state.events += 1
        if data.strip() == "[DONE]":
            state.done = True
            return
        chunk = decode_chunk(
            _chunk_decoder,
            data,
            base_url=self.base_url,
            what=f"event {state.events} is not a chat completion chunk",
        )
        if chunk.error is not None or chunk.object == "error":
            said = payload_error_text(msgspec.json.decode(data)) or snippet(data)
            raise stream_error(self.base_url, said)
        if chunk.model:
            state.model = chunk.model
        if chunk.usage is not None:
            state.usage = chunk.usage
        if chunk.timings is not None:
            state.timings = chunk.timings
        for choice in chunk.choices or ():  # the usage chunk has choices: []
            if choice.index != 0:
                continue
            content = choice.delta.content if choice.delta is not None else None
            if content:
                state.parts.append(content)
                if on_token is not None:
                    on_token(content)
            if choice.finish_reason is not None:
                state.finish_reason = choice.finish_reason

    def _result(self, state: _StreamState, req: ChatRequest) -> ChatResult:
        if state.finish_reason == "length":
            raise LLMError(
                "length",
                f"the reply from {self.base_url} hit the token limit "
                f"(max_tokens={req.max_tokens}) before it was complete "
                "— raise max_tokens or shorten the prompt",
            )
        if not state.done:
            raise LLMError(
                "truncated",
                f"the reply from {self.base_url} ended without data: [DONE] "
                f"(finish_reason {state.finish_reason!r}, {len(state.parts)} fragment(s))",
                retryable=True,
            )
        if state.finish_reason is None:
            raise LLMError(
                "truncated",
                f"the reply from {self.base_url} ended with [DONE] but no finish_reason "
                "— the server interrupted it",
                retryable=True,
            )
        if state.finish_reason != "stop":
            raise LLMError(
                "bad_response",
                f"the reply from {self.base_url} finished with {state.finish_reason!r} "
                "instead of 'stop'",
            )
        total_ms: float | None = None
        if state.timings is not None and state.timings.predicted_ms is not None:
            total_ms = (state.timings.prompt_ms or 0.0) + state.timings.predicted_ms
        usage = state.usage
        return ChatResult(
            text="".join(state.parts),
            model=state.model or req.model,
            done_reason=state.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage is not None else None,
            completion_tokens=usage.completion_tokens if usage is not None else None,
            load_ms=None,
            total_ms=total_ms,
            attempts=1,
        )

    async def health(self, model: str) -> Health:
        """``GET {base}/models``: reachable if it answers 200, model present if listed."""

        def report(reachable: bool, present: bool | None, detail: str | None) -> Health:
            return self._health(model, reachable, present, detail)

        try:
            answer = await self._client.get(
                f"{self.base_url}/models",
                headers=self._headers("application/json"),
                timeout=HEALTH_TIMEOUT,
            )
        except httpx.HTTPError as exc:
            return report(False, None, self._probe_failed(exc))
        if answer.status_code != 200:
            err = status_error(
                answer.status_code,
                answer.content,
                answer.headers,
                base_url=self.base_url,
                model=model,
                provider="openai",
            )
            return report(False, None, f"GET {self.base_url}/models: {err.message}")
        try:
            listed = [m.id for m in _models_decoder.decode(answer.content).data]
        except msgspec.DecodeError as exc:
            return report(
                True, None, f"GET {self.base_url}/models returned an unreadable list ({exc})"
            )
        wanted = normalize_model_name(model)
        present = model in listed or wanted in {normalize_model_name(i) for i in listed}
        detail = None
        if not present:
            shown = ", ".join(listed[:10]) or "none"
            detail = f"model '{model}' is not served by {self.base_url} (listed: {shown})"
        return report(True, present, detail)
