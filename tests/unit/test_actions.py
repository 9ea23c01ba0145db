"""Decisions: parsing LLM replies, review (validation and sanitizing), schema, summaries."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from ledger.actions import (
    CONTENT_MAX,
    DECISION_SCHEMA,
    REASONING_MAX,
    TITLE_MAX,
    CommentDecision,
    Decision,
    DecisionError,
    NoneDecision,
    PostDecision,
    Verdict,
    VoteDecision,
    as_written,
    decision_to_dict,
    parse_reply,
    review,
    summarize,
)

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


def exists(*ids: str) -> Any:
    return lambda post_id: post_id in ids


def accepted(decision: Decision, truncated: list[str] | None = None) -> Verdict:
    return Verdict(
        decision=decision, accepted=True, reason=None, message=None, truncated=truncated or []
    )


def refused(reason: str, message: str) -> Verdict:
    return Verdict(decision=None, accepted=False, reason=reason, message=message, truncated=[])


XSS = "<img src=x onerror=alert(1)>"
XSS_ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"

REVIEW_CASES = [
    pytest.param(
        PostDecision(title="  Daily summary \n", content="\tBody  ", reasoning=" why "),
        accepted(PostDecision(title="Daily summary", content="Body", reasoning="why")),
        id="post-trimmed",
    ),
    pytest.param(
        PostDecision(title=XSS, content="a \"quote\" & 'apos'", reasoning="<b>"),
        accepted(
            PostDecision(
                title=XSS_ESCAPED,
                content="a &quot;quote&quot; &amp; &#x27;apos&#x27;",
                reasoning="&lt;b&gt;",
            )
        ),
        id="xss-escaped",
    ),
    pytest.param(
        PostDecision(title=" \n ", content="c"),
        refused("empty_title", "title is empty"),
        id="empty-title",
    ),
    pytest.param(
        PostDecision(title="t", content="   "),
        refused("empty_content", "content is empty"),
        id="empty-content",
    ),
    pytest.param(
        CommentDecision(post_id=" post_ab12 ", content=" Nice "),
        accepted(CommentDecision(post_id="post_ab12", content="Nice")),
        id="comment-post_id-trimmed",
    ),
    pytest.param(
        CommentDecision(post_id="post_zz", content="Nice"),
        refused("unknown_post", "post_id 'post_zz' does not exist"),
        id="comment-unknown-post",
    ),
    pytest.param(
        CommentDecision(post_id="post_ab12", content=""),
        refused("empty_content", "content is empty"),
        id="comment-empty-content",
    ),
    pytest.param(
        CommentDecision(post_id="  ", content="x"),
        refused("empty_post_id", "post_id is empty"),
        id="comment-empty-post_id",
    ),
    pytest.param(
        VoteDecision(post_id="post_ab12", vote_direction="up", reasoning="<3"),
        accepted(VoteDecision(post_id="post_ab12", vote_direction="up", reasoning="&lt;3")),
        id="vote",
    ),
    pytest.param(
        VoteDecision(post_id="post_gone", vote_direction="down"),
        refused("unknown_post", "post_id 'post_gone' does not exist"),
        id="vote-unknown-post",
    ),
    pytest.param(
        VoteDecision(post_id="post_ab12", vote_direction="sideways"),  # type: ignore[arg-type]
        refused("bad_vote_direction", 'vote_direction must be "up" or "down", got \'sideways\''),
        id="vote-bad-direction-built-directly",
    ),
    pytest.param(
        NoneDecision(reasoning="  <all> quiet  "),
        accepted(NoneDecision(reasoning="&lt;all&gt; quiet")),
        id="none-always-accepted",
    ),
    pytest.param(NoneDecision(), accepted(NoneDecision()), id="none-empty-reasoning"),
]


@pytest.mark.parametrize(("decision", "verdict"), REVIEW_CASES)
def test_review(decision: Decision, verdict: Verdict) -> None:
    assert review(decision, exists("post_ab12")) == verdict


def test_review_asks_about_the_trimmed_post_id() -> None:
    asked: list[str] = []

    def post_exists(post_id: str) -> bool:
        asked.append(post_id)
        return True

    review(VoteDecision(post_id="\tpost_1\n", vote_direction="up"), post_exists)
    assert asked == ["post_1"]


TRUNCATION_CASES = [
    pytest.param("a" * CONTENT_MAX, "a" * CONTENT_MAX, False, id="exactly-at-limit"),
    pytest.param("a" * (CONTENT_MAX + 1), "a" * CONTENT_MAX, True, id="one-over"),
    pytest.param(
        "a" * (CONTENT_MAX - 5) + "&",
        "a" * (CONTENT_MAX - 5) + "&amp;",
        False,
        id="entity-ends-exactly-at-limit",
    ),
    pytest.param(
        "a" * (CONTENT_MAX - 2) + "&b",
        "a" * (CONTENT_MAX - 2),
        True,
        id="entity-straddles-limit",
    ),
    pytest.param(
        "a" * (CONTENT_MAX - 1) + "<",
        "a" * (CONTENT_MAX - 1),
        True,
        id="lt-entity-cut-after-ampersand",
    ),
    pytest.param(
        "a" * (CONTENT_MAX - 4) + "'x",
        "a" * (CONTENT_MAX - 4),
        True,
        id="apostrophe-entity-straddles",
    ),
    pytest.param(
        "a" * (CONTENT_MAX - 7) + "&&" + "b" * 10,
        "a" * (CONTENT_MAX - 7) + "&amp;",
        True,
        id="keeps-whole-entity-drops-half",
    ),
    pytest.param(
        "a" * (CONTENT_MAX - 2) + "  " + "b" * 10,
        "a" * (CONTENT_MAX - 2),
        True,
        id="trailing-space-at-cut-removed",
    ),
]


@pytest.mark.parametrize(("content", "expected", "was_cut"), TRUNCATION_CASES)
def test_review_truncates_content_after_escaping(
    content: str, expected: str, was_cut: bool
) -> None:
    verdict = review(CommentDecision(post_id="post_ab12", content=content), exists("post_ab12"))
    assert verdict.decision == CommentDecision(post_id="post_ab12", content=expected)
    assert verdict.truncated == (["content"] if was_cut else [])


@pytest.mark.parametrize(
    "text",
    [
        "Q&A: \"<draft>\" & 'notes'",
        "already &amp; escaped &lt;b&gt;",  # the model's literal entities come back literally
        "&#x27; &#39; &copy; &nbsp;",
        "plain",
        "",
    ],
)
def test_as_written_inverts_the_sanitizer(text: str) -> None:
    verdict = review(CommentDecision(post_id="post_ab12", content=text + "."), exists("post_ab12"))
    assert isinstance(verdict.decision, CommentDecision)
    assert as_written(verdict.decision.content) == text + "."


def test_review_truncates_every_text_field() -> None:
    decision = PostDecision(
        title="<" * TITLE_MAX, content="c" * (CONTENT_MAX + 7), reasoning="r" * (REASONING_MAX + 1)
    )
    verdict = review(decision, exists())
    assert verdict.accepted
    assert verdict.decision == PostDecision(
        title="&lt;" * (TITLE_MAX // 4), content="c" * CONTENT_MAX, reasoning="r" * REASONING_MAX
    )
    assert verdict.truncated == ["title", "content", "reasoning"]


@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        pytest.param(
            POST,
            {
                "action": "post",
                "title": "Daily summary",
                "content": "Five new posts.",
                "reasoning": "",
            },
            id="post",
        ),
        pytest.param(
            CommentDecision(post_id="p", content="c", reasoning="r"),
            {"action": "comment", "post_id": "p", "content": "c", "reasoning": "r"},
            id="comment",
        ),
        pytest.param(
            VoteDecision(post_id="p", vote_direction="up"),
            {"action": "vote", "post_id": "p", "vote_direction": "up", "reasoning": ""},
            id="vote",
        ),
        pytest.param(NoneDecision(reasoning="x"), {"action": "none", "reasoning": "x"}, id="none"),
    ],
)
def test_decision_to_dict(decision: Decision, expected: dict[str, Any]) -> None:
    out = decision_to_dict(decision)
    assert out == expected
    assert next(iter(out)) == "action"
    assert parse_reply(json.dumps(out)) == decision


@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        pytest.param(POST, 'post: "Daily summary"', id="post"),
        pytest.param(
            CommentDecision(post_id="post_ab12", content="c"), "comment on post_ab12", id="comment"
        ),
        pytest.param(
            VoteDecision(post_id="post_ab12", vote_direction="up"), "vote up post_ab12", id="vote"
        ),
        pytest.param(
            VoteDecision(post_id="post_ab12", vote_direction="down"),
            "vote down post_ab12",
            id="vote-down",
        ),
        pytest.param(
            NoneDecision(reasoning="Nothing urgent.\n  All quiet."),
            "none: Nothing urgent. All quiet.",
            id="none-one-line",
        ),
        pytest.param(NoneDecision(), "none", id="none-without-reasoning"),
        pytest.param(
            NoneDecision(reasoning="x" * 500), "none: " + "x" * 193 + "…", id="none-long-cut"
        ),
        pytest.param(
            PostDecision(title="T" * 300, content="c"),
            'post: "' + "T" * 192 + "…",
            id="post-long-title-cut",
        ),
    ],
)
def test_summarize(decision: Decision, expected: str) -> None:
    line = summarize(decision)
    assert line == expected
    assert len(line) <= 200
    assert "\n" not in line


def test_schema_shapes_match_structs() -> None:
    shapes = DECISION_SCHEMA["anyOf"]
    structs: list[type[msgspec.Struct]] = [
        PostDecision,
        CommentDecision,
        VoteDecision,
        NoneDecision,
    ]
    assert [s["properties"]["action"]["enum"] for s in shapes] == [
        ["post"],
        ["comment"],
        ["vote"],
        ["none"],
    ]
    for shape, struct in zip(shapes, structs, strict=True):
        fields = [f.name for f in msgspec.structs.fields(struct)]
        assert list(shape["properties"]) == ["action", *fields]
        assert shape["required"] == ["action", *fields]
        assert shape["additionalProperties"] is False
    assert "$ref" not in json.dumps(DECISION_SCHEMA)


def test_schema_limits() -> None:
    post, comment, vote, none = DECISION_SCHEMA["anyOf"]
    assert post["properties"]["title"] == {"type": "string", "maxLength": 200, "minLength": 1}
    assert post["properties"]["content"]["maxLength"] == 5000
    assert comment["properties"]["content"]["maxLength"] == 5000
    assert vote["properties"]["vote_direction"] == {"type": "string", "enum": ["up", "down"]}
    assert none["properties"]["reasoning"] == {"type": "string", "maxLength": 2000}


def test_decision_schema_limits_post_ids_to_the_feed() -> None:
    from ledger.actions import decision_schema

    def actions(schema: dict[str, object]) -> list[str]:
        shapes = schema["anyOf"]
        assert isinstance(shapes, list)
        return [s["properties"]["action"]["enum"][0] for s in shapes]

    empty = decision_schema([])
    assert sorted(actions(empty)) == ["none", "post"]
    full = decision_schema(["post_a", "post_b", "post_a"])
    assert sorted(actions(full)) == ["comment", "none", "post", "vote"]
    for shape in full["anyOf"]:
        props = shape["properties"]
        if "post_id" in props:
            assert props["post_id"]["enum"] == ["post_a", "post_b"]
