"""The composition root: storage, LLM provider, executor, scheduler and supervisor, wired once.

``Service.open`` builds everything in order and ``Service.close`` tears it down in reverse; the
Starlette lifespan calls both.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from app.llm_choice import choose_provider, default_model
from app.settings import Settings
from ledger import config as hbconfig
from ledger.errors import NotFound
from ledger.records import Loop, Run, Thread, Trigger
from ledger.storage.interface import Storage
from ledger.storage.sqlite import SqliteStore
from loops.clock import Clock, SystemClock
from loops.events import EventBus
from loops.executor import ExecutorOptions, HeartbeatExecutor
from loops.journal import JournalLoops, journal_kinds
from loops.llm import LLMProvider
from loops.scheduler import HeartbeatScheduler, plan_config_change
from loops.supervisor import LoopKind, LoopState, Supervisor, heartbeat_body

log = logging.getLogger("heartbeat")


async def open_storage(settings: Settings, clock: Clock) -> Storage:
    """PostgreSQL when ``HEARTBEAT_DATABASE_URL`` is set, else the SQLite file."""
    if settings.database_url:
        from ledger.storage.postgres import PostgresStore  # its driver is an optional extra

        return await PostgresStore.open(settings.database_url, now=clock.now)
    return await SqliteStore.open(settings.db_path, now=clock.now)


SHUTDOWN_GRACE = 10.0


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
        )
        self.scheduler = HeartbeatScheduler(
            store,
            clock,
            self.executor.run_claimed,
            is_running=self.executor.in_flight.get,
            plan=self.executor.plan,
            slack=settings.timer_slack,
        )
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
            interrupted = await store.mark_interrupted()
            if interrupted:
                log.warning(
                    "[HEARTBEAT] %d run(s) left running by a crash marked interrupted", interrupted
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
        except BaseException:
            await store.close()
            raise
        return service

    async def start_loops(self) -> None:
        for name, kind in self.supervisor.kinds.items():
            if kind.state.enabled:
                await self.supervisor.start(name)

    async def close(self) -> None:
        """Stop timers, let in-flight runs finish within the grace period, then cancel."""
        await self.supervisor.stop_all()
        await self.scheduler.drain(SHUTDOWN_GRACE)
        await self.llm.aclose()
        await self.http.aclose()
        await self.store.close()

    async def _heartbeat_stopped(self) -> None:
        self.scheduler.disarm_all()

    # -- operations used by the API ------------------------------------------------------
    async def run_now(self, thread_id: str) -> Run:
        ran_at = self.clock.now()
        run = await self.executor.run(thread_id, Trigger.MANUAL)
        assert run is not None  # manual runs have no slot to lose
        await self.scheduler.after_manual_run(thread_id, ran_at)
        return run

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
        await self.store.write(lambda tx: tx.set_config(thread_id, encoded, anchor, next_run))
        if self.supervisor.is_running(Loop.HEARTBEAT):
            await self.scheduler.rearm(thread_id)
        self.bus.publish(
            "config_changed",
            {"thread_id": thread_id, "config": hbconfig.to_dict(new)},
            thread_id=thread_id,
        )
        return new
