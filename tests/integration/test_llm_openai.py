"""OpenAIProvider against a scripted OpenAI-compatible server on loopback
(llm_protocols.md §5, §7.3, §7.4)."""

from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import respx

from loops.llm import ChatRequest, LLMError, OpenAIProvider, normalize_openai_base_url
from tests.fakes.llm_servers import (
    DECISION_TEXT,
    FRAGMENTS,
    EndBody,
    FakeLLMServer,
    Reply,
    openai_bad_response_format,
    openai_context_overflow,
    openai_detail_error,
    openai_hang,
    openai_interrupted,
    openai_length_cap,
    openai_loading,
    openai_midstream_error,
    openai_model_missing,
    openai_ok,
    openai_status,
    openai_truncated,
    openai_vllm_error,
)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": ["none", "notify", "escalate"]},
        "reasoning": {"type": "string"},
    },
    "required": ["action", "reasoning"],
}
MESSAGES = [
    {"role": "system", "content": "Decide an action. Reply as JSON with keys action, reasoning."},
    {"role": "user", "content": "Queue depth: 3, threshold: 50"},
]
REQUEST = ChatRequest(
    model="llama3.2", messages=MESSAGES, schema=SCHEMA, temperature=0.0, max_tokens=256
)

MakeProvider = Callable[..., OpenAIProvider]


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer("openai") as fake:
        yield fake


@pytest.fixture
async def make_provider() -> AsyncIterator[MakeProvider]:
    made: list[OpenAIProvider] = []

    def make(base_url: str, **kwargs: Any) -> OpenAIProvider:
        kwargs.setdefault("backoff_base", 0.001)
        kwargs.setdefault("idle_timeout", 2.0)
        kwargs.setdefault("rng", random.Random(7))
        provider = OpenAIProvider(base_url, **kwargs)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def chat_error(provider: OpenAIProvider, **kwargs: Any) -> LLMError:
    with pytest.raises(LLMError) as info:
        await provider.chat(REQUEST, **kwargs)
    return info.value


# -- success ------------------------------------------------------------------------------


