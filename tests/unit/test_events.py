"""The event bus: bounded subscriptions, filters, dropping tokens, overflowing, closing."""

from __future__ import annotations

import asyncio
import time

import pytest

from loops.events import Closed, EventBus, Overflowed


def _fill(bus: EventBus, kinds: list[str]) -> None:
    for i, kind in enumerate(kinds):
        bus.publish(kind, {"n": i}, thread_id="t")


async def test_subscription_drops_tokens_first_then_overflows() -> None:
    bus = EventBus()
    sub = bus.subscribe(maxsize=4)
    _fill(bus, ["run_started", "token", "token", "decision"])
    _fill(bus, ["token"])  # full: a new token is dropped
    assert len(sub) == 4 and sub.dropped == 1
    _fill(bus, ["run_finished"])  # full: queued tokens make room
    assert len(sub) == 3 and sub.dropped == 3
    assert [(await sub.get(0)).type for _ in range(3)] == [  # type: ignore[union-attr]
        "run_started",
        "decision",
        "run_finished",
    ]
    assert await sub.get(0.01) is None
    _fill(bus, ["decision"] * 4)
    assert not sub.overflowed
    _fill(bus, ["run_finished"])  # full of events that matter: the subscriber is cut off
    assert sub.overflowed and len(sub) == 0
    assert bus.subscriber_count == 0 and bus.overflows == 1
    with pytest.raises(Overflowed):
        await sub.get(0)
    await asyncio.wait_for(sub.wait_overflowed(), 0.1)


async def test_closing_the_bus_drains_then_ends_every_subscription() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    _fill(bus, ["run_started", "run_finished"])
    waiting = bus.subscribe()
    getter = asyncio.create_task(waiting.get(wait=5))
    await asyncio.sleep(0)
    bus.close()
    assert bus.subscriber_count == 0
    assert [(await sub.get(0)).type for _ in range(2)] == ["run_started", "run_finished"]  # type: ignore[union-attr]
    with pytest.raises(Closed):
        await sub.get(1)
    with pytest.raises(Closed):
        await asyncio.wait_for(getter, 1)
    late = bus.subscribe()
    with pytest.raises(Closed):
        await late.get(1)
    bus.publish("run_started", {"run_id": 9})  # publishing after close is harmless


async def test_take_returns_what_is_queued_without_waiting() -> None:
    bus = EventBus()
    sub = bus.subscribe(maxsize=8)
    assert sub.take(10) == []
    _fill(bus, ["run_started", "token", "decision", "run_finished"])
    assert [e.type for e in sub.take(3)] == ["run_started", "token", "decision"]
    assert [e.type for e in sub.take(3)] == ["run_finished"]
    _fill(bus, ["token"] * 8 + ["decision"])  # the queued tokens made room for the decision
    assert [e.type for e in sub.take(10)] == ["decision"] and sub.dropped == 8
    _fill(bus, ["decision"] * 9)
    assert sub.overflowed and sub.take(10) == []


async def test_publish_never_waits_for_stalled_subscribers() -> None:
    bus = EventBus()
    fast = bus.subscribe(maxsize=10_000)
    stalled = [bus.subscribe(maxsize=64) for _ in range(1000)]
    t0 = time.perf_counter()
    for i in range(2000):
        bus.publish("token" if i % 2 else "decision", {"i": i})
    elapsed = time.perf_counter() - t0
    assert all(s.overflowed for s in stalled) and not fast.overflowed
    assert len(fast) == 2000 and bus.subscriber_count == 1
    assert elapsed < 2.0, f"publishing to stalled subscribers took {elapsed:.2f} s"


