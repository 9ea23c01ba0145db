"""The store's write path on each backend (a SQLite file, PostgreSQL): group commit, per-write
rollback, shutdown."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import msgspec
import pytest

from ledger.errors import NotFound, StoreClosed
from ledger.records import BeatMemo, NewProfile, NewReflection, PlanFix, RunOutcome, RunStart
from ledger.storage.interface import AGENT, USER, Storage, Tx
from ledger.storage.sqlite import SqliteStore
from tests.backends import Backend


@pytest.fixture
async def store(backend: Backend) -> Storage:
    return await backend.open(now=lambda: 1_700_000_000.0)


async def titles(store: Storage) -> list[str]:
    return sorted(p.title for p in await store.posts(limit=100))


async def test_concurrent_writes_share_one_transaction(store: Storage) -> None:
    before = store.transactions
    posts = await asyncio.gather(
        *(store.write(lambda tx, i=i: tx.create_post(USER, f"p{i}", "x")) for i in range(50))
    )
    assert [p.title for p in posts] == [f"p{i}" for i in range(50)]
    assert store.transactions == before + 1
    assert len(await titles(store)) == 50


async def test_a_failing_write_rolls_back_only_itself(store: Storage) -> None:
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


async def test_a_lone_failing_write_leaves_nothing(store: Storage) -> None:
    def fail(tx: Tx) -> None:
        tx.create_post(USER, "orphan", "x")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await store.write(fail)
    assert await titles(store) == []
    post = await store.write(lambda tx: tx.create_post(USER, "next", "x"))
    assert post.title == "next"  # the connection is usable after the rollback


async def test_a_write_cancelled_before_its_batch_is_not_made(store: Storage) -> None:
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


async def test_finish_run_returns_the_finished_row(store: Storage) -> None:
    def start(tx: Tx) -> int | None:
        tx.create_thread("t", "T", None)
        return tx.start_run(
            RunStart(
                thread_id="t", loop="heartbeat", trigger="manual", model="m", owner=store.owner
            )
        )

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


async def test_close_commits_queued_writes_then_refuses_new_ones(backend: Backend) -> None:
    store = await backend.open(now=lambda: 1.0)
    queued = [
        asyncio.create_task(store.write(lambda tx, i=i: tx.create_post(USER, f"q{i}", "x")))
        for i in range(20)
    ]
    await asyncio.sleep(0)
    await store.close()
    assert all(t.done() and not t.exception() for t in queued)
    with pytest.raises(StoreClosed):
        await store.write(lambda tx: tx.create_post(USER, "late", "x"))
    reopened = await backend.open(now=lambda: 2.0)
    assert len(await titles(reopened)) == 20


async def test_a_write_waits_for_another_processes_lock(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    store = await SqliteStore.open(path, now=lambda: 1.0)
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


async def test_store_plans_moves_many_threads_at_once(store: Storage) -> None:
    def seed(tx: Tx) -> None:
        for thread_id in ("a", "b", "c"):
            tx.create_thread(thread_id, thread_id.upper(), None)
            tx.set_config(thread_id, "{}", 1.0, 2.0)

    await store.write(seed)
    fixes = [
        PlanFix("a", 10.0, 70.0, "{}"),
        PlanFix("b", None, None, "{}"),
        PlanFix("c", 5.0, 6.0, '{"every_seconds": 60}'),  # planned from a config since replaced
        PlanFix("missing", 3.0, 4.0, None),
    ]
    assert await store.write(lambda tx: tx.store_plans(fixes)) == {"a", "b"}
    threads = {t.id: (t.anchor, t.next_run) for t in await store.list_threads()}
    assert threads == {"a": (10.0, 70.0), "b": (None, None), "c": (1.0, 2.0)}


async def test_reflected_and_profiled_up_to_are_the_newest_covered_message(
    store: Storage,
) -> None:
    def covered(tx: Tx) -> tuple[int, ...]:
        return tuple(
            f(thread_id) for thread_id in "tu" for f in (tx.reflected_up_to, tx.profiled_up_to)
        )

    def seed(tx: Tx) -> list[int]:
        for thread_id in "tu":
            tx.create_thread(thread_id, thread_id.upper(), None)
        ids = [tx.add_message("t", "user", f"m{i}").id for i in range(3)]
        tx.add_message("u", "user", "elsewhere")
        return ids

    ids = await store.write(seed)
    assert await store.write(covered) == (0, 0, 0, 0)

    def journal(tx: Tx) -> None:
        for summary, last in (("later window", ids[1]), ("earlier window, written after", ids[0])):
            new = NewReflection(
                thread_id="t",
                score=0.5,
                summary=summary,
                notable=[],
                last_message_id=last,
                run_id=None,
            )
            tx.add_reflection(new)
        tx.add_profile(
            NewProfile(
                thread_id="t",
                traits=["curious"],
                tone="calm",
                interests=[],
                last_message_id=ids[2],
                run_id=None,
            )
        )

    await store.write(journal)
    assert await store.write(covered) == (ids[1], ids[2], 0, 0)
    assert await store.last_reflected_message("t") == ids[1]


async def test_runs_of_a_dead_process_are_marked_interrupted_at_start(backend: Backend) -> None:
    store = await backend.open(now=lambda: 5.0)

    def start(tx: Tx) -> list[int | None]:
        tx.create_thread("t", "T", None)
        return [
            tx.start_run(
                RunStart(thread_id="t", loop="reflection", trigger="schedule", owner=owner)
            )
            for owner in (store.owner, "another-host:1", None)
        ]

    mine, other_host, nobody = await store.write(start)
    ended = await store.mark_interrupted()  # this process's run is left alone
    assert [(r.id, r.status) for r in ended] == [
        (other_host, "interrupted"),
        (nobody, "interrupted"),
    ]
    runs = {r.id: r for r in await store.history("t", limit=10)}
    assert runs[mine].status == "running"
    for run_id in (other_host, nobody):
        assert run_id is not None
        assert (runs[run_id].status, runs[run_id].reason) == ("interrupted", "process_died")
        assert runs[run_id].finished_at == 5.0
    await store.close()  # ends this process's run too
    reopened = await backend.open(now=lambda: 6.0)
    assert mine is not None
    run = await reopened.get_run(mine)
    assert (run.status, run.reason, run.finished_at) == ("interrupted", "shutdown", 5.0)
    assert len(await reopened.mark_interrupted()) == 0


async def test_a_post_names_the_thread_whose_run_made_it(store: Storage) -> None:
    # Every thread posts as the one agent: only the run tells whose post it is.
    await store.write(lambda tx: tx.create_thread("t1", "One", None))
    run_id = await store.write(
        lambda tx: tx.start_run(
            RunStart(thread_id="t1", loop="heartbeat", trigger="manual", owner="me")
        )
    )
    assert run_id is not None
    made = await store.write(lambda tx: tx.create_post(AGENT, "by t1", "x", run_id))
    theirs = await store.write(lambda tx: tx.create_post(USER, "by the user", "x"))
    assert (made.thread_id, theirs.thread_id) == ("t1", None)
    assert {p.title: p.thread_id for p in await store.posts(limit=10)} == {
        "by t1": "t1",
        "by the user": None,
    }
    assert (await store.get_post(made.id)).thread_id == "t1"


async def test_a_beat_memo_keeps_its_split_inputs(store: Storage) -> None:
    await store.write(lambda tx: tx.create_thread("t1", "One", None))
    assert (await store.beat_memo("t1")).seen_posts is None  # never decided
    memo = BeatMemo(
        thread_id="t1",
        fingerprint="f" * 64,
        rest_fingerprint="r" * 64,
        seen_posts=("0123456789abcdef", "fedcba9876543210"),
    )
    await store.write(lambda tx: tx.set_beat_memo(memo))
    assert await store.beat_memo("t1") == memo
    none_seen = msgspec.structs.replace(memo, seen_posts=())  # no post of others counted
    await store.write(lambda tx: tx.set_beat_memo(none_seen))
    assert await store.beat_memo("t1") == none_seen
    assert await store.write(lambda tx: tx.beat_memo("t1")) == none_seen


async def test_a_beats_first_read_is_its_memo_and_its_context(store: Storage) -> None:
    await store.write(lambda tx: tx.create_thread("t1", "One", None))
    fresh, _ = await store.beat_inputs("t1", messages=5, posts=5)
    assert fresh == BeatMemo(thread_id="t1")
    memo = BeatMemo(thread_id="t1", fingerprint="f" * 64, repeats=2)

    def world(tx: Tx) -> None:
        tx.set_beat_memo(memo)
        tx.add_message("t1", USER, "hello")
        tx.create_post(USER, "A post", "x")

    await store.write(world)
    got, ctx = await store.beat_inputs("t1", messages=5, posts=5)
    assert got == memo == await store.beat_memo("t1")
    assert ctx == await store.run_context("t1", messages=5, posts=5)
    assert [m.content for m in ctx.messages] == ["hello"] and [p.title for p in ctx.posts] == [
        "A post"
    ]
