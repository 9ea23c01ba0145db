"""Shared fixtures: a workspace, the app through its lifespan, and a live uvicorn server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from app.main import create_app
from app.service import Service
from app.settings import Settings
from app.sse import serve

DEFAULT_MD = """# Heartbeat

## Checklist
- [ ] Scan the Ledger for new posts
- [x] Check open contradictions

## Rules
If nothing needs doing, reply HEARTBEAT_OK.

## Proactive Behaviors
- Vote up questions from the user
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "HEARTBEAT.md").write_text(DEFAULT_MD, encoding="utf-8")
    return ws


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    """An app inside its lifespan, with a client bound to it."""

    def __init__(self, app: Starlette, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    @property
    def service(self) -> Service:
        svc: Service = self.app.state.service
        return svc


@asynccontextmanager
async def running_app(settings: Settings, **kwargs: Any) -> AsyncIterator[Running]:
    app = create_app(settings, **kwargs)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8000", timeout=30.0
        ) as client:
            yield Running(app, client)


AppFactory = Callable[..., Awaitable[Running]]


@pytest.fixture
async def make_app(workspace: Path) -> AsyncIterator[AppFactory]:
    """``await make_app(ollama_url=..., **settings_overrides, clock=..., start_loops=...)``."""
    stack: list[Any] = []

    async def factory(**kwargs: Any) -> Running:
        app_kwargs = {
            k: kwargs.pop(k)
            for k in ("clock", "llm", "llm_transport", "start_loops")
            if k in kwargs
        }
        kwargs.setdefault("llm_provider", "ollama")  # never the embedded model by surprise
        settings = Settings.for_workspace(workspace, **kwargs)
        cm = running_app(settings, **app_kwargs)
        running = await cm.__aenter__()
        stack.append(cm)
        return running

    yield factory
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


@asynccontextmanager
async def live_server(app: Starlette, port: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on loopback (lifespan included); yields the base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(serve(server))  # as `heartbeat serve` runs it
    for _ in range(500):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