async def test_get_wakes_on_publish_and_filter_and_shared_encoding() -> None:
    bus = EventBus()
    only_a = bus.subscribe("a")
    everyone = bus.subscribe()
    waiter = asyncio.create_task(only_a.get(wait=2))
    await asyncio.sleep(0)
    bus.publish("run_started", {"run_id": 1}, thread_id="b")
    bus.publish("run_started", {"run_id": 2}, thread_id="a")
    event = await asyncio.wait_for(waiter, 1)
    assert event is not None and event.data == {"run_id": 2}
    bus.publish("loop_state", {"name": "heartbeat"})  # service-wide: reaches filtered subs
    assert (await only_a.get(0)).type == "loop_state"  # type: ignore[union-attr]
    first, second = await everyone.get(0), await everyone.get(0)
    assert first is not None and second is not None and first.data == {"run_id": 1}
    shared = await everyone.get(0)
    assert shared is not None and shared.json() is shared.json() == b'{"name":"heartbeat"}'
    assert shared.frame() is shared.frame() == b'event: loop_state\ndata: {"name":"heartbeat"}\n\n'
    only_a.close()
    everyone.close()
    assert bus.subscriber_count == 0


async def test_bus_offers_each_event_only_to_the_subscribers_that_want_it() -> None:
    bus = EventBus()
    everything = bus.subscribe(maxsize=64)
    no_tokens = bus.subscribe(maxsize=64, tokens=False)
    a_only = bus.subscribe("a", maxsize=64)
    a_no_tokens = bus.subscribe("a", maxsize=64, tokens=False)
    bus.publish("token", {"n": 1}, thread_id="a")
    bus.publish("token", {"n": 2}, thread_id="b")
    bus.publish("decision", {"n": 3}, thread_id="b")
    bus.publish("decision", {"n": 4}, thread_id="a")
    bus.publish("loop_state", {"n": 5})
    bus.publish("token", {"n": 6})
    got = {
        name: [e.data["n"] for e in sub.take()]
        for name, sub in [
            ("everything", everything),
            ("no_tokens", no_tokens),
            ("a_only", a_only),
            ("a_no_tokens", a_no_tokens),
        ]
    }
    assert got == {
        "everything": [1, 2, 3, 4, 5, 6],
        "no_tokens": [3, 4, 5],
        "a_only": [1, 4, 5, 6],
        "a_no_tokens": [4, 5],
    }
    for sub in (everything, no_tokens, a_only, a_no_tokens):
        sub.close()
    assert bus.subscriber_count == 0
    bus.publish("decision", {"n": 7}, thread_id="a")  # nobody to reach: harmless


async def test_a_full_queue_drops_its_tokens_and_overflows_alone() -> None:
    bus = EventBus()
    small = bus.subscribe(maxsize=2)
    roomy = bus.subscribe(maxsize=100)
    _fill(bus, ["token", "decision", "token", "run_finished"])
    assert [e.type for e in small.take()] == ["decision", "run_finished"]
    assert small.dropped == 2 and not small.overflowed
    assert [e.type for e in roomy.take()] == ["token", "decision", "token", "run_finished"]
    waiter = asyncio.create_task(small.get(wait=2))
    await asyncio.sleep(0)
    _fill(bus, ["decision", "token"])  # room again: the waiter wakes
    assert (await asyncio.wait_for(waiter, 1)).type == "decision"  # type: ignore[union-attr]
    assert [e.type for e in small.take()] == ["token"]
    assert [e.type for e in roomy.take()] == ["decision", "token"]
    _fill(bus, ["decision"] * 3)  # only the small one is cut off
    assert small.overflowed and not roomy.overflowed and len(roomy) == 3
    assert bus.subscriber_count == 1 and bus.overflows == 1


async def test_a_reader_that_fell_behind_has_its_whole_queue_again_once_it_catches_up() -> None:
    bus = EventBus()
    small, roomy = bus.subscribe(maxsize=2), bus.subscribe(maxsize=100)
    _fill(bus, ["decision", "token", "run_finished"])  # the small queue fills
    assert [e.type for e in small.take()] == ["decision", "run_finished"]  # the token made room
    roomy.take()
    _fill(bus, ["decision", "run_finished"])
    assert [e.type for e in small.take()] == [e.type for e in roomy.take()]
    _fill(bus, ["decision"] * 2)
    assert [e.data["n"] for e in small.take()] == [0, 1] and not small.overflowed
