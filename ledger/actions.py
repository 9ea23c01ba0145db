"""Heartbeat decisions: the tagged union, its JSON schema, parsing an LLM reply, review.

Pure: ``review`` asks about posts through the ``post_exists`` callable it is given.

DecisionError (ValueError)   a reply that does not hold a well-formed decision
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

import msgspec

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
    "decision_to_dict",
    "parse_reply",
    "review",
    "summarize",
]

TITLE_MAX: Final = 200
CONTENT_MAX: Final = 5000
REASONING_MAX: Final = 2000
POST_ID_MAX: Final = 200
SUMMARY_MAX: Final = 200
HEARTBEAT_OK: Final = "HEARTBEAT_OK"


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

_DECODER: Final = msgspec.json.Decoder(Decision)


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


class DecisionError(ValueError):
    """The reply does not hold a valid decision."""

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class Verdict(msgspec.Struct, frozen=True):
    """The outcome of ``review``: the sanitized decision, or why it was refused."""

    decision: Decision | None
    accepted: bool
    reason: str | None
    message: str | None
    truncated: list[str]


# --- parsing ------------------------------------------------------------------------------------

_FENCE: Final = re.compile(r"```[^\n`]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_WRAPPING: Final = " \t\r\n\"'`*_.,;:!~()[]<>-"
_OK_AT_START: Final = re.compile(rf"^{HEARTBEAT_OK}(?!\w)", re.IGNORECASE)
_OK_AT_END: Final = re.compile(rf"(?<!\w){HEARTBEAT_OK}$", re.IGNORECASE)
_MAX_CANDIDATES: Final = 16
_MSGSPEC_PATH: Final = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def _unfence(text: str) -> str:
    """The contents of the first fenced block, or the text itself when there is none."""
    m = _FENCE.search(text)
    return m.group(1) if m is not None else text


def _is_heartbeat_ok(text: str) -> bool:
    for core in (text.strip(_WRAPPING), _unfence(text).strip(_WRAPPING)):
        if _OK_AT_START.search(core) or _OK_AT_END.search(core):
            return True
    return False


def _balanced_object(text: str, start: int) -> str | None:
    """The ``{...}`` starting at ``start``, matching braces outside JSON strings."""
    depth = 0
    in_string = False
    escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return None


def _decision_error(exc: msgspec.ValidationError) -> DecisionError:
    m = _MSGSPEC_PATH.match(str(exc))
    what = (m.group("what") if m else str(exc)).replace("`", "")
    field = (m.group("path") or "").lstrip(".") or None if m else None
    if missing := re.fullmatch(r"Object missing required field (.+)", what):
        name = missing.group(1)
        return DecisionError("missing_field", f'decision is missing the "{name}" field', name)
    if field == "action" and (bad := re.fullmatch(r"Invalid value (.+)", what)):
        return DecisionError(
            "unknown_action",
            f"unknown action {bad.group(1)}; expected post, comment, vote or none",
            "action",
        )
    reason = "bad_type" if what.startswith("Expected") else "bad_value"
    return DecisionError(reason, f"{field or 'decision'}: {what[:1].lower()}{what[1:]}", field)


def parse_reply(text: str) -> Decision:
    """Turn an LLM reply into a Decision.

    A reply that is only ``HEARTBEAT_OK`` (at its start or end, lightly wrapped, with no JSON
    object) is ``NoneDecision(reasoning="HEARTBEAT_OK")``. Otherwise the first balanced JSON
    object, searched first inside a code fence, is decoded; prose around it is ignored.
    """
    stripped = text.strip()
    if not stripped:
        raise DecisionError("no_json", "the reply is empty")
    saw_brace = False
    for source in dict.fromkeys((_unfence(stripped), stripped)):
        start = source.find("{")
        for _ in range(_MAX_CANDIDATES):
            if start < 0:
                break
            saw_brace = True
            candidate = _balanced_object(source, start)
            if candidate is not None:
                try:
                    decision: Decision = _DECODER.decode(candidate)
                except msgspec.ValidationError as exc:
                    raise _decision_error(exc) from None
                except msgspec.DecodeError:
                    pass  # not JSON (e.g. braces in prose): try the next "{"
                else:
                    return decision
            start = source.find("{", start + 1)
    if _is_heartbeat_ok(stripped):
        return NoneDecision(reasoning=HEARTBEAT_OK)
    if saw_brace:
        raise DecisionError("bad_json", "the reply holds no well-formed JSON object")
    raise DecisionError("no_json", "the reply holds no JSON object")


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
