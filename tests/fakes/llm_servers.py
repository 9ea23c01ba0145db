"""Scripted fake LLM servers: real HTTP/1.1 on loopback, written by hand.

A framework would not let a test send headers late, stream NDJSON lines with pauses, send half a
chunk and reset the connection, end a body without its last chunk, or hang forever. This server
can, because each reply is a list of small steps run against a raw ``asyncio`` stream::

    async with FakeLLMServer("ollama") as server:          # or: await FakeLLMServer.start(...)
        server.enqueue(ollama_status(503, {"error": "busy"}), ollama_ok())
        provider = OllamaProvider(server.url)
        ...
        assert server.chat_requests[0].body["stream"] is True

Every chat request (``POST /api/chat`` or ``POST …/chat/completions``) takes the next queued
reply, or ``default_reply`` when the queue is empty. ``GET /api/version``, ``/api/tags``,
``/api/ps`` and ``/v1/models`` answer by default; ``set_route`` overrides any path.

The reply builders follow transcripts of the real servers' wire protocols.

From another process (for tests that start ``heartbeat serve`` against it)::

    python -m tests.fakes.llm_servers --protocol ollama --port 0 \\
        --reply-json '{"action":"none","reasoning":"nothing to do"}'

prints ``LISTENING http://127.0.0.1:<port>`` once it accepts connections and serves until
SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http
import json
import math
import signal
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

__all__ = [
    "DECISION_TEXT",
    "FRAGMENTS",
    "Abort",
    "Close",
    "EndBody",
    "FakeLLMServer",
    "Hang",
    "Head",
    "Pause",
    "RawBytes",
    "ReceivedRequest",
    "Reply",
    "ReplySource",
    "Send",
    "fragments_of",
    "json_reply",
    "llama_cpp_python_server",
    "ollama_busy",
    "ollama_cold_load",
    "ollama_garbage",
    "ollama_hang",
    "ollama_length_cap",
    "ollama_midstream_error",
    "ollama_not_found",
    "ollama_ok",
    "ollama_partial_then_reset",
    "ollama_status",
    "ollama_thinking",
    "ollama_thinking_unsupported",
    "ollama_truncated",
    "ollama_warmup",
    "openai_bad_response_format",
    "openai_context_overflow",
    "openai_detail_error",
    "openai_hang",
    "openai_interrupted",
    "openai_json_schema_unsupported",
    "openai_length_cap",
    "openai_loading",
    "openai_midstream_error",
    "openai_model_missing",
    "openai_ok",
    "openai_status",
    "openai_truncated",
    "openai_vllm_error",
]

ProtocolName = Literal["ollama", "openai"]

#: The content fragments of a decision reply and their concatenation.
FRAGMENTS: tuple[str, ...] = (
    '{"action":"',
    "none",
    '","reasoning":"',
    "Queue depth is below the alert threshold.",
    '"}',
)
DECISION_TEXT = "".join(FRAGMENTS)

#: The metrics of an Ollama final chunk (nanoseconds).
OLLAMA_METRICS: dict[str, int] = {
    "total_duration": 1432000000,
    "load_duration": 9800000,
    "prompt_eval_count": 96,
    "prompt_eval_duration": 180000000,
    "eval_count": 14,
    "eval_duration": 1210000000,
}

PING = b": ping - 2025-06-01 12:00:15.000000+00:00\n\n"


class ReceivedRequest(NamedTuple):
    """One request as the server read it; unpacks as (method, path, headers, body)."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, or None when empty / not JSON


# --------------------------------------------------------------------------------------------
# Steps


class _ConnectionDone(Exception):
    """The script ended the connection."""


class _Conn:
    def __init__(
        self, writer: asyncio.StreamWriter, stopping: asyncio.Event, head_only: bool
    ) -> None:
        self.writer = writer
        self.stopping = stopping
        self.head_only = head_only
        self.chunked = False
        self.remaining: int | None = None
        self.complete = False

    async def write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise _ConnectionDone
        self.writer.write(data)
        await self.writer.drain()


