"""The rule reader's two whole-phrase cases: posts tagged for this thread and requests to be
reminded, read in rules, found in posts and messages, and applied by the procedure (pure)."""

from __future__ import annotations

import msgspec
import pytest

from ledger.records import Message, Post, RunContext
from ledger.storage.interface import AGENT, USER
from loops.facts import PostFacts, names_thread, reminder_request
from loops.procedure import choose, post_text, read_context
from loops.reader import (
    keywords,
    mentions_user,
    parse_rule,
    per_post,
    reading,
    reminder,
    thread_tag,
)
from tests.unit.test_fingerprint import _run
from tests.unit.test_procedure import NOW, _post

TAGGED = "Vote up a question from the user that is tagged for this thread and has no votes yet."
REMIND = "When the user asks to be reminded of something, post the reminder once."
ANSWER = "Answer questions tagged for this thread."


@pytest.mark.parametrize(
    ("cond", "tagged"),
    [
        ("questions tagged for this thread", True),
        ("a post addressed to this conversation", True),
        ("posts marked for this chat", True),
        ("posts that carry this thread's tag", True),
        ("posts with this thread's tag", True),
        ("posts tagged by the user", False),
        ("posts tagged #garden", False),
        ("questions about this thread of discussion", False),
        ("when I'm tagged in a post", False),
    ],
)
def test_a_condition_asks_for_posts_tagged_for_this_thread(cond: str, tagged: bool) -> None:
    assert thread_tag(cond) is tagged


@pytest.mark.parametrize(
    ("cond", "mention"),
    [
        ("the user is mentioned in a post", True),
        ("I'm tagged in a post", True),
        ("a post mentions me", True),
        ("a post tags the user", True),
        ("a post is addressed to me", True),
        ("someone writes @user", True),
        ("the user's name is mentioned", True),
        ("a post mentions the user's handle", True),
        ("my name is mentioned", True),
        ("mentions of me", True),
        ("posts mentioned by me", False),
        ("a question from the user that is tagged for this thread", False),
        ("posts tagged by the user", False),
        ("a post mentions an outage", False),
        ("the user asks to be reminded of something", False),
    ],
)
def test_only_a_verb_naming_the_user_is_a_mention_of_the_user(cond: str, mention: bool) -> None:
    assert mentions_user(cond) is mention


@pytest.mark.parametrize(
    ("cond", "asked"),
    [
        ("the user asks to be reminded of something", True),
        ("someone wants a reminder", True),
        ("somebody asks for a reminder", True),
        ('the user says "remind me"', True),
        ("someone says don't let me forget", True),
        ("there is a reminder request", True),
        ("I ask you to remind me of something", True),
        ("when I ask you for a reminder", True),
        ("somebody asks us to remind them", True),
        ("when I remind you", False),
        ("you remind me of Ana", False),
        ("I ask you a question", False),
        ("whenever I need reminding", True),
        ("when I ask for reminders", True),
        ("the user is reminded", False),
        ("a post reminds me of the garden", False),
        ("a post is about reminders", False),
    ],
)
def test_a_condition_names_a_request_to_be_reminded(cond: str, asked: bool) -> None:
    assert reminder(cond) is asked


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("remind me about 3:4", "3:4"),
        ("Please remind me to call Ana tomorrow.", "call Ana tomorrow"),
        ("don't let me forget the milk", "the milk"),
        ("I want to be reminded of the vet", "the vet"),
        ("Can you set a reminder for the dentist?", "the dentist"),
        ("Don't forget to remind me about the vet", "the vet"),
        ("Don't let me forget to call the bank", "call the bank"),
        ("Don't remind me", None),
        ("no need to remind me about it", None),
        ("You don't have to remind me to eat", None),
        ("this reminds me of home", None),
        ("I reminded him yesterday", None),
        ("As a reminder, the office closes at 5.", None),
        ("remind me to " + "buy milk and " * 20 + "eggs", "buy milk and " * 7 + "buy milk"),
    ],
)
def test_what_a_text_asks_to_be_reminded_of(text: str, what: str | None) -> None:
    assert reminder_request(text) == what


