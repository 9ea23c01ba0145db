"""The relay on a scripted change feed: what it publishes, skips and catches up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
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
        self.closed = False  # a real feed closes its connection here

        # Each feed handed out, kept here: one left suspended is then found by no garbage
        # collector, as one held in a reference cycle may not be for a long while.
        self.handed_out: list[AsyncGenerator[ChangeBatch, None]] = []

    def batches(self) -> AsyncGenerator[ChangeBatch, None]:
        self.handed_out.append(self._batches())
        return self.handed_out[-1]

    async def _batches(self) -> AsyncGenerator[ChangeBatch, None]:
        try:
            while True:
                yield await self.queue.get()
        finally:
            self.closed = True


class StalledStore(SqliteStore):
    """A store whose read of the last finished run waits until released."""

    entered = asyncio.Event()
    release = asyncio.Event()

    async def last_finished_run(self) -> int | None:
        self.entered.set()
        await self.release.wait()
        return await super().last_finished_run()


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


async def test_a_relay_cancelled_while_it_handles_a_batch_closes_the_feed(tmp_path: Path) -> None:
    # Cancelled between two batches, with the feed suspended where it yielded: the feed must
    # still be closed then, not when the garbage collector finds it (its connection open).
    store = await StalledStore.open(tmp_path / "db", now=lambda: 1.0)
    StalledStore.entered, StalledStore.release = asyncio.Event(), asyncio.Event()
    feed = ScriptedFeed()
    task = asyncio.create_task(RunRelay(store, EventBus(), feed).run())
    try:
        feed.queue.put_nowait(ChangeBatch(changes=[], resumed=True))
        await asyncio.wait_for(StalledStore.entered.wait(), 5)
        assert not feed.closed
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        assert feed.closed
    finally:
        await store.close()
