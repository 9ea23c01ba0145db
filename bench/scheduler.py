"""The scheduler core against APScheduler 3.x, side by side on this machine.

    python bench/scheduler.py [--quick] [--only idle,steady,herd,restart]
                              [--contenders heartbeat,aps-memory,aps-sqlite]

Contenders, each in its own child process (clean CPU, context-switch and memory figures):

- ``heartbeat``: the real ``HeartbeatScheduler`` + ``TimerSet`` + ``SqliteStore`` on a SQLite file
  and the real ``SystemClock``. Threads are inserted in one transaction beforehand (an encoded
  ``HeartbeatConfig``, anchor and next run set), armed with ``arm_all()`` and fired by
  ``dispatch()``. The executor is replaced by a no-op runner that persists like production:
  the scheduler writes the run's ``running`` row in its claim transaction (as it does for the
  executor), and the runner finishes it with ``RunOutcome(status="ok")`` through
  ``SqliteStore.write`` (group commit).
- ``aps-memory`` / ``aps-sqlite``: APScheduler 3.x ``AsyncIOScheduler``, one ``IntervalTrigger``
  job per thread running an ``async`` no-op (it only records its start time), with the
  ``MemoryJobStore`` or a ``SQLAlchemyJobStore`` on a SQLite file. Job defaults:
  ``misfire_grace_time=None`` (run however late, so lateness is measured, not dropped),
  ``coalesce=True``, ``max_instances=1``. APScheduler persists only the job's next run time; it
  writes no run history, so its per-run work is lighter than ours.

Scenarios: ``idle`` (10k and 100k threads, nothing due), ``steady`` (10k threads at 60 s spread
over the minute), ``herd`` (10k threads due at the same instant) and ``restart`` (1k threads at
60 s, SIGKILL mid-way, ten minutes of downtime simulated by shifting every stored time in the
database back 600 s, then a fresh child on the same file). Timings are printed, never asserted;
each table also shows how much CPU other processes used on the machine meanwhile. ``--scale``
shrinks every thread count for a smoke test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import math
import pickle
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import (
    LoopIterations,
    StallProbe,
    Usage,
    child_main,
    lateness,
    machine,
    md_table,
    ms,
    progress,
    rss_bytes,
    run_child,
    sleep_until,
    spawn_child,
    warn_if_busy,
)

SCRIPT = Path(__file__).resolve()
OURS = "heartbeat"
APS_MEMORY = "aps-memory"
APS_SQLITE = "aps-sqlite"
CONTENDERS = (OURS, APS_MEMORY, APS_SQLITE)
SCENARIOS = ("idle", "steady", "herd", "restart")
HOUR = 3600
MINUTE = 60
HERD_BOUND = 50.0  # seconds after the herd instant; the next slot is a minute later
RESTART_THREADS = 1000
DOWNTIME = 600.0


# ================================================================================================
# our side (runs in a child)
# ================================================================================================


async def insert_threads(
    store: Any, dues: list[float], every: int, *, skip_unchanged: bool = True
) -> None:
    """One row per thread: an encoded config, anchor = due - every, next run = due."""
    from ledger import config as hbconfig
    from ledger.records import PlanFix

    config = hbconfig.HeartbeatConfig(every_seconds=every, skip_unchanged=skip_unchanged)
    cfg = hbconfig.encode(config)
    plans = [PlanFix(f"t{i:06d}", due - every, due, cfg) for i, due in enumerate(dues)]

    def insert(tx: Any) -> None:
        for i, plan in enumerate(plans):
            tx.create_thread(plan.thread_id, f"bench {i}", cfg)
        tx.store_plans(plans)

    await store.write(insert)


async def create_heartbeat_db(path: str, dues: list[float], every: int) -> float:
    """Create the database with one thread per due time (in the parent). Returns seconds."""
    from ledger.storage.sqlite import SqliteStore

    started = time.perf_counter()
    store = await SqliteStore.open(path, now=time.time)
    try:
        await insert_threads(store, dues, every)
    finally:
        await store.close()
    return time.perf_counter() - started


class NoopRunner:
    """Stands in for the executor: records lateness and persists a run row like production."""

    def __init__(self, store: Any, expected: int = 0) -> None:
        from ledger.records import RunOutcome

        self.store = store
        self.ok = RunOutcome(status="ok")
        self.in_flight: dict[str, int] = {}
        self.started: list[float] = []  # slot -> runner start
        self.persisted: list[tuple[float, float]] = []  # (finish wall time, slot -> finish)
        self.expected = expected
        self.all_done = asyncio.Event()

    def plan(self, thread: Any, trigger: str, slot: float) -> Any:
        from ledger.records import Loop
        from loops.lifecycle import RunPlan

        return RunPlan(
            thread=thread,
            loop=Loop.HEARTBEAT,
            trigger=trigger,
            model="",
            config=None,
            deadline=60.0,
            slot=slot,
        )

    async def __call__(self, plan: Any) -> None:
        begun = time.time()
        slot, run_id, thread_id = plan.slot, plan.id, plan.thread_id  # the slot claimed
        self.started.append(begun - slot)
        self.in_flight[thread_id] = run_id
        try:
            await self.store.write(lambda tx: tx.finish_run(run_id, self.ok))
            done = time.time()
            self.persisted.append((done, done - slot))
            if self.expected and len(self.persisted) >= self.expected:
                self.all_done.set()
        finally:
            self.in_flight.pop(thread_id, None)


async def _open_ours(db: str, expected: int = 0) -> tuple[Any, Any, NoopRunner]:
    from ledger.storage.sqlite import SqliteStore
    from loops.clock import SystemClock
    from loops.scheduler import HeartbeatScheduler
    from loops.supervisor import freeze_startup_heap

    store = await SqliteStore.open(db, now=time.time)
    runner = NoopRunner(store, expected)
    scheduler = HeartbeatScheduler(
        store, SystemClock(), runner, is_running=runner.in_flight.get, plan=runner.plan
    )
    freeze_startup_heap()  # as ``heartbeat serve`` does before it starts serving
    return store, scheduler, runner


async def _stop_ours(store: Any, scheduler: Any, *tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await scheduler.drain(5.0)
    await store.close()


async def _idle_window(tag: str, window: float) -> tuple[int, dict[str, float], int]:
    """Settle for a second, then watch an idle window: (RSS, usage, event-loop iterations)."""
    await asyncio.sleep(1.0)
    gc.collect()
    rss_after = rss_bytes()
    iterations = LoopIterations(asyncio.get_running_loop())
    before = Usage.now()
    progress(f"{tag}: idle window of {window:.0f} s")
    await asyncio.sleep(window)
    return rss_after, Usage.now().since(before), iterations.count


async def heartbeat_idle(spec: dict[str, Any]) -> dict[str, Any]:
    window, tag = spec["window"], spec["tag"]
    store, scheduler, _ = await _open_ours(spec["db"])
    gc.collect()
    rss_before = rss_bytes()
    started = time.perf_counter()
    armed = await scheduler.arm_all()
    arm_s = time.perf_counter() - started
    progress(f"{tag}: armed {armed:,} threads from the database in {arm_s:.2f} s")
    dispatch = asyncio.create_task(scheduler.dispatch())
    rss_after, usage, loop_iterations = await _idle_window(tag, window)
    await _stop_ours(store, scheduler, dispatch)
    return {
        "armed": armed,
        "arm_s": arm_s,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "loop_iterations": loop_iterations,
        "runs": scheduler.started_runs,
        **usage,
    }


async def _load_window(
    tag: str, mode: str, t0: float, window: float, done: asyncio.Event | None
) -> tuple[StallProbe, asyncio.Task[None], float, dict[str, float]]:
    """The measured window of steady or herd: a stall probe from a second before ``t0``; steady
    ends at ``t0 + window``, herd when ``done`` is set (bounded by the window).

    Returns the probe, its task (still running), the wall time the window ended and the usage.
    """
    probe = StallProbe()
    await sleep_until(t0 - 1.0)
    probe_task = asyncio.create_task(probe.run())
    await sleep_until(t0 - 0.1)
    before = Usage.now()
    if mode == "steady":
        await sleep_until(t0 + window - 0.1)
    else:
        assert done is not None
        try:
            async with asyncio.timeout(max(0.0, t0 + window - time.time())):
                await done.wait()
        except TimeoutError:
            progress(f"{tag}: herd not drained within {window:.0f} s")
    end_wall = time.time()
    usage = Usage.now().since(before)
    await asyncio.sleep(0.05)  # let the probe record a wake-up delayed by the last stall
    return probe, probe_task, end_wall, usage


async def heartbeat_load(spec: dict[str, Any]) -> dict[str, Any]:
    """steady: ``n`` threads at ``every`` spread over the interval; herd: all due at t0."""
    n, every, mode, window = spec["n"], spec["every"], spec["mode"], spec["window"]
    tag = spec["tag"]
    store, scheduler, runner = await _open_ours(spec["db"], expected=n if mode == "herd" else 0)
    t0 = time.time() + 3.0 + n * 100e-6
    dues = [t0 + i * every / n for i in range(n)] if mode == "steady" else [t0] * n
    await insert_threads(store, dues, every)
    started = time.perf_counter()
    armed = await scheduler.arm_all()
    arm_s = time.perf_counter() - started
    margin = t0 - time.time()
    progress(f"{tag}: armed {armed:,} in {arm_s:.2f} s; first slot in {margin:.1f} s")
    dispatch = asyncio.create_task(scheduler.dispatch())
    probe, probe_task, end_wall, usage = await _load_window(tag, mode, t0, window, runner.all_done)
    in_window = [late for at, late in runner.persisted if t0 - 0.1 <= at <= end_wall]
    started_late = list(runner.started)
    await _stop_ours(store, scheduler, dispatch, probe_task)
    return {
        "armed": armed,
        "arm_s": arm_s,
        "arm_margin_s": margin,
        "runs": len(in_window),
        "started": len(started_late),
        "start_late": lateness(started_late),
        "persist_late": lateness(in_window),
        "lost_claims": scheduler.lost_claims,
        **probe.summary(),
        **usage,
    }


async def heartbeat_restart(spec: dict[str, Any]) -> dict[str, Any]:
    """Phase ``a`` runs until the parent kills it; phase ``b`` runs ``window`` s after restart."""
    tag = spec["tag"]
    if spec["phase"] == "a":
        store, scheduler, _ = await _open_ours(spec["db"])
        armed = await scheduler.arm_all()
        print(f"T0 {spec['t0']!r}", flush=True)
        progress(f"{tag}: phase a armed {armed:,} threads; running until killed")
        await scheduler.dispatch()  # forever
        return {}
    store, scheduler, _ = await _open_ours(spec["db"])
    interrupted = len(await store.mark_interrupted())
    restart = time.time()
    started = time.perf_counter()
    armed = await scheduler.arm_all()
    arm_s = time.perf_counter() - started
    progress(f"{tag}: restarted, {interrupted} run(s) marked interrupted, {armed:,} armed")
    dispatch = asyncio.create_task(scheduler.dispatch())
    await sleep_until(restart + spec["window"])
    await _stop_ours(store, scheduler, dispatch)
    return {"restart": restart, "armed": armed, "arm_s": arm_s, "interrupted": interrupted}


# ================================================================================================
# APScheduler 3.x (runs in a child)
# ================================================================================================

APS_RUNS: list[tuple[int, float, float]] = []  # (thread index, slot, start)
APS_SUBMITTED: list[tuple[str, float]] = []  # (job id, scheduled run time), restart only
APS_EXPECTED = 0
APS_DONE: asyncio.Event | None = None


async def aps_noop(index: int, start: float, every: int) -> None:
    """The job: record which grid slot it is running for and when it started."""
    now = time.time()
    slot = start + math.floor((now - start) / every) * every
    APS_RUNS.append((index, slot, now))
    if APS_DONE is not None and len(APS_RUNS) >= APS_EXPECTED:
        APS_DONE.set()


def _aps_scheduler(store_kind: str, db: str | None) -> Any:
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    store = MemoryJobStore() if store_kind == APS_MEMORY else SQLAlchemyJobStore(f"sqlite:///{db}")
    return AsyncIOScheduler(
        jobstores={"default": store},
        job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        timezone=UTC,
    )


def _aps_add(scheduler: Any, dues: list[float], every: int, budget: float) -> tuple[int, float]:
    """add_job for each due time (first fire at ``due``), stopping after ``budget`` seconds."""
    from apscheduler.triggers.interval import IntervalTrigger

    started = time.perf_counter()
    added = 0
    for i, due in enumerate(dues):
        trigger = IntervalTrigger(
            seconds=every, start_date=datetime.fromtimestamp(due, UTC), timezone=UTC
        )
        # next_run_time given: a job added after its start date still fires there (late),
        # where APScheduler would otherwise skip to the next interval.
        first = datetime.fromtimestamp(due, UTC)
        scheduler.add_job(
            aps_noop, trigger, args=(i, due, every), id=f"t{i:06d}", next_run_time=first
        )
        added += 1
        if added % 1000 == 0 and time.perf_counter() - started > budget:
            break
    return added, time.perf_counter() - started


def _aps_arm(
    contender: str, scheduler: Any, dues: list[float], every: int, budget: float
) -> tuple[int, float]:
    """Add every job and start: the memory store adds before ``start()`` (the usual way); the
    SQLite store starts paused and adds one by one (each add is a committed INSERT), so the add
    phase can be bounded, then resumes."""
    started = time.perf_counter()
    if contender == APS_MEMORY:
        added, _ = _aps_add(scheduler, dues, every, budget)
        scheduler.start()
    else:
        scheduler.start(paused=True)
        added, _ = _aps_add(scheduler, dues, every, budget)
        scheduler.resume()
    return added, time.perf_counter() - started


async def _aps_stop(scheduler: Any) -> None:
    """Pause, let the last jobs finish, then shut down (no cancelled-job noise)."""
    scheduler.pause()
    await asyncio.sleep(0.2)
    scheduler.shutdown(wait=False)
    await asyncio.sleep(0)  # AsyncIOScheduler shuts down in a loop callback


def _aps_seconds_per_add(contender: str, db: str | None, sample: int = 200) -> float:
    """Time ``add_job`` on a scratch scheduler, so the first slot can be set after arming ends."""
    if contender == APS_MEMORY:
        return 200e-6
    scratch = _aps_scheduler(contender, f"{db}-calibration")
    scratch.start(paused=True)
    far = time.time() + 10 * HOUR
    _, elapsed = _aps_add(scratch, [far] * sample, HOUR, math.inf)
    scratch.shutdown(wait=False)
    return elapsed / sample


async def aps_idle(spec: dict[str, Any]) -> dict[str, Any]:
    n, window, tag, contender = spec["n"], spec["window"], spec["tag"], spec["contender"]
    for module in ("apscheduler.schedulers.asyncio", "apscheduler.triggers.interval"):
        importlib.import_module(module)  # imported before the memory baseline

    scheduler = _aps_scheduler(contender, spec.get("db"))
    now = time.time()
    dues = [now + HOUR + i * MINUTE / n for i in range(n)]
    gc.collect()
    rss_before = rss_bytes()
    added, arm_s = _aps_arm(contender, scheduler, dues, HOUR, spec["add_budget"])
    if added < n:
        progress(f"{tag}: add phase bounded at {spec['add_budget']:.0f} s: {added:,} of {n:,}")
    progress(f"{tag}: added and started {added:,} jobs in {arm_s:.2f} s")
    rss_after, usage, loop_iterations = await _idle_window(tag, window)
    await _aps_stop(scheduler)
    return {
        "armed": added,
        "arm_s": arm_s,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "loop_iterations": loop_iterations,
        "runs": len(APS_RUNS),
        **usage,
    }


async def aps_load(spec: dict[str, Any]) -> dict[str, Any]:
    global APS_DONE, APS_EXPECTED
    n, every, mode, window = spec["n"], spec["every"], spec["mode"], spec["window"]
    tag, contender = spec["tag"], spec["contender"]
    scheduler = _aps_scheduler(contender, spec.get("db"))
    t0 = time.time() + 3.0 + n * _aps_seconds_per_add(contender, spec.get("db")) * 1.5
    dues = [t0 + i * every / n for i in range(n)] if mode == "steady" else [t0] * n
    if mode == "herd":
        APS_EXPECTED, APS_DONE = n, asyncio.Event()
    added, arm_s = _aps_arm(contender, scheduler, dues, every, budget=math.inf)
    margin = t0 - time.time()
    progress(f"{tag}: added and started {added:,} jobs in {arm_s:.2f} s; first in {margin:.1f} s")
    probe, probe_task, end_wall, usage = await _load_window(tag, mode, t0, window, APS_DONE)
    late = [start - slot for _, slot, start in APS_RUNS if t0 - 0.1 <= start <= end_wall]
    probe_task.cancel()
    await _aps_stop(scheduler)
    return {
        "armed": added,
        "arm_s": arm_s,
        "arm_margin_s": margin,
        "runs": len(late),
        "started": len(APS_RUNS),
        "start_late": lateness(late),
        "persist_late": lateness(late),  # APScheduler persists the next run before the job
        "lost_claims": 0,
        **probe.summary(),
        **usage,
    }


async def aps_restart(spec: dict[str, Any]) -> dict[str, Any]:
    tag = spec["tag"]
    scheduler = _aps_scheduler(APS_SQLITE, spec["db"])
    if spec["phase"] == "a":
        n = spec["n"]
        t0 = time.time() + 3.0 + n * _aps_seconds_per_add(APS_SQLITE, spec["db"]) * 1.5
        dues = [t0 + i * MINUTE / n for i in range(n)]
        added, arm_s = _aps_arm(APS_SQLITE, scheduler, dues, MINUTE, budget=math.inf)
        print(f"T0 {t0!r}", flush=True)
        progress(f"{tag}: phase a added {added:,} jobs in {arm_s:.2f} s; running until killed")
        await asyncio.Event().wait()  # forever
        return {}
    from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent

    def submitted(event: JobSubmissionEvent) -> None:
        APS_SUBMITTED.extend((event.job_id, t.timestamp()) for t in event.scheduled_run_times)

    scheduler.add_listener(submitted, EVENT_JOB_SUBMITTED)
    restart = time.time()
    scheduler.start()
    progress(f"{tag}: restarted on the same job store")
    await sleep_until(restart + spec["window"])
    await _aps_stop(scheduler)
    return {"restart": restart, "runs": APS_RUNS, "submitted": APS_SUBMITTED}


# ================================================================================================
# the parent: scenarios, analysis, tables
# ================================================================================================


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.quick: bool = args.quick
        self.contenders: list[str] = args.contenders
        self.tmp = tmp
        self.tables: list[str] = []
        self.goals: dict[str, str] = {}
        self.counter = 0
        self.scale: float = args.scale

    def size(self, n: int) -> int:
        return max(10, round(n * self.scale))

    def db(self, name: str) -> str:
        self.counter += 1
        return str(self.tmp / f"{self.counter:02d}-{name}.db")

    # -- idle -----------------------------------------------------------------------------------
    def idle(self) -> None:
        window = 20.0 if self.quick else 60.0
        add_budget = 15.0 if self.quick else 60.0
        rows: list[list[object]] = []
        results: dict[tuple[str, int], dict[str, Any]] = {}
        for n in (self.size(10_000), self.size(100_000)):
            for contender in self.contenders:
                tag = f"idle {contender} {n:,}"
                spec: dict[str, Any] = {"n": n, "window": window, "tag": tag}
                create = math.nan
                if contender == OURS:
                    spec |= {"kind": "heartbeat_idle", "db": self.db(f"idle-{n}")}
                    now = time.time()
                    dues = [now + HOUR + i * MINUTE / n for i in range(n)]
                    create = asyncio.run(create_heartbeat_db(spec["db"], dues, HOUR))
                    progress(f"{tag}: created {n:,} thread rows in {create:.2f} s (not timed)")
                else:
                    spec |= {"kind": "aps_idle", "contender": contender, "add_budget": add_budget}
                    if contender == APS_SQLITE:
                        spec["db"] = self.db(f"aps-idle-{n}")
                progress(f"{tag}: starting child")
                r = run_child(SCRIPT, spec, timeout=add_budget + window + 120)
                results[(contender, n)] = r
                if "error" in r:
                    progress(f"{tag}: {r['error']}")
                    rows.append([contender, f"{n:,}", r["error"]])
                    continue
                armed = r["armed"]
                arm = f"{r['arm_s']:.2f} s"
                if armed < n:
                    arm = f"> {r['arm_s']:.0f} s (≈{r['arm_s'] * n / armed:.0f} s extrapolated)"
                delta = r["rss_after"] - r["rss_before"]
                rows.append(
                    [
                        contender,
                        f"{n:,}" if armed == n else f"{armed:,} of {n:,}",
                        arm,
                        f"{delta / 2**20:,.1f} MiB",
                        f"{delta / armed:,.0f} B",
                        f"{r['cpu_share'] * 100:.3f} %",
                        f"{r['cpu_s'] * 1000:.1f} ms",
                        f"{r['ctx_voluntary']} + {r['ctx_involuntary']}",
                        f"{r['loop_iterations']}",
                        f"{r['others_cores']:.2f}",
                    ]
                )
                progress(
                    f"{tag}: cpu {r['cpu_share'] * 100:.3f} % of a core, "
                    f"{delta / armed:,.0f} B/thread, {r['loop_iterations']} loop wakeups"
                )
        self.tables.append(
            f"### idle — nothing due for an hour; {window:.0f} s window\n\n"
            + md_table(
                [
                    "contender",
                    "threads",
                    "add + arm",
                    "RSS growth",
                    "RSS / thread",
                    "CPU (share of a core)",
                    "CPU in window",
                    "ctx switches (vol + invol)",
                    "loop wakeups",
                    "others' load (cores)",
                ],
                rows,
            )
            + "\n\nheartbeat: threads inserted beforehand by the parent; 'add + arm' is "
            "`arm_all()` from the database. APScheduler: `add_job` x N + `start()` (SQLite store: "
            f"started paused, adds bounded at {add_budget:.0f} s, the total extrapolated "
            "when bounded). RSS growth is measured from before arming/adding to 1 s after."
        )
        ours = results.get((OURS, self.size(100_000)), {})
        if ours and "error" not in ours:
            per = (ours["rss_after"] - ours["rss_before"]) / ours["armed"]
            self.goals["idle CPU 0.0 % of a core, no per-thread wakeups"] = (
                f"{ours['cpu_share'] * 100:.3f} % at 100k threads, "
                f"{ours['loop_iterations']} loop wakeups in {window:.0f} s"
            )
            self.goals["≤ 1 KB per idle thread"] = f"{per:,.0f} B per thread at 100k"
            aps = results.get((APS_MEMORY, self.size(100_000)), {})
            vs = f" (APScheduler memory store: {aps['arm_s']:.2f} s)" if "arm_s" in aps else ""
            self.goals["arm 100k threads < 2 s"] = f"{ours['arm_s']:.2f} s{vs}"

    # -- steady and herd ------------------------------------------------------------------------
    def load(self, mode: str) -> None:
        n = self.size(10_000)
        window = (30.0 if self.quick else 60.0) if mode == "steady" else HERD_BOUND
        rows: list[list[object]] = []
        results: dict[str, dict[str, Any]] = {}
        for contender in self.contenders:
            tag = f"{mode} {contender} {n:,}"
            spec: dict[str, Any] = {
                "n": n,
                "every": MINUTE,
                "mode": mode,
                "window": window,
                "tag": tag,
                "contender": contender,
                "kind": "heartbeat_load" if contender == OURS else "aps_load",
            }
            if contender != APS_MEMORY:
                spec["db"] = self.db(f"{mode}-{contender}")
            progress(f"{tag}: starting child")
            # APScheduler's SQLite store commits every add_job: allow for a slow disk
            slack = n * 0.015 if contender == APS_SQLITE else 0.0
            r = run_child(SCRIPT, spec, timeout=window + 120 + slack)
            results[contender] = r
            if "error" in r:
                progress(f"{tag}: {r['error']}")
                rows.append([contender, r["error"]])
                continue
            if r["arm_margin_s"] < 0:
                progress(f"{tag}: WARNING arming ended {-r['arm_margin_s']:.1f} s after the slot")
            start, persist = r["start_late"], r["persist_late"]
            if mode == "steady":
                per_run = r["cpu_s"] / r["runs"] if r["runs"] else math.nan
                r["cpu_per_run"] = per_run
                rows.append(
                    [
                        contender,
                        f"{r['runs']:,}",
                        f"{r['runs'] / r['wall_s']:,.1f}",
                        ms(per_run, 2),
                        f"{r['cpu_share'] * 100:.1f} %",
                        ms(start["p50_s"]),
                        ms(start["p99_s"]),
                        ms(start["max_s"]),
                        ms(persist["p99_s"]),
                        ms(r["stall_max_s"]),
                        f"{r['others_cores']:.2f}",
                    ]
                )
                progress(f"{tag}: {r['runs']:,} runs, {ms(per_run, 2)} CPU/run")
            else:
                rows.append(
                    [
                        contender,
                        f"{r['started']:,}",
                        ms(start["p50_s"]),
                        ms(start["p99_s"]),
                        ms(start["max_s"]),
                        ms(persist["max_s"]),
                        ms(r["stall_max_s"]),
                        ms(r["stall_p99_s"]),
                        f"{r['cpu_s']:.2f} s",
                        f"{r['others_cores']:.2f}",
                    ]
                )
                progress(f"{tag}: p99 lateness {ms(start['p99_s'])}, stall {ms(r['stall_max_s'])}")
        if mode == "steady":
            self.tables.append(
                f"### steady — {n:,} threads every 60 s, spread over the minute "
                f"(≈{n / MINUTE:.0f} runs/s); {window:.0f} s window\n\n"
                + md_table(
                    [
                        "contender",
                        "runs done",
                        "runs/s",
                        "CPU per run",
                        "CPU (share of a core)",
                        "lateness p50",
                        "p99",
                        "max",
                        "slot → persisted p99",
                        "worst loop stall",
                        "others' load (cores)",
                    ],
                    rows,
                )
                + "\n\nLateness: slot time → the no-op's start. 'slot → persisted' (heartbeat): "
                "until the run row is committed as ok; for APScheduler it equals the start "
                "(its next run time is written before the job runs). CPU is the whole process "
                "(all threads) over the window, including a 10 ms stall probe in both."
            )
            ours, aps = results.get(OURS, {}), results.get(APS_SQLITE, {})
            if "cpu_per_run" in ours:
                ratio = ""
                if "cpu_per_run" in aps and aps["cpu_per_run"] > 0:
                    ratio = (
                        f" vs APScheduler+SQLite {ms(aps['cpu_per_run'], 2)} "
                        f"(ratio {ours['cpu_per_run'] / aps['cpu_per_run']:.2f}, goal ≤ 0.25)"
                    )
                self.goals["CPU per persisted run ≤ ¼ of APScheduler+SQLite"] = (
                    f"{ms(ours['cpu_per_run'], 2)}{ratio}"
                )
        else:
            self.tables.append(
                f"### herd — {n:,} threads due at the same instant (bounded {window:.0f} s)\n\n"
                + md_table(
                    [
                        "contender",
                        "runs started",
                        "lateness p50",
                        "p99",
                        "max",
                        "last run persisted",
                        "worst loop stall",
                        "stall p99",
                        "CPU total",
                        "others' load (cores)",
                    ],
                    rows,
                )
                + "\n\nStall: a probe coroutine sleeps 10 ms in a loop; the figure is how much "
                "later than asked it woke."
            )
            ours = results.get(OURS, {})
            if "start_late" in ours:
                self.goals["herd lateness p99 < 1 s, no stall > 50 ms"] = (
                    f"p99 {ms(ours['start_late']['p99_s'])}, worst stall {ms(ours['stall_max_s'])}"
                )

    # -- restart --------------------------------------------------------------------------------
    def restart(self) -> None:
        n = self.size(RESTART_THREADS)
        kill_after = 20.0 if self.quick else 30.0
        window = MINUTE + 5.0
        rows: list[list[object]] = []
        for contender in self.contenders:
            if contender == APS_MEMORY:
                rows.append([contender, "n/a (a memory store forgets everything on restart)"])
                continue
            tag = f"restart {contender} {n:,}"
            db = self.db(f"restart-{contender}")
            if contender == OURS:
                t0 = time.time() + 6.0
                dues = [t0 + i * MINUTE / n for i in range(n)]
                asyncio.run(create_heartbeat_db(db, dues, MINUTE))
                spec: dict[str, Any] = {"kind": "heartbeat_restart", "db": db, "t0": t0}
            else:
                spec = {"kind": "aps_restart", "db": db, "n": n}
            spec["tag"] = tag
            progress(f"{tag}: phase a — running, SIGKILL {kill_after:.0f} s after the first slot")
            child = spawn_child(SCRIPT, {**spec, "phase": "a"})
            try:
                t0 = _read_t0(child, timeout=120.0)
                time.sleep(max(0.0, t0 + kill_after - time.time()))
            finally:
                child.send_signal(signal.SIGKILL)
                child.communicate()
            progress(f"{tag}: killed; shifting stored times back {DOWNTIME:.0f} s")
            before = self._shift(contender, db)
            r = run_child(SCRIPT, {**spec, "phase": "b", "window": window}, timeout=window + 60)
            if "error" in r:
                rows.append([contender, r["error"]])
                continue
            after = (
                self._analyse_ours(db, r["restart"])
                if contender == OURS
                else self._analyse_aps(r, n)
            )
            stats = {**before, **after}
            progress(f"{tag}: {stats}")
            hist = stats["per_thread"]
            more = sum(v for k, v in hist.items() if k > 2)
            rows.append(
                [
                    contender,
                    f"{stats.get('phase_a_runs', 'n/a')}",
                    f"{stats.get('lost_at_kill', 'n/a')}",
                    f"{stats.get('left_running', 'n/a')}",
                    stats["catch_up"],
                    f"{hist.get(1, 0)} / {hist.get(2, 0)} / {more}",
                    f"{hist.get(0, 0)}",
                    f"{stats['duplicates']}",
                    stats["spacing"],
                    ms(stats["last_first_run"]),
                ]
            )
            if contender == OURS:
                self.goals["restart: one catch-up per thread, no duplicates, no gaps"] = (
                    f"catch-up per thread: {stats['catch_up']}; duplicates {stats['duplicates']};"
                    f" gaps {hist.get(0, 0)}"
                )
        self.tables.append(
            f"### restart — {n:,} threads every 60 s, SIGKILL {kill_after:.0f} s in, "
            f"{DOWNTIME / 60:.0f} min of downtime, first {MINUTE} s after restart\n\n"
            + md_table(
                [
                    "contender",
                    "runs before kill",
                    "claimed, no row",
                    "left running",
                    "catch-up runs per thread",
                    "threads with 1 / 2 / 3+ runs",
                    "gaps (0 runs)",
                    "duplicate (thread, slot)",
                    "closest two runs of a thread",
                    "last first run after restart",
                ],
                rows,
            )
            + "\n\nDowntime is simulated by shifting every stored time back 600 s in the "
            "database after the kill (heartbeat: threads' anchor, next run, created/updated and "
            "runs' slot/started/finished; APScheduler: each job's `next_run_time` column and the "
            "pickled job state's next run and trigger start date). No clock is faked: the "
            "restarted child uses the real clock. 'claimed, no row': slots whose claim (the "
            "stored next run moved past them) committed but whose run row never did. Runs are "
            f"counted over the first {MINUTE} s after the restart; the spacing rule lets a "
            "scheduled slot follow a catch-up after every/2 = 30 s, so 2 runs in the window is "
            "allowed; 'closest two runs' shows the smallest gap between one thread's runs."
        )

    def _shift(self, contender: str, db: str) -> dict[str, Any]:
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            if contender == OURS:
                stats = self._lost_at_kill(conn)
                conn.execute(
                    "UPDATE threads SET heartbeat_anchor = heartbeat_anchor - ?,"
                    " heartbeat_next_run = heartbeat_next_run - ?, created_at = created_at - ?,"
                    " updated_at = updated_at - ?",
                    (DOWNTIME,) * 4,
                )
                conn.execute(
                    "UPDATE runs SET slot = slot - ?, started_at = started_at - ?,"
                    " finished_at = finished_at - ?",
                    (DOWNTIME,) * 3,
                )
            else:
                stats = {}
                shift = timedelta(seconds=DOWNTIME)
                for job_id, blob in conn.execute(
                    "SELECT id, job_state FROM apscheduler_jobs"
                ).fetchall():
                    state = pickle.loads(blob)
                    state["next_run_time"] -= shift
                    state["trigger"].start_date -= shift
                    conn.execute(
                        "UPDATE apscheduler_jobs SET next_run_time = ?, job_state = ? WHERE id = ?",
                        (state["next_run_time"].timestamp(), pickle.dumps(state), job_id),
                    )
            conn.execute("COMMIT")
        finally:
            conn.close()
        return stats

    @staticmethod
    def _lost_at_kill(conn: sqlite3.Connection) -> dict[str, Any]:
        """Slots claimed (next run moved past them) without a run row, and rows left running."""
        rows: dict[str, set[float]] = {}
        for thread_id, slot in conn.execute("SELECT thread_id, slot FROM runs"):
            if slot is not None:
                rows.setdefault(thread_id, set()).add(round(slot, 3))
        lost = 0
        for thread_id, anchor, nxt, cfg in conn.execute(
            "SELECT id, heartbeat_anchor, heartbeat_next_run, heartbeat_config_json FROM threads"
        ):
            if anchor is None or nxt is None:
                continue
            every = json.loads(cfg)["every_seconds"]
            k = 1
            while anchor + k * every < nxt - 1e-3:
                if round(anchor + k * every, 3) not in rows.get(thread_id, set()):
                    lost += 1
                k += 1
        total = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        running = conn.execute("SELECT COUNT(*) FROM runs WHERE status = 'running'").fetchone()[0]
        return {"phase_a_runs": total, "lost_at_kill": lost, "left_running": running}

    @staticmethod
    def _analyse_ours(db: str, restart: float) -> dict[str, Any]:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            threads = [r[0] for r in conn.execute("SELECT id FROM threads")]
            after = conn.execute(
                "SELECT thread_id, trigger, status, reason, slot, started_at FROM runs"
                " WHERE started_at >= ? ORDER BY started_at",
                (restart - 1.0,),
            ).fetchall()
            dupes = conn.execute(
                "SELECT COUNT(*) FROM (SELECT 1 FROM runs WHERE slot IS NOT NULL"
                " GROUP BY thread_id, loop, slot HAVING COUNT(*) > 1)"
            ).fetchone()[0]
        finally:
            conn.close()
        ran: dict[str, list[float]] = {t: [] for t in threads}
        catch_ups: Counter[str] = Counter()
        missed = 0
        for thread_id, trigger, status, reason, _slot, started in after:
            if status == "skipped":
                missed += reason == "missed"
                continue
            if trigger == "catch_up":
                catch_ups[thread_id] += 1
            if started < restart + MINUTE:
                ran[thread_id].append(started)
        per_catch_up = Counter(catch_ups[t] for t in threads)
        return {
            "catch_up": ", ".join(f"{k}x: {v}" for k, v in sorted(per_catch_up.items()))
            + f" ('missed' rows: {missed})",
            **_per_thread(ran, restart, dupes),
        }

    @staticmethod
    def _analyse_aps(r: dict[str, Any], n: int) -> dict[str, Any]:
        """Runs from the no-op's records; (job, scheduled time) from the submission events."""
        restart = r["restart"]
        ran: dict[str, list[float]] = {f"t{i:06d}": [] for i in range(n)}
        for index, _slot, started in r["runs"]:
            if started < restart + MINUTE:
                ran[f"t{int(index):06d}"].append(started)
        submitted = Counter((job, round(at, 3)) for job, at in r["submitted"])
        dupes = sum(1 for c in submitted.values() if c > 1)
        owed = Counter(job for job, at in r["submitted"] if at < restart)
        per_catch_up = Counter(owed[job] for job in ran)
        return {
            "catch_up": ", ".join(f"{k}x: {v}" for k, v in sorted(per_catch_up.items()))
            + " (coalesced missed run)",
            **_per_thread(ran, restart, dupes),
        }

    # -- report ---------------------------------------------------------------------------------
    def report(self) -> str:
        parts = [
            "## Scheduler benchmark" + (" (--quick)" if self.quick else ""),
            "",
            f"Machine: {machine()}.",
            "'others' load' is the CPU (in cores) that processes other than the measured child "
            "used on this machine during the window, from /proc/stat.",
            "",
            *(t + "\n" for t in self.tables),
        ]
        if self.goals:
            parts.append("### goals (from the issue) — heartbeat's measured figure\n")
            parts.append(md_table(["goal", "measured"], list(self.goals.items())))
        return "\n".join(parts)


