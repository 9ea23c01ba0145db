"""The heartbeat's runs: what differs from the other loops' (``loops.lifecycle`` does the rest).

A run reads HEARTBEAT.md (an empty one skips it), the thread's context and the Ledger, asks the
model for one decision (once more after a reply that is not JSON at all), reviews it against
the Ledger and carries it out. The Ledger effect and the run's history row commit in one
transaction, so after a crash there is never an action without its record nor a record
claiming an absent action. A thread runs one heartbeat at a time (``in_flight``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
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
from ledger.errors import Conflict, NotFound, RunEnded
from ledger.records import (
    Loop,
    Reason,
    Run,
    RunContext,
    RunOutcome,
    RunStatus,
    Thread,
    Trigger,
    run_to_dict,
)
from ledger.redact import redact
from ledger.reply import parse_reply
from ledger.storage.interface import AGENT, Storage, Tx
from loops import procedure, reader
from loops.clock import Clock
from loops.events import EventBus
from loops.facts import PostFacts
from loops.instructions import FileInstructions
from loops.instructions import Instructions as InstructionsSource
from loops.lifecycle import Chat, EndRun, Finish, Lifecycle, RunPlan, Work
from loops.llm import ChatRequest, ChatResult, LLMError, LLMProvider
from loops.prompt import (
    COMMENT_SCHEMA,
    Context,
    PostView,
    build_messages,
    clean_comment,
    comment_messages,
    describe_actions,
    format_age,
    parse_comment,
)
from loops.scheduler import skipped_overlap
from loops.thrift import BeatGate
from loops.tokens import TokenRelay
from loops.workspace import InstructionsUnusable

log = logging.getLogger(f"heartbeat.{__name__}")

COMMENT_TOKENS = 48  # the most a comment the procedure chose may take to write
# ... and the longest its writing may take: past it the comment gets a plain text instead (the
# decision stands; a beat must not wait on a slow model for its wording)
COMMENT_SECONDS = 8.0
# A reply that is not JSON at all is worth one more try.
_RETRY_PARSE = frozenset({Reason.NO_JSON, Reason.BAD_JSON})
# DecisionError reasons that mean "the model said something we refuse", not "garbage".
_REFUSALS = frozenset(
    {
        Reason.UNKNOWN_ACTION,
        Reason.MISSING_FIELD,
        Reason.BAD_TYPE,
        Reason.EMPTY_TITLE,
        Reason.EMPTY_CONTENT,
        Reason.UNKNOWN_POST,
    }
)

HeartbeatPlan = RunPlan[hbconfig.HeartbeatConfig]


class Asked(msgspec.Struct, frozen=True):
    """The ask step's answer: the decision and how it was reached (recorded with the run)."""

    decision: Decision
    strategy: str  # "prompt" or "procedure"
    rule: str | None = None  # the rule the procedure acted on
    facts: list[str] = msgspec.field(default_factory=list)
    text_by: str | None = None  # who wrote a chosen comment's text: "model" or "service"


class RunInFlight(Conflict, code="run_in_flight"):
    """A run for this thread is already in flight."""

    def __init__(self, thread_id: str, run_id: int) -> None:
        super().__init__(
            f"a heartbeat for thread {thread_id!r} is already running (run {run_id})",
            field="thread_id",
            extra={"run_id": run_id},
        )
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


