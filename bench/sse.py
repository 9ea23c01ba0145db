"""Live events under load: delivery delay of ``run_finished`` and run throughput vs subscribers.

    python bench/sse.py [--quick] [--duration 5] [--workers 8] [--subscribers 0,10,100]
                        [--tokens 1] [--sub-procs 1] [--rounds 5] [--rate 50]
                        [--paced-duration 5] [--pin]

For each subscriber count, a server process runs the real app on uvicorn's server as ``heartbeat
serve`` does (``app.sse.serve``) on loopback, with its own database, an instant in-process fake
LLM (one token per reply, so each run publishes ``run_started``, ``token``, ``decision`` and
``run_finished``) and the scheduler off. All the servers, and their subscribers, stay up for the
whole bench:

1. ``--sub-procs`` subscriber processes (one by default) per server open that many event streams
   between them (``GET /api/heartbeat/events``, with ``?tokens=0`` when ``--tokens 0``). They are
   not HTTP or SSE clients: each is one ``epoll`` loop over plain non-blocking sockets that only
   reads, stamps each read with ``time.time()`` and scans the completed part of the stream for
   the ``id:`` line that opens every ``run_finished`` event (and for an ``error`` event). Every
   stream has sent its ``: connected`` greeting before the first phase.
2. In each of ``--rounds`` rounds, this process drives every server in turn (in the opposite
   order every other round) flat out for ``--duration`` seconds: ``POST
   /api/threads/{id}/heartbeat/run-now`` from ``--workers`` concurrent loops, one thread each,
   over keep-alive connections written and parsed by hand (no HTTP library), keeping each run's
   id and ``finished_at``. Only the driven server has work; the others idle. Short phases that
   alternate between the servers are what make their runs/s comparable on a shared machine,
   whose speed drifts by a quarter over tens of seconds.
3. Then each server with subscribers is paced at ``--rate`` runs/s in all for
   ``--paced-duration`` seconds: the delivery delay at a load the server has room for (under
   saturation every delay is mostly queueing).
4. After one second for stragglers, the subscriber processes are given every run's
   ``finished_at`` and report histograms (0.1 ms bins, one per part) of receipt minus
   ``finished_at`` for each (subscriber, run) pair, how many events arrived and how many streams
   were cut off as too slow.

Reported, one row a phase: runs/s flat out and its ratio to the same round's phase without
subscribers, the CPU shares (of one core) of the server, the driver (this process) and that
server's subscriber processes, the server's CPU time per run and the kernel's part of it, and the
cores the whole machine kept busy meanwhile (including any other work on it); then per
subscriber count the median and range over the rounds, the ratio of all rounds' runs pooled,
the delay p50/p99 at the paced rate and p99 flat out, the share of ``run_finished`` events
delivered and the streams cut off. Everything shares one machine: on two cores the subscriber
processes take CPU the server could otherwise use. With ``--pin`` the servers are bound to the
first CPU and every client process (the driver and the subscribers) to the others, so the load
generators never take the server's core. ``finished_at`` has millisecond resolution, so delays
are overstated by up to 1 ms. Everything is bounded in time; figures are printed, never
asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import machine_busy_seconds  # noqa: E402

HEARTBEAT_MD = "# Heartbeat\n\n## Checklist\n- [ ] Scan the Ledger for new posts\n"
REPLY = json.dumps({"action": "none", "reasoning": "bench: nothing needs doing"})
RUN_ID = re.compile(rb"\nid: (\d+)\n")  # only run_finished events carry an id
TOO_SLOW = b"event: error\n"
GREETING = b": connected\n"
BIN = 10_000  # histogram bins per second (0.1 ms)


# -- the server process ------------------------------------------------------------------------
class InstantLLM:
    """An LLMProvider that answers every chat at once, in one token."""

    name = "instant"
    base_url = "memory://instant"

    async def chat(self, req: Any, *, on_token: Any = None, deadline: float | None = None) -> Any:
        from loops.llm import ChatResult

        if on_token is not None:
            on_token(REPLY)
        return ChatResult(
            text=REPLY,
            model=req.model,
            done_reason="stop",
            prompt_tokens=1,
            completion_tokens=1,
            load_ms=0.0,
            total_ms=0.0,
            attempts=1,
        )

    async def health(self, model: str) -> Any:
        from loops.llm import Health

        return Health(self.name, self.base_url, True, "instant", model, True, None)

    async def aclose(self) -> None:
        return None


def split_cpus() -> tuple[list[int], list[int]]:
    """For ``--pin``: the server's CPU (the first this process may use) and the clients' CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit(f"--pin needs at least two usable CPUs, this process may use {cpus}")
    return cpus[:1], cpus[1:]


