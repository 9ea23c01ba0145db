"""LLM clients: one streaming interface (``LLMProvider``), two HTTP providers.

``OllamaProvider`` speaks Ollama's native ``/api/chat``; ``OpenAIProvider`` speaks
OpenAI-compatible ``/v1/chat/completions`` (Ollama ``/v1``, llama.cpp, llama-cpp-python, vLLM).
Both share the timeout and retry policy of ``loops.llm.retry`` and raise only ``LLMError``.
"""

from .base import (
    ChatRequest,
    ChatResult,
    ErrorReason,
    Health,
    LLMError,
    LLMProvider,
    TokenSink,
)
from .ollama import DEFAULT_OLLAMA_HOST, OllamaProvider, normalize_model_name, parse_ollama_host
from .openai import OpenAIProvider, SchemaStyle, normalize_openai_base_url
from .retry import RetryPolicy

__all__ = [
    "DEFAULT_OLLAMA_HOST",
    "ChatRequest",
    "ChatResult",
    "ErrorReason",
    "Health",
    "LLMError",
    "LLMProvider",
    "OllamaProvider",
    "OpenAIProvider",
    "RetryPolicy",
    "SchemaStyle",
    "TokenSink",
    "normalize_model_name",
    "normalize_openai_base_url",
    "parse_ollama_host",
]