class HeartbeatExecutor:
    """Starts heartbeat runs (manual ones, and those the scheduler claimed), one per thread."""

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
        instructions: InstructionsSource | None = None,
    ) -> None:
        self.store = store
        self._llm = llm
        self.opts = options
        self.in_flight: dict[str, int] = {}  # thread id -> run id (-1 while its row is written)
        self.on_idle: Callable[[str], None] | None = None  # told when a thread's run ended
        self.lifecycle = Lifecycle(store, lambda: self.llm, bus, limiter)
        gate = BeatGate(
            store, clock, lambda: self.llm, window=options.window, ledger_feed=options.ledger_feed
        )
        self.work = HeartbeatWork(
            store,
            bus,
            clock,
            options,
            http,
            gate,
            lambda: self.llm.name,
            instructions or FileInstructions(options.heartbeat_md),
        )

    @property
    def llm(self) -> LLMProvider:
        return self._llm() if callable(self._llm) else self._llm

    @property
    def llm_waiting(self) -> int:
        """Heartbeat runs waiting for LLM capacity now."""
        return self.lifecycle.llm_waiting

    def plan(
        self,
        thread: Thread,
        trigger: Trigger,
        slot: float | None = None,
        *,
        event: str | None = None,
    ) -> HeartbeatPlan:
        """What a heartbeat of ``thread`` needs, from its stored config."""
        cfg, warning = _stored_config(thread.config_json)
        if warning:
            log.warning(
                "[HEARTBEAT] stored config of thread %s replaced by defaults: %s",
                thread.id,
                warning,
            )
        return RunPlan(
            thread=thread,
            loop=Loop.HEARTBEAT,
            trigger=trigger,
            model=self.model_for(cfg),
            config=cfg,
            deadline=min(float(cfg.every_seconds), self.opts.run_deadline),
            dry_run=cfg.dry_run,
            slot=slot,
            event=event,
        )

    def model_for(self, cfg: hbconfig.HeartbeatConfig) -> str:
        return cfg.model or self.opts.default_model

    async def run(
        self,
        thread_id: str,
        trigger: Trigger = Trigger.MANUAL,
        *,
        slot: float | None = None,
        event: str | None = None,
    ) -> Run | None:
        """Run one heartbeat for ``thread_id`` now (told ``event``, the text of what woke it).

        Returns the finished run, or None when ``slot`` was already claimed (by another process).
        Raises ``RunInFlight`` when this thread is already running and ``NotFound`` for an
        unknown thread.
        """
        if thread_id in self.in_flight:
            raise RunInFlight(thread_id, self.in_flight[thread_id])
        self.in_flight[thread_id] = -1
        try:
            plan = await self.lifecycle.start(
                lambda tx: self.plan(_idle_thread(tx, thread_id), trigger, slot, event=event)
            )
            if plan is None:
                return None
            self.in_flight[thread_id] = plan.id
            return await self.lifecycle.run(plan, self.work)
        finally:
            self._idle(thread_id)

    async def run_claimed(self, plan: HeartbeatPlan) -> Run | None:
        """Carry out a run the scheduler claimed, whose ``running`` row it already wrote.

        If a manual run of the thread started in between, the claimed row is recorded as a
        skipped overlap instead.
        """
        busy = self.in_flight.get(plan.thread_id)
        if busy is not None:
            log.info(
                "[HEARTBEAT] slot for thread %s skipped: run %d in flight", plan.thread_id, busy
            )
            skipped = skipped_overlap(plan.model)
            with contextlib.suppress(RunEnded):  # ended already: this replica's lease ran out
                await self.store.write(lambda tx: tx.finish_run(plan.id, skipped))
            return None
        self.in_flight[plan.thread_id] = plan.id
        try:
            return await self.lifecycle.run(plan, self.work)
        finally:
            self._idle(plan.thread_id)

    def _idle(self, thread_id: str) -> None:
        self.in_flight.pop(thread_id, None)
        if self.on_idle is not None:
            self.on_idle(thread_id)


def _idle_thread(tx: Tx, thread_id: str) -> Thread:
    """The thread, if no heartbeat of it is in flight on another replica (else ``RunInFlight``)."""
    thread = tx.get_thread(thread_id)
    running = tx.running_heartbeat(thread_id)
    if running is not None:
        raise RunInFlight(thread_id, running)
    return thread


