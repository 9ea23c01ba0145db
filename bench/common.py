"""Helpers shared by the benchmarks: child processes, resource usage, loop probes, tables.

Each contender runs in its own child process (``python bench/<script>.py --child '<json spec>'``)
so its CPU time, context switches and resident memory are its own. A child writes progress lines
to stderr and its result as one ``RESULT {...}`` line on stdout.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
_T0 = time.monotonic()


def progress(message: str) -> None:
    """One progress line on stderr, stamped with seconds since this process started."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


# --- resource usage ----------------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, all processes), from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    """A snapshot of this process's resource usage (all its threads, via getrusage), plus the
    machine's busy time, so a window can say how much CPU other processes took meanwhile."""

    wall: float
    cpu: float
    voluntary: int
    involuntary: int
    machine_busy: float

    @classmethod
    def now(cls) -> Usage:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            time.monotonic(),
            r.ru_utime + r.ru_stime,
            r.ru_nvcsw,
            r.ru_nivcsw,
            machine_busy_seconds(),
        )

    def since(self, earlier: Usage) -> dict[str, float]:
        wall = self.wall - earlier.wall
        cpu = self.cpu - earlier.cpu
        others = max(0.0, self.machine_busy - earlier.machine_busy - cpu)
        return {
            "wall_s": wall,
            "cpu_s": cpu,
            "cpu_share": cpu / wall if wall > 0 else math.nan,
            "ctx_voluntary": self.voluntary - earlier.voluntary,
            "ctx_involuntary": self.involuntary - earlier.involuntary,
            "others_cores": others / wall if wall > 0 else math.nan,
        }


def background_load(seconds: float = 2.0) -> float:
    """Cores kept busy by other processes over ``seconds`` (this one is asleep meanwhile)."""
    before = machine_busy_seconds()
    time.sleep(seconds)
    return (machine_busy_seconds() - before) / seconds


def warn_if_busy() -> float:
    load = background_load()
    if load > 0.2:
        progress(
            f"WARNING: other processes keep {load:.2f} cores busy; CPU and lateness figures "
            "will be noisy (each table shows the load others put on the machine meanwhile)"
        )
    return load


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (no psutil import in the measured child)."""
    with open("/proc/self/statm", encoding="ascii") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


class LoopIterations:
    """Counts event-loop iterations (each one a return from the selector: a wakeup when idle)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.count = 0
        selector = loop._selector  # type: ignore[attr-defined]
        original = selector.select

        def select(timeout: float | None = None) -> Any:
            self.count += 1
            return original(timeout)

        selector.select = select


class StallProbe:
    """Sleeps ``period`` in a loop and records how late it wakes: the event loop's stalls."""

    def __init__(self, period: float = 0.010) -> None:
        self.period = period
        self.late: list[float] = []

    async def run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.period)
            self.late.append(time.perf_counter() - t - self.period)

    def summary(self) -> dict[str, float]:
        return {
            "stall_max_s": max(self.late, default=math.nan),
            "stall_p99_s": percentile(self.late, 99),
            "stall_samples": len(self.late),
        }


async def sleep_until(wall: float) -> None:
    """Sleep until the wall clock reads ``wall`` (no-op if already past)."""
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


# --- statistics and formatting -----------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def lateness(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50_s": percentile(values, 50),
        "p99_s": percentile(values, 99),
        "max_s": max(values, default=math.nan),
        "count": len(values),
    }


def ms(seconds: float | None, digits: int = 1) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "n/a"
    value = seconds * 1000
    if value >= 10_000:
        return f"{seconds:,.1f} s"
    return f"{value:,.{digits}f} ms"


def num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; short rows (an error, "n/a") are padded with empty cells."""
    pad = [""] * len(headers)
    body = [([str(c) for c in row] + pad)[: len(headers)] for row in rows]
    cells = [[str(h) for h in headers], *body]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for text in f:
                if text.startswith("model name"):
                    model = text.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    return (
        f"{os.cpu_count()} logical cores ({usable} usable), {model}; "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{platform.system()} {platform.release()}"
    )


# --- child processes ---------------------------------------------------------------------------

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def spawn_child(script: Path, spec: dict[str, Any]) -> subprocess.Popen[str]:
    """Start ``script --child spec``; its stderr (progress) goes to ours, stdout is piped."""
    return subprocess.Popen(
        [sys.executable, str(script), "--child", json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def run_child(script: Path, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one child to completion (killed after ``timeout`` s) and return its result."""
    child = spawn_child(script, spec)
    try:
        out, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return {"error": f"child did not finish within {timeout:.0f} s (killed)"}
    for text in reversed(out.splitlines()):
        if text.startswith("RESULT "):
            result: dict[str, Any] = json.loads(text[len("RESULT ") :])
            return result
    return {"error": f"child exited with status {child.returncode} and no result"}


def child_main(argv: Sequence[str], handlers: dict[str, Handler]) -> bool:
    """If ``argv`` asks for a child, run the handler named by the spec's ``kind`` and print
    its result; return True. Otherwise return False (the caller is the parent)."""
    if len(argv) < 3 or argv[1] != "--child":
        return False
    spec = json.loads(argv[2])
    result = asyncio.run(handlers[spec["kind"]](spec))
    print("RESULT " + json.dumps(result, allow_nan=True), flush=True)
    return True
