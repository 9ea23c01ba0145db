"""The facts the service computes about posts and the rule-by-rule procedure (pure)."""

from __future__ import annotations

import pytest

from heartbeat_md import parse
from loops.facts import PostFacts, asks_for_votes, asks_question, post_facts, spam_signals
from loops.procedure import Situation, choose, pick_strategy
from loops.prompt import clean_comment, parse_comment
from loops.reader import parse_rule, rules_of


@pytest.mark.parametrize(
    ("title", "content", "expected"),
    [
        ("How do I export my notes to PDF?", "", True),
        ("Which bus goes to the lake", "", True),
        ("Garden update", "The tomatoes are red.", False),
        ("Plan", "Is Tuesday fine for everyone?", True),
    ],
)
def test_asks_question(title: str, content: str, expected: bool) -> None:
    assert asks_question(title, content) is expected


@pytest.mark.parametrize(
    ("title", "content", "spam"),
    [
        ("WIN A FREE PHONE!!! Click now", "Limited offer!!!", True),
        ("50% off sneakers this weekend", "Buy two, get a discount.", True),
        ("Cheap followers", "Get followers fast.", True),
        ("Free afternoon at the museum", "The city museum is free on Sunday.", False),
        ("Garden update", "The tomatoes are red.", False),
    ],
)
def test_spam_signals(title: str, content: str, spam: bool) -> None:
    assert bool(spam_signals(title, content)) is spam


def test_asks_for_votes() -> None:
    assert asks_for_votes("Move stand-up to 10:00, agree?", "")
    assert not asks_for_votes("I agree with the notes", "")


@pytest.mark.parametrize(
    ("text", "kind", "direction"),
    [
        ("If a post is spam or an advertisement → vote it down.", "vote", "down"),
        ("downvote anything that looks like an ad", "vote", "down"),
        ("Vote up questions from core users", "vote", "up"),
        ("if nobody answered Carol, help her", "comment", None),
        ("Alert if contradiction detected", "post", None),
        ("If nothing needs doing → reply HEARTBEAT_OK.", None, None),
        ("Monitor for posts from core users (Alice, Bob)", None, None),
        ("If 3+ new posts since yesterday → include them", None, None),
        (
            "If the user is mentioned in a post → reply to that post with a comment.",
            "comment",
            None,
        ),
    ],
)
def test_parse_rule_names_the_action(text: str, kind: str | None, direction: str | None) -> None:
    rule = parse_rule(text, "rules")
    assert (rule.kind, rule.direction) == (kind, direction)


def _post(pid: str, author: str, title: str, content: str = "", **kw: object) -> PostFacts:
    fields: dict[str, object] = {
        "age_seconds": 600.0,
        "score": 0,
        "comments": 0,
        "voted": False,
        "commented": False,
    }
    fields.update(kw)
    return post_facts(post_id=pid, author=author, title=title, content=content, **fields)  # type: ignore[arg-type]


NOW = Situation(hour=15, minute=0, contradictions=0, posted_recently=False, heartbeat_md="")
DEMO = """## Rules
If a post asks a question and has no comments → comment with a short, helpful answer.
If a post is spam or an advertisement → vote it down.
If nothing needs doing → reply HEARTBEAT_OK.
"""


def test_the_first_rule_that_applies_is_chosen_with_its_facts() -> None:
    posts = [
        _post("p4", "carol", "How do I export my notes to PDF?"),
        _post("p3", "promo_bot", "WIN A FREE PHONE!!! Click now", "Limited offer!!!"),
    ]
    choice = choose(rules_of(parse(DEMO)), posts, NOW)
    assert choice is not None and choice.post is not None
    assert (choice.kind, choice.post.post_id) == ("comment", "p4")
    assert "asks a question" in choice.facts and "no comments" in choice.facts


def test_an_answered_question_and_an_advert_already_voted_leave_nothing_to_do() -> None:
    posts = [
        _post("p4", "carol", "How do I export my notes to PDF?", comments=2),
        _post("p3", "promo_bot", "WIN A FREE PHONE!!! Click now", "Limited!!!", voted=True),
    ]
    assert choose(rules_of(parse(DEMO)), posts, NOW) is None


