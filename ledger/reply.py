"""Turning an LLM reply into a decision: code fences, ``HEARTBEAT_OK``, the first JSON object.

Pure. A reply that holds no well-formed decision raises ``DecisionError`` (``ledger.decisions``).
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from ledger.decisions import Decision, DecisionError, NoneDecision

__all__ = ["HEARTBEAT_OK", "parse_reply"]

HEARTBEAT_OK: Final = "HEARTBEAT_OK"
_DECODER: Final = msgspec.json.Decoder(Decision)
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
