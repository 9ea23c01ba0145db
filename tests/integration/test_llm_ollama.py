"""OllamaProvider against a scripted Ollama on loopback (docs/llm-protocols.md, Ollama /api/chat).

Each failure script ends as an ``LLMError`` with its stable ``.reason``, a message naming the
server address, and the number of attempts the retry policy allows (docs/llm-protocols.md, Retries).
"""

from __future__ import annotations

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

from loops.llm import ChatRequest, LLMError, OllamaProvider, RetryPolicy
from loops.llm._http import parse_retry_after
from tests.fakes.llm_servers import (
    DECISION_TEXT,
    FRAGMENTS,
    FakeLLMServer,
    fragments_of,
    ollama_busy,
    ollama_cold_load,
    ollama_garbage,
    ollama_hang,
    ollama_length_cap,
    ollama_midstream_error,
    ollama_not_found,
    ollama_ok,
    ollama_partial_then_reset,
    ollama_status,
    ollama_thinking,
    ollama_thinking_unsupported,
    ollama_truncated,
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
    {
        "role": "system",
        "content": "Decide an action. Reply as JSON with keys action, reasoning.",
    },
    {"role": "user", "content": "Queue depth: 3, threshold: 50"},
]
REQUEST = ChatRequest(
    model="llama3.2", messages=MESSAGES, schema=SCHEMA, temperature=0.0, max_tokens=256
)

MakeProvider = Callable[..., OllamaProvider]


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer("ollama") as fake:
        yield fake


@pytest.fixture
async def make_provider() -> AsyncIterator[MakeProvider]:
    made: list[OllamaProvider] = []

    def make(base_url: str, **kwargs: Any) -> OllamaProvider:
        kwargs.setdefault("backoff_base", 0.001)
        kwargs.setdefault("idle_timeout", 2.0)
        kwargs.setdefault("rng", random.Random(7))
        provider = OllamaProvider(base_url, **kwargs)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def chat_error(provider: OllamaProvider, **kwargs: Any) -> LLMError:
    with pytest.raises(LLMError) as info:
        await provider.chat(REQUEST, **kwargs)
    return info.value


# -- success ------------------------------------------------------------------------------


