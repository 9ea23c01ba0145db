"""LLM clients: one streaming interface (``LLMProvider``), two HTTP providers.

``OllamaProvider`` speaks Ollama's native ``/api/chat``; ``OpenAIProvider`` speaks
OpenAI-compatible ``/v1/chat/completions`` (Ollama ``/v1``, llama.cpp, llama-cpp-python, vLLM,
LM Studio).
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
from .openai import (
    SCHEMA_FORMS,
    OpenAIProvider,
    SchemaForm,
    normalize_openai_base_url,
    parse_schema_form,
)
from .retry import RetryPolicy

__all__ = [
    "DEFAULT_OLLAMA_HOST",
    "SCHEMA_FORMS",
    "ChatRequest",
    "ChatResult",
    "ErrorReason",
    "Health",
    "LLMError",
    "LLMProvider",
    "OllamaProvider",
    "OpenAIProvider",
    "RetryPolicy",
    "SchemaForm",
    "TokenSink",
    "normalize_model_name",
    "normalize_openai_base_url",
    "parse_ollama_host",
    "parse_schema_form",
]
