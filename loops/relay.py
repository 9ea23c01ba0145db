"""One live view across replicas: the runs other processes sharing the database start and
finish, published into this process's event bus as if they were its own.

Each process publishes the runs it carries itself (``loops.lifecycle``). The storage's change
feed (``Storage.change_feed``: PostgreSQL's ``LISTEN``) tells every run that starts or
finishes in the database, each named by the store that wrote it; the relay skips this store's
own, reads the others' rows (a batch of changes, one query) and publishes ``run_started`` and
``run_finished`` with the same data the writing process publishes. Nothing is read while no
client is subscribed.

The feed reconnects by itself when its connection is lost. Once back, the relay catches up:
the runs that finished since the last one it saw (``runs_finished_after``), less those this
process finished itself, published oldest first. A run finished both in the catch-up and live
(as the feed listens again before the catch-up reads) is published once. Runs that only
started while the feed was away are not told (their ``run_finished`` is). A change to the
instructions is passed on to ``on_instructions`` (with None after a reconnection: anything
may have changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ledger.records import InstructionsChange, Run, RunChange
from ledger.storage.interface import ChangeFeed, Storage
from loops.events import EventBus
from loops.lifecycle import publish_finished

log = logging.getLogger(f"heartbeat.{__name__}")

REMEMBERED = 10_000  # finished run ids remembered so that none is published twice
CATCH_UP_PAGE = 500
CATCH_UP_MAX = 5000  # runs published by one catch-up at most (a client replays the rest)
RETRY_SECONDS = 1.0  # after a batch whose rows could not be read


def started_data(run: Run) -> dict[str, Any]:
    """``run_started``'s data for a run, as ``loops.lifecycle`` publishes it."""
    data: dict[str, Any] = {
        "run_id": run.id,
        "thread_id": run.thread_id,
        "loop": run.loop,
        "trigger": run.trigger,
        "model": run.model,
        "dry_run": run.dry_run,
    }
    if run.event_text is not None:
        data["event_text"] = run.event_text
    return data


class RunRelay:
    """Follows the feed and publishes the other processes' runs into ``bus``; see the module."""

    def __init__(
        self,
        store: Storage,
        bus: EventBus,
        feed: ChangeFeed,
        *,
        on_instructions: Callable[[int | None], None] | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.feed = feed
        self.on_instructions = on_instructions
        self._finished: OrderedDict[int, None] = OrderedDict()  # published or our own
        self._last: int | None = None  # the last finished run the feed told of
        self._anchored = False
        self.relayed = 0  # events published for other processes' runs
        self.caught_up = 0  # of which by catch-ups
        self.resumes = 0  # connections of the feed (the first, then each reconnection)

    def observe(self, run: Run) -> None:
        """A run this process finished and published itself (a ``Lifecycle`` observer), or
        one of a gone replica that it interrupted and published (ending that lease)."""
        self._remember(run.id)

    def _remember(self, run_id: int) -> None:
        self._finished[run_id] = None
        self._finished.move_to_end(run_id)
        while len(self._finished) > REMEMBERED:
            self._finished.popitem(last=False)

    async def run(self) -> None:
        """Follow the feed until cancelled."""
        # Closed as the loop stops, wherever it is cancelled: a feed left suspended would keep
        # its connection open until the garbage collector found it.
        async with contextlib.aclosing(self.feed.batches()) as batches:
            async for batch in batches:
                try:
                    if batch.resumed:
                        await self._resume()
                    await self._relay(batch.changes)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the database is away: the feed reconnects, then catches up
                    log.exception(
                        "could not relay %d change(s) of other replicas", len(batch.changes)
                    )
                    await asyncio.sleep(RETRY_SECONDS)

    async def _resume(self) -> None:
        self.resumes += 1
        if self.on_instructions is not None:
            self.on_instructions(None)
        if not self._anchored:  # the first connection: nothing was missed before it
            self._last = await self.store.last_finished_run()
            self._anchored = True
            return
        if not self.bus.subscriber_count:  # nobody watches: only move the mark on
            self._last = await self.store.last_finished_run()
            return
        published = 0
        while published < CATCH_UP_MAX:
            page = await self.store.runs_finished_after(self._last or 0, limit=CATCH_UP_PAGE)
            for run in page:
                if run.id not in self._finished:
                    self._publish_finished(run)
                    published += 1
            if page:
                self._last = page[-1].id
            if len(page) < CATCH_UP_PAGE:
                break
        if published:
            self.caught_up += published
            log.info(
                "caught up %d run(s) other replicas finished while the feed was away", published
            )

    async def _relay(self, changes: list[RunChange | InstructionsChange]) -> None:
        theirs: list[RunChange] = []
        for change in changes:
            if isinstance(change, InstructionsChange):
                if self.on_instructions is not None:
                    self.on_instructions(change.revision)
                continue
            if not change.started:
                self._last = change.run_id
            if change.writer == self.feed.writer:
                if not change.started:
                    self._remember(change.run_id)
                continue
            theirs.append(change)
        if not theirs:
            return
        if not self.bus.subscriber_count:  # nobody watches: mark them, read nothing
            for change in theirs:
                if not change.started:
                    self._remember(change.run_id)
            return
        rows = {run.id: run for run in await self.store.runs_by_ids([c.run_id for c in theirs])}
        for change in theirs:
            row = rows.get(change.run_id)
            if row is None:
                continue
            if change.started:
                self.bus.publish("run_started", started_data(row), thread_id=row.thread_id)
                self.relayed += 1
            elif row.id not in self._finished:
                self._publish_finished(row)

    def _publish_finished(self, run: Run) -> None:
        self._remember(run.id)
        publish_finished(self.bus, run)
        self.relayed += 1