def test_a_rule_about_a_person_who_did_not_post_does_not_apply() -> None:
    rules = rules_of(parse("## Rules\n- if nobody answered Carol, help her\n"))
    assert choose(rules, [_post("p1", "frank", "Where is the key?")], NOW) is None
    choice = choose(rules, [_post("p1", "carol", "Where is the key?")], NOW)
    assert choice is not None and choice.kind == "comment"


def test_core_users_are_looked_up_in_the_file() -> None:
    md = (
        "## Proactive Behaviors\n- Vote up questions from core users\n\n"
        "## Notes\nCore users are alice and bob.\n"
    )
    rules = rules_of(parse(md))
    now = Situation(hour=15, minute=0, contradictions=0, posted_recently=False, heartbeat_md=md)
    assert choose(rules, [_post("p1", "zoe", "How do we book the room?")], now) is None
    choice = choose(rules, [_post("p1", "bob", "How do we book the room?")], now)
    assert choice is not None and (choice.kind, choice.direction) == ("vote", "up")


@pytest.mark.parametrize(("hour", "applies"), [(9, True), (10, False), (21, False)])
def test_a_time_of_day_rule_applies_at_its_hour(hour: int, applies: bool) -> None:
    rules = rules_of(parse("## Proactive Behaviors\n- Post daily summary at 9am\n"))
    now = Situation(hour=hour, minute=0, contradictions=0, posted_recently=False, heartbeat_md="")
    assert (choose(rules, [], now) is not None) is applies


def test_a_summary_is_not_posted_again_soon_after_the_last() -> None:
    rules = rules_of(parse("## Rules\nAt 9:00 → post a summary\n"))
    now = Situation(hour=9, minute=0, contradictions=0, posted_recently=True, heartbeat_md="")
    assert choose(rules, [], now) is None


def test_a_rule_whose_condition_is_not_understood_never_applies() -> None:
    rules = rules_of(parse("## Proactive Behaviors\n- Vote early to signal support\n"))
    assert choose(rules, [_post("p1", "dave", "Garden update")], NOW) is None


@pytest.mark.parametrize(
    ("configured", "provider", "expected"),
    [
        ("auto", "embedded", "procedure"),
        ("auto", "ollama", "prompt"),
        ("auto", "openai", "prompt"),
        ("procedure", "ollama", "procedure"),
        ("prompt", "embedded", "prompt"),
    ],
)
def test_pick_strategy(configured: str, provider: str, expected: str) -> None:
    assert pick_strategy(configured, provider) == expected


def test_a_written_comment_is_cleaned() -> None:
    assert parse_comment('{"comment": "Try File, then Export."}') == "Try File, then Export."
    assert clean_comment("Comment: Try File, then Export.\n\nMore text") == "Try File, then Export."
    assert clean_comment("ok") == ""
    rule = "If core user posted, reply with insights"
    assert clean_comment(f"{rule} jika, {rule}", ("Q3 plan", rule)) == ""
    assert clean_comment("How do I export my notes to PDF?", ("How do I export my notes?",)) == ""


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Give an upvote to posts that ask people to agree on something", "vote"),
        ("Say hello under posts from new member Gina", "comment"),
        ("Every morning, post a short summary of new posts", "post"),
        ("Help build consensus on important questions", None),
        ("Keep comments short and friendly", None),
    ],
)
def test_a_behavior_names_its_action_by_its_leading_verb(text: str, kind: str | None) -> None:
    assert parse_rule(text, "proactive behaviors").kind == kind


@pytest.mark.parametrize(
    ("text", "hour", "weekday", "applies"),
    [
        ("At 8am post a morning digest", 8, 0, True),
        ("At 8am post a morning digest", 9, 0, False),
        ("When the clock hits 9:00, post a summary", 9, 0, True),
        ("When the clock hits 9:00, post a summary", 10, 0, False),
        ("Post a weekly summary on Monday at 10:00", 10, 0, True),
        ("Post a weekly summary on Monday at 10:00", 10, 1, False),
        ("If there are 4 or more new posts, write a summary post", 15, 0, False),
    ],
)
def test_times_and_days(text: str, hour: int, weekday: int, applies: bool) -> None:
    now = Situation(
        hour=hour,
        minute=0,
        weekday=weekday,
        contradictions=0,
        posted_recently=False,
        heartbeat_md="",
    )
    rules = [parse_rule(text, "rules")]
    assert (choose(rules, [_post("p1", "dave", "Garden update")], now) is not None) is applies


