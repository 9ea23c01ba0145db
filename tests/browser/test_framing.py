"""The dashboard under the Content-Security-Policy the service sends, and refusing to be framed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.conftest import StreamingLLM, open_page, serve_site

pytestmark = pytest.mark.browser

REPLY = {"action": "post", "title": "Digest", "content": "Quiet.", "reasoning": "routine"}

# Records every CSP violation from here on (the console catches those during the first load).
WATCH_VIOLATIONS = """() => {
  window.cspViolations = [];
  document.addEventListener('securitypolicyviolation',
    (e) => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));
}"""


async def test_the_dashboard_works_under_the_sent_policy(browser: Any, workspace: Path) -> None:
    async with serve_site(workspace, StreamingLLM(REPLY, chunks=3, pause=0.05)) as site:
        async with open_page(browser, site) as page:
            document = await page.reload()  # the page as loaded, with the headers it came with
            assert "frame-ancestors 'none'" in await document.header_value(
                "content-security-policy"
            )
            await page.evaluate(WATCH_VIOLATIONS)
            await expect(page.locator("#thread-select")).to_have_value("default")
            await expect(page.locator("#live-state")).to_have_text("live: connected")
            await page.click("#run-now")
            item = page.locator("#feed .feed-item").first
            await expect(item.locator(".badge")).to_have_text("ok")
            await expect(item.locator(".decision")).to_contain_text("Digest")
            await expect(page.locator("#posts h3", has_text="Digest")).to_be_visible()
            await page.click("#new-thread summary")
            await page.fill("#new-thread-id", "framed")
            await page.click("#new-thread-form button[type=submit]")
            await expect(page.locator("#thread-select")).to_have_value("framed")
            assert await page.evaluate("window.cspViolations") == []
            assert site.errors == [] and site.dialogs == []


async def test_another_page_cannot_frame_the_dashboard(browser: Any, workspace: Path) -> None:
    async with serve_site(workspace, StreamingLLM(REPLY)) as site:
        context = await browser.new_context()
        try:
            page = await context.new_page()
            refused = page.expect_console_message(lambda m: "frame-ancestors 'none'" in m.text)
            async with refused as message:
                await page.set_content(f'<iframe src="{site.base}/"></iframe>')
            assert "has been blocked" in (await message.value).text
            frame = page.frames[1]
            assert await frame.locator("#thread-select").count() == 0
        finally:
            await context.close()
