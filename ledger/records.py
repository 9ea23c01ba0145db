"""Plain records returned by the store, and the names a run is recorded under.

Times are float POSIX seconds (UTC). The run's loop, trigger, status and reason are ``StrEnum``
types: each member is the exact string stored in ``runs`` and shown by the API, the events and
the dashboard, so a member compares equal to the string read back from the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

import msgspec


class Loop(StrEnum):
    """What kind of work a run did."""

    HEARTBEAT = "heartbeat"
    REFLECTION = "reflection"
    PERSONALITY = "personality"
    SELF_REPLY = "self_reply"


class Trigger(StrEnum):
    """Why a run started."""

    SCHEDULE = "schedule"
    MANUAL = "manual"
    CATCH_UP = "catch_up"  # one run for the slots missed while the service was down
    WAKE = "wake"  # a wake (``POST .../heartbeat/wake``), with the event's text
    LEDGER_EVENT = "ledger_event"  # a Ledger event the thread's config wakes on


class RunStatus(StrEnum):
    RUNNING = "running"
    OK = "ok"
    DRY_RUN = "dry_run"
    SKIPPED = "skipped"
    REJECTED = "rejected"  # the model decided something the review refused
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class Reason(StrEnum):
    """Why a run ended other than ``ok``: every code a run, a decision or the LLM client gives."""

    # the run itself
    OVERLAP = "overlap"  # skipped: the thread's previous run was still going
    MISSED = "missed"  # skipped: slots missed while down, coalesced into one catch-up
    EMPTY_INSTRUCTIONS = "empty_instructions"  # skipped: HEARTBEAT.md holds no instructions
    UNUSABLE_INSTRUCTIONS = "unusable_instructions"  # failed: HEARTBEAT.md cannot be used
    DUPLICATE = "duplicate"  # skipped: another run already stored the same journal result
    UNCHANGED = "unchanged"  # skipped: nothing the decision reads changed since the last one
    BUDGET = "budget"  # skipped: the beat would take the thread past its daily token budget
    USER_ACTIVE = "user_active"  # skipped: deferred, the user wrote in the thread just now
    REPEATED = "repeated"  # skipped: the same decision again on unchanged inputs (the breaker)
    PAUSED = "paused"  # skipped: the thread paused itself after repeated LLM failures
    DISABLED = "disabled"  # skipped: wakes held for a beat dropped, the heartbeat was disabled
    SHUTDOWN = "shutdown"  # interrupted: the service stopped
    PROCESS_DIED = "process_died"  # interrupted: found running after a crash
    START_UNCONFIRMED = "start_unconfirmed"  # interrupted: its start's COMMIT was cut
    TIMEOUT = "timeout"  # the run's deadline, or the LLM client's own
    INTERNAL_ERROR = "internal_error"  # a bug: the run crashed
    STORAGE_FAULT = "storage_fault"  # failed: the database's file or disk failed (error says)
    UNRECORDED = "unrecorded"  # failed: the database refused its outcome (decision kept)
    INVALID_OUTPUT = "invalid_output"  # failed: the reply holds no usable output
    # the model's decision, refused by the review (status ``rejected``)
    UNKNOWN_ACTION = "unknown_action"
    MISSING_FIELD = "missing_field"
    BAD_TYPE = "bad_type"
    BAD_VALUE = "bad_value"
    EMPTY_TITLE = "empty_title"
    EMPTY_CONTENT = "empty_content"
    EMPTY_POST_ID = "empty_post_id"
    BAD_VOTE_DIRECTION = "bad_vote_direction"
    UNKNOWN_POST = "unknown_post"
    # a reply that is not JSON at all (asked once more, then recorded as ``invalid_output``)
    NO_JSON = "no_json"
    BAD_JSON = "bad_json"
    # the LLM client (``loops.llm.ErrorReason``)
    UNREACHABLE = "unreachable"
    MODEL_MISSING = "model_missing"
    BUSY = "busy"
    BAD_REQUEST = "bad_request"
    AUTH = "auth"
    SERVER_ERROR = "server_error"
    STREAM_ERROR = "stream_error"
    TRUNCATED = "truncated"
    LENGTH = "length"
    BAD_RESPONSE = "bad_response"


class Thread(msgspec.Struct, kw_only=True):
    id: str
    title: str
    created_at: float
    updated_at: float
    config_json: str | None
    anchor: float | None
    next_run: float | None
    last_run: float | None
    last_summary: str | None
    last_actions: list[dict[str, Any]] | None


class Message(msgspec.Struct, kw_only=True):
    id: int
    thread_id: str
    role: str
    content: str
    created_at: float


class Contradiction(msgspec.Struct, kw_only=True):
    id: int
    thread_id: str
    statement_a: str
    statement_b: str
    status: str
    created_at: float


class Post(msgspec.Struct, kw_only=True):
    id: str
    author: str
    title: str
    content: str
    created_at: float
    score: int = 0
    comment_count: int = 0
    cursor: int = 0
    thread_id: str | None = None  # the thread whose run made the post (the agent's), else None


class Comment(msgspec.Struct, kw_only=True):
    id: str
    post_id: str
    author: str
    content: str
    created_at: float


class Vote(msgspec.Struct, kw_only=True):
    post_id: str
    voter: str
    direction: str
    created_at: float


class Run(msgspec.Struct, kw_only=True):
    """A row of ``runs`` as stored: ``loop``, ``trigger``, ``status`` and ``reason`` hold the
    strings of ``Loop``, ``Trigger``, ``RunStatus`` and ``Reason``."""

    id: int
    thread_id: str
    loop: str
    trigger: str
    slot: float | None
    status: str
    reason: str | None
    model: str | None
    action: str | None
    decision: dict[str, Any] | None
    executed: list[dict[str, Any]] | None
    summary: str | None
    dry_run: bool
    error: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    llm_ms: float | None
    started_at: float
    finished_at: float | None
    event_text: str | None = None  # what woke the run (a wake's or a Ledger event's text)


class PlanFix(NamedTuple):
    """A thread's planned anchor and next run, made from its stored config ``config_json``."""

    thread_id: str
    anchor: float | None
    next_run: float | None
    config_json: str | None


