"""The demo seed: only on a new database without HEARTBEAT.md, once; its first run comes soon."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from app.demo import DEMO_HEARTBEAT_MD, DEMO_MESSAGES, DEMO_POSTS, seed_demo
from app.service import Service
from app.settings import Settings
from heartbeat_md import parse
from ledger import config as hbconfig
from ledger.records import RunStart
from ledger.storage.interface import USER, Storage, Tx
from ledger.storage.sqlite import SqliteStore
from loops.clock import FakeClock
from tests.fakes.provider import ScriptedLLM

START = datetime(2026, 3, 2, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def empty_workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "demo"
    ws.mkdir()
    return ws


@pytest.fixture
async def store(empty_workspace: Path, clock: FakeClock) -> AsyncIterator[Storage]:
    s = await SqliteStore.open(empty_workspace / ".heartbeat" / "heartbeat.db", now=clock.now)
    # what Service.open does on first start
    await s.write(lambda tx: tx.create_thread("default", "Default", None))
    yield s
    await s.close()


async def test_seeds_a_new_database_once(
    store: Storage, empty_workspace: Path, clock: FakeClock
) -> None:
    assert await seed_demo(store, empty_workspace) is True

    md = empty_workspace / "HEARTBEAT.md"
    assert md.read_text(encoding="utf-8") == DEMO_HEARTBEAT_MD
    instructions = parse(md.read_text(encoding="utf-8"))
    assert not instructions.is_empty
    assert instructions.rules and instructions.checklist and instructions.proactive_behaviors
    assert not list(empty_workspace.glob(".HEARTBEAT.*.tmp"))  # atomic write left no temp file

    posts = await store.posts(limit=50)
    assert len(posts) == len(DEMO_POSTS) and 3 <= len(posts) <= 4
    assert any(p.title.rstrip().endswith("?") for p in posts)  # an explicit question
    assert any("free phone" in p.title.lower() for p in posts)  # a spam-like post
    assert any(p.author == USER for p in posts)

    messages = await store.messages("default", limit=50)
    assert [(m.role, m.content) for m in messages] == list(DEMO_MESSAGES)

    thread = await store.get_thread("default")
    cfg, warning = hbconfig.decode_stored(thread.config_json)
    assert warning is None
    assert cfg.enabled and not cfg.dry_run and cfg.every_seconds == 1800
    assert thread.next_run == pytest.approx(START + 15.0)
    assert thread.anchor is not None and thread.next_run - thread.anchor == 1800

    # A second start (same database, HEARTBEAT.md now present) seeds nothing more.
    clock.jump(60)
    assert await seed_demo(store, empty_workspace) is False
    md.unlink()  # even without HEARTBEAT.md the used database is left alone
    assert await seed_demo(store, empty_workspace) is False
    assert not md.exists()
    assert len(await store.posts(limit=50)) == len(DEMO_POSTS)
    assert len(await store.messages("default", limit=50)) == len(DEMO_MESSAGES)


@pytest.mark.parametrize(
    "use",
    ["a_message", "a_post", "another_thread", "a_run"],
)
async def test_never_seeds_a_used_database(store: Storage, empty_workspace: Path, use: str) -> None:

    def use_it(tx: Tx) -> None:
        if use == "a_message":
            tx.add_message("default", "user", "hello")
        elif use == "a_post":
            tx.create_post(USER, "mine", "my own post")
        elif use == "another_thread":
            tx.create_thread("work", "Work", None)
        else:
            tx.start_run(RunStart(thread_id="default", loop="heartbeat", trigger="manual"))

    await store.write(use_it)
    config_before = (await store.get_thread("default")).config_json

    assert await seed_demo(store, empty_workspace) is False

    assert not (empty_workspace / "HEARTBEAT.md").exists()
    assert len(await store.posts(limit=50)) == (1 if use == "a_post" else 0)
    assert (await store.get_thread("default")).config_json == config_before


async def test_never_overwrites_an_existing_heartbeat_md(
    store: Storage, empty_workspace: Path
) -> None:
    mine = "## Rules\nOnly ever reply HEARTBEAT_OK.\n"
    (empty_workspace / "HEARTBEAT.md").write_text(mine, encoding="utf-8")

    assert await seed_demo(store, empty_workspace) is False

    assert (empty_workspace / "HEARTBEAT.md").read_text(encoding="utf-8") == mine
    assert await store.posts(limit=50) == []
    assert await store.messages("default", limit=50) == []


def _idle(svc: Service) -> Callable[[], bool]:
    def idle() -> bool:
        sched = svc.scheduler
        running = svc.supervisor.is_running("heartbeat")
        return not sched._tasks and (not running or sched.timers.waiting)

    return idle


async def test_the_demo_makes_a_real_decision_soon_after_start(
    empty_workspace: Path, clock: FakeClock
) -> None:
    """Through the service: seed after open, start the loops, and the first scheduled run comes
    15 s later, executed for real (not a dry run) on the seeded Ledger."""
    llm = ScriptedLLM()
    svc = await Service.open(Settings.for_workspace(empty_workspace), clock=clock, llm=llm)
    clock.idle = _idle(svc)
    try:
        assert await seed_demo(svc.store, empty_workspace) is True
        spam = next(p for p in await svc.store.posts(limit=10) if "FREE PHONE" in p.title)
        llm.enqueue(
            {
                "action": "vote",
                "post_id": spam.id,
                "vote_direction": "down",
                "reasoning": "an advert",
            }
        )
        await svc.start_loops()
        await clock.advance(14)
        assert await svc.store.history("default") == []
        await clock.advance(2)
        runs = await svc.store.history("default")
        assert [(r.trigger, r.status, r.action) for r in runs] == [("schedule", "ok", "vote")]
        assert runs[0].dry_run is False
        assert (await svc.store.get_post(spam.id)).score == -1
        # the prompt carried the demo's instructions and data
        prompt = json.dumps(llm.requests[0].messages)
        assert "If a post is spam or an advertisement" in prompt
        assert "How do I export my notes to PDF?" in prompt
    finally:
        clock.idle = None
        await svc.close()


class SmallModel(ScriptedLLM):
    """A scripted model standing in for the embedded one (the procedure is picked by name)."""

    name = "embedded"


async def test_with_the_embedded_model_the_first_beat_acts_on_the_obvious_case(
    empty_workspace: Path, clock: FakeClock
) -> None:
    """The rule-by-rule procedure answers the unanswered question; the run records the rule and
    the facts it acted on, and the reasoning the dashboard shows names them."""
    llm = SmallModel()
    llm.enqueue({"comment": "Use File, then Export as PDF."})
    svc = await Service.open(Settings.for_workspace(empty_workspace), clock=clock, llm=llm)
    try:
        assert await seed_demo(svc.store, empty_workspace) is True
        question = next(p for p in await svc.store.posts(limit=10) if "PDF" in p.title)
        run = await svc.run_now("default")
        assert (run.status, run.action) == ("ok", "comment")
        assert run.decision is not None and run.decision["post_id"] == question.id
        assert run.decision["content"] == "Use File, then Export as PDF."
        assert run.decision["strategy"] == "procedure"
        assert run.decision["rule"].startswith("If a post asks a question and has no comments")
        assert {"asks a question", "no comments"} <= set(run.decision["facts"])
        assert "If a post asks a question" in run.decision["reasoning"]
        # the model was asked only for the comment's text, about that post
        (request,) = llm.requests
        assert "How do I export my notes to PDF?" in json.dumps(request.messages)
        assert request.schema is not None and "comment" in request.schema["properties"]
    finally:
        await svc.close()


@pytest.mark.parametrize(
    ("strategy", "decided_by"), [("auto", "prompt"), ("procedure", "procedure")]
)
async def test_a_thread_config_picks_the_procedure(
    empty_workspace: Path, clock: FakeClock, strategy: str, decided_by: str
) -> None:
    """A served model keeps the whole prompt unless the thread's ``strategy`` says otherwise."""
    llm = ScriptedLLM()  # its default reply is the whole decision "none"
    if decided_by == "procedure":
        llm.enqueue({"comment": "Use File, then Export as PDF."})
    svc = await Service.open(Settings.for_workspace(empty_workspace), clock=clock, llm=llm)
    try:
        assert await seed_demo(svc.store, empty_workspace) is True
        await svc.set_config("default", {"strategy": strategy, "dry_run": True})
        run = await svc.run_now("default")
        assert run.decision is not None and run.decision["strategy"] == decided_by
        assert run.action == ("comment" if decided_by == "procedure" else "none")
    finally:
        await svc.close()
