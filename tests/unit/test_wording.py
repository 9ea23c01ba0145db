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
