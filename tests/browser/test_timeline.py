"""The dashboard's timeline of the last day: a colored mark per beat, kept live."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from ledger.records import Loop, Reason, RunOutcome, RunStart, RunStatus, Trigger
from tests.browser.conftest import ARTIFACTS, StreamingLLM, open_page, serve_site

pytestmark = pytest.mark.browser

REPLY = {"action": "post", "title": "Digest", "content": "All quiet.", "reasoning": "daily"}
HOUR = 3600.0

# (hours ago, loop, status, action, reason): what the history holds before the page opens
SEEDED = [
    (30.0, Loop.HEARTBEAT, RunStatus.OK, "post", None),  # older than a day: not drawn
    (20.0, Loop.HEARTBEAT, RunStatus.OK, "comment", None),  # acted
    (12.0, Loop.HEARTBEAT, RunStatus.OK, "none", None),  # decided
    (8.0, Loop.HEARTBEAT, RunStatus.DRY_RUN, "post", None),  # decided (a dry run never acts)
    (6.0, Loop.HEARTBEAT, RunStatus.SKIPPED, None, Reason.EMPTY_INSTRUCTIONS),
    (4.0, Loop.HEARTBEAT, RunStatus.FAILED, None, Reason.UNREACHABLE),
    (2.0, Loop.HEARTBEAT, RunStatus.REJECTED, "comment", Reason.UNKNOWN_POST),  # failed
    (1.0, Loop.REFLECTION, RunStatus.OK, None, None),  # another loop: not a beat
]


def _seed(tx: Any) -> None:
    now = time.time()
    for hours, loop, status, action, reason in SEEDED:
        outcome = RunOutcome(status=status, reason=reason, action=action, summary="seeded")
        run_id = tx.record_run(
            RunStart(thread_id="default", loop=loop, trigger=Trigger.SCHEDULE), outcome
        )
        at = now - hours * HOUR
        tx.conn.execute(
            "UPDATE runs SET started_at = ?, finished_at = ? WHERE id = ?", (at, at + 1, run_id)
        )


async def marks(page: Any) -> list[tuple[str, float]]:
    found: list[tuple[str, float]] = await page.eval_on_selector_all(
        "#timeline .tl-mark",
        "els => els.map(e => [e.dataset.kind, parseFloat(e.getAttribute('x'))])",
    )
    return found


async def test_the_timeline_draws_the_last_day_of_beats(browser: Any, workspace: Path) -> None:
    llm = StreamingLLM(REPLY, chunks=2, pause=0.05)
    async with serve_site(workspace, llm) as site:
        await site.service.store.write(_seed)
        async with open_page(browser, site) as page:
            legend = page.locator("#timeline-legend")
            await expect(legend.locator("[data-kind=acted]")).to_have_text("acted 1")
            await expect(legend.locator("[data-kind=decided]")).to_have_text("decided 2")
            await expect(legend.locator("[data-kind=skipped]")).to_have_text("skipped 1")
            await expect(legend.locator("[data-kind=failed]")).to_have_text("failed 2")
            drawn = await marks(page)
            assert [k for k, _ in sorted(drawn, key=lambda m: m[1])] == [
                "acted",
                "decided",
                "decided",
                "skipped",
                "failed",
                "failed",
            ]
            xs = [x for _, x in drawn]
            assert all(0 <= x <= 960 for x in xs)
            colors = await page.eval_on_selector_all(
                "#timeline .tl-mark", "els => [...new Set(els.map(e => getComputedStyle(e).fill))]"
            )
            assert len(colors) == 4  # one color per kind
            label = await page.locator("#timeline svg").get_attribute("aria-label")
            assert label == "Beats of the last 24 hours: 1 acted, 2 decided, 1 skipped, 2 failed"

            await page.locator("#run-now").click()  # a live beat joins at the right end
            await expect(legend.locator("[data-kind=acted]")).to_have_text("acted 2")
            newest = max(await marks(page), key=lambda m: m[1])
            assert newest[0] == "acted" and newest[1] > 950
            assert site.errors == [] and site.dialogs == []
            ARTIFACTS.mkdir(exist_ok=True)
            await page.locator("#timeline").screenshot(path=str(ARTIFACTS / "timeline.png"))
