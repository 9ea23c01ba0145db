"""Ollama's native streaming chat API (docs/llm-protocols.md, Ollama /api/chat).

``POST {base}/api/chat`` with ``stream: true`` answers NDJSON: one JSON object per line, content
fragments in ``message.content`` and a final ``done: true`` line carrying ``done_reason`` and the
metrics (durations in nanoseconds). Errors before the body are ``{"error": "…"}`` with a real
status; errors mid-stream are a 200 stream whose last line is ``{"error": "…"}``.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, Unpack

import httpx
import msgspec

from ._http import HEALTH_TIMEOUT, HTTPOptions, HTTPProvider, decode_chunk, snippet, stream_error
from .base import ChatRequest, ChatResult, Health, LLMError, TokenSink
from .retry import close_lines, drain_lines, next_line

__all__ = [
    "DEFAULT_OLLAMA_HOST",
    "OllamaProvider",
    "normalize_model_name",
    "parse_ollama_host",
]

log = logging.getLogger(f"heartbeat.{__name__}")

DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"
_DEFAULT_PORT = 11434
_SCHEME_PORTS = {"http": 80, "https": 443}


def parse_ollama_host(value: str | None) -> str:
    """Resolve an ``OLLAMA_HOST`` value to a base URL the way ollama-python does.

    * None or "" → ``http://127.0.0.1:11434``
    * no scheme → ``http`` and port 11434 (``1.2.3.4`` → ``http://1.2.3.4:11434``)
    * no host → 127.0.0.1 (``:56789`` → ``http://127.0.0.1:56789``)
    * a scheme but no port → 80 for http, 443 for https (the scheme-only trap)
    * a path is kept without its trailing slash; IPv6 addresses must be in brackets.

    Raises ValueError, naming the value, for a bare IPv6 address, an unknown scheme, a bad port
    or embedded credentials.
    """
    raw = (value or "").strip()
    if not raw:
        return DEFAULT_OLLAMA_HOST
    scheme, sep, rest = raw.partition("://")
    if sep:
        scheme = scheme.lower()
        if scheme not in _SCHEME_PORTS:
            raise ValueError(f"OLLAMA_HOST must use http:// or https://, got {value!r}")
        default_port = _SCHEME_PORTS[scheme]
    else:
        scheme, rest, default_port = "http", raw, _DEFAULT_PORT
    for mark in "?#":
        rest = rest.split(mark, 1)[0]
    authority, _, path = rest.partition("/")
    if any(ch.isspace() for ch in authority):
        raise ValueError(f"OLLAMA_HOST must not contain spaces in the host, got {value!r}")
    if "@" in authority:
        raise ValueError(f"OLLAMA_HOST must not contain credentials (user@host), got {value!r}")

    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError(f"OLLAMA_HOST has an unclosed '[' in {value!r}")
        literal = authority[1:end]
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise ValueError(
                f"OLLAMA_HOST brackets must hold an IPv6 address, got {literal!r} in {value!r}"
            ) from None
        host = f"[{literal.lower()}]"
        after = authority[end + 1 :]
        if after and not after.startswith(":"):
            raise ValueError(f"OLLAMA_HOST has text after ']' in {value!r}")
        port_text = after[1:]
    else:
        if authority.count(":") > 1:
            raise ValueError(
                f"OLLAMA_HOST {value!r} looks like a bare IPv6 address: put it in brackets, "
                "e.g. [::1] or http://[::1]:11434"
            )
        name, _, port_text = authority.partition(":")
        host = name.lower() or "127.0.0.1"

    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"OLLAMA_HOST port must be 1..65535, got {port_text!r} in {value!r}")
        port = int(port_text)
    else:
        port = default_port

    path = path.strip("/")
    base = f"{scheme}://{host}:{port}"
    return f"{base}/{path}" if path else base


def normalize_model_name(model: str) -> str:
    """``llama3.2`` → ``llama3.2:latest``; a name that has a tag is kept as it is."""
    name = model.strip()
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


class _Message(msgspec.Struct):
    content: str | None = None


class _Chunk(msgspec.Struct):
    model: str | None = None
    message: _Message | None = None
    done: bool = False
    done_reason: str | None = None
    error: Any = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None


class _Version(msgspec.Struct):
    version: str


class _Tag(msgspec.Struct):
    name: str = ""
    model: str = ""


class _Tags(msgspec.Struct):
    models: list[_Tag] | None = None


_chunk_decoder = msgspec.json.Decoder(_Chunk)
_version_decoder = msgspec.json.Decoder(_Version)
_tags_decoder = msgspec.json.Decoder(_Tags)


def _ms(nanoseconds: int | None) -> float | None:
    return None if nanoseconds is None else nanoseconds / 1e6


def _version_tuple(version: str) -> tuple[int, ...] | None:
    parts = version.split("-", 1)[0].split("+", 1)[0].split(".")
    try:
        return tuple(int(p) for p in parts[:3])
    except ValueError:
        return None


class OllamaProvider(HTTPProvider):
    """Streams ``POST /api/chat`` from one Ollama server."""

    name: str = "ollama"

    def __init__(
        self,
        base_url: str | None = None,
        *,
        keep_alive: str | float | None = "10m",
        **options: Unpack[HTTPOptions],
    ) -> None:
        self.base_url = parse_ollama_host(base_url)
        super().__init__(**options)
        self.keep_alive = keep_alive
        log.info("LLM provider ollama at %s", self.base_url)

    def request_body(self, req: ChatRequest) -> dict[str, Any]:
        """The body of ``POST /api/chat`` for ``req`` (docs/llm-protocols.md, Ollama request)."""
        body: dict[str, Any] = {
            "model": req.model,
            "messages": req.messages,
            "stream": True,
            "think": False,
            "options": {"temperature": req.temperature, "num_predict": req.max_tokens},
        }
        if req.schema is not None:
            body["format"] = req.schema
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        return body

    async def _attempt(
        self, req: ChatRequest, payload: bytes, on_token: TokenSink | None
    ) -> ChatResult:
        return await self._stream(
            "/api/chat",
            payload,
            headers={"Content-Type": "application/json", "Accept": "application/x-ndjson"},
            model=req.model,
            provider="ollama",
            read=lambda response: self._read_stream(response, req, on_token),
        )

    async def _read_stream(
        self, response: httpx.Response, req: ChatRequest, on_token: TokenSink | None
    ) -> ChatResult:
        parts: list[str] = []
        final: _Chunk | None = None
        number = 0
        lines = response.aiter_lines()
        try:
            while final is None:
                line = await next_line(lines, idle=self.policy.idle_timeout, base_url=self.base_url)
                if line is None:
                    break
                number += 1
                if not line.strip():
                    continue
                chunk = decode_chunk(
                    _chunk_decoder,
                    line,
                    base_url=self.base_url,
                    what=f"line {number} is not an Ollama chat chunk",
                )
                if chunk.error is not None:
                    raise stream_error(self.base_url, snippet(str(chunk.error)))
                content = chunk.message.content if chunk.message is not None else None
                if content:
                    parts.append(content)
                    if on_token is not None:
                        on_token(content)
                if chunk.done:
                    final = chunk
            if final is not None:
                await drain_lines(lines)
        finally:
            await close_lines(lines)

        if final is None:
            raise LLMError(
                "truncated",
                f"the reply from {self.base_url} ended without its final done:true line "
                f"after {len(parts)} fragment(s)",
                retryable=True,
            )
        if final.done_reason == "length":
            raise LLMError(
                "length",
                f"the reply from {self.base_url} hit the token limit "
                f"(num_predict={req.max_tokens}) before it was complete "
                "— raise max_tokens or shorten the prompt",
            )
        if final.done_reason not in (None, "stop"):
            raise LLMError(
                "truncated",
                f"the reply from {self.base_url} ended with done_reason "
                f"{final.done_reason!r} instead of 'stop'",
                retryable=True,
            )
        return ChatResult(
            text="".join(parts),
            model=final.model or req.model,
            done_reason=final.done_reason,
            prompt_tokens=final.prompt_eval_count,
            completion_tokens=final.eval_count,
            load_ms=_ms(final.load_duration),
            total_ms=_ms(final.total_duration),
            attempts=1,
        )

    async def health(self, model: str) -> Health:
        """``GET /api/version`` (liveness) then ``GET /api/tags`` (is the model pulled?)."""
        wanted = normalize_model_name(model)

        def report(
            reachable: bool, version: str | None, present: bool | None, detail: str | None
        ) -> Health:
            return self._health(wanted, reachable, present, detail, version)

        try:
            answer = await self._client.get(f"{self.base_url}/api/version", timeout=HEALTH_TIMEOUT)
        except httpx.HTTPError as exc:
            return report(False, None, None, self._probe_failed(exc))
        if answer.status_code != 200:
            return report(
                False,
                None,
                None,
                f"GET {self.base_url}/api/version answered HTTP {answer.status_code} "
                "— is this an Ollama server?",
            )
        try:
            version = _version_decoder.decode(answer.content).version
        except msgspec.DecodeError:
            return report(
                False,
                None,
                None,
                f"GET {self.base_url}/api/version did not return a version "
                "— is this an Ollama server?",
            )

        notes: list[str] = []
        parsed = _version_tuple(version)
        if parsed is not None and parsed < (0, 5, 3):
            notes.append(f"Ollama {version} is older than 0.5.3 and ignores JSON-schema formats")

        try:
            tags_answer = await self._client.get(
                f"{self.base_url}/api/tags", timeout=HEALTH_TIMEOUT
            )
        except httpx.HTTPError as exc:
            notes.append(self._probe_failed(exc))
            return report(True, version, None, "; ".join(notes))
        present: bool | None = None
        if tags_answer.status_code != 200:
            notes.append(f"GET {self.base_url}/api/tags answered HTTP {tags_answer.status_code}")
        else:
            try:
                tags = _tags_decoder.decode(tags_answer.content).models or []
            except msgspec.DecodeError as exc:
                notes.append(f"GET {self.base_url}/api/tags returned an unreadable list ({exc})")
            else:
                names = {normalize_model_name(n) for t in tags for n in (t.name, t.model) if n}
                present = wanted in names
                if not present:
                    pull = wanted.removesuffix(":latest")
                    notes.append(
                        f"model '{wanted}' is not pulled on {self.base_url} "
                        f"— run `ollama pull {pull}`"
                    )
        return report(True, version, present, "; ".join(notes) or None)
