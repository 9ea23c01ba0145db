"""A heartbeat end to end: the API, the executor and the Ollama client against a scripted fake
Ollama speaking NDJSON over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from loops.llm import OllamaProvider
from tests.conftest import AppFactory, Running, free_port
from tests.fakes import llm_servers as fk

DECISIONS: dict[str, dict[str, Any]] = {
    "post": {
        "action": "post",
        "title": "Weekly digest",
        "content": "Three new posts.",
        "reasoning": "3+ new posts",
    },
    "none": {"action": "none", "reasoning": "all quiet"},
}


@pytest.fixture
async def ollama() -> AsyncIterator[fk.FakeLLMServer]:
    async with fk.FakeLLMServer("ollama") as server:
        yield server


@pytest.fixture
async def api(make_app: AppFactory, ollama: fk.FakeLLMServer) -> Running:
    provider = OllamaProvider(ollama.url, idle_timeout=1.0, backoff_base=0.01)
    return await make_app(llm=provider, start_loops=False, run_deadline=5.0)


async def run_now(api: Running) -> dict[str, Any]:
    r = await api.client.post("/api/threads/default/heartbeat/run-now")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_post_decision_lands_in_the_ledger(api: Running, ollama: fk.FakeLLMServer) -> None:
    ollama.enqueue(fk.ollama_ok(DECISIONS["post"]))
    run = await run_now(api)
    assert (run["status"], run["action"]) == ("ok", "post")
    assert run["tokens"] == {"prompt": 96, "completion": 14}
    posts = (await api.client.get("/api/ledger/posts")).json()["items"]
    assert [p["title"] for p in posts] == ["Weekly digest"]


async def test_comment_and_vote_decisions(api: Running, ollama: fk.FakeLLMServer) -> None:
    c = api.client
    pid = (await c.post("/api/ledger/posts", json={"title": "Tue or Thu?", "content": "?"})).json()[
        "post_id"
    ]
    ollama.enqueue(
        fk.ollama_ok(
            {"action": "comment", "post_id": pid, "content": "Thursday.", "reasoning": "asked"}
        ),
        fk.ollama_ok(
            {"action": "vote", "post_id": pid, "vote_direction": "down", "reasoning": "meh"}
        ),
    )
    assert (await run_now(api))["action"] == "comment"
    assert (await run_now(api))["action"] == "vote"
    post = (await c.get(f"/api/ledger/posts/{pid}")).json()
    assert [cm["content"] for cm in post["comments"]] == ["Thursday."]
    assert post["score"] == -1


async def test_the_request_on_the_wire(api: Running, ollama: fk.FakeLLMServer) -> None:
    c = api.client
    await c.post("/api/threads/default/messages", json={"content": "remind me about taxes"})
    await c.post(
        "/api/threads/default/heartbeat/config",
        json={"model": "phi3:mini", "temperature": 0.1, "max_tokens": 123},
    )
    ollama.enqueue(fk.ollama_ok(DECISIONS["none"]))
    await run_now(api)
    body = ollama.chat_requests[-1].body
    assert ollama.chat_requests[-1].path == "/api/chat"
    assert body["model"] == "phi3:mini" and body["stream"] is True and body["think"] is False
    assert body["options"] == {"temperature": 0.1, "num_predict": 123}
    assert isinstance(body["format"], dict) and "anyOf" in body["format"]
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "Scan the Ledger for new posts" in body["messages"][1]["content"]
    assert "remind me about taxes" in body["messages"][1]["content"]


async def test_dry_run_and_heartbeat_ok(api: Running, ollama: fk.FakeLLMServer) -> None:
    await api.client.post("/api/threads/default/heartbeat/config", json={"dry_run": True})
    ollama.enqueue(fk.ollama_ok(DECISIONS["post"]), fk.ollama_ok(["HEARTBEAT", "_OK"]))
    first, second = await run_now(api), await run_now(api)
    assert (first["status"], first["action"]) == ("dry_run", "post")
    assert (second["status"], second["action"]) == ("dry_run", "none")
    assert (await api.client.get("/api/ledger/posts")).json()["items"] == []


async def test_fenced_reply_is_parsed(api: Running, ollama: fk.FakeLLMServer) -> None:
    ollama.enqueue(fk.ollama_ok(["```json\n", '{"action":"none","reasoning":"x"}', "\n```"]))
    assert (await run_now(api))["action"] == "none"


@pytest.mark.parametrize(
    ("replies", "reason", "chat_calls"),
    [
        ([fk.ollama_not_found()], "model_missing", 1),
        ([fk.ollama_not_found(legacy=True)], "model_missing", 1),
        ([fk.ollama_busy()] * 3, "busy", 3),
        ([fk.ollama_thinking_unsupported()], "bad_request", 1),
        ([fk.ollama_midstream_error()] * 3, "stream_error", 3),
        ([fk.ollama_truncated()] * 3, "truncated", 3),
        ([fk.ollama_partial_then_reset()] * 3, "truncated", 3),
        ([fk.ollama_length_cap()], "length", 1),
        ([fk.ollama_garbage()], "bad_response", 1),
        ([fk.ollama_ok(["I think all ", "is well."])] * 2, "invalid_output", 2),
        ([fk.ollama_hang()] * 3, "timeout", None),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_every_failure_script_is_a_recorded_failed_run(
    api: Running,
    ollama: fk.FakeLLMServer,
    replies: list[fk.Reply],
    reason: str,
    chat_calls: int | None,
) -> None:
    ollama.enqueue(*replies)
    started = time.monotonic()
    run = await run_now(api)
    assert (run["status"], run["reason"]) == ("failed", reason), run
    assert run["error"]
    if reason not in ("invalid_output",):
        assert ollama.url in run["error"] or "127.0.0.1" in run["error"], run["error"]
    if chat_calls is not None:
        assert len(ollama.chat_requests) == chat_calls
    assert time.monotonic() - started < 6.0  # bounded by the run deadline
    history = (await api.client.get("/api/threads/default/heartbeat/history")).json()["items"]
    assert history[0]["run_id"] == run["run_id"] and history[0]["status"] == "failed"
    # the service keeps serving and the next run succeeds
    ollama.enqueue(fk.ollama_ok(DECISIONS["none"]))
    after = await run_now(api)
    assert after["status"] == "ok", (after["reason"], after["error"])


async def test_busy_then_ok_is_retried_to_success(api: Running, ollama: fk.FakeLLMServer) -> None:
    ollama.enqueue(fk.ollama_busy(), fk.ollama_ok(DECISIONS["none"]))
    run = await run_now(api)
    assert run["status"] == "ok" and len(ollama.chat_requests) == 2


async def test_unreachable_ollama_answers_promptly_with_the_address(make_app: AppFactory) -> None:
    port = free_port()  # nothing listens there
    api = await make_app(
        ollama_host=f"http://127.0.0.1:{port}", llm_provider="ollama", start_loops=False
    )
    started = time.monotonic()
    run = await run_now(api)
    assert (run["status"], run["reason"]) == ("failed", "unreachable")
    assert f"127.0.0.1:{port}" in run["error"]
    assert time.monotonic() - started < 10.0
    health = (await api.client.get("/healthz")).json()
    assert health["llm"]["reachable"] is False and str(port) in health["llm"]["base_url"]


async def test_auto_picks_ollama_when_it_answers(
    make_app: AppFactory, ollama: fk.FakeLLMServer
) -> None:
    api = await make_app(ollama_host=ollama.url, llm_provider="auto", start_loops=False)
    status = (await api.client.get("/api/heartbeat/status")).json()
    assert status["llm"]["provider"] == "ollama"
    assert status["llm"]["why"].startswith(f"auto: Ollama answered at {ollama.url}")
    ollama.enqueue(fk.ollama_ok(DECISIONS["none"]))
    assert (await run_now(api))["status"] == "ok"


async def test_a_retry_tells_viewers_to_discard_the_streamed_text(
    api: Running, ollama: fk.FakeLLMServer
) -> None:
    ollama.enqueue(fk.ollama_ok(["I think all ", "is well."]), fk.ollama_ok(DECISIONS["none"]))
    with api.service.bus.subscribe("default") as sub:
        run = await run_now(api)
        tokens = [e.data for e in sub.take() if e.type == "token"]
    assert run["status"] == "ok" and len(ollama.chat_requests) == 2
    resets = [i for i, t in enumerate(tokens) if t.get("reset")]
    assert len(resets) == 1, tokens
    before, after = tokens[: resets[0]], tokens[resets[0] + 1 :]
    assert "".join(t["text"] for t in before) == "I think all is well."
    assert json.loads("".join(t["text"] for t in after)) == DECISIONS["none"]
    assert tokens[resets[0]] == {
        "run_id": run["run_id"],
        "thread_id": "default",
        "text": "",
        "reset": True,
    }


async def test_a_run_waiting_for_capacity_reads_its_context_once_it_has_a_slot(
    make_app: AppFactory, ollama: fk.FakeLLMServer
) -> None:
    provider = OllamaProvider(ollama.url, idle_timeout=5.0, backoff_base=0.01)
    api = await make_app(llm=provider, start_loops=False, run_deadline=10.0, max_concurrency=1)
    c = api.client
    await c.post("/api/threads", json={"thread_id": "b"})
    ollama.enqueue(fk.ollama_ok(DECISIONS["none"], delay=0.5), fk.ollama_ok(DECISIONS["none"]))
    first = asyncio.create_task(c.post("/api/threads/default/heartbeat/run-now"))
    while not ollama.chat_requests:
        await asyncio.sleep(0.01)
    second = asyncio.create_task(c.post("/api/threads/b/heartbeat/run-now"))
    while (await c.get("/api/heartbeat/status")).json()["queue_depth"] < 1:
        await asyncio.sleep(0.01)
    await c.post("/api/threads/b/messages", json={"content": "written while b waited"})
    assert (await first).status_code == 200 and (await second).status_code == 200
    prompt = ollama.chat_requests[1].body["messages"][1]["content"]
    assert "written while b waited" in prompt