class Lease(NamedTuple):
    """A replica's lease on the database: its ``runs.owner``, when it started, when it last
    renewed the lease and when the lease runs out."""

    owner: str
    started_at: float
    renewed_at: float
    expires_at: float


class RunStart(msgspec.Struct, frozen=True, kw_only=True):
    """A ``runs`` row to insert: ``running`` (``Tx.start_run``, owned by the process ``owner``)
    or already finished (``Tx.record_run``: no owner; the outcome's model, if any, wins)."""

    thread_id: str
    loop: str
    trigger: str
    slot: float | None = None
    model: str | None = None
    dry_run: bool = False
    owner: str | None = None
    event_text: str | None = None  # what woke the run (a wake's or a Ledger event's text)


class NewReflection(msgspec.Struct, frozen=True, kw_only=True):
    """A reflection to store, covering its thread up to ``last_message_id``."""

    thread_id: str
    score: float
    summary: str
    notable: list[str]
    last_message_id: int
    run_id: int | None


class Reflection(NewReflection, frozen=True, kw_only=True):
    """A stored reflection: what was written, with its id and time."""

    id: int
    created_at: float


class NewProfile(msgspec.Struct, frozen=True, kw_only=True):
    """A personality profile to store as its thread's next version."""

    thread_id: str
    traits: list[str]
    tone: str
    interests: list[str]
    last_message_id: int
    run_id: int | None


class Profile(NewProfile, frozen=True, kw_only=True):
    """A stored profile: what was written, with its id, version and time."""

    id: int
    version: int
    created_at: float


class SelfReply(msgspec.Struct, kw_only=True):
    id: int
    reflection_id: int
    thread_id: str
    content: str
    run_id: int | None
    created_at: float


class RunChange(msgspec.Struct, frozen=True, array_like=True, tag="run"):
    """A run started (inserted ``running``) or finished, by ``writer`` (a store's own id)."""

    run_id: int
    thread_id: str
    started: bool
    writer: str