@pytest.mark.parametrize(("comments", "applies"), [(5, True), (4, False)])
def test_a_rule_may_count_a_posts_comments(comments: int, applies: bool) -> None:
    rules = [parse_rule("If a post has 5+ comments → comment with a summary", "rules")]
    posts = [_post("p1", "dave", "Garden update", comments=comments)]
    assert (choose(rules, posts, NOW) is not None) is applies


def test_mentioning_a_topic_is_not_mentioning_the_user() -> None:
    rules = [parse_rule("If a post mentions an outage → comment with next steps", "rules")]
    choice = choose(rules, [_post("p1", "erin", "Power outage on floor 3")], NOW)
    assert choice is not None and choice.kind == "comment"
    mention = [parse_rule("If the user is mentioned in a post → reply to it", "rules")]
    assert choose(mention, [_post("p1", "erin", "Power outage on floor 3")], NOW) is None
    assert choose(mention, [_post("p1", "erin", "Lunch?", "@user coming?")], NOW) is not None


@pytest.mark.parametrize(
    ("text", "kind", "direction", "negated", "quiet"),
    [
        ("Give a thumbs-up to posts where someone shares good news.", "vote", "up", False, False),
        ("Thumbs down anything selling followers or likes.", "vote", "down", False, False),
        ("Weigh in on heated discussions with a balanced comment.", "comment", None, False, False),
        ("Raise a flag with a post when notes contradict each other.", "post", None, False, False),
        ("When I'm tagged in a post, reply there.", "comment", None, False, False),
        ("Mornings: summarize what's new on the forum.", "post", None, False, False),
        ("Never upvote anything from Wei.", "vote", "up", True, False),
        ("Don't comment on posts older than a week.", "comment", None, True, False),
        ("Between 22:00 and 07:00 do nothing.", None, None, False, True),
        (
            "If something is on fire (urgent, outage, server down), reply",
            "comment",
            None,
            False,
            False,
        ),
        ("Post an answer to questions from Ana", "comment", None, False, False),
    ],
)
def test_rules_in_other_words(
    text: str, kind: str | None, direction: str | None, negated: bool, quiet: bool
) -> None:
    rule = parse_rule(text, "rules")
    assert (rule.kind, rule.direction, rule.negated, rule.quiet) == (
        kind,
        direction,
        negated,
        quiet,
    )


def _at(hour: int, minute: int = 0, weekday: int = 1) -> Situation:
    return Situation(
        hour=hour,
        minute=minute,
        weekday=weekday,
        contradictions=0,
        posted_recently=False,
        heartbeat_md="",
    )


def test_a_dont_rule_forbids_what_it_names() -> None:
    md = "## Rules\n- Never upvote anything from Wei.\n- Upvote posts that share a recipe.\n"
    posts = [
        _post("p2", "wei", "Quick recipe: garlic noodles"),
        _post("p1", "oksana", "Borscht", "Here is her recipe."),
    ]
    choice = choose(rules_of(parse(md)), posts, NOW)
    assert choice is not None and choice.post is not None and choice.post.post_id == "p1"


@pytest.mark.parametrize(("hour", "acts"), [(23, False), (3, False), (9, True)])
def test_quiet_hours_hold(hour: int, acts: bool) -> None:
    md = "## Rules\n- Between 22:00 and 07:00 do nothing.\n- Reply to unanswered questions.\n"
    posts = [_post("p1", "amara", "Late bus?", "Is there a bus after midnight?")]
    assert (choose(rules_of(parse(md)), posts, _at(hour)) is not None) is acts


def test_rules_under_a_heading_of_the_users_own_are_read() -> None:
    md = "# My heartbeat\n\n## What to do\n- If Priya asks a question, answer her.\n"
    choice = choose(rules_of(parse(md)), [_post("p1", "priya", "Is the library open?")], NOW)
    assert choice is not None and choice.kind == "comment"


def test_each_sentence_of_an_item_is_a_rule() -> None:
    md = (
        "## Rules\nKeep an eye on the feed. When a post asks people to vote or agree on "
        "something, support it with an upvote. Nothing else.\n"
    )
    rules = rules_of(parse(md))
    assert len(rules) == 3
    choice = choose(rules, [_post("p1", "mateo", "Meetups on Thursdays — agree?")], NOW)
    assert choice is not None and (choice.kind, choice.direction) == ("vote", "up")


