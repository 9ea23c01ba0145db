"""Three real ``heartbeat serve`` replicas on one PostgreSQL database, through a crash and a cut.

A slow test of processes (about three minutes and a half: three intervals of the shortest
cadence, ``EVERY_SECONDS.lo``): 300 threads at that cadence share three replicas on a database
of their own, the model a fake Ollama on loopback that takes a few seconds a reply, so every
slot's burst has runs in flight. In the first interval's burst one replica is killed with
SIGKILL while it has runs in flight, and started again; in the second, another one's database
connections are all cut with ``pg_terminate_backend``. The test waits on conditions read from
the database, each with a deadline, never on a fixed sleep; then it judges from the database:

- no slot was run twice (one row per thread and slot);
- no beat was lost: each thread's slots are its grid, one interval apart from its first slot to
  past the third, save where a catch-up coalesced slots (none is expected here: the killed
  replica is on this host, so its lease is judged gone at the next renewal);
- the killed replica's runs in flight ended ``interrupted``, reason ``process_died``;
- a stream of one replica told the finished runs of every replica.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from ledger.limits import EVERY_SECONDS
from tests.backends import database_url, fresh_database
from tests.conftest import DEFAULT_MD
from tests.integration.test_process import Service, fake_ollama

pytestmark = pytest.mark.slow

EVERY = EVERY_SECONDS.lo  # the shortest cadence a thread may have
THREADS = 300
BEATS = 3  # the intervals the test runs through
LLM_SECONDS = 3.0  # each reply's delay: a burst keeps runs in flight for seconds
QUIET = {"action": "none", "reasoning": "quiet"}
OURS = "id ~ '^t[0-9]{3}$'"  # the test's threads


def off_the_grid(anchor: float, slots: list[tuple[float, str]]) -> str | None:
    """Why a thread's slots, in order, are not its whole grid (anchor + k·EVERY, from k = 1
    through k = BEATS, none missing), or None. A catch-up may coalesce the slots after it: the
    next one is then any later slot of the grid."""
    expected, after_catch_up = anchor + EVERY, False
    for slot, trigger in slots:
        steps = (slot - anchor) / EVERY
        on_grid = abs(steps - round(steps)) < 1e-6
        if not on_grid or slot < expected - 1e-6 or (slot > expected + 1e-6 and not after_catch_up):
            return f"slot at +{slot - anchor:g} s where +{expected - anchor:g} s was due"
        expected, after_catch_up = slot + EVERY, trigger == "catch_up"
    if expected < anchor + EVERY * (BEATS + 1) - 1e-6:
        return f"its slots end before +{EVERY * BEATS} s (next due +{expected - anchor:g} s)"
    return None


def rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def until(what: str, condition: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.1)
    return found


class Stream:
    """The run events of one replica's ``/api/heartbeat/events``, read in a thread."""

    def __init__(self, base: str) -> None:
        self.finished: dict[int, dict[str, Any]] = {}
        self.started: set[int] = set()
        self.opened = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(base,), daemon=True)
        self._thread.start()
        assert self.opened.wait(10), "the event stream did not open"

    def _read(self, base: str) -> None:
        url = f"{base}/api/heartbeat/events?tokens=0"
        timeout = httpx.Timeout(10, read=None)
        with contextlib.suppress(httpx.HTTPError), httpx.stream("GET", url, timeout=timeout) as r:
            self.opened.set()
            kind = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: ") and kind in ("run_started", "run_finished"):
                    data = json.loads(line.removeprefix("data: "))
                    if kind == "run_started":
                        self.started.add(data["run_id"])
                    else:
                        self.finished[data["run_id"]] = data

    def join(self) -> None:
        self._thread.join(30)


def _workspace(root: Path, name: str) -> Path:
    ws = root / name
    ws.mkdir()
    (ws / "HEARTBEAT.md").write_text(DEFAULT_MD, encoding="utf-8")
    return ws


