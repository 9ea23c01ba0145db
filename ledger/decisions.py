"""Heartbeat decisions: the tagged union, its JSON schema, review (validation and sanitizing),
summaries. Turning an LLM reply into a decision is ``ledger.reply``.

Pure: ``review`` asks about posts through the ``post_exists`` callable it is given.

DecisionError (ValueError)   a reply that does not hold a well-formed decision
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

import msgspec

from ledger.errors import HeartbeatError
from ledger.limits import CONTENT_MAX, TITLE_MAX

__all__ = [
    "CONTENT_MAX",
    "DECISION_SCHEMA",
    "REASONING_MAX",
    "TITLE_MAX",
    "CommentDecision",
    "Decision",
    "DecisionError",
    "NoneDecision",
    "PostDecision",
    "Verdict",
    "VoteDecision",
    "as_written",
    "decision_schema",
    "decision_to_dict",
    "review",
    "summarize",
]

REASONING_MAX: Final = 2000
POST_ID_MAX: Final = 200
SUMMARY_MAX: Final = 200


class _Decision(msgspec.Struct, tag_field="action", frozen=True):
    """Shared base: the ``action`` key carries the tag; unknown keys are ignored."""


class PostDecision(_Decision, tag="post", frozen=True):
    title: str
    content: str
    reasoning: str = ""


class CommentDecision(_Decision, tag="comment", frozen=True):
    post_id: str
    content: str
    reasoning: str = ""


class VoteDecision(_Decision, tag="vote", frozen=True):
    post_id: str
    vote_direction: Literal["up", "down"]
    reasoning: str = ""


class NoneDecision(_Decision, tag="none", frozen=True):
    reasoning: str = ""


Decision = PostDecision | CommentDecision | VoteDecision | NoneDecision


def _text(max_length: int, min_length: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "maxLength": max_length}
    if min_length:
        schema["minLength"] = min_length
    return schema


def _shape(action: str, required: dict[str, dict[str, Any]]) -> dict[str, Any]:
    properties = {
        "action": {"type": "string", "enum": [action]},
        **required,
        "reasoning": _text(REASONING_MAX),
    }
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


DECISION_SCHEMA: Final[dict[str, Any]] = {
    "anyOf": [
        _shape("post", {"title": _text(TITLE_MAX, 1), "content": _text(CONTENT_MAX, 1)}),
        _shape("comment", {"post_id": _text(POST_ID_MAX, 1), "content": _text(CONTENT_MAX, 1)}),
        _shape(
            "vote",
            {
                "post_id": _text(POST_ID_MAX, 1),
                "vote_direction": {"type": "string", "enum": ["up", "down"]},
            },
        ),
        _shape("none", {}),
    ]
}
"""JSON Schema of a decision (no ``$ref``), for Ollama's ``format`` and llama.cpp grammars."""


def decision_schema(post_ids: Sequence[str]) -> dict[str, Any]:
    """``DECISION_SCHEMA`` for one run: ``post_id`` limited to the posts in its Ledger feed.

    With no posts, comment and vote are left out (there is nothing to comment on or vote for).
    A model whose output is constrained by the schema then cannot name a post that does not
    exist; the review step still checks it.
    """
    ids = list(dict.fromkeys(post_ids))
    target = {"type": "string", "enum": ids}
    shapes = [_shape("post", {"title": _text(TITLE_MAX, 1), "content": _text(CONTENT_MAX, 1)})]
    if ids:
        shapes.append(_shape("comment", {"post_id": target, "content": _text(CONTENT_MAX, 1)}))
        shapes.append(
            _shape(
                "vote",
                {"post_id": target, "vote_direction": {"type": "string", "enum": ["up", "down"]}},
            )
        )
    shapes.append(_shape("none", {}))
    return {"anyOf": shapes}


class DecisionError(HeartbeatError, code="invalid_decision"):
    """The reply does not hold a valid decision."""

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.reason = reason


class Verdict(msgspec.Struct, frozen=True):
    """The outcome of ``review``: the sanitized decision, or why it was refused."""

    decision: Decision | None
    accepted: bool
    reason: str | None
    message: str | None
    truncated: list[str]


