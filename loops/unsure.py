"""Claims that may have committed, for the scheduler (``loops.scheduler``).

A claim whose connection was cut during its ``COMMIT`` (or whose pass failed after it committed)
may have written its ``running`` rows all the same. So the slots a pass tries to start are kept
as unsure until a pass goes through, and the next pass that reaches the database looks for this
process's rows at them and runs those, late, as the claim would have (each slot's row is unique,
so nothing runs twice).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

import msgspec

from ledger.config import HeartbeatConfig
from ledger.records import Loop, Thread, Trigger
from ledger.storage.interface import Storage
from loops.lifecycle import RunPlan


class UnsureClaims:
    """The (thread id, slot) of the starts of a pass that failed: their rows may have
    committed."""

    def __init__(self, store: Storage, log: logging.Logger) -> None:
        self.store = store
        self.log = log  # the scheduler's: these lines are its own
        self._slots: set[tuple[str, float]] = set()

    def add(self, thread_id: str, slot: float) -> None:
        """A pass is about to start the thread's run at ``slot``."""
        self._slots.add((thread_id, slot))

    def add_starts(self, plans: Iterable[RunPlan[HeartbeatConfig]]) -> None:
        for plan in plans:
            if plan.slot is not None:
                self.add(plan.thread_id, plan.slot)

    def clear(self) -> None:
        """A pass went through: the rows found are started now, the claims made are known."""
        self._slots.clear()

    async def committed(
        self,
        load: Callable[[list[str]], Awaitable[list[Thread]]],
        plan: Callable[[Thread, Trigger, float], RunPlan[HeartbeatConfig]],
    ) -> list[RunPlan[HeartbeatConfig]]:
        """The runs a failed pass started after all (its ``COMMIT`` cut, or a step after it
        failed): this process's ``running`` rows at the slots it tried, as started plans (the
        threads read by ``load``, planned by ``plan``)."""
        if not self._slots:
            return []
        rows = [
            (r, r.slot)
            for r in await self.store.running_runs(owner=self.store.owner)
            if r.loop == Loop.HEARTBEAT and r.slot is not None
            if (r.thread_id, r.slot) in self._slots
        ]
        threads = {t.id: t for t in await load(sorted({r.thread_id for r, _ in rows}))}
        plans = []
        for row, slot in rows:
            if (thread := threads.get(row.thread_id)) is None:
                continue
            started = plan(thread, Trigger(row.trigger), slot)
            plans.append(msgspec.structs.replace(started, run_id=row.id, event=row.event_text))
        if plans:
            self.log.warning(
                "[HEARTBEAT] %d run(s) of claims reported failed were committed: they run now",
                len(plans),
            )
        return plans
