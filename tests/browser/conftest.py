"""A real headless Chromium (Debian's, driven by Playwright) against the app on a live server."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.main import create_app
from app.service import Service
from app.settings import Settings
from loops.llm import ChatRequest, ChatResult, Health, TokenSink
from tests.conftest import live_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


class StreamingLLM:
    """An LLMProvider that streams its reply in ``chunks`` pieces with ``pause`` s between."""

    name = "fake"
    base_url = "http://fake-llm.invalid:11434"

    def __init__(self, reply: dict[str, Any], *, chunks: int = 6, pause: float = 0.15) -> None:
        self.reply = reply
        self.chunks = chunks
        self.pause = pause
        self.reachable = True

    @property
    def text(self) -> str:
        return json.dumps(self.reply)

    async def chat(
        self, req: ChatRequest, *, on_token: TokenSink | None = None, deadline: float | None = None
    ) -> ChatResult:
        text = self.text
        size = -(-len(text) // self.chunks)
        for start in range(0, len(text), size):
            await asyncio.sleep(self.pause)
            if on_token is not None:
                on_token(text[start : start + size])
        return ChatResult(
            text=text,
            model=req.model,
            done_reason="stop",
            prompt_tokens=42,
            completion_tokens=self.chunks,
            load_ms=0.0,
            total_ms=self.chunks * self.pause * 1000,
            attempts=1,
        )

    async def health(self, model: str) -> Health:
        if not self.reachable:
            return Health(self.name, self.base_url, False, None, model, None, "connection refused")
        return Health(self.name, self.base_url, True, "0.0-fake", model, True, None)

    async def aclose(self) -> None:
        return None


@dataclass
class Site:
    base: str
    api: httpx.AsyncClient
    service: Service
    workspace: Path
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@asynccontextmanager
async def serve_site(workspace: Path, llm: StreamingLLM, **settings: Any) -> AsyncIterator[Site]:
    app = create_app(Settings.for_workspace(workspace, **settings), llm=llm, start_loops=True)
    token = settings.get("api_token")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        live_server(app) as base,
        httpx.AsyncClient(base_url=base, timeout=10.0, headers=headers) as api,
    ):
        yield Site(base, api, app.state.service, workspace)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed; run `make browser-deps`")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
            args=CHROMIUM_ARGS,
            headless=True,
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@asynccontextmanager
async def open_page(browser: Any, site: Site, *, width: int = 1280) -> AsyncIterator[Any]:
    """A fresh page on the dashboard that records dialogs and script errors in ``site``."""
    context = await browser.new_context(viewport={"width": width, "height": 900})
    page = await context.new_page()

    async def on_dialog(dialog: Any) -> None:
        site.dialogs.append(dialog.message)
        await dialog.dismiss()

    def on_console(message: Any) -> None:
        # refused requests (the 401 before a token is given) are expected; anything else
        # (a script error, a Content-Security-Policy violation) is not
        if message.type == "error" and "Failed to load resource" not in message.text:
            site.errors.append(message.text)

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.on("pageerror", lambda exc: site.errors.append(str(exc)))
    page.set_default_timeout(5000)
    try:
        await page.goto(site.base + "/")
        yield page
    finally:
        await context.close()  # closes the EventSource before the server stops
