"""The store's write path on a real SQLite file: group commit, per-write rollback, shutdown."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ledger.errors import NotFound, StoreClosed
from ledger.records import RunOutcome
from ledger.store import USER, Store, Tx


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "ledger.db", now=lambda: 1_700_000_000.0)
    yield s
    await s.close()


async def titles(store: Store) -> list[str]:
    return sorted(p.title for p in await store.posts(limit=100))


async def test_concurrent_writes_share_one_transaction(store: Store) -> None:
    before = store.transactions
    posts = await asyncio.gather(
        *(store.write(lambda tx, i=i: tx.create_post(USER, f"p{i}", "x")) for i in range(50))
    )
    assert [p.title for p in posts] == [f"p{i}" for i in range(50)]
    assert store.transactions == before + 1
    assert len(await titles(store)) == 50


async def test_a_failing_write_rolls_back_only_itself(store: Store) -> None:
    def half_then_fail(tx: Tx) -> None:
        tx.create_post(USER, "half", "written, then the write fails")
        tx.add_comment("post_missing", USER, "no such post")

    results = await asyncio.gather(
        store.write(lambda tx: tx.create_post(USER, "before", "x")),
        store.write(half_then_fail),
        store.write(lambda tx: tx.create_post(USER, "after", "x")),
        return_exceptions=True,
    )
    assert isinstance(results[1], NotFound)
    assert results[1].ident == "post_missing"
    assert await titles(store) == ["after", "before"]


async def test_a_lone_failing_write_leaves_nothing(store: Store) -> None:
    def fail(tx: Tx) -> None:
        tx.create_post(USER, "orphan", "x")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await store.write(fail)
    assert await titles(store) == []
    post = await store.write(lambda tx: tx.create_post(USER, "next", "x"))
    assert post.title == "next"  # the connection is usable after the rollback


async def test_a_write_cancelled_before_its_batch_is_not_made(store: Store) -> None:
    gate = threading.Event()

    def slow(tx: Tx) -> None:
        gate.wait(5)
        tx.create_post(USER, "slow", "x")

    first = asyncio.create_task(store.write(slow))
    await asyncio.sleep(0.05)  # the pump is now inside the first transaction
    second = asyncio.create_task(store.write(lambda tx: tx.create_post(USER, "dropped", "x")))
    await asyncio.sleep(0)
    second.cancel()
    gate.set()
    await first
    with pytest.raises(asyncio.CancelledError):
        await second
    await store.write(lambda tx: tx.create_post(USER, "later", "x"))
    assert await titles(store) == ["later", "slow"]


async def test_finish_run_returns_the_finished_row(store: Store) -> None:
    def start(tx: Tx) -> int | None:
        tx.create_thread("t", "T", None)
        return tx.start_run("t", "heartbeat", "manual", model="m", owner=store.owner)

    run_id = await store.write(start)
    assert run_id is not None
    outcome = RunOutcome(status="ok", action="none", summary="nothing to do", llm_ms=1.5)
    run = await store.write(lambda tx: tx.finish_run(run_id, outcome))
    assert (run.id, run.status, run.summary, run.model, run.llm_ms) == (
        run_id,
        "ok",
        "nothing to do",
        "m",
        1.5,
    )
    assert run.finished_at is not None
    assert await store.get_run(run_id) == run
    with pytest.raises(NotFound):
        await store.write(lambda tx: tx.finish_run(run_id + 99, outcome))


async def test_close_commits_queued_writes_then_refuses_new_ones(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    store = await Store.open(path, now=lambda: 1.0)
    queued = [
        asyncio.create_task(store.write(lambda tx, i=i: tx.create_post(USER, f"q{i}", "x")))
        for i in range(20)
    ]
    await asyncio.sleep(0)
    await store.close()
    assert all(t.done() and not t.exception() for t in queued)
    with pytest.raises(StoreClosed):
        await store.write(lambda tx: tx.create_post(USER, "late", "x"))
    reopened = await Store.open(path, now=lambda: 2.0)
    try:
        assert len(await titles(reopened)) == 20
    finally:
        await reopened.close()


async def test_a_write_waits_for_another_processes_lock(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    store = await Store.open(path, now=lambda: 1.0)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute(
            "INSERT INTO ledger_posts (id, author, title, content, created_at)"
            " VALUES ('post_other', 'user', 'other', 'x', 0)"
        )
        threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
        await store.write(lambda tx: tx.create_post(USER, "mine", "x"))
        assert await titles(store) == ["mine", "other"]
    finally:
        other.close()
        await store.close()
