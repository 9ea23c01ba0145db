"""Replicas of ``heartbeat serve`` on one PostgreSQL database, beside the same service on SQLite.

    python bench/replicas.py [--url postgresql://postgres@127.0.0.1:5432] [--threads 10000]
                             [--every 60] [--window 60] [--settle 15] [--concurrency 8]

One instant fake Ollama (``tests/fakes/llm_servers.py``, its own process) answers every chat of
every service with ``{"action": "none"}``. ``--threads`` threads (every ``--every`` seconds,
``skip_unchanged`` off, so every beat calls the model) are written straight into each database
before its services start, their first slots spread evenly over one interval. Then, one phase
after the other, each a settling time (``--settle``) and a measured window (``--window``):

1. ``sqlite``: one ``heartbeat serve`` on a SQLite file of its own (then stopped);
2. ``pg x1``, ``pg x2``, ``pg x3``: one, two, three ``heartbeat serve`` replicas on one
   PostgreSQL database of their own (``hb_bench_replicas_<pid>``, created here and dropped at
   the end), a replica added at the start of each phase;
3. ``kill``: one of the three killed with SIGKILL; the window lasts at least one interval plus
   a lease and two renewals, so the threads it held have moved.

Each phase reports runs finished a second; CPU per finished run of each replica (its process's
own CPU, from psutil, over the runs whose ``owner`` it is) and of the service as a whole; the
CPU of the PostgreSQL backends serving this database (``pg_stat_activity``, their CPU read from
``/proc`` through psutil every few seconds; the server's shared background processes, WAL
writer and checkpointer, are left out, as other databases on the server share them); claim
latency (slot → the ``running`` row, written in the claim's transaction) and lateness (slot →
finished); and duplicate and lost slots, from every run row of the whole bench: a slot is
duplicate if a thread ran it twice or two of its beats came less than half an interval apart,
lost if a thread's beats are more than one and a half intervals apart or its next slot is more
than an interval overdue at the end. The kill phase also reports how long after the kill each
thread's next beat started (at most one interval is the target; a beat later than that whose
slot was within the interval was only late to start), how late against their slots the first
beats of the killed replica's threads started, and its runs ``interrupted``.

The machine may be shared: CPU figures move with the load others put on it (each phase shows
it), so the ratios of phases measured side by side in one run are what to compare, not one
figure against another run's. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import psutil
import psycopg
from common import (
    machine,
    machine_busy_seconds,
    md_table,
    ms,
    num,
    percentile,
    progress,
    warn_if_busy,
)
from scheduler import insert_threads
from service import (
    HEARTBEAT_MD,
    _cpu,
    _query,
    _runs_between,
    free_port,
    owner_pid,
    serve_env,
    start_fake_ollama,
    start_serve,
    stop,
)

SAMPLE_EVERY = 5.0  # seconds between CPU samples (and progress lines every other sample)
LEAD = 10.0  # seconds from writing the threads to their first slot


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class CpuTally:
    """First and last CPU reading of each process seen since ``since``: a process started
    after ``since`` counts from zero, one first seen later but older from its first reading; a
    process that ends between two samples loses at most one sample's worth."""

    since: float
    first: dict[Any, float] = field(default_factory=dict)
    last: dict[Any, float] = field(default_factory=dict)

    def add(self, readings: dict[Any, tuple[float, float]]) -> None:
        for key, (cpu, created) in readings.items():
            self.first.setdefault(key, 0.0 if created >= self.since else cpu)
            self.last[key] = cpu

    def used(self, key: Any) -> float:
        return self.last.get(key, 0.0) - self.first.get(key, 0.0)

    def total(self) -> float:
        return sum(self.used(key) for key in self.last)


@dataclass
class Phase:
    name: str
    backend: str
    replicas: list[str]
    start: float  # wall time the phase's change was made (slots from here on are its own)
    begin: float = math.nan  # the measured window
    end: float = math.nan
    replica_cpu: dict[str, float] = field(default_factory=dict)
    pg_cpu: float = math.nan
    fake_cpu: float = 0.0
    others_cores: float = math.nan
    runs: dict[str, Any] = field(default_factory=dict)
    killed: str | None = None
    kill_at: float = math.nan


