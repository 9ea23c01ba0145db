"""Wakes through the API and the service: bad inputs, what each kind of run records, coalescing,
the flood guard's answers, and wakes held for the next scheduled beat (across a restart too)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.limits import WAKE_TEXT_MAX
from ledger.records import Run, Trigger
from ledger.wakes import WakeMode
from loops.clock import FakeClock
from tests.backends import Backend
from tests.conftest import AppFactory, Running
from tests.fakes.provider import ScriptedLLM
from tests.integration.test_scheduler import START, runs, service

URL = "/api/threads/default/heartbeat/wake"


@pytest.fixture
def llm() -> ScriptedLLM:
    return ScriptedLLM()


@pytest.fixture
async def api(make_app: AppFactory, llm: ScriptedLLM) -> Running:
    return await make_app(llm=llm, start_loops=False)


async def finished_runs(api: Running, count: int, thread_id: str = "default") -> list[Run]:
    """The thread's runs, oldest first, once ``count`` of them have finished."""
    for _ in range(500):
        rows = await runs(api.service, thread_id)
        if sum(r.finished_at is not None for r in rows) >= count:
            return rows
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} run(s) did not finish: {rows}")


def error(resp: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = resp.json()["error"]
    return body


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"text": "x", "mode": "later"}, 422, "invalid_value", "mode"),
        ({"text": "x", "mode": 1}, 422, "invalid_value", "mode"),
        ({"text": ""}, 422, "invalid_value", "text"),
        ({"text": "   "}, 422, "invalid_value", "text"),
        ({"text": "x" * (WAKE_TEXT_MAX + 1)}, 422, "too_long", "text"),
        ({"mode": "now"}, 422, "missing_field", "text"),
        ({"text": 5}, 422, "invalid_type", "text"),
        ({"text": "a\x07b"}, 422, "invalid_value", "text"),
        ({"text": "x", "when": "now"}, 422, "unknown_field", "when"),
        ([], 422, "invalid_body", "body"),
    ],
)
async def test_bad_wakes_are_refused(
    api: Running, body: Any, status: int, code: str, field: str
) -> None:
    r = await api.client.post(URL, json=body)
    assert r.status_code == status, r.text
    assert (error(r)["code"], error(r)["field"]) == (code, field)
    assert await runs(api.service) == []


async def test_a_wake_for_an_unknown_or_misnamed_thread(api: Running) -> None:
    for mode in WakeMode:
        r = await api.client.post(
            "/api/threads/nope/heartbeat/wake", json={"text": "x", "mode": mode}
        )
        assert r.status_code == 404 and error(r)["code"] == "not_found"
    r = await api.client.post("/api/threads/-bad-/heartbeat/wake", json={"text": "x"})
    assert r.status_code == 422 and error(r)["code"] == "invalid_thread_id"


async def test_a_wake_runs_a_beat_told_the_event_as_data(api: Running, llm: ScriptedLLM) -> None:
    sub = api.service.bus.subscribe()
    r = await api.client.post(URL, json={"text": "  the build failed  "})
    assert r.status_code == 202
    assert r.json() == {
        "ok": True,
        "thread_id": "default",
        "mode": "now",
        "outcome": "started",
        "events": 1,
    }
    (run,) = await finished_runs(api, 1)
    assert (run.trigger, run.event_text, run.status) == ("wake", "the build failed", "ok")
    prompt = llm.requests[0].messages[1]["content"]
    data = prompt.split("<<<DATA\n", 1)[1].split("\nDATA>>>", 1)[0]
    assert '  "the build failed"' in data.splitlines()
    history = (await api.client.get("/api/threads/default/heartbeat/history")).json()
    assert history["items"][0]["trigger"] == "wake"
    assert history["items"][0]["event_text"] == "the build failed"
    events = {e.type: e.data for e in sub.take()}
    sub.close()
    for kind in ("run_started", "run_finished"):
        assert (events[kind]["trigger"], events[kind]["event_text"]) == ("wake", "the build failed")
    status = (await api.client.get("/api/heartbeat/status")).json()
    assert status["wakes"] == {"waiting": 0, "counts": {"started": 1}}


async def test_run_now_records_trigger_manual_without_event(api: Running) -> None:
    r = await api.client.post("/api/threads/default/heartbeat/run-now")
    assert (r.json()["trigger"], r.json()["event_text"]) == ("manual", None)