@pytest.mark.parametrize(
    ("text", "strict", "loose"),
    [
        ("[t7] what about it?", True, True),
        ("#t7 what about it?", True, True),
        ("ping @T7 here", True, True),
        ("[t70] what about it?", False, False),
        ("#t7-old notes", False, False),
        ("for t7: what about it?", False, True),
        ("what about it?", False, False),
    ],
)
def test_a_post_carries_the_threads_tag(text: str, strict: bool, loose: bool) -> None:
    assert names_thread(text, "t7") is strict
    assert names_thread(text, "t7", loosely=True) is loose


@pytest.mark.parametrize(
    "text",
    [TAGGED, REMIND, ANSWER, "If someone says don't let me forget, post a reminder."],
)
def test_the_two_cases_are_understood(text: str) -> None:
    assert reading(parse_rule(text, "rules"), set(), "").understood


@pytest.mark.parametrize(
    "text",
    [
        "Vote up questions tagged for the project.",
        "When the user asks to be reminded, post a poem.",
    ],
)
def test_words_beyond_the_two_cases_are_still_not_understood(text: str) -> None:
    assert not reading(parse_rule(text, "rules"), set(), "").understood


def test_what_the_two_cases_read() -> None:
    tagged = reading(parse_rule(TAGGED, "rules"), set(), "")
    assert tagged.tagged and tagged.scores and not tagged.messages
    assert tagged.people == frozenset({"user"})  # not a mention rule: the author is named
    asked = reading(parse_rule(REMIND, "rules"), set(), "")
    assert asked.messages and not asked.tagged


def _facts(
    pid: str, title: str, author: str = USER, *, content: str = "", score: int = 0
) -> PostFacts:
    return _post(pid, author, title, content, score=score, thread_id="t7")


@pytest.mark.parametrize(
    ("title", "author", "score", "voted"),
    [
        ("[t7] what about the roof?", USER, 0, "p1"),
        ("[t8] what about the roof?", USER, 0, None),  # another thread's tag
        ("what about the roof?", USER, 0, None),  # no tag
        ("[t7] the roof is done", USER, 0, None),  # no question
        ("[t7] what about the roof?", USER, 2, None),  # has votes
        ("[t7] what about the roof?", "carol", 0, None),  # not the user's
    ],
)
def test_a_question_tagged_for_this_thread(
    title: str, author: str, score: int, voted: str | None
) -> None:
    posts = [_facts("p1", title, author, score=score)]
    choice = choose([parse_rule(TAGGED, "rules")], posts, NOW)
    assert (choice.post.post_id if choice and choice.post else None) == voted
    if choice is not None:
        assert (choice.kind, choice.direction) == ("vote", "up")
        assert "tagged for this thread" in choice.facts


def test_answer_questions_tagged_for_this_thread_comments_on_the_tagged_one() -> None:
    posts = [_facts("p1", "#t8 when?"), _facts("p2", "when is it?"), _facts("p3", "@t7 when?")]
    choice = choose([parse_rule(ANSWER, "rules")], posts, NOW)
    assert choice is not None and choice.kind == "comment"
    assert choice.post is not None and choice.post.post_id == "p3"


@pytest.mark.parametrize(
    ("asked", "posted", "rule", "title"),
    [
        ("call Ana", frozenset(), REMIND, "Reminder: call Ana"),
        ("call Ana", frozenset({"Reminder: call Ana"}), REMIND, None),  # once
        (None, frozenset(), REMIND, None),
        (
            "call Ana",
            frozenset(),
            "When a post by carol asks to be reminded, post the reminder.",
            None,
        ),
        (
            "call Ana",
            frozenset(),
            "If someone says remind me, post a reminder.",
            "Reminder: call Ana",
        ),
        (
            "call Ana",
            frozenset(),
            "When the user asks to be reminded about the vet, post it.",
            None,
        ),
        (
            "take the cat to the vet",
            frozenset(),
            "When the user asks to be reminded about the vet, post it.",
            "Reminder: take the cat to the vet",
        ),
    ],
)
def test_a_request_to_be_reminded_in_the_thread(
    asked: str | None, posted: frozenset[str], rule: str, title: str | None
) -> None:
    now = msgspec.structs.replace(NOW, reminder=asked, posted_titles=posted, posted_recently=True)
    choice = choose([parse_rule(rule, "rules")], [], now)
    assert (post_text(choice, [], now)[0] if choice else None) == title