def database_url(base: str, name: str) -> str:
    """``base`` (a server URL, with or without a database) naming the database ``name``."""
    parts = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def pg_backends(monitor: psycopg.Connection[Any], dbname: str) -> dict[int, tuple[float, float]]:
    """CPU seconds and start time of each backend connected to ``dbname`` (the monitor's own
    left out)."""
    rows = monitor.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (dbname,),
    ).fetchall()
    out: dict[int, tuple[float, float]] = {}
    for (pid,) in rows:
        if (reading := proc_reading(int(pid))) is not None:
            out[int(pid)] = reading
    return out


def proc_reading(pid: int) -> tuple[float, float] | None:
    """A process's CPU seconds and start time, or None if it is gone."""
    try:
        proc = psutil.Process(pid)
        return _cpu(proc), proc.create_time()
    except psutil.Error:
        return None


def proc_cpu(pid: int) -> float | None:
    reading = proc_reading(pid)
    return None if reading is None else reading[0]


def wait_healthy(replica: Replica, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if replica.proc.poll() is not None:
            tail = replica.log.read_text(errors="replace").splitlines()[-20:]
            raise RuntimeError(f"{replica.name} exited:\n" + "\n".join(tail))
        try:
            if httpx.get(f"http://127.0.0.1:{replica.port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{replica.name} did not answer /healthz within {timeout:.0f} s")


async def _write_threads(store: Any, n: int, every: int, first_slot: float) -> None:
    try:
        await insert_threads(
            store, [first_slot + i * every / n for i in range(n)], every, skip_unchanged=False
        )
    finally:
        await store.close()


def write_threads(where: Path | str, n: int, every: int) -> float:
    """The threads, straight into the database (migrated by opening it); their first slot."""
    from ledger.storage.postgres import PostgresStore
    from ledger.storage.sqlite import SqliteStore

    first = time.time() + LEAD

    async def go() -> None:
        if isinstance(where, str):
            store: Any = await PostgresStore.open(where, now=time.time)
        else:
            store = await SqliteStore.open(str(where), now=time.time)
        await _write_threads(store, n, every, first)

    asyncio.run(go())
    return first


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.dbname = f"hb_bench_replicas_{psutil.Process().pid}"
        self.url = database_url(args.url, self.dbname)
        self.fake: subprocess.Popen[bytes] | None = None
        self.ollama = ""
        self.replicas: list[Replica] = []
        self.phases: list[Phase] = []
        self.monitor: psycopg.Connection[Any] | None = None

    # -- processes --------------------------------------------------------------------------
    def start_replica(self, name: str, database_url: str | None, db: Path) -> Replica:
        workspace = self.tmp / f"workspace-{name}"
        workspace.mkdir()
        (workspace / "HEARTBEAT.md").write_text(HEARTBEAT_MD, encoding="utf-8")
        port = free_port()
        log = self.tmp / f"{name}.log"
        env = serve_env(
            self.ollama,
            workspace=workspace,
            db=db,
            database_url=database_url,
            concurrency=self.args.concurrency,
        )
        replica = Replica(name, start_serve(port, cwd=self.tmp, log=log, env=env), port, log)
        self.replicas.append(replica)
        wait_healthy(replica)
        progress(f"{name} serving on port {port} (pid {replica.pid})")
        return replica

    def close(self) -> None:
        for replica in self.replicas:
            stop(replica.proc, replica.name, 30)
        if self.fake is not None:
            stop(self.fake, "fake Ollama", 10)
        if self.monitor is not None:
            self.monitor.close()
        with psycopg.connect(self.args.url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {self.dbname} WITH (FORCE)")

    # -- measuring ----------------------------------------------------------------------------
    def watch(self, phase: Phase, seconds: float, where: Path | str, measure: bool) -> None:
        """Wait ``seconds``, sampling CPU; if ``measure``, this is the phase's window."""
        live = [r for r in self.replicas if r.proc.poll() is None]
        names = {r.pid: r.name for r in live}
        started = time.time()
        replicas, pg = CpuTally(started), CpuTally(started)
        fake0 = proc_cpu(self.fake.pid) if self.fake else None
        busy0, me0 = machine_busy_seconds(), _cpu(psutil.Process())
        if measure:
            phase.begin = started
        end, ticks = started + seconds, 0
        while True:
            replicas.add({names[pid]: r for pid in names if (r := proc_reading(pid)) is not None})
            if isinstance(where, str) and self.monitor is not None:
                pg.add(pg_backends(self.monitor, self.dbname))
            now = time.time()
            if ticks % 2 == 1 or now >= end:
                done = _query(
                    where,
                    "SELECT COUNT(*) FROM runs WHERE loop = 'heartbeat' AND finished_at >= ?",
                    (started,),
                )[0][0]
                share = ", ".join(
                    f"{n} {replicas.used(n) / max(now - started, 1e-9) * 100:.0f} %"
                    for n in names.values()
                )
                progress(
                    f"{phase.name} {'window' if measure else 'settling'} "
                    f"{now - started:4.0f}/{seconds:.0f} s: {done:,} runs "
                    f"({done / max(now - started, 1e-9):,.1f}/s); CPU {share}"
                    + (f", PostgreSQL {pg.total() / (now - started):.0%}" if pg.last else "")
                )
            if now >= end:
                break
            ticks += 1
            time.sleep(min(SAMPLE_EVERY, max(0.0, end - now)))
        if not measure:
            return
        phase.end = time.time()
        wall = phase.end - phase.begin
        phase.replica_cpu = {n: replicas.used(n) for n in names.values()}
        phase.pg_cpu = pg.total() if isinstance(where, str) else math.nan
        fake1 = proc_cpu(self.fake.pid) if self.fake else None
        phase.fake_cpu = (fake1 or 0.0) - (fake0 or 0.0)
        mine = _cpu(psutil.Process()) - me0
        ours = sum(phase.replica_cpu.values()) + (pg.total() if pg.last else 0.0)
        others = machine_busy_seconds() - busy0 - ours - phase.fake_cpu - mine
        phase.others_cores = max(0.0, others) / wall
        phase.runs = _runs_between(where, phase.begin, phase.end, names)

    def phase(
        self, name: str, backend: str, where: Path | str, *, window: float | None = None
    ) -> Phase:
        live = [r.name for r in self.replicas if r.proc.poll() is None]
        phase = Phase(name, backend, live, start=time.time())
        self.phases.append(phase)
        self.watch(phase, self.args.settle, where, measure=False)
        self.watch(phase, window or self.args.window, where, measure=True)
        return phase

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> None:
        args = self.args
        self.fake, self.ollama = start_fake_ollama(self.tmp / "fake-ollama.log")
        progress(f"fake Ollama on {self.ollama} (pid {self.fake.pid})")

        sqlite_db = self.tmp / "heartbeat.db"
        write_threads(sqlite_db, args.threads, args.every)
        progress(f"{args.threads:,} threads written to SQLite")
        alone = self.start_replica("sqlite", None, sqlite_db)
        self.phase("sqlite", "SQLite", sqlite_db)
        stop(alone.proc, alone.name, 30)
        self.replicas.remove(alone)
        self.sqlite_slots = all_slots(sqlite_db)

        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {self.dbname}")
        self.monitor = psycopg.connect(self.url, autocommit=True)
        write_threads(self.url, args.threads, args.every)
        progress(f"{args.threads:,} threads written to PostgreSQL database {self.dbname}")
        pg_db = self.tmp / "unused.db"
        for count in (1, 2, 3):
            self.start_replica(f"pg{count}", self.url, pg_db)
            self.phase(f"pg x{count}", "PostgreSQL", self.url)
        from ledger.limits import LEASE_RENEW_SECONDS, LEASE_SECONDS

        victim = self.replicas[-1]
        self.victim_pid = victim.pid
        kill_at = time.time()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        progress(f"killed {victim.name} (pid {victim.pid}) with SIGKILL")
        reach = args.every + LEASE_SECONDS + 2 * LEASE_RENEW_SECONDS + 5
        kill = Phase("kill", "PostgreSQL", [r.name for r in self.replicas[:-1]], start=kill_at)
        kill.killed, kill.kill_at = victim.name, kill_at
        self.phases.append(kill)
        self.watch(kill, max(args.window, reach), self.url, measure=True)
        self.pg_slots = all_slots(self.url)
        self.interrupted = _query(
            self.url,
            "SELECT COUNT(*) FROM runs WHERE status = 'interrupted' AND owner LIKE ?",
            (f"%:{victim.pid}:%",),
        )[0][0]

    # -- report -------------------------------------------------------------------------------
    def report(self) -> str:
        every = self.args.every
        checks = {
            "SQLite": slot_checks(self.sqlite_slots, every, self.phases[:1]),
            "PostgreSQL": slot_checks(self.pg_slots, every, self.phases[1:]),
        }
        rows: list[list[object]] = []
        per_run: dict[str, tuple[float, float]] = {}
        for phase in self.phases:
            runs = phase.runs
            wall = phase.end - phase.begin
            finished = runs["finished"]
            service = sum(phase.replica_cpu.values())
            each = " / ".join(
                ms(phase.replica_cpu[n] / runs["by_owner"][n], 2)
                if runs["by_owner"].get(n)
                else "n/a"
                for n in phase.replica_cpu
            )
            pg = phase.pg_cpu / finished if finished and not math.isnan(phase.pg_cpu) else math.nan
            svc = service / finished if finished else math.nan
            per_run[phase.name] = (svc, svc + (0.0 if math.isnan(pg) else pg))
            dup, lost = checks[phase.backend][phase.name]
            rows.append(
                [
                    phase.name,
                    ", ".join(phase.replicas),
                    num(finished / wall, 1),
                    each,
                    ms(svc, 2),
                    ms(pg, 2),
                    ms(per_run[phase.name][1], 2),
                    f"{ms(runs['late']['p50_s'])} / {ms(runs['late']['p99_s'])}",
                    ms(runs["done"]["p99_s"]),
                    f"{dup} / {lost}",
                    num(phase.others_cores, 2),
                ]
            )
        headers = [
            "phase",
            "replicas",
            "runs/s",
            "CPU/run each replica",
            "service CPU/run",
            "PostgreSQL CPU/run",
            "total CPU/run",
            "claim p50 / p99",
            "lateness p99",
            "duplicate / lost slots",
            "others' load (cores)",
        ]
        lines = [
            "## Replicas on one PostgreSQL, and SQLite beside them",
            "",
            f"Machine: {machine()}.",
            f"{self.args.threads:,} threads every {every} s ({self.args.threads / every:,.1f} "
            f"runs/s of demand), HEARTBEAT_MAX_CONCURRENCY={self.args.concurrency} per replica, "
            f"instant fake Ollama; {self.args.settle:.0f} s settling, then a "
            f"{self.args.window:.0f} s window per phase.",
            "",
            md_table(headers, rows),
            "",
        ]
        sqlite_svc, _ = per_run["sqlite"]
        pg_svc, pg_total = per_run["pg x1"]
        lines.append(
            f"CPU per run, PostgreSQL x1 / SQLite: {pg_total / sqlite_svc:.2f}x counting the "
            f"PostgreSQL backends, {pg_svc / sqlite_svc:.2f}x the service alone (target ≤ 1.5x)."
        )
        kill = self.phases[-1]
        lines.append(kill_summary(self.pg_slots, kill, every, self.interrupted, self.victim_pid))
        return "\n".join(lines)


class Beat(NamedTuple):
    slot: float
    started: float
    status: str
    owner: str


Slots = dict[str, list[Beat]]


def all_slots(where: Path | str) -> Slots:
    """Every heartbeat run of each thread, by slot."""
    out: Slots = defaultdict(list)
    for thread_id, slot, started, status, owner in _query(
        where,
        "SELECT thread_id, slot, started_at, status, owner FROM runs"
        " WHERE loop = 'heartbeat' AND slot IS NOT NULL ORDER BY thread_id, slot",
    ):
        out[thread_id].append(Beat(slot, started, status, owner or ""))
    return out


def slot_checks(slots: Slots, every: int, phases: list[Phase]) -> dict[str, tuple[int, int]]:
    """Duplicate and lost slots of each phase (by the slot's time, from the phase's change to
    its end; the end of the last phase is the end of the run)."""
    counts = {p.name: [0, 0] for p in phases}
    last_end = phases[-1].end

    def phase_of(t: float) -> str | None:
        for p in reversed(phases):
            if p.start <= t < p.end or (p is phases[-1] and t >= p.start):
                return p.name
        return None

    for runs in slots.values():
        for a, b in itertools.pairwise(runs):
            name = phase_of(b.slot)
            if name is None:
                continue
            gap = b.slot - a.slot
            if gap < every / 2:
                counts[name][0] += 1
            elif gap > 1.5 * every:
                counts[name][1] += round(gap / every) - 1
        if runs and runs[-1].slot + 2 * every < last_end:
            name = phase_of(runs[-1].slot + every)
            if name is not None:
                counts[name][1] += 1
    return {name: (c[0], c[1]) for name, c in counts.items()}


def kill_summary(slots: Slots, kill: Phase, every: int, interrupted: int, victim: int) -> str:
    """How long after the kill each thread's next beat (a run that was not skipped) started;
    of those later than one interval, how many had their slot within it (the beat was only
    late to start, as any beat may be on a loaded machine); and how late the first beats of
    the threads the killed replica held (its last run before the kill was its) started."""
    waits: list[float] = []
    over_slot = over_start = missing = 0
    start_late: list[float] = []
    handed: list[float] = []
    for runs in slots.values():
        after = [b for b in runs if b.started >= kill.kill_at and b.status != "skipped"]
        if not after:
            missing += 1
            continue
        first = min(after, key=lambda b: b.started)
        wait = first.started - kill.kill_at
        waits.append(wait)
        if wait > every:
            if first.slot - kill.kill_at <= every:
                over_start += 1
                start_late.append(first.started - first.slot)
            else:
                over_slot += 1
        before = [b for b in runs if b.started < kill.kill_at]
        if before and owner_pid(before[-1].owner) == victim:
            handed.append(first.started - first.slot)
    late = kill.runs.get("done", {})
    return (
        f"Killed {kill.killed} with SIGKILL: every thread's next beat after the kill "
        f"p50 {ms(percentile(waits, 50))}, max {ms(max(waits, default=math.nan))} "
        f"(target ≤ {every} s): {over_slot:,} threads whose next slot was more than an interval "
        f"after the kill, {over_start:,} whose slot was within it but whose run started "
        f"later (by at most {ms(max(start_late, default=0.0))} after its slot), "
        f"{missing:,} without a beat by the end. The {len(handed):,} threads it held: their "
        f"first beat after the kill started p50 {ms(percentile(handed, 50))}, max "
        f"{ms(max(handed, default=math.nan))} after its slot. {interrupted:,} of its runs "
        f"interrupted; lateness in that phase max {ms(late.get('max_s'))}."
    )


def main() -> int:
    from ledger.limits import EVERY_SECONDS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--threads", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=EVERY_SECONDS.lo, help="interval (s)")
    parser.add_argument("--window", type=float, default=60.0, help="measured seconds a phase")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds before each window")
    parser.add_argument("--concurrency", type=int, default=8, help="per replica")
    args = parser.parse_args()
    if not EVERY_SECONDS.lo <= args.every <= EVERY_SECONDS.hi:
        parser.error(f"--every must be within {EVERY_SECONDS.lo}..{EVERY_SECONDS.hi}")
    progress(f"machine: {machine()}")
    warn_if_busy()
    with tempfile.TemporaryDirectory(prefix="hb-bench-replicas-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            bench.run()
        except BaseException:
            for replica in bench.replicas:
                tail = replica.log.read_text(errors="replace").splitlines()[-10:]
                print("\n".join([f"--- {replica.name} log (tail) ---", *tail]), file=sys.stderr)
            raise
        finally:
            bench.close()
        report = bench.report()
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
