"""A simulated day of 100 threads: LLM calls and tokens with skipping on and off, same actions.

    python bench/day.py [--threads 100] [--seed 7] [--bursts 8] [--rules tagged|named]

Each run opens the real service in-process (real SQLite in a temporary folder, the real
scheduler and executor) on a fake clock, and replays one day from local midnight: every thread
beats every 30 minutes; by day (08:00-20:00) the Ledger gets ``--bursts`` bursts of posts and
comments and the threads get messages; nights are quiet. The model is a deterministic fake that
follows the bench's HEARTBEAT.md exactly, reading only what the prompt shows:

- vote up a user's question tagged for this thread (``[t7] ...?``) that has no score yet;
- when the thread's last user message says "remind me ...", post that reminder once.

``--rules named`` replays the same day against one rule naming one author ("Vote up questions
from carol that have no votes", the posts written by alice, bob, carol and dave in turn), so
that skipping can narrow the fingerprint to carol's posts and their votes (docs/scheduling.md,
Scope of the fingerprint). The bench's own two rules are read too (a post tagged for the
thread, a request to be reminded), but the reminder rule names any of the user's posts, so
every post the user writes counts for every thread.

The day is replayed twice, with ``skip_unchanged`` on and off, and the figures printed side by
side: heartbeat LLM calls, tokens, runs by outcome, and the actions taken (kind and target),
which must be the same in both. The threads share one Ledger, so which thread's effect another
sees first is the order of a slot's runs: each thread's grid lies a second after the one before
(thread ``t0`` first), so the runs of a slot go one at a time in that order, each finished
before the next, and two replays of the same day see the same order. ``--baseline`` replays
skipping off twice instead, which shows the replay's own noise (none is left). (Wakes are not
replayed here.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.service import Service
from app.settings import Settings
from ledger.records import Loop
from ledger.storage.interface import USER
from loops.clock import FakeClock
from loops.llm import ChatRequest, ChatResult, Health, TokenSink

START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC).timestamp()
EVERY = 1800
STAGGER = 1.0  # thread i's grid lies i seconds after the service's own thread's
DAY = 86_400
RULES = """# Heartbeat

## Rules
- Vote up a question from the user that is tagged for this thread and has no votes yet.
- When the user asks to be reminded of something, post the reminder once.
"""
NAMED_RULES = """# Heartbeat

