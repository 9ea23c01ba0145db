"""The composition root: storage, LLM provider, executor, scheduler and supervisor, wired once.

``Service.open`` builds everything in order and ``Service.close`` tears it down in reverse; the
Starlette lifespan calls both.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx

from app.llm_choice import choose_provider, default_model
from app.metrics import Metrics
from app.settings import Settings
from ledger import config as hbconfig
from ledger.errors import NotFound, StorageBusy
from ledger.records import Loop, Run, RunOutcome, Thread, Trigger
from ledger.storage.interface import Storage, Tx
from ledger.storage.sqlite import SqliteStore
from ledger.wakes import WakeMode, ledger_event_text
from loops.clock import Clock, SystemClock
from loops.events import EventBus
from loops.executor import ExecutorOptions, HeartbeatExecutor
from loops.instructions import FileInstructions, Instructions, StoredInstructions
from loops.journal import JournalLoops, journal_kinds
from loops.lifecycle import publish_finished
from loops.llm import LLMProvider
from loops.relay import RunRelay
from loops.replicas import ReplicaSet, take_lease
from loops.scheduler import HeartbeatScheduler, plan_config_change
from loops.supervisor import LoopKind, LoopState, Supervisor, heartbeat_body
from loops.unrecorded import record_kept
from loops.wakes import FloodGuard, WakeOnIndex, Waker, WakeRefused, drop_held_wakes

log = logging.getLogger(f"heartbeat.{__name__}")


async def open_storage(settings: Settings, clock: Clock) -> Storage:
    """PostgreSQL when ``HEARTBEAT_DATABASE_URL`` is set, else the SQLite file."""
    if settings.database_url:
        from ledger.storage.postgres import PostgresStore  # its driver is an optional extra

        return await PostgresStore.open(settings.database_url, now=clock.now)
    return await SqliteStore.open(settings.db_path, now=clock.now)


SHUTDOWN_GRACE = 10.0


def spool_dir(settings: Settings) -> Path:
    """Where run outcomes that shutdown kept from a locked database wait for the next start."""
    return settings.db_path.parent / "unrecorded"


class Service:
    def __init__(
        self,
        settings: Settings,
        store: Storage,
        llm: LLMProvider,
        clock: Clock,
        http: httpx.AsyncClient,
        llm_reason: str = "",
    ) -> None:
        self.settings = settings
        self.llm_reason = llm_reason
        self.store = store
        self.llm = llm
        self.clock = clock
        self.http = http
        self.bus = EventBus()
        # HEARTBEAT.md: the workspace file, or with PostgreSQL (replicas on several machines
        # share no file) the database's revisions
        self.instructions: Instructions = (
            StoredInstructions(store, clock)
            if settings.database_url
            else FileInstructions(settings.heartbeat_md)
        )
        self.replicas = ReplicaSet(store, clock)
        self.limiter = asyncio.Semaphore(settings.max_concurrency)
        self.executor = HeartbeatExecutor(
            store,
            lambda: self.llm,
            self.bus,
            clock,
            ExecutorOptions(
                heartbeat_md=settings.heartbeat_md,
                default_model=default_model(settings, llm),
                window=settings.loop_window,
                channels=dict(settings.channels),
                run_deadline=settings.run_deadline,
            ),
            limiter=self.limiter,
            http=http,
            instructions=self.instructions,
        )
        self.scheduler = HeartbeatScheduler(
            store,
            clock,
            self.executor.run_claimed,
            is_running=self.executor.in_flight.get,
            plan=self.executor.plan,
            slack=settings.timer_slack,
            owns=self.replicas.owns,
            window=settings.loop_window,
        )
        # a beat that yields to the user is owed again at the quiet end (``scheduler.defer``)
        self.executor.work.gate.on_defer = self.scheduler.defer
        self.executor.lifecycle.observers.append(self.scheduler.finished)
        self.replicas.on_change = self._replicas_changed
        self.replicas.on_threads = self._threads_changed
        self.waker = Waker(
            store,
            self._wake_beat,
            self.executor.in_flight,
            FloodGuard(min_spacing=settings.wake_min_spacing, per_minute=settings.wake_per_minute),
            clock,
        )
        self.executor.on_idle = self.waker.idle
        self.wake_on = WakeOnIndex()
        self.supervisor = Supervisor(clock, self.bus)
        self.supervisor.add(
            LoopKind(
                state=LoopState(
                    name=Loop.HEARTBEAT,
                    enabled=settings.heartbeat.enabled,
                    interval=settings.heartbeat.seconds,
                ),
                body=heartbeat_body(clock, self.scheduler.dispatch, self.scheduler.arm_all),
                on_stop=self._heartbeat_stopped,
            )
        )
        self.journal = JournalLoops(
            store,
            lambda: self.llm,
            self.bus,
            limiter=self.limiter,
            model=lambda: default_model(settings, self.llm),
            window=settings.loop_window,
        )
        self.metrics = Metrics(
            wakes=lambda: self.waker.counts,
            queue_depth=lambda: self.executor.llm_waiting + self.journal.lifecycle.llm_waiting,
            in_flight=lambda: len(self.executor.in_flight),
            scheduler=lambda: self.scheduler,
        )
        self.scheduler.skip_observers.append(self.metrics.recorded)
        # one live view across replicas: the runs the others start and finish, from the feed
        feed = store.change_feed()
        self.relay: RunRelay | None = None
        self._relaying: asyncio.Task[None] | None = None
        if feed is not None:
            self.relay = RunRelay(
                store,
                self.bus,
                feed,
                on_instructions=self.instructions.expire
                if isinstance(self.instructions, StoredInstructions)
                else None,
            )
        for lifecycle in (self.executor.lifecycle, self.journal.lifecycle):
            lifecycle.spool = spool_dir(settings)
            lifecycle.observers.append(self.metrics.observe)
            if self.relay is not None:
                lifecycle.observers.append(self.relay.observe)
        self.scheduler.on_interrupted = self.replicas.on_interrupted = self._interrupted
        for kind in journal_kinds(
            self.journal,
            clock,
            {
                Loop.REFLECTION: (settings.reflection.enabled, settings.reflection.seconds),
                Loop.PERSONALITY: (settings.personality.enabled, settings.personality.seconds),
                Loop.SELF_REPLY: (settings.self_reply.enabled, settings.self_reply.seconds),
            },
        ):
            self.supervisor.add(kind)

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        llm: LLMProvider | None = None,
        llm_transport: httpx.AsyncBaseTransport | None = None,
    ) -> Service:
        clock = clock or SystemClock()
        store = await open_storage(settings, clock)
        try:
            await take_lease(store)  # before any run of this replica is written
            if kept := await record_kept(store, spool_dir(settings)):
                log.warning("[HEARTBEAT] %d run outcome(s) kept at shutdown recorded", kept)
            interrupted = await store.mark_interrupted()
            if interrupted:
                log.warning(
                    "[HEARTBEAT] %d run(s) left running by a crash marked interrupted",
                    len(interrupted),
                )
            if await store.write(lambda tx: tx.create_thread("default", "Default", None)):
                log.info("created thread 'default'")
            if llm is None:
                llm, reason = await choose_provider(settings, transport=llm_transport)
            else:
                reason = f"{llm.name}: injected provider at {llm.base_url}"
            log.info("[HEARTBEAT] LLM provider %s", reason)
            http = httpx.AsyncClient(timeout=httpx.Timeout(10.0))
            service = cls(settings, store, llm, clock, http, reason)
            await service.import_workspace_instructions()
            service.start_relay()
            await service.replicas.refresh()
            service.replicas.start()
            async for batch in store.iter_threads(batch=2000):
                for thread in batch:
                    cfg, _ = hbconfig.decode_stored(thread.config_json)
                    service.wake_on.update(thread.id, cfg.wake_on)
        except BaseException:
            await store.close()
            raise
        return service

    def _interrupted(self, runs: list[Run]) -> None:
        """Runs of gone replicas this replica marked ``interrupted`` as it ended their leases
        (at a claim or a renewal): their ``run_finished`` goes out here, as this store's change
        feed does not tell its own writes back, and the relay remembers them so that a catch-up
        does not publish them again (the other replicas' relays publish them from the feed)."""
        for run in runs:
            publish_finished(self.bus, run)
            self.metrics.observe(run)
            if self.relay is not None:
                self.relay.observe(run)

    def start_relay(self) -> None:
        """Follow the other replicas' runs (when the database is shared)."""
        if self.relay is not None and self._relaying is None:
            self._relaying = asyncio.create_task(self.relay.run(), name="run-relay")

    async def import_workspace_instructions(self) -> bool:
        """With the instructions in the database and none saved yet, import the workspace's
        HEARTBEAT.md (if there is one) as their first revision. True if it did."""
        if not isinstance(self.instructions, StoredInstructions):
            return False
        if await self.store.instructions() is not None:
            return False
        found = await self.instructions.import_file(self.settings.heartbeat_md)
        if found is not None:
            log.info(
                "[HEARTBEAT] %s imported into the database as revision %s",
                self.settings.heartbeat_md,
                found.revision,
            )
        return found is not None

    async def start_loops(self) -> None:
        for name, kind in self.supervisor.kinds.items():
            if kind.state.enabled:
                await self.supervisor.start(name)

    async def close(self) -> None:
        """Stop timers, let in-flight runs finish within the grace period, then cancel."""
        await self.supervisor.stop_all()
        if self._relaying is not None:
            self._relaying.cancel()
            await asyncio.gather(self._relaying, return_exceptions=True)
        await self.replicas.stop()
        await self.waker.close()
        await self.scheduler.drain(SHUTDOWN_GRACE)
        await self.llm.aclose()
        await self.http.aclose()
        await self.store.close()

    async def _heartbeat_stopped(self) -> None:
        self.scheduler.disarm_all()

    async def _replicas_changed(self) -> None:
        """A replica came or went: arm this replica's share of the threads anew."""
        if self.supervisor.is_running(Loop.HEARTBEAT):
            armed = await self.scheduler.arm_all()
            log.info("[HEARTBEAT] %d thread(s) armed on this replica", armed)

    async def _threads_changed(self, threads: list[Thread]) -> None:
        """Threads another replica changed (a config saved there): arm those that are ours."""
        if self.supervisor.is_running(Loop.HEARTBEAT):
            await self.scheduler.arm_threads(threads)

    # -- operations used by the API ------------------------------------------------------
    async def run_now(self, thread_id: str) -> Run:
        ran_at = self.clock.now()
        run = await self.executor.run(thread_id, Trigger.MANUAL)
        assert run is not None  # manual runs have no slot to lose
        await self.scheduler.after_manual_run(thread_id, ran_at)
        return run

    async def _wake_beat(self, thread_id: str, trigger: Trigger, event: str) -> Run | None:
        """One beat for wakes (``loops.wakes``); like run-now, it spaces the next scheduled one."""
        ran_at = self.clock.now()
        run = await self.executor.run(thread_id, trigger, event=event)
        try:
            await self.scheduler.after_manual_run(thread_id, ran_at)
        except StorageBusy as exc:  # the beat ran: it is not started again for this
            log.warning(
                "the spacing rule after thread %s's wake beat was not applied: %s", thread_id, exc
            )
        return run

    async def ledger_event(
        self, kind: str, author: str, post_id: str, title: str, content: str
    ) -> None:
        """A new Ledger post or comment: wake the threads whose config wakes on it (trigger
        ``ledger_event``), through the wakes' own path and flood guard."""
        threads = self.wake_on.threads_for(kind, author, f"{title}\n{content}")
        if not threads:
            return
        text = ledger_event_text(kind, author, post_id, title, content)
        for tid in threads:
            try:
                await self.waker.wake(tid, text, WakeMode.NOW, Trigger.LEDGER_EVENT)
            except (WakeRefused, NotFound) as exc:
                log.info("[HEARTBEAT] Ledger event did not wake thread %s: %s", tid, exc)

    async def set_config(self, thread_id: str, patch: dict[str, Any]) -> hbconfig.HeartbeatConfig:
        """Merge ``patch`` into the stored config, re-plan, re-arm. A valid patch creates the
        thread if it does not exist; an invalid one (ConfigError) changes nothing."""
        try:
            thread: Thread | None = await self.store.get_thread(thread_id)
        except NotFound:
            thread = None
        stored = None if thread is None else thread.config_json
        old = None if stored is None else hbconfig.decode_stored(stored)[0]
        new = hbconfig.merge_config(
            old or hbconfig.HeartbeatConfig(), patch, channels=self.settings.channels
        )
        if thread is None:
            await self.store.write(lambda tx: tx.create_thread(thread_id, thread_id, None))
            thread = await self.store.get_thread(thread_id)
        now = self.clock.now()
        anchor, next_run = plan_config_change(
            old or hbconfig.HeartbeatConfig(enabled=False) if old is None else old,
            new,
            thread.anchor,
            thread.next_run,
            now,
        )
        encoded = hbconfig.encode(new)

        def save(tx: Tx) -> RunOutcome | None:
            tx.set_config(thread_id, encoded, anchor, next_run)
            if not new.enabled:  # no next beat: what was held for it is dropped, recorded
                return drop_held_wakes(tx, thread_id)
            return None

        if (dropped := await self.store.write(save)) is not None:
            self.metrics.recorded(Trigger.WAKE, dropped)
        self.wake_on.update(thread_id, new.wake_on)
        if self.supervisor.is_running(Loop.HEARTBEAT):
            await self.scheduler.rearm(thread_id)
        self.bus.publish(
            "config_changed",
            {"thread_id": thread_id, "config": hbconfig.to_dict(new)},
            thread_id=thread_id,
        )
        return new