def test_a_request_to_be_reminded_in_a_post() -> None:
    rule = parse_rule("When someone asks to be reminded in a post, post the reminder.", "rules")
    posts = [_facts("p1", "Garden", content="Please remind me to water the beds.")]
    choice = choose([rule], posts, NOW)
    assert choice is not None and post_text(choice, [], NOW)[0] == "Reminder: water the beds"
    done = msgspec.structs.replace(NOW, posted_titles=frozenset({"Reminder: water the beds"}))
    assert choose([rule], posts, done) is None


def _message(mid: int, role: str, content: str, at: float) -> Message:
    return Message(id=mid, thread_id="t7", role=role, content=content, created_at=at)


def _context(messages: list[Message], posts: list[Post] | None = None) -> RunContext:
    return RunContext(
        messages=messages, contradictions=[], profile=None, posts=posts or [], recent=[]
    )


DAY = 86_400.0


@pytest.mark.parametrize(
    ("messages", "asked"),
    [
        ([_message(1, USER, "remind me to call Ana", DAY)], "call Ana"),
        ([_message(1, USER, "remind me to call Ana", DAY), _message(2, USER, "thanks", DAY)], None),
        (
            [_message(1, USER, "remind me to call Ana", DAY), _message(2, "assistant", "ok", DAY)],
            "call Ana",
        ),
        ([_message(1, USER, "remind me to call Ana", 0.0)], None),  # a day old: taken as done
        ([_message(1, "assistant", "remind me to call Ana", DAY)], None),
    ],
)
def test_the_users_last_message_is_the_request(messages: list[Message], asked: str | None) -> None:
    _, now = read_context(_context(messages), DAY + 60, "UTC", "", "t7")
    assert now.reminder == asked


def test_the_reminders_posted_are_those_of_the_threads_recent_actions() -> None:
    theirs = Post(id="a1", author=AGENT, title="Reminder: call Bo", content="", created_at=1.0)
    mine = _run({"action": "post", "title": "Reminder: call Ana &amp; Bo", "content": "x"})
    found = msgspec.structs.replace(_context([], [theirs]), recent=[mine])
    posts, now = read_context(found, DAY, "UTC", "", "t7")
    assert posts == []  # the procedure reads no post of the agent's
    assert now.posted_titles == frozenset({"Reminder: call Ana & Bo"})  # another thread's: not


@pytest.mark.parametrize(
    ("condition", "each"),
    [
        ("a question from the user that is tagged for this thread and has no votes yet", True),
        ("the user asks to be reminded of something", True),
        ("a post is spam", True),
        ("a post from carol has more than 5 votes", True),
        ("a question has no replies", True),
        ("Every morning", True),
        ("between 22:00 and 07:00 do nothing", True),
        ("any post mentions the garden", True),  # existential: fewer posts, no new match
        ("the most popular post", False),  # ranks the posts in sight
        ("the latest question from carol", False),
        ("a post has more votes than the others", False),  # compares them
        ("all questions are answered", False),  # quantifies over them
        ("Vote up every question from carol", False),  # (distributive, read as the set)
        ("nobody posted today", False),  # an absence
        ("there are no new posts", False),
        ("nothing happened on the Ledger", False),
        ("3 new posts arrive", False),  # counts them
        ("more than four posts arrive", False),
        ("the only post about the garden", False),
    ],
)
def test_a_condition_holds_of_each_post_on_its_own_unless_it_reads_them_together(
    condition: str, each: bool
) -> None:
    assert per_post(condition) is each


@pytest.mark.parametrize(
    ("cond", "found"),
    [
        ("a post that says 'bins' or Ravi's notes", ["bins"]),
        ("Ravi's and Ana's posts", []),
        ("Reply to posts with \u2018urgent\u2019 in the title", ["urgent"]),
        ('posts saying "parking"', ["parking"]),
    ],
)
def test_an_apostrophe_is_not_a_quote(cond: str, found: list[str]) -> None:
    assert keywords(parse_rule(cond, "rules").condition, set()) == found


