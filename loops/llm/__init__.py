"""LLM clients: one streaming interface (``LLMProvider``), two HTTP providers.

``OllamaProvider`` speaks Ollama's native ``/api/chat``; ``OpenAIProvider`` speaks
OpenAI-compatible ``/v1/chat/completions`` (Ollama ``/v1``, llama.cpp, llama-cpp-python, vLLM,
LM Studio).
Both share the timeout and retry policy of ``loops.llm.retry`` and raise only ``LLMError``.
"""

from .base import ChatRequest as ChatRequest
from .base import ChatResult as ChatResult
from .base import ErrorReason as ErrorReason
from .base import Health as Health
from .base import LLMError as LLMError
from .base import LLMProvider as LLMProvider
from .base import TokenSink as TokenSink
from .ollama import DEFAULT_OLLAMA_HOST as DEFAULT_OLLAMA_HOST
from .ollama import OllamaProvider as OllamaProvider
from .ollama import normalize_model_name as normalize_model_name
from .ollama import parse_ollama_host as parse_ollama_host
from .openai import SCHEMA_FORMS as SCHEMA_FORMS
from .openai import OpenAIProvider as OpenAIProvider
from .openai import SchemaForm as SchemaForm
from .openai import normalize_openai_base_url as normalize_openai_base_url
from .openai import parse_schema_form as parse_schema_form
from .retry import RetryPolicy as RetryPolicy
