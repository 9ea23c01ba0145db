"""The live feed honours a token event's ``reset`` (the LLM was asked again for that run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.conftest import StreamingLLM, open_page, serve_site

pytestmark = pytest.mark.browser

REPLY = {"action": "none", "reasoning": "quiet"}


async def test_a_token_reset_discards_the_text_streamed_so_far(
    browser: Any, workspace: Path
) -> None:
    async with serve_site(workspace, StreamingLLM(REPLY)) as site:
        async with open_page(browser, site) as page:
            await expect(page.locator("#live-state")).to_have_text("live: connected")
            bus = site.service.bus
            run = {"run_id": 9001, "thread_id": "default"}
            tokens = page.locator('#feed .feed-item[data-run="9001"] .tokens')
            bus.publish(
                "run_started",
                {**run, "loop": "heartbeat", "trigger": "manual", "model": "m", "dry_run": True},
                thread_id="default",
            )
            bus.publish("token", {**run, "text": "not json, "}, thread_id="default")
            bus.publish("token", {**run, "text": "<b>at all</b>"}, thread_id="default")
            await expect(tokens).to_have_text("not json, <b>at all</b>")
            bus.publish("token", {**run, "text": "", "reset": True}, thread_id="default")
            await expect(tokens).to_have_text("")
            bus.publish("token", {**run, "text": '{"action": '}, thread_id="default")
            bus.publish("token", {**run, "text": '"none"}'}, thread_id="default")
            await expect(tokens).to_have_text('{"action": "none"}')
            # another run's reset leaves this one alone
            bus.publish(
                "token",
                {"run_id": 9002, "thread_id": "default", "text": "", "reset": True},
                thread_id="default",
            )
            bus.publish("token", {**run, "text": "!"}, thread_id="default")
            await expect(tokens).to_have_text('{"action": "none"}!')
            assert site.errors == [] and site.dialogs == []