@pytest.mark.parametrize(
    "text",
    [
        "Questions that nobody has replied to yet deserve an answer.",
        "Please upvote polls so more people see them.",
        "When I ask you to remind me of something, post that reminder once.",
        "Don't ever downvote Ravi's posts.",
    ],
)
def test_rules_in_these_shapes_are_understood(text: str) -> None:
    assert reading(parse_rule(text, "rules"), {"ravi"}, "").understood


# --- kinds of rule read since the second probe set ---------------------------------------------

from heartbeat_md import parse  # noqa: E402
from loops.facts import thanks  # noqa: E402
from loops.reader import rules_of  # noqa: E402
from loops.timewords import recency  # noqa: E402
from tests.unit.test_procedure import _at  # noqa: E402


def _acts(md: str, post: PostFacts, hour: int = 15, weekday: int = 1) -> str | None:
    choice = choose(rules_of(parse(f"## Rules\n{md}\n")), [post], _at(hour, weekday=weekday))
    if choice is None:
        return None
    return choice.kind if choice.direction is None else f"{choice.kind} {choice.direction}"


_ASK = _post("p1", "nadia", "Printer", "Is the office printer working again?")
_NOTE = _post("p1", "nadia", "Printer fixed", "The office printer works again.")
_AT_USER = _post("p1", "hugo", "Gate code", "@user do you know the new gate code?")
_AT_OTHER = _post("p1", "hugo", "Keys", "@lena did you get the spare keys?")
_THANKS = _post("p1", "aiko", "Thank you!", "Big thanks to @user for lending me the drill.")
_THANKS_OTHER = _post("p1", "aiko", "Thank you!", "Big thanks to @ines for the soup.")
_HOWTO = _post("p1", "kofi", "Compost", "How do I start a compost heap on a balcony?")
_URGENT = _post("p1", "lars", "Water leak, urgent", "Water is coming through the ceiling.")
_SPAM = _post("p1", "dealz", "CHEAP WATCHES!!!", "Buy now, 70% off: http://x.example")


@pytest.mark.parametrize(
    ("md", "post", "acts"),
    [
        # a question that sets the condition, then the action
        ("- Got a question from Nadia? Answer it.", _ASK, "comment"),
        ("- Got a question from Nadia? Answer it.", _NOTE, None),
        ("- Spam? Downvote it.", _SPAM, "vote down"),
        ("- Any questions? Don't answer them.", _ASK, None),
        ("- Who is Nadia? Nobody knows.", _ASK, None),
        # the user @mentioned
        ("- If I'm @mentioned, respond.", _AT_USER, "comment"),
        ("- If I'm @mentioned, respond.", _AT_OTHER, None),
        ("- When I get @mentioned, reply.", _AT_USER, "comment"),
        # a post thanking the user
        ("- When somebody thanks me in a post, say you're welcome.", _THANKS, "comment"),
        ("- When somebody thanks me in a post, say you're welcome.", _THANKS_OTHER, None),
        ("- If someone says thank you to me, reply.", _THANKS, "comment"),
        ("- Thank people who share photos.", _THANKS, None),
        # a leading "help" and whom
        ("- Help anyone who asks how to do something.", _HOWTO, "comment"),
        ("- Help whoever asks a question.", _HOWTO, "comment"),
        ("- Help build consensus.", _HOWTO, None),
        # saying: a comment whose words follow
        ("- Someone's post is urgent → say you're on it.", _URGENT, "comment"),
        ("- Urgent posts → tell them help is coming.", _URGENT, "comment"),
        ("- Urgent posts → say nothing.", _URGENT, None),
        ("- Urgent posts → tell me.", _URGENT, None),
        # an emoji for the vote
        ("- spam → 👎", _SPAM, "vote down"),
        ("- 👍 anything from Nadia", _ASK, "vote up"),
        ("- 👍 anything from Zoë", _ASK, None),
        # "no" before the action's noun forbids it
        ("- No replies after 9pm.\n- Answer questions.", _ASK, None),
        ("- No votes on Nadia's posts.\n- Upvote questions.", _ASK, None),
        ("- No replies after 9pm.\n- Answer questions.", _ASK, "comment"),
        ("- No replies yet? Answer it.", _ASK, "comment"),
        # the verb leading a "don't" rule is not a fact it asks for
        ("- Upvote questions.\n- Never vote on anything Nadia posts.", _ASK, None),
    ],
)
def test_kinds_of_rule(md: str, post: PostFacts, acts: str | None) -> None:
    hour = 22 if "after 9pm" in md and acts is None else 15
    assert _acts(md, post, hour) == acts


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("At 7:30 on weekdays, post a good-morning note.", "post"),
        ("Post an answer to unanswered questions.", "comment"),
        ("Write a comment on polls.", "comment"),
        ("Leave a note on posts from newcomers.", "comment"),
        ("Every evening around 8, could you pop up a short summary?", "post"),
        ("Every evening, please post a recap.", "post"),
    ],
)
def test_the_action_after_a_courtesy_and_what_post_names(text: str, kind: str) -> None:
    assert parse_rule(text, "rules").kind == kind


