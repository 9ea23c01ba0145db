"""The scoped fingerprint: what the thread's rules can act on changes it, nothing else does."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from ledger.records import BeatMemo, Message, Post, Run, RunContext
from ledger.storage.interface import AGENT, USER
from loops.fingerprint import Inputs, inputs, unchanged
from loops.scope import Decider, in_scope, scope_of
from tests.unit.test_fingerprint import _run

NOON = datetime(2026, 3, 2, 12, 5, tzinfo=UTC)
ALICE = "## Rules\n- Vote up questions from alice.\n"  # names whose posts count
GARDEN = "## Rules\n- Comment on posts about the garden project.\n"  # names a topic
UNVOTED = "## Rules\n- Vote up posts from alice with no votes.\n"  # reads the votes
UNKNOWN = "## Rules\n- Vote up whatever feels right to you.\n"  # not understood
POSTS = "## Rules\n- Post a short summary when 3 new posts arrive.\n"  # counts every post


def _post(pid: str, author: str = "alice", title: str = "", **kw: object) -> Post:
    fields: dict[str, object] = {"created_at": 1.0, "score": 0, "comment_count": 0} | kw
    return Post(
        id=pid,
        author=author,
        title=title or f"What about {pid}?",
        content=f"Body of {pid}",
        **fields,  # type: ignore[arg-type]
    )


def _message(mid: int, content: str) -> Message:
    return Message(id=mid, thread_id="t", role="user", content=content, created_at=float(mid))


BASE = RunContext(
    messages=[_message(1, "hello there")],
    contradictions=[],
    profile=None,
    posts=[
        _post("p1"),
        _post("p2", "bob", "Cooking tips"),
        _post("p3", "carol", "The garden project needs hands"),
    ],
    recent=[],
)


def with_(**changes: object) -> RunContext:
    return msgspec.structs.replace(BASE, **changes)


def posts(*extra: Post, replace: dict[str, Post] | None = None) -> RunContext:
    swap = replace or {}
    return with_(posts=[swap.get(p.id, p) for p in BASE.posts] + list(extra))


def sfp(ctx: RunContext, rules: str, decider: Decider) -> str:
    return inputs(rules, "T", ctx, NOON, (), scope_of(rules, ctx, decider, "t")).whole


P2_VOTED = {"p2": _post("p2", "bob", "Cooking tips", score=3)}
P1_VOTED = {"p1": _post("p1", score=1)}
P1_COMMENTED = {"p1": _post("p1", comment_count=2)}
ON_TOPIC = _post("p9", "dave", "Garden project: the beds are dug")
OFF_TOPIC = _post("p9", "dave", "A recipe for soup")
MESSAGE = with_(messages=[*BASE.messages, _message(2, "remind me to water the beds")])
VOTED = with_(recent=[_run({"action": "vote", "post_id": "p1", "vote_direction": "up"})])

SAME = [
    pytest.param(posts(_post("p9", "bob", "Cheap shoes?")), ALICE, "prompt", id="unnamed-author"),
    pytest.param(posts(OFF_TOPIC), GARDEN, "procedure", id="off-topic-post"),
    pytest.param(posts(replace=P2_VOTED), ALICE, "prompt", id="vote-on-post-no-rule-reads"),
    pytest.param(posts(replace=P1_VOTED), ALICE, "prompt", id="vote-no-rule-reads-votes"),
    pytest.param(posts(replace=P2_VOTED), UNVOTED, "prompt", id="vote-on-unnamed-authors-post"),
    pytest.param(posts(replace=P1_COMMENTED), ALICE, "procedure", id="comment-unread"),
    pytest.param(with_(posts=BASE.posts[::-1]), ALICE, "prompt", id="reordered"),
    pytest.param(
        posts(replace={"p1": _post("p1", title="  What   about\np1? ")}),
        ALICE,
        "prompt",
        id="whitespace",
    ),
    pytest.param(
        posts(replace={"p1": _post("p1", created_at=99.0)}), ALICE, "prompt", id="post-timestamp"
    ),
    pytest.param(MESSAGE, ALICE, "procedure", id="message-procedure-reads-none"),
    pytest.param(
        posts(_post("p9", AGENT, "My summary")), ALICE, "prompt", id="own-post-no-rule-posts"
    ),
]


@pytest.mark.parametrize(("ctx", "rules", "decider"), SAME)
def test_what_does_not_change_the_scoped_fingerprint(
    ctx: RunContext, rules: str, decider: Decider
) -> None:
    assert sfp(ctx, rules, decider) == sfp(BASE, rules, decider)


CHANGED = [
    pytest.param(posts(_post("p9")), ALICE, "prompt", id="named-authors-new-post"),
    pytest.param(posts(ON_TOPIC), GARDEN, "procedure", id="on-topic-post"),
    pytest.param(posts(OFF_TOPIC), GARDEN, "prompt", id="any-post-when-the-model-reads-topics"),
    pytest.param(posts(replace=P1_VOTED), UNVOTED, "prompt", id="vote-a-rule-reads"),
    pytest.param(posts(replace=P1_VOTED), UNVOTED, "procedure", id="vote-a-rule-reads-proc"),
    pytest.param(MESSAGE, ALICE, "prompt", id="message-the-model-reads"),
    pytest.param(MESSAGE, UNKNOWN, "procedure", id="message-rule-not-understood"),
    pytest.param(posts(OFF_TOPIC), UNKNOWN, "procedure", id="any-post-rule-not-understood"),
    pytest.param(posts(OFF_TOPIC), POSTS, "procedure", id="any-post-a-rule-counts"),
    pytest.param(posts(_post("p9", AGENT, "Summary")), POSTS, "prompt", id="own-post-rule-posts"),
    pytest.param(VOTED, ALICE, "procedure", id="recent-action"),
    pytest.param(with_(posts=BASE.posts[:2]), GARDEN, "procedure", id="on-topic-post-leaves-feed"),
]


@pytest.mark.parametrize(("ctx", "rules", "decider"), CHANGED)
def test_what_changes_the_scoped_fingerprint(ctx: RunContext, rules: str, decider: Decider) -> None:
    assert sfp(ctx, rules, decider) != sfp(BASE, rules, decider)


def test_a_rule_not_understood_gives_the_full_fingerprint() -> None:
    rules = ALICE + "- Vote up whatever feels right to you.\n"
    scope = scope_of(rules, BASE, "prompt", "t")
    assert scope.full
    assert "whatever" in scope.why
    assert sfp(BASE, rules, "prompt") == inputs(rules, "T", BASE, NOON).whole
    assert not scope_of(ALICE, BASE, "prompt", "t").full


def test_what_the_scope_keeps_by_decider() -> None:
    model, proc = scope_of(UNVOTED, BASE, "prompt", "t"), scope_of(UNVOTED, BASE, "procedure", "t")
    assert model.people == proc.people == frozenset({"alice"})
    assert model.scores and not model.comments
    assert model.messages and model.profile and model.contradictions
    assert not (proc.messages or proc.profile or proc.contradictions)
    assert proc.decider == "procedure" and model.decider == "prompt"


TWO = (
    "## Rules\n- Vote up a question from the user that is tagged for this thread and has no"
    " votes yet.\n- When the user asks to be reminded of something, post the reminder once.\n"
)
TAG = "## Rules\n- Vote up a question from the user that is tagged for this thread.\n"
ASKED = "## Rules\n- When the user asks to be reminded of something, post the reminder once.\n"
OURS = RunContext(
    messages=[_message(1, "hello there")],
    contradictions=[],
    profile=None,
    posts=[_post("u1", USER, "[t7] what about the roof?"), _post("u2", USER, "[t8] and the door?")],
    recent=[],
)


def tfp(ctx: RunContext, rules: str, decider: Decider) -> str:
    return inputs(rules, "T", ctx, NOON, (), scope_of(rules, ctx, decider, "t7")).whole


def ours(*extra: Post, replace: dict[str, Post] | None = None, **changes: object) -> RunContext:
    swap = replace or {}
    new = [swap.get(p.id, p) for p in OURS.posts] + list(extra)
    return msgspec.structs.replace(OURS, posts=new, **changes)


ASKS = ours(messages=[*OURS.messages, _message(2, "remind me to water the beds")])
U2_VOTED = {"u2": _post("u2", USER, "[t8] and the door?", score=1)}
U1_VOTED = {"u1": _post("u1", USER, "[t7] what about the roof?", score=1)}

OURS_SAME = [
    pytest.param(ours(_post("u9", USER, "[t8] why?")), TAG, "prompt", id="other-threads-tag"),
    pytest.param(ours(_post("u9", USER, "[t8] why?")), TWO, "procedure", id="other-tag-proc"),
    pytest.param(ours(replace=U2_VOTED), TAG, "prompt", id="vote-on-other-threads-question"),
    pytest.param(ours(replace=U2_VOTED), TWO, "procedure", id="vote-other-thread-proc"),
    pytest.param(ours(replace=U2_VOTED), TWO, "prompt", id="vote-no-rule-reading-votes-is-about"),
    pytest.param(ours(_post("u9", USER, "news")), TWO, "procedure", id="no-tag-no-request"),
    pytest.param(ours(_post("u9", "carol", "[t7] why?")), TAG, "prompt", id="tag-not-the-users"),
    pytest.param(ours(_post("a9", AGENT, "Reminder: x")), ASKED, "procedure", id="agent-post-proc"),
]


@pytest.mark.parametrize(("ctx", "rules", "decider"), OURS_SAME)
def test_what_the_two_cases_leave_out(ctx: RunContext, rules: str, decider: Decider) -> None:
    assert tfp(ctx, rules, decider) == tfp(OURS, rules, decider)


OURS_CHANGED = [
    pytest.param(ours(_post("u9", USER, "[t7] why?")), TAG, "prompt", id="this-threads-tag"),
    pytest.param(ours(_post("u9", USER, "for t7: why?")), TAG, "prompt", id="the-id-loosely"),
    pytest.param(ours(_post("u9", USER, "#t7 why?")), TWO, "procedure", id="this-tag-proc"),
    pytest.param(ours(replace=U1_VOTED), TWO, "procedure", id="vote-on-this-threads-question"),
    pytest.param(ours(replace=U1_VOTED), TWO, "prompt", id="vote-on-this-threads-question-model"),
    pytest.param(ours(_post("u9", USER, "news")), ASKED, "prompt", id="model-reads-any-user-post"),
    pytest.param(
        ours(_post("u9", USER, "Please remind me to call Ana")), TWO, "procedure", id="asks-in-post"
    ),
    pytest.param(ASKS, TWO, "procedure", id="asks-in-the-thread"),
]


@pytest.mark.parametrize(("ctx", "rules", "decider"), OURS_CHANGED)
def test_what_the_two_cases_keep(ctx: RunContext, rules: str, decider: Decider) -> None:
    assert tfp(ctx, rules, decider) != tfp(OURS, rules, decider)


def test_tagged_for_this_thread_is_no_mention_of_the_user() -> None:
    scope = scope_of(TWO, OURS, "prompt", "t7")
    assert not scope.full
    assert scope.people == frozenset({"user"}) and scope.scores and not scope.comments
    assert scope_of(TWO, OURS, "procedure", "t7").messages


def _posted(run_id: int, post_id: str) -> Run:
    run = _run({"action": "post", "title": "Reminder: x", "content": "x"})
    return msgspec.structs.replace(run, id=run_id, executed=[{"type": "post", "post_id": post_id}])


MINE = ours(recent=[_posted(1, "a1")])  # this thread posted a1 (not in the feed yet)
A1 = _post("a1", AGENT, "Reminder: call Ana", thread_id="t7")
A1_VOTED = _post("a1", AGENT, "Reminder: call Ana", score=2, thread_id="t7")
A2 = _post("a2", AGENT, "Reminder: call Bo", thread_id="t8")  # all threads post as the agent
OLD = _post("a0", AGENT, "Reminder: call Cy", thread_id="t7")  # this thread's, long ago
OLD_VOTED = _post("a0", AGENT, "Reminder: call Cy", score=2, thread_id="t7")


@pytest.mark.parametrize(
    ("before", "after", "rules", "changed"),
    [
        pytest.param(MINE, ours(A1, recent=MINE.recent), ASKED, True, id="own-post-appears"),
        pytest.param(MINE, ours(A2, recent=MINE.recent), ASKED, False, id="other-threads-post"),
        pytest.param(
            ours(A1, A2, recent=MINE.recent), ours(A1, recent=MINE.recent), ASKED, False,
            id="other-threads-post-leaves",
        ),
        pytest.param(
            ours(A1, recent=MINE.recent), ours(A1_VOTED, recent=MINE.recent), TWO, True,
            id="vote-on-own-post",
        ),
        pytest.param(MINE, ours(A2, recent=MINE.recent), POSTS, True, id="a-rule-counting-posts"),
        pytest.param(MINE, ours(A2, recent=MINE.recent), GARDEN, True, id="a-rule-naming-nobody"),
        pytest.param(MINE, ours(A1, recent=MINE.recent), TAG, False, id="no-rule-posts"),
        pytest.param(  # no longer among its recent actions, still this thread's post
            ours(OLD), ours(OLD_VOTED), TWO, True, id="own-post-beyond-recent-actions",
        ),
        pytest.param(
            ours(A2), ours(msgspec.structs.replace(A2, score=2)), TWO, False,
            id="vote-on-other-threads-post",
        ),
    ],
)  # fmt: skip
def test_the_agents_posts_count_for_the_thread_that_made_them(
    before: RunContext, after: RunContext, rules: str, changed: bool
) -> None:
    assert (tfp(after, rules, "prompt") != tfp(before, rules, "prompt")) is changed


def test_the_threads_own_posts_are_those_its_runs_made() -> None:
    scope = scope_of(ASKED, ours(A1, A2), "prompt", "t7")
    assert scope.own_posts and scope.thread == "t7"
    assert [c.post.id for c in in_scope(scope, ASKED, [A1, A2]) if c.post.author == AGENT] == ["a1"]
    assert not scope_of(ASKED, MINE, "procedure", "t7").own_posts


@pytest.mark.parametrize(
    ("tag", "changed"),
    [pytest.param("[t7]", True, id="counted-post-stops-being-new"),
     pytest.param("[t8]", False, id="uncounted-post-stops-being-new")],
)  # fmt: skip
def test_a_post_ageing_counts_only_where_the_post_does(tag: str, changed: bool) -> None:
    born = NOON.timestamp()
    ctx = ours(_post("u9", USER, f"{tag} what now?", created_at=born))
    scope = scope_of(TAG, ctx, "procedure", "t7")

    def at(seconds: float) -> str:
        return inputs(TAG, "T", ctx, datetime.fromtimestamp(seconds, UTC), (), scope).whole

    assert (at(born + 86_401) != at(born + 86_399)) is changed


def _inputs(ctx: RunContext, rules: str, decider: Decider = "prompt") -> Inputs:
    return inputs(rules, "T", ctx, NOON, (), scope_of(rules, ctx, decider, "t7"))


def _decided(ctx: RunContext, rules: str, action: str = "none") -> BeatMemo:
    """The memo of a beat decided on ``ctx`` that did ``action``."""
    seen = _inputs(ctx, rules)
    key = None if action == "none" else "a vote"
    return BeatMemo(
        thread_id="t7",
        fingerprint=seen.whole,
        decision_key=key,
        rest_fingerprint=seen.rest,
        seen_posts=seen.posts,
    )


U3 = _post("u3", USER, "news of the roof")
SUMMARY = "## Rules\n- Comment on the most popular post from the user.\n"
QUIET = "## Rules\n- When nobody posted today, post a summary.\n"
COUNTING = "## Rules\n- Post a summary when 3 new posts arrive.\n"


@pytest.mark.parametrize(
    ("before", "after", "rules", "action", "same"),
    [
        pytest.param(ours(U3), ours(U3), TWO, "none", True, id="the-same-inputs"),
        pytest.param(ours(U3), OURS, TWO, "none", True, id="a-post-of-the-users-left"),
        pytest.param(ours(U3), ours(), TWO, "vote", False, id="left-after-a-beat-that-acted"),
        pytest.param(OURS, ours(U3), TWO, "none", False, id="a-post-arrived"),
        pytest.param(
            ours(U3), ours(_post("u4", USER, "more news")), TWO, "none", False,
            id="one-left-one-arrived",
        ),
        pytest.param(
            ours(U3), ours(replace={"u1": _post("u1", USER, "[t7] what about the roof?", score=1)}),
            TWO, "none", False, id="a-counted-post-changed-and-one-left",
        ),
        pytest.param(ours(A1, U3), ours(U3), TWO, "none", False, id="its-own-post-left"),
        pytest.param(
            ours(U3, messages=[]), OURS, TWO, "none", False, id="a-post-left-and-a-message-too"
        ),
        pytest.param(ours(U3), OURS, SUMMARY, "none", False, id="a-rule-ranking-posts"),
        pytest.param(ours(U3), OURS, QUIET, "none", False, id="a-rule-asking-for-an-absence"),
        pytest.param(ours(U3), OURS, COUNTING, "none", False, id="a-rule-counting-posts"),
        pytest.param(ours(U3), OURS, UNKNOWN, "none", False, id="a-rule-not-understood"),
    ],
)  # fmt: skip
def test_posts_of_others_leaving_the_feed_change_nothing_where_rules_read_posts_one_by_one(
    before: RunContext, after: RunContext, rules: str, action: str, same: bool
) -> None:
    assert unchanged(_decided(before, rules, action), _inputs(after, rules)) is same


def test_a_memo_from_before_the_split_compares_by_the_whole_fingerprint() -> None:
    seen = _inputs(ours(U3), TWO)
    old = BeatMemo(thread_id="t7", fingerprint=seen.whole)  # no rest, no posts stored
    assert unchanged(old, seen)
    assert not unchanged(old, _inputs(OURS, TWO))
