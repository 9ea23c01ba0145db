"""The dashboard in a real headless Chromium: config, HEARTBEAT.md, run now, live feed, Ledger."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from app import openapi
from ledger.limits import CONFIG_TEXT_MAX, INSTRUCTIONS_MAX_BYTES, THREAD_ID_MAX, TITLE_MAX
from tests.browser.conftest import ARTIFACTS, StreamingLLM, open_page, serve_site

pytestmark = pytest.mark.browser

XSS_TITLE = "<img src=x onerror=alert(1)>"
REPLY = {
    "action": "post",
    "title": "Weekly digest",
    "content": "Three threads were quiet; one question is still open.",
    "reasoning": "Summarize <img src=y onerror=alert(2)> for the user",
}
TOKEN = "dashboard-token-0123"

# True while the newest feed item shows streamed text but neither a decision nor an outcome.
STREAMING_NOW = """() => {
  const item = document.querySelector('#feed .feed-item');
  return item !== null
    && item.querySelector('.tokens').textContent.length > 0
    && item.querySelector('.decision').childElementCount === 0
    && item.querySelector('.badge').textContent === 'running';
}"""


async def test_dashboard_end_to_end(browser: Any, workspace: Path) -> None:
    llm = StreamingLLM(REPLY, chunks=6, pause=0.15)
    async with serve_site(workspace, llm) as site:
        r = await site.api.post(
            "/api/ledger/posts", json={"title": XSS_TITLE, "content": "is <b>this</b> bold?"}
        )
        assert r.status_code == 201
        async with open_page(browser, site) as page:
            await expect(page.locator("#thread-select")).to_have_value("default")
            await expect(page.locator("#live-state")).to_have_text("live: connected")
            await _config(page, site)
            await _heartbeat_md(page, site)
            await _scheduler(page)
            await _run_now(page, llm)
            await _ledger(page)
            assert site.dialogs == [], "a dialog fired: some text was run as markup"
            assert site.errors == []
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            await _new_thread(page)
            await page.set_viewport_size({"width": 400, "height": 900})
            await page.screenshot(path=str(ARTIFACTS / "dashboard-narrow.png"), full_page=True)
            llm.reachable = False
            await page.reload()
            await expect(page.locator("#alerts")).to_contain_text(
                "LLM unreachable at http://fake-llm.invalid:11434: connection refused"
            )
            assert site.errors == []


async def _config(page: Any, site: Any) -> None:
    await expect(page.locator("#hint-max_tokens")).to_have_text("10\u20134000")
    await expect(page.locator("#hint-every_seconds")).to_have_text("60\u201386400 seconds")
    await expect(page.locator("#next-run")).to_contain_text("(in 30 min)")
    error = page.locator('#config-form .field-error[data-field="max_tokens"]')
    await page.fill("#cfg-max_tokens", "5")
    await page.click("#config-form button[type=submit]")
    await expect(error).to_have_text("max_tokens must be 10..4000, got 5")
    await expect(page.locator("#cfg-max_tokens")).to_have_attribute("aria-invalid", "true")
    stored = (await site.api.get("/api/threads/default/heartbeat/config")).json()
    assert stored["max_tokens"] == 500, "nothing is stored from a refused config"

    await page.fill("#cfg-max_tokens", "300")
    await page.fill("#cfg-every_seconds", "1h")
    await page.click("#config-form button[type=submit]")
    await expect(page.locator("#config-status")).to_have_text("Saved.")
    await expect(error).to_be_empty()
    await expect(page.locator("#cfg-every_seconds")).to_have_value("3600")
    await expect(page.locator("#next-run")).to_contain_text("(in 1 h)")
    stored = (await site.api.get("/api/threads/default/heartbeat/config")).json()
    assert stored["max_tokens"] == 300 and stored["every_seconds"] == 3600

    budget = page.locator("#hint-daily_token_budget")
    await expect(budget).to_have_text("100\u2013100000000; empty for none")
    await expect(page.locator("#beats-today")).to_contain_text("tokens")
    await page.fill("#cfg-daily_token_budget", "50")
    await page.click("#config-form button[type=submit]")
    refused = page.locator('#config-form .field-error[data-field="daily_token_budget"]')
    await expect(refused).to_have_text("daily_token_budget must be 100..100000000, got 50")
    await page.fill("#cfg-daily_token_budget", "20000")
    await page.fill("#cfg-quiet_after_user_seconds", "120")
    await page.click("#config-form button[type=submit]")
    await expect(page.locator("#config-status")).to_have_text("Saved.")
    await expect(page.locator("#beats-today")).to_contain_text("of 20000 tokens")
    stored = (await site.api.get("/api/threads/default/heartbeat/config")).json()
    assert (stored["daily_token_budget"], stored["quiet_after_user_seconds"]) == (20000, 120)
    await page.fill("#cfg-daily_token_budget", "")
    await page.fill("#cfg-quiet_after_user_seconds", "")
    await page.click("#config-form button[type=submit]")
    await expect(page.locator("#config-status")).to_have_text("Saved.")
    stored = (await site.api.get("/api/threads/default/heartbeat/config")).json()
    assert (stored["daily_token_budget"], stored["quiet_after_user_seconds"]) == (None, None)


async def _heartbeat_md(page: Any, site: Any) -> None:
    await expect(page.locator("#md-state")).to_contain_text("Last modified")
    await page.fill("#md-text", "# Heartbeat\n\n## Rules\n")
    await page.click("#md-form button[type=submit]")
    await expect(page.locator("#md-state")).to_contain_text(
        "Empty instructions: runs will be skipped"
    )
    await expect(page.locator("#alerts")).to_contain_text("Empty instructions")

    text = "# Heartbeat\n\n## Checklist\n- [ ] Post a weekly digest to the Ledger\n"
    await page.fill("#md-text", text)
    await page.click("#md-form button[type=submit]")
    await expect(page.locator("#md-status")).to_have_text("Saved.")
    await expect(page.locator("#md-state")).not_to_contain_text("Empty")
    await expect(page.locator("#alerts")).not_to_contain_text("Empty")
    assert (site.workspace / "HEARTBEAT.md").read_text(encoding="utf-8") == text


async def _scheduler(page: Any) -> None:
    await expect(page.locator("#sched-state")).to_have_text("scheduler: running")
    await page.click("#sched-toggle")
    await expect(page.locator("#sched-state")).to_have_text("scheduler: stopped")
    await expect(page.locator("#alerts")).to_contain_text("Scheduler stopped")
    await page.click("#sched-toggle")
    await expect(page.locator("#sched-state")).to_have_text("scheduler: running")
    await expect(page.locator("#alerts")).not_to_contain_text("Scheduler stopped")


async def _run_now(page: Any, llm: StreamingLLM) -> None:
    await page.click("#run-now")
    await page.wait_for_function(STREAMING_NOW, timeout=3000)
    item = page.locator("#feed .feed-item").first
    partial = await item.locator(".tokens").text_content()
    assert partial and llm.text.startswith(partial) and len(partial) < len(llm.text)
    await expect(page.locator("#run-now")).to_be_disabled()
    await expect(page.locator("#run-now")).to_contain_text("Running")
    await expect(page.locator("#alerts")).to_contain_text("A run is in flight")
    run_id = int(await item.get_attribute("data-run"))

    # a second request while the first is in flight: the 409 names the run in flight
    await page.evaluate("runNow()")
    await expect(page.locator("#run-status")).to_have_text(
        f"Already running: run #{run_id} is in flight."
    )

    await expect(item.locator(".badge")).to_have_text("ok")
    await expect(item.locator(".tokens")).to_have_text(llm.text)
    await expect(item.locator(".decision")).to_contain_text("Weekly digest")
    await expect(item.locator(".decision")).to_contain_text(
        "Summarize <img src=y onerror=alert(2)> for the user"
    )
    await expect(page.locator("#run-now")).to_be_enabled()
    await expect(page.locator("#alerts")).not_to_contain_text("in flight")
    row = page.locator("#history tbody tr").first
    await expect(row).to_have_attribute("data-run", str(run_id))
    for text in (f"#{run_id}", "manual", "ok", "post", "Weekly digest"):
        await expect(row).to_contain_text(text)
    await expect(page.locator("#last-run")).not_to_have_text("never")


async def _ledger(page: Any) -> None:
    posts = page.locator("#posts")
    await expect(posts.locator("h3", has_text="Weekly digest")).to_be_visible()
    hostile = posts.get_by_text(XSS_TITLE, exact=True)
    await expect(hostile).to_be_visible()
    await expect(posts.get_by_text("is <b>this</b> bold?", exact=True)).to_be_visible()
    assert await posts.locator("img, b").count() == 0
    assert await page.locator("#feed img").count() == 0
    assert await page.locator("img").count() == 0
    await expect(posts.locator(".post").first).to_contain_text("0 comments · by agent")


async def _new_thread(page: Any) -> None:
    await page.click("#new-thread summary")
    await page.fill("#new-thread-id", "bad id!")
    await page.click("#new-thread-form button[type=submit]")
    await expect(
        page.locator('#new-thread-form .field-error[data-field="thread_id"]')
    ).to_contain_text("thread ids are 1-128 characters")
    await page.fill("#new-thread-id", "weekly")
    await page.fill("#new-thread-title", "Weekly notes")
    await page.click("#new-thread-form button[type=submit]")
    await expect(page.locator("#thread-select")).to_have_value("weekly")
    await expect(page.locator("#history-empty")).to_be_visible()
    await expect(page.locator("#feed .feed-item")).to_have_count(0)


async def test_the_forms_take_their_limits_from_the_server(
    browser: Any, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inputs' bounds and hints are the OpenAPI document's: changed there, changed here."""
    doc = copy.deepcopy(openapi.document())
    body = doc["paths"]["/api/threads/{thread_id}/heartbeat/config"]["post"]["requestBody"]
    body["content"]["application/json"]["schema"]["properties"]["max_tokens"]["maximum"] = 1234
    monkeypatch.setattr(openapi, "document", lambda: doc)
    async with serve_site(workspace, StreamingLLM(REPLY)) as site:
        async with open_page(browser, site) as page:
            await expect(page.locator("#hint-max_tokens")).to_have_text("10\u20131234")
            await expect(page.locator("#cfg-max_tokens")).to_have_attribute("max", "1234")
            await expect(page.locator("#cfg-max_tokens")).to_have_attribute("min", "10")
            hours = page.locator("#hint-active_hours_end")
            await expect(hours).to_have_text("1\u201324; empty for all day")
            await expect(page.locator("#cfg-active_hours_start")).to_have_attribute("max", "23")
            await expect(page.locator("#cfg-temperature")).to_have_attribute("max", "1")
            for box, size in [
                ("#new-thread-id", THREAD_ID_MAX),
                ("#new-thread-title", TITLE_MAX),
                ("#cfg-timezone", CONFIG_TEXT_MAX["timezone"]),
                ("#md-text", INSTRUCTIONS_MAX_BYTES),
            ]:
                await expect(page.locator(box)).to_have_attribute("maxlength", str(size))
            assert site.errors == []