@pytest.mark.parametrize(
    ("cond", "hour", "seconds"),
    [
        ("anything posted in the last hour", 15, 3600),
        ("posts from the past 2 hours", 15, 7200),
        ("within the last thirty minutes", 15, None),  # a number word the table lacks
        ("within the last ten minutes", 15, 600),
        ("any question posted today", 15, 15 * 3600),
        ("today's questions", 9, 9 * 3600),
        ("questions about today", 15, None),
        ("posts in the last week of March", 15, 604800),
        ("the last post", 15, None),
    ],
)
def test_recency(cond: str, hour: int, seconds: int | None) -> None:
    assert recency(cond, hour, 0) == seconds


@pytest.mark.parametrize(("age", "acts"), [(1800, "vote up"), (3 * 3600, None)])
def test_a_recent_post_rule_reads_the_post_age(age: float, acts: str | None) -> None:
    post = _post("p1", "leo", "Garden rota", "I'll water the garden beds.", age_seconds=age)
    assert _acts("- Upvote anything about the garden posted in the last hour.", post) == acts


@pytest.mark.parametrize(
    ("text", "thanked"),
    [
        ("Big thanks to @user for the drill", True),
        ("Thank you @user!", True),
        ("Thanks everyone for coming", False),
        ("@user can you help?", False),
        ("Thanks @ines", False),
    ],
)
def test_thanks(text: str, thanked: bool) -> None:
    assert thanks(text, ("user", "me", "you")) is thanked


def test_a_reminder_asked_for_as_them() -> None:
    rule = parse_rule("I want you to post my reminders when I ask for them.", "reminders")
    assert rule.kind == "post" and reminder(rule.condition)
    assert not reminder(parse_rule("Upvote polls when people ask for them.", "r").condition)


# --- kinds of rule read since the third probe set ----------------------------------------------

_EXAMS = _post("p1", "priya", "Exam dates are out", "Algorithms on 12 May, databases on 15 May.")
_POWER = _post("p1", "omar", "Power cut on Elm Row", "No electricity since 2pm.")
_NOTES = _post("p1", "nina", "Lecture notes?", "Could someone share the lecture notes from Monday?")
_DAYS = 86400.0
_BUG = _post("p1", "lucas", "Bug: crash on an empty config", "tern crashes if tern.toml is empty.")
_RELEASE = _post("p1", "ines", "tern 2.4 released", "The new release is out.")