@dataclass(frozen=True)
class Pause:
    """Sleep (before the headers this is a slow model load; between lines, a slow token)."""

    seconds: float

    async def run(self, conn: _Conn) -> None:
        await asyncio.sleep(self.seconds)


@dataclass(frozen=True)
class Head:
    """Status line and headers; chunked unless ``content_length`` is given."""

    status: int
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()
    content_length: int | None = None

    async def run(self, conn: _Conn) -> None:
        try:
            phrase = http.HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [f"HTTP/1.1 {self.status} {phrase}", f"Content-Type: {self.content_type}"]
        if self.content_length is None:
            lines.append("Transfer-Encoding: chunked")
            conn.chunked = True
        else:
            lines.append(f"Content-Length: {self.content_length}")
            conn.remaining = self.content_length
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        await conn.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if conn.head_only or conn.remaining == 0:
            conn.complete = True


@dataclass(frozen=True)
class Send:
    """Body bytes: one chunk when chunked, else raw bytes counted against Content-Length."""

    data: bytes

    async def run(self, conn: _Conn) -> None:
        if conn.head_only:
            return
        if conn.chunked:
            if self.data:  # an empty chunk would end the body
                await conn.write(b"%x\r\n%s\r\n" % (len(self.data), self.data))
            return
        await conn.write(self.data)
        if conn.remaining is not None:
            conn.remaining -= len(self.data)
            conn.complete = conn.remaining <= 0


@dataclass(frozen=True)
class RawBytes:
    """Bytes written as they are, without chunk framing (e.g. half a chunk)."""

    data: bytes

    async def run(self, conn: _Conn) -> None:
        await conn.write(self.data)


@dataclass(frozen=True)
class EndBody:
    """The terminating zero-length chunk: the body ends cleanly, the connection stays open."""

    async def run(self, conn: _Conn) -> None:
        if conn.chunked and not conn.head_only:
            await conn.write(b"0\r\n\r\n")
        conn.complete = True


@dataclass(frozen=True)
class Close:
    """Close the connection (FIN) where the script is, e.g. without the final chunk."""

    async def run(self, conn: _Conn) -> None:
        conn.writer.close()
        raise _ConnectionDone


@dataclass(frozen=True)
class Abort:
    """Reset the connection (RST, SO_LINGER 0): unread data is lost, the peer sees ECONNRESET."""

    async def run(self, conn: _Conn) -> None:
        sock = conn.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.writer.transport.abort()
        raise _ConnectionDone


@dataclass(frozen=True)
class Hang:
    """Send nothing more until the server stops."""

    async def run(self, conn: _Conn) -> None:
        await conn.stopping.wait()
        raise _ConnectionDone


Step = Pause | Head | Send | RawBytes | EndBody | Close | Abort | Hang


@dataclass(frozen=True)
class Reply:
    """A scripted response: steps run in order on the connection."""

    steps: tuple[Step, ...]
    label: str = ""


ReplySource = Reply | Callable[[ReceivedRequest], Reply]


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def json_reply(
    status: int,
    body: Mapping[str, Any] | Sequence[Any] | str | bytes,
    *,
    headers: Sequence[tuple[str, str]] = (),
    content_type: str | None = None,
    label: str = "",
) -> Reply:
    """A complete, Content-Length framed response (JSON unless ``body`` is str/bytes)."""
    if isinstance(body, bytes):
        data, default_type = body, "application/octet-stream"
    elif isinstance(body, str):
        data, default_type = body.encode(), "text/plain; charset=utf-8"
    else:
        data, default_type = _compact(body), "application/json; charset=utf-8"
    head = Head(status, content_type or default_type, tuple(headers), content_length=len(data))
    return Reply((head, Send(data)), label=label or f"HTTP {status}")


