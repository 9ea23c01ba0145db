"""The supervisor: a loop that dies is logged and restarted with backoff; stop is clean."""

from __future__ import annotations

import asyncio

import pytest

from loops.clock import FakeClock
from loops.events import EventBus
from loops.supervisor import LoopKind, LoopState, Supervisor, interval_body


async def test_a_dying_loop_is_restarted_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    bus = EventBus()
    starts: list[float] = []

    async def body(state: LoopState) -> None:
        starts.append(clock.now())
        if len(starts) <= 3:
            raise RuntimeError(f"boom {len(starts)}")
        await asyncio.Event().wait()

    sup = Supervisor(clock, bus)
    sup.add(LoopKind(state=LoopState(name="flaky", enabled=True, interval=10), body=body))
    with bus.subscribe() as sub:
        await sup.start("flaky")
        await clock.advance(10)
        t0 = starts[0]
        assert [s - t0 for s in starts] == [0, 1, 3, 7]  # backoff 1, 2, 4 seconds
        state = sup.kinds["flaky"].state
        assert state.restarts == 3 and state.last_error == "RuntimeError: boom 3"
        assert sup.is_running("flaky")
        assert "flaky loop died" in caplog.text
        await sup.stop("flaky")
        assert not sup.is_running("flaky") and state.running is False
        types = []
        while (event := await sub.get(wait=0)) is not None:
            types.append(event.type)
        assert types.count("loop_state") >= 5


async def test_interval_loop_survives_a_failing_tick() -> None:
    clock = FakeClock()
    calls: list[float] = []

    async def tick() -> int:
        calls.append(clock.now())
        if len(calls) == 2:
            raise ValueError("bad tick")
        return 1

    sup = Supervisor(clock, EventBus())
    state = LoopState(name="reflection", enabled=True, interval=900)
    sup.add(LoopKind(state=state, body=interval_body(clock, tick)))
    await sup.start("reflection")
    t0 = clock.now()
    await clock.advance(900 * 4)
    assert [c - t0 for c in calls] == [900, 1800, 2700, 3600]
    assert state.ticks == 3 and state.last_error == "ValueError: bad tick"
    await sup.stop_all()