async def test_dashboard_asks_for_the_api_token_then_works(browser: Any, workspace: Path) -> None:
    llm = StreamingLLM({"action": "none", "reasoning": "all quiet"}, chunks=2, pause=0.05)
    async with serve_site(workspace, llm, api_token=TOKEN) as site:
        async with open_page(browser, site) as page:
            await expect(page.locator("#token-panel")).to_be_visible()
            await page.fill("#token-input", "not-the-token-000")
            await page.click("#token-form button[type=submit]")
            await expect(page.locator("#token-problem")).to_contain_text("refused")
            await page.fill("#token-input", TOKEN)
            await page.click("#token-form button[type=submit]")
            await expect(page.locator("#token-panel")).to_be_hidden()
            await expect(page.locator("#thread-select")).to_have_value("default")
            await expect(page.locator("#live-state")).to_have_text("live: connected")
            assert await page.evaluate("sessionStorage.getItem('heartbeat.token')") == TOKEN

            await page.click("#run-now")
            item = page.locator("#feed .feed-item").first
            await expect(item.locator(".decision")).to_contain_text("all quiet")
            await expect(item.locator(".badge")).to_have_text("ok")
            await expect(page.locator("#history tbody tr")).to_have_count(1)

            llm.pause = 0
            for _ in range(21):  # 22 runs: more than one page of history
                r = await site.api.post("/api/threads/default/heartbeat/run-now")
                assert r.status_code == 200
            await page.reload()  # the token is remembered for this tab: no second prompt
            await expect(page.locator("#thread-select")).to_have_value("default")
            await expect(page.locator("#history tbody tr")).to_have_count(20)
            await page.click("#history-more")
            await expect(page.locator("#history tbody tr")).to_have_count(22)
            await expect(page.locator("#history-more")).to_be_hidden()
            assert await page.locator("#token-panel").is_hidden()
            assert site.dialogs == [] and site.errors == []


