"""PostgreSQL drivers side by side: the cost of one small query, as the storage makes them.

    python bench/pg_drivers.py [--url URL] [--queries 3000] [--rounds 3]

On a scratch table of 1,000 rows, in alternating rounds: a primary-key SELECT by psycopg 3
(synchronous, client-side binding: the writer's way; asynchronous, client-side binding: the
readers' way; asynchronous, server-side binding), and by asyncpg; and a compare-and-set UPDATE
inside one transaction (the claim's statement) by psycopg 3 synchronous and asyncpg; and a read
of five SELECTs in one REPEATABLE READ transaction (as the run context is read) by psycopg 3
asynchronous: a round trip per statement, in pipeline mode, and as one query string (the
storage's way). Prints the median wall and CPU microseconds per statement (per read of five
for the last three); nothing is asserted. asyncpg is measured only if
installed; it cannot serve the writer, whose transactions are synchronous functions.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

SELECT = "SELECT id, title FROM bench_drivers WHERE id = %s"
CAS = "UPDATE bench_drivers SET v = %s WHERE id = %s AND v = %s"
Case = Callable[[str, int], Awaitable[None]]


def setup(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_drivers")
        conn.execute(
            "CREATE TABLE bench_drivers (id BIGINT PRIMARY KEY, title TEXT, v DOUBLE PRECISION)"
        )
        conn.execute(
            "INSERT INTO bench_drivers SELECT g, 't' || g, g FROM generate_series(1, 1000) g"
        )


async def psycopg_sync_select(url: str, n: int) -> None:
    with psycopg.connect(url, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        for i in range(n):
            conn.execute(SELECT, (i % 1000 + 1,)).fetchall()


async def psycopg_sync_cas(url: str, n: int) -> None:
    with psycopg.connect(url, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        with conn.transaction():
            for i in range(n):
                conn.execute(CAS, (i + 0.5, i % 1000 + 1, -1.0))


async def _psycopg_async(url: str, n: int, cursor: Any) -> None:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, cursor_factory=cursor)
    async with conn:
        for i in range(n):
            await (await conn.execute(SELECT, (i % 1000 + 1,))).fetchall()


async def psycopg_async_select(url: str, n: int) -> None:
    await _psycopg_async(url, n, psycopg.AsyncClientCursor)


async def psycopg_async_server_bound(url: str, n: int) -> None:
    await _psycopg_async(url, n, psycopg.AsyncCursor)


SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"


def _five(i: int) -> list[tuple[int]]:
    return [((i + k * 200) % 1000 + 1,) for k in range(5)]


async def _snapshots(url: str, n: int, read: Callable[[Any, int], Awaitable[None]]) -> None:
    conn = await psycopg.AsyncConnection.connect(
        url, autocommit=True, cursor_factory=psycopg.AsyncClientCursor
    )
    async with conn:
        for i in range(n):
            await read(conn, i)


async def snapshot_round_trips(url: str, n: int) -> None:
    async def read(conn: Any, i: int) -> None:
        await conn.execute(SNAPSHOT)
        for params in _five(i):
            await (await conn.execute(SELECT, params)).fetchall()
        await conn.execute("COMMIT")

    await _snapshots(url, n, read)


async def snapshot_pipeline(url: str, n: int) -> None:
    async def read(conn: Any, i: int) -> None:
        async with conn.pipeline():
            await conn.execute(SNAPSHOT)
            cursors = [await conn.execute(SELECT, params) for params in _five(i)]
            await conn.execute("COMMIT")
        for cursor in cursors:
            await cursor.fetchall()

    await _snapshots(url, n, read)


async def snapshot_one_string(url: str, n: int) -> None:
    text = "; ".join([SNAPSHOT, *[SELECT] * 5, "COMMIT"])

    async def read(conn: Any, i: int) -> None:
        cursor = await conn.execute(text, tuple(v for params in _five(i) for v in params))
        for _ in range(5):
            cursor.nextset()
            await cursor.fetchall()

    await _snapshots(url, n, read)


def asyncpg_cases() -> dict[str, Case]:
    try:
        import asyncpg
    except ImportError:
        print("asyncpg is not installed: its figures are left out")
        return {}

    async def select(url: str, n: int) -> None:
        conn = await asyncpg.connect(url)
        for i in range(n):
            await conn.fetch(SELECT.replace("%s", "$1"), i % 1000 + 1)
        await conn.close()

    async def cas(url: str, n: int) -> None:
        conn = await asyncpg.connect(url)
        async with conn.transaction():
            for i in range(n):
                await conn.execute(
                    "UPDATE bench_drivers SET v = $1 WHERE id = $2 AND v = $3",
                    i + 0.5,
                    i % 1000 + 1,
                    -1.0,
                )
        await conn.close()

    return {"SELECT asyncpg": select, "CAS UPDATE asyncpg": cas}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    setup(args.url)
    cases: dict[str, Case] = {
        "SELECT psycopg sync, client-bound (writer)": psycopg_sync_select,
        "SELECT psycopg async, client-bound (readers)": psycopg_async_select,
        "SELECT psycopg async, server-bound": psycopg_async_server_bound,
        "CAS UPDATE psycopg sync (writer)": psycopg_sync_cas,
        **asyncpg_cases(),
        "5 SELECTs, one snapshot: a round trip each": snapshot_round_trips,
        "5 SELECTs, one snapshot: pipeline mode": snapshot_pipeline,
        "5 SELECTs, one snapshot: one query string": snapshot_one_string,
    }
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(args.rounds):
        order = list(cases.items())
        for name, case in order if round_ % 2 == 0 else reversed(order):
            started, cpu_started = time.perf_counter(), time.process_time()
            asyncio.run(case(args.url, args.queries))
            wall[name].append((time.perf_counter() - started) / args.queries * 1e6)
            cpu[name].append((time.process_time() - cpu_started) / args.queries * 1e6)
    with psycopg.connect(args.url, autocommit=True) as conn:
        conn.execute("DROP TABLE bench_drivers")
    print(f"{'statement, driver':46s} {'wall µs':>8s} {'CPU µs':>8s}  (medians)")
    for name in cases:
        print(
            f"{name:46s} {statistics.median(wall[name]):8.1f} {statistics.median(cpu[name]):8.1f}"
        )


if __name__ == "__main__":
    main()