@pytest.mark.parametrize(
    ("md", "post", "acts"),
    [
        # a chatty lead before the condition, and "hit" as a light verb
        (
            "- So whenever someone posts the exam dates, could you hit upvote on it?",
            _EXAMS,
            "vote up",
        ),
        ("- So whenever someone posts the exam dates, could you hit upvote on it?", _NOTE, None),
        ("- Okay so if a post is spam, downvote it.", _SPAM, "vote down"),
        ("- Hit downvote on spam.", _SPAM, "vote down"),
        ("- Hit downvote on spam.", _ASK, None),
        # a topic named as the object of a person's telling verb
        ("- When someone reports a power cut, post an alert.", _POWER, "post"),
        ("- When someone reports a power cut, post an alert.", _URGENT, None),
        ("- If anyone reports a water leak or a power cut, post an alert.", _URGENT, "post"),
        ("- Whoever posts the exam dates gets an upvote.", _EXAMS, "vote up"),
        ("- Whoever posts the exam dates gets an upvote.", _ASK, None),
        # "asking for" names what is asked for, not any question
        ("- Reply to anyone asking for lecture notes.", _NOTES, "comment"),
        ("- Reply to anyone asking for lecture notes.", _ASK, None),
        # two rules joined by ", and"
        ("- Downvote ads, and reply to anyone asking for lecture notes.", _NOTES, "comment"),
        ("- Downvote ads, and reply to anyone asking for lecture notes.", _SPAM, "vote down"),
        ("- Downvote ads, and reply to anyone asking for lecture notes.", _ASK, None),
        ("- Upvote posts from Ana, Ben, and Nadia.", _ASK, "vote up"),
        ("- Upvote posts from Ana, Ben, and Carl.", _ASK, None),
        ("- Never comment on spam, and don't vote on ads.\n- Downvote spam.", _SPAM, None),
        ("- If Nadia asks a question, upvote it, and reply.", _ASK, "vote up"),
        # "it" and "them" after ", and" name the first rule's object
        ("- Never comment on spam, and don't vote on it.\n- Downvote spam.", _SPAM, None),
        ("- Never comment on spam, and don't vote on it.\n- Upvote questions.", _ASK, "vote up"),
        (
            "- Never vote on Nadia's posts, and don't reply to them.\n- Answer questions.",
            _ASK,
            None,
        ),
        (
            "- Never vote on Nadia's posts, and don't reply to them.\n- Answer questions.",
            _HOWTO,
            "comment",
        ),
        # a noun before a kind of post ("bug reports") is its topic
        ("- Reply to bug reports that nobody has responded to yet.", _BUG, "comment"),
        ("- Reply to bug reports that nobody has responded to yet.", _RELEASE, None),
        ("- Reply to bug reports that nobody has responded to yet.", _ASK, None),
        ("- Upvote release announcements.", _RELEASE, "vote up"),
        ("- Upvote release announcements.", _BUG, None),
        # an age a post must be past
        (
            "- Upvote questions.\n- Don't vote on anything older than two days.",
            msgspec.structs.replace(_ASK, age_seconds=3 * _DAYS),
            None,
        ),
        ("- Upvote questions.\n- Don't vote on anything older than two days.", _ASK, "vote up"),
        (
            "- Comment on questions more than a day old.",
            msgspec.structs.replace(_ASK, age_seconds=2 * _DAYS),
            "comment",
        ),
        ("- Comment on questions more than a day old.", _ASK, None),
        ("- If a question has no replies after 2 hours, answer it.", _ASK, None),
        (
            "- If a question has no replies after 2 hours, answer it.",
            msgspec.structs.replace(_ASK, age_seconds=3 * 3600),
            "comment",
        ),
        ("- If nobody answered a question within an hour, answer it.", _ASK, None),
        (
            "- If nobody answered a question within an hour, answer it.",
            msgspec.structs.replace(_ASK, age_seconds=2 * 3600),
            "comment",
        ),
    ],
)
def test_kinds_of_rule_since_the_third_probe(md: str, post: PostFacts, acts: str | None) -> None:
    assert _acts(md, post) == acts


def test_a_second_rule_after_a_leading_condition_shares_it() -> None:
    rules = rules_of(parse("## Rules\n- If Nadia asks a question, upvote it, and reply.\n"))
    assert [(r.kind, r.direction) for r in rules] == [("vote", "up"), ("comment", None)]
    assert all("Nadia asks a question" in r.condition for r in rules)
    dont = rules_of(parse("## Rules\n- Never comment on spam, and don't vote on it.\n"))
    assert [(r.kind, r.negated) for r in dont] == [("comment", True), ("vote", True)]


@pytest.mark.parametrize(
    "text",
    [
        "So whenever someone posts the exam dates or a deadline, could you hit upvote on it?",
        "When someone reports a water leak or a power cut, post an alert.",
        "Please don't vote on anything older than two days.",
    ],
)
def test_rules_of_the_third_probe_are_understood(text: str) -> None:
    assert reading(parse_rule(text, "rules"), set(), "").understood
