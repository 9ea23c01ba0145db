"""The journal loops against each storage backend, a fake clock and a scripted fake LLM provider."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from ledger.records import NewReflection, Run, run_to_dict
from ledger.storage.interface import Storage, Tx
from loops.clock import FakeClock
from loops.events import Event, EventBus, Subscription
from loops.journal import MAX_TOKENS, TEMPERATURE, JournalLoops, journal_kinds
from loops.journal_prompts import PROFILE_SCHEMA, REFLECTION_SCHEMA, SELF_REPLY_SCHEMA
from loops.llm import ChatRequest, ChatResult, Health, LLMError
from loops.supervisor import Supervisor
from tests.backends import Backend

MODEL = "test-model"
Reply = str | Exception


def kind_of(req: ChatRequest) -> str:
    assert req.schema is not None
    required = req.schema["required"]
    return {"score": "reflection", "traits": "personality", "reply": "self_reply"}[required[0]]


def prompt_data(req: ChatRequest) -> Any:
    match = re.search(r"<<<DATA\n(.*?)\nDATA>>>", req.messages[-1]["content"], re.DOTALL)
    assert match is not None
    return json.loads(match.group(1))


def default_reply(req: ChatRequest) -> Reply:
    thread = prompt_data(req)["thread"]
    match kind_of(req):
        case "reflection":
            return json.dumps({"score": 0.75, "summary": f"about {thread}", "notable": ["n1"]})
        case "personality":
            return json.dumps({"traits": ["curious"], "tone": "warm", "interests": [thread]})
        case _:
            return json.dumps({"reply": f"noted for {thread}"})


class FakeLLM:
    """A scripted LLMProvider that counts how many calls are in flight at once."""

    name = "fake"
    base_url = "http://fake.invalid"

    def __init__(self, script: Callable[[ChatRequest], Reply] = default_reply) -> None:
        self.script = script
        self.requests: list[ChatRequest] = []
        self.active = 0
        self.max_active = 0
        self.delay = 0.0
        self.gate: asyncio.Event | None = None

    async def chat(
        self,
        req: ChatRequest,
        *,
        on_token: Callable[[str], None] | None = None,
        deadline: float | None = None,
    ) -> ChatResult:
        self.requests.append(req)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.gate is not None:
                await self.gate.wait()
            reply = self.script(req)
            if isinstance(reply, Exception):
                raise reply
            return ChatResult(
                text=reply,
                model=req.model,
                done_reason="stop",
                prompt_tokens=11,
                completion_tokens=7,
                load_ms=None,
                total_ms=1.0,
                attempts=1,
            )
        finally:
            self.active -= 1

    async def health(self, model: str) -> Health:
        return Health("fake", self.base_url, True, "0", model, True, None)

    async def aclose(self) -> None:
        pass

    def kinds(self) -> list[str]:
        return [kind_of(r) for r in self.requests]


@dataclass
class Env:
    clock: FakeClock
    store: Storage
    bus: EventBus
    llm: FakeLLM
    limiter: asyncio.Semaphore
    loops: JournalLoops

    async def say(self, thread_id: str, *texts: str) -> None:
        def say(tx: Tx) -> None:
            tx.create_thread(thread_id, thread_id, None)
            for text in texts:
                tx.add_message(thread_id, "user", text)

        await self.store.write(say)

    async def runs(self, thread_id: str, loop: str | None = None) -> list[Run]:
        return list(reversed(await self.store.history(thread_id, limit=100, loop=loop)))


def make_loops(env: Env, **kwargs: Any) -> JournalLoops:
    return JournalLoops(
        env.store,
        lambda: env.llm,
        env.bus,
        limiter=env.limiter,
        model=lambda: MODEL,
        window=kwargs.pop("window", 5),
        **kwargs,
    )


@pytest.fixture
async def env(backend: Backend) -> AsyncIterator[Env]:
    clock = FakeClock()
    store = await backend.open(now=clock.now)
    bus = EventBus()
    llm = FakeLLM()
    limiter = asyncio.Semaphore(2)
    loops = JournalLoops(store, lambda: llm, bus, limiter=limiter, model=lambda: MODEL, window=5)
    try:
        yield Env(clock, store, bus, llm, limiter, loops)
    finally:
        await store.close()


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    give_up = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > give_up:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


async def all_capacity_free(limiter: asyncio.Semaphore, size: int) -> None:
    async with asyncio.timeout(1):
        for _ in range(size):
            await limiter.acquire()
    for _ in range(size):
        limiter.release()


async def drain(sub: Subscription) -> list[Event]:
    events = []
    while (event := await sub.get(wait=0)) is not None:
        events.append(event)
    return events


# --- reflection ----------------------------------------------------------------------------------


async def test_reflection_only_for_threads_with_new_messages(env: Env) -> None:
    await env.say("a", "hello", "how are you")
    await env.say("b", "one")
    await env.say("quiet")  # a thread without messages is never reflected on

    assert await env.loops.reflection_tick() == 2
    assert env.llm.kinds() == ["reflection", "reflection"]
    req = env.llm.requests[0]
    assert req.model == MODEL and req.schema == REFLECTION_SCHEMA
    assert req.temperature == TEMPERATURE == 0.3
    assert req.max_tokens == MAX_TOKENS["reflection"]

    (ra,) = await env.store.reflections("a")
    assert (ra.score, ra.summary, ra.notable) == (0.75, "about a", ["n1"])
    assert ra.last_message_id == await env.store.last_message_id("a")
    (run,) = await env.runs("a")
    assert (run.loop, run.trigger, run.status, run.model) == ("reflection", "schedule", "ok", MODEL)
    assert ra.run_id == run.id
    assert run.decision == {"score": 0.75, "summary": "about a", "notable": ["n1"]}
    assert (run.prompt_tokens, run.completion_tokens) == (11, 7)
    assert await env.runs("quiet") == []

    # nothing new: no LLM call, no run
    assert await env.loops.reflection_tick() == 0
    assert len(env.llm.requests) == 2

    # a new message in b: b only
    await env.say("b", "two")
    assert await env.loops.reflection_tick() == 1
    assert prompt_data(env.llm.requests[-1])["thread"] == "b"
    latest, first = await env.store.reflections("b")
    assert latest.last_message_id == await env.store.last_message_id("b") > first.last_message_id
    assert len(await env.store.reflections("a")) == 1


async def test_reflection_reads_the_last_window_of_messages(env: Env) -> None:
    await env.say("a", *[f"m{i}" for i in range(8)])
    assert await env.loops.reflection_tick() == 1
    data = prompt_data(env.llm.requests[0])
    assert [m["content"] for m in data["recent_messages"]] == ["m3", "m4", "m5", "m6", "m7"]


async def test_reflection_score_is_clamped_and_text_trimmed(env: Env) -> None:
    env.llm.script = lambda req: json.dumps(
        {"score": 7, "summary": "  " + "s" * 900, "notable": [f"x{i}" for i in range(9)]}
    )
    await env.say("a", "hi")
    assert await env.loops.reflection_tick() == 1
    (ra,) = await env.store.reflections("a")
    assert ra.score == 1.0 and len(ra.summary) == 500 and len(ra.notable) == 5


# --- personality ---------------------------------------------------------------------------------


async def test_profile_versions_increment_and_use_the_previous_profile(env: Env) -> None:
    await env.say("a", "I like chess")
    assert await env.loops.personality_tick() == 1
    req = env.llm.requests[0]
    assert req.schema == PROFILE_SCHEMA and req.max_tokens == MAX_TOKENS["personality"]
    assert prompt_data(req)["previous_profile"] is None
    v1 = await env.store.profile("a")
    assert v1 is not None and (v1.version, v1.traits, v1.tone) == (1, ["curious"], "warm")

    assert await env.loops.personality_tick() == 0  # nothing new

    await env.say("a", "and go")
    env.llm.script = lambda req: json.dumps(
        {"traits": ["curious", "patient"], "tone": "calm", "interests": ["chess", "go"]}
    )
    assert await env.loops.personality_tick() == 1
    assert prompt_data(env.llm.requests[-1])["previous_profile"] == {
        "version": 1,
        "traits": ["curious"],
        "tone": "warm",
        "interests": ["a"],
    }
    v2, old = await env.store.profiles("a")
    assert (v2.version, v2.tone, v2.interests) == (2, "calm", ["chess", "go"])
    assert old == v1  # versions are kept
    assert v2.last_message_id == await env.store.last_message_id("a")
    runs = await env.runs("a", "personality")
    assert [r.status for r in runs] == ["ok", "ok"]
    assert v2.run_id == runs[-1].id and runs[-1].executed is not None
    assert runs[-1].executed[0]["version"] == 2


# --- self-reply ----------------------------------------------------------------------------------


async def test_self_reply_answers_each_reflection_once(env: Env) -> None:
    await env.say("a", "x")
    await env.say("b", "y")
    assert await env.loops.reflection_tick() == 2

    assert await env.loops.self_reply_tick() == 2
    req = env.llm.requests[-1]
    assert req.schema == SELF_REPLY_SCHEMA and req.max_tokens == MAX_TOKENS["self_reply"]
    (ref_a,) = await env.store.reflections("a")
    (reply_a,) = await env.store.self_replies("a")
    assert (reply_a.reflection_id, reply_a.content) == (ref_a.id, "noted for a")
    assert prompt_data(env.llm.requests[2])["reflection"]["summary"] == "about a"
    run = (await env.runs("a", "self_reply"))[0]
    assert (run.status, run.trigger, run.id) == ("ok", "schedule", reply_a.run_id)

    assert await env.loops.self_reply_tick() == 0  # each reflection once
    calls = len(env.llm.requests)

    await env.say("a", "z")
    assert await env.loops.reflection_tick() == 1
    assert await env.loops.self_reply_tick() == 1
    assert len(env.llm.requests) == calls + 2
    assert len(await env.store.self_replies("a")) == 2
    assert len(await env.store.self_replies("b")) == 1


# --- failures ------------------------------------------------------------------------------------


async def test_failures_are_failed_runs_and_the_tick_goes_on(env: Env) -> None:
    def script(req: ChatRequest) -> Reply:
        thread = prompt_data(req)["thread"]
        if thread == "a":
            return LLMError("server_error", "http://fake.invalid answered 500", status=500)
        if thread == "b":
            return "I think the conversation went well!"
        if thread == "c":
            return '{"score": 0.5, "summary": "   "}'
        return default_reply(req)

    env.llm.script = script
    for tid in ("a", "b", "c", "d"):
        await env.say(tid, "hi")

    assert await env.loops.reflection_tick() == 4
    (ra,) = await env.runs("a")
    assert (ra.status, ra.reason, ra.loop) == ("failed", "server_error", "reflection")
    assert ra.error == "http://fake.invalid answered 500"
    (rb,) = await env.runs("b")
    assert (rb.status, rb.reason) == ("failed", "invalid_output")
    assert rb.error is not None and "conversation went well" in rb.error
    (rc,) = await env.runs("c")
    assert (rc.status, rc.reason) == ("failed", "invalid_output")
    (rd,) = await env.runs("d")
    assert rd.status == "ok"
    assert [len(await env.store.reflections(t)) for t in "abcd"] == [0, 0, 0, 1]
    assert await env.store.count_runs(status="running") == 0

    # failed threads are still owed and are retried by the next tick
    env.llm.script = default_reply
    assert await env.loops.reflection_tick() == 3
    assert [len(await env.store.reflections(t)) for t in "abcd"] == [1, 1, 1, 1]


async def test_an_unexpected_provider_error_is_an_internal_error_run(env: Env) -> None:
    env.llm.script = lambda req: (
        RuntimeError("boom") if prompt_data(req)["thread"] == "a" else default_reply(req)
    )
    await env.say("a", "hi")
    await env.say("b", "hi")
    assert await env.loops.self_reply_tick() == 0
    assert await env.loops.reflection_tick() == 2
    (ra,) = await env.runs("a")
    assert (ra.status, ra.reason, ra.error) == ("failed", "internal_error", "RuntimeError: boom")
    assert (await env.runs("b"))[0].status == "ok"


async def test_an_outage_ends_the_tick_early(env: Env) -> None:
    env.llm.script = lambda req: LLMError("unreachable", "cannot connect to http://fake.invalid")
    for tid in ("a", "b", "c"):
        await env.say(tid, "hi")
    assert await env.loops.personality_tick() == 1
    assert len(env.llm.requests) == 1
    (run,) = await env.runs("a")
    assert (run.loop, run.status, run.reason) == ("personality", "failed", "unreachable")

    env.llm.script = default_reply
    assert await env.loops.personality_tick() == 3


async def test_a_thread_that_keeps_failing_does_not_starve_the_others(env: Env) -> None:
    env.loops = make_loops(env, batch=2)
    env.llm.script = lambda req: (
        "garbage" if prompt_data(req)["thread"] in ("a", "b") else default_reply(req)
    )
    for tid in ("a", "b", "c"):
        await env.say(tid, "hi")
    assert await env.loops.reflection_tick() == 2  # a and b fail
    assert await env.loops.reflection_tick() == 2  # c first, then a again
    assert len(await env.store.reflections("c")) == 1


async def test_the_deadline_fails_the_run_with_timeout(env: Env) -> None:
    env.loops = make_loops(env, deadline=0.05)
    env.llm.gate = asyncio.Event()  # never opens
    await env.say("a", "hi")
    await env.say("b", "hi")
    assert await env.loops.reflection_tick() == 2
    for tid in ("a", "b"):
        (run,) = await env.runs(tid)
        assert (run.status, run.reason) == ("failed", "timeout")
    await all_capacity_free(env.limiter, 2)


async def test_cancelling_a_tick_marks_the_run_interrupted(env: Env) -> None:
    env.llm.gate = asyncio.Event()
    await env.say("a", "hi")
    task = asyncio.create_task(env.loops.reflection_tick())
    await until(lambda: env.llm.active == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (run,) = await env.runs("a")
    assert (run.status, run.reason) == ("interrupted", "shutdown")
    await all_capacity_free(env.limiter, 2)


# --- runs and events -----------------------------------------------------------------------------


async def test_every_run_is_published_like_the_heartbeat(env: Env) -> None:
    await env.say("a", "hi")
    with env.bus.subscribe(maxsize=1000) as sub:
        await env.loops.reflection_tick()
        await env.loops.personality_tick()
        await env.loops.self_reply_tick()
        events = await drain(sub)
    runs = await env.runs("a")
    assert [r.loop for r in runs] == ["reflection", "personality", "self_reply"]
    assert [e.type for e in events] == ["run_started", "run_finished"] * 3
    for run, started, finished in zip(runs, events[::2], events[1::2], strict=True):
        assert started.thread_id == finished.thread_id == "a"
        assert started.data == {
            "run_id": run.id,
            "thread_id": "a",
            "loop": run.loop,
            "trigger": "schedule",
            "model": MODEL,
            "dry_run": False,
        }
        assert finished.id == run.id
        assert finished.data == run_to_dict(run)
        assert finished.data["status"] == "ok" and finished.data["summary"]


# --- capacity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2])
async def test_the_limiter_bounds_llm_calls_across_loops(env: Env, size: int) -> None:
    env.limiter = asyncio.Semaphore(size)
    env.loops = make_loops(env)
    env.llm.delay = 0.01
    for tid in ("a", "b", "c", "d"):
        await env.say(tid, "hi")

    def seed(tx: Tx) -> None:
        for tid in ("a", "b", "c", "d"):
            seeded = NewReflection(
                thread_id=tid,
                score=0.5,
                summary="seeded",
                notable=[],
                last_message_id=0,
                run_id=None,
            )
            tx.add_reflection(seeded)

    await env.store.write(seed)
    done = await asyncio.gather(
        env.loops.reflection_tick(), env.loops.personality_tick(), env.loops.self_reply_tick()
    )
    assert list(done) == [4, 4, 4]
    assert env.llm.max_active == size


async def test_capacity_is_shared_with_the_heartbeat(env: Env) -> None:
    await env.say("a", "hi")
    async with env.limiter, env.limiter:  # the heartbeat holds every slot
        task = asyncio.create_task(env.loops.reflection_tick())
        await asyncio.sleep(0.05)
        assert env.llm.requests == [] and not task.done()
    assert await task == 1


async def test_concurrent_ticks_of_one_loop_do_not_double_work(env: Env) -> None:
    env.llm.delay = 0.01
    await env.say("a", "hi")
    assert sorted(await asyncio.gather(*(env.loops.reflection_tick() for _ in range(3)))) == [
        0,
        0,
        1,
    ]
    assert len(await env.store.reflections("a")) == 1


# --- supervised loops ----------------------------------------------------------------------------


async def test_journal_kinds_tick_on_schedule(env: Env) -> None:
    kinds = journal_kinds(
        env.loops,
        env.clock,
        {"reflection": (True, 900), "personality": (False, 1200), "self_reply": (True, 1800)},
    )
    assert [(k.state.name, k.state.enabled, k.state.interval) for k in kinds] == [
        ("reflection", True, 900.0),
        ("personality", False, 1200.0),
        ("self_reply", True, 1800.0),
    ]
    supervisor = Supervisor(env.clock, env.bus)
    for kind in kinds:
        supervisor.add(kind)
    state = supervisor.kinds["reflection"].state
    await env.say("a", "hi")
    await supervisor.start("reflection")
    try:
        start = env.clock.now()
        await env.clock.advance(899)
        assert env.llm.requests == [] and state.ticks == 0
        await env.clock.advance(1)
        await until(lambda: state.ticks == 1)
        assert state.last_tick_at == start + 900
        assert len(await env.store.reflections("a")) == 1

        await env.say("a", "more")
        await env.clock.advance(900)
        await until(lambda: state.ticks == 2)
        assert len(await env.store.reflections("a")) == 2
        assert state.next_tick_at == start + 2700
        assert env.llm.kinds() == ["reflection", "reflection"]
    finally:
        await supervisor.stop_all()


async def test_journal_kinds_needs_all_three_settings(env: Env) -> None:
    with pytest.raises(ValueError, match="self_reply"):
        journal_kinds(env.loops, env.clock, {"reflection": (True, 1), "personality": (True, 1)})
