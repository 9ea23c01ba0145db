"""``GET /metrics``: Prometheus' text format after some runs, and the API token's guard."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from loops.clock import FakeClock
from tests.conftest import AppFactory
from tests.fakes.provider import ScriptedLLM
from tests.integration.test_scheduler import START, _idle, runs

WAKE = "/api/threads/default/heartbeat/wake"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_runs_skips_tokens_latency_and_wakes(make_app: AppFactory) -> None:
    api = await make_app(llm=ScriptedLLM(), start_loops=False, wake_per_minute=2)
    c = api.client
    assert (await c.post("/api/threads/default/heartbeat/run-now")).status_code == 200
    assert (await c.post(WAKE, json={"text": "a"})).status_code == 202
    assert (await c.post(WAKE, json={"text": "b"})).status_code == 202  # joins the first
    assert (await c.post(WAKE, json={"text": "c"})).status_code == 429
    for _ in range(300):
        done = [r for r in await api.service.store.history("default") if r.finished_at]
        if len(done) == 2 and not api.service.waker.waiting:  # the wake's beat finished too
            break
        await asyncio.sleep(0.01)
    await c.post("/api/heartbeat/heartbeat.md", json={"content": ""})
    assert (await c.post("/api/threads/default/heartbeat/run-now")).json()["status"] == "skipped"

    r = await c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    got = samples(r.text)

    def runs(trigger: str, status: str, reason: str = "") -> float:
        labels = {"loop": "heartbeat", "trigger": trigger, "status": status, "reason": reason}
        return got.get(("heartbeat_runs_total", tuple(sorted(labels.items()))), 0.0)

    assert runs("manual", "ok") == 1 and runs("wake", "ok") == 1
    assert runs("manual", "skipped", "empty_instructions") == 1
    skips = (("loop", "heartbeat"), ("reason", "empty_instructions"))
    assert got[("heartbeat_skips_total", skips)] == 1
    assert got[("heartbeat_llm_tokens_total", (("kind", "prompt"), ("loop", "heartbeat")))] == 20
    assert got[("heartbeat_llm_latency_seconds_count", (("loop", "heartbeat"),))] == 2
    wakes = {k[1][0][1]: v for k, v in got.items() if k[0] == "heartbeat_wakes_total"}
    assert wakes == {"started": 1, "coalesced": 1, "refused": 1}
    assert got[("heartbeat_llm_queue_depth", ())] == 0
    assert got[("heartbeat_runs_in_flight", ())] == 0


async def test_metrics_need_the_api_token_when_one_is_set(make_app: AppFactory) -> None:
    api = await make_app(llm=ScriptedLLM(), start_loops=False, api_token="s3cret")
    c = api.client
    r = await c.get("/metrics")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    r = await c.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200 and "heartbeat_runs_total" in r.text


async def test_metrics_count_the_schedulers_own_skips(make_app: AppFactory) -> None:
    """Missed slots coalesced into a catch-up and a slot skipped as an overlap are recorded by
    the scheduler, without a run: they are counted all the same."""
    clock, llm = FakeClock(START), ScriptedLLM()
    api = await make_app(llm=llm, clock=clock, timer_slack=0.0)
    svc = api.service
    clock.idle = _idle(svc)
    await svc.set_config("default", {"every_seconds": 60, "skip_unchanged": False})
    await clock.advance(60)  # the first slot runs
    clock.jump(60 * 10 + 5)  # the host slept: the next slot's timer fires ten slots late
    await clock.advance(1)
    llm.gate = asyncio.Event()
    clock.idle = lambda: bool(svc.scheduler.timers.waiting)
    await clock.advance(60)  # a slot's run starts and hangs on the gate
    await clock.advance(60)  # the next slot comes due while it is still going
    llm.gate.set()
    clock.idle = _idle(svc)
    await clock.settle()
    rows = await runs(svc)
    missed = [r for r in rows if r.reason == "missed"]
    assert len(missed) == 1 and missed[0].summary is not None
    coalesced = int(missed[0].summary.split()[0])
    assert coalesced >= 10
    assert [r.reason for r in rows].count("overlap") == 1

    got = samples((await api.client.get("/metrics")).text)

    def runs_total(trigger: str, status: str, reason: str = "") -> float:
        labels = {"loop": "heartbeat", "trigger": trigger, "status": status, "reason": reason}
        return got.get(("heartbeat_runs_total", tuple(sorted(labels.items()))), 0.0)

    def skips_total(reason: str) -> float:
        return got.get(("heartbeat_skips_total", (("loop", "heartbeat"), ("reason", reason))), 0)

    assert runs_total("catch_up", "skipped", "missed") == 1 and skips_total("missed") == 1
    assert runs_total("schedule", "skipped", "overlap") == 1 and skips_total("overlap") == 1
    assert runs_total("catch_up", "ok") == 1
    assert runs_total("schedule", "ok") == sum(
        r.trigger == "schedule" and r.status == "ok" for r in rows
    )
    assert got[("heartbeat_missed_slots_total", ())] == coalesced
    assert got[("heartbeat_lost_claims_total", ())] == 0
    assert got[("heartbeat_deferred_beats", ())] == 0
    clock.idle = None


async def test_metrics_show_a_beat_owed_to_a_quiet_thread(make_app: AppFactory) -> None:
    clock = FakeClock(START)
    api = await make_app(llm=ScriptedLLM(), clock=clock, timer_slack=0.0)
    svc = api.service
    clock.idle = _idle(svc)
    await svc.set_config("default", {"every_seconds": 600, "quiet_after_user_seconds": 300})
    await clock.advance(500)
    await svc.store.write(lambda tx: tx.add_message("default", "user", "hi"))
    await clock.advance(100)  # the slot yields to the user

    def scrape(text: str) -> tuple[float, float]:
        got = samples(text)
        skip = got.get(
            ("heartbeat_skips_total", (("loop", "heartbeat"), ("reason", "user_active")))
        )
        return got[("heartbeat_deferred_beats", ())], skip or 0.0

    assert scrape((await api.client.get("/metrics")).text) == (1, 1)
    await clock.advance(200)  # the quiet end: the beat owed runs
    assert scrape((await api.client.get("/metrics")).text) == (0, 1)
    clock.idle = None
