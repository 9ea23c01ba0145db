"""``GET /metrics``: Prometheus' text format after some runs, and the API token's guard."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AppFactory
from tests.fakes.provider import ScriptedLLM

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
        if len(await api.service.store.history("default")) == 2 and not api.service.waker.waiting:
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