def serve(workspace: Path, db: Path, port: int, cpus: list[int]) -> None:
    import uvicorn

    from app.main import create_app
    from app.settings import Settings
    from app.sse import serve as serve_app

    if cpus:
        os.sched_setaffinity(0, cpus)
    settings = Settings.for_workspace(workspace, db_path=db)
    app = create_app(settings, llm=InstantLLM(), start_loops=False)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2
    )
    asyncio.run(serve_app(uvicorn.Server(config)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(workspace: Path, db: Path, cpus: list[int]) -> tuple[subprocess.Popen[bytes], int]:
    import httpx

    port = free_port()
    spec = json.dumps([str(workspace), str(db), port, cpus])
    cmd = [sys.executable, __file__, "--serve", spec]
    proc = subprocess.Popen(cmd, cwd=REPO)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start within 20 s")


# -- a subscriber process -----------------------------------------------------------------------
def subscribe_main(port: int, count: int, query: str) -> None:
    """Hold ``count`` streams; say READY once all are greeted; on STOP report delays."""
    request = (
        f"GET /api/heartbeat/events{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    socks: dict[int, socket.socket] = {}
    tails: dict[int, bytes] = {}
    index: dict[int, int] = {}  # fd -> subscriber number
    greeted: set[int] = set()
    cut_off: set[int] = set()
    ended: set[int] = set()
    run_ids, times, subs = array("q"), array("d"), array("l")
    poller = select.epoll()
    for n in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        s.setblocking(False)
        fd = s.fileno()
        socks[fd], tails[fd], index[fd] = s, b"", n
        poller.register(fd, select.EPOLLIN)
    stdin = sys.stdin.buffer
    poller.register(stdin.fileno(), select.EPOLLIN)
    ready_sent = False
    command = b""
    while True:
        for fd, _ in poller.poll(0.1):
            if fd == stdin.fileno():
                command += os.read(fd, 1 << 20)
                continue
            try:
                data = socks[fd].recv(1 << 18)
            except BlockingIOError:
                continue
            now = time.time()
            if not data:
                poller.unregister(fd)
                ended.add(index[fd])
                continue
            buf = tails[fd] + data
            cut = buf.rfind(b"\n\n") + 2
            if cut < 2 or (cut == 2 and buf[:1] == b"\n"):  # no event completed yet
                tails[fd] = buf
                continue
            done, tails[fd] = buf[: cut - 1], buf[cut - 1 :]  # the tail keeps its "\n"
            n = index[fd]
            for match in RUN_ID.finditer(done):
                run_ids.append(int(match.group(1)))
                times.append(now)
                subs.append(n)
            if n not in greeted and GREETING in done:
                greeted.add(n)
            if TOO_SLOW in done:
                cut_off.add(n)
        if not ready_sent and len(greeted) == count:
            print("READY", flush=True)
            ready_sent = True
        if command.endswith(b"\n") and command.startswith(b"STOP "):
            break
    finished = {int(k): v for k, v in json.loads(command[5:]).items()}  # id -> [at, part]
    hists: dict[str, Counter[int]] = {}
    for run_id, at in zip(run_ids, times, strict=True):
        ts = finished.get(run_id)
        if ts is not None:
            hists.setdefault(ts[1], Counter())[round((at - ts[0]) * BIN)] += 1
    result = {"hists": hists, "cut_off": len(cut_off), "ended": len(ended - cut_off)}
    print("RESULT " + json.dumps(result), flush=True)
    for s in socks.values():
        s.close()


class Subscribers:
    """The subscriber processes of one phase."""

    def __init__(self, port: int, count: int, procs: int, tokens: bool) -> None:
        query = "" if tokens else "?tokens=0"
        shares = [count // procs + (i < count % procs) for i in range(procs)]
        self.children: list[subprocess.Popen[bytes]] = [
            subprocess.Popen(
                [sys.executable, __file__, "--subscribe", json.dumps([port, n, query])],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=REPO,
            )
            for n in shares
            if n
        ]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for child in self.children:
            assert child.stdout is not None
            while time.monotonic() < deadline:
                ready, _, _ = select.select([child.stdout], [], [], 0.2)
                if ready:
                    line = child.stdout.readline()
                    if line.strip() == b"READY":
                        break
                    raise SystemExit(f"a subscriber process said {line!r}")
                if child.poll() is not None:
                    raise SystemExit("a subscriber process exited early")
            else:
                raise SystemExit(f"subscribers were not connected within {timeout:g} s")

    def results(self, finished: dict[int, tuple[float, str]]) -> list[dict[str, Any]]:
        stop = b"STOP " + json.dumps(finished).encode() + b"\n"
        out = []
        for child in self.children:
            assert child.stdin is not None
            child.stdin.write(stop)
            child.stdin.flush()
        for child in self.children:
            assert child.stdout is not None
            line = _result_line(child.stdout)
            out.append(json.loads(line))
            child.wait(10)
        return out

    def kill(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
                child.wait()


def _result_line(stream: IO[bytes]) -> bytes:
    for line in stream:
        if line.startswith(b"RESULT "):
            return line[len(b"RESULT ") :]
    raise SystemExit("a subscriber process gave no result")


# -- the driver -----------------------------------------------------------------------------------
async def run_now_loop(
    port: int,
    tid: str,
    stop: float,
    finished: dict[int, float],
    errors: list[bytes],
    every: float = 0.0,
    offset: float = 0.0,
) -> None:
    """run-now for one thread, over one keep-alive connection, until ``stop``: back to back, or
    with ``every`` one every that many seconds (a late one is not made up for)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"POST /api/threads/{tid}/heartbeat/run-now HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    next_at = time.monotonic() + offset
    try:
        while time.monotonic() < stop:
            if every:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at = max(next_at + every, time.monotonic())
                if time.monotonic() >= stop:
                    break
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            body = await reader.readexactly(length)
            if head.startswith(b"HTTP/1.1 200 "):
                run = json.loads(body)
                finished[run["run_id"]] = datetime.fromisoformat(run["finished_at"]).timestamp()
            else:
                errors.append(head.split(b"\r\n", 1)[0] + b" " + body[:200])
    finally:
        writer.close()


async def drive(
    port: int, workers: int, duration: float, rate: float = 0.0
) -> tuple[dict[int, float], float, int]:
    """``workers`` loops of run-now, one thread each, for ``duration`` seconds: as fast as the
    server answers, or ``rate`` runs/s in all, evenly spaced."""
    finished: dict[int, float] = {}
    errors: list[bytes] = []
    t0 = time.monotonic()
    stop = t0 + duration
    every = workers / rate if rate else 0.0
    async with asyncio.TaskGroup() as tg:
        for i in range(workers):
            tg.create_task(
                run_now_loop(port, f"bench-{i}", stop, finished, errors, every, every * i / workers)
            )
    seconds = time.monotonic() - t0
    if errors:
        print(f"  {len(errors)} run-now calls failed, first: {errors[0]!r}", file=sys.stderr)
    return finished, seconds, len(errors)


def setup_threads(port: int, workers: int) -> None:
    import httpx

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client:
        for i in range(workers):
            client.post("/api/threads", json={"thread_id": f"bench-{i}"}).raise_for_status()
        client.post("/api/threads/bench-0/heartbeat/run-now").raise_for_status()  # warm up


# -- the servers and the phases -------------------------------------------------------------------
@dataclass
class Phase:
    """One flat-out stretch of run-now against one server."""

    subscribers: int
    round: int
    runs: int
    seconds: float
    server_cpu: float  # share of one core
    server_ms: float  # the server's CPU time per run
    kernel_ms: float  # the part of it spent in the kernel
    driver_cpu: float
    subscriber_cpu: float
    machine: float  # cores busy, all processes together
    errors: int

    @property
    def rate(self) -> float:
        return self.runs / self.seconds


@dataclass
class Delivery:
    """What one server's subscribers received, over all its phases."""

    subscribers: int
    hist: Counter[int]  # delays at the paced rate
    hist_full: Counter[int]  # delays while the server runs flat out
    delivered: float
    cut_off: int
    ended: int

    def delay(self, q: float, *, full: bool = False) -> float:
        """The q-th percentile delay in seconds (nearest rank over the histogram; ``nan``
        without data)."""
        hist = self.hist_full if full else self.hist
        total = sum(hist.values())
        if not total:
            return float("nan")
        rank = max(1, round(total * q / 100))
        seen = 0
        for k in sorted(hist):
            seen += hist[k]
            if seen >= rank:
                return k / BIN
        return max(hist) / BIN


def cpu_times(procs: list[Any]) -> tuple[float, float]:
    """(user + system, system) CPU seconds of ``procs`` together."""
    total = kernel = 0.0
    for p in procs:
        t = p.cpu_times()
        total += t.user + t.system
        kernel += t.system
    return total, kernel


class Target:
    """One server process with its subscribers, both kept for the whole bench, so that its
    phases can alternate with the other servers' (see ``main``)."""

    def __init__(self, workspace: Path, count: int, args: argparse.Namespace, cpus: list[int]):
        import psutil

        self.count = count
        self.args = args
        self.proc, self.port = start_server(workspace, workspace / f"db-{count}.sqlite", cpus)
        self.server = psutil.Process(self.proc.pid)
        self.finished: dict[int, tuple[float, str]] = {}  # run id -> (finished_at, part)
        try:
            setup_threads(self.port, args.workers)
            self.subs = Subscribers(self.port, count, max(1, args.sub_procs), bool(args.tokens))
        except BaseException:
            self.proc.kill()
            self.proc.wait(10)
            raise
        self.children = [psutil.Process(c.pid) for c in self.subs.children]

    def flat_out(self, round_no: int) -> Phase:
        import psutil

        me = psutil.Process()
        server0, kernel0 = cpu_times([self.server])
        driver0, subs0 = cpu_times([me])[0], cpu_times(self.children)[0]
        busy0, t0 = machine_busy_seconds(), time.monotonic()
        finished, seconds, errors = asyncio.run(
            drive(self.port, self.args.workers, self.args.duration)
        )
        wall = time.monotonic() - t0
        machine = (machine_busy_seconds() - busy0) / wall
        server1, kernel1 = cpu_times([self.server])
        driver1, subs1 = cpu_times([me])[0], cpu_times(self.children)[0]
        self.finished.update({k: (v, "full") for k, v in finished.items()})
        runs = max(1, len(finished))
        return Phase(
            subscribers=self.count,
            round=round_no,
            runs=len(finished),
            seconds=seconds,
            server_cpu=(server1 - server0) / wall,
            server_ms=(server1 - server0) * 1000 / runs,
            kernel_ms=(kernel1 - kernel0) * 1000 / runs,
            driver_cpu=(driver1 - driver0) / wall,
            subscriber_cpu=(subs1 - subs0) / wall,
            machine=machine,
            errors=errors,
        )

    def paced(self) -> int:
        """The paced part, for the delivery delays; returns the failed run-now calls."""
        finished, _, errors = asyncio.run(
            drive(self.port, self.args.workers, self.args.paced_duration, self.args.rate)
        )
        self.finished.update({k: (v, "paced") for k, v in finished.items()})
        return errors

    def delivery(self) -> Delivery:
        """Stop the subscribers and collect what they received."""
        reports = self.subs.results(self.finished) if self.count else []
        hist: Counter[int] = Counter()
        hist_full: Counter[int] = Counter()
        for report in reports:
            hist.update({int(k): v for k, v in report["hists"].get("paced", {}).items()})
            hist_full.update({int(k): v for k, v in report["hists"].get("full", {}).items()})
        received = sum(hist.values()) + sum(hist_full.values())
        expected = len(self.finished) * self.count
        return Delivery(
            subscribers=self.count,
            hist=hist,
            hist_full=hist_full,
            delivered=received / expected if expected else 1.0,
            cut_off=sum(r["cut_off"] for r in reports),
            ended=sum(r["ended"] for r in reports),
        )

    def close(self) -> None:
        self.subs.kill()
        time.sleep(0.2)  # let the server see the disconnects before it is stopped
        self.proc.terminate()
        self.proc.wait(10)


# -- the report -----------------------------------------------------------------------------------
def baselines(results: list[Phase]) -> dict[int, float]:
    """Round -> runs/s of that round's phase without subscribers."""
    return {p.round: p.rate for p in results if p.subscribers == 0}


def ratios(results: list[Phase], count: int) -> list[float]:
    """Each round's runs/s at ``count`` subscribers over the same round's runs/s without any."""
    base = baselines(results)
    return [p.rate / base[p.round] for p in results if p.subscribers == count and p.round in base]


def table(results: list[Phase]) -> str:
    """One row a phase; "vs 0 subs" compares with the phase without subscribers of its round."""
    base = baselines(results)
    lines = [
        "| round | subscribers | runs | runs/s | vs 0 subs | server CPU | server ms/run (kernel)"
        " | driver CPU | subscribers' CPU | machine |",
        "|" + "---|" * 10,
    ]
    for p in sorted(results, key=lambda p: (p.round, p.subscribers)):
        ratio = f"{p.rate / base[p.round]:.2f}" if base.get(p.round) else "—"
        lines.append(
            f"| {p.round} | {p.subscribers} | {p.runs} | {p.rate:.1f} | {ratio}"
            f" | {p.server_cpu:.0%} | {p.server_ms:.2f} ({p.kernel_ms:.2f}) | {p.driver_cpu:.0%}"
            f" | {p.subscriber_cpu:.0%} | {p.machine:.2f} |"
        )
    return "\n".join(lines)


def summary(results: list[Phase], deliveries: list[Delivery]) -> str:
    """Per subscriber count: medians over the rounds with ranges in brackets, the runs/s of all
    rounds pooled, and the delivery of all its phases together."""

    def cell(values: list[float], fmt: str) -> str:
        if not values:
            return "—"
        mid = statistics.median(values)
        if len(values) == 1:
            return format(mid, fmt)
        return f"{mid:{fmt}} ({min(values):{fmt}} to {max(values):{fmt}})"

    pooled = {
        d.subscribers: sum(p.runs for p in results if p.subscribers == d.subscribers)
        / sum(p.seconds for p in results if p.subscribers == d.subscribers)
        for d in deliveries
    }
    lines = [
        "| subscribers | runs/s | vs 0 subs | pooled vs 0 subs | server ms/run | p50 ms | p99 ms"
        " | flat-out p99 ms | delivered | cut off |",
        "|" + "---|" * 10,
    ]
    for d in deliveries:
        ps = [p for p in results if p.subscribers == d.subscribers]
        vs = f"{pooled[d.subscribers] / pooled[0]:.2f}" if pooled.get(0) else "—"
        if d.subscribers:
            delays = (
                f"{d.delay(50) * 1000:.1f} | {d.delay(99) * 1000:.1f}"
                f" | {d.delay(99, full=True) * 1000:.1f} | {d.delivered:.1%} | {d.cut_off}"
            )
        else:
            delays = "— | — | — | — | —"
        lines.append(
            f"| {d.subscribers} | {cell([p.rate for p in ps], '.0f')}"
            f" | {cell(ratios(results, d.subscribers), '.2f')} | {vs}"
            f" | {cell([p.server_ms for p in ps], '.2f')} | {delays} |"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    server_cpus: list[int] = []
    if args.pin:  # the driver and the subscriber processes it starts inherit the clients' CPUs
        server_cpus, client_cpus = split_cpus()
        os.sched_setaffinity(0, client_cpus)
    counts = list(dict.fromkeys(args.subscribers))
    results: list[Phase] = []
    deliveries: list[Delivery] = []
    with tempfile.TemporaryDirectory(prefix="hb-bench-sse-") as tmp:
        workspace = Path(tmp)
        (workspace / "HEARTBEAT.md").write_text(HEARTBEAT_MD, encoding="utf-8")
        targets: list[Target] = []
        paced_errors = 0
        try:
            for count in counts:
                print(f"starting a server with {count} subscribers ...", file=sys.stderr)
                targets.append(Target(workspace, count, args, server_cpus))
            for target in targets:
                target.subs.wait_ready(60)
            for round_no in range(1, args.rounds + 1):
                # ABC CBA ABC ...: a steady drift in the machine's speed touches every count alike
                order = targets if round_no % 2 else targets[::-1]
                for target in order:
                    print(
                        f"round {round_no}: {target.count} subscribers, {args.duration:g} s ...",
                        file=sys.stderr,
                    )
                    results.append(target.flat_out(round_no))
            for target in targets:
                if target.count:  # without subscribers there is no delay to measure
                    print(
                        f"{target.count} subscribers: paced at {args.rate:g} runs/s",
                        file=sys.stderr,
                    )
                    paced_errors += target.paced()
            time.sleep(1.0)  # stragglers
            deliveries = [target.delivery() for target in targets]
        finally:
            for target in targets:
                target.close()
    errors = sum(p.errors for p in results) + paced_errors
    print()
    print(
        f"SSE bench: {args.workers} run-now workers, {args.rounds} round(s) of {args.duration:g} s"
        f" per subscriber count, instant fake LLM, subscribers"
        f" {'with' if args.tokens else 'without'} token events in {args.sub_procs} process(es)"
        f"{'; servers pinned to one CPU' if args.pin else ''}; Python"
        f" {platform.python_version()} on {os.cpu_count()} CPU(s)"
        + (f"; {errors} run-now calls failed" if errors else "")
    )
    print(table(results))
    print(f"\nover {args.rounds} round(s): median (range), and all rounds pooled")
    print(summary(results, deliveries))
    print(
        "\nvs 0 subs = runs/s over the runs/s without subscribers in the same round; delay ="
        " subscriber receipt of run_finished - the run's finished_at, p50/p99 at the paced rate;"
        " delivered = run_finished events received / (runs x subscribers); CPU in % of one core;"
        " machine = cores busy in all processes (this bench's and any other work) meanwhile"
    )


def subscriber_counts(text: str) -> list[int]:
    """``--subscribers``: comma-separated whole numbers, 0 or more."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers such as 0,10,100, got {text!r}"
        ) from None
    if any(n < 0 for n in counts):
        raise argparse.ArgumentTypeError(f"subscriber counts cannot be negative, got {text!r}")
    return counts


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s phases, one round: a smoke run")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per phase")
    parser.add_argument("--workers", type=int, default=8, help="concurrent run-now loops")
    parser.add_argument(
        "--subscribers",
        type=subscriber_counts,
        default="0,10,100",
        help="comma-separated counts (1000 works too)",
    )
    parser.add_argument(
        "--tokens", type=int, choices=(0, 1), default=1, help="0: subscribe with ?tokens=0"
    )
    parser.add_argument("--sub-procs", type=int, default=1, help="subscriber processes")
    parser.add_argument("--rounds", type=int, default=5, help="phases per subscriber count")
    parser.add_argument(
        "--rate", type=float, default=50.0, help="runs/s of the paced part, for the delays"
    )
    parser.add_argument(
        "--paced-duration", type=float, default=5.0, help="seconds of the paced part of a phase"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="bind the server to the first CPU and the clients to the others",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--subscribe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.duration = min(args.duration, 2.0)
        args.rounds = 1
    return args


if __name__ == "__main__":
    arguments = parse()
    if arguments.serve:
        ws, db, port, cpus = json.loads(arguments.serve)
        serve(Path(ws), Path(db), int(port), [int(c) for c in cpus])
    elif arguments.subscribe:
        port, count, query = json.loads(arguments.subscribe)
        subscribe_main(int(port), int(count), str(query))
    else:
        main(arguments)