# --- review -------------------------------------------------------------------------------------


def _sanitize(text: str, limit: int) -> tuple[str, bool]:
    """HTML-escape, then cut to ``limit`` without splitting an entity; report truncation."""
    escaped = html.escape(text.strip(), quote=True)
    if len(escaped) <= limit:
        return escaped, False
    cut = escaped[:limit]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut.rstrip(), True


def as_written(text: str) -> str:
    """A sanitized field's text as the model wrote it (less any truncation): ``html.unescape``
    inverts ``html.escape`` exactly. For showing the agent's own text back to it."""
    return html.unescape(text)


def _refuse(reason: str, message: str) -> Verdict:
    return Verdict(decision=None, accepted=False, reason=reason, message=message, truncated=[])


def review(decision: Decision, post_exists: Callable[[str], bool]) -> Verdict:
    """Validate and sanitize a decision against the Ledger. Pure but for ``post_exists``."""
    truncated: list[str] = []

    def clean(name: str, value: str, limit: int) -> str:
        text, cut = _sanitize(value, limit)
        if cut:
            truncated.append(name)
        return text

    post_id = ""
    if isinstance(decision, PostDecision):
        if not decision.title.strip():
            return _refuse("empty_title", "title is empty")
        if not decision.content.strip():
            return _refuse("empty_content", "content is empty")
    elif isinstance(decision, CommentDecision | VoteDecision):
        if isinstance(decision, CommentDecision) and not decision.content.strip():
            return _refuse("empty_content", "content is empty")
        if isinstance(decision, VoteDecision) and decision.vote_direction not in ("up", "down"):
            return _refuse(
                "bad_vote_direction",
                f'vote_direction must be "up" or "down", got {decision.vote_direction!r}',
            )
        post_id = decision.post_id.strip()
        if not post_id:
            return _refuse("empty_post_id", "post_id is empty")
        if not post_exists(post_id):
            return _refuse("unknown_post", f"post_id {post_id!r} does not exist")

    sanitized: Decision
    if isinstance(decision, PostDecision):
        sanitized = PostDecision(
            title=clean("title", decision.title, TITLE_MAX),
            content=clean("content", decision.content, CONTENT_MAX),
            reasoning=clean("reasoning", decision.reasoning, REASONING_MAX),
        )
    elif isinstance(decision, CommentDecision):
        sanitized = CommentDecision(
            post_id=post_id,
            content=clean("content", decision.content, CONTENT_MAX),
            reasoning=clean("reasoning", decision.reasoning, REASONING_MAX),
        )
    elif isinstance(decision, VoteDecision):
        sanitized = VoteDecision(
            post_id=post_id,
            vote_direction=decision.vote_direction,
            reasoning=clean("reasoning", decision.reasoning, REASONING_MAX),
        )
    else:
        sanitized = NoneDecision(reasoning=clean("reasoning", decision.reasoning, REASONING_MAX))
    return Verdict(
        decision=sanitized, accepted=True, reason=None, message=None, truncated=truncated
    )


# --- presentation -------------------------------------------------------------------------------


def decision_to_dict(d: Decision) -> dict[str, Any]:
    """The decision as a plain dict, ``action`` first."""
    out: dict[str, Any] = msgspec.to_builtins(d)
    return out


def _one_line(text: str) -> str:
    return " ".join(text.split())


def summarize(d: Decision) -> str:
    """One line describing the decision, at most 200 characters."""
    if isinstance(d, PostDecision):
        line = f'post: "{_one_line(d.title)}"'
    elif isinstance(d, CommentDecision):
        line = f"comment on {_one_line(d.post_id)}"
    elif isinstance(d, VoteDecision):
        line = f"vote {d.vote_direction} {_one_line(d.post_id)}"
    else:
        reasoning = _one_line(d.reasoning)
        line = f"none: {reasoning}" if reasoning else "none"
    if len(line) > SUMMARY_MAX:
        line = line[: SUMMARY_MAX - 1].rstrip() + "…"
    return line