async def test_the_agents_text_reads_as_written(browser: Any, workspace: Path) -> None:
    """The sanitizer stores the agent's text HTML-escaped; the dashboard shows the characters
    the model wrote, still as text, live and after a reload."""
    title = "Q&A: \"<draft>\" & 'notes'"
    content = "Bring <b>chapter 5</b> & the Q&amp;A sheet"
    reply = {"action": "post", "title": title, "content": content, "reasoning": "a & b < c"}
    llm = StreamingLLM(reply, chunks=3, pause=0.05)
    async with serve_site(workspace, llm) as site:
        async with open_page(browser, site) as page:
            await expect(page.locator("#live-state")).to_have_text("live: connected")
            await page.click("#run-now")
            item = page.locator("#feed .feed-item").first
            await expect(item.locator(".badge")).to_have_text("ok")
            await expect(item.locator(".summary")).to_have_text(f'post: "{title}"')
            await expect(page.locator("#run-status")).to_contain_text(f'post: "{title}"')

            stored = (await site.api.get("/api/ledger/posts")).json()["items"][0]
            assert stored["author"] == "agent"
            assert stored["title"] == "Q&amp;A: &quot;&lt;draft&gt;&quot; &amp; &#x27;notes&#x27;"
            assert stored["content"] == (
                "Bring &lt;b&gt;chapter 5&lt;/b&gt; &amp; the Q&amp;amp;A sheet"
            )

            for _ in range(2):  # live, then from the API after a reload
                post = page.locator("#posts .post").first
                await expect(post.locator("h3")).to_have_text(title)
                await expect(post.locator(".snippet")).to_have_text(content)
                row = page.locator("#history tbody tr").first
                await expect(row.locator(".summary-cell")).to_have_text(f'post: "{title}"')
                await page.reload()
                await expect(page.locator("#live-state")).to_have_text("live: connected")
            assert await page.locator("#posts b, #feed b").count() == 0
            assert site.dialogs == [] and site.errors == []