async def test_wakes_during_a_run_coalesce_into_one_more_beat(
    make_app: AppFactory, llm: ScriptedLLM
) -> None:
    api = await make_app(llm=llm, start_loops=False, wake_min_spacing=0.0)
    llm.gate = asyncio.Event()
    c = api.client
    assert (await c.post(URL, json={"text": "first"})).json()["outcome"] == "started"
    for _ in range(200):
        if llm.active:
            break
        await asyncio.sleep(0.01)
    outcomes = [
        (await c.post(URL, json={"text": text})).json()["outcome"]
        for text in ("second", "third", "fourth")
    ]
    assert outcomes == ["queued", "coalesced", "coalesced"]
    llm.gate.set()
    rows = await finished_runs(api, 2)
    assert [(r.trigger, r.event_text) for r in rows] == [
        ("wake", "first"),
        ("wake", "second\nthird\nfourth"),
    ]


async def test_a_flood_is_answered_202_or_429_never_5xx(
    make_app: AppFactory, llm: ScriptedLLM
) -> None:
    api = await make_app(llm=llm, start_loops=False, wake_min_spacing=30.0, wake_per_minute=10)
    c = api.client
    answers = await asyncio.gather(*(c.post(URL, json={"text": f"e{i}"}) for i in range(60)))
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {202, 429} and statuses.count(202) == 10
    refused = [r for r in answers if r.status_code == 429]
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert {error(r)["code"] for r in refused} == {"wake_refused"}
    await asyncio.sleep(0.2)
    rows = await finished_runs(api, 1)
    assert 1 <= len(rows) <= 2 and {r.status for r in rows} == {"ok"}


async def test_held_wakes_go_to_the_next_scheduled_beat_even_across_a_restart(
    workspace: Path,
) -> None:
    clock = FakeClock(START)
    async with service(workspace, clock) as svc:
        await svc.set_config("default", {"every_seconds": 600})
        held = await svc.waker.wake("default", "a parcel arrived", WakeMode.NEXT_HEARTBEAT)
        assert (held.outcome, held.events) == ("held", 1)
        await clock.advance(600)
        await svc.waker.wake("default", "first", WakeMode.NEXT_HEARTBEAT)
        second = await svc.waker.wake("default", "second", WakeMode.NEXT_HEARTBEAT)
        assert second.events == 2 and await svc.store.held_wake("default") == (
            "first\nsecond",
            2,
        )
    clock.jump(600 * 3)  # down for three slots: the held wakes wait for the catch-up
    async with service(workspace, clock) as svc:
        await clock.advance(61)
        await clock.advance(600)
        rows = [r for r in await runs(svc) if r.status == "ok"]
        assert [(r.trigger, r.event_text) for r in rows] == [
            ("schedule", "a parcel arrived"),
            ("catch_up", "first\nsecond"),
            ("schedule", None),
        ]
        assert await svc.store.held_wake("default") is None


async def test_every_kind_of_run_records_its_trigger_and_event(workspace: Path) -> None:
    clock = FakeClock(START)
    async with service(workspace, clock, ScriptedLLM()) as svc:
        await svc.set_config("default", {"every_seconds": 600})
        await svc.run_now("default")
        for trigger, text in ((Trigger.WAKE, "woken"), (Trigger.LEDGER_EVENT, "new post")):
            await svc.waker.wake("default", text, WakeMode.NOW, trigger)
            for _ in range(200):
                await clock.settle()
                if not svc.waker.waiting and not svc.executor.in_flight:
                    break
                await asyncio.sleep(0.01)
            await clock.advance(30)  # past the flood guard's spacing
        await clock.advance(600)
        rows = await runs(svc)
        assert [(r.trigger, r.event_text) for r in rows] == [
            ("manual", None),
            ("wake", "woken"),
            ("ledger_event", "new post"),
            ("schedule", None),
        ]
        assert all(r.prompt_tokens is not None for r in rows)


