"""The names a run is recorded under: one definition, matching every place that spells them."""

from __future__ import annotations

import re
import sqlite3
from enum import StrEnum
from pathlib import Path
from typing import get_args

import pytest

from ledger.decisions import (
    CommentDecision,
    Decision,
    DecisionError,
    PostDecision,
    VoteDecision,
    review,
)
from ledger.records import Loop, Reason, RunStatus, Trigger
from ledger.reply import parse_reply
from ledger.storage.migrations import MIGRATIONS
from loops.llm import ErrorReason

APP_JS = Path(__file__).resolve().parents[2] / "static" / "app.js"


def _check_values(column: str) -> set[str]:
    """The values the migrated schema's CHECK allows in a column of ``runs``."""
    db = sqlite3.connect(":memory:")
    try:
        for statement in ";".join(MIGRATIONS).split(";"):
            db.execute(statement)
        (schema,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'runs'").fetchone()
    finally:
        db.close()
    match = re.search(rf"{column} TEXT NOT NULL\s+CHECK \({column} IN\s*\(([^)]*)\)\)", schema)
    assert match is not None, column
    return set(re.findall(r"'([a-z_]+)'", match.group(1)))


def _js_object(name: str) -> dict[str, str]:
    match = re.search(rf"const {name} = Object\.freeze\(\{{(.*?)\}}\);", APP_JS.read_text(), re.S)
    assert match is not None, name
    return dict(re.findall(r'(\w+): "([a-z_]+)"', match.group(1)))


def test_statuses_and_triggers_are_the_ones_the_schema_allows() -> None:
    assert {s.value for s in RunStatus} == _check_values("status")
    assert {t.value for t in Trigger} == _check_values("trigger")


@pytest.mark.parametrize(("name", "names"), [("STATUS", RunStatus), ("LOOP", Loop)])
def test_the_dashboard_spells_them_as_the_api_does(name: str, names: type[StrEnum]) -> None:
    assert _js_object(name) == {member.name: member.value for member in names}


def test_every_reason_of_the_llm_client_is_a_run_reason() -> None:
    assert set(get_args(ErrorReason)) <= {r.value for r in Reason}


@pytest.mark.parametrize(
    "decision",
    [
        PostDecision(title=" ", content="x"),
        PostDecision(title="t", content=" "),
        CommentDecision(post_id="p1", content=" "),
        CommentDecision(post_id=" ", content="x"),
        CommentDecision(post_id="p404", content="x"),
        VoteDecision(post_id="p1", vote_direction="sideways"),
    ],
)
def test_every_refusal_of_the_review_is_a_run_reason(decision: Decision) -> None:
    verdict = review(decision, {"p1"}.__contains__)
    assert not verdict.accepted and verdict.reason is not None
    assert Reason(verdict.reason)


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "no json here",
        '{"action": "post", "title": ',
        '{"action": "dance"}',
        '{"action": "post", "title": "t"}',
        '{"action": "post", "title": 3, "content": "c"}',
        '{"action": "vote", "post_id": "p1", "vote_direction": "sideways"}',
        "{}",
    ],
)
def test_every_parse_error_is_a_run_reason(reply: str) -> None:
    with pytest.raises(DecisionError) as caught:
        parse_reply(reply)
    assert Reason(caught.value.reason)