class InstructionsChange(msgspec.Struct, frozen=True, array_like=True, tag="instructions"):
    """A revision of HEARTBEAT.md saved, by ``writer``."""

    revision: int
    writer: str


class ChangeBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Changes of a shared database, in commit order. ``resumed``: the feed (re)connected just
    before them, and changes made while it was away were not told."""

    changes: list[RunChange | InstructionsChange]
    resumed: bool = False


class StoredInstructions(msgspec.Struct, frozen=True, kw_only=True):
    """A revision of HEARTBEAT.md kept in the database (revisions count up from 1)."""

    revision: int
    content: str
    saved_at: float


class BeatMemo(msgspec.Struct, kw_only=True):
    """What a thread's heartbeat remembers between beats: the inputs and decision of the last
    decided beat (for skipping and the breaker) and its run of LLM failures (for pausing)."""

    thread_id: str
    fingerprint: str | None = None  # of the last decided beat's inputs
    # the same inputs split (``loops.fingerprint.inputs``): all but the counted posts of others,
    # and a digest of each of those
    rest_fingerprint: str | None = None
    seen_posts: tuple[str, ...] | None = None
    decision_key: str | None = None  # the last decision that acted (``loops.spend``)
    repeats: int = 0  # how many decided beats in a row made it on the same inputs
    last_cost: int = 0  # tokens the last decided beat spent
    failure: str | None = None  # the kind (a ``Reason``) of the current run of failures
    failures: int = 0  # how many in a row
    paused: str | None = None  # why the thread paused itself; None while it beats
    pauses: int = 0  # probes failed since it paused (the back-off doubles with each)
    probe_at: float | None = None  # when a paused thread probes the LLM again
    paused_config: str | None = None  # the stored config when it paused (a change resumes it)


class BeatDay(msgspec.Struct, kw_only=True):
    """A thread's heartbeat runs of one local day: tokens spent, and runs by status and reason."""

    since: float
    tokens: int
    runs: dict[str, int]  # "status" or "status/reason" -> count


class RunOutcome(msgspec.Struct, kw_only=True):
    """Everything a finished run records in its history row."""

    status: RunStatus
    reason: Reason | None = None
    model: str | None = None
    action: str | None = None
    decision: dict[str, Any] | None = None
    executed: list[dict[str, Any]] | None = None
    summary: str | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    llm_ms: float | None = None


def iso(ts: float | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and a ``Z``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_to_dict(run: Run) -> dict[str, Any]:
    """A run as every API response and event shows it."""
    decision = run.decision or {}
    duration = (
        None if run.finished_at is None else round((run.finished_at - run.started_at) * 1000, 1)
    )
    return {
        "run_id": run.id,
        "thread_id": run.thread_id,
        "loop": run.loop,
        "trigger": run.trigger,
        "event_text": run.event_text,
        "status": run.status,
        "reason": run.reason,
        "action": run.action,
        "reasoning": decision.get("reasoning"),
        "decision": run.decision,
        "executed": run.executed,
        "dry_run": run.dry_run,
        "summary": run.summary,
        "model": run.model,
        "slot_at": iso(run.slot),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "error": run.error,
        "timings": {"llm_ms": run.llm_ms, "total_ms": duration},
        "tokens": {"prompt": run.prompt_tokens, "completion": run.completion_tokens},
    }


def shown(record: Any, fields: Sequence[str], *, id_as: str | None = None) -> dict[str, Any]:
    """A record as the API shows it: its ``id`` named ``id_as`` (none when None), then ``fields``
    in that order, each time (a field named ``*_at``) in ISO 8601."""
    out: dict[str, Any] = {} if id_as is None else {id_as: record.id}
    for name in fields:
        value = getattr(record, name)
        out[name] = iso(value) if name.endswith("_at") else value
    return out


def post_to_dict(post: Post) -> dict[str, Any]:
    return shown(
        post,
        ("author", "title", "content", "created_at", "score", "comment_count"),
        id_as="post_id",
    )


class RunContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a heartbeat run reads before it asks the model (one snapshot)."""

    messages: list[Message]
    contradictions: list[Contradiction]
    profile: Profile | None
    posts: list[Post]
    recent: list[Run]