def fragments_of(content: Sequence[str] | Mapping[str, Any] | str) -> list[str]:
    """Content fragments: a sequence as given; a str whole; a decision dict as compact JSON cut
    into about five pieces (so the client must assemble them)."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, Mapping):
        text = _compact(dict(content)).decode()
        size = max(1, math.ceil(len(text) / 5))
        return [text[i : i + size] for i in range(0, len(text), size)]
    return list(content)


# --------------------------------------------------------------------------------------------
# Ollama replies


def _created_at(i: int) -> str:
    return f"2025-06-01T12:00:00.{i * 11:03d}000123Z"


def _ollama_line(i: int, content: str, *, model: str, done: bool = False, **extra: Any) -> Send:
    chunk: dict[str, Any] = {
        "model": model,
        "created_at": _created_at(i),
        "message": {"role": "assistant", "content": content, **extra.pop("message_extra", {})},
        "done": done,
    }
    chunk.update(extra)
    return Send(_compact(chunk) + b"\n")


def _ndjson_head(headers: Sequence[tuple[str, str]] = ()) -> Head:
    return Head(200, "application/x-ndjson", tuple(headers))


def ollama_ok(
    content: Sequence[str] | Mapping[str, Any] | str = FRAGMENTS,
    *,
    model: str = "llama3.2",
    final_content: str = "",
    done_reason: str | None = "stop",
    metrics: Mapping[str, Any] | bool = True,
    delay: float = 0.0,
    pause: float = 0.0,
    thinking: Sequence[str] = (),
    label: str = "ollama ok",
) -> Reply:
    """A streamed chat success: content lines, then ``done: true`` with metrics."""
    steps: list[Step] = []
    if delay:
        steps.append(Pause(delay))
    steps.append(_ndjson_head())
    i = 0
    for thought in thinking:
        steps.append(_ollama_line(i, "", model=model, message_extra={"thinking": thought}))
        i += 1
    for fragment in fragments_of(content):
        if pause:
            steps.append(Pause(pause))
        steps.append(_ollama_line(i, fragment, model=model))
        i += 1
    final: dict[str, Any] = {}
    if done_reason is not None:
        final["done_reason"] = done_reason
    if metrics is True:
        final.update(OLLAMA_METRICS)
    elif isinstance(metrics, Mapping):
        final.update(metrics)
    steps.append(_ollama_line(i, final_content, model=model, done=True, **final))
    steps.append(EndBody())
    return Reply(tuple(steps), label=label)


def ollama_status(
    status: int,
    body: Mapping[str, Any] | str | bytes,
    *,
    headers: Sequence[tuple[str, str]] = (),
) -> Reply:
    """An error before the body, e.g. ``ollama_status(404, {"error": "model 'm' not found"})``."""
    return json_reply(status, body, headers=headers)


def ollama_not_found(model: str = "llama3.2", *, legacy: bool = False) -> Reply:
    message = (
        f'model "{model}" not found, try pulling it first'
        if legacy
        else f"model '{model}' not found"
    )
    return ollama_status(404, {"error": message})


def ollama_busy(*, retry_after: str | None = None) -> Reply:
    headers = (("Retry-After", retry_after),) if retry_after is not None else ()
    return ollama_status(
        503,
        {"error": "server busy, please try again.  maximum pending requests exceeded"},
        headers=headers,
    )


def ollama_thinking_unsupported(model: str = "llama3.2") -> Reply:
    return ollama_status(400, {"error": f'"{model}" does not support thinking'})


def ollama_midstream_error(
    message: str = "an error was encountered while running the model", *, model: str = "llama3.2"
) -> Reply:
    """200, the first two lines of a success, an ``{"error": …}`` line, then the body ends."""
    return Reply(
        (
            _ndjson_head(),
            _ollama_line(0, FRAGMENTS[0], model=model),
            _ollama_line(1, FRAGMENTS[1], model=model),
            Send(_compact({"error": message}) + b"\n"),
            EndBody(),
        ),
        label="ollama mid-stream error",
    )


def ollama_truncated(*, clean: bool = True, model: str = "llama3.2") -> Reply:
    """The first three lines of a success and no ``done`` line.

    ``clean=True`` ends the chunked body properly (EOF without done); ``clean=False`` closes the
    connection without the final chunk (an incomplete chunked read).
    """
    return Reply(
        (
            _ndjson_head(),
            *(_ollama_line(i, FRAGMENTS[i], model=model) for i in range(3)),
            EndBody() if clean else Close(),
        ),
        label="ollama truncated",
    )


def ollama_partial_then_reset(*, model: str = "llama3.2") -> Reply:
    """Two lines, then half of a chunk holding a third line, then a connection reset."""
    third = _compact(
        {
            "model": model,
            "created_at": _created_at(2),
            "message": {"role": "assistant", "content": FRAGMENTS[2]},
            "done": False,
        }
    )
    return Reply(
        (
            _ndjson_head(),
            _ollama_line(0, FRAGMENTS[0], model=model),
            _ollama_line(1, FRAGMENTS[1], model=model),
            RawBytes(b"%x\r\n" % (len(third) + 1) + third[: len(third) // 2]),
            Pause(0.05),
            Abort(),
        ),
        label="ollama partial then reset",
    )


def ollama_length_cap(*, model: str = "llama3.2") -> Reply:
    """Three lines, ``"Queue depth is"``, then ``done_reason: "length"``."""
    metrics = dict(OLLAMA_METRICS, eval_count=6)
    return Reply(
        (
            _ndjson_head(),
            *(_ollama_line(i, FRAGMENTS[i], model=model) for i in range(3)),
            _ollama_line(3, "Queue depth is", model=model),
            _ollama_line(4, "", model=model, done=True, done_reason="length", **metrics),
            EndBody(),
        ),
        label="ollama length cap",
    )


def ollama_cold_load(
    delay_s: float,
    content: Sequence[str] | Mapping[str, Any] | str = FRAGMENTS,
    *,
    model: str = "llama3.2",
) -> Reply:
    """Nothing at all for ``delay_s`` seconds (model loading), then a success whose
    ``load_duration`` is about ``delay_s * 1e9``."""
    load = int(delay_s * 1e9)
    metrics = dict(OLLAMA_METRICS, load_duration=load, total_duration=load + 1_400_000_000)
    return ollama_ok(content, model=model, delay=delay_s, metrics=metrics, label="cold load")


def ollama_thinking(
    thinking: Sequence[str] = ("Checking threshold…", " 3 is below 50, nothing to do."),
    content: Sequence[str] | Mapping[str, Any] | str = FRAGMENTS,
    *,
    model: str = "llama3.2",
) -> Reply:
    """A thinking model: ``message.thinking`` fragments first, then the content lines."""
    return ollama_ok(content, model=model, thinking=thinking, label="thinking model")


def ollama_warmup(*, model: str = "llama3.2") -> Reply:
    return Reply(
        (
            _ndjson_head(),
            _ollama_line(0, "", model=model, done=True, done_reason="load"),
            EndBody(),
        ),
        label="warm-up",
    )


def ollama_hang(*, after_lines: int = 0, model: str = "llama3.2") -> Reply:
    """Hang forever: before the headers (default), or after ``after_lines`` content lines."""
    if after_lines <= 0:
        return Reply((Hang(),), label="hang before headers")
    lines = (
        _ollama_line(i, FRAGMENTS[i % len(FRAGMENTS)], model=model) for i in range(after_lines)
    )
    return Reply((_ndjson_head(), *lines, Hang()), label="hang mid-stream")


def ollama_garbage() -> Reply:
    """A 200 whose body is not NDJSON (say, a proxy's HTML page)."""
    return Reply(
        (_ndjson_head(), Send(b"<html><body>502 Bad Gateway</body></html>\n"), EndBody()),
        label="garbage",
    )


# --------------------------------------------------------------------------------------------
# OpenAI-compatible replies


def _sse(obj: Any) -> Send:
    return Send(b"data: " + _compact(obj) + b"\n\n")


def _openai_chunk(
    delta: Mapping[str, Any], finish_reason: str | None = None, *, model: str = "llama3.2"
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-7f3a",
        "object": "chat.completion.chunk",
        "created": 1748779200,
        "model": model,
        "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish_reason}],
    }


def _content_events(fragments: Sequence[str], *, model: str, role: bool = True) -> list[Send]:
    events = []
    for i, fragment in enumerate(fragments):
        delta: dict[str, Any] = {"content": fragment}
        if i == 0 and role:
            delta = {"role": "assistant", **delta}
        events.append(_sse(_openai_chunk(delta, model=model)))
    return events


def _usage_event(prompt: int = 96, completion: int = 14, *, model: str = "llama3.2") -> Send:
    chunk = _openai_chunk({}, model=model)
    chunk["choices"] = []
    chunk["usage"] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    return _sse(chunk)


def _sse_head() -> Head:
    return Head(200, "text/event-stream; charset=utf-8", (("Cache-Control", "no-cache"),))


DONE = Send(b"data: [DONE]\n\n")


def openai_ok(
    content: Sequence[str] | Mapping[str, Any] | str = FRAGMENTS,
    *,
    model: str = "llama3.2",
    pings: bool = True,
    usage: bool = True,
    finish_on_last_content: bool = False,
    reasoning: Sequence[str] = (),
    delay: float = 0.0,
    pause: float = 0.0,
    label: str = "openai ok",
) -> Reply:
    """A streamed success: role delta, content deltas, ``: ping`` comments, a finish chunk
    with ``delta: {}`` (or ``finish_reason`` on the last content chunk), the ``choices: []``
    usage chunk and ``data: [DONE]``."""
    fragments = fragments_of(content)
    steps: list[Step] = []
    if delay:
        steps.append(Pause(delay))
    steps.append(_sse_head())
    if pings:
        steps.append(Send(PING))
    for thought in reasoning:
        steps.append(_sse(_openai_chunk({"reasoning_content": thought}, model=model)))
    for i, fragment in enumerate(fragments):
        last = i == len(fragments) - 1
        delta: dict[str, Any] = {"content": fragment}
        if i == 0:
            delta = {"role": "assistant", **delta}
        finish = "stop" if last and finish_on_last_content else None
        if pause:
            steps.append(Pause(pause))
        steps.append(_sse(_openai_chunk(delta, finish, model=model)))
        if pings and i == len(fragments) // 2:
            steps.append(Send(PING))
    if not finish_on_last_content:
        steps.append(_sse(_openai_chunk({}, "stop", model=model)))
    if usage:
        steps.append(_usage_event(model=model))
    steps += [DONE, EndBody()]
    return Reply(tuple(steps), label=label)


def openai_status(
    status: int,
    body: Mapping[str, Any] | str | bytes,
    *,
    headers: Sequence[tuple[str, str]] = (),
) -> Reply:
    return json_reply(status, body, headers=headers)


def openai_model_missing(model: str = "llama3.2") -> Reply:
    """Ollama ``/v1``: 404 in the OpenAI error shape."""
    return openai_status(
        404,
        {
            "error": {
                "message": f"model '{model}' not found",
                "type": "not_found_error",
                "param": None,
                "code": None,
            }
        },
    )


def openai_loading(*, retry_after: str | None = None) -> Reply:
    """llama.cpp while the model loads: 503 ``Loading model``."""
    headers = (("Retry-After", retry_after),) if retry_after is not None else ()
    return openai_status(
        503,
        {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}},
        headers=headers,
    )