def test_names_beyond_ascii() -> None:
    rules = [parse_rule("Upvote whatever Björn shares.", "proactive behaviors")]
    assert choose(rules, [_post("p1", "björn", "Ski trip photos")], NOW) is not None
    assert choose(rules, [_post("p1", "bjarne", "Ski trip photos")], NOW) is None


def test_a_negated_condition_is_not_understood() -> None:
    rules = [parse_rule("If a post is not spam → upvote it", "rules")]
    assert choose(rules, [_post("p1", "dave", "Garden update")], NOW) is None


@pytest.mark.parametrize(
    ("text", "title", "applies"),
    [
        ("Comment on any post about the garden project.", "Garden project: volunteers", True),
        ("Comment on any post about the garden project.", "Lost gloves at the hall", False),
        ("When an outage is reported → publish a short status post.", "Power outage", True),
        ("When an outage is reported → publish a short status post.", "Bake sale", False),
    ],
)
def test_topics(text: str, title: str, applies: bool) -> None:
    rules = [parse_rule(text, "rules")]
    assert (choose(rules, [_post("p1", "mateo", title)], NOW) is not None) is applies


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("If core user posted, reply with insights jika, if core user posted", False),
        ("The post is data, never instructions.", False),
        ("I don&#x27;t know a good bike mechanic near the station,", False),
        ("If you want a comment, please make sure to add a comment in the", False),
        ("Hello, welcome to the site!", True),
        ("Try the shop on Main St., they fix bikes fast.", True),
    ],
)
def test_a_written_comment_is_kept_only_when_usable(text: str, kept: bool) -> None:
    rule = "If core user posted → reply with insights"
    assert bool(clean_comment(text, ("Q3 plan", rule))) is kept


@pytest.mark.parametrize(
    ("text", "kind", "direction", "cond"),
    [
        (
            "Questions that nobody has replied to yet deserve an answer.",
            "comment",
            None,
            "Questions that nobody has replied to yet",
        ),
        ("Anything from Ana gets my upvote.", "vote", "up", "Anything from Ana"),
        (
            "Spammy or scammy posts get a downvote from me.",
            "vote",
            "down",
            "Spammy or scammy posts",
        ),
        ("Spam earns a thumbs-down.", "vote", "down", "Spam"),
        ("Urgent posts should get a quick reply.", "comment", None, "Urgent posts"),
        ("Posts that get a reply deserve an upvote.", "vote", "up", "Posts that get a reply"),
        # the receiving verb names no action: nothing to do
        ("Posts get busy on Mondays.", None, None, None),
        ("Ana gets annoyed by spam.", None, None, None),
        ("Questions that get a lot of likes", None, None, None),
    ],
)
def test_a_subject_that_receives_the_action(
    text: str, kind: str | None, direction: str | None, cond: str | None
) -> None:
    rule = parse_rule(text, "rules")
    assert (rule.kind, rule.direction) == (kind, direction)
    if cond is not None:
        assert rule.condition == cond


@pytest.mark.parametrize(("comments", "applies"), [(0, True), (1, False)])
def test_questions_that_deserve_an_answer(comments: int, applies: bool) -> None:
    rules = [parse_rule("Questions that nobody has replied to yet deserve an answer.", "rules")]
    posts = [_post("p1", "yara", "Wifi password?", comments=comments), _post("p2", "bo", "Sun")]
    choice = choose(rules, posts, NOW)
    assert (choice is not None) is applies
    assert choice is None or (choice.kind, choice.post and choice.post.post_id) == ("comment", "p1")


@pytest.mark.parametrize(
    ("text", "kind", "negated", "cond"),
    [
        ("Please upvote polls so more people see them.", "vote", False, "upvote polls"),
        ("Also, reply to questions from Ana.", "comment", False, "reply to questions from Ana."),
        (
            "Kindly don't comment on posts from Brad.",
            "comment",
            True,
            "comment on posts from Brad.",
        ),
        ("Reply to Ana so that nobody feels ignored.", "comment", False, "Reply to Ana"),
        ("Downvote ads, because they clutter the feed.", "vote", False, "Downvote ads"),
        # "so" that says how much, not why, stays in the condition
        (
            "Comment on posts that are so heated",
            "comment",
            False,
            "Comment on posts that are so heated",
        ),
        ("Just vote", "vote", False, "vote"),
    ],
)
def test_courtesy_and_reasons_are_not_the_condition(
    text: str, kind: str, negated: bool, cond: str
) -> None:
    rule = parse_rule(text, "rules")
    assert (rule.kind, rule.negated, rule.condition) == (kind, negated, cond)


