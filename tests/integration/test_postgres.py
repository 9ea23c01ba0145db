"""The PostgreSQL backend on a real server: its dialect, its migrations raced by processes,
the scheduler's compare-and-set across stores sharing one database, cut connections."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from ledger.errors import Conflict
from ledger.records import RunStart
from ledger.storage.engine import READERS, Query
from ledger.storage.migrations import MIGRATIONS
from ledger.storage.pg_dialect import Dialect, id_columns, render_migration
from ledger.storage.postgres import PostgresStore, schema_version
from ledger.storage.sqlite import SqliteTx
from tests.backends import fresh_schema
from tests.conftest import AppFactory
from tests.fakes.provider import ScriptedLLM

SLOT = 1_700_000_000.125


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema() as where:
        yield where


def test_the_dialect_renders_each_difference_once() -> None:
    dialect = Dialect(MIGRATIONS)
    ignore = dialect.statement("INSERT OR IGNORE INTO threads (id) VALUES (?)")
    assert (
        ignore.sql == "INSERT INTO threads (id) VALUES (%s) ON CONFLICT DO NOTHING RETURNING rowid"
    )
    assert dialect.statement("INSERT INTO runs (thread_id) VALUES (?)").returns_id
    kept = dialect.statement("UPDATE runs SET status = ? WHERE id = ? RETURNING id")
    assert (kept.sql, kept.returns_id) == (
        "UPDATE runs SET status = %s WHERE id = %s RETURNING id",
        False,
    )
    assert id_columns(MIGRATIONS)["messages"] == "id"
    assert id_columns(MIGRATIONS)["ledger_posts"] == "rowid"
    schema = render_migration(MIGRATIONS[0])
    assert " REAL" not in schema and "AUTOINCREMENT" not in schema
    assert "created_at DOUBLE PRECISION" in schema


async def test_migrations_are_recorded_once_and_a_newer_schema_is_refused(url: str) -> None:
    for _ in range(2):  # the second open finds nothing to apply
        store = await PostgresStore.open(url, now=lambda: 1.0)
        await store.close()
        with psycopg.connect(url) as raw:
            assert schema_version(raw) == len(MIGRATIONS)
    with psycopg.connect(url, autocommit=True) as raw:
        raw.execute("UPDATE heartbeat_schema SET version = %s", (len(MIGRATIONS) + 1,))
    with pytest.raises(Conflict, match="newer than this program knows"):
        await PostgresStore.open(url, now=lambda: 1.0)


OPEN_AND_WRITE = """
import asyncio, sys
from ledger.storage.postgres import PostgresStore

async def main() -> None:
    store = await PostgresStore.open(sys.argv[1], now=lambda: 1.0)
    await store.write(lambda tx: tx.create_thread(sys.argv[2], "T", None))
    await store.close()