## Rules
- Vote up questions from carol that have no votes.
"""
RULE_SETS = {"tagged": RULES, "named": NAMED_RULES}
AUTHORS = ("alice", "bob", "carol", "dave")
_FEED_LINE = re.compile(r"^  (\{.*\})$", re.M)
_THREAD = re.compile(r"^thread: (\{.*\})$", re.M)


class RuleFollower:
    """The fake model: acts exactly when a rule's condition holds in the prompt's data."""

    name = "rule-follower"
    base_url = "memory://rules"

    def __init__(self, rules: str = "tagged") -> None:
        self.rules = rules
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def decide(self, prompt: str) -> dict[str, Any]:
        thread = json.loads(_THREAD.search(prompt)[1])["id"]  # type: ignore[index]
        rows = [json.loads(m) for m in _FEED_LINE.findall(prompt)]
        feed = [r for r in rows if "post_id" in r]
        said = [r["content"] for r in rows if r.get("role") == USER]
        if self.rules == "named":
            for post in feed:
                if post["author"] == "carol" and post["title"].endswith("?") and not post["score"]:
                    return {"action": "vote", "post_id": post["post_id"], "vote_direction": "up",
                            "reasoning": "a question from carol"}  # fmt: skip
            return {"action": "none", "reasoning": "no rule applies"}
        for post in feed:
            title = post["title"]
            if post["author"] == USER and title.startswith(f"[{thread}] ") and title.endswith("?"):
                if post["score"] == 0:
                    return {"action": "vote", "post_id": post["post_id"], "vote_direction": "up",
                            "reasoning": "a question for this thread"}  # fmt: skip
        if said and said[-1].startswith("remind me "):
            title = f"Reminder ({thread}): {said[-1][len('remind me ') :]}"
            if title not in {p["title"] for p in feed}:
                return {"action": "post", "title": title, "content": said[-1],
                        "reasoning": "the user asked"}  # fmt: skip
        return {"action": "none", "reasoning": "no rule applies"}

    async def chat(
        self, req: ChatRequest, *, on_token: TokenSink | None = None, deadline: float | None = None
    ) -> ChatResult:
        prompt = req.messages[-1]["content"]
        text = json.dumps(self.decide(prompt))
        self.calls += 1
        prompt_tokens = sum(len(m["content"]) for m in req.messages) // 4
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += len(text) // 4
        return ChatResult(
            text=text, model=req.model, done_reason="stop", prompt_tokens=prompt_tokens,
            completion_tokens=len(text) // 4, load_ms=None, total_ms=1.0, attempts=1,
        )  # fmt: skip

    async def health(self, model: str) -> Health:
        return Health(provider=self.name, base_url=self.base_url, reachable=True, version="1",
                      model=model, model_present=True, detail=None)  # fmt: skip

    async def aclose(self) -> None:
        return None


def day_events(threads: int, seed: int, bursts: int) -> list[tuple[float, str, str, str]]:
    """(time, kind, thread, text): ``bursts`` bursts of activity between 08:00 and 20:00, each
    of 5 to 20 events within a minute; quiet nights; the same for both runs."""
    rng = random.Random(seed)
    events: list[tuple[float, str, str, str]] = []
    for burst in range(bursts):
        at = START + 8 * 3600 + rng.randint(0, 12 * 3600 - 60)
        for k in range(rng.randint(5, 20)):
            tid = f"t{rng.randrange(threads)}"
            kind = rng.choice(["question", "post", "comment", "message", "message", "remind"])
            events.append((at + k, kind, tid, f"{burst}:{k}"))
    return sorted(events)


def _idle(svc: Service) -> Any:
    def idle() -> bool:
        sched = svc.scheduler
        return not sched._tasks and sched.timers.waiting

    return idle


async def apply(
    svc: Service, kind: str, tid: str, text: str, posts: list[str], rules: str = "tagged"
) -> None:
    # with the named rules the posts are written by alice, bob, carol and dave in turn
    author = USER if rules == "tagged" else AUTHORS[int(text.split(":")[1]) % len(AUTHORS)]

    def write(tx: Any) -> None:
        if kind == "question":
            posts.append(tx.create_post(author, f"[{tid}] what about {text}?", "asking").id)
        elif kind == "post":
            posts.append(tx.create_post(author, f"news {text}", "an update").id)
        elif kind == "comment" and posts:
            tx.add_comment(posts[-1], USER, f"re {text}")
        elif kind == "message":
            tx.add_message(tid, USER, f"note {text}")
        elif kind == "remind":
            tx.add_message(tid, USER, f"remind me about {text}")

    await svc.store.write(write)


async def replay(
    threads: int, seed: int, bursts: int, skip: bool, rules: str = "tagged"
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        (ws / "HEARTBEAT.md").write_text(RULE_SETS[rules], encoding="utf-8")
        clock = FakeClock(START - EVERY)
        llm = RuleFollower(rules)
        settings = Settings.for_workspace(ws, timer_slack=0.0, max_concurrency=1)
        svc = await Service.open(settings, clock=clock, llm=llm)
        posts: list[str] = []
        try:
            for i in range(threads):
                # each thread's anchor a second after the last: a slot's runs go one at a time,
                # in the threads' order, each finished before the next starts, so which run
                # sees another's effect first is the same in every replay
                await clock.advance(STAGGER)
                await svc.set_config(f"t{i}", {"every_seconds": EVERY, "skip_unchanged": skip})
            clock.idle = _idle(svc)
            await svc.supervisor.start(Loop.HEARTBEAT)
            await clock.settle()
            for at, kind, tid, text in day_events(threads, seed, bursts):
                await clock.advance(at - clock.now())
                await apply(svc, kind, tid, text, posts, rules)
            await clock.advance(START + DAY - clock.now())
            await svc.supervisor.stop(Loop.HEARTBEAT)
            outcomes: Counter[str] = Counter()
            actions: list[tuple[str, str, str]] = []
            # the named rule is every thread's (the service's own "default" thread's too):
            # which thread votes first is the order of a slot's runs, the vote is the action
            tids = [f"t{i}" for i in range(threads)] + (["default"] if rules == "named" else [])
            for tid in tids:
                for run in await svc.store.history(tid, limit=1000, loop=Loop.HEARTBEAT):
                    if tid != "default":
                        outcomes[
                            run.status if run.reason is None else f"{run.status}/{run.reason}"
                        ] += 1
                    for done in run.executed or []:
                        post = await svc.store.get_post(done["post_id"])
                        by = tid if rules == "tagged" else "a thread"
                        actions.append((by, done["type"], post.title))
        finally:
            clock.idle = None
            await svc.close()
    return {
        "calls": llm.calls,
        "tokens": llm.prompt_tokens + llm.completion_tokens,
        "outcomes": dict(sorted(outcomes.items())),
        "actions": sorted(actions),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bursts", type=int, default=8, help="bursts of activity by day")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="compare skipping off with itself (run-to-run noise)",
    )
    parser.add_argument(
        "--rules",
        choices=sorted(RULE_SETS),
        default="tagged",
        help="the bench's two rules (tagged), or one the rule reader understands (named)",
    )
    parser.add_argument("--no-flood", action="store_true", help="leave out the wake flood")
    args = parser.parse_args()
    off = await replay(args.threads, args.seed, args.bursts, skip=False, rules=args.rules)
    on = await replay(
        args.threads, args.seed, args.bursts, skip=not args.baseline, rules=args.rules
    )
    print(
        f"{args.threads} threads, one day, a beat every {EVERY // 60} min,"
        f" {args.bursts} bursts of activity by day (seed {args.seed}, {args.rules} rules)"
    )
    print(f"{'':24}{'skipping off':>14}{'skipping on':>14}")
    print(f"{'LLM calls':24}{off['calls']:>14}{on['calls']:>14}")
    print(f"{'tokens':24}{off['tokens']:>14}{on['tokens']:>14}")
    print(f"{'actions':24}{len(off['actions']):>14}{len(on['actions']):>14}")
    for key in sorted(set(off["outcomes"]) | set(on["outcomes"])):
        print(
            f"{'runs ' + key:24}{off['outcomes'].get(key, 0):>14}{on['outcomes'].get(key, 0):>14}"
        )
    fewer = 1 - on["calls"] / off["calls"] if off["calls"] else 0.0
    same = off["actions"] == on["actions"]
    print(f"LLM calls {fewer:.1%} fewer with skipping on; actions the same: {same}")
    if not same:
        taken_off, taken_on = Counter(off["actions"]), Counter(on["actions"])
        print("missed with skipping on:", sorted((taken_off - taken_on).items())[:10])
        print("added with skipping on:", sorted((taken_on - taken_off).items())[:10])
    flood_ok = args.no_flood or await wake_flood()
    sys.exit(0 if same and flood_ok else 1)


async def wake_flood() -> bool:
    """``bench/wakes.py``'s flood of 1,000 wakes in one second, its guard at the defaults."""
    from wakes import flood

    flags = argparse.Namespace(wakes=1000, seconds=1.0, llm_ms=200.0, threads=1)
    got = await flood(flags, 10.0, 30)
    answers = " ".join(f"{k}:{v}" for k, v in sorted(got["by_status"].items()))
    print(
        f"a flood of 1000 wakes in {got['sent_in']:.2f} s to one thread: answers {answers},"
        f" {got['server_errors']} server errors, {got['runs']} runs, {got['llm_calls']} LLM calls"
    )
    return bool(got["server_errors"] == 0)


if __name__ == "__main__":
    asyncio.run(main())
