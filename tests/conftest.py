"""Shared fixtures: a workspace, the app through its lifespan, and a live uvicorn server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from app import sse
from app.main import create_app
from app.service import Service
from app.settings import Settings
from heartbeat_md import parse
from ledger.decisions import DECISION_SCHEMA
from loops.llm import ChatRequest
from loops.prompt import Context, PostView, build_messages
from tests.backends import BACKENDS, Backend, backend_for

ROOT = Path(__file__).resolve().parents[1]

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
    task = asyncio.create_task(sse.serve(server))  # as `heartbeat serve` runs it
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


@contextlib.contextmanager
def child_process(
    name: str, argv: list[str], *, log: Path, ready_url: str, within: float, **popen: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` with its output in ``log``, wait up to ``within`` seconds until
    ``GET ready_url`` answers 200 (failing with the log if it exits or never does), and stop it
    on the way out. ``name`` says what it is in those failures."""
    with log.open("w") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, **popen)
    try:
        deadline = time.monotonic() + within
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited: {log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} did not answer in {within:g} s: {log.read_text()}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def serve(workspace: Path, **env: str) -> Iterator[str]:
    """``heartbeat serve`` as a child process on a free port, with ``env`` over this process's
    environment (Ollama pointed at a port nothing listens on); yields its URL once it answers.
    Its output goes to ``workspace / "service.log"``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full_env = {
        **os.environ,
        "HEARTBEAT_WORKSPACE": str(workspace),
        "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "CRT_HEARTBEAT_LOOP_ENABLED": "false",
        "LOG_LEVEL": "INFO",
        **env,
    }
    with child_process(
        "the service",
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        log=workspace / "service.log",
        ready_url=f"{url}/api/heartbeat/status",
        within=60,
        cwd=ROOT,
        env=full_env,
    ):
        yield url


def decision_request(
    max_tokens: int = 300,
    *,
    model: str = "ignored-by-the-embedded-provider",
    temperature: float = 0.2,
) -> ChatRequest:
    """A heartbeat's real decision prompt over one question in the Ledger, for a real model."""
    ctx = Context(
        thread_id="default",
        thread_title="Default",
        local_time="Monday 2026-03-02 10:00",
        timezone="UTC",
        messages=[{"role": "user", "content": "Keep an eye on the Ledger for me."}],
        ledger=[
            PostView(
                id="post_0123456789ab",
                author="user",
                title="What is the best way to back up my notes?",
                score=0,
                comment_count=0,
                age="5m ago",
                content="I keep my notes on one laptop. How do I back them up every day?",
            )
        ],
    )
    return ChatRequest(
        model=model,
        messages=build_messages(parse(DEFAULT_MD), ctx, DECISION_SCHEMA),
        schema=DECISION_SCHEMA,
        temperature=temperature,
        max_tokens=max_tokens,
    )


ACTIONS = {"post", "comment", "vote", "none"}


def run_now(url: str, *, max_tokens: int, temperature: float, timeout: float) -> dict[str, Any]:
    """Set the default thread's sampling, run its heartbeat now over HTTP and return the run,
    checked to have ended with a decision."""
    config = httpx.post(
        f"{url}/api/threads/default/heartbeat/config",
        json={"max_tokens": max_tokens, "temperature": temperature},
        timeout=30,
    )
    assert config.status_code == 200, config.text
    answer = httpx.post(f"{url}/api/threads/default/heartbeat/run-now", timeout=timeout)
    assert answer.status_code == 200, answer.text
    run: dict[str, Any] = answer.json()
    assert run["status"] in ("ok", "dry_run"), run
    assert run["action"] in ACTIONS, run
    assert run["decision"] is not None and run["decision"]["action"] == run["action"]
    return run


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """A fresh database of each storage backend (see ``tests.backends``)."""
    async for opened in backend_for(request.param, tmp_path):
        yield opened
