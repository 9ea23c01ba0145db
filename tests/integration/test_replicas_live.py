"""One live view across replicas: two services on one PostgreSQL database, each with its own
engine and server. A stream on either sees both's runs, once; ``Last-Event-ID`` replays on
either; the change feed survives losing its connection and catches up; HEARTBEAT.md is shared
by revision."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from ledger.records import RunOutcome, RunStart, run_to_dict
from loops.clock import FakeClock
from loops.relay import RunRelay
from tests.backends import fresh_schema
from tests.integration.test_scheduler import START
from tests.integration.test_sse import FakeLLM, Live, Received, finished, serve


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema() as where:
        yield where


@asynccontextmanager
async def replicas(tmp_path: Path, url: str, **settings: Any) -> AsyncIterator[tuple[Live, Live]]:
    llm = FakeLLM()
    async with (
        serve(tmp_path / "a", llm, database_url=url, **settings) as a,
        serve(tmp_path / "b", llm, database_url=url, **settings) as b,
    ):
        await a.thread("shared")
        yield a, b


def relay(live: Live) -> RunRelay:
    assert live.service.relay is not None
    return live.service.relay


async def until_resumed(live: Live, resumes: int) -> None:
    async with asyncio.timeout(10):
        while relay(live).resumes < resumes:
            await asyncio.sleep(0.02)


async def test_a_stream_on_either_replica_sees_both_replicas_runs_once(
    tmp_path: Path, url: str
) -> None:
    async with replicas(tmp_path, url) as (a, b):
        await until_resumed(a, 1)
        await until_resumed(b, 1)
        async with a.subscribe() as on_a, b.subscribe() as on_b:
            mine = await a.run_now("default")
            theirs = await b.run_now("shared")
            for stream in (on_a, on_b):
                got = await stream.events({"run_started", "run_finished"}, 4)
                kinds = sorted((e.kind, e.data["run_id"]) for e in got)
                assert kinds == sorted(
                    [
                        (k, r["run_id"])
                        for r in (mine, theirs)
                        for k in ("run_started", "run_finished")
                    ]
                ), kinds
                done = {e.data["run_id"]: e for e in got if e.kind == "run_finished"}
                assert done[theirs["run_id"]].data == theirs
                assert done[theirs["run_id"]].id == str(theirs["run_id"])
                assert done[mine["run_id"]].data == mine
            # and nothing more: each run went out once on each stream
            await a.run_now("default")
            nxt = await on_b.events({"run_started", "run_finished"}, 2)
            assert [e.kind for e in nxt] == ["run_started", "run_finished"]


async def test_last_event_id_replays_on_whichever_replica_the_client_comes_back_to(
    tmp_path: Path, url: str
) -> None:
    async with replicas(tmp_path, url) as (a, b):
        seen = await a.run_now("default")
        missed = [await b.run_now("shared"), await a.run_now("default")]
        for live in (a, b):
            async with live.subscribe(f"?last_event_id={seen['run_id']}") as stream:
                got = await stream.until(finished(missed[-1]["run_id"]))
                replayed = [e.data for e in got if e.kind == "run_finished"]
                assert replayed == missed


async def test_the_feed_reconnects_and_catches_up_what_others_finished_meanwhile(
    tmp_path: Path, url: str
) -> None:
    name = "feed-cut"
    async with replicas(tmp_path, make_conninfo(url, application_name=name)) as (a, b):
        await until_resumed(a, 1)
        store = b.service.store
        async with a.subscribe() as on_a:
            with psycopg.connect(url, autocommit=True) as admin:
                cut = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s"
                    " AND (query LIKE 'LISTEN%%' OR query = 'SELECT 1')",
                    (name,),
                ).fetchall()
            assert len(cut) == 2, cut  # both replicas' feeds (listening, or checking)

            # meanwhile another process's run starts and finishes
            def start(tx: Any) -> int | None:
                return tx.start_run(
                    RunStart(
                        thread_id="shared", loop="heartbeat", trigger="manual", owner="elsewhere"
                    )
                )

            run_id = await store.write(start)
            assert run_id is not None
            await store.write(lambda tx: tx.finish_run(run_id, RunOutcome(status="ok")))
            got = await on_a.until(finished(run_id), timeout=15)
            assert relay(a).resumes >= 2 and relay(a).caught_up + relay(a).relayed >= 1
            assert [e.kind for e in got].count("run_finished") == 1
            # live again after the reconnection
            later = await b.run_now("shared")
            await on_a.until(finished(later["run_id"]))


async def test_heartbeat_md_is_shared_by_revision_and_a_stale_save_is_refused(
    tmp_path: Path, url: str
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "HEARTBEAT.md").write_text("# Rules\n- imported from the file\n")
    async with replicas(tmp_path, url) as (a, b):
        on_b = (await b.client.get("/api/heartbeat/heartbeat.md")).json()
        assert on_b["stored_in"] == "database"
        assert (on_b["revision"], on_b["content"]) == ("1", "# Rules\n- imported from the file\n")
        saved = await a.client.post(
            "/api/heartbeat/heartbeat.md", json={"content": "- from a", "base_revision": "1"}
        )
        assert saved.status_code == 200 and saved.json()["revision"] == "2"
        stale = await b.client.post(
            "/api/heartbeat/heartbeat.md", json={"content": "- from b", "base_revision": "1"}
        )
        assert stale.status_code == 409
        error = stale.json()["error"]
        assert error["code"] == "revision_conflict" and error["current_revision"] == "2"
        assert "'2'" in error["message"]
        assert (await b.client.get("/api/heartbeat/heartbeat.md")).json()["content"] == "- from a"
        # the runs of the other replica read the new revision once told of it
        async with asyncio.timeout(5):
            while (await b.service.instructions.read() or ("", 0.0))[0] != "- from a":
                await asyncio.sleep(0.02)


GONE = "other-host:7:7"  # a replica that died: its lease is no longer renewed


@asynccontextmanager
async def replicas_on_a_clock(
    tmp_path: Path, url: str
) -> AsyncIterator[tuple[Live, Live, FakeClock]]:
    """Two replicas on one fake clock, with their schedulers. Their renewals are stopped and
    their leases made to outlast the test, so that a lease ends only where a test says."""
    clock = FakeClock(START)
    async with replicas(tmp_path, url, clock=clock, start_loops=True, timer_slack=0.0) as (a, b):
        for live in (a, b):
            await live.service.replicas.stop()
            me = live.service.store.owner
            await live.service.store.write(lambda tx, me=me: tx.hold_lease(me, START + 3600))
            await until_resumed(live, 1)
        yield a, b, clock


async def _dead_replica_runs(live: Live, thread_id: str, lease_until: float) -> int:
    """A replica that died mid-run: its lease (running out at ``lease_until``) and the
    ``running`` row it left on ``thread_id``."""

    def seed(tx: Any) -> int | None:
        tx.hold_lease(GONE, lease_until)
        return tx.start_run(
            RunStart(thread_id=thread_id, loop="heartbeat", trigger="manual", owner=GONE)
        )

    run_id = await live.service.store.write(seed)
    assert run_id is not None
    return int(run_id)


def _finished_of(got: list[Received], run_id: int) -> list[Received]:
    return [e for e in got if e.kind == "run_finished" and e.data["run_id"] == run_id]


async def test_the_claim_that_ends_a_dead_replicas_lease_streams_its_interrupted_run_once(
    tmp_path: Path, url: str
) -> None:
    async with replicas_on_a_clock(tmp_path, url) as (a, b, clock):
        # a thread b's timers hold; its slot comes due while the dead replica's row runs on it
        thread = next(t for t in (f"t{i}" for i in range(99)) if b.service.replicas.owns(t))
        await b.service.set_config(thread, {"every_seconds": 60})
        slot = clock.now() + 60
        dead = await _dead_replica_runs(b, thread, lease_until=slot - 1)
        async with a.subscribe() as on_a, b.subscribe() as on_b:
            await clock.advance(60)  # b's claim ends the lease, interrupts the row, runs the slot
            seen = [
                await stream.until(
                    lambda r: r.kind == "run_finished" and r.data["trigger"] == "schedule",
                    timeout=10,
                )
                for stream in (on_b, on_a)  # b published it itself, a relayed b's write
            ]
            row = await b.service.store.get_run(dead)
            assert (row.status, row.reason) == ("interrupted", "process_died")
            for got in seen:
                (told,) = _finished_of(got, dead)
                assert told.data == run_to_dict(row)
                assert told.id == str(dead)
            # and nothing more of it: the next run on either replica comes next on both
            later = await a.run_now(thread)
            for stream in (on_b, on_a):
                got = await stream.until(finished(later["run_id"]))
                assert _finished_of(got, dead) == []
        assert GONE not in {lease.owner for lease in await b.service.store.leases()}
        # counted where it was recorded, once
        for live, count in ((b, "1.0"), (a, None)):
            metrics = (await live.client.get("/metrics")).text
            counted = [
                line.rsplit(" ", 1)[1]
                for line in metrics.splitlines()
                if line.startswith("heartbeat_runs_total{") and 'status="interrupted"' in line
            ]
            assert counted == ([] if count is None else [count]), counted


async def test_the_renewal_that_ends_a_dead_replicas_lease_streams_its_interrupted_run_once(
    tmp_path: Path, url: str
) -> None:
    async with replicas_on_a_clock(tmp_path, url) as (a, b, clock):
        dead = await _dead_replica_runs(b, "shared", lease_until=clock.now() - 1)
        async with a.subscribe() as on_a, b.subscribe() as on_b:
            await a.service.replicas.tick()  # a's renewal finds the lease run out and ends it
            row = await a.service.store.get_run(dead)
            assert (row.status, row.reason) == ("interrupted", "process_died")
            later = await b.run_now("shared")
            for stream in (on_a, on_b):  # a published it itself, b relayed a's write
                got = await stream.until(finished(later["run_id"]))
                (told,) = _finished_of(got, dead)
                assert (told.data, told.id) == (run_to_dict(row), str(dead))