def openai_bad_response_format(*, legacy: bool = False) -> Reply:
    """llama.cpp rejecting an unknown ``response_format`` type: 400 (older builds: 500)."""
    message = 'response_format type must be one of "text" or "json_object", but got: xml'
    if legacy:
        return openai_status(
            500, {"error": {"code": 500, "message": message, "type": "server_error"}}
        )
    return openai_status(
        400, {"error": {"code": 400, "message": message, "type": "invalid_request_error"}}
    )


_LLAMA_CPP_APP = '"/srv/venv/lib/python3.11/site-packages/llama_cpp/server/app.py"'


def openai_json_schema_unsupported(given: str = "json_schema") -> Reply:
    """llama-cpp-python's server refusing a ``response_format`` type other than ``text`` or
    ``json_object``: the request model's validation error, which its route handler wraps, like
    every exception, as HTTP 500 ``internal_server_error`` with ``str(error)`` as the message
    (FastAPI's text, ending with where the endpoint is; only that file's path is made up)."""
    error = {
        "type": "literal_error",
        "loc": ("body", "response_format", "type"),
        "msg": "Input should be 'text' or 'json_object'",
        "input": given,
        "ctx": {"expected": "'text' or 'json_object'"},
    }
    return openai_status(
        500,
        {
            "error": {
                "message": f"1 validation error:\n  {error}\n\n  File {_LLAMA_CPP_APP}, "
                "line 376, in create_chat_completion\n    POST /v1/chat/completions",
                "type": "internal_server_error",
                "param": None,
                "code": None,
            }
        },
    )


