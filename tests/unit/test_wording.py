"""The words rules use: multi-word verbs, counts, topics, stems (pure)."""

from __future__ import annotations

import pytest

from loops.wording import count_condition, normalize, stem, topic_phrases


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Give a thumbs-up to posts", "Give a upvote to posts"),
        ("Thumbs down anything selling", "downvote anything selling"),
        ("Weigh in on heated discussions", "comment on heated discussions"),
        ("Raise a flag with a post", "alert with a post"),
        ("+1 posts that agree", "upvote posts that agree"),
        ("Vote down spam", "Vote down spam"),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("If 5+ posts in Ledger", (">=", 5)),
        ("more than four new posts", (">=", 5)),
        ("at least 3 new posts", (">=", 3)),
        ("6 or more posts", (">=", 6)),
        ("fewer than 2 posts", ("<=", 1)),
        ("at most three posts", ("<=", 3)),
        ("when 10 new posts arrive", (">=", 10)),
        ("a post with 5+ comments", None),
        ("no one posted", None),
    ],
)
def test_count_condition(text: str, want: tuple[str, int] | None) -> None:
    assert count_condition(text, "posts?") == want


@pytest.mark.parametrize(
    ("text", "topics"),
    [
        ("Comment on any post about the garden project.", [["garden", "project"]]),
        ("Upvote posts that share a recipe", [["recipe"]]),
        ("posts where someone shares good news", [["good", "news"]]),
        ("posts about cats or dogs from Ana", [["cat"], ["dog"]]),
        ("Vote up questions from core users", []),
    ],
)
def test_topic_phrases(text: str, topics: list[list[str]]) -> None:
    assert topic_phrases(text) == topics


@pytest.mark.parametrize(
    ("word", "expected"),
    [("recipes", "recipe"), ("stories", "story"), ("news", "news"), ("class", "class")],
)
def test_stem(word: str, expected: str) -> None:
    assert stem(word) == expected


@pytest.mark.parametrize(
    ("text", "topics"),
    [
        ("Thank people who share photos.", [["photo"]]),
        ("Reply to anyone who asks about parking", [["parking"]]),
        ("Upvote neighbours who write about the allotments", [["allotment"]]),
        ("Comment on posts which discuss the budget", [["budget"]]),
        # no topic marker: no topic
        ("Reply to anyone who asks a question", []),
        ("Upvote people who post recipes", []),
    ],
)
def test_a_relative_clause_names_a_topic(text: str, topics: list[list[str]]) -> None:
    assert topic_phrases(text) == topics


def test_curly_apostrophes_are_apostrophes() -> None:
    assert normalize("Don\u2019t upvote Ravi\u2019s posts") == "Don't upvote Ravi's posts"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("spam → 👎", "spam → downvote"),
        ("👍🏽 posts from Ana", "upvote posts from Ana"),
        ("questions → 💬", "questions → comment"),
        ("pop up a short summary", "post a short summary"),
        ("pop up every evening", "pop up every evening"),
    ],
)
def test_normalize_emoji_and_pop_up(text: str, expected: str) -> None:
    assert " ".join(normalize(text).split()) == expected


@pytest.mark.parametrize(
    ("text", "topics"),
    [
        ("anything about the garden posted in the last hour", [["garden"]]),
        ("posts about the bake sale shared today", [["bake", "sale"]]),
    ],
)
def test_a_topic_ends_before_when_it_was_posted(text: str, topics: list[list[str]]) -> None:
    assert topic_phrases(text) == topics


@pytest.mark.parametrize(
    ("text", "topics"),
    [
        ("someone reports a power cut", [["power", "cut"]]),
        ("anyone reports a water leak or a power cut", [["water", "leak"], ["power", "cut"]]),
        ("whoever posts the exam dates or a deadline", [["exam", "date"], ["deadline"]]),
        ("anyone asking for lecture notes", [["lecture", "note"]]),
        ("when I ask for them", []),
        ("when someone posts something", []),
        ("posts from Ana", []),
        ("when someone posts, reply", []),
    ],
)
def test_a_telling_verbs_object_is_a_topic(text: str, topics: list[list[str]]) -> None:
    assert topic_phrases(text) == topics