@pytest.mark.timeout(600)
def test_three_replicas_keep_every_beat_once_through_a_sigkill_and_a_cut_connection(
    tmp_path: Path,
) -> None:
    with fresh_database() as url, fake_ollama(delay=LLM_SECONDS, reply=QUIET) as llm:
        dbname = conninfo_to_dict(url)["dbname"]

        def serve(name: str) -> Service:
            return Service(
                tmp_path / name,
                llm,
                HEARTBEAT_DATABASE_URL=database_url(url, dbname, f"hb-{name}"),
                HEARTBEAT_MAX_CONCURRENCY="32",
                LOG_LEVEL="WARNING",
            )

        def owner(svc: Service) -> str:
            (found,) = until(
                "the replica's lease",
                lambda: rows(
                    url, "SELECT owner FROM replicas WHERE owner LIKE %s", f"%:{svc.proc.pid}:%"
                ),
                timeout=30,
            )
            return str(found[0])

        def running(who: str, since: float = 0.0) -> list[int]:
            return [
                r[0]
                for r in rows(
                    url,
                    "SELECT id FROM runs WHERE owner = %s AND status = 'running'"
                    " AND started_at >= %s",
                    who,
                    since,
                )
            ]

        for name in "abc":
            _workspace(tmp_path, name)
        a, b, c = (serve(name) for name in "abc")
        services = [a, b, c]
        stream: Stream | None = None
        try:
            owners = {"a": owner(a), "b": owner(b), "c": owner(c)}
            stream = Stream(a.url)
            with httpx.Client(base_url=a.url, timeout=30) as client:
                for i in range(THREADS):
                    cfg = {"every": EVERY, "skip_unchanged": False}
                    r = client.post(f"/api/threads/t{i:03d}/heartbeat/config", json=cfg)
                    assert r.status_code == 200, r.text

            # 1. the first burst: kill b while it has runs in flight, then start it again
            until("b runs slots", lambda: len(running(owners["b"])) >= 3, timeout=EVERY + 30)
            b.kill()
            killed_at = time.time()
            in_flight = running(owners["b"])
            services[1] = b = serve("b")
            owners["b again"] = owner(b)
            until(
                "b's runs in flight interrupted",
                lambda: not running(owners["b"]),
                timeout=30,
            )

            # 2. the second burst: cut every connection of c while it has runs in flight
            until(
                "c runs the next burst",
                lambda: len(running(owners["c"], since=killed_at + EVERY / 2)) >= 3,
                timeout=EVERY + 30,
            )
            cut = rows(
                url,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'hb-c'",
            )
            assert len(cut) >= 4, cut  # its writer, its readers, its change feed
            cut_at = time.time()

            # 3. every thread beats past the third interval
            def all_beat_past(beats: int) -> bool:
                (n,) = rows(
                    url,
                    f"SELECT COUNT(*) FROM threads t WHERE {OURS} AND EXISTS"
                    " (SELECT 1 FROM runs r WHERE r.thread_id = t.id AND r.status <> 'running'"
                    " AND r.slot > t.heartbeat_anchor + %s)",
                    EVERY * beats - 1,
                )[0]
                return bool(n == THREADS)

            until("every thread's third beat", lambda: all_beat_past(BEATS), timeout=2 * EVERY + 60)
            after_cut = rows(
                url,
                "SELECT COUNT(*) FROM runs WHERE owner = %s AND status = 'ok' AND started_at > %s",
                owners["c"],
                cut_at,
            )[0][0]
        finally:
            for svc in services:
                svc.stop()
            if stream is not None:
                stream.join()

        # -- judged from the database ---------------------------------------------------------
        assert in_flight, "b had runs in flight when it was killed"
        assert after_cut > 0, "c ran slots again after its connections were cut"
        twice = rows(
            url,
            "SELECT thread_id, slot, COUNT(*) FROM runs WHERE slot IS NOT NULL"
            " GROUP BY thread_id, slot HAVING COUNT(*) > 1",
        )
        assert twice == []

        anchors = dict(rows(url, f"SELECT id, heartbeat_anchor FROM threads WHERE {OURS}"))
        assert len(anchors) == THREADS
        slots: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for thread_id, slot, trigger in rows(
            url, "SELECT thread_id, slot, trigger FROM runs WHERE slot IS NOT NULL ORDER BY slot"
        ):
            slots[thread_id].append((slot, trigger))
        broken = {
            thread_id: why
            for thread_id, anchor in anchors.items()
            if (why := off_the_grid(anchor, slots[thread_id]))
        }
        assert broken == {}, list(broken.items())[:10]

        fates = rows(url, "SELECT status, reason FROM runs WHERE id = ANY(%s)", in_flight)
        assert set(fates) == {("interrupted", "process_died")}, fates
        assert not rows(url, "SELECT id FROM runs WHERE status = 'running'")

        # one stream (a's) told the finished runs of every replica, the killed one's too
        assert stream is not None
        by_owner: dict[str, set[int]] = defaultdict(set)
        for run_id, who in rows(url, "SELECT id, owner FROM runs WHERE status = 'ok'"):
            by_owner[who].add(run_id)
        for name, who in owners.items():
            if name != "b":  # b's first start was killed before a reply came: its runs in flight
                assert by_owner[who], f"replica {name} ran nothing"
            unseen = by_owner[who] - set(stream.finished)
            assert not unseen, f"{len(unseen)} finished run(s) of {name} not on a's stream"
        assert set(in_flight) <= stream.started  # the killed replica's runs, as they started
        told = len(set(in_flight) & set(stream.finished))
        print(
            f"runs ok by replica: { {n: len(by_owner[w]) for n, w in owners.items()} };"
            f" b's {len(in_flight)} run(s) in flight, {told} told finished on a's stream"
        )