def llama_cpp_python_server(
    ok: ReplySource | None = None,
) -> Callable[[ReceivedRequest], Reply]:
    """A reply source that answers like llama-cpp-python's server: a ``response_format`` of any
    type but ``text`` or ``json_object`` gets ``openai_json_schema_unsupported``; any other chat
    request gets ``ok`` (default ``openai_ok()``). Use it as a server's ``default_reply``."""

    def reply(request: ReceivedRequest) -> Reply:
        body = request.body if isinstance(request.body, dict) else {}
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") not in ("text", "json_object"):
            return openai_json_schema_unsupported(str(fmt.get("type")))
        source = ok or openai_ok()
        return source(request) if callable(source) else source

    return reply


def openai_context_overflow() -> Reply:
    """llama-cpp-python: 400 ``context_length_exceeded``."""
    return openai_status(
        400,
        {
            "error": {
                "message": "This model's maximum context length is 4096 tokens. However, you "
                "requested 5000 tokens (4744 in the messages, 256 in the completion).",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
    )


def openai_detail_error(status: int = 401, detail: str = "Invalid API key") -> Reply:
    """llama-cpp-python's FastAPI ``HTTPException`` shape: ``{"detail": "…"}``."""
    return openai_status(status, {"detail": detail})


def openai_vllm_error(
    status: int = 400, message: str = "The model `nope` does not exist.", *, midstream: bool = False
) -> Reply:
    """Older vLLM's flat error object, before the body or as an event mid-stream."""
    flat = {
        "object": "error",
        "message": message,
        "type": "BadRequestError",
        "param": None,
        "code": status,
    }
    if not midstream:
        return openai_status(status, flat)
    return Reply(
        (_sse_head(), *_content_events(FRAGMENTS[:2], model="llama3.2"), _sse(flat), EndBody()),
        label="vllm mid-stream error",
    )


def openai_midstream_error(
    message: str = "the model crashed while generating", *, model: str = "llama3.2"
) -> Reply:
    """llama.cpp: two content events, ``data: {"error": …}``, then the end without [DONE]."""
    error = {"error": {"code": 500, "message": message, "type": "server_error"}}
    return Reply(
        (_sse_head(), *_content_events(FRAGMENTS[:2], model=model), _sse(error), EndBody()),
        label="openai mid-stream error",
    )


def openai_interrupted(*, model: str = "llama3.2") -> Reply:
    """llama-cpp-python interrupted by a newer request: two content events (a ping between),
    then ``data: [DONE]`` with no ``finish_reason`` ever seen."""
    first, second = _content_events(FRAGMENTS[:2], model=model)
    return Reply(
        (_sse_head(), first, Send(PING), second, DONE, EndBody()), label="openai interrupted"
    )


def openai_length_cap(*, model: str = "llama3.2") -> Reply:
    """Partial JSON, then a finish chunk with ``finish_reason: "length"``."""
    return Reply(
        (
            _sse_head(),
            *_content_events([*FRAGMENTS[:3], "Queue depth is"], model=model),
            _sse(_openai_chunk({}, "length", model=model)),
            _usage_event(96, 6, model=model),
            DONE,
            EndBody(),
        ),
        label="openai length cap",
    )


def openai_truncated(*, clean: bool = True, model: str = "llama3.2") -> Reply:
    """Three content events, then the end: no finish chunk and no [DONE]. ``clean=False`` closes
    the connection without the final chunk."""
    return Reply(
        (
            _sse_head(),
            *_content_events(FRAGMENTS[:3], model=model),
            EndBody() if clean else Close(),
        ),
        label="openai truncated",
    )


def openai_hang(*, after_events: int = 0, model: str = "llama3.2") -> Reply:
    if after_events <= 0:
        return Reply((Hang(),), label="hang before headers")
    events = _content_events(
        [FRAGMENTS[i % len(FRAGMENTS)] for i in range(after_events)], model=model
    )
    return Reply((_sse_head(), *events, Hang()), label="hang mid-stream")


# --------------------------------------------------------------------------------------------
# The server


class FakeLLMServer:
    """A scripted Ollama or OpenAI-compatible server on 127.0.0.1 (an async context manager)."""

    def __init__(
        self,
        protocol: ProtocolName,
        *,
        model: str = "llama3.2:latest",
        models: Sequence[str] | None = None,
        version: str = "0.9.0",
        default_reply: ReplySource | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if protocol not in ("ollama", "openai"):
            raise ValueError(f"protocol must be 'ollama' or 'openai', got {protocol!r}")
        self.protocol: ProtocolName = protocol
        self.model = model
        self.models: list[str] = list(models) if models is not None else [model]
        self.version = version
        self.default_reply: ReplySource = default_reply or (
            ollama_ok() if protocol == "ollama" else openai_ok()
        )
        self.requests: list[ReceivedRequest] = []
        self.routes: dict[tuple[str, str], ReplySource] = {}
        self.connections = 0
        self._host = host
        self._port = port
        self._queue: deque[ReplySource] = deque()
        self._server: asyncio.Server | None = None
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    async def start(
        cls,
        protocol: ProtocolName,
        *,
        model: str = "llama3.2:latest",
        **kwargs: Any,
    ) -> FakeLLMServer:
        server = cls(protocol, model=model, **kwargs)
        await server._listen()
        return server

    async def __aenter__(self) -> FakeLLMServer:
        if self._server is None:
            await self._listen()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake server is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (an Ollama base URL)."""
        return f"http://{self._host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The base URL a client is configured with: ``url`` for Ollama, ``url/v1`` for OpenAI."""
        return self.url if self.protocol == "ollama" else f"{self.url}/v1"

    @property
    def chat_requests(self) -> list[ReceivedRequest]:
        return [r for r in self.requests if self._is_chat(r)]

    def enqueue(self, *replies: ReplySource) -> None:
        """Each chat request consumes the next reply; a callable gets the request first."""
        self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """Queued replies not consumed yet."""
        return len(self._queue)

    def set_route(self, method: str, path: str, reply: ReplySource) -> None:
        """Answer ``method path`` with ``reply`` every time (overrides built-ins and chat)."""
        self.routes[(method.upper(), path)] = reply

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self._listen()
        await self._stopping.wait()

    async def aclose(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    # -- request handling ----------------------------------------------------------------

    def _is_chat(self, request: ReceivedRequest) -> bool:
        if request.method != "POST":
            return False
        if self.protocol == "ollama":
            return request.path in ("/api/chat", "/api/generate")
        return request.path.endswith("/chat/completions")

    def _pick(self, request: ReceivedRequest) -> Reply:
        source: ReplySource
        route = self.routes.get((request.method, request.path))
        if route is None and request.method == "HEAD":
            route = self.routes.get(("GET", request.path))
        if route is not None:
            source = route
        elif self._is_chat(request):
            source = self._queue.popleft() if self._queue else self.default_reply
        else:
            source = self._builtin(request)
        return source(request) if callable(source) else source

    def _builtin(self, request: ReceivedRequest) -> Reply:
        if request.method not in ("GET", "HEAD"):
            return json_reply(405, {"error": "method not allowed"})
        if self.protocol == "ollama":
            if request.path == "/api/version":
                return json_reply(200, {"version": self.version})
            if request.path == "/api/tags":
                return json_reply(200, {"models": [_tag(name) for name in self.models]})
            if request.path == "/api/ps":
                return json_reply(200, {"models": []})
            if request.path == "/":
                return json_reply(200, "Ollama is running")
        elif request.path in ("/v1/models", "/models"):
            data = [
                {"id": name, "object": "model", "created": 1748779200, "owned_by": "fake"}
                for name in self.models
            ]
            return json_reply(200, {"object": "list", "data": data})
        return json_reply(404, "404 page not found")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.connections += 1
        try:
            while not self._stopping.is_set():
                request = await _read_request(reader)
                if request is None:
                    break
                self.requests.append(request)
                reply = self._pick(request)
                conn = _Conn(writer, self._stopping, head_only=request.method == "HEAD")
                try:
                    for step in reply.steps:
                        await step.run(conn)
                except _ConnectionDone:
                    break
                if not conn.complete or request.headers.get("connection", "") == "close":
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)


def _tag(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-05-04T17:37:44Z",
        "size": 2019393189,
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "details": {
            "format": "gguf",
            "family": "llama",
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        },
    }


async def _read_request(reader: asyncio.StreamReader) -> ReceivedRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _ = request_line.split(" ", 2)
    except ValueError:
        return None
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    try:
        if "content-length" in headers:
            raw = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            raw = await _read_chunked(reader)
        else:
            raw = b""
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        return None
    body: Any = None
    if raw:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
    return ReceivedRequest(method.upper(), target.split("?", 1)[0], headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    data = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(data)
        data += await reader.readexactly(size)
        await reader.readexactly(2)


# --------------------------------------------------------------------------------------------
# Command line


DEFAULT_DECISION: dict[str, Any] = {"action": "none", "reasoning": "fake server default reply"}


def _echo_reply(
    protocol: ProtocolName, decision: Mapping[str, Any], delay: float
) -> Callable[[ReceivedRequest], Reply]:
    def reply(request: ReceivedRequest) -> Reply:
        body = request.body if isinstance(request.body, dict) else {}
        model = str(body.get("model") or "llama3.2")
        if protocol == "ollama":
            return ollama_ok(decision, model=model, delay=delay)
        return openai_ok(decision, model=model, delay=delay)

    return reply


async def _serve(args: argparse.Namespace, decision: Mapping[str, Any]) -> None:
    server = FakeLLMServer(
        args.protocol,
        model=args.model,
        version=args.ollama_version,
        default_reply=_echo_reply(args.protocol, decision, args.delay),
        host=args.host,
        port=args.port,
    )
    async with server:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, server._stopping.set)
        print(f"LISTENING {server.url}", flush=True)
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.llm_servers",
        description="Serve a fake Ollama or OpenAI-compatible LLM that always replies with one "
        "decision.",
    )
    parser.add_argument("--protocol", choices=("ollama", "openai"), default="ollama")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--model", default="llama3.2:latest", help="the model the server lists")
    parser.add_argument(
        "--reply-json",
        default=json.dumps(DEFAULT_DECISION),
        help="the JSON object every chat reply streams as its content",
    )
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds before each chat reply's headers"
    )
    parser.add_argument("--ollama-version", default="0.9.0", help="what /api/version reports")
    args = parser.parse_args(argv)
    try:
        decision = json.loads(args.reply_json)
    except ValueError as exc:
        parser.error(f"--reply-json is not JSON: {exc}")
    if not isinstance(decision, dict):
        parser.error("--reply-json must be a JSON object")
    try:
        asyncio.run(_serve(args, decision))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
