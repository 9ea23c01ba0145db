"""A flood of wakes: 1,000 wakes in one second to one thread make a handful of runs, no errors.

    python bench/wakes.py [--wakes 1000] [--seconds 1] [--llm-ms 200] [--spacing 10]
                          [--per-minute 30] [--threads 1]

The real app (its lifespan, the security middleware, real SQLite in a temporary directory) is
driven in process over ASGI, the scheduler off, with a fake LLM that answers every chat after
``--llm-ms``. ``--wakes`` wakes (``mode: now``) are sent evenly over ``--seconds`` seconds, each
its own request, spread over ``--threads`` threads. Then the bench waits for every beat the
wakes caused (the flood guard's spacing included) and reports: the answers by status and
outcome, the server errors (5xx, and any request that raised), the runs made and LLM calls, the
event texts the runs carried (how many wakes were coalesced into them), and the answers'
latency. A second table repeats the flood with the guard wide open (no spacing, a cap of 600 a
minute), to show what coalescing alone does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import md_table, ms, percentile  # noqa: E402

REPLY = json.dumps({"action": "none", "reasoning": "bench: nothing needs doing"})


class SlowLLM:
    """An LLMProvider that answers every chat after a fixed delay, and counts the calls."""

    name = "slow"
    base_url = "memory://slow"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    async def chat(self, req: Any, *, on_token: Any = None, deadline: float | None = None) -> Any:
        from loops.llm import ChatResult

        self.calls += 1
        await asyncio.sleep(self.seconds)
        return ChatResult(
            text=REPLY,
            model=req.model,
            done_reason="stop",
            prompt_tokens=1,
            completion_tokens=1,
            load_ms=0.0,
            total_ms=self.seconds * 1000,
            attempts=1,
        )

    async def health(self, model: str) -> Any:
        from loops.llm import Health

        return Health(self.name, self.base_url, True, "slow", model, True, None)

    async def aclose(self) -> None:
        return None


async def flood(args: argparse.Namespace, spacing: float, per_minute: int) -> dict[str, Any]:
    import httpx

    from app.main import create_app
    from app.settings import Settings

    llm = SlowLLM(args.llm_ms / 1000)
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        (workspace / "HEARTBEAT.md").write_text("## Rules\n- Post when a build fails\n")
        settings = Settings.for_workspace(
            workspace,
            llm_provider="ollama",
            wake_min_spacing=spacing,
            wake_per_minute=per_minute,
        )
        app = create_app(settings, llm=llm, start_loops=False)
        async with app.router.lifespan_context(app):
            svc = app.state.service
            threads = [f"t{i}" for i in range(args.threads)]
            for tid in threads:
                await svc.store.write(lambda tx, tid=tid: tx.create_thread(tid, tid, None))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1:8000", timeout=60.0
            ) as client:
                answers: list[tuple[int, str, float]] = []
                raised: list[str] = []
                begin = time.monotonic()

                async def one(i: int) -> None:
                    await asyncio.sleep(
                        max(0.0, begin + i * args.seconds / args.wakes - time.monotonic())
                    )
                    sent = time.monotonic()
                    tid = threads[i % len(threads)]
                    try:
                        r = await client.post(
                            f"/api/threads/{tid}/heartbeat/wake",
                            json={"text": f"event {i}", "mode": "now"},
                        )
                    except Exception as exc:  # the bench counts it, whatever it is
                        raised.append(f"{type(exc).__name__}: {exc}")
                        return
                    body = r.json()
                    outcome = body.get("outcome") or body.get("error", {}).get("limit", "?")
                    answers.append((r.status_code, outcome, time.monotonic() - sent))

                await asyncio.gather(*(one(i) for i in range(args.wakes)))
                sent_in = time.monotonic() - begin
                # every beat the wakes caused: the spacing's wait, then the run
                deadline = time.monotonic() + spacing * 3 + 30
                while time.monotonic() < deadline:
                    if not svc.waker.waiting and not svc.executor.in_flight:
                        break
                    await asyncio.sleep(0.05)
                rows = [r for tid in threads for r in await svc.store.history(tid, limit=1000)]
        by_status = Counter(status for status, _, _ in answers)
        latencies = [lat for _, _, lat in answers]
        return {
            "sent_in": sent_in,
            "by_status": by_status,
            "by_outcome": Counter(outcome for _, outcome, _ in answers),
            "server_errors": sum(n for s, n in by_status.items() if s >= 500) + len(raised),
            "raised": raised[:3],
            "runs": len(rows),
            "run_statuses": Counter(r.status for r in rows),
            "llm_calls": llm.calls,
            "events_per_run": [len((r.event_text or "").splitlines()) for r in reversed(rows)],
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wakes", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--llm-ms", type=float, default=200.0)
    parser.add_argument("--spacing", type=float, default=10.0)
    parser.add_argument("--per-minute", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for label, spacing, cap in (
        (f"guard on ({args.spacing:g} s, {args.per_minute}/min)", args.spacing, args.per_minute),
        ("guard open (0 s, 600/min)", 0.0, 600),
    ):
        got = asyncio.run(flood(args, spacing, cap))
        rows.append(
            [
                label,
                args.wakes,
                f"{got['sent_in']:.2f} s",
                " ".join(f"{k}:{v}" for k, v in sorted(got["by_status"].items())),
                " ".join(f"{k}:{v}" for k, v in sorted(got["by_outcome"].items())),
                got["server_errors"],
                got["runs"],
                got["llm_calls"],
                ",".join(map(str, got["events_per_run"])),
                ms(got["p50"]),
                ms(got["p99"]),
            ]
        )
        if got["raised"]:
            print("raised:", *got["raised"], sep="\n  ", file=sys.stderr)
    print(
        md_table(
            [
                "flood guard",
                "wakes",
                "sent in",
                "answers",
                "outcomes",
                "5xx",
                "runs",
                "LLM calls",
                "wakes per run",
                "p50",
                "p99",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
