"""The relay on a scripted change feed: what it publishes, skips and catches up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from ledger.records import ChangeBatch, InstructionsChange, RunChange, RunOutcome, RunStart
from ledger.storage.interface import Storage
from ledger.storage.sqlite import SqliteStore
from loops.events import EventBus
from loops.relay import RunRelay

ME, OTHER = "me", "other"


class ScriptedFeed:
    """Yields the batches it is given, one by one, as a change feed would."""

    writer = ME

    def __init__(self) -> None:
        self.queue: asyncio.Queue[ChangeBatch] = asyncio.Queue()

    async def batches(self) -> AsyncIterator[ChangeBatch]:
        while True:
            yield await self.queue.get()


async def run(store: Storage, owner: str) -> int:
    run_id = await store.write(
        lambda tx: tx.start_run(
            RunStart(thread_id="t", loop="heartbeat", trigger="manual", owner=owner)
        )
    )
    assert run_id is not None
    await store.write(lambda tx: tx.finish_run(run_id, RunOutcome(status="ok")))
    return run_id


async def settle(feed: ScriptedFeed) -> None:
    while not feed.queue.empty():
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)


async def test_others_runs_are_published_ours_skipped_and_a_gap_caught_up(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "db", now=lambda: 1.0)
    bus, feed = EventBus(), ScriptedFeed()
    told: list[int | None] = []
    relay = RunRelay(store, bus, feed, on_instructions=told.append)
    sub = bus.subscribe()
    task = asyncio.create_task(relay.run())
    try:
        await store.write(lambda tx: tx.create_thread("t", "T", None))
        before = await run(store, OTHER)  # finished before the feed first connected
        feed.queue.put_nowait(ChangeBatch(changes=[], resumed=True))
        theirs, mine = await run(store, OTHER), await run(store, ME)
        relay.observe(await store.get_run(mine))  # this process published its own run
        feed.queue.put_nowait(
            ChangeBatch(
                changes=[
                    RunChange(theirs, "t", True, OTHER),
                    RunChange(theirs, "t", False, OTHER),
                    RunChange(mine, "t", True, ME),
                    RunChange(mine, "t", False, ME),
                    InstructionsChange(3, OTHER),
                ]
            )
        )
        await settle(feed)
        assert [(e.type, e.id) for e in sub.take()] == [
            ("run_started", None),
            ("run_finished", theirs),
        ]
        # the feed is away: two runs finish, one of them ours; then it is back
        gone, ours = await run(store, OTHER), await run(store, ME)
        relay.observe(await store.get_run(ours))
        feed.queue.put_nowait(ChangeBatch(changes=[], resumed=True))
        # and the feed also tells the caught-up run once it listens again: published once
        feed.queue.put_nowait(ChangeBatch(changes=[RunChange(gone, "t", False, OTHER)]))
        await settle(feed)
        assert [(e.type, e.id) for e in sub.take()] == [("run_finished", gone)]
        assert before not in (theirs, gone)
        assert told == [None, 3, None]
        assert (relay.resumes, relay.caught_up) == (2, 1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