def _read_t0(child: subprocess.Popen[str], timeout: float) -> float:
    """The first slot, which the phase-a child prints as ``T0 <time>`` once it is armed."""
    assert child.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([child.stdout], [], [], 1.0)
        if ready:
            text = child.stdout.readline()
            if text.startswith("T0 "):
                return float(text.split()[1])
            if not text:
                break
    raise RuntimeError("the phase-a child never reported its first slot")


def _per_thread(ran: dict[str, list[float]], restart: float, dupes: int) -> dict[str, Any]:
    hist = Counter(len(v) for v in ran.values())
    gaps = [b - a for v in ran.values() for a, b in zip(sorted(v), sorted(v)[1:], strict=False)]
    firsts = [min(v) - restart for v in ran.values() if v]
    return {
        "per_thread": dict(hist),
        "duplicates": dupes,
        "spacing": ms(min(gaps)) if gaps else "one run each",
        "last_first_run": max(firsts, default=math.nan),
    }


def main() -> int:
    handlers = {
        "heartbeat_idle": heartbeat_idle,
        "heartbeat_load": heartbeat_load,
        "heartbeat_restart": heartbeat_restart,
        "aps_idle": aps_idle,
        "aps_load": aps_load,
        "aps_restart": aps_restart,
    }
    if child_main(sys.argv, handlers):
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shorter windows (about 10-12 minutes in all; the full run about 18)",
    )
    parser.add_argument(
        "--only",
        type=lambda s: s.split(","),
        default=list(SCENARIOS),
        help=f"comma-separated scenarios out of {','.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--contenders",
        type=lambda s: s.split(","),
        default=list(CONTENDERS),
        help=f"comma-separated contenders out of {','.join(CONTENDERS)}",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every thread count (smoke tests)"
    )
    args = parser.parse_args()
    bad = set(args.only) - set(SCENARIOS) | set(args.contenders) - set(CONTENDERS)
    if bad:
        parser.error(f"unknown scenario or contender: {', '.join(sorted(bad))}")
    progress(f"machine: {machine()}")
    warn_if_busy()
    with tempfile.TemporaryDirectory(prefix="hb-bench-scheduler-") as tmp:
        bench = Bench(args, Path(tmp))
        for scenario in SCENARIOS:
            if scenario not in args.only:
                continue
            progress(f"== {scenario} ==")
            if scenario in ("steady", "herd"):
                bench.load(scenario)
            else:
                getattr(bench, scenario)()
    print(bench.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
