"""Parsing LLM replies: HEARTBEAT_OK, code fences, the first JSON object, decoding errors."""

from __future__ import annotations

import pytest

from ledger.decisions import (
    CommentDecision,
    Decision,
    DecisionError,
    NoneDecision,
    PostDecision,
    VoteDecision,
)
from ledger.reply import parse_reply

OK = NoneDecision(reasoning="HEARTBEAT_OK")
POST_JSON = '{"action": "post", "title": "Daily summary", "content": "Five new posts."}'
POST = PostDecision(title="Daily summary", content="Five new posts.")


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param("HEARTBEAT_OK", id="bare"),
        pytest.param("  HEARTBEAT_OK \n", id="whitespace"),
        pytest.param('"HEARTBEAT_OK"', id="double-quotes"),
        pytest.param("'HEARTBEAT_OK'", id="single-quotes"),
        pytest.param("`HEARTBEAT_OK`", id="backticks"),
        pytest.param("```HEARTBEAT_OK```", id="inline-fence"),
        pytest.param("```\nHEARTBEAT_OK\n```", id="code-fence"),
        pytest.param("```text\nHEARTBEAT_OK\n```", id="code-fence-with-language"),
        pytest.param("**HEARTBEAT_OK**", id="bold"),
        pytest.param("HEARTBEAT_OK.", id="trailing-period"),
        pytest.param("HEARTBEAT_OK!", id="trailing-bang"),
        pytest.param("heartbeat_ok", id="lower-case"),
        pytest.param("All quiet. HEARTBEAT_OK", id="prose-then-token"),
        pytest.param("All quiet. **HEARTBEAT_OK**", id="prose-then-bold-token"),
        pytest.param("HEARTBEAT_OK - nothing to do", id="token-then-prose"),
        pytest.param("HEARTBEAT_OK\n\nNo urgent items {today}.", id="token-then-prose-with-braces"),
    ],
)
def test_parse_reply_heartbeat_ok(reply: str) -> None:
    assert parse_reply(reply) == OK


PARSE_OK = [
    pytest.param(POST_JSON, POST, id="plain-json"),
    pytest.param(f"```json\n{POST_JSON}\n```", POST, id="json-fence"),
    pytest.param(f"```\n{POST_JSON}\n```", POST, id="bare-fence"),
    pytest.param(f"```json\n{POST_JSON}", POST, id="unclosed-fence"),
    pytest.param(f"Here is my decision:\n{POST_JSON}\nHope this helps!", POST, id="prose-around"),
    pytest.param(
        f"I think {{this}} is right:\n```json\n{POST_JSON}\n```", POST, id="braces-in-prose"
    ),
    pytest.param(
        '{"action": "post", "title": "a {b} }", "content": "c \\" { d"}',
        PostDecision(title="a {b} }", content='c " { d'),
        id="braces-and-quotes-inside-strings",
    ),
    pytest.param(
        '{"action": "none", "reasoning": "nested", "extra": {"deep": [{"x": "}"}]}} trailing }',
        NoneDecision(reasoning="nested"),
        id="nested-unknown-keys-ignored",
    ),
    pytest.param(
        '{"action": "comment", "post_id": "post_ab12", "content": "Nice", "reasoning": "r"}',
        CommentDecision(post_id="post_ab12", content="Nice", reasoning="r"),
        id="comment",
    ),
    pytest.param(
        '{"action": "vote", "post_id": "post_ab12", "vote_direction": "down"}',
        VoteDecision(post_id="post_ab12", vote_direction="down"),
        id="vote",
    ),
    pytest.param('{"action": "none"}', NoneDecision(), id="none-default-reasoning"),
    pytest.param(
        'HEARTBEAT_OK\n{"action": "vote", "post_id": "p1", "vote_direction": "up"}',
        VoteDecision(post_id="p1", vote_direction="up"),
        id="json-wins-over-token",
    ),
    pytest.param('{"action": "none", "reasoning": "HEARTBEAT_OK"}', OK, id="token-inside-json"),
]


@pytest.mark.parametrize(("reply", "expected"), PARSE_OK)
def test_parse_reply(reply: str, expected: Decision) -> None:
    assert parse_reply(reply) == expected


PARSE_ERRORS = [
    pytest.param("", "no_json", None, "the reply is empty", id="empty"),
    pytest.param(" \n\t", "no_json", None, "the reply is empty", id="blank"),
    pytest.param(
        "I have nothing to add.", "no_json", None, "the reply holds no JSON object", id="prose"
    ),
    pytest.param(
        "HEARTBEAT_OKAY",
        "no_json",
        None,
        "the reply holds no JSON object",
        id="token-prefix-of-word",
    ),
    pytest.param(
        "We are not HEARTBEAT_OK yet, sorry",
        "no_json",
        None,
        "the reply holds no JSON object",
        id="token-in-middle",
    ),
    pytest.param(
        '{"action": "post", "title": "x"',
        "bad_json",
        None,
        "the reply holds no well-formed JSON object",
        id="truncated-json",
    ),
    pytest.param(
        "{action: post}",
        "bad_json",
        None,
        "the reply holds no well-formed JSON object",
        id="not-json",
    ),
    pytest.param(
        '{"action": "delete", "post_id": "p1"}',
        "unknown_action",
        "action",
        "unknown action 'delete'; expected post, comment, vote or none",
        id="unknown-action",
    ),
    pytest.param(
        '{"title": "t", "content": "c"}',
        "missing_field",
        "action",
        'decision is missing the "action" field',
        id="missing-action",
    ),
    pytest.param(
        '{"action": "post", "content": "c"}',
        "missing_field",
        "title",
        'decision is missing the "title" field',
        id="missing-title",
    ),
    pytest.param(
        '{"action": "comment", "content": "c"}',
        "missing_field",
        "post_id",
        'decision is missing the "post_id" field',
        id="missing-post_id",
    ),
    pytest.param(
        '{"action": "post", "title": 5, "content": "c"}',
        "bad_type",
        "title",
        "title: expected str, got int",
        id="title-int",
    ),
    pytest.param(
        '{"action": "none", "reasoning": null}',
        "bad_type",
        "reasoning",
        "reasoning: expected str, got null",
        id="reasoning-null",
    ),
    pytest.param('{"action": 1}', "bad_type", "action", "action: expected str", id="action-int"),
    pytest.param(
        '{"action": "vote", "post_id": "p", "vote_direction": "sideways"}',
        "bad_value",
        "vote_direction",
        "vote_direction: invalid enum value 'sideways'",
        id="bad-vote-direction",
    ),
    pytest.param(
        '{} {"action": "none"}',
        "missing_field",
        "action",
        'decision is missing the "action" field',
        id="first-json-object-is-the-decision",
    ),
]


@pytest.mark.parametrize(("reply", "reason", "field", "message"), PARSE_ERRORS)
def test_parse_reply_errors(reply: str, reason: str, field: str | None, message: str) -> None:
    with pytest.raises(DecisionError) as info:
        parse_reply(reply)
    assert (info.value.reason, info.value.field, info.value.message) == (reason, field, message)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param("{" * 50000, id="many-open-braces"),
        pytest.param('{"' * 50000, id="many-open-strings"),
        pytest.param("```" * 50000, id="many-fences"),
        pytest.param("\x00\ud800", id="odd-characters"),
    ],
)
def test_parse_reply_only_raises_decision_error(reply: str) -> None:
    with pytest.raises(DecisionError):
        parse_reply(reply)