async def test_a_thread_wakes_on_the_ledger_events_its_config_names(
    make_app: AppFactory, llm: ScriptedLLM
) -> None:
    api = await make_app(llm=llm, start_loops=False, wake_min_spacing=0.0)
    c = api.client
    r = await c.post("/api/threads/default/heartbeat/config", json={"wake_on": ["comment"]})
    assert r.status_code == 200 and r.json()["wake_on"] == ["comment"]
    r = await c.post("/api/threads/watcher/heartbeat/config", json={"wake_on": ["mention"]})
    assert r.status_code == 200
    bad = await c.post("/api/threads/default/heartbeat/config", json={"wake_on": ["vote"]})
    assert bad.status_code == 422 and error(bad)["field"] == "wake_on"

    r = await c.post("/api/ledger/posts", json={"title": "Lunch?", "content": "Where to go"})
    pid = r.json()["post_id"]  # a post: neither thread wakes on posts, nor is @agent named
    r = await c.post(f"/api/ledger/posts/{pid}/comments", json={"content": "@agent, any idea?"})
    assert r.status_code == 201
    (run,) = await finished_runs(api, 1)
    assert run.trigger == "ledger_event"
    assert run.event_text == f"new comment by user on Ledger post {pid}: @agent, any idea?"
    (mention,) = await finished_runs(api, 1, "watcher")
    assert (mention.trigger, mention.event_text) == ("ledger_event", run.event_text)
    await asyncio.sleep(0.1)
    assert len(await runs(api.service)) == 1 and len(await runs(api.service, "watcher")) == 1


async def test_the_agents_own_posts_never_wake_a_thread(
    make_app: AppFactory, llm: ScriptedLLM
) -> None:
    api = await make_app(llm=llm, start_loops=False)
    c = api.client
    await c.post("/api/threads/default/heartbeat/config", json={"wake_on": ["post"]})
    llm.enqueue({"action": "post", "title": "Digest", "content": "@agent", "reasoning": "r"})
    r = await c.post("/api/threads/default/heartbeat/run-now")
    assert r.json()["action"] == "post" and r.json()["status"] == "ok"
    await asyncio.sleep(0.2)
    assert [run.trigger for run in await runs(api.service)] == ["manual"]


async def test_wake_on_is_known_after_a_restart(make_app: AppFactory, llm: ScriptedLLM) -> None:
    first = await make_app(llm=llm, start_loops=False)
    await first.client.post("/api/threads/default/heartbeat/config", json={"wake_on": ["post"]})
    second = await make_app(llm=ScriptedLLM(), start_loops=False)  # the same database file
    assert second.service.wake_on.threads_for("post", "user", "x") == ["default"]


async def test_a_wake_held_for_a_disabled_thread_is_refused_409(
    backend: Backend, make_app: AppFactory, llm: ScriptedLLM
) -> None:
    api = await make_app(llm=llm, start_loops=False, **backend.settings())
    c = api.client
    await c.post("/api/threads/default/heartbeat/config", json={"enabled": False})
    r = await c.post(URL, json={"text": "build failed", "mode": "next-heartbeat"})
    assert r.status_code == 409
    body = error(r)
    assert (body["code"], body["field"], body["reason"]) == (
        "thread_disabled",
        "thread_id",
        "heartbeat_disabled",
    )
    assert "disabled" in body["message"]
    assert await api.service.store.held_wake("default") is None
    # a wake now is an explicit request, as run-now: it runs while disabled
    r = await c.post(URL, json={"text": "build failed", "mode": "now"})
    assert r.status_code == 202
    r = await c.post(
        "/api/threads/nosuch/heartbeat/wake", json={"text": "x", "mode": "next-heartbeat"}
    )
    assert r.status_code == 404


async def test_disabling_a_thread_drops_its_held_wakes_with_a_record(
    backend: Backend, make_app: AppFactory, llm: ScriptedLLM
) -> None:
    api = await make_app(llm=llm, start_loops=False, **backend.settings())
    c, config = api.client, "/api/threads/default/heartbeat/config"
    await c.post(config, json={"every_seconds": 600})
    for text in ("first", "second"):
        r = await c.post(URL, json={"text": text, "mode": "next-heartbeat"})
        assert r.status_code == 202 and r.json()["outcome"] == "held"
    assert (await c.post(config, json={"enabled": False})).status_code == 200
    assert await api.service.store.held_wake("default") is None
    rows = await runs(api.service)
    assert [(r.trigger, r.status, r.reason) for r in rows] == [("wake", "skipped", "disabled")]
    assert rows[0].event_text is not None
    assert "first" in rows[0].event_text and "second" in rows[0].event_text
    scraped = (await c.get("/metrics")).text
    assert (
        'heartbeat_runs_total{loop="heartbeat",reason="disabled",status="skipped",trigger="wake"}'
        " 1.0" in scraped
    )
    # enabled again (days later): its next beat is told nothing of them
    assert (await c.post(config, json={"enabled": True})).status_code == 200
    assert await api.service.store.held_wake("default") is None
    run = await api.service.run_now("default")
    assert run.event_text is None and len(llm.requests) == 1
    # disabling a thread that holds nothing records nothing
    await c.post(config, json={"enabled": False})
    assert len(await runs(api.service)) == 2