async def test_success_assembles_content_streams_tokens_and_converts_metrics(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    tokens: list[str] = []
    result = await make_provider(server.url).chat(REQUEST, on_token=tokens.append)

    assert result.text == DECISION_TEXT
    assert json.loads(result.text) == {
        "action": "none",
        "reasoning": "Queue depth is below the alert threshold.",
    }
    assert tokens == list(FRAGMENTS)
    assert result.model == "llama3.2"
    assert result.done_reason == "stop"
    assert result.prompt_tokens == 96
    assert result.completion_tokens == 14
    assert result.load_ms == pytest.approx(9.8)
    assert result.total_ms == pytest.approx(1432.0)
    assert result.attempts == 1


async def test_request_body_follows_the_protocol(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    await make_provider(server.url).chat(REQUEST)

    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/api/chat")
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "model": "llama3.2",
        "messages": MESSAGES,
        "stream": True,
        "think": False,
        "format": SCHEMA,  # the raw schema object, not a string and not OpenAI's wrapper
        "options": {"temperature": 0.0, "num_predict": 256},
        "keep_alive": "10m",
    }


async def test_free_text_request_sends_no_format_and_optional_keep_alive(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    free = ChatRequest(
        model="qwen3:4b",
        messages=[{"role": "user", "content": "hi"}],
        schema=None,
        temperature=0.7,
        max_tokens=32,
    )
    await make_provider(server.url, keep_alive=None).chat(free)

    body = server.chat_requests[0].body
    assert "format" not in body
    assert "keep_alive" not in body
    assert body["options"] == {"temperature": 0.7, "num_predict": 32}
    assert body["model"] == "qwen3:4b"


async def test_final_chunk_content_is_appended(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(ollama_ok(FRAGMENTS[:-1], final_content=FRAGMENTS[-1]))
    tokens: list[str] = []

    result = await make_provider(server.url).chat(REQUEST, on_token=tokens.append)

    assert result.text == DECISION_TEXT
    assert tokens == list(FRAGMENTS)


async def test_thinking_fragments_are_ignored(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(ollama_thinking())
    tokens: list[str] = []

    result = await make_provider(server.url).chat(REQUEST, on_token=tokens.append)

    assert result.text == DECISION_TEXT
    assert tokens == list(FRAGMENTS)
    assert all("threshold…" not in t for t in tokens)


async def test_decision_dict_reply_is_reassembled_from_fragments(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    decision = {"action": "post", "title": "Hi", "content": "Ünïcode ✓", "reasoning": "why"}
    server.enqueue(ollama_ok(decision))
    tokens: list[str] = []

    result = await make_provider(server.url).chat(REQUEST, on_token=tokens.append)

    assert json.loads(result.text) == decision
    assert tokens == fragments_of(decision)
    assert len(tokens) > 1


async def test_metrics_are_optional(server: FakeLLMServer, make_provider: MakeProvider) -> None:
    server.enqueue(ollama_ok(metrics=False, done_reason=None))  # an old server: no done_reason

    result = await make_provider(server.url).chat(REQUEST)

    assert result.text == DECISION_TEXT
    assert result.done_reason is None
    assert (result.prompt_tokens, result.completion_tokens) == (None, None)
    assert (result.load_ms, result.total_ms) == (None, None)


async def test_cold_load_within_the_idle_limit_succeeds(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(ollama_cold_load(0.4))
    started = time.monotonic()

    result = await make_provider(server.url, idle_timeout=1.5).chat(REQUEST)

    assert time.monotonic() - started >= 0.4
    assert result.text == DECISION_TEXT
    assert result.load_ms == pytest.approx(400.0)
    assert result.attempts == 1


async def test_connection_is_reused_across_calls(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(server.url)
    for _ in range(3):
        assert (await provider.chat(REQUEST)).text == DECISION_TEXT
    assert server.connections == 1


# -- errors before the body: mapped by status ---------------------------------------------


@pytest.mark.parametrize(
    ("reply", "reason", "attempts", "retryable"),
    [
        (ollama_thinking_unsupported(), "bad_request", 1, False),
        (ollama_status(401, {"error": "unauthorized"}), "auth", 1, False),
        (ollama_status(403, {"error": "forbidden"}), "auth", 1, False),
        (ollama_not_found(), "model_missing", 1, False),
        (ollama_not_found(legacy=True), "model_missing", 1, False),
        (ollama_status(422, {"error": "unprocessable"}), "bad_request", 1, False),
        (ollama_status(429, {"error": "slow down"}), "busy", 3, True),
        (
            ollama_status(500, {"error": "llama runner process has terminated"}),
            "server_error",
            2,
            True,
        ),
        (ollama_status(501, {"error": "not implemented"}), "server_error", 1, False),
        (ollama_status(502, "<html>bad gateway</html>"), "server_error", 3, True),
        (ollama_busy(), "busy", 3, True),
        (ollama_status(504, b""), "server_error", 3, True),
    ],
    ids=lambda v: v if isinstance(v, str | int | bool) else None,
)
async def test_status_errors(
    server: FakeLLMServer,
    make_provider: MakeProvider,
    reply: Any,
    reason: str,
    attempts: int,
    retryable: bool,
) -> None:
    server.enqueue(reply, reply, reply, ollama_ok())
    status = reply.steps[0].status

    err = await chat_error(make_provider(server.url))

    assert err.reason == reason
    assert err.status == status
    assert err.retryable is retryable
    assert err.attempts == attempts
    assert len(server.chat_requests) == attempts
    assert server.url in err.message
    assert f"HTTP {status}" in err.message


async def test_model_missing_message_tells_what_to_run(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(ollama_not_found("llama3.2"))
    request = ChatRequest(
        model="llama3.2:latest", messages=MESSAGES, schema=SCHEMA, temperature=0, max_tokens=8
    )
    with pytest.raises(LLMError) as info:
        await make_provider(server.url).chat(request)

    assert info.value.message == (
        f"model 'llama3.2:latest' not found on {server.url} — run `ollama pull llama3.2` "
        "(HTTP 404: model 'llama3.2' not found)"
    )


async def test_busy_then_success_is_retried(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(ollama_busy(), ollama_ok())

    result = await make_provider(server.url).chat(REQUEST)

    assert result.text == DECISION_TEXT
    assert result.attempts == 2
    assert len(server.chat_requests) == 2


async def test_retry_after_is_honoured(server: FakeLLMServer, make_provider: MakeProvider) -> None:
    server.enqueue(ollama_busy(retry_after="0.4"), ollama_ok())
    started = time.monotonic()

    result = await make_provider(server.url).chat(REQUEST)

    assert time.monotonic() - started >= 0.4
    assert result.attempts == 2


async def test_retry_that_cannot_fit_in_the_deadline_fails_at_once(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(ollama_busy(retry_after="20"), ollama_ok())
    started = time.monotonic()

    err = await chat_error(make_provider(server.url), deadline=3.0)

    assert time.monotonic() - started < 1.0
    assert err.reason == "busy"
    assert err.attempts == 1


async def test_server_error_is_retried_only_once(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    boom = ollama_status(500, {"error": "runner crashed"})
    server.enqueue(boom, ollama_ok())
    assert (await make_provider(server.url).chat(REQUEST)).attempts == 2

    server.enqueue(boom, boom, ollama_ok())
    err = await chat_error(make_provider(server.url))
    assert (err.reason, err.attempts) == ("server_error", 2)
    assert "runner crashed" in err.message


# -- failures inside a 200 stream -----------------------------------------------------------


async def test_midstream_error_is_retried_then_reported(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(*[ollama_midstream_error()] * 3)

    err = await chat_error(make_provider(server.url))

    assert err.reason == "stream_error"
    assert err.attempts == 3
    assert err.status is None
    assert "an error was encountered while running the model" in err.message
    assert server.url in err.message


async def test_midstream_error_then_success(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(ollama_midstream_error(), ollama_ok())
    tokens: list[str] = []

    result = await make_provider(server.url).chat(REQUEST, on_token=tokens.append)

    assert result.text == DECISION_TEXT  # nothing of the failed attempt leaks into the text
    assert result.attempts == 2
    # the sink saw the failed attempt's fragments, then the whole reply again
    assert tokens == [*FRAGMENTS[:2], *FRAGMENTS]


@pytest.mark.parametrize(
    ("reply", "hint"),
    [
        (ollama_truncated(clean=True), "without its final done:true line"),
        (ollama_truncated(clean=False), "incomplete chunked read"),
        (ollama_partial_then_reset(), "connection reset by peer"),  # half a chunk, then RST
        (ollama_ok(done_reason="unload"), "done_reason 'unload'"),
    ],
    ids=["eof-without-done", "incomplete-chunked-read", "partial-then-reset", "unload"],
)
async def test_truncated_streams_are_retried_then_reported(
    server: FakeLLMServer, make_provider: MakeProvider, reply: Any, hint: str
) -> None:
    server.enqueue(reply, reply, reply)

    err = await chat_error(make_provider(server.url))

    assert err.reason == "truncated"
    assert err.retryable is True
    assert err.attempts == 3
    assert hint in err.message
    assert server.url in err.message


async def test_truncated_then_success(server: FakeLLMServer, make_provider: MakeProvider) -> None:
    server.enqueue(ollama_partial_then_reset(), ollama_ok())

    result = await make_provider(server.url).chat(REQUEST)

    assert result.text == DECISION_TEXT
    assert result.attempts == 2


async def test_length_cap_is_not_retried(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(ollama_length_cap(), ollama_ok())

    err = await chat_error(make_provider(server.url))

    assert err.reason == "length"
    assert err.retryable is False
    assert err.attempts == 1
    assert len(server.chat_requests) == 1
    assert "num_predict=256" in err.message
    assert server.url in err.message


async def test_garbage_body_is_a_bad_response(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(ollama_garbage(), ollama_ok())

    err = await chat_error(make_provider(server.url))

    assert err.reason == "bad_response"
    assert err.attempts == 1
    assert "<html>" in err.message
    assert server.url in err.message


# -- time limits ----------------------------------------------------------------------------


async def test_hang_before_headers_ends_at_the_deadline(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(*[ollama_hang()] * 3)
    started = time.monotonic()

    err = await chat_error(make_provider(server.url, idle_timeout=0.5), deadline=1.2)

    elapsed = time.monotonic() - started
    assert 1.1 <= elapsed < 1.6
    assert err.reason == "timeout"
    assert err.attempts == 3  # two idle timeouts, then the deadline cut the third attempt
    assert "1.2 s deadline" in err.message
    assert server.url in err.message


async def test_hang_mid_stream_hits_the_idle_limit(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(ollama_hang(after_lines=2))
    tokens: list[str] = []
    started = time.monotonic()

    err = await chat_error(
        make_provider(server.url, idle_timeout=0.3, max_attempts=1), on_token=tokens.append
    )

    assert time.monotonic() - started < 1.0
    assert err.reason == "timeout"
    assert err.retryable is True
    assert "0.3 s" in err.message
    assert server.url in err.message
    assert tokens == list(FRAGMENTS[:2])


async def test_cold_load_longer_than_the_idle_limit_times_out(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(ollama_cold_load(1.0))

    err = await chat_error(make_provider(server.url, idle_timeout=0.3, max_attempts=1))

    assert err.reason == "timeout"
    assert "no response" in err.message
    assert server.url in err.message


async def test_deadline_cancellation_closes_the_request(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.enqueue(ollama_hang(after_lines=1))
    provider = make_provider(server.url, idle_timeout=5.0)

    err = await chat_error(provider, deadline=0.3)
    assert (err.reason, err.attempts) == ("timeout", 1)

    # the abandoned stream was closed, so the next call runs on a fresh connection
    assert (await provider.chat(REQUEST)).text == DECISION_TEXT
    assert server.connections == 2


async def test_connection_refused_is_unreachable_promptly(make_provider: MakeProvider) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()

    err = await chat_error(make_provider(url))

    assert time.monotonic() - started < 1.0
    assert err.reason == "unreachable"
    assert err.attempts == 3
    assert err.message == f"LLM unreachable at {url} (connection refused)"


# -- health ---------------------------------------------------------------------------------


async def test_health_reports_version_and_model_without_generating(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(server.url)

    health = await provider.health("llama3.2")

    assert health.provider == "ollama"
    assert health.base_url == server.url
    assert health.reachable is True
    assert health.version == "0.9.0"
    assert health.model == "llama3.2:latest"
    assert health.model_present is True
    assert health.detail is None
    assert [(r.method, r.path) for r in server.requests] == [
        ("GET", "/api/version"),
        ("GET", "/api/tags"),
    ]
    assert server.chat_requests == []


async def test_health_missing_model_says_what_to_pull(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    health = await make_provider(server.url).health("mistral")

    assert health.reachable is True
    assert health.model_present is False
    assert health.detail is not None
    assert "ollama pull mistral" in health.detail


async def test_health_warns_about_an_old_server(make_provider: MakeProvider) -> None:
    async with FakeLLMServer("ollama", version="0.4.7") as old:
        health = await make_provider(old.url).health("llama3.2:latest")
    assert health.version == "0.4.7"
    assert health.model_present is True
    assert health.detail is not None
    assert "0.5.3" in health.detail


async def test_health_unreachable(make_provider: MakeProvider) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    health = await make_provider(url).health("llama3.2")

    assert health.reachable is False
    assert health.version is None
    assert health.model_present is None
    assert health.detail == f"LLM unreachable at {url} (connection refused)"


async def test_health_of_a_server_that_is_not_ollama(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    server.set_route("GET", "/api/version", ollama_status(404, "404 page not found"))

    health = await make_provider(server.url).health("llama3.2")

    assert health.reachable is False
    assert health.detail is not None
    assert "HTTP 404" in health.detail


# -- construction ---------------------------------------------------------------------------


async def test_base_url_is_resolved_and_logged_once(
    caplog: pytest.LogCaptureFixture, make_provider: MakeProvider
) -> None:
    with caplog.at_level(logging.INFO, logger="heartbeat.loops.llm.ollama"):
        provider = make_provider(":56789/")
    assert provider.base_url == "http://127.0.0.1:56789"
    logged = [r.getMessage() for r in caplog.records if r.name == "heartbeat.loops.llm.ollama"]
    assert logged == ["LLM provider ollama at http://127.0.0.1:56789"]


async def test_default_base_url(make_provider: MakeProvider) -> None:
    assert make_provider(None).base_url == "http://127.0.0.1:11434"


async def test_an_injected_client_is_not_closed() -> None:
    async with httpx.AsyncClient() as client:
        provider = OllamaProvider("http://127.0.0.1:1", client=client)
        await provider.aclose()
        assert not client.is_closed
    with pytest.raises(ValueError, match="either client or transport"):
        OllamaProvider(client=client, transport=httpx.MockTransport(lambda r: httpx.Response(200)))


# -- transport-only cases (respx, no sockets) ------------------------------------------------

BASE = "http://ollama.test:11434"


def ndjson(*chunks: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(c).encode() + b"\n" for c in chunks)


async def test_connect_timeout_is_unreachable_and_retried() -> None:
    router = respx.Router(assert_all_called=True)
    route = router.post(f"{BASE}/api/chat").mock(side_effect=httpx.ConnectTimeout("slow"))
    provider = OllamaProvider(
        BASE, transport=httpx.MockTransport(router.async_handler), backoff_base=0.001
    )

    err = await chat_error(provider)

    assert err.reason == "unreachable"
    assert err.message == f"LLM unreachable at {BASE} (no connection within 5 s)"
    assert route.call_count == 3
    await provider.aclose()


async def test_read_timeout_before_headers_is_a_timeout() -> None:
    router = respx.Router()
    router.post(f"{BASE}/api/chat").mock(
        side_effect=[
            httpx.ReadTimeout("late"),
            httpx.Response(
                200,
                content=ndjson(
                    {"message": {"role": "assistant", "content": "ok"}, "done": False},
                    {
                        "message": {"role": "assistant", "content": ""},
                        "done": True,
                        "done_reason": "stop",
                    },
                ),
            ),
        ]
    )
    provider = OllamaProvider(
        BASE, transport=httpx.MockTransport(router.async_handler), backoff_base=0.001
    )

    result = await provider.chat(REQUEST)

    assert (result.text, result.attempts, result.model) == ("ok", 2, "llama3.2")
    await provider.aclose()


async def test_error_key_with_a_non_string_value_is_still_a_stream_error() -> None:
    router = respx.Router()
    router.post(f"{BASE}/api/chat").mock(
        return_value=httpx.Response(200, content=ndjson({"error": {"message": "oom"}}))
    )
    provider = OllamaProvider(
        BASE, transport=httpx.MockTransport(router.async_handler), max_attempts=1
    )

    err = await chat_error(provider)

    assert err.reason == "stream_error"
    assert "oom" in err.message
    await provider.aclose()


# -- the retry policy itself -----------------------------------------------------------------


def test_backoff_grows_is_jittered_and_capped() -> None:
    policy = RetryPolicy()
    rng = random.Random(1)
    for failed, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (9, 8.0)]:
        delay = policy.backoff(failed, None, rng)
        assert ceiling * 0.5 <= delay <= ceiling
    assert policy.backoff(1, 3.0, rng) == 3.0
    assert policy.backoff(1, 1000.0, rng) == policy.retry_after_cap


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts must be at least 1, got 0"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="idle_timeout must be greater than 0"):
        RetryPolicy(idle_timeout=0)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("3", 3.0),
        ("0.25", 0.25),
        ("-4", 0.0),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


async def test_sleep_between_attempts_is_real(
    server: FakeLLMServer, make_provider: MakeProvider
) -> None:
    # with a visible backoff base the retry waits; the default tests use 1 ms
    server.enqueue(ollama_busy(), ollama_ok())
    started = time.monotonic()
    await make_provider(server.url, backoff_base=0.2, rng=random.Random(0)).chat(REQUEST)
    assert time.monotonic() - started >= 0.1