class HeartbeatWork(Work[hbconfig.HeartbeatConfig, Instructions, Asked, Decision]):
    """The heartbeat's steps of a run (see ``loops.lifecycle.Work``)."""

    def __init__(
        self,
        store: Storage,
        bus: EventBus,
        clock: Clock,
        options: ExecutorOptions,
        http: httpx.AsyncClient | None,
        gate: BeatGate,
        provider: Callable[[], str],
        instructions: InstructionsSource,
    ) -> None:
        self.store, self.bus, self.clock, self.opts, self.http = store, bus, clock, options, http
        self.gate = gate
        self.provider = provider  # the name of the provider runs call now
        self._instructions = instructions  # the workspace file, or the database's revisions

    async def precheck(self, run: HeartbeatPlan) -> Instructions:
        log.info(
            "[HEARTBEAT] Starting heartbeat for thread %s (run %d, %s)",
            run.thread_id,
            run.id,
            run.trigger,
        )
        try:
            found = await self._instructions.read()
        except InstructionsUnusable as err:
            log.warning("[HEARTBEAT] thread %s not run: %s", run.thread_id, err.message)
            outcome = RunOutcome(
                status=RunStatus.FAILED, reason=Reason.UNUSABLE_INSTRUCTIONS, error=err.message
            )
            raise EndRun(outcome) from err
        instructions = _parsed(found[0] if found else "")
        if found is not None and instructions.is_empty:
            log.info("[HEARTBEAT] HEARTBEAT.md is empty; skipping thread %s", run.thread_id)
            raise EndRun(
                RunOutcome(
                    status=RunStatus.SKIPPED,
                    reason=Reason.EMPTY_INSTRUCTIONS,
                    summary="skipped: HEARTBEAT.md has no instructions",
                )
            )
        await self.gate.admit(run, instructions.raw, (run.event,) if run.event else ())
        return instructions

    async def ask(self, run: HeartbeatPlan, prepared: Instructions, chat: Chat) -> Asked:
        """The decision, by the procedure the thread's config and the provider call for."""
        strategy = procedure.pick_strategy(run.config.strategy, self.provider())
        if strategy == "procedure":
            return await self.ask_procedure(run, prepared, chat)
        return Asked(await self.ask_prompt(run, prepared, chat), "prompt")

    async def ask_procedure(self, run: HeartbeatPlan, prepared: Instructions, chat: Chat) -> Asked:
        """Rule by rule against the computed facts; the model writes a chosen comment's text."""
        log.info("[HEARTBEAT] Going through the rules for thread %s", run.thread_id)
        found = await self.store.run_context(
            run.thread_id, messages=self.opts.window, posts=self.opts.ledger_feed
        )
        self.gate.seen(run, found)
        posts, now = procedure.read_context(
            found, self.clock.now(), run.config.timezone, prepared.raw, run.thread_id
        )
        choice = procedure.choose(reader.rules_of(prepared), posts, now)
        if choice is None:
            why = "no rule applies to the posts and messages right now"
            return Asked(NoneDecision(reasoning=why), "procedure")
        why = procedure.reasoning(choice)
        asked = functools.partial(Asked, strategy="procedure", rule=choice.rule.text)
        post = choice.post
        if choice.kind == "vote" and post is not None:
            direction = choice.direction or "up"
            vote = VoteDecision(post_id=post.post_id, vote_direction=direction, reasoning=why)
            return asked(vote, facts=choice.facts)
        if choice.kind == "comment" and post is not None:
            content = await self._write_comment(run, chat, post, choice.rule.text, found)
            written = content is not None
            content = content or procedure.plain_comment(choice)
            comment = CommentDecision(post_id=post.post_id, content=content, reasoning=why)
            return asked(comment, facts=choice.facts, text_by="model" if written else "service")
        title, content = procedure.post_text(choice, posts, now)
        return asked(PostDecision(title=title, content=content, reasoning=why), facts=choice.facts)

    async def _write_comment(
        self, run: HeartbeatPlan, chat: Chat, post: PostFacts, task: str, found: RunContext
    ) -> str | None:
        """The model's text for a comment already decided on; None when it wrote none in time."""
        content = next((p.content for p in found.posts if p.id == post.post_id), "")
        request = ChatRequest(
            model=run.model,
            messages=comment_messages(post.author, post.title, content, task),
            schema=COMMENT_SCHEMA,
            temperature=run.config.temperature,
            max_tokens=min(run.config.max_tokens, COMMENT_TOKENS),
        )
        relay = TokenRelay(self.bus, run.id, run.thread_id, self.clock)
        try:
            result = await asyncio.wait_for(chat(request, on_token=relay), COMMENT_SECONDS)
            return clean_comment(parse_comment(result.text), (post.title, task)) or None
        except (LLMError, TimeoutError) as err:  # the decision stands; only its wording is lost
            log.warning("[HEARTBEAT] the comment's text was not written: %r", err)
            return None
        finally:
            relay.flush()

    async def ask_prompt(self, run: HeartbeatPlan, prepared: Instructions, chat: Chat) -> Decision:
        """The LLM call, asked once more after a reply that is not JSON at all."""
        log.info("[HEARTBEAT] Gathering context for thread %s", run.thread_id)
        cfg = run.config
        ctx = await self.gather_context(run, cfg.timezone)
        ctx.events = [run.event] if run.event else []
        schema = decision_schema([p.id for p in ctx.ledger])
        request = ChatRequest(
            model=run.model,
            messages=build_messages(prepared, ctx, schema),
            schema=schema,
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
        )
        relay = TokenRelay(self.bus, run.id, run.thread_id, self.clock)
        for attempt in (1, 2):
            try:
                result = await chat(request, on_token=relay)
            finally:
                relay.flush()
            try:
                return parse_reply(result.text)
            except DecisionError as err:
                if err.reason in _RETRY_PARSE and attempt == 1:
                    log.warning(
                        "[HEARTBEAT] unusable LLM reply (%s); asking once more", err.message
                    )
                    relay.reset()
                    continue
                log.warning("[HEARTBEAT] Validation failed: %s", err.message)
                raise EndRun(_unusable(err, result)) from None
        raise AssertionError("unreachable")  # pragma: no cover - the second attempt returns

    async def judge(self, run: HeartbeatPlan, asked: Asked) -> Finish[Decision]:
        """Review the decision against the Ledger; a dry run stops short of the effect. The
        decision is recorded with the procedure that reached it (and its rule and facts)."""
        answer = asked.decision
        how: dict[str, Any] = {"strategy": asked.strategy}
        if asked.rule is not None:
            how |= {"rule": asked.rule, "facts": asked.facts}
        if asked.text_by is not None:
            how["text_by"] = asked.text_by
        raw = decision_to_dict(answer) | how
        log.info("[HEARTBEAT] LLM decision: %s", summarize(answer))
        self.bus.publish(
            "decision",
            {"run_id": run.id, "thread_id": run.thread_id, "decision": raw},
            thread_id=run.thread_id,
        )
        post_ids: set[str] = set()
        if isinstance(answer, CommentDecision | VoteDecision):
            pid = answer.post_id.strip()
            if await self.store.post_exists(pid):
                post_ids.add(pid)
        verdict = review(answer, post_ids.__contains__)
        if not verdict.accepted or verdict.decision is None:
            log.warning("[HEARTBEAT] Validation failed: %s", verdict.message)
            return Finish(
                RunOutcome(
                    status=RunStatus.REJECTED,
                    reason=None if verdict.reason is None else Reason(verdict.reason),
                    action=raw.get("action"),
                    decision=raw,
                    error=verdict.message,
                    summary=f"rejected: {verdict.message}",
                )
            )
        log.info("[HEARTBEAT] Validation passed")
        final = verdict.decision
        decided = decision_to_dict(final) | how
        if verdict.truncated:
            decided["truncated"] = list(verdict.truncated)
        summary = summarize(final)
        if run.dry_run:
            if not isinstance(final, NoneDecision):
                log.info("[HEARTBEAT] DRY RUN: would %s", summary)
            return Finish(
                RunOutcome(
                    status=RunStatus.DRY_RUN,
                    action=decided["action"],
                    decision=decided,
                    executed=[],
                    summary=f"DRY RUN: would {summary}",
                )
            )
        outcome = RunOutcome(
            status=RunStatus.OK, action=decided["action"], decision=decided, summary=summary
        )
        return Finish(outcome, final)

    def write(self, tx: Tx, run: HeartbeatPlan, finish: Finish[Decision]) -> RunOutcome:
        """Carry out the decision's Ledger effect and note the run on the thread."""
        settled = self.gate.settle(tx, run, finish.outcome)
        if settled is not finish.outcome:  # the breaker stopped the decision
            finish = Finish(settled)
        outcome, effect, run_id = finish.outcome, finish.effect, run.id
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
        if effect is not None and not isinstance(effect, NoneDecision):
            if run.config.target == "last":
                note = outcome.summary or ""
                if effect.reasoning:
                    note = f"{note} — {effect.reasoning}"
                tx.add_message(run.thread_id, "assistant", f"[heartbeat] {note}", run_id)
                executed.append({"type": "message", "target": "last"})
        if effect is not None:
            outcome = msgspec.structs.replace(outcome, executed=executed)
        tx.note_heartbeat(run.thread_id, outcome.summary, executed)
        return outcome

    def effect_refused(
        self, run: HeartbeatPlan, finish: Finish[Decision], exc: Exception
    ) -> RunOutcome | None:
        if not isinstance(exc, NotFound):
            return None
        # the post vanished between the review and the effect
        return RunOutcome(
            status=RunStatus.REJECTED,
            reason=Reason.UNKNOWN_POST,
            action=finish.outcome.action,
            decision=finish.outcome.decision,
            error=exc.message,
            summary=f"rejected: {exc.message}",
        )

    async def finished(self, run: HeartbeatPlan, row: Run, finish: Finish[Decision]) -> None:
        self.gate.forget(run.id)
        log.info(
            "[HEARTBEAT] Heartbeat completed for thread %s: %s (%s)",
            run.thread_id,
            row.summary or row.reason or row.status,
            row.status,
        )
        target = run.config.target
        if finish.effect is not None and target in self.opts.channels:
            await self._notify(self.opts.channels[target], run_to_dict(row))

    async def gather_context(self, run: HeartbeatPlan, tz: str) -> Context:
        thread_id, title, now = run.thread_id, run.thread.title, self.clock.now()
        found = await self.store.run_context(
            thread_id, messages=self.opts.window, posts=self.opts.ledger_feed
        )
        self.gate.seen(run, found)
        local = datetime.fromtimestamp(now, ZoneInfo(tz))
        profile = found.profile
        return Context(
            thread_id=thread_id,
            thread_title=title,
            local_time=local.strftime("%A %Y-%m-%d %H:%M"),
            timezone=tz,
            messages=[{"role": m.role, "content": m.content} for m in found.messages],
            contradictions=[{"a": c.statement_a, "b": c.statement_b} for c in found.contradictions],
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
                for p in found.posts
            ],
            recent_actions=describe_actions([r.decision for r in found.recent if r.decision]),
        )

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
        except httpx.HTTPError as exc:  # the webhook's URL is its secret: only its host shown
            log.warning(
                "[HEARTBEAT] channel webhook at %s failed for run %s: %s",
                httpx.URL(url).host,
                view["run_id"],
                redact(str(exc), [url]),
            )


@functools.lru_cache(maxsize=4)
def _parsed(text: str) -> Instructions:
    """HEARTBEAT.md parsed (the text rarely changes between runs; the result is frozen)."""
    return parse_instructions(text)


@functools.lru_cache(maxsize=4096)
def _stored_config(config_json: str | None) -> tuple[hbconfig.HeartbeatConfig, str | None]:
    """A stored config decoded (many threads share one text; nothing changes a decoded one)."""
    return hbconfig.decode_stored(config_json)


def _unusable(err: DecisionError, result: ChatResult) -> RunOutcome:
    """The outcome of a reply that holds no decision: refused, or garbage."""
    error = f"{err.message}; reply was: {result.text[:300]!r}"
    if err.reason in _REFUSALS:
        return RunOutcome(status=RunStatus.REJECTED, reason=Reason(err.reason), error=error)
    return RunOutcome(status=RunStatus.FAILED, reason=Reason.INVALID_OUTPUT, error=error)
