"""Decision evaluation: run scenario files through the real heartbeat and grade the decisions.

    python bench/eval.py --provider embedded [--model gemma3-270m] [--scenarios bench/eval]
    python bench/eval.py --provider ollama --model llama3.2 [--base-url http://127.0.0.1:11434]
    python bench/eval.py --provider openai --model qwen2.5 --base-url http://127.0.0.1:8080/v1
    python bench/eval.py --provider oracle        # checks the scenarios and this harness: 100 %
    python bench/eval.py --provider embedded --strategy prompt   # the whole prompt instead
    python bench/eval.py --provider oracle --strategy procedure  # the rules alone, no model
    python bench/eval.py --scenarios bench/eval bench/eval/holdout  # each set, then together

Nothing of the decision path is re-implemented here. For each scenario the harness opens a real
``Service`` on a temporary SQLite file and workspace (``Service.open`` with the provider under
test and a clock set to the scenario's ``now``), writes the scenario's HEARTBEAT.md, seeds the
Ledger posts (with their ages, votes and comments), the thread's messages, open contradictions
and earlier heartbeat actions through the store, sets the thread's config (dry run, so the run is
recorded but the Ledger is left alone) and calls ``Service.run_now`` — the same call as
``POST /api/threads/default/heartbeat/run-now``. So the prompt comes from ``loops/prompt.py``, the
schema from ``ledger/decisions.py``, and the reply goes through ``parse_reply`` and ``review``.

A scenario file (``bench/eval/*.json``) holds one JSON object:

    {
      "id": "wf2-agree-vote-up",
      "style": "Workflow 2: Consensus Voter",          # which rule style it exercises
      "description": "A post asking 'agree?': vote up.",
      "now": "2026-03-02T15:00:00Z",                   # the wall clock during the run
      "timezone": "UTC",                               # the thread config's time zone
      "heartbeat_md": "## Rules\\nIf post has ...",
      "messages": [{"role": "user", "content": "..."}],
      "posts": [{"key": "p2", "author": "dave", "title": "...", "content": "...",
                 "age_minutes": 60, "votes": {"up": 1, "down": 0},
                 "comments": [{"author": "erin", "content": "..."}]}],
      "contradictions": [{"a": "...", "b": "..."}],
      "recent_actions": [{"action": "vote", "post": "p2", "vote_direction": "up"}],
      "config": {"temperature": 0.2},                  # optional HeartbeatConfig fields
      "expected": {"action": "vote", "post": "p2", "vote_direction": "up"}
    }

``post`` names a post by its ``key``; the harness maps keys to the real ids. A decision is correct
when the run was accepted (``ok`` or ``dry_run``), its action is the expected one and, for a
comment or a vote, it targets the expected post (and, for a vote, in the expected direction).

Printed: a line per run, accuracy per expected action type, the false-action rate (an action
where ``none`` was expected), the share of replies that were a schema-valid decision, the
rejected and failed shares, which procedure decided, prompt tokens per decision, latency p50/p95
(the whole run, and the LLM call alone), and per rule style the accuracy and false-action rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

import msgspec

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app.service import Service  # noqa: E402
from app.settings import LoopSettings, Settings  # noqa: E402
from ledger.records import RunOutcome, RunStart  # noqa: E402
from ledger.storage.interface import AGENT, Tx  # noqa: E402
from loops.clock import FakeClock  # noqa: E402
from loops.llm import (  # noqa: E402
    ChatRequest,
    ChatResult,
    Health,
    LLMError,
    LLMProvider,
    OllamaProvider,
    OpenAIProvider,
    TokenSink,
)

ACTIONS = ("post", "comment", "vote", "none")
THREAD = "default"


# --- scenario files ---------------------------------------------------------------------------


class _Strict(msgspec.Struct, forbid_unknown_fields=True):
    pass


class Votes(_Strict):
    up: int = 0
    down: int = 0


class CommentSpec(_Strict):
    author: str
    content: str


class PostSpec(_Strict):
    key: str
    author: str
    title: str
    content: str
    age_minutes: float = 60.0
    votes: Votes = msgspec.field(default_factory=Votes)
    comments: list[CommentSpec] = msgspec.field(default_factory=list)


class MessageSpec(_Strict):
    role: Literal["user", "assistant", "system"]
    content: str


class ContradictionSpec(_Strict):
    a: str
    b: str


class ActionSpec(_Strict):
    action: Literal["post", "comment", "vote", "none"]
    post: str | None = None
    vote_direction: Literal["up", "down"] | None = None
    title: str | None = None
    content: str | None = None
    reasoning: str = ""


class Expected(_Strict):
    action: Literal["post", "comment", "vote", "none"]
    post: str | None = None
    vote_direction: Literal["up", "down"] | None = None


class Scenario(_Strict):
    id: str
    heartbeat_md: str
    expected: Expected
    style: str = ""
    description: str = ""
    now: str = "2026-03-02T15:00:00Z"
    timezone: str = "UTC"
    messages: list[MessageSpec] = msgspec.field(default_factory=list)
    posts: list[PostSpec] = msgspec.field(default_factory=list)
    contradictions: list[ContradictionSpec] = msgspec.field(default_factory=list)
    recent_actions: list[ActionSpec] = msgspec.field(default_factory=list)
    config: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def now_ts(self) -> float:
        return datetime.fromisoformat(self.now.replace("Z", "+00:00")).timestamp()


def _check(sc: Scenario, path: Path) -> None:
    keys = [p.key for p in sc.posts]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: post keys must be unique, got {keys}")
    wanted = [sc.expected, *sc.recent_actions]
    for spec in wanted:
        if spec.action in ("comment", "vote") and spec.post not in keys:
            raise ValueError(f"{path}: {spec.action} names post {spec.post!r}; posts are {keys}")
        if spec.action == "vote" and spec.vote_direction is None:
            raise ValueError(f"{path}: a vote needs vote_direction")


def load_scenarios(folder: Path) -> list[tuple[Path, Scenario]]:
    files = sorted(folder.glob("*.json"))
    if not files:
        raise SystemExit(f"no scenario files (*.json) in {folder}")
    out = []
    decoder = msgspec.json.Decoder(Scenario)
    for path in files:
        try:
            sc = decoder.decode(path.read_bytes())
        except msgspec.DecodeError as exc:
            raise SystemExit(f"{path}: {exc}") from None
        _check(sc, path)
        out.append((path, sc))
    return out


# --- providers --------------------------------------------------------------------------------


@dataclass
class Call:
    ms: float
    text: str | None
    error: str | None


class Borrowed:
    """The provider under test, lent to one Service at a time: records each call, and is not
    closed when that Service closes (the harness closes it at the end)."""

    def __init__(self, inner: LLMProvider) -> None:
        self.inner = inner
        self.name = inner.name
        self.base_url = inner.base_url
        self.calls: list[Call] = []

    async def chat(
        self,
        req: ChatRequest,
        *,
        on_token: TokenSink | None = None,
        deadline: float | None = None,
    ) -> ChatResult:
        started = time.perf_counter()
        try:
            result = await self.inner.chat(req, on_token=on_token, deadline=deadline)
        except LLMError as err:
            self.calls.append(Call((time.perf_counter() - started) * 1000, None, err.reason))
            raise
        self.calls.append(Call((time.perf_counter() - started) * 1000, result.text, None))
        return result

    async def health(self, model: str) -> Health:
        return await self.inner.health(model)

    async def aclose(self) -> None:
        return None


class Oracle:
    """Answers each scenario with its expected decision: proves the scenarios and the grading."""

    name = "oracle"
    base_url = "memory://oracle"

    def __init__(self) -> None:
        self.reply = ""

    async def chat(
        self,
        req: ChatRequest,
        *,
        on_token: TokenSink | None = None,
        deadline: float | None = None,
    ) -> ChatResult:
        if on_token is not None:
            on_token(self.reply)
        return ChatResult(
            text=self.reply,
            model="oracle",
            done_reason="stop",
            prompt_tokens=None,
            completion_tokens=None,
            load_ms=None,
            total_ms=0.0,
            attempts=1,
        )

    async def health(self, model: str) -> Health:
        return Health("oracle", self.base_url, True, None, model, True, None)

    async def aclose(self) -> None:
        return None


def _decision(spec: ActionSpec | Expected, ids: dict[str, str]) -> dict[str, Any]:
    """A decision dict for ``spec`` with post keys mapped to real ids."""
    out: dict[str, Any] = {"action": spec.action}
    if spec.action == "post":
        title = getattr(spec, "title", None) or "Summary"
        out |= {"title": title, "content": getattr(spec, "content", None) or "Summary."}
    if spec.action in ("comment", "vote"):
        out["post_id"] = ids[spec.post or ""]
    if spec.action == "comment":
        out["content"] = getattr(spec, "content", None) or "A comment."
    if spec.action == "vote":
        out["vote_direction"] = spec.vote_direction
    out["reasoning"] = getattr(spec, "reasoning", "") or "expected decision"
    return out


def build_provider(args: argparse.Namespace) -> tuple[LLMProvider, str]:
    """The provider under test and the model name the executor passes to it."""
    if args.provider == "embedded":
        from loops.llm.embedded import EmbeddedProvider

        embedded = EmbeddedProvider(
            args.model,
            seed=args.seed,
            n_ctx=args.n_ctx,
            repeat_penalty=args.repeat_penalty,
        )
        return embedded, embedded.model
    if args.provider == "ollama":
        base = args.base_url or os.environ.get("OLLAMA_HOST")
        return OllamaProvider(base, idle_timeout=args.deadline), args.model or "llama3.2:latest"
    if args.provider == "openai":
        if not args.base_url or not args.model:
            raise SystemExit("--provider openai needs --base-url and --model")
        key = args.api_key or os.environ.get("HEARTBEAT_LLM_API_KEY")
        return OpenAIProvider(args.base_url, api_key=key, idle_timeout=args.deadline), args.model
    return Oracle(), "oracle"


# --- one scenario -----------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    style: str
    expected: dict[str, Any]
    status: str
    reason: str | None
    got: dict[str, Any] | None
    correct: bool
    action_correct: bool
    schema_valid: bool
    run_ms: float
    llm_ms: float | None
    calls: int
    error: str | None
    prompt_tokens: int | None = None
    strategy: str | None = None
    replies: list[str | None] = field(default_factory=list)


def _seed_post(i: int, post: Any, tx: Tx) -> str:
    made = tx.create_post(post.author, post.title, post.content)
    for n in range(post.votes.up):
        tx.vote(made.id, f"voter{i}_{n}", "up")
    for n in range(post.votes.down):
        tx.vote(made.id, f"critic{i}_{n}", "down")
    for comment in post.comments:
        tx.add_comment(made.id, comment.author, comment.content)
    return made.id


async def _seed(service: Service, clock: FakeClock, sc: Scenario, model: str) -> dict[str, str]:
    """Fill the store as the scenario says; returns post key → real post id."""
    now = sc.now_ts
    ids: dict[str, str] = {}
    for i, post in enumerate(sorted(sc.posts, key=lambda p: -p.age_minutes)):
        at = now - post.age_minutes * 60
        if at > clock.now():
            clock.jump(at - clock.now())
        ids[post.key] = await service.store.write(partial(_seed_post, i, post))
    start_messages = now - 60 * (len(sc.messages) + len(sc.recent_actions) + 1)
    if start_messages > clock.now():
        clock.jump(start_messages - clock.now())
    owner = service.store.owner

    def history(tx: Tx) -> None:
        for m in sc.messages:
            tx.add_message(THREAD, m.role, m.content)
        for c in sc.contradictions:
            tx.add_contradiction(THREAD, c.a, c.b)
        for spec in sc.recent_actions:
            decision = _decision(spec, ids)
            start = RunStart(
                thread_id=THREAD, loop="heartbeat", trigger="schedule", model=model, owner=owner
            )
            run_id = tx.start_run(start)
            assert run_id is not None
            executed: list[dict[str, Any]] = []
            if spec.action == "vote":
                tx.vote(decision["post_id"], AGENT, decision["vote_direction"], run_id)
                executed.append({"type": "vote", "post_id": decision["post_id"]})
            elif spec.action == "comment":
                tx.add_comment(decision["post_id"], AGENT, decision["content"], run_id)
                executed.append({"type": "comment", "post_id": decision["post_id"]})
            elif spec.action == "post":
                made = tx.create_post(AGENT, decision["title"], decision["content"], run_id)
                executed.append({"type": "post", "post_id": made.id})
            tx.finish_run(
                run_id,
                RunOutcome(
                    status="ok",
                    model=model,
                    action=spec.action,
                    decision=decision,
                    executed=executed,
                    summary=f"{spec.action} (earlier run)",
                ),
            )

    await service.store.write(history)
    if now > clock.now():
        clock.jump(now - clock.now())
    return ids


def _grade(sc: Scenario, got: dict[str, Any] | None, status: str, ids: dict[str, str]) -> bool:
    if got is None or status not in ("ok", "dry_run"):
        return False
    want = sc.expected
    if got.get("action") != want.action:
        return False
    if want.action in ("comment", "vote") and got.get("post_id") != ids.get(want.post or ""):
        return False
    return not (want.action == "vote" and got.get("vote_direction") != want.vote_direction)


async def run_scenario(
    sc: Scenario,
    provider: Borrowed,
    model: str,
    root: Path,
    overrides: dict[str, Any],
    deadline: float,
) -> Result:
    workspace = Path(tempfile.mkdtemp(prefix=f"{sc.id[:40]}-", dir=root))
    (workspace / "HEARTBEAT.md").write_text(sc.heartbeat_md, encoding="utf-8")
    oldest = max([p.age_minutes for p in sc.posts] or [0.0])
    clock = FakeClock(start=sc.now_ts - oldest * 60 - 3600)
    settings = Settings.for_workspace(
        workspace,
        model=model,
        run_deadline=deadline,
        heartbeat=LoopSettings(enabled=False, seconds=1800),
    )
    service = await Service.open(settings, clock=clock, llm=provider)
    try:
        ids = await _seed(service, clock, sc, model)
        if isinstance(provider.inner, Oracle):
            provider.inner.reply = json.dumps(_decision(sc.expected, ids))
        config = {"dry_run": True, "timezone": sc.timezone, **sc.config, **overrides}
        await service.set_config(THREAD, config)
        first_call = len(provider.calls)
        started = time.perf_counter()
        run = await service.run_now(THREAD)
        run_ms = (time.perf_counter() - started) * 1000
    finally:
        await service.close()
    calls = provider.calls[first_call:]
    names = {v: k for k, v in ids.items()}
    got = None
    if run.decision is not None:
        got = dict(run.decision)
        if "post_id" in got:
            got["post"] = names.get(str(got["post_id"]).strip(), got["post_id"])
    correct = _grade(sc, run.decision, run.status, ids)
    return Result(
        scenario=sc.id,
        style=sc.style,
        expected=msgspec.to_builtins(sc.expected),
        status=run.status,
        reason=run.reason,
        got=got,
        correct=correct,
        action_correct=run.status in ("ok", "dry_run") and run.action == sc.expected.action,
        schema_valid=run.decision is not None,
        run_ms=run_ms,
        llm_ms=run.llm_ms,
        calls=len(calls),
        error=run.error,
        prompt_tokens=run.prompt_tokens,
        strategy=None if run.decision is None else run.decision.get("strategy"),
        replies=[c.text for c in calls],
    )


# --- report -----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _show(d: dict[str, Any] | None) -> str:
    if d is None:
        return "-"
    action = str(d.get("action"))
    if action == "vote":
        return f"vote {d.get('vote_direction')} {d.get('post')}"
    if action == "comment":
        return f"comment {d.get('post')}"
    return action


def false_action(r: Result) -> bool:
    """An action taken where the scenario expects ``none``."""
    return r.expected["action"] == "none" and (r.got or {}).get("action", "none") != "none"


def per_style(results: list[Result]) -> dict[str, dict[str, float]]:
    """Accuracy and the false-action rate (of the scenarios expecting none) per rule style."""
    out: dict[str, dict[str, float]] = {}
    for style in sorted({r.style for r in results}):
        rows = [r for r in results if r.style == style]
        nones = [r for r in rows if r.expected["action"] == "none"]
        out[style] = {
            "n": len(rows),
            "accuracy": sum(r.correct for r in rows) / len(rows),
            "none_n": len(nones),
            "false_action_rate": sum(map(false_action, nones)) / len(nones) if nones else math.nan,
        }
    return out


def summarize(results: list[Result]) -> dict[str, Any]:
    n = len(results)
    per_action: dict[str, dict[str, float]] = {}
    for action in ACTIONS:
        rows = [r for r in results if r.expected["action"] == action]
        if rows:
            right = sum(r.correct for r in rows)
            per_action[action] = {"n": len(rows), "correct": right, "accuracy": right / len(rows)}
    run_ms = [r.run_ms for r in results]
    llm_ms = [r.llm_ms for r in results if r.llm_ms is not None]
    statuses = Counter(r.status for r in results)
    failures = Counter(r.reason or "?" for r in results if r.status == "failed")
    rejections = Counter(r.reason or "?" for r in results if r.status == "rejected")
    got_actions = Counter((r.got or {}).get("action", "-") for r in results)
    nones = [r for r in results if r.expected["action"] == "none"]
    tokens = [float(r.prompt_tokens) for r in results if r.prompt_tokens is not None]
    return {
        "runs": n,
        "accuracy": sum(r.correct for r in results) / n,
        "action_accuracy": sum(r.action_correct for r in results) / n,
        "per_action": per_action,
        "schema_valid_rate": sum(r.schema_valid for r in results) / n,
        "rejected_rate": statuses.get("rejected", 0) / n,
        "failed_rate": statuses.get("failed", 0) / n,
        "rejected_reasons": dict(rejections),
        "failed_reasons": dict(failures),
        "decided_actions": dict(got_actions),
        "false_action_rate": sum(map(false_action, nones)) / len(nones) if nones else math.nan,
        "per_style": per_style(results),
        "strategies": dict(Counter(r.strategy or "-" for r in results)),
        "prompt_tokens_mean": sum(tokens) / len(results) if results else math.nan,
        "prompt_tokens_p95": percentile(tokens, 95) if tokens else 0.0,
        "run_ms_p50": percentile(run_ms, 50),
        "run_ms_p95": percentile(run_ms, 95),
        "llm_ms_p50": percentile(llm_ms, 50),
        "llm_ms_p95": percentile(llm_ms, 95),
    }


def print_report(label: str, results: list[Result], summary: dict[str, Any]) -> None:
    print(f"\n== {label}")
    print(f"{'scenario':<36} {'expected':<20} {'got':<20} {'status':<9} {'ms':>7}")
    for r in results:
        mark = "ok " if r.correct else "XX "
        print(
            f"{mark}{r.scenario[:33]:<33} {_show(r.expected):<20} {_show(r.got):<20} "
            f"{r.status:<9} {r.run_ms:7.0f}"
        )
    print()
    for action, row in summary["per_action"].items():
        print(
            f"accuracy {action:<8} {int(row['correct']):>3}/{int(row['n']):<3} "
            f"{row['accuracy'] * 100:5.1f} %"
        )
    print(
        f"accuracy overall  {summary['accuracy'] * 100:5.1f} %  (right action type only: "
        f"{summary['action_accuracy'] * 100:.1f} %)"
    )
    print(
        f"false actions     {summary['false_action_rate'] * 100:5.1f} %  (of the scenarios "
        "expecting none)"
    )
    print(f"schema-valid      {summary['schema_valid_rate'] * 100:5.1f} %")
    print(
        f"rejected          {summary['rejected_rate'] * 100:5.1f} %  {summary['rejected_reasons']}"
    )
    print(f"failed            {summary['failed_rate'] * 100:5.1f} %  {summary['failed_reasons']}")
    print(f"decided actions   {summary['decided_actions']}")
    print(f"decided by        {summary['strategies']}")
    print(
        f"prompt tokens     {summary['prompt_tokens_mean']:.0f} per decision "
        f"(p95 of calls {summary['prompt_tokens_p95']:.0f}; a decision without a call counts 0)"
    )
    print(f"\n{'style':<48} {'n':>3} {'accuracy':>9} {'false actions':>14}")
    for style, row in summary["per_style"].items():
        fa = row["false_action_rate"]
        shown = "-" if math.isnan(fa) else f"{fa * 100:.0f} % of {int(row['none_n'])}"
        print(f"{style[:48]:<48} {int(row['n']):>3} {row['accuracy'] * 100:8.1f} % {shown:>14}")
    print(
        f"latency run       p50 {summary['run_ms_p50']:.0f} ms  p95 {summary['run_ms_p95']:.0f} ms"
        f"   (LLM call p50 {summary['llm_ms_p50']:.0f} ms  p95 {summary['llm_ms_p95']:.0f} ms)"
    )


# --- main -------------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> int:
    sets = [(Path(folder), load_scenarios(Path(folder))) for folder in args.scenarios]
    if args.only:
        sets = [
            (f, [(p, s) for p, s in group if any(o in s.id for o in args.only)])
            for f, group in sets
        ]
    scenarios = [item for _, group in sets for item in group]
    inner, model = build_provider(args)
    provider = Borrowed(inner)
    overrides: dict[str, Any] = {}
    if args.temperature is not None:
        overrides["temperature"] = args.temperature
    if args.max_tokens is not None:
        overrides["max_tokens"] = args.max_tokens
    if args.strategy is not None:
        overrides["strategy"] = args.strategy
    health = await inner.health(model)
    label = f"{args.provider} {health.model}"
    print(
        f"provider {inner.name} at {inner.base_url}, model {health.model}: "
        f"reachable={health.reachable} {health.detail or ''}",
        file=sys.stderr,
    )
    results: list[Result] = []
    try:
        with tempfile.TemporaryDirectory(prefix="heartbeat-eval-") as tmp:
            for rep in range(args.repeat):
                for path, sc in scenarios:
                    result = await run_scenario(
                        sc, provider, model, Path(tmp), overrides, args.deadline
                    )
                    results.append(result)
                    if args.verbose:
                        print(
                            f"[{rep + 1}/{args.repeat}] {path.name}: {result.status} "
                            f"{_show(result.got)} replies={result.replies!r} "
                            f"error={result.error!r}",
                            file=sys.stderr,
                        )
    finally:
        await inner.aclose()
    if args.temperature is not None:
        label += f", temperature {args.temperature:g}"
    per_set: dict[str, dict[str, Any]] = {}
    for folder, group in sets:  # each folder is reported on its own, then all of them together
        ids = {sc.id for _, sc in group}
        rows = [r for r in results if r.scenario in ids]
        if rows and len(sets) > 1:
            per_set[str(folder)] = summarize(rows)
            shown = f"{label}, {folder.name}: {len(group)} scenarios x {args.repeat}"
            print_report(shown, rows, per_set[str(folder)])
    summary = summarize(results)
    print_report(f"{label}, {len(scenarios)} scenarios x {args.repeat}", results, summary)
    if args.json:
        payload = {
            "provider": args.provider,
            "model": health.model,
            "overrides": overrides,
            "summary": summary,
            "per_set": per_set,
            "results": [asdict(r) for r in results],
        }
        Path(args.json).write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--provider", choices=("embedded", "ollama", "openai", "oracle"), default="embedded"
    )
    parser.add_argument("--model", help="model name (embedded: a model name or a .gguf path)")
    parser.add_argument("--base-url", help="server address for ollama / openai")
    parser.add_argument("--api-key", help="bearer token for openai (or HEARTBEAT_LLM_API_KEY)")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=[str(REPO / "bench" / "eval")],
        help="one or more folders of scenario files, each reported on its own",
    )
    parser.add_argument("--only", nargs="*", help="run only scenarios whose id contains this")
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario")
    parser.add_argument("--temperature", type=float, help="override the config's temperature")
    parser.add_argument("--max-tokens", type=int, help="override the config's max_tokens")
    parser.add_argument(
        "--strategy", choices=("auto", "prompt", "procedure"), help="override the config's"
    )
    parser.add_argument("--seed", type=int, help="sampling seed (embedded)")
    parser.add_argument("--n-ctx", type=int, default=4096, help="context window (embedded)")
    parser.add_argument("--repeat-penalty", type=float, default=1.0, help="embedded sampling")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--json", help="write every result and the summary to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="each reply on stderr")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("heartbeat").setLevel(logging.ERROR)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
