"""OpenAIProvider against a scripted OpenAI-compatible server on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import respx

from loops.llm import ChatRequest, LLMError, OpenAIProvider, normalize_openai_base_url
from loops.llm.openai import names_schema_form
from tests.fakes.llm_servers import (
    DECISION_TEXT,
    FRAGMENTS,
    EndBody,
    FakeLLMServer,
    Head,
    ReceivedRequest,
    Reply,
    Send,
    llama_cpp_python_server,
    openai_bad_response_format,
    openai_context_overflow,
    openai_detail_error,
    openai_hang,
    openai_interrupted,
    openai_json_schema_unsupported,
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


async def test_request_body_json_schema_form(
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


async def test_request_body_json_object_form_for_llama_cpp_python(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    await make_provider(server.api_url, schema_form="json_object").chat(REQUEST)

    body = server.chat_requests[0].body
    assert body["response_format"] == {"type": "json_object", "schema": SCHEMA}


@pytest.mark.parametrize("form", ["json_schema", "json_object"])
async def test_long_length_bounds_are_left_out_of_the_schema_sent(
    server: FakeLLMServer, make_provider: MakeProvider, form: str
) -> None:
    bounded = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": 64},
            "content": {"type": "string", "minLength": 1, "maxLength": 5000},
        },
        "required": ["title", "content"],
    }
    req = ChatRequest(model="m", messages=MESSAGES, schema=bounded, temperature=0, max_tokens=8)

    await make_provider(server.api_url, schema_form=form).chat(req)

    fmt = server.chat_requests[0].body["response_format"]
    sent = fmt["json_schema"]["schema"] if form == "json_schema" else fmt["schema"]
    assert sent["properties"]["title"] == {"type": "string", "minLength": 1, "maxLength": 64}
    assert sent["properties"]["content"] == {"type": "string", "minLength": 1}
    assert sent["required"] == ["title", "content"]


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


def test_unknown_schema_form_is_refused() -> None:
    with pytest.raises(
        ValueError, match="schema_form must be one of auto, json_schema, json_object, none"
    ):
        OpenAIProvider("http://h:1", schema_form="grammar")  # type: ignore[arg-type]


async def test_server_root_without_v1_works(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(server.url)
    assert provider.base_url == server.api_url
    assert (await provider.chat(REQUEST)).text == DECISION_TEXT


# -- errors before the body, in every shape servers send ------------------------------------


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

    # the form is fixed: a rejected response_format is reported, not negotiated (see below)
    err = await chat_error(make_provider(server.api_url, schema_form="json_schema"))

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


# -- the response_format form ---------------------------------------------------------------


def forms_sent(server: FakeLLMServer) -> list[str]:
    """The response_format form of each chat request the server received."""
    forms = []
    for request in server.chat_requests:
        fmt = request.body.get("response_format")
        if fmt is None:
            forms.append("none")
        elif fmt["type"] == "json_object" and "schema" not in fmt:
            forms.append("json_object without schema")
        else:
            forms.append(fmt["type"])
    return forms


def logged(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "heartbeat.loops.llm.openai" and words in r.getMessage()
    ]


LLAMA_CPP_400 = openai_bad_response_format()  # 'must be one of "text" or "json_object"'
FASTAPI_422 = openai_status(
    422,
    {
        "detail": [
            {
                "type": "literal_error",
                "loc": ["body", "response_format", "type"],
                "msg": "Input should be 'text' or 'json_object'",
            }
        ]
    },
)


async def test_auto_falls_back_to_json_object_on_llama_cpp_python_and_remembers(
    make_provider: MakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="heartbeat.loops.llm.openai")
    async with FakeLLMServer("openai", default_reply=llama_cpp_python_server()) as fake:
        url = fake.api_url
        provider = make_provider(url)
        assert provider.form_in_use == "json_schema"

        first = await provider.chat(REQUEST)
        second = await provider.chat(REQUEST)

    assert first.text == second.text == DECISION_TEXT
    assert forms_sent(fake) == ["json_schema", "json_object", "json_object"]
    fallback = fake.chat_requests[1].body
    assert fallback["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert {k: v for k, v in fallback.items() if k != "response_format"} == {
        k: v for k, v in fake.chat_requests[0].body.items() if k != "response_format"
    }
    assert (first.attempts, second.attempts) == (1, 1)  # a rejected form is no failed attempt
    assert provider.form_in_use == "json_object"
    [rejected] = logged(caplog, "rejected response_format json_schema")
    assert "Input should be 'text' or 'json_object'" in rejected
    assert "trying json_object" in rejected
    [announced] = logged(caplog, "used from now on")
    assert f"{url} answers with response_format json_object" in announced


@pytest.mark.parametrize(
    "rejection",
    [openai_json_schema_unsupported(), LLAMA_CPP_400, openai_bad_response_format(legacy=True)],
    ids=["llama-cpp-python-500", "llama.cpp-400", "llama.cpp-legacy-500"],
)
async def test_auto_moves_on_from_each_shape_of_rejection(
    server: FakeLLMServer, make_provider: MakeProvider, rejection: Reply
) -> None:
    server.enqueue(rejection)

    result = await make_provider(server.api_url).chat(REQUEST)

    assert (result.text, result.attempts) == (DECISION_TEXT, 1)
    assert forms_sent(server) == ["json_schema", "json_object"]


async def test_auto_ends_with_no_response_format_when_every_form_is_rejected(
    make_provider: MakeProvider,
) -> None:
    def strict(request: ReceivedRequest) -> Reply:
        fmt = request.body.get("response_format")
        if fmt is None:
            return openai_ok()
        return openai_json_schema_unsupported() if fmt["type"] == "json_schema" else FASTAPI_422

    async with FakeLLMServer("openai", default_reply=strict) as fake:
        provider = make_provider(fake.api_url)
        first = await provider.chat(REQUEST)
        await provider.chat(REQUEST)

    assert first.text == DECISION_TEXT
    assert forms_sent(fake) == ["json_schema", "json_object", "none", "none"]
    assert provider.form_in_use == "none"


async def test_an_unrelated_500_is_not_taken_for_a_form_problem(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    crash = openai_status(
        500,
        {"error": {"message": "llama_decode returned -3", "type": "internal_server_error"}},
    )
    server.enqueue(crash, crash)
    provider = make_provider(server.api_url)

    err = await chat_error(provider)
    await provider.chat(REQUEST)

    assert (err.reason, err.attempts) == ("server_error", 2)  # a plain 500: retried once
    assert "llama_decode returned -3" in err.message
    assert forms_sent(server) == ["json_schema"] * 3
    assert provider.form_in_use == "json_schema"


@pytest.mark.parametrize(
    "reply",
    [
        openai_loading(),
        openai_context_overflow(),  # a 400 that names messages, not the form
        openai_model_missing(),
        openai_detail_error(401, "Invalid API key"),
    ],
    ids=["busy", "context-overflow", "model-missing", "auth"],
)
async def test_other_failures_never_change_the_form(
    server: FakeLLMServer, make_provider: MakeProvider, reply: Reply
) -> None:
    server.enqueue(reply, reply, reply)
    provider = make_provider(server.api_url)

    with pytest.raises(LLMError):
        await provider.chat(REQUEST)

    assert set(forms_sent(server)) == {"json_schema"}
    assert provider.form_in_use == "json_schema"


async def test_a_retry_keeps_the_form_found_so_far(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(openai_loading(), openai_json_schema_unsupported(), openai_loading())

    result = await make_provider(server.api_url).chat(REQUEST)

    assert (result.text, result.attempts) == (DECISION_TEXT, 3)
    assert forms_sent(server) == ["json_schema", "json_schema", "json_object", "json_object"]


async def test_concurrent_calls_settle_on_one_form_and_say_so_once(
    make_provider: MakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="heartbeat.loops.llm.openai")
    async with FakeLLMServer(
        "openai", default_reply=llama_cpp_python_server(openai_ok(delay=0.05))
    ) as fake:
        provider = make_provider(fake.api_url)
        results = await asyncio.gather(provider.chat(REQUEST), provider.chat(REQUEST))

    assert [r.text for r in results] == [DECISION_TEXT, DECISION_TEXT]
    assert sorted(forms_sent(fake)) == ["json_object", "json_object", "json_schema", "json_schema"]
    assert len(logged(caplog, "rejected response_format")) == 1
    assert len(logged(caplog, "used from now on")) == 1


@pytest.mark.parametrize(
    ("form", "sent"),
    [("json_object", ["json_object"]), ("none", ["none"])],
)
async def test_a_forced_form_is_sent_as_it_is(
    make_provider: MakeProvider, form: str, sent: list[str]
) -> None:
    async with FakeLLMServer("openai", default_reply=llama_cpp_python_server()) as fake:
        provider = make_provider(fake.api_url, schema_form=form)
        result = await provider.chat(REQUEST)
        await provider.chat(REQUEST)

    assert result.text == DECISION_TEXT
    assert forms_sent(fake) == sent * 2


async def test_a_forced_json_schema_is_never_given_up(make_provider: MakeProvider) -> None:
    async with FakeLLMServer("openai", default_reply=llama_cpp_python_server()) as fake:
        provider = make_provider(fake.api_url, schema_form="json_schema")
        err = await chat_error(provider)

    assert (err.reason, err.status, err.attempts) == ("server_error", 500, 2)
    assert "Input should be 'text' or 'json_object'" in err.message
    assert forms_sent(fake) == ["json_schema", "json_schema"]
    assert provider.form_in_use == "json_schema"


async def test_free_text_is_never_negotiated(make_provider: MakeProvider) -> None:
    free = ChatRequest(model="m", messages=MESSAGES, schema=None, temperature=0.5, max_tokens=16)
    async with FakeLLMServer("openai", default_reply=llama_cpp_python_server()) as fake:
        provider = make_provider(fake.api_url)
        await provider.chat(free)

    assert forms_sent(fake) == ["none"]
    assert provider.form_in_use == "json_schema"


@pytest.mark.parametrize(
    ("reply", "is_form"),
    [
        (openai_json_schema_unsupported(), True),
        (LLAMA_CPP_400, True),
        (openai_bad_response_format(legacy=True), True),
        (FASTAPI_422, True),
        (openai_status(400, {"error": {"message": "json_schema is not supported"}}), True),
        (openai_status(500, {"error": {"message": "CUDA out of memory"}}), False),
        (openai_context_overflow(), False),
        (openai_model_missing(), False),
        (openai_loading(), False),
        # right words, wrong status: a busy or missing server says nothing about the form
        (openai_status(503, {"error": {"message": "busy compiling json_schema"}}), False),
        (openai_status(404, {"error": {"message": "no response_format route"}}), False),
    ],
)
def test_which_answers_reject_the_form(reply: Reply, is_form: bool) -> None:
    head, send = reply.steps
    assert isinstance(head, Head) and isinstance(send, Send)
    assert names_schema_form(head.status, send.data) is is_form


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