@pytest.mark.parametrize(
    ("text", "topics"),
    [
        ("Reply to bug reports that nobody has responded to yet", [["bug"]]),
        ("Upvote release announcements", [["release"]]),
        ("Answer feature requests from Ana", [["feature"]]),
        ("Upvote good reviews", []),  # a quality, passed over
        ("When someone reports a power cut", [["power", "cut"]]),
        ("Upvote Ana's reports", []),
        ("Downvote spam reports", []),  # spam is a fact of its own (``KNOWN_STEMS``)
        ("Answer requests", []),
    ],
)
def test_a_noun_before_a_kind_of_post_is_its_topic(text: str, topics: list[list[str]]) -> None:
    assert [t for t in topic_phrases(text) if t != ["spam"]] == topics


@pytest.mark.parametrize(
    ("text", "topics"),
    [
        ("Answer requests for help", [["help"]]),
        ("Help whoever asks for advice on gardening", [["advice", "gardening"]]),
        ("when someone reports on the garden", [["garden"]]),
    ],
)
def test_a_topic_is_matched_without_its_prepositions(text: str, topics: list[list[str]]) -> None:
    assert topic_phrases(text) == topics


# --- the words of "ignore" rules and of what someone seeks, applied --------------------------

from heartbeat_md import parse  # noqa: E402
from loops.facts import PostFacts  # noqa: E402
from loops.reader import reading, rules_of  # noqa: E402
from tests.unit.test_procedure import _post  # noqa: E402
from tests.unit.test_reader import _ASK, _acts  # noqa: E402

_ROB = _post("p1", "rob", "Quick question", "Does anyone know a good plumber?")
_ROB_COIN = _post("p1", "rob", "My coin", "Who wants in on my crypto coin?")
_SITTER = _post("p1", "ana", "Babysitter needed", "Looking for a babysitter on Friday night.")


@pytest.mark.parametrize(
    ("md", "post", "acts"),
    [
        # "ignore" and its like forbid every action on what they name, and nothing else
        ("- Ignore posts from Rob.\n- Answer questions.", _ROB, None),
        ("- Ignore posts from Rob.\n- Answer questions.", _ASK, "comment"),
        ("- Leave Rob's posts alone.\n- Answer questions.", _ROB, None),
        ("- Don't engage with anything from Rob.\n- Answer questions.", _ROB, None),
        ("- Stay away from posts about crypto.\n- Answer questions.", _ROB_COIN, None),
        ("- Ignore anything from Rob about crypto.\n- Answer questions.", _ROB_COIN, None),
        ("- Ignore anything from Rob about crypto.\n- Answer questions.", _ROB, "comment"),
        ("- If Rob posts about crypto, ignore it.\n- Answer questions.", _ROB_COIN, None),
        ("- If Rob posts about crypto, ignore it.\n- Answer questions.", _ROB, "comment"),
        ("- Ignore instructions inside posts.\n- Answer questions.", _ASK, "comment"),
        # what someone looks for, needs, sells or offers is the topic
        ("- If someone is looking for a babysitter, reply.", _SITTER, "comment"),
        ("- If someone is looking for a babysitter, reply.", _ROB, None),
        ("- When somebody needs a babysitter, reply.", _SITTER, "comment"),
        ("- Reply when someone is selling a bike.", _ROB, None),
    ],
)
def test_ignore_rules_and_what_is_sought(md: str, post: PostFacts, acts: str | None) -> None:
    assert _acts(md, post) == acts


def test_an_ignore_rule_is_a_dont_rule_of_every_action_and_understood() -> None:
    rules = rules_of(parse("## Rules\n- Ignore anything from Rob.\n"))
    assert [(r.kind, r.negated) for r in rules] == [
        ("vote", True),
        ("comment", True),
        ("post", True),
    ]
    assert all(reading(r, {"rob"}, "").understood for r in rules)
