"""The heartbeat's thrift through the real service: skipping unchanged beats, the daily budget,
pausing after failures and resuming, yielding to the user, the breaker, the status it shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.service import Service
from ledger.limits import PAUSE_AFTER_FAILURES, REPEAT_LIMIT
from ledger.records import Run
from ledger.wakes import WakeMode
from loops.clock import FakeClock
from loops.llm import LLMError
from tests.fakes.provider import ScriptedLLM
from tests.integration.test_scheduler import START, runs, service

EVERY = 600
VOTE = {"action": "vote", "post_id": "p1", "vote_direction": "up", "reasoning": "good"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def outcomes(rows: list[Run]) -> list[tuple[str, str | None]]:
    return [(r.status, r.reason) for r in rows]


async def beats(clock: FakeClock, n: int) -> None:
    for _ in range(n):
        await clock.advance(EVERY)


async def test_unchanged_beats_skip_the_model_and_a_change_decides(
    workspace: Path, clock: FakeClock
) -> None:
    llm = ScriptedLLM()
    async with service(workspace, clock, llm) as svc:
        await svc.set_config("default", {"every_seconds": EVERY})
        await beats(clock, 3)
        assert outcomes(await runs(svc)) == [("ok", None)] + [("skipped", "unchanged")] * 2
        assert len(llm.requests) == 1
        await svc.store.write(lambda tx: tx.add_message("default", "user", "news!"))
        await beats(clock, 1)
        assert outcomes(await runs(svc))[-1] == ("ok", None) and len(llm.requests) == 2
        skipped = (await runs(svc))[1]
        assert (skipped.prompt_tokens, skipped.completion_tokens) == (0, 0)
        assert skipped.trigger == "schedule"


@pytest.mark.parametrize(
    ("rule", "decides"),
    [
        pytest.param("Vote up questions from alice that have no votes.", False, id="one-by-one"),
        pytest.param("Comment on the most popular question from alice.", True, id="ranking"),
    ],
)
async def test_a_post_of_others_leaving_the_feed_decides_only_where_rules_read_posts_together(
    workspace: Path, clock: FakeClock, rule: str, decides: bool
) -> None:
    (workspace / "HEARTBEAT.md").write_text(f"# Heartbeat\n\n## Rules\n- {rule}\n", "utf-8")
    llm = ScriptedLLM()
    async with service(workspace, clock, llm) as svc:

        def feed(tx: Any) -> None:  # a feed full of alice's answered statements
            for i in range(15):
                tx.create_post("alice", f"Note {i}", "fine")

        await svc.store.write(feed)
        await svc.set_config("default", {"every_seconds": EVERY})
        await beats(clock, 1)
        # bob's post cannot be acted on, but it pushes alice's oldest out of the feed
        await svc.store.write(lambda tx: tx.create_post("bob", "Lunch?", "at noon"))
        await beats(clock, 1)
        want = ("ok", None) if decides else ("skipped", "unchanged")
        assert outcomes(await runs(svc))[-2:] == [("ok", None), want]
        assert len(llm.requests) == (2 if decides else 1)
        memo = await svc.store.beat_memo("default")
        assert memo.seen_posts is not None and len(memo.seen_posts) == (14 if decides else 15)
        if not decides:
            summary = (await runs(svc))[-1].summary
            assert summary == (
                "skipped: nothing changed since the last decision,"
                " but for posts of others that left the feed"
            )


async def test_manual_runs_always_decide_and_skipping_can_be_turned_off(
    workspace: Path, clock: FakeClock
) -> None:
    llm = ScriptedLLM()
    async with service(workspace, clock, llm) as svc:
        await svc.set_config("default", {"every_seconds": EVERY})
        await beats(clock, 1)
        assert (await svc.run_now("default")).status == "ok"
        assert len(llm.requests) == 2
        await svc.set_config("default", {"skip_unchanged": False})
        await beats(clock, 2)
        assert len(llm.requests) == 4


async def test_a_beat_that_would_pass_the_budget_is_skipped_until_local_midnight(
    workspace: Path, clock: FakeClock
) -> None:
    llm = ScriptedLLM()
    async with service(workspace, clock, llm) as svc:
        # a beat is expected to cost max_tokens until one was paid for; each reply costs 22
        await svc.set_config(
            "default",
            {
                "every_seconds": EVERY,
                "daily_token_budget": 100,
                "max_tokens": 50,
                "skip_unchanged": False,
            },
        )
        await beats(clock, 6)
        got = outcomes(await runs(svc))
        assert got.count(("ok", None)) == 4 and got[-1] == ("skipped", "budget")
        assert len(llm.requests) == 4
        # START is 12:00 UTC: from midnight the budget is fresh
        midnight = START + 12 * 3600
        await clock.advance(midnight - clock.now() + 6 * EVERY)
        today = [r for r in await runs(svc) if r.started_at >= midnight]
        assert today[0].started_at == midnight  # the beat at midnight counts to the new day
        assert outcomes(today) == [("ok", None)] * 4 + [("skipped", "budget")] * 3


async def test_repeated_failures_pause_the_thread_and_a_probe_resumes_it(
    workspace: Path, clock: FakeClock
) -> None:
    llm = ScriptedLLM()
    llm.enqueue(*[LLMError("unreachable", "connection refused")] * PAUSE_AFTER_FAILURES)
    async with service(workspace, clock, llm) as svc:
        await svc.set_config("default", {"every_seconds": EVERY})
        await beats(clock, PAUSE_AFTER_FAILURES)
        memo = await svc.store.beat_memo("default")
        assert memo.paused is not None and "unreachable" in memo.paused
        llm.reachable = False
        calls = len(llm.requests)
        await beats(clock, 6)
        assert len(llm.requests) == calls  # paused: the model is never asked
        rows = await runs(svc)
        assert outcomes(rows)[-1] == ("skipped", "paused")
        memo = await svc.store.beat_memo("default")
        assert memo.pauses >= 3  # each failed probe doubled the wait: 600, 1200, 2400 s
        probe_at = memo.probe_at
        assert probe_at is not None
        llm.reachable = True
        seen = len(await runs(svc))
        await clock.advance(probe_at - clock.now())
        assert (await svc.store.beat_memo("default")).paused is None
        assert outcomes((await runs(svc))[seen:]) == [("ok", None)]


async def test_a_config_change_resumes_a_paused_thread(workspace: Path, clock: FakeClock) -> None:
    llm = ScriptedLLM()
    llm.enqueue(*[LLMError("auth", "401")] * PAUSE_AFTER_FAILURES)
    llm.reachable = False
    async with service(workspace, clock, llm) as svc:
        await svc.set_config("default", {"every_seconds": EVERY})
        await beats(clock, PAUSE_AFTER_FAILURES + 1)
        assert outcomes(await runs(svc))[-1] == ("skipped", "paused")
        await svc.set_config("default", {"model": "other"})
        await beats(clock, 1)
        assert outcomes(await runs(svc))[-1] == ("ok", None)


async def test_different_failures_do_not_add_up_to_a_pause(
    workspace: Path, clock: FakeClock
) -> None:
    llm = ScriptedLLM()
    kinds = ["unreachable", "auth", "model_missing", "unreachable", "auth"]
    llm.enqueue(*[LLMError(k, k) for k in kinds])  # type: ignore[arg-type]
    async with service(workspace, clock, llm) as svc:
        await svc.set_config("default", {"every_seconds": EVERY})
        await beats(clock, len(kinds))
        assert (await svc.store.beat_memo("default")).paused is None


async def test_a_beat_yields_while_the_user_writes(workspace: Path, clock: FakeClock) -> None:
    llm = ScriptedLLM()
    async with service(workspace, clock, llm) as svc:
        await svc.set_config("default", {"every_seconds": EVERY, "quiet_after_user_seconds": 900})
        await clock.advance(EVERY - 60)
        await svc.store.write(lambda tx: tx.add_message("default", "user", "typing..."))
        await clock.advance(60)
        assert outcomes(await runs(svc)) == [("skipped", "user_active")]
        assert llm.requests == []
        await beats(clock, 1)  # 660 s after the message: still within 900
        assert outcomes(await runs(svc)) == [("skipped", "user_active")] * 2
        await beats(clock, 1)  # the beat owed ran at the quiet end, 900 s after the message
        assert outcomes(await runs(svc))[2] == ("ok", None)
        assert (await svc.run_now("default")).status == "ok"  # manual runs do not yield


async def say(svc: Service, text: str = "typing...") -> float:
    await svc.store.write(lambda tx: tx.add_message("default", "user", text))
    return (await svc.store.messages("default", limit=1))[0].created_at


async def writes_before_the_slot(svc: Service, clock: FakeClock, quiet: int) -> tuple[float, float]:
    """Yield ``quiet`` s to the user, who writes 60 s before the first slot: (anchor, when)."""
    await svc.set_config("default", {"every_seconds": EVERY, "quiet_after_user_seconds": quiet})
    anchor = clock.now()
    await clock.advance(EVERY - 60)
    return anchor, await say(svc)


async def test_a_deferred_beat_runs_at_the_quiet_end_told_the_wakes_held_for_it(
    workspace: Path, clock: FakeClock
) -> None:
    llm = ScriptedLLM()
    async with service(workspace, clock, llm) as svc:
        anchor, said = await writes_before_the_slot(svc, clock, 300)
        await svc.waker.wake("default", "the build broke", WakeMode.NEXT_HEARTBEAT)
        await clock.advance(60)  # the slot yields (and takes the held wake with it)
        assert outcomes(await runs(svc)) == [("skipped", "user_active")]
        assert svc.scheduler.deferred("default") == said + 300
        assert await svc.store.held_wake("default") == ("the build broke", 1)  # given back
        await clock.advance(said + 300 - clock.now() - 1)
        assert len(await runs(svc)) == 1
        await clock.advance(1)
        deferred = (await runs(svc))[1]
        assert (deferred.status, deferred.trigger) == ("ok", "schedule")
        assert deferred.started_at == deferred.slot == said + 300
        assert deferred.event_text == "the build broke" and len(llm.requests) == 1
        assert await svc.store.held_wake("default") is None
        await clock.advance(anchor + 2 * EVERY - clock.now())  # the grid goes on
        after = (await runs(svc))[2:]
        assert [(r.slot, r.event_text) for r in after] == [(anchor + 2 * EVERY, None)]
        assert svc.scheduler.deferred("default") is None


async def test_a_new_message_puts_the_deferred_beat_off(workspace: Path, clock: FakeClock) -> None:
    llm = ScriptedLLM()
    async with service(workspace, clock, llm) as svc:
        anchor, _ = await writes_before_the_slot(svc, clock, 300)
        await clock.advance(160)  # the slot yielded; the beat is owed 300 s after the message
        later = await say(svc, "one more thing")
        await clock.advance(later + 300 - clock.now() - 1)
        assert outcomes(await runs(svc)) == [("skipped", "user_active")]  # put off, no row
        await clock.advance(1)
        rows = await runs(svc)
        assert outcomes(rows) == [("skipped", "user_active"), ("ok", None)]
        assert rows[1].started_at == later + 300
        # a beat off the grid spaces the next slot as run-now does: anchor + 2·EVERY falls
        # before it + EVERY/2, so the next run is the slot after
        assert (await svc.store.get_thread("default")).next_run == anchor + 3 * EVERY


async def test_a_run_now_or_a_slot_in_between_settles_the_deferred_beat(
    workspace: Path, clock: FakeClock
) -> None:
    llm = ScriptedLLM()
    async with service(workspace, clock, llm) as svc:
        _, said = await writes_before_the_slot(svc, clock, 300)
        await clock.advance(100)
        assert (await svc.run_now("default")).status == "ok"
        assert svc.scheduler.deferred("default") is None
        await clock.advance(said + 300 - clock.now() + 1)
        assert [r.trigger for r in await runs(svc)] == ["schedule", "manual"]
        assert len(llm.requests) == 1


async def test_slots_in_between_yield_again_and_a_slot_at_the_quiet_end_runs_once(
    workspace: Path, clock: FakeClock
) -> None:
    llm = ScriptedLLM()
    async with service(workspace, clock, llm) as svc:
        # the message comes 60 s before the first slot; the beat is owed at the third
        quiet = 2 * EVERY + 60
        anchor, said = await writes_before_the_slot(svc, clock, quiet)
        assert said + quiet == anchor + 3 * EVERY
        await clock.advance(3 * EVERY)
        rows = await runs(svc)
        assert outcomes(rows) == [("skipped", "user_active")] * 2 + [("ok", None)]
        assert [r.slot for r in rows] == [anchor + k * EVERY for k in (1, 2, 3)]
        assert len(llm.requests) == 1 and svc.scheduler.deferred("default") is None


async def yields_before_closing(svc: Service, clock: FakeClock) -> float:
    """The 12:50 slot yields to the user for 300 s (when the user wrote, returned); the window
    closes at 13:00 (START is 12:00 UTC), so the slot after the deferred one is the next day's
    opening: a beat owed but forgotten would wait until then."""
    config = {"every_seconds": EVERY, "quiet_after_user_seconds": 300, "skip_unchanged": False}
    await svc.set_config("default", config)
    await svc.set_config("default", {"active_hours_start": 0, "active_hours_end": 13})
    await clock.advance(5 * EVERY - 60)
    said = await say(svc)
    await clock.advance(60)
    return said


async def test_a_beat_deferred_before_a_restart_runs_at_the_quiet_end_after_it(
    workspace: Path, clock: FakeClock
) -> None:
    async with service(workspace, clock, ScriptedLLM()) as svc:
        said = await yields_before_closing(svc, clock)
        assert outcomes(await runs(svc)) == [("ok", None)] * 4 + [("skipped", "user_active")]
        assert (await svc.store.get_thread("default")).next_run == START + 12 * 3600
        await clock.advance(60)
    restarted = clock.now()
    assert restarted < said + 300
    llm = ScriptedLLM()
    async with service(workspace, clock, llm) as svc:
        await clock.advance(said + 300 - clock.now())
        beat = (await runs(svc))[-1]
        assert (beat.trigger, beat.slot, beat.status) == ("schedule", said + 300, "ok")
        assert len(llm.requests) == 1
        await clock.advance(START + 12 * 3600 - clock.now())  # the grid goes on the next day
        assert (await runs(svc))[-1].slot == START + 12 * 3600


async def test_a_thread_moving_to_this_replica_brings_the_beat_it_was_deferred_for(
    workspace: Path, clock: FakeClock
) -> None:
    async with service(workspace, clock, ScriptedLLM()) as svc:
        said = await yields_before_closing(svc, clock)
        assert outcomes(await runs(svc))[-1] == ("skipped", "user_active")
        held = svc.scheduler.owns
        svc.scheduler.owns = lambda _thread_id: False  # the replicas changed: another holds it
        await svc.scheduler.arm_all()
        assert svc.scheduler.deferred("default") is None
        svc.scheduler.owns = held  # and it comes back here before the quiet end
        await svc.scheduler.arm_all()
        assert svc.scheduler.deferred("default") == said + 300
        await clock.advance(said + 300 - clock.now())
        beat = (await runs(svc))[-1]
        assert (beat.trigger, beat.slot, beat.status) == ("schedule", said + 300, "ok")
        await svc.scheduler.arm_all()  # a reconcile pass after it owes nothing more
        assert svc.scheduler.deferred("default") is None


async def test_a_beat_owed_while_down_is_dropped_when_the_hours_are_closed_at_the_start(
    workspace: Path, clock: FakeClock
) -> None:
    hours = {"active_hours_start": 0, "active_hours_end": 13}
    async with service(workspace, clock, ScriptedLLM()) as svc:
        await svc.set_config("default", {"every_seconds": EVERY, "quiet_after_user_seconds": 600})
        await svc.set_config("default", hours)
        await clock.advance(5 * EVERY - 60)
        await say(svc)  # at 12:49: the beat is owed at 12:59... but the service stops
        await clock.advance(60)
        assert outcomes(await runs(svc))[-1] == ("skipped", "user_active")
    await clock.advance(3600)  # down till 14:00: 12:59 passed inside the hours
    llm = ScriptedLLM()
    async with service(workspace, clock, llm) as svc:
        # owed, and due at once, but outside the hours now: dropped, the next slot decides
        await clock.advance(60)
        assert svc.scheduler.deferred("default") is None
        assert len(llm.requests) == 0
        assert outcomes(await runs(svc))[-1] == ("skipped", "user_active")


async def test_a_disabled_thread_runs_no_deferred_beat(workspace: Path, clock: FakeClock) -> None:
    llm = ScriptedLLM()
    async with service(workspace, clock, llm) as svc:
        _, _ = await writes_before_the_slot(svc, clock, 300)
        await clock.advance(100)
        assert svc.scheduler.deferred("default") is not None
        await svc.set_config("default", {"enabled": False})
        assert svc.scheduler.deferred("default") is None
        await clock.advance(3 * EVERY)
        assert outcomes(await runs(svc)) == [("skipped", "user_active")]
        assert llm.requests == []


async def test_the_breaker_stops_the_same_decision_on_unchanged_inputs(
    workspace: Path, clock: FakeClock
) -> None:
    llm = ScriptedLLM(default={"action": "comment", "post_id": "p404", "content": "x"})
    async with service(workspace, clock, llm) as svc:
        got = [await svc.run_now("default") for _ in range(REPEAT_LIMIT + 2)]
        statuses = [(r.status, r.reason) for r in got]
        assert (
            statuses
            == [("rejected", "unknown_post")] * (REPEAT_LIMIT - 1) + [("skipped", "repeated")] * 3
        )
        assert len(llm.requests) == REPEAT_LIMIT  # past the breaker the model is not asked
        await svc.store.write(lambda tx: tx.add_message("default", "user", "new input"))
        assert (await svc.run_now("default")).status == "rejected"  # new inputs reset it


async def test_status_shows_each_threads_day(workspace: Path, clock: FakeClock) -> None:
    llm = ScriptedLLM()
    async with service(workspace, clock, llm) as svc:
        await svc.set_config("default", {"every_seconds": EVERY, "daily_token_budget": 5000})
        await beats(clock, 3)
        from app.routes_heartbeat import beats_today

        view: dict[str, Any] = await beats_today(svc, await svc.store.get_thread("default"))
    assert view["tokens_today"] == 22 and view["daily_token_budget"] == 5000
    assert view["decided_today"] == 1 and view["skipped_today"] == {"unchanged": 2}
    assert view["paused"] is False and view["paused_reason"] is None
    assert view["next_run_at"] is not None


class _ProbeRaises(ScriptedLLM):
    async def health(self, model: str) -> Any:
        raise RuntimeError("no route to host")


async def test_a_probe_that_raises_keeps_the_thread_paused(
    workspace: Path, clock: FakeClock
) -> None:
    llm = _ProbeRaises()
    llm.enqueue(*[LLMError("model_missing", "no such model")] * PAUSE_AFTER_FAILURES)
    async with service(workspace, clock, llm) as svc:
        await svc.set_config("default", {"every_seconds": EVERY})
        await beats(clock, PAUSE_AFTER_FAILURES + 2)
        probe, waiting = (await runs(svc))[-2:]
        assert outcomes([probe, waiting]) == [("skipped", "paused")] * 2
        assert probe.summary is not None and "RuntimeError: no route to host" in probe.summary
        assert waiting.summary is not None and "next probe at" in waiting.summary
        assert len(llm.requests) == PAUSE_AFTER_FAILURES
