"""choose_provider: every branch of HEARTBEAT_LLM_PROVIDER, with Ollama faked by MockTransport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from app.llm_choice import choose_provider, default_model, embedded_model_setting
from app.settings import Settings
from loops.llm import LLMProvider, OllamaProvider, OpenAIProvider
from loops.llm.embedded import EmbeddedProvider

Handler = Callable[[httpx.Request], httpx.Response]


def ollama_up(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/api/version":
        return httpx.Response(200, json={"version": "0.9.0"})
    if request.url.path == "/api/tags":
        return httpx.Response(200, json={"models": [{"name": "llama3.2:latest"}]})
    return httpx.Response(404, json={"error": "not found"})


def ollama_down(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def not_ollama(request: httpx.Request) -> httpx.Response:
    return httpx.Response(404, text="<html>nginx</html>")


def must_not_be_called(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no probe expected, got {request.method} {request.url}")


def settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings.for_workspace(tmp_path, **overrides)


@pytest.fixture
async def opened() -> AsyncIterator[list[LLMProvider]]:
    providers: list[LLMProvider] = []
    yield providers
    for p in providers:
        await p.aclose()


def installed(monkeypatch: pytest.MonkeyPatch, value: bool) -> list[str | None]:
    asked: list[str | None] = []

    def available(cls: type[EmbeddedProvider], model: str | None = None) -> bool:
        asked.append(model)
        return value

    monkeypatch.setattr(EmbeddedProvider, "available", classmethod(available))
    return asked


async def test_auto_uses_ollama_when_it_answers(
    tmp_path: Path, opened: list[LLMProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = installed(monkeypatch, True)
    provider, why = await choose_provider(
        settings(tmp_path), transport=httpx.MockTransport(ollama_up)
    )
    opened.append(provider)
    assert isinstance(provider, OllamaProvider)
    assert why.startswith("auto: Ollama answered at http://127.0.0.1:11434")
    assert "0.9.0" in why and "llama3.2:latest" in why
    assert asked == []  # the embedded model is not even looked for


async def test_auto_mentions_a_model_that_is_not_pulled(
    tmp_path: Path, opened: list[LLMProvider]
) -> None:
    provider, why = await choose_provider(
        settings(tmp_path, model="qwen2.5:0.5b"), transport=httpx.MockTransport(ollama_up)
    )
    opened.append(provider)
    assert isinstance(provider, OllamaProvider)
    assert "ollama pull qwen2.5:0.5b" in why


async def test_auto_falls_back_to_the_embedded_model(
    tmp_path: Path, opened: list[LLMProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    installed(monkeypatch, True)
    provider, why = await choose_provider(
        settings(tmp_path), transport=httpx.MockTransport(ollama_down)
    )
    opened.append(provider)
    assert isinstance(provider, EmbeddedProvider)
    assert why.startswith("auto: Ollama not reachable at http://127.0.0.1:11434")
    assert f"using the embedded model {provider.model}" in why
    assert not provider.loaded  # choosing never loads the model


async def test_auto_without_ollama_or_embedded_keeps_ollama(
    tmp_path: Path, opened: list[LLMProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    installed(monkeypatch, False)
    provider, why = await choose_provider(
        settings(tmp_path), transport=httpx.MockTransport(ollama_down)
    )
    opened.append(provider)
    assert isinstance(provider, OllamaProvider)
    assert "not reachable at http://127.0.0.1:11434" in why
    assert "no embedded model installed" in why
    assert "runs will fail with the unreachable reason" in why


async def test_auto_treats_a_server_that_is_not_ollama_as_unreachable(
    tmp_path: Path, opened: list[LLMProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    installed(monkeypatch, True)
    provider, why = await choose_provider(
        settings(tmp_path), transport=httpx.MockTransport(not_ollama)
    )
    opened.append(provider)
    assert isinstance(provider, EmbeddedProvider)
    assert "HTTP 404" in why


async def test_auto_probe_is_bounded_by_probe_timeout(
    tmp_path: Path, opened: list[LLMProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    installed(monkeypatch, True)

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return ollama_up(request)

    loop = asyncio.get_running_loop()
    started = loop.time()
    provider, why = await choose_provider(
        settings(tmp_path), transport=httpx.MockTransport(hang), probe_timeout=0.1
    )
    opened.append(provider)
    assert loop.time() - started < 5
    assert isinstance(provider, EmbeddedProvider)
    assert "no answer within 0.1 s" in why


async def test_auto_passes_an_embedded_model_named_in_heartbeat_model(
    tmp_path: Path, opened: list[LLMProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = installed(monkeypatch, True)
    provider, _ = await choose_provider(
        settings(tmp_path, model="smollm2"), transport=httpx.MockTransport(ollama_down)
    )
    opened.append(provider)
    assert asked == ["smollm2"]
    assert isinstance(provider, EmbeddedProvider)
    assert provider.model == "smollm2-135m"


async def test_explicit_ollama_does_not_probe(tmp_path: Path, opened: list[LLMProvider]) -> None:
    provider, why = await choose_provider(
        settings(tmp_path, llm_provider="ollama", ollama_host="http://10.0.0.5:11434"),
        transport=httpx.MockTransport(must_not_be_called),
    )
    opened.append(provider)
    assert isinstance(provider, OllamaProvider)
    assert why == "ollama: Ollama at http://10.0.0.5:11434, model llama3.2:latest"


@pytest.mark.parametrize("form", ["auto", "json_object"])
async def test_explicit_openai(tmp_path: Path, opened: list[LLMProvider], form: str) -> None:
    provider, why = await choose_provider(
        settings(
            tmp_path,
            llm_provider="openai",
            llm_base_url="http://127.0.0.1:8080",
            model="qwen2.5-0.5b-instruct",
            llm_schema_form=form,
        ),
        transport=httpx.MockTransport(must_not_be_called),
    )
    opened.append(provider)
    assert isinstance(provider, OpenAIProvider)
    assert provider.base_url == "http://127.0.0.1:8080/v1"
    assert "http://127.0.0.1:8080/v1" in why and "qwen2.5-0.5b-instruct" in why
    assert provider.schema_form == form and why.endswith(f", response_format {form}")


async def test_explicit_openai_needs_a_base_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="HEARTBEAT_LLM_BASE_URL"):
        await choose_provider(settings(tmp_path, llm_provider="openai"))


async def test_explicit_embedded(
    tmp_path: Path, opened: list[LLMProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    installed(monkeypatch, True)
    provider, why = await choose_provider(
        settings(tmp_path, llm_provider="embedded"),
        transport=httpx.MockTransport(must_not_be_called),
    )
    opened.append(provider)
    assert isinstance(provider, EmbeddedProvider)
    assert why.startswith(f"embedded: the embedded model {provider.model}")
    assert "NOT INSTALLED" not in why


async def test_explicit_embedded_not_installed_says_so(
    tmp_path: Path, opened: list[LLMProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    installed(monkeypatch, False)
    provider, why = await choose_provider(settings(tmp_path, llm_provider="embedded"))
    opened.append(provider)
    assert isinstance(provider, EmbeddedProvider)
    assert "NOT INSTALLED" in why and "model_missing" in why
    assert "heartbeat[local]" in why


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("llama3.2:latest", None),
        ("smollm2", "smollm2"),
        ("gemma3-270m", "gemma3-270m"),
        ("/models/qwen2.5-0.5b-instruct-q4_k_m.gguf", "/models/qwen2.5-0.5b-instruct-q4_k_m.gguf"),
    ],
)
def test_embedded_model_setting(tmp_path: Path, model: str, expected: str | None) -> None:
    assert embedded_model_setting(settings(tmp_path, model=model)) == expected


async def test_default_model_is_the_embedded_model(tmp_path: Path) -> None:
    embedded = EmbeddedProvider("smollm2")
    ollama = OllamaProvider(transport=httpx.MockTransport(must_not_be_called))
    try:
        assert default_model(settings(tmp_path), embedded) == "smollm2-135m"
        assert default_model(settings(tmp_path), ollama) == "llama3.2:latest"
    finally:
        await embedded.aclose()
        await ollama.aclose()