async def test_success_with_role_delta_pings_and_usage_chunk(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    tokens: list[str] = []

    result = await make_provider(server.api_url).chat(REQUEST, on_token=tokens.append)

    assert result.text == DECISION_TEXT
    assert tokens == list(FRAGMENTS)
    assert result.done_reason == "stop"
    assert (result.prompt_tokens, result.completion_tokens) == (96, 14)
    assert result.model == "llama3.2"
    assert result.attempts == 1
    assert (result.load_ms, result.total_ms) == (None, None)


async def test_finish_reason_on_the_last_content_chunk_and_no_usage(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(openai_ok(finish_on_last_content=True, usage=False, pings=False))

    result = await make_provider(server.api_url).chat(REQUEST)

    assert result.text == DECISION_TEXT
    assert (result.prompt_tokens, result.completion_tokens) == (None, None)


async def test_reasoning_deltas_are_ignored(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(openai_ok(reasoning=["Let me think.", " 3 < 50."]))
    tokens: list[str] = []

    result = await make_provider(server.api_url).chat(REQUEST, on_token=tokens.append)

    assert result.text == DECISION_TEXT
    assert tokens == list(FRAGMENTS)


async def test_request_body_json_schema_style(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    await make_provider(server.api_url).chat(REQUEST)

    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert "authorization" not in request.headers
    assert request.body == {
        "model": "llama3.2",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.0,
        "max_tokens": 256,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "response", "strict": True, "schema": SCHEMA},
        },
    }


async def test_json_schema_name_comes_from_the_schema_title(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    titled = ChatRequest(
        model="m",
        messages=MESSAGES,
        schema={**SCHEMA, "title": "decision"},
        temperature=0,
        max_tokens=8,
    )
    await make_provider(server.api_url).chat(titled)
    assert server.chat_requests[0].body["response_format"]["json_schema"]["name"] == "decision"


async def test_request_body_json_object_style_for_llama_cpp_python(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    await make_provider(server.api_url, schema_style="json_object").chat(REQUEST)

    body = server.chat_requests[0].body
    assert body["response_format"] == {"type": "json_object", "schema": SCHEMA}


async def test_free_text_sends_no_response_format(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    free = ChatRequest(model="m", messages=MESSAGES, schema=None, temperature=0.5, max_tokens=16)
    await make_provider(server.api_url).chat(free)
    assert "response_format" not in server.chat_requests[0].body


async def test_api_key_is_sent_as_bearer(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(server.api_url, api_key="sk-no-key-required")

    await provider.chat(REQUEST)
    await provider.health("llama3.2")

    assert [r.headers.get("authorization") for r in server.requests] == [
        "Bearer sk-no-key-required",
        "Bearer sk-no-key-required",
    ]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
        ("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080/v1"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/v1"),
        ("127.0.0.1:11434/v1", "http://127.0.0.1:11434/v1"),
        ("https://llm.example/openai", "https://llm.example/openai/v1"),
        ("http://h:1/v1/chat/completions", "http://h:1/v1"),
    ],
)
def test_base_url_normalisation(given: str, expected: str) -> None:
    assert normalize_openai_base_url(given) == expected


@pytest.mark.parametrize("bad", ["", "ftp://h/v1", "http:///v1"])
def test_base_url_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="base URL"):
        normalize_openai_base_url(bad)


def test_unknown_schema_style_is_refused() -> None:
    with pytest.raises(ValueError, match="schema_style must be one of json_schema, json_object"):
        OpenAIProvider("http://h:1", schema_style="grammar")  # type: ignore[arg-type]


async def test_server_root_without_v1_works(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(server.url)
    assert provider.base_url == server.api_url
    assert (await provider.chat(REQUEST)).text == DECISION_TEXT


# -- errors before the body, in every shape of §5.3 ------------------------------------------


@pytest.mark.parametrize(
    ("reply", "reason", "attempts", "said"),
    [
        (
            openai_model_missing(),
            "model_missing",
            1,
            "model 'llama3.2' not found (not_found_error)",
        ),
        (openai_loading(), "busy", 3, "Loading model (unavailable_error)"),
        (
            openai_bad_response_format(),
            "bad_request",
            1,
            "but got: xml (invalid_request_error)",
        ),
        (openai_bad_response_format(legacy=True), "server_error", 2, "but got: xml (server_error)"),
        (
            openai_context_overflow(),
            "bad_request",
            1,
            "maximum context length is 4096 tokens",
        ),
        (openai_detail_error(401, "Invalid API key"), "auth", 1, "HTTP 401: Invalid API key"),
        (
            openai_detail_error(503, "Service is not available"),
            "busy",
            3,
            "HTTP 503: Service is not available",
        ),
        (openai_vllm_error(400), "bad_request", 1, "The model `nope` does not exist."),
        (
            openai_status(
                422, {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]}
            ),
            "bad_request",
            1,
            "body.messages: field required",
        ),
        (openai_status(429, {"error": {"message": "rate limited"}}), "busy", 3, "rate limited"),
    ],
    ids=lambda v: v if isinstance(v, str | int) else None,
)
async def test_status_errors(
    server: FakeLLMServer,
    make_provider: MakeProvider,
    reply: Any,
    reason: str,
    attempts: int,
    said: str,
) -> None:
    server.enqueue(reply, reply, reply, openai_ok())

    err = await chat_error(make_provider(server.api_url))

    assert err.reason == reason
    assert err.attempts == attempts
    assert len(server.chat_requests) == attempts
    assert err.status == reply.steps[0].status
    assert said in err.message
    assert server.api_url in err.message


async def test_loading_then_ready(server: FakeLLMServer, make_provider: MakeProvider) -> None:
    server.enqueue(openai_loading(), openai_loading(), openai_ok())

    result = await make_provider(server.api_url).chat(REQUEST)

    assert (result.text, result.attempts) == (DECISION_TEXT, 3)


# -- failures inside a 200 stream -----------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (openai_midstream_error("CUDA out of memory"), "CUDA out of memory (server_error)"),
        (openai_vllm_error(500, "engine dead", midstream=True), "engine dead (BadRequestError)"),
    ],
    ids=["llama.cpp", "vllm-flat"],
)
async def test_midstream_error_is_retried_then_reported(
    server: FakeLLMServer, make_provider: MakeProvider, reply: Any, said: str
) -> None:
    server.enqueue(reply, reply, reply)

    err = await chat_error(make_provider(server.api_url))

    assert err.reason == "stream_error"
    assert err.attempts == 3
    assert said in err.message
    assert server.api_url in err.message


async def test_midstream_error_then_success(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(openai_midstream_error(), openai_ok())

    result = await make_provider(server.api_url).chat(REQUEST)

    assert (result.text, result.attempts) == (DECISION_TEXT, 2)


@pytest.mark.parametrize(
    ("reply", "hint"),
    [
        (openai_interrupted(), "no finish_reason"),  # [DONE] without finish_reason
        (openai_truncated(clean=True), "without data: [DONE]"),
        (openai_truncated(clean=False), "cut off mid-stream"),
        (Reply((*openai_ok().steps[:-2], EndBody())), "without data: [DONE]"),
    ],
    ids=["interrupted", "eof-without-done", "incomplete-chunked-read", "finish-but-no-done"],
)
async def test_truncated_streams_are_retried_then_reported(
    server: FakeLLMServer, make_provider: MakeProvider, reply: Any, hint: str
) -> None:
    server.enqueue(reply, reply, reply)

    err = await chat_error(make_provider(server.api_url))

    assert err.reason == "truncated"
    assert err.attempts == 3
    assert hint in err.message
    assert server.api_url in err.message


async def test_length_cap_is_not_retried(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(openai_length_cap(), openai_ok())

    err = await chat_error(make_provider(server.api_url))

    assert (err.reason, err.attempts, err.retryable) == ("length", 1, False)
    assert "max_tokens=256" in err.message
    assert len(server.chat_requests) == 1


async def test_hang_ends_at_the_deadline(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(openai_hang(after_events=2), openai_hang(), openai_hang())
    started = time.monotonic()

    err = await chat_error(make_provider(server.api_url, idle_timeout=0.3), deadline=0.8)

    assert time.monotonic() - started < 1.2
    assert err.reason == "timeout"
    assert "0.8 s deadline" in err.message


async def test_connection_refused_is_unreachable(make_provider: MakeProvider) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"

    err = await chat_error(make_provider(url))

    assert err.reason == "unreachable"
    assert err.message == f"LLM unreachable at {url} (connection refused)"


# -- health ---------------------------------------------------------------------------------


async def test_health_lists_models(server: FakeLLMServer, make_provider: MakeProvider) -> None:
    provider = make_provider(server.api_url)

    present = await provider.health("llama3.2")  # listed as llama3.2:latest (Ollama /v1)
    absent = await provider.health("mistral")

    assert (present.reachable, present.model_present, present.detail) == (True, True, None)
    assert present.provider == "openai"
    assert present.base_url == server.api_url
    assert (absent.reachable, absent.model_present) == (True, False)
    assert absent.detail is not None
    assert "llama3.2:latest" in absent.detail
    assert {r.path for r in server.requests} == {"/v1/models"}


async def test_health_while_loading(server: FakeLLMServer, make_provider: MakeProvider) -> None:
    server.set_route("GET", "/v1/models", openai_loading())

    health = await make_provider(server.api_url).health("llama3.2")

    assert health.reachable is False
    assert health.model_present is None
    assert health.detail is not None
    assert "Loading model" in health.detail


async def test_health_unreachable(make_provider: MakeProvider) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    health = await make_provider(url).health("llama3.2")
    assert (health.reachable, health.model_present) == (False, None)
    assert health.detail == f"LLM unreachable at {url} (connection refused)"


# -- transport-only (respx) -----------------------------------------------------------------


async def test_sse_split_across_reads_and_crlf_framing() -> None:
    events = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    ]
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)
    body += b": keep-alive\r\n\r\ndata: [DONE]\r\n\r\n"
    router = respx.Router()
    router.post("http://llm.test/v1/chat/completions").mock(
        return_value=httpx.Response(
            200, content=body, headers={"content-type": "text/event-stream"}
        )
    )
    provider = OpenAIProvider(
        "http://llm.test", transport=httpx.MockTransport(router.async_handler)
    )

    result = await provider.chat(REQUEST)

    assert (result.text, result.prompt_tokens, result.completion_tokens) == ("Hello", 3, 2)
    await provider.aclose()


async def test_non_json_event_is_a_bad_response() -> None:
    router = respx.Router()
    router.post("http://llm.test/v1/chat/completions").mock(
        return_value=httpx.Response(200, content=b"data: {not json\n\n")
    )
    provider = OpenAIProvider(
        "http://llm.test", transport=httpx.MockTransport(router.async_handler)
    )

    err = await chat_error(provider)

    assert (err.reason, err.attempts) == ("bad_response", 1)
    assert "http://llm.test/v1" in err.message
    await provider.aclose()
