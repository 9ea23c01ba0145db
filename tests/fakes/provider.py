"""An in-process LLM provider for scheduler and API tests that do not exercise the wire.

(The wire protocols are tested against real HTTP fakes in ``tests/fakes/llm_servers.py``.)
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

from loops.llm import ChatRequest, ChatResult, Health, LLMError, TokenSink

NONE_REPLY = json.dumps({"action": "none", "reasoning": "nothing to do"})


class ScriptedLLM:
    """Replies from a queue (text, dict or LLMError), else ``default``; records every request."""

    name = "scripted"
    base_url = "memory://scripted"

    def __init__(self, default: str | dict[str, Any] = NONE_REPLY) -> None:
        self.default = default
        self.replies: deque[str | dict[str, Any] | LLMError] = deque()
        self.requests: list[ChatRequest] = []
        self.gate: asyncio.Event | None = None  # when set, calls wait for it to open
        self.active = 0
        self.peak = 0
        self.reachable = True

    def enqueue(self, *replies: str | dict[str, Any] | LLMError) -> None:
        self.replies.extend(replies)

    async def chat(
        self,
        req: ChatRequest,
        *,
        on_token: TokenSink | None = None,
        deadline: float | None = None,
    ) -> ChatResult:
        self.requests.append(req)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.gate is not None:
                await self.gate.wait()
            reply = self.replies.popleft() if self.replies else self.default
            if isinstance(reply, LLMError):
                raise reply
            text = reply if isinstance(reply, str) else json.dumps(reply)
            if on_token is not None:
                for i in range(0, len(text), 16):
                    on_token(text[i : i + 16])
            return ChatResult(
                text=text,
                model=req.model,
                done_reason="stop",
                prompt_tokens=10,
                completion_tokens=len(text) // 4,
                load_ms=None,
                total_ms=1.0,
                attempts=1,
            )
        finally:
            self.active -= 1

    async def health(self, model: str) -> Health:
        return Health(
            provider=self.name,
            base_url=self.base_url,
            reachable=self.reachable,
            version="test",
            model=model,
            model_present=True,
            detail=None,
        )

    async def aclose(self) -> None:
        return None
