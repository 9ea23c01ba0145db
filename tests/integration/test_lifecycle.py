"""The run lifecycle the heartbeat and the journal loops share, for both kinds of run.

The service runs against a scripted fake Ollama speaking NDJSON over real HTTP on loopback; a
journal is built on the service's own store, bus and LLM limiter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from ledger.errors import NotFound
from ledger.records import Loop, Run
from ledger.storage.sqlite import SqliteTx as Tx
from loops.journal import JournalLoops
from loops.llm import OllamaProvider
from tests.conftest import AppFactory, Running
from tests.fakes import llm_servers as fk

KINDS = [Loop.HEARTBEAT, Loop.REFLECTION]
MODEL = "llama3.2:latest"  # the service's default model, the journal's too
REPLIES: dict[Loop, dict[str, Any]] = {
    Loop.HEARTBEAT: {"action": "none", "reasoning": "all quiet"},
    Loop.REFLECTION: {"score": 0.5, "summary": "a calm talk", "notable": []},
}


@dataclass
class Rig:
    api: Running
    ollama: fk.FakeLLMServer
    journal: JournalLoops

    def reply(self, kind: Loop, **kw: Any) -> fk.Reply:
        return fk.ollama_ok(REPLIES[kind], **kw)

    def run(self, kind: Loop) -> Awaitable[object]:
        """One run of ``kind`` for the thread ``default``."""
        if kind == Loop.HEARTBEAT:
            return self.api.service.executor.run("default")
        return self.journal.reflection_tick()

    async def rows(self, kind: Loop) -> list[Run]:
        return list(reversed(await self.api.service.store.history("default", loop=kind)))

    async def capacity_free(self) -> None:
        limiter, size = self.api.service.limiter, self.api.service.settings.max_concurrency
        async with asyncio.timeout(1):
            for _ in range(size):
                await limiter.acquire()
        for _ in range(size):
            limiter.release()


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def ollama() -> AsyncIterator[fk.FakeLLMServer]:
    async with fk.FakeLLMServer("ollama") as server:
        yield server


@pytest.fixture
def rig(make_app: AppFactory, ollama: fk.FakeLLMServer) -> RigFactory:
    async def build(deadline: float = 30.0, **settings: Any) -> Rig:
        provider = OllamaProvider(ollama.url, idle_timeout=30.0, backoff_base=0.01)
        api = await make_app(llm=provider, start_loops=False, run_deadline=deadline, **settings)
        svc = api.service
        await svc.store.write(lambda tx: tx.add_message("default", "user", "hello there"))
        journal = JournalLoops(
            svc.store,
            lambda: provider,
            svc.bus,
            limiter=svc.limiter,
            model=lambda: MODEL,
            window=5,
            deadline=deadline,
        )
        return Rig(api, ollama, journal)

    return build


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    give_up = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > give_up:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def test_a_journal_run_has_its_row_before_it_waits_for_capacity(rig: RigFactory) -> None:
    r = await rig(max_concurrency=1)
    r.ollama.enqueue(r.reply(Loop.REFLECTION))
    async with r.api.service.limiter:  # a heartbeat holds the only slot
        tick = asyncio.create_task(r.journal.reflection_tick())
        await until(lambda: r.journal.lifecycle.llm_waiting == 1)
        (waiting,) = await r.rows(Loop.REFLECTION)
        assert waiting.status == "running" and waiting.finished_at is None
        assert r.ollama.chat_requests == []
    assert await tick == 1
    (run,) = await r.rows(Loop.REFLECTION)
    assert (run.id, run.status) == (waiting.id, "ok")
    assert r.journal.lifecycle.llm_waiting == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_the_deadline_is_applied_once(rig: RigFactory, kind: Loop) -> None:
    r = await rig(deadline=0.5)
    r.ollama.enqueue(r.reply(kind, delay=10.0))  # a model far slower than the deadline
    started = time.monotonic()
    await r.run(kind)
    assert time.monotonic() - started < 5.0  # bounded by the deadline, not by the model
    (run,) = await r.rows(kind)
    assert (run.status, run.reason) == ("failed", "timeout")
    assert run.error == "the run passed its deadline of 0.5 s and was cancelled"
    assert len(r.ollama.chat_requests) == 1
    await r.capacity_free()


@pytest.mark.parametrize("kind", KINDS)
async def test_cancelling_a_run_during_the_chat_records_it_interrupted(
    rig: RigFactory, kind: Loop
) -> None:
    r = await rig()
    r.ollama.enqueue(fk.ollama_hang())
    with r.api.service.bus.subscribe() as sub:
        task = asyncio.ensure_future(r.run(kind))
        await until(lambda: len(r.ollama.chat_requests) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        events = [e.type for e in sub.take()]
    (run,) = await r.rows(kind)
    assert (run.status, run.reason, run.model) == ("interrupted", "shutdown", MODEL)
    assert run.finished_at is not None
    assert events == ["run_started"]  # an interrupted run is not published as finished
    assert r.api.service.executor.in_flight == {}
    await r.capacity_free()


async def test_a_crash_in_the_heartbeat_effect_is_an_internal_error_and_runs_go_on(
    rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = await rig()
    post = {"action": "post", "title": "Digest", "content": "Three posts.", "reasoning": "3+"}
    r.ollama.enqueue(fk.ollama_ok(post), fk.ollama_ok(post))
    real_create_post = Tx.create_post
    crashes = [RuntimeError("the disk is on fire")]

    def create_post(self: Tx, *args: Any, **kwargs: Any) -> Any:
        if crashes:
            raise crashes.pop()
        return real_create_post(self, *args, **kwargs)

    monkeypatch.setattr(Tx, "create_post", create_post)
    svc = r.api.service
    with svc.bus.subscribe() as sub:
        crashed = await svc.run_now("default")
        finished = [e.data for e in sub.take() if e.type == "run_finished"]
    assert (crashed.status, crashed.reason) == ("failed", "internal_error")
    assert crashed.error == "RuntimeError: the disk is on fire"
    assert crashed.decision is None and crashed.executed is None
    assert [(f["run_id"], f["status"], f["reason"]) for f in finished] == [
        (crashed.id, "failed", "internal_error")
    ]
    assert await svc.store.posts() == []  # the effect was rolled back with its transaction
    thread = await svc.store.get_thread("default")
    assert thread.last_summary is None and thread.last_actions == []

    after = await svc.run_now("default")
    assert (after.status, after.action) == ("ok", "post")
    assert [p.title for p in await svc.store.posts()] == ["Digest"]


async def test_a_crash_in_a_journal_effect_is_an_internal_error_and_the_tick_goes_on(
    rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = await rig()

    def other_thread(tx: Tx) -> None:
        tx.create_thread("other", "Other", None)
        tx.add_message("other", "user", "hi")

    await r.api.service.store.write(other_thread)
    r.ollama.enqueue(r.reply(Loop.REFLECTION), r.reply(Loop.REFLECTION))
    real_add_reflection = Tx.add_reflection

    def add_reflection(self: Tx, thread_id: str, *args: Any) -> int:
        if thread_id == "default":
            raise RuntimeError("the disk is on fire")
        return real_add_reflection(self, thread_id, *args)

    monkeypatch.setattr(Tx, "add_reflection", add_reflection)
    assert await r.journal.reflection_tick() == 2
    (run,) = await r.rows(Loop.REFLECTION)
    assert (run.status, run.reason) == ("failed", "internal_error")
    assert run.error == "RuntimeError: the disk is on fire"
    assert (run.prompt_tokens, run.completion_tokens) == (96, 14)
    assert await r.api.service.store.reflections("default") == []
    (other,) = await r.api.service.store.reflections("other")
    assert other.summary == "a calm talk"


async def test_a_post_gone_before_the_effect_rejects_the_run(
    rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = await rig()
    svc = r.api.service
    made = await svc.store.write(lambda tx: tx.create_post("user", "Tue or Thu?", "?"))
    vote = {"action": "vote", "post_id": made.id, "vote_direction": "up", "reasoning": "asked"}
    r.ollama.enqueue(fk.ollama_ok(vote))

    def vanished(self: Tx, post_id: str, *args: Any) -> Any:
        raise NotFound("post", post_id)

    monkeypatch.setattr(Tx, "vote", vanished)
    run = await svc.run_now("default")
    assert (run.status, run.reason, run.action) == ("rejected", "unknown_post", "vote")
    assert run.error == f"post {made.id!r} does not exist"
    assert run.executed is None and run.decision is not None
    assert (await svc.store.get_post(made.id)).score == 0