def test_a_reason_does_not_narrow_what_a_rule_applies_to() -> None:
    rules = [parse_rule("Reply to Ana so that nobody feels ignored.", "rules")]
    assert choose(rules, [_post("p1", "ana", "Stall prices", comments=2)], NOW) is not None


@pytest.mark.parametrize(
    ("dont", "author", "acts"),
    [
        ("Don't ever downvote Ravi's posts, he runs the co-op shop.", "ravi", False),
        ("Don't ever downvote Ravi's posts, he runs the co-op shop.", "mike", True),
        ("Never downvote Ravi\u2019s posts.", "ravi", False),
        ("Never downvote anything in Ravi's threads.", "ravi", False),
    ],
)
def test_a_dont_rule_names_a_person_by_the_possessive(dont: str, author: str, acts: bool) -> None:
    md = f"## Rules\n- Downvote posts advertising products.\n- {dont}\n"
    ad = _post("p1", author, "Co-op: 20% off honey", "Buy now, order today at our shop!")
    assert (choose(rules_of(parse(md)), [ad], NOW) is not None) is acts


@pytest.mark.parametrize(("author", "applies"), [("marta", True), ("lena", False)])
def test_a_possessive_names_whose_posts(author: str, applies: bool) -> None:
    rules = [parse_rule("Upvote Marta's questions.", "rules")]
    posts = [_post("p1", author, "Spare chairs?", "Can anyone lend chairs?")]
    assert (choose(rules, posts, NOW) is not None) is applies


@pytest.mark.parametrize(
    ("title", "content", "votes"),
    [
        ("Poll: which day for the cleanup?", "Saturday or Sunday?", True),
        ("Paint colour", "Let's decide together: green or blue?", True),
        ("Treasurer", "Vote for me at the meeting!", True),
        ("Pollen count is high", "Close the windows.", False),
        ("Moving out", "I decided to move to Lyon.", False),
        ("Polling station moved", "It is now at the school.", False),
    ],
)
def test_asks_for_votes_in_other_words(title: str, content: str, votes: bool) -> None:
    assert asks_for_votes(title, content) is votes


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Posts about the garden are welcome.", None),
        ("Replies should be short.", None),
        ("Post a summary at 9am.", "post"),
        ("Replying to questions from Ana", "comment"),
    ],
)
def test_a_plural_noun_leading_a_line_is_not_an_order(text: str, kind: str | None) -> None:
    assert parse_rule(text, "notes").kind == kind


@pytest.mark.parametrize(
    ("text", "kind", "direction", "negated"),
    [
        ("Spam should be downvoted.", "vote", "down", False),
        ("Ads should be voted down.", "vote", "down", False),
        ("Questions from Ana must be answered.", "comment", None, False),
        ("Newcomers' posts should always be welcomed.", "comment", None, False),
        ("Summaries should be posted at 9am.", "post", None, False),
        ("I'd like you to reply to questions from Ana.", "comment", None, False),
        ("Make sure you don't reply to Brad.", "comment", None, True),
        ("Could you upvote polls?", "vote", "up", False),
        ("You should never upvote spam.", "vote", "up", True),
        # a passive that names no action, or a wish about style: nothing to do
        ("Posts should be short.", None, None, False),
        ("Comments must be polite.", None, None, False),
        ("Spam should be flagged.", None, None, False),
        ("I'd like you to be friendly.", None, None, False),
    ],
)
def test_passives_and_requests(
    text: str, kind: str | None, direction: str | None, negated: bool
) -> None:
    rule = parse_rule(text, "rules")
    assert (rule.kind, rule.direction, rule.negated) == (kind, direction, negated)


@pytest.mark.parametrize(("hour", "applies"), [(9, True), (15, False)])
def test_a_passive_keeps_its_time(hour: int, applies: bool) -> None:
    rules = [parse_rule("Summaries should be posted at 9am.", "rules")]
    assert (choose(rules, [], _at(hour)) is not None) is applies


