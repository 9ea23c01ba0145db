"""HEARTBEAT.md's revisions in the database, on each backend; the runs read back by id."""

from __future__ import annotations

import asyncio

import pytest

from ledger.errors import RevisionConflict
from ledger.limits import INSTRUCTIONS_REVISIONS_KEPT
from ledger.records import RunOutcome, RunStart
from ledger.storage.interface import Storage
from tests.backends import Backend

NOW = 1_700_000_000.0


@pytest.fixture
async def store(backend: Backend) -> Storage:
    return await backend.open(now=lambda: NOW)


async def test_each_save_is_the_next_revision_and_the_newest_is_current(store: Storage) -> None:
    assert await store.instructions() is None
    first = await store.write(lambda tx: tx.save_instructions("one"))
    second = await store.write(lambda tx: tx.save_instructions("two", 1))
    assert (first.revision, second.revision) == (1, 2)
    current = await store.instructions()
    assert current is not None
    assert (current.revision, current.content, current.saved_at) == (2, "two", NOW)
    assert [r.content for r in await store.instruction_revisions()] == ["two", "one"]


async def test_a_save_on_a_revision_no_longer_current_is_refused(store: Storage) -> None:
    await store.write(lambda tx: tx.save_instructions("one", 0))
    await store.write(lambda tx: tx.save_instructions("two", 1))
    with pytest.raises(RevisionConflict) as refused:
        await store.write(lambda tx: tx.save_instructions("stale edit", 1))
    assert (refused.value.base, refused.value.current) == ("1", "2")
    assert refused.value.extra == {"current_revision": "2"}
    with pytest.raises(RevisionConflict):  # "none saved yet" is no longer true either
        await store.write(lambda tx: tx.save_instructions("first?", 0))
    current = await store.instructions()
    assert current is not None and current.content == "two"


async def test_saves_racing_on_one_revision_one_wins(backend: Backend) -> None:
    stores = [await backend.open(now=lambda: NOW) for _ in range(2)]
    await stores[0].write(lambda tx: tx.save_instructions("base"))
    results = await asyncio.gather(
        *(
            s.write(lambda tx, i=i: tx.save_instructions(f"edit {i}", 1))
            for i, s in enumerate(stores)
        ),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, RevisionConflict)]
    assert len(won) == 1 and len(lost) == 1, results
    current = await stores[1].instructions()
    assert current is not None and current.revision == 2


async def test_only_the_newest_revisions_are_kept(store: Storage) -> None:
    for i in range(INSTRUCTIONS_REVISIONS_KEPT + 5):
        await store.write(lambda tx, i=i: tx.save_instructions(f"v{i}"))
    kept = await store.instruction_revisions(limit=1000)
    assert len(kept) == INSTRUCTIONS_REVISIONS_KEPT
    assert kept[0].revision == INSTRUCTIONS_REVISIONS_KEPT + 5


async def test_runs_by_ids_and_the_last_finished_run(backend: Backend) -> None:
    clock = [NOW]
    store = await backend.open(now=lambda: clock[0])
    assert await store.last_finished_run() is None
    await store.write(lambda tx: tx.create_thread("t", "T", None))
    ids = []
    for _ in range(3):
        run_id = await store.write(
            lambda tx: tx.start_run(RunStart(thread_id="t", loop="heartbeat", trigger="manual"))
        )
        assert run_id is not None
        ids.append(run_id)
    for run_id in (ids[2], ids[0]):  # the first run finishes last
        clock[0] += 1
        await store.write(lambda tx, r=run_id: tx.finish_run(r, RunOutcome(status="ok")))
    assert [r.id for r in await store.runs_by_ids([ids[2], ids[0], 999_999])] == [ids[0], ids[2]]
    assert await store.last_finished_run() == ids[0]
