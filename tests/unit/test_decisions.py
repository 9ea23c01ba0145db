"""Decisions: review (validation and sanitizing), schema, summaries."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from ledger.decisions import (
    CONTENT_MAX,
    DECISION_SCHEMA,
    REASONING_MAX,
    TITLE_MAX,
    CommentDecision,
    Decision,
    NoneDecision,
    PostDecision,
    Verdict,
    VoteDecision,
    as_written,
    decision_schema,
    decision_to_dict,
    review,
    summarize,
)
from ledger.reply import parse_reply

POST = PostDecision(title="Daily summary", content="Five new posts.")


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
