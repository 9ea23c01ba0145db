"""A service on PostgreSQL that loses its database connections and gets them back.

The real service (its HTTP server on loopback, a fake clock for the schedule) on a database of
its own; its connections, all named by the URL's ``application_name``, are cut from another
connection with ``pg_terminate_backend``: while a write waits for a row lock (the transaction
is replayed on a new connection), while a run is in flight (its finish is recorded), and while
no new connection can be made (the API answers 503 ``storage_unavailable``, then recovers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from app.main import create_app
from app.service import Service
from app.settings import LoopSettings, Settings
from loops.clock import FakeClock
from loops.scheduler import CLAIM_RETRY_FIRST
from loops.supervisor import ARM_RETRY_FIRST
from tests.backends import fresh_database, require_postgres
from tests.conftest import live_server
from tests.fakes.provider import ScriptedLLM
from tests.integration.test_scheduler import START, _idle

NAME = "hb-cut"  # the application_name of the service's connections


class Cut:
    """The service under test: its URL and client, and the admin's hand on its connections."""

    def __init__(self, url: str, client: httpx.AsyncClient, service: Service) -> None:
        self.url = url
        self.client = client
        self.service = service
        self.database = conninfo_to_dict(url)["dbname"]

    def admin(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(require_postgres(), autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []

    def terminate(self) -> int:
        """Cut every connection of the service; how many there were."""
        return len(
            self.admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND datname = %s",
                NAME,
                self.database,
            )
        )

    @contextmanager
    def outage(self) -> Iterator[None]:
        """No connection of the service's can be made meanwhile; those it holds are cut."""
        self.admin(f"ALTER DATABASE {self.database} WITH ALLOW_CONNECTIONS false")
        try:
            assert self.terminate() >= 1
            yield
        finally:
            self.admin(f"ALTER DATABASE {self.database} WITH ALLOW_CONNECTIONS true")

    def waiting_for_a_lock(self) -> list[int]:
        rows = self.admin(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = %s"
            " AND wait_event_type = 'Lock'",
            NAME,
            self.database,
        )
        return [r[0] for r in rows]

    async def until(self, what: str, condition: Any, timeout: float = 20) -> Any:
        async with asyncio.timeout(timeout):
            while not (found := await asyncio.to_thread(condition)):
                await asyncio.sleep(0.05)
        assert found, what
        return found


READY = b"Z\x00\x00\x00\x05I"  # the server's ReadyForQuery, outside a transaction


class CommitCut:
    """A loopback proxy in front of the server for every connection of the service. Once
    ``armed``, the writer's next transaction that writes a ``running`` row is let commit on the
    server, and its connection is then closed before the answer to ``COMMIT`` reaches the
    service, which cannot tell whether it committed. Reads the protocol's simple queries only
    (the service's connections use no other, and no TLS)."""

    def __init__(self, url: str) -> None:
        info = conninfo_to_dict(url)
        self.host, self.port = str(info.get("host", "127.0.0.1")), int(info.get("port", 5432))
        self.armed = False
        self.cuts = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> CommitCut:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    def url(self, url: str) -> str:
        """``url`` through the proxy."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return url.replace(f"{self.host}:{self.port}", f"127.0.0.1:{port}") + (
            "&sslmode=disable&gssencmode=disable"
        )

    async def _serve(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        server, to_server = await asyncio.open_connection(self.host, self.port)
        cut = asyncio.Event()

        async def down() -> None:
            answer = b""
            while data := await server.read(65536):
                if cut.is_set():  # the answer to the COMMIT: wait until it is whole, drop it
                    answer += data
                    if answer.endswith(READY):
                        break
                    continue
                to_client.write(data)
                await to_client.drain()

        async def up() -> None:
            size = int.from_bytes(await client.readexactly(4))  # the startup message
            to_server.write(size.to_bytes(4) + await client.readexactly(size - 4))
            writer = starts_run = False
            while True:
                head = await client.readexactly(5)
                body = await client.readexactly(int.from_bytes(head[1:]) - 4)
                if head[:1] == b"Q":
                    sql = body[:-1].decode()
                    writer = writer or "heartbeat.writer" in sql
                    # the writer sends a transaction's BEGIN and savepoints in front of its
                    # next statement, in one query string
                    if sql.startswith("BEGIN"):
                        starts_run = False
                    if "INSERT INTO runs" in sql and "'running'" in sql:
                        starts_run = self.armed and writer
                    if sql.rstrip("; ").endswith("COMMIT") and starts_run:
                        self.armed, starts_run = False, False
                        self.cuts += 1
                        cut.set()
                to_server.write(head + body)
                await to_server.drain()

        tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for stream in (to_client, to_server):
                stream.close()


@asynccontextmanager
async def cut_service(
    tmp_path: Path,
    clock: FakeClock,
    llm: ScriptedLLM,
    proxy: CommitCut | None = None,
    **overrides: Any,
) -> AsyncIterator[Cut]:
    with fresh_database(NAME) as url:
        served = url if proxy is None else proxy.url(url)
        settings = Settings.for_workspace(
            tmp_path, database_url=served, timer_slack=0.0, **overrides
        )
        app = create_app(settings, clock=clock, llm=llm)
        async with (
            live_server(app) as base,
            httpx.AsyncClient(base_url=base, timeout=30) as client,
        ):
            service: Service = app.state.service
            clock.idle = _idle(service)
            try:
                yield Cut(url, client, service)
            finally:
                clock.idle = None


@asynccontextmanager
async def commit_cut_service(
    tmp_path: Path, clock: FakeClock, llm: ScriptedLLM
) -> AsyncIterator[tuple[CommitCut, Cut]]:
    """The service with its connections through a ``CommitCut`` proxy."""
    async with (
        CommitCut(require_postgres()) as proxy,
        cut_service(tmp_path, clock, llm, proxy) as cut,
    ):
        yield proxy, cut


async def _run_now(cut: Cut) -> httpx.Response:
    return await cut.client.post("/api/threads/default/heartbeat/run-now")


async def test_cut_connections_are_made_again_and_the_beat_goes_on(tmp_path: Path) -> None:
    clock, llm = FakeClock(START), ScriptedLLM()
    async with cut_service(tmp_path, clock, llm) as cut:
        store = cut.service.store
        config = {"every_seconds": 60, "skip_unchanged": False}
        r = await cut.client.post("/api/threads/default/heartbeat/config", json=config)
        assert r.status_code == 200, r.text
        anchor = clock.now()

        # 1. cut in the middle of a transaction: run-now's start waits for the thread's row,
        # which another connection holds locked; the cut transaction is made again, whole
        with psycopg.connect(cut.url.replace(NAME, "hb-admin")) as holder:
            holder.execute("SELECT id FROM threads WHERE id = 'default' FOR UPDATE")
            running = asyncio.create_task(_run_now(cut))
            first = await cut.until("run-now waits for the lock", cut.waiting_for_a_lock)
            assert cut.terminate() >= 4  # the writer, the readers, the change feed
            again = await cut.until(
                "the transaction made again on a new connection",
                lambda: [pid for pid in cut.waiting_for_a_lock() if pid not in first],
            )
            assert again
            holder.rollback()
        answer = await running
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "ok"

        # 2. cut while a run is in flight: its finish is recorded on a new connection
        llm.gate = asyncio.Event()
        running = asyncio.create_task(_run_now(cut))
        async with asyncio.timeout(20):
            while llm.active == 0:
                await asyncio.sleep(0.01)
        assert cut.terminate() >= 1
        llm.gate.set()
        answer = await running
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "ok"
        llm.gate = None

        # 3. an outage: no connection can be made; the API answers 503 with a clear body
        cut.admin(f"ALTER DATABASE {cut.database} WITH ALLOW_CONNECTIONS false")
        try:
            assert cut.terminate() >= 1
            for answer in (
                await cut.client.get("/api/threads/default/heartbeat/history"),
                await _run_now(cut),
            ):
                assert answer.status_code == 503, answer.text
                error = answer.json()["error"]
                assert error["code"] == "storage_unavailable", error
                assert "database" in error["message"]
                assert "Traceback" not in answer.text
                assert answer.headers["Retry-After"] == "5"
        finally:
            cut.admin(f"ALTER DATABASE {cut.database} WITH ALLOW_CONNECTIONS true")
        r = await cut.client.get("/api/threads/default/heartbeat/history")
        assert r.status_code == 200, r.text

        # the beat goes on: the next slots run on the grid, and no run is left running
        await clock.advance(60 * 3)
        rows = list(reversed(await store.history("default", limit=100)))
        scheduled = [(r.slot, r.status) for r in rows if r.trigger == "schedule"]
        assert scheduled == [(anchor + 60 * k, "ok") for k in (1, 2, 3)], scheduled
        assert await store.count_runs(status="running") == 0


async def test_an_outage_at_a_claim_keeps_the_slot_and_the_scheduler_with_one_line_each_way(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock, llm = FakeClock(START), ScriptedLLM()
    async with cut_service(tmp_path, clock, llm) as cut:
        store, scheduler = cut.service.store, cut.service.scheduler
        await cut.service.set_config("default", {"every_seconds": 60, "skip_unchanged": False})
        anchor = clock.now()
        with caplog.at_level(logging.INFO, logger="heartbeat.loops.scheduler"):
            # the slot comes due; its claim's write waits for the thread's row, which another
            # connection holds, when the database goes away: the write cannot be made again
            with psycopg.connect(cut.url.replace(NAME, "hb-admin")) as holder:
                holder.execute("SELECT id FROM threads WHERE id = 'default' FOR UPDATE")
                due = asyncio.create_task(clock.advance(60))
                await cut.until("the claim waits for the lock", cut.waiting_for_a_lock)
                cut.admin(f"ALTER DATABASE {cut.database} WITH ALLOW_CONNECTIONS false")
                try:
                    assert cut.terminate() >= 1
                    holder.rollback()
                    await due
                    assert scheduler.claim_failures == 1
                    await clock.advance(CLAIM_RETRY_FIRST)  # the retry cannot even read
                    assert scheduler.claim_failures == 2
                finally:
                    cut.admin(f"ALTER DATABASE {cut.database} WITH ALLOW_CONNECTIONS true")
            await clock.advance(2 * CLAIM_RETRY_FIRST)  # the next retry claims it, late
            await clock.advance(60 * 2)
        rows = list(reversed(await store.history("default", limit=100)))
        assert [(r.trigger, r.slot, r.status) for r in rows] == [
            ("schedule", anchor + 60 * k, "ok") for k in (1, 2, 3)
        ]
        assert cut.service.supervisor.kinds["heartbeat"].state.restarts == 0
        lines = [r for r in caplog.records if r.name == "heartbeat.loops.scheduler"]
        assert [(r.levelname, r.getMessage().split(":")[0]) for r in lines] == [
            ("WARNING", "[HEARTBEAT] claims wait for the database connection"),
            ("INFO", "[HEARTBEAT] the database is back after 3 s"),
        ], [r.getMessage() for r in lines]


async def test_a_claim_cut_at_its_commit_runs_the_rows_it_committed_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock, llm = FakeClock(START), ScriptedLLM()
    async with commit_cut_service(tmp_path, clock, llm) as (proxy, cut):
        store, scheduler = cut.service.store, cut.service.scheduler
        await cut.service.set_config("default", {"every_seconds": 60, "skip_unchanged": False})
        anchor = clock.now()
        with caplog.at_level(logging.INFO, logger="heartbeat.loops.scheduler"):
            # the slot's claim commits on the server, but its answer never comes back: the
            # scheduler is told the claim failed, while its running row is there
            proxy.armed = True
            await clock.advance(60)
            assert proxy.cuts == 1
            assert scheduler.claim_failures == 1
            with psycopg.connect(cut.url.replace(NAME, "hb-admin")) as conn:
                rows = conn.execute("SELECT slot, status FROM runs WHERE loop = 'heartbeat'")
                assert rows.fetchall() == [(anchor + 60, "running")]
            await clock.advance(CLAIM_RETRY_FIRST)  # the retry runs the row it finds, late
            assert [(r.slot, r.status) for r in await store.history("default")] == [
                (anchor + 60, "ok")
            ]
            await clock.advance(60 * 2)
        rows = list(reversed(await store.history("default", limit=100)))
        assert [(r.trigger, r.slot, r.status) for r in rows] == [
            ("schedule", anchor + 60 * k, "ok") for k in (1, 2, 3)
        ]
        assert await store.count_runs(status="running") == 0
        assert len(llm.requests) == 3
        assert cut.service.supervisor.kinds["heartbeat"].state.restarts == 0
        lines = [r.getMessage() for r in caplog.records if r.name == "heartbeat.loops.scheduler"]
        assert [line.split(":")[0] for line in lines] == [
            "[HEARTBEAT] claims wait for the database connection",
            "[HEARTBEAT] 1 run(s) of claims reported failed were committed",
            "[HEARTBEAT] the database is back after 1 s",
        ], lines


def _heads(records: list[logging.LogRecord]) -> list[tuple[str, str]]:
    """Each line's level and its words before a colon or an "after" (no figures), once no
    line carries a traceback."""
    assert not [r for r in records if r.exc_info], "a traceback was logged"
    return [(r.levelname, r.getMessage().split(":")[0].split(" after")[0]) for r in records]


async def _step(clock: FakeClock) -> None:
    """Advance the clock a second, letting the service's reads answer (its watchdog is no
    task the clock waits for)."""
    await clock.advance(1)
    await asyncio.sleep(0.02)


async def _step_until(clock: FakeClock, what: str, done: Any, limit: int = 120) -> None:
    for _ in range(limit):
        if done():
            return
        await _step(clock)
    raise AssertionError(what)


async def test_an_outage_at_a_reconcile_pass_or_a_start_restarts_nothing_with_one_line_each_way(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock, llm = FakeClock(START), ScriptedLLM()
    reconcile = LoopSettings(enabled=True, seconds=60)
    async with cut_service(tmp_path, clock, llm, heartbeat=reconcile) as cut:
        scheduler, heartbeat = cut.service.scheduler, cut.service.supervisor.kinds["heartbeat"]
        await cut.service.set_config("default", {"every_seconds": 3600})
        await clock.advance(59)
        ticks = heartbeat.state.ticks

        def lines() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "heartbeat.loops.supervisor"]

        def waiting() -> bool:
            return any(r.levelname == "WARNING" for r in lines()[len(before) :])

        with caplog.at_level(logging.INFO, logger="heartbeat.loops.supervisor"):
            before = lines()
            with cut.outage():  # the reconcile pass comes due while the database is away
                await _step_until(clock, "the reconcile pass fails", waiting)
                for _ in range(int(4 * ARM_RETRY_FIRST)):  # and fails again as it is retried
                    await _step(clock)
                assert heartbeat.state.ticks == ticks
            await _step_until(clock, "the pass goes through", lambda: heartbeat.state.ticks > ticks)

            r = await cut.client.post("/api/heartbeat/stop")
            assert r.status_code == 200, r.text
            assert len(scheduler.timers) == 0
            idle, clock.idle = clock.idle, None  # no dispatcher waits before the threads are armed
            with cut.outage():  # started while the database is away: it arms once it is back
                before = lines()
                r = await cut.client.post("/api/heartbeat/start")
                assert r.status_code == 200, r.text
                await _step_until(clock, "arming fails", waiting)
                for _ in range(int(4 * ARM_RETRY_FIRST)):
                    await _step(clock)
                assert len(scheduler.timers) == 0
            # armed, and the start logged (the timers are armed before the pass returns)
            await _step_until(clock, "the threads are armed", lambda: _started(lines()))
            assert "default" in scheduler.timers
            clock.idle = idle
        assert heartbeat.state.restarts == 0
        assert _heads(lines()) == [
            ("WARNING", "[HEARTBEAT] the reconcile pass waits for the database connection"),
            ("INFO", "[HEARTBEAT] the reconcile pass went through"),
            ("INFO", "[HEARTBEAT] Scheduler stopped"),
            ("INFO", "[HEARTBEAT] heartbeat loop started"),
            ("WARNING", "[HEARTBEAT] arming the threads waits for the database connection"),
            ("INFO", "[HEARTBEAT] arming the threads went through"),
            ("INFO", "[HEARTBEAT] Scheduler started (1 thread(s) armed, reconcile every 60 s)"),
        ], [r.getMessage() for r in lines()]


def _started(records: list[logging.LogRecord]) -> bool:
    return any(r.getMessage().startswith("[HEARTBEAT] Scheduler started") for r in records)


def _none_running(cut: Cut) -> bool:
    with psycopg.connect(cut.url.replace(NAME, "hb-admin")) as conn:
        return conn.execute("SELECT id FROM runs WHERE status = 'running'").fetchall() == []


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "heartbeat.loops.lifecycle"]


async def test_a_run_now_cut_at_its_commit_frees_the_thread_for_the_retry_and_the_slots(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock, llm = FakeClock(START), ScriptedLLM()
    async with commit_cut_service(tmp_path, clock, llm) as (proxy, cut):
        store = cut.service.store
        await cut.service.set_config("default", {"every_seconds": 60, "skip_unchanged": False})
        anchor = clock.now()
        with caplog.at_level(logging.INFO, logger="heartbeat.loops.lifecycle"):
            # run-now's start commits on the server, its answer never comes back: 503
            proxy.armed = True
            answer = await _run_now(cut)
            assert proxy.cuts == 1
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "storage_unavailable"
            # the row it committed, which nothing runs, is ended as soon as the database answers
            await cut.until("the unconfirmed start is ended", lambda: _none_running(cut))
            (ended,) = await store.history("default")
            assert (ended.trigger, ended.slot, ended.status, ended.reason) == (
                "manual",
                None,
                "interrupted",
                "start_unconfirmed",
            )
            assert "start was reported failed" in (ended.error or "")
            # the user's retry runs (no run_in_flight), and the slots decide (no overlap)
            answer = await _run_now(cut)
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "ok"
            await clock.advance(60 * 2)
        rows = list(reversed(await store.history("default", limit=100)))
        assert [(r.trigger, r.slot, r.status) for r in rows] == [
            ("manual", None, "interrupted"),
            ("manual", None, "ok"),
            ("schedule", anchor + 60, "ok"),
            ("schedule", anchor + 60 * 2, "ok"),
        ]
        assert await store.count_runs(status="running") == 0
        assert len(llm.requests) == 3
        assert [line.split(":")[0] for line in _lines(caplog)] == [
            f"[HEARTBEAT] run {ended.id} for thread default was started after all by a start"
            " reported failed (its COMMIT cut), which nothing runs"
        ], _lines(caplog)


async def test_a_journal_start_cut_at_its_commit_is_ended_and_the_next_tick_reflects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(START)
    llm = ScriptedLLM(default={"score": 0.5, "summary": "a greeting", "notable": []})
    async with commit_cut_service(tmp_path, clock, llm) as (proxy, cut):
        store, journal = cut.service.store, cut.service.journal
        await cut.service.set_config("default", {"every_seconds": 3600})
        await store.write(lambda tx: tx.add_message("default", "user", "hello"))
        with caplog.at_level(logging.INFO, logger="heartbeat.loops.lifecycle"):
            proxy.armed = True
            assert await journal.reflection_tick() == 0  # its start was reported failed
            assert proxy.cuts == 1
            await cut.until("the unconfirmed start is ended", lambda: _none_running(cut))
            assert await journal.reflection_tick() == 1
        rows = list(reversed(await store.history("default", loop="reflection")))
        assert [(r.status, r.reason) for r in rows] == [
            ("interrupted", "start_unconfirmed"),
            ("ok", None),
        ]
        assert len(await store.reflections("default")) == 1
        assert len(_lines(caplog)) == 1, _lines(caplog)


async def test_lease_renewals_through_an_outage_log_one_line_each_way(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock, llm = FakeClock(START), ScriptedLLM()
    async with cut_service(tmp_path, clock, llm) as cut:
        replicas = cut.service.replicas
        await cut.service.set_config("default", {"every_seconds": 3600})

        def lines() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "heartbeat.loops.replicas"]

        with caplog.at_level(logging.INFO, logger="heartbeat.loops.replicas"):
            with cut.outage():  # renewals come due every LEASE_RENEW_SECONDS meanwhile
                await _step_until(
                    clock, "two renewals fail", lambda: replicas.failures >= 2, limit=3000
                )
            renewed = replicas.renewals
            await _step_until(clock, "a renewal goes through", lambda: replicas.renewals > renewed)
            await _step_until(clock, "and the next", lambda: replicas.renewals > renewed + 1)
        assert _heads(lines()) == [
            ("WARNING", "[HEARTBEAT] lease renewals wait for the database connection"),
            ("INFO", "[HEARTBEAT] the lease is renewed again"),
        ], [r.getMessage() for r in lines()]


async def test_a_run_now_cut_at_its_commit_does_not_settle_a_beat_deferred_for_the_user(
    tmp_path: Path,
) -> None:
    clock, llm = FakeClock(START), ScriptedLLM()
    async with commit_cut_service(tmp_path, clock, llm) as (proxy, cut):
        store, scheduler = cut.service.store, cut.service.scheduler
        config = {"every_seconds": 60, "quiet_after_user_seconds": 30, "skip_unchanged": False}
        await cut.service.set_config("default", config)
        await clock.advance(50)
        await store.write(lambda tx: tx.add_message("default", "user", "typing..."))
        await clock.advance(10)  # the slot yields: a beat is owed 30 s after the message
        owed = scheduler.deferred("default")
        assert owed is not None
        proxy.armed = True
        assert (await _run_now(cut)).status_code == 503
        await cut.until("the unconfirmed start is ended", lambda: _none_running(cut))
        assert scheduler.deferred("default") == owed  # it decided nothing
        await clock.advance(owed - clock.now())
        rows = list(reversed(await store.history("default")))
        assert [(r.trigger, r.status, r.reason) for r in rows] == [
            ("schedule", "skipped", "user_active"),
            ("manual", "interrupted", "start_unconfirmed"),
            ("schedule", "ok", None),
        ]
        assert rows[-1].slot == owed


async def test_a_wake_beat_cut_at_its_commit_is_started_again_told_its_wake(
    tmp_path: Path,
) -> None:
    clock, llm = FakeClock(START), ScriptedLLM()
    async with commit_cut_service(tmp_path, clock, llm) as (proxy, cut):
        store = cut.service.store
        await cut.service.set_config("default", {"every_seconds": 3600})
        proxy.armed = True
        r = await cut.client.post(
            "/api/threads/default/heartbeat/wake", json={"text": "the build broke", "mode": "now"}
        )
        assert r.status_code == 202, r.text
        await cut.until("the start is cut", lambda: proxy.cuts == 1)
        await cut.until("the unconfirmed start is ended", lambda: _none_running(cut))

        async def ran() -> list[tuple[str, str, str | None, str | None]]:
            rows = reversed(await store.history("default"))
            return [(r.trigger, r.status, r.reason, r.event_text) for r in rows]

        for _ in range(60):  # the wake spacing passes: the beat is tried again
            if len(await ran()) == 2:
                break
            await _step(clock)
        assert await ran() == [
            ("wake", "interrupted", "start_unconfirmed", "the build broke"),
            ("wake", "ok", None, "the build broke"),
        ]
        assert len(llm.requests) == 1
