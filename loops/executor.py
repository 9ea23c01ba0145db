"""One heartbeat run, end to end: context → prompt → LLM → parse → review → execute → record.

The Ledger effect and the run's history row commit in one transaction, so after a crash there is
never an action without its record nor a record claiming an absent action.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import msgspec

from heartbeat_md import Instructions
from heartbeat_md import parse as parse_instructions
from ledger import config as hbconfig
from ledger.decisions import (
    CommentDecision,
    Decision,
    DecisionError,
    NoneDecision,
    PostDecision,
    VoteDecision,
    as_written,
    decision_schema,
    decision_to_dict,
    review,
    summarize,
)
from ledger.errors import NotFound
from ledger.records import Run, RunOutcome, Thread, run_to_dict
from ledger.reply import parse_reply
from ledger.storage.interface import AGENT, Storage, Tx
from loops.clock import Clock
from loops.events import EventBus
from loops.llm import ChatRequest, LLMError, LLMProvider
from loops.prompt import Context, PostView, build_messages, describe_actions, format_age
from loops.workspace import InstructionsFile

log = logging.getLogger("heartbeat")

LOOP = "heartbeat"
TOKEN_FLUSH_SECONDS = 0.1
# A reply that is not JSON at all is worth one more try (llm_protocols §6.2).
_RETRY_PARSE = frozenset({"no_json", "bad_json"})
# DecisionError reasons that mean "the model said something we refuse", not "garbage".
_REFUSALS = frozenset(
    {"unknown_action", "missing_field", "bad_type", "empty_title", "empty_content", "unknown_post"}
)


class RunInFlight(Exception):
    """A run for this thread is already in flight."""

    def __init__(self, thread_id: str, run_id: int) -> None:
        super().__init__(f"a heartbeat for thread {thread_id!r} is already running (run {run_id})")
        self.thread_id = thread_id
        self.run_id = run_id


@dataclass
class ExecutorOptions:
    heartbeat_md: Path
    default_model: str
    window: int = 20
    channels: dict[str, str] = field(default_factory=dict)
    run_deadline: float = 300.0
    ledger_feed: int = 15


class _Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _TokenRelay:
    """Forwards streamed text to the event bus, coalesced to one event per flush interval."""

    def __init__(self, bus: EventBus, run_id: int, thread_id: str, clock: Clock) -> None:
        self.bus, self.run_id, self.thread_id, self.clock = bus, run_id, thread_id, clock
        self.buf: list[str] = []
        self.last = clock.monotonic()

    def __call__(self, text: str) -> None:
        self.buf.append(text)
        if self.clock.monotonic() - self.last >= TOKEN_FLUSH_SECONDS:
            self.flush()

    def reset(self) -> None:
        """Tell viewers to discard the text streamed so far (the model is asked again)."""
        self.buf.clear()
        if self.bus.subscriber_count:
            self.bus.publish(
                "token",
                {"run_id": self.run_id, "thread_id": self.thread_id, "text": "", "reset": True},
                thread_id=self.thread_id,
            )

    def flush(self) -> None:
        if self.buf and self.bus.subscriber_count:
            self.bus.publish(
                "token",
                {"run_id": self.run_id, "thread_id": self.thread_id, "text": "".join(self.buf)},
                thread_id=self.thread_id,
            )
        self.buf.clear()
        self.last = self.clock.monotonic()


class HeartbeatExecutor:
    def __init__(
        self,
        store: Storage,
        llm: Callable[[], LLMProvider] | LLMProvider,
        bus: EventBus,
        clock: Clock,
        options: ExecutorOptions,
        *,
        limiter: asyncio.Semaphore,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.store = store
        self._llm = llm
        self.bus = bus
        self.clock = clock
        self.opts = options
        self.limiter = limiter
        self.http = http
        self.in_flight: dict[str, int] = {}
        self._instructions_file = InstructionsFile(options.heartbeat_md)
        self.llm_waiting = 0

    @property
    def llm(self) -> LLMProvider:
        return self._llm() if callable(self._llm) else self._llm

    async def run(
        self, thread_id: str, trigger: str = "manual", *, slot: float | None = None
    ) -> Run | None:
        """Run one heartbeat for ``thread_id`` now.

        Returns the finished run, or None when ``slot`` was already claimed (by another process).
        Raises ``RunInFlight`` when this thread is already running and ``NotFound`` for an
        unknown thread.
        """
        if thread_id in self.in_flight:
            raise RunInFlight(thread_id, self.in_flight[thread_id])
        self.in_flight[thread_id] = -1
        owner = self.store.owner

        def start(tx: Tx) -> tuple[Thread, hbconfig.HeartbeatConfig, str, int | None]:
            thread = tx.get_thread(thread_id)
            cfg, model = self._config(thread)
            run_id = tx.start_run(
                thread_id, LOOP, trigger, slot=slot, model=model, dry_run=cfg.dry_run, owner=owner
            )
            return thread, cfg, model, run_id

        try:
            thread, cfg, model, run_id = await self.store.write(start)
            if run_id is None:
                return None
            return await self._execute(thread, cfg, model, run_id, trigger)
        finally:
            self.in_flight.pop(thread_id, None)

    async def run_claimed(self, thread: Thread, trigger: str, run_id: int) -> Run | None:
        """Carry out a run the scheduler claimed, whose ``running`` row it already wrote.

        If a manual run of the thread started in between, the claimed row is recorded as a
        skipped overlap instead.
        """
        cfg, model = self._config(thread)
        busy = self.in_flight.get(thread.id)
        if busy is not None:
            log.info("[HEARTBEAT] slot for thread %s skipped: run %d in flight", thread.id, busy)
            skipped = RunOutcome(
                status="skipped",
                reason="overlap",
                model=model,
                summary="skipped: the previous run was still going",
            )
            await self.store.write(lambda tx: tx.finish_run(run_id, skipped))
            return None
        self.in_flight[thread.id] = run_id
        try:
            return await self._execute(thread, cfg, model, run_id, trigger)
        finally:
            self.in_flight.pop(thread.id, None)

    def _config(self, thread: Thread) -> tuple[hbconfig.HeartbeatConfig, str]:
        cfg, warning = hbconfig.decode_stored(thread.config_json)
        if warning:
            log.warning(
                "[HEARTBEAT] stored config of thread %s replaced by defaults: %s",
                thread.id,
                warning,
            )
        return cfg, self.model_for(cfg)

    def model_for(self, cfg: hbconfig.HeartbeatConfig) -> str:
        return cfg.model or self.opts.default_model

    async def _execute(
        self, thread: Thread, cfg: hbconfig.HeartbeatConfig, model: str, run_id: int, trigger: str
    ) -> Run:
        thread_id = thread.id
        self.in_flight[thread_id] = run_id
        log.info(
            "[HEARTBEAT] Starting heartbeat for thread %s (run %d, %s)", thread_id, run_id, trigger
        )
        self.bus.publish(
            "run_started",
            {
                "run_id": run_id,
                "thread_id": thread_id,
                "loop": LOOP,
                "trigger": trigger,
                "model": model,
                "dry_run": cfg.dry_run,
            },
            thread_id=thread_id,
        )
        deadline = min(float(cfg.every_seconds), self.opts.run_deadline)
        started = self.clock.monotonic()
        try:
            async with asyncio.timeout(deadline):
                outcome, effect = await self._decide(
                    thread_id, thread.title, cfg, model, run_id, deadline, started
                )
        except TimeoutError:
            error = f"the run passed its deadline of {deadline:g} s and was cancelled"
            outcome, effect = _failed(model, "timeout", error), None
        except asyncio.CancelledError:
            await asyncio.shield(self.store.interrupt_run(run_id, model))
            raise
        except Exception as exc:  # one bad run never stops the loop
            log.exception("[HEARTBEAT] run %d for thread %s crashed", run_id, thread_id)
            outcome, effect = _failed(model, "internal_error", f"{type(exc).__name__}: {exc}"), None
        return await self._commit(thread_id, run_id, cfg, outcome, effect)

    # -- deciding ------------------------------------------------------------------------
    async def _decide(
        self,
        thread_id: str,
        title: str,
        cfg: hbconfig.HeartbeatConfig,
        model: str,
        run_id: int,
        deadline: float,
        started: float,
    ) -> tuple[RunOutcome, Decision | None]:
        found = await self._instructions_file.read()
        instructions = _parsed(found[0] if found else "")
        if found is not None and instructions.is_empty:
            log.info("[HEARTBEAT] HEARTBEAT.md is empty; skipping thread %s", thread_id)
            return RunOutcome(
                status="skipped",
                reason="empty_instructions",
                model=model,
                summary="skipped: HEARTBEAT.md has no instructions",
            ), None
        # Wait for LLM capacity before reading the context: runs queued behind the limit do
        # not crowd the readers (the API reads there too), and the context is fresh.
        self.llm_waiting += 1
        try:
            await self.limiter.acquire()
        finally:
            self.llm_waiting -= 1
        try:
            log.info("[HEARTBEAT] Gathering context for thread %s", thread_id)
            ctx = await self.gather_context(thread_id, title, cfg.timezone)
            answer = await self._ask(instructions, ctx, cfg, model, run_id, deadline, started)
        finally:
            self.limiter.release()
        if isinstance(answer, RunOutcome):
            return answer, None
        decision, prompt_tokens, completion_tokens, llm_ms = answer
        raw = decision_to_dict(decision)
        log.info("[HEARTBEAT] LLM decision: %s", summarize(decision))
        self.bus.publish(
            "decision",
            {"run_id": run_id, "thread_id": thread_id, "decision": raw},
            thread_id=thread_id,
        )
        post_ids: set[str] = set()
        if isinstance(decision, CommentDecision | VoteDecision):
            pid = decision.post_id.strip()
            if await self.store.post_exists(pid):
                post_ids.add(pid)
        verdict = review(decision, post_ids.__contains__)
        common: dict[str, Any] = {
            "model": model,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "llm_ms": round(llm_ms, 1),
        }
        if not verdict.accepted or verdict.decision is None:
            log.warning("[HEARTBEAT] Validation failed: %s", verdict.message)
            return RunOutcome(
                status="rejected",
                reason=verdict.reason,
                action=raw.get("action"),
                decision=raw,
                error=verdict.message,
                summary=f"rejected: {verdict.message}",
                **common,
            ), None
        log.info("[HEARTBEAT] Validation passed")
        final = verdict.decision
        decided = decision_to_dict(final)
        if verdict.truncated:
            decided["truncated"] = list(verdict.truncated)
        summary = summarize(final)
        if cfg.dry_run:
            if not isinstance(final, NoneDecision):
                log.info("[HEARTBEAT] DRY RUN: would %s", summary)
            return RunOutcome(
                status="dry_run",
                action=decided["action"],
                decision=decided,
                executed=[],
                summary=f"DRY RUN: would {summary}",
                **common,
            ), None
        return RunOutcome(
            status="ok", action=decided["action"], decision=decided, summary=summary, **common
        ), final

    async def _ask(
        self,
        instructions: Instructions,
        ctx: Context,
        cfg: hbconfig.HeartbeatConfig,
        model: str,
        run_id: int,
        deadline: float,
        started: float,
    ) -> RunOutcome | tuple[Decision, int | None, int | None, float]:
        """The LLM call, asked once more after a reply that is not JSON at all.

        Returns the decision with token counts and LLM time, or the failed run's outcome.
        """
        thread_id = ctx.thread_id
        schema = decision_schema([p.id for p in ctx.ledger])
        request = ChatRequest(
            model=model,
            messages=build_messages(instructions, ctx, schema),
            schema=schema,
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
        )
        relay = _TokenRelay(self.bus, run_id, thread_id, self.clock)
        llm_ms = 0.0
        for attempt in (1, 2):
            remaining = deadline - (self.clock.monotonic() - started)
            t0 = time.perf_counter()
            try:
                result = await self.llm.chat(request, on_token=relay, deadline=remaining)
            except LLMError as err:
                log.warning("[HEARTBEAT] LLM call failed for thread %s: %s", thread_id, err.message)
                llm_ms += (time.perf_counter() - t0) * 1000
                return RunOutcome(
                    status="failed",
                    reason=err.reason,
                    model=model,
                    error=err.message,
                    llm_ms=round(llm_ms, 1),
                )
            finally:
                relay.flush()
            llm_ms += (time.perf_counter() - t0) * 1000
            try:
                return (
                    parse_reply(result.text),
                    result.prompt_tokens,
                    result.completion_tokens,
                    llm_ms,
                )
            except DecisionError as err:
                if err.reason in _RETRY_PARSE and attempt == 1:
                    log.warning(
                        "[HEARTBEAT] unusable LLM reply (%s); asking once more", err.message
                    )
                    relay.reset()
                    continue
                status = "rejected" if err.reason in _REFUSALS else "failed"
                reason = err.reason if status == "rejected" else "invalid_output"
                log.warning("[HEARTBEAT] Validation failed: %s", err.message)
                return RunOutcome(
                    status=status,
                    reason=reason,
                    model=model,
                    error=f"{err.message}; reply was: {result.text[:300]!r}",
                    prompt_tokens=result.prompt_tokens,
                    completion_tokens=result.completion_tokens,
                    llm_ms=round(llm_ms, 1),
                )
        raise AssertionError("unreachable")  # pragma: no cover - the second attempt returns

    async def gather_context(self, thread_id: str, title: str, tz: str) -> Context:
        now = self.clock.now()
        found = await self.store.run_context(
            thread_id, messages=self.opts.window, posts=self.opts.ledger_feed
        )
        messages, contradictions, profile, posts, recent = (
            found.messages,
            found.contradictions,
            found.profile,
            found.posts,
            found.recent,
        )
        local = datetime.fromtimestamp(now, ZoneInfo(tz))
        return Context(
            thread_id=thread_id,
            thread_title=title,
            local_time=local.strftime("%A %Y-%m-%d %H:%M"),
            timezone=tz,
            messages=[{"role": m.role, "content": m.content} for m in messages],
            contradictions=[{"a": c.statement_a, "b": c.statement_b} for c in contradictions],
            personality=None
            if profile is None
            else {
                "traits": profile.traits,
                "tone": profile.tone,
                "interests": profile.interests,
            },
            ledger=[
                PostView(
                    id=p.id,
                    author=p.author,
                    title=as_written(p.title) if p.author == AGENT else p.title,
                    score=p.score,
                    comment_count=p.comment_count,
                    age=format_age(now - p.created_at),
                    content=as_written(p.content) if p.author == AGENT else p.content,
                )
                for p in posts
            ],
            recent_actions=describe_actions([r.decision for r in recent if r.decision]),
        )

    # -- recording -----------------------------------------------------------------------
    async def _commit(
        self,
        thread_id: str,
        run_id: int,
        cfg: hbconfig.HeartbeatConfig,
        outcome: RunOutcome,
        effect: Decision | None,
    ) -> Run:
        try:
            run = await self.store.write(
                partial(_record, thread_id, run_id, cfg.target, outcome, effect)
            )
        except NotFound as gone:  # the post vanished between review and execution
            outcome = RunOutcome(
                status="rejected",
                reason="unknown_post",
                model=outcome.model,
                action=outcome.action,
                decision=outcome.decision,
                error=gone.message,
                summary=f"rejected: {gone.message}",
            )
            run = await self.store.write(
                partial(_record, thread_id, run_id, cfg.target, outcome, None)
            )
        view = run_to_dict(run)
        log.info(
            "[HEARTBEAT] Heartbeat completed for thread %s: %s (%s)",
            thread_id,
            run.summary or run.reason or run.status,
            run.status,
        )
        self.bus.publish("run_finished", view, id=run.id, thread_id=thread_id)
        if effect is not None and cfg.target in self.opts.channels:
            await self._notify(self.opts.channels[cfg.target], view)
        return run

    async def _notify(self, url: str, view: dict[str, Any]) -> None:
        if self.http is None:
            return
        body = {
            k: view[k]
            for k in (
                "run_id",
                "thread_id",
                "status",
                "action",
                "summary",
                "reasoning",
                "finished_at",
            )
        }
        try:
            resp = await self.http.post(url, json=body, timeout=10.0)
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("[HEARTBEAT] channel webhook failed for run %s: %s", view["run_id"], exc)


@functools.lru_cache(maxsize=4)
def _parsed(text: str) -> Instructions:
    """HEARTBEAT.md parsed (the text rarely changes between runs; the result is frozen)."""
    return parse_instructions(text)


def _failed(model: str, reason: str, error: str) -> RunOutcome:
    return RunOutcome(status="failed", reason=reason, model=model, error=error)


def _record(
    thread_id: str,
    run_id: int,
    target: str,
    outcome: RunOutcome,
    effect: Decision | None,
    tx: Tx,
) -> Run:
    """Carry out the decision's Ledger effect and finish the run's row, in one transaction."""
    executed: list[dict[str, Any]] = []
    match effect:
        case PostDecision(title=title, content=content):
            log.info("[HEARTBEAT] Creating post: %s", title)
            post = tx.create_post(AGENT, title, content, run_id)
            executed.append({"type": "post", "post_id": post.id})
        case CommentDecision(post_id=post_id, content=content):
            log.info("[HEARTBEAT] Commenting on post %s", post_id)
            comment = tx.add_comment(post_id, AGENT, content, run_id)
            executed.append({"type": "comment", "post_id": post_id, "comment_id": comment.id})
        case VoteDecision(post_id=post_id, vote_direction=direction):
            log.info("[HEARTBEAT] Voting %s on post %s", direction, post_id)
            tx.vote(post_id, AGENT, direction, run_id)
            executed.append({"type": "vote", "post_id": post_id, "direction": direction})
        case _:
            pass
    if effect is not None and not isinstance(effect, NoneDecision) and target == "last":
        note = outcome.summary or ""
        if effect.reasoning:
            note = f"{note} — {effect.reasoning}"
        tx.add_message(thread_id, "assistant", f"[heartbeat] {note}", run_id)
        executed.append({"type": "message", "target": "last"})
    if effect is not None:
        outcome = msgspec.structs.replace(outcome, executed=executed)
    tx.note_heartbeat(thread_id, outcome.summary, executed)
    return tx.finish_run(run_id, outcome)