asyncio.run(main())
"""


async def test_migrations_raced_by_processes_starting_together_are_applied_once(
    url: str,
) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AND_WRITE, url, f"t{i}"], stderr=subprocess.PIPE
        )
        for i in range(4)
    ]
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    # and stores of this process racing each other the same way
    stores = await asyncio.gather(*(PostgresStore.open(url, now=lambda: 1.0) for _ in range(3)))
    for store in stores:
        await store.close()
    with psycopg.connect(url) as raw:
        assert schema_version(raw) == len(MIGRATIONS)
        assert raw.execute("SELECT COUNT(*) FROM heartbeat_schema").fetchone() == (1,)
        assert raw.execute("SELECT COUNT(*) FROM threads").fetchone() == (4,)


async def test_two_stores_on_one_database_never_claim_a_slot_twice(url: str) -> None:
    a, b = [await PostgresStore.open(url, now=lambda: 1.0) for _ in range(2)]
    ids = [f"t{i:03d}" for i in range(300)]

    def seed(tx: SqliteTx) -> None:
        for thread_id in ids:
            tx.create_thread(thread_id, thread_id, None)
            tx.set_config(thread_id, "{}", SLOT, SLOT)

    await a.write(seed)
    try:
        for round_ in range(3):  # each round claims the slot the last one moved to
            slot, nxt = SLOT + round_ * 60, SLOT + (round_ + 1) * 60
            claims = [(thread_id, slot, nxt) for thread_id in ids]
            chunks = [claims[i : i + 25] for i in range(0, len(claims), 25)]
            won = await asyncio.gather(
                *(
                    store.write(lambda tx, c=chunk: tx.claim_slots(c), first=True)
                    for chunk in chunks
                    for store in (a, b)
                )
            )
            by_a = set().union(*won[0::2])
            by_b = set().union(*won[1::2])
            assert not by_a & by_b
            assert by_a | by_b == set(ids)
        runs = await asyncio.gather(
            *(
                store.write(
                    lambda tx: tx.start_run(
                        RunStart(thread_id="t000", loop="heartbeat", trigger="schedule", slot=SLOT)
                    )
                )
                for store in (a, b)
            )
        )
        assert sum(run_id is not None for run_id in runs) == 1  # one row, one refusal
        assert {t.next_run for t in await b.list_threads(limit=1000)} == {SLOT + 180}
    finally:
        await a.close()
        await b.close()


async def test_a_store_whose_connections_are_cut_gets_them_back(url: str) -> None:
    name = f"cut-{secrets.token_hex(4)}"
    store = await PostgresStore.open(make_conninfo(url, application_name=name), now=lambda: 1.0)
    try:
        await store.write(lambda tx: tx.create_thread("t", "T", None))
        with psycopg.connect(url, autocommit=True) as admin:
            cut = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (name,),
            ).fetchall()
        assert len(cut) == 1 + READERS  # the writer and every reader
        assert await store.write(lambda tx: tx.create_thread("u", "U", None))
        assert store.busy_retries == 0  # sent again on a new connection, not retried later
        assert await store.thread_ids() == ["t", "u"]
        context = await store.run_context("t", messages=5, posts=5)
        assert context.messages == []
    finally:
        await store.close()


async def test_a_statement_that_fails_in_a_batch_undoes_only_its_own_write(url: str) -> None:
    """The savepoints around each write go out in front of its statements: a write whose very
    first statement fails (the one that also carries the transaction's BEGIN), and one that
    fails after writing, leave the others of their batch whole."""
    store = await PostgresStore.open(url, now=lambda: 1.0)

    def fails_at_once(tx: SqliteTx) -> None:
        tx.conn.execute("SELECT 1 / 0")

    def writes_then_fails(tx: SqliteTx) -> None:
        tx.create_thread("half", "written, then its write fails", None)
        tx.conn.execute("SELECT 1 / 0")

    try:
        before = store.transactions
        results = await asyncio.gather(
            store.write(fails_at_once),
            store.write(lambda tx: tx.create_thread("a", "A", None)),
            store.write(writes_then_fails),
            store.write(lambda tx: tx.create_thread("b", "B", None)),
            return_exceptions=True,
        )
        assert store.transactions == before + 1  # one batch
        assert [type(r).__name__ for r in results] == [
            "DivisionByZero",
            "bool",
            "DivisionByZero",
            "bool",
        ]
        assert await store.thread_ids() == ["a", "b"]
        assert await store.write(lambda tx: tx.create_thread("c", "C", None))
        assert await store.thread_ids() == ["a", "b", "c"]
    finally:
        await store.close()


async def test_a_read_of_several_queries_that_fails_leaves_no_transaction_open(
    url: str,
) -> None:
    """The queries of one snapshot go in one string, between BEGIN and COMMIT: one that fails
    stops the string before the COMMIT, and the transaction is rolled back, so the connection
    is not left in it (its next read would fail, or see an old snapshot)."""
    name = f"read-{secrets.token_hex(4)}"
    store = await PostgresStore.open(
        make_conninfo(url, application_name=name), now=lambda: 1.0, readers=1
    )
    broken = Query("SELECT 1 / 0", (), lambda rows: rows)
    counted = Query("SELECT COUNT(*) FROM threads WHERE id <> ?", ("none",), lambda r: r[0][0])
    try:
        with pytest.raises(psycopg.errors.DivisionByZero):
            await store._db.fetch_many([counted, broken, counted])
        with psycopg.connect(url, autocommit=True) as admin:
            states = admin.execute(
                "SELECT state FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchall()
        assert all(not state.startswith("idle in transaction") for (state,) in states), states
        await store.write(lambda tx: tx.create_thread("t", "T", None))
        assert await store._db.fetch_many([counted, counted]) == [1, 1]
    finally:
        await store.close()


async def test_the_service_runs_on_postgresql_when_a_database_url_is_set(
    url: str, make_app: AppFactory
) -> None:
    api = await make_app(llm=ScriptedLLM(), start_loops=False, database_url=url)
    assert api.service.store.location.startswith("postgresql://")
    created = await api.client.post(
        "/api/threads", json={"thread_id": "pg", "title": "On PostgreSQL"}
    )
    assert created.status_code == 201, created.text
    with psycopg.connect(url) as raw:
        assert raw.execute("SELECT id FROM threads ORDER BY id").fetchall() == [
            ("default",),
            ("pg",),
        ]


async def test_a_serialization_failure_retries_the_whole_transaction(url: str) -> None:
    store = await PostgresStore.open(url, now=lambda: 1.0)
    attempts: list[int] = []

    def conflicted_once(tx: SqliteTx) -> bool:
        attempts.append(1)
        if len(attempts) == 1:  # as PostgreSQL reports a conflict with another transaction
            tx.conn.execute("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001'; END $$")
        return tx.create_thread("t", "T", None)

    try:
        results = await asyncio.gather(
            store.write(conflicted_once),
            store.write(lambda tx: tx.create_thread("u", "U", None)),
        )
        assert results == [True, True]
        assert (len(attempts), store.busy_retries) == (2, 1)
        assert await store.thread_ids() == ["t", "u"]
    finally:
        await store.close()


async def test_run_now_is_409_while_another_replica_runs_the_thread(
    url: str, make_app: AppFactory
) -> None:
    api = await make_app(llm=ScriptedLLM(), start_loops=False, database_url=url)
    other = await PostgresStore.open(url, now=lambda: 1.0)
    try:
        run_id = await other.write(
            lambda tx: tx.start_run(
                RunStart(
                    thread_id="default",
                    loop="heartbeat",
                    trigger="manual",
                    owner="other-host:1:1",
                )
            )
        )
        refused = await api.client.post("/api/threads/default/heartbeat/run-now")
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "run_in_flight"
        assert f"run {run_id}" in refused.json()["error"]["message"]
    finally:
        await other.close()