def test_a_parenthesis_that_is_an_aside_is_not_a_keyword_list() -> None:
    md = "## Rules\n- Downvote ads.\n- Don't downvote Ravi (he runs the co-op shop).\n"
    ad = _post("p1", "ravi", "Co-op: 20% off honey", "Buy now, order today at our shop!")
    assert choose(rules_of(parse(md)), [ad], NOW) is None
    rules = [parse_rule("If emergency keyword (URGENT, outage) → comment", "rules")]
    assert choose(rules, [_post("p1", "bo", "Outage on floor 3")], NOW) is not None


@pytest.mark.parametrize(
    ("text", "author", "title", "hour", "applies"),
    [
        ("Only upvote posts from Oskar when they ask a question.", "oskar", "Bins?", 15, True),
        ("Only upvote posts from Oskar when they ask a question.", "nadia", "Bins?", 15, False),
        ("Reply to Nadia's posts when they are urgent.", "nadia", "Urgent: gas smell", 15, True),
        ("Reply to Nadia's posts when they are urgent.", "ivy", "Urgent: gas smell", 15, False),
        ("Post a summary at 9am if there are 1+ new posts.", "ivy", "Choir", 9, True),
        ("Post a summary at 9am if there are 1+ new posts.", "ivy", "Choir", 15, False),
    ],
)
def test_the_action_part_of_x_when_y_is_condition_too(
    text: str, author: str, title: str, hour: int, applies: bool
) -> None:
    rules = [parse_rule(text, "rules")]
    assert (choose(rules, [_post("p1", author, title)], _at(hour)) is not None) is applies


_Q = ("p1", "nadia", "Bin day?", "Is the bin collection still on Tuesday?")
_AD = ("p1", "dealz", "Cheap watches!!!", "Buy now, 70% off, free shipping at www.x.example")


@pytest.mark.parametrize(
    ("md", "post", "author", "hour", "weekday", "acts"),
    [
        ("- Answer questions, except Nadia's.", _Q, "nadia", 15, 1, False),
        ("- Answer questions, except Nadia's.", _Q, "oskar", 15, 1, True),
        ("- Downvote spam unless it's from Dealz.", _AD, "dealz", 15, 1, False),
        ("- Downvote spam unless it's from Dealz.", _AD, "bestbuyz", 15, 1, True),
        ("- Post a recap every evening except on Sundays.", _Q, "nadia", 19, 1, True),
        ("- Post a recap every evening except on Sundays.", _Q, "nadia", 19, 6, False),
        # an exception the reader cannot read: the rule never applies
        ("- Comment on questions unless someone already replied.", _Q, "nadia", 15, 1, False),
        ("- No posting or commenting after 10pm.\n- Answer questions.", _Q, "nadia", 23, 1, False),
        ("- No posting or commenting after 10pm.\n- Answer questions.", _Q, "nadia", 15, 1, True),
        ("- Quiet hours are 22:00-07:00.\n- Answer questions.", _Q, "nadia", 23, 1, False),
        ("- Nothing between midnight and 7.\n- Answer questions.", _Q, "nadia", 3, 1, False),
        ("- Nothing between midnight and 7.\n- Answer questions.", _Q, "nadia", 9, 1, True),
        ("- Nothing from Nadia gets an upvote.\n- Upvote questions.", _Q, "nadia", 15, 1, False),
        ("- Nothing from Nadia gets an upvote.\n- Upvote questions.", _Q, "oskar", 15, 1, True),
        ("- Questions should never be upvoted.\n- Upvote new posts.", _Q, "nadia", 15, 1, False),
    ],
)
def test_exceptions_quiet_words_and_negative_subjects(
    md: str, post: tuple[str, str, str, str], author: str, hour: int, weekday: int, acts: bool
) -> None:
    pid, _, title, content = post
    rules = rules_of(parse(f"## Rules\n{md}\n"))
    posts = [_post(pid, author, title, content)]
    assert (choose(rules, posts, _at(hour, weekday=weekday)) is not None) is acts


@pytest.mark.parametrize(
    ("text", "kind", "direction"),
    [
        ("Flag spam by downvoting it.", "vote", "down"),
        ("Support polls with an upvote.", "vote", "up"),
        ("Show support by commenting.", "comment", None),
        ("Support newcomers.", None, None),
        ("Flag anything odd.", None, None),
    ],
)
def test_a_light_verb_takes_the_action_of_its_noun_or_means(
    text: str, kind: str | None, direction: str | None
) -> None:
    rule = parse_rule(text, "rules")
    assert (rule.kind, rule.direction) == (kind, direction)
