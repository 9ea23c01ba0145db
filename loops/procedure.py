"""The rule-by-rule decision procedure, for models too small to follow the whole prompt.

Pure: the rules and the facts in, a choice out. The rules come from the rule reader
(``loops.reader``: each rule and proactive behavior read as a condition and the action it
names); here the conditions are checked against the facts the service computed
(``loops.facts``), rules first, in the file's order, and the first rule that applies to
something the agent has not acted on yet is the choice. A rule whose condition names nothing
it can check, or negates something it does not read, never applies: acting on a guess is worse
than a quiet beat; other words it does not know are passed over. The model is then
asked only for the text of a comment or post already chosen.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Final, Literal
from zoneinfo import ZoneInfo

import msgspec

from ledger.records import Message, Post, Run, RunContext
from ledger.storage.interface import AGENT, USER
from loops import reader, timewords, wording
from loops.facts import (
    NEW_SECONDS,
    PostFacts,
    contains_keyword,
    is_new,
    mentions,
    post_facts,
    reminder_request,
)
from loops.reader import Kind, Rule

__all__ = [
    "Choice",
    "Situation",
    "about",
    "choose",
    "clock_facts",
    "pick_strategy",
    "plain_comment",
    "post_text",
    "read_context",
    "reasoning",
    "reminder_title",
]

RECENT_POST_SECONDS: Final = 12 * 3600  # a post of the agent's this recent: no other post yet


class Situation(msgspec.Struct, frozen=True, kw_only=True):
    """Everything outside the posts a condition may read."""

    hour: int
    minute: int
    weekday: int = -1  # Monday is 0; -1 when unknown
    contradictions: int
    posted_recently: bool  # the agent made a post among its recent actions
    heartbeat_md: str  # the whole file, to look up who "core users" are
    reminder: str | None = None  # what the user's last message asks to be reminded of
    posted_titles: frozenset[str] = frozenset()  # titles of the posts of its recent actions


class Choice(msgspec.Struct, frozen=True, kw_only=True):
    """The action a rule names and what it applies to, with the facts that made it apply."""

    rule: Rule
    kind: Kind
    direction: Literal["up", "down"] | None = None
    post: PostFacts | None = None
    facts: list[str] = msgspec.field(default_factory=list)
    reminder: str | None = None  # a reminder to post: what someone asked to be reminded of


def _time_ok(cond: str, now: Situation) -> bool | None:
    """None when the condition names no time of day or day of the week."""
    when = timewords.read_time(cond)
    return None if when is None else when.holds(now.hour, now.minute, now.weekday)


def _compare(have: int, want: wording.Compare) -> bool:
    return have >= want[1] if want[0] == ">=" else have <= want[1]


def _count_ok(cond: str, posts: Sequence[PostFacts]) -> bool | None:
    want = wording.count_condition(cond, reader.POST_NOUNS)
    if want is None:
        return None
    fresh = ("new", "since", "last day", "today", "recent", "fresh", "unread", "arrive")
    pool = [p for p in posts if p.new] if reader.has(cond, *fresh) else list(posts)
    return _compare(len(pool), want)


def _contradictions_ok(cond: str, now: Situation) -> bool | None:
    if not reader.concept(cond, "contradiction"):
        return None
    want = wording.count_condition(
        cond, r"contradictions?|conflicts?|inconsistenc(?:y|ies)|notes?|statements?"
    )
    if want is not None:
        return _compare(now.contradictions, want)
    m = re.search(r"(?:>=|>|more than|over|above|at least)\s*(\d+)", cond.lower())
    if m is None:  # "if contradiction count > 3"
        return now.contradictions >= 1
    n = int(m.group(1))
    return now.contradictions >= (n if m.group(0).startswith(("at least", ">=")) else n + 1)


def _post_topics(
    cond: str, post: PostFacts, keywords: list[str], topics: list[list[str]]
) -> tuple[bool, list[str]] | None:
    """Does the post have the topic the condition names? None when it names none."""
    checks: list[tuple[bool, str]] = []
    if reader.concept(cond, "spam"):
        checks.append((bool(post.spam), f"looks like spam ({', '.join(post.spam)})"))
    votes = reader.concept(cond, "votes")
    if votes:
        checks.append((post.asks_votes, "asks for votes"))
    if reader.concept(cond, "urgent"):
        checks.append((post.urgent, "urgent"))
    if reader.concept(cond, "controversial"):
        checks.append((post.controversial, "controversial"))
    # "a consensus question" is about the votes; "questions from core users" about a question
    if not votes and reader.concept(cond, "question"):
        checks.append((post.question, "asks a question"))
    for key in keywords:
        checks.append((contains_keyword(post.text, key), f"contains {key!r}"))
    if topics:
        have = set(wording.stems(post.text))
        for topic in topics:
            checks.append((set(topic) <= have, f"about {' '.join(topic)!r}"))
    if not checks:
        return None
    hits = [why for ok, why in checks if ok]
    return bool(hits), hits


def _post_state(cond: str, post: PostFacts) -> tuple[bool, list[str]]:
    """The state conditions (no comments, no votes, engagement, new), all of them."""
    why: list[str] = []
    if reader.concept(cond, "no_comments"):
        if post.comments:
            return False, []
        why.append("no comments")
    if reader.concept(cond, "no_votes"):
        if post.score != 0:
            return False, []
        why.append("no votes")
    for what, nouns, have in (
        ("comments", r"comments?|replies|answers?|responses?", post.comments),
        ("votes", r"votes?|upvotes?|points?|likes?", post.score),
    ):
        want = wording.count_condition(cond, nouns)
        if want is not None and want != (">=", 0):
            if not _compare(have, want):
                return False, []
            why.append(f"{have} {what}")
    if reader.concept(cond, "engaged"):
        if not post.engaged:
            return False, []
        why.append(f"high engagement ({post.comments} comments, score {post.score})")
    return True, why


def _acted(kind: Kind, post: PostFacts) -> bool:
    return post.voted if kind == "vote" else post.commented


def _moment(rule: Rule, posts: Sequence[PostFacts], now: Situation) -> tuple[bool, list[str]]:
    """(all the moment's conditions hold, their facts); facts empty when none is named."""
    cond = rule.condition
    facts: list[str] = []
    for check, label in (
        (_time_ok(cond, now), f"local time {now.hour:02d}:{now.minute:02d}"),
        (_contradictions_ok(cond, now), f"{now.contradictions} open contradiction(s)"),
        (_count_ok(cond, posts), f"{len(posts)} posts, {sum(p.new for p in posts)} new"),
    ):
        if check is None:
            continue
        if not check:
            return False, []
        facts.append(label)
    return True, facts


def _matches(rule: Rule, post: PostFacts, authors: set[str], now: Situation) -> list[str] | None:
    """What about the post meets the rule's post conditions; None when it does not, or when
    the rule names nothing about a post."""
    cond = rule.condition
    people = reader.people(rule, authors, now.heartbeat_md)
    why: list[str] = []
    if people is not None:
        if post.author.lower() not in people:
            return None
        why.append(f"posted by {post.author}")
    mention = reader.mentions_user(cond)
    if mention:
        if not mentions(post.text, ("user", "me", "you")):
            return None
        why.append("mentions the user")
    addressed = _addressed(cond, post)
    if addressed is None:
        return None
    why += addressed
    within = timewords.recency(cond, now.hour, now.minute)  # "posted in the last hour"
    if within is not None:
        if post.age_seconds > within:
            return None
        why.append(f"posted {int(post.age_seconds // 60)} minutes ago")
    older = timewords.older_than(cond)  # "anything older than two days"
    if older is not None:
        if post.age_seconds <= older:
            return None
        why.append(f"posted {int(post.age_seconds // 3600)} hours ago")
    topics = _post_topics(cond, post, reader.keywords(cond, authors), reader.topics(cond))
    if topics is not None:
        if not topics[0]:
            return None
        why += topics[1]
    ok, state = _post_state(cond, post)
    if not ok:
        return None
    why += state
    if not why and not (people or mention):
        return None  # nothing about the post was understood
    return why


def _addressed(cond: str, post: PostFacts) -> list[str] | None:
    """The post meets the condition's whole-phrase cases, all of them ("tagged for this
    thread": it carries the thread's tag; "asks to be reminded": it asks); None when not."""
    why: list[str] = []
    if reader.thread_tag(cond):
        if not post.tagged:
            return None
        why.append("tagged for this thread")
    if reader.reminder(cond):
        if post.reminder is None:
            return None
        why.append(f"asks to be reminded of {post.reminder!r}")
    if reader.thanks_user(cond):
        if not post.thanks_user:
            return None
        why.append("thanks the user")
    return why


def _blocked(kind: Kind, post: PostFacts | None, rules: Sequence[Rule], ctx: _Ctx) -> bool:
    """A "don't" rule forbids this action (on this post)."""
    for rule in rules:
        if not rule.negated or rule.kind not in (kind, None):
            continue
        ok, moment = _moment(rule, ctx.posts, ctx.now)
        if not ok:
            continue
        about_post = None if post is None else _matches(rule, post, ctx.authors, ctx.now)
        if about_post is not None or (moment and not _names_a_post(rule, ctx)):
            return True
    return False


def _names_a_post(rule: Rule, ctx: _Ctx) -> bool:
    return any(_matches(rule, p, ctx.authors, ctx.now) is not None for p in ctx.probe)


class _Ctx(msgspec.Struct, frozen=True):
    posts: Sequence[PostFacts]
    now: Situation
    authors: set[str]
    probe: Sequence[PostFacts]  # posts to learn whether a rule names anything about a post


def _applies(rule: Rule, rules: Sequence[Rule], ctx: _Ctx) -> Choice | None:
    if rule.kind is None or rule.negated or rule.quiet or reader.negation_unread(rule.condition):
        return None
    ok, facts = _moment(rule, ctx.posts, ctx.now)
    if not ok:
        return None
    if rule.kind == "post":
        if _blocked("post", None, rules, ctx):
            return None
        asked = _reminder_asked(rule, ctx)
        if asked is not None:  # "When the user asks to be reminded …, post the reminder once"
            said = [*facts, f"the user asked to be reminded of {asked!r}"]
            return Choice(rule=rule, kind="post", facts=said, reminder=asked)
        if ctx.now.posted_recently:
            return None
        if facts:
            return Choice(rule=rule, kind="post", facts=facts)
        for post in ctx.posts:  # "When an outage is reported, post an alert"
            if post.new and (found := _matches(rule, post, ctx.authors, ctx.now)):
                if post.reminder is not None and reader.reminder(rule.condition):
                    if reminder_title(post.reminder) in ctx.now.posted_titles:
                        continue  # reminded once already
                    return Choice(rule=rule, kind="post", facts=found, reminder=post.reminder)
                return Choice(rule=rule, kind="post", facts=found)
        return None
    for post in ctx.posts:  # newest first
        if _acted(rule.kind, post):
            continue
        why = _matches(rule, post, ctx.authors, ctx.now)
        if why is None or _blocked(rule.kind, post, rules, ctx):
            continue
        return Choice(
            rule=rule, kind=rule.kind, direction=rule.direction, post=post, facts=facts + why
        )
    return None


def _reminder_asked(rule: Rule, ctx: _Ctx) -> str | None:
    """What the user's last message in the thread asks to be reminded of, when the rule is
    about such a request (and names the user or nobody) and the reminder is not posted yet."""
    if not reader.reminder(rule.condition) or ctx.now.reminder is None:
        return None
    people = reader.people(rule, ctx.authors, ctx.now.heartbeat_md)
    if people is not None and USER not in people:
        return None  # "when carol asks to be reminded": not the thread's user
    asked = ctx.now.reminder
    wanted = reader.topics(rule.condition)  # "asks to be reminded about the dentist"
    if wanted and not any(set(t) <= set(wording.stems(asked)) for t in wanted):
        return None
    if reminder_title(asked) in ctx.now.posted_titles:
        return None
    return asked


def reminder_title(what: str) -> str:
    """The title of the post that reminds of ``what``."""
    return f"Reminder: {what}"


def _quiet_now(rules: Sequence[Rule], now: Situation) -> bool:
    """A "do nothing" rule whose time holds now ("Between 22:00 and 07:00 do nothing")."""
    return any(r.quiet and _time_ok(r.condition, now) for r in rules)


def choose(rules: Sequence[Rule], posts: Sequence[PostFacts], now: Situation) -> Choice | None:
    """The first rule that applies, with what it applies to; None when none does (or a quiet
    rule's hours hold)."""
    if _quiet_now(rules, now):
        return None
    ctx = _Ctx(posts=posts, now=now, authors={p.author.lower() for p in posts}, probe=posts)
    for rule in rules:
        choice = _applies(rule, rules, ctx)
        if choice is not None:
            return choice
    return None


# --- from the stored context ------------------------------------------------------------------


def pick_strategy(configured: str, provider: str) -> Literal["prompt", "procedure"]:
    """The procedure a run follows: the thread's ``strategy``, or by provider when "auto" (the
    embedded models are too small for the whole prompt; served models follow it)."""
    if configured in ("prompt", "procedure"):
        return "procedure" if configured == "procedure" else "prompt"
    return "procedure" if provider == "embedded" else "prompt"


def read_context(
    found: RunContext, now: float, tz: str, heartbeat_md: str, thread_id: str = ""
) -> tuple[list[PostFacts], Situation]:
    """The facts of the posts others wrote (newest first) and of the moment; ``thread_id``
    is the deciding thread's, whose tag a post may carry."""
    voted: set[str] = set()
    commented: set[str] = set()
    titles: set[str] = set()  # this thread's own posts (every thread posts as the agent)
    for run in found.recent:
        d = run.decision or {}
        pid = str(d.get("post_id", "")).strip()
        if d.get("action") == "vote":
            voted.add(pid)
        elif d.get("action") == "comment":
            commented.add(pid)
        elif d.get("action") == "post":
            titles.add(html.unescape(str(d.get("title", ""))))
    posts = [
        post_facts(
            post_id=p.id,
            author=p.author,
            title=p.title,
            content=p.content,
            age_seconds=now - p.created_at,
            score=p.score,
            comments=p.comment_count,
            voted=p.id in voted,
            commented=p.id in commented,
            thread_id=thread_id,
        )
        for p in sorted(found.posts, key=lambda p: -p.created_at)
        if p.author != AGENT
    ]
    local = datetime.fromtimestamp(now, ZoneInfo(tz))
    situation = Situation(
        hour=local.hour,
        minute=local.minute,
        weekday=local.weekday(),
        contradictions=len(found.contradictions),
        posted_recently=_posted_recently(found.recent, now),
        heartbeat_md=heartbeat_md,
        reminder=_asked_of(found.messages, now),
        posted_titles=frozenset(titles),
    )
    return posts, situation


def _posted_recently(recent: Sequence[Run], now: float) -> bool:
    """Whether one of the thread's recent actions is a post made less than
    ``RECENT_POST_SECONDS`` ago."""
    return any(
        (run.decision or {}).get("action") == "post" and now - run.started_at < RECENT_POST_SECONDS
        for run in recent
    )


def clock_facts(found: RunContext, posts: Sequence[Post], now: float) -> dict[str, object]:
    """What time alone changes among the facts of a beat: which of ``posts`` are new, whether
    the agent posted recently, and whether the user's last message still asks to be reminded.
    A beat whose stored inputs did not change may still decide otherwise once one of these
    flips ("if I have not posted for 12 hours, post a summary"), so the fingerprint takes
    them in; each flips once, not as a clock ticks."""
    return {
        "new": sorted(p.id for p in posts if is_new(now - p.created_at)),
        "posted_recently": _posted_recently(found.recent, now),
        "reminder": _asked_of(found.messages, now),
    }


def _asked_of(messages: Sequence[Message], now: float) -> str | None:
    """What the user's last message asks to be reminded of, if it is younger than a day (an
    older request is taken as done: the agent's posts of it may have left its sight)."""
    said = [m for m in messages if m.role == USER]
    if not said or now - said[-1].created_at >= NEW_SECONDS:
        return None
    return reminder_request(said[-1].content)


def post_text(choice: Choice, posts: Sequence[PostFacts], now: Situation) -> tuple[str, str]:
    """Title and content of a post the procedure chose, written from the facts."""
    if choice.reminder is not None:
        return reminder_title(choice.reminder), f"You asked to be reminded: {choice.reminder}"
    if reader.concept(choice.rule.condition, "contradiction"):
        title = f"Alert: {now.contradictions} open contradiction(s)"
        body = "Some statements in our notes disagree; please check and settle them."
        return title, body
    new = [p for p in posts if p.new] or list(posts)
    lines = [f"- {p.title} ({p.author}, {p.comments} comments)" for p in new[:10]]
    questions = [p.title for p in new if p.question and p.comments == 0]
    if questions:
        lines.append("Open questions: " + "; ".join(questions[:5]))
    return f"Summary: {len(new)} new post(s)", "\n".join(lines) or "Nothing new on the Ledger."


def reasoning(choice: Choice) -> str:
    """Why, in one line: the rule and the facts that made it apply."""
    target = f" to {choice.post.title!r}" if choice.post is not None else ""
    facts = f" ({'; '.join(choice.facts)})" if choice.facts else ""
    return f"Rule {choice.rule.text!r} applies{target}{facts}"


def plain_comment(choice: Choice) -> str:
    """The service's own words for a chosen comment, when the model wrote none in time."""
    author = choice.post.author if choice.post is not None else "there"
    if "asks a question" in choice.facts:
        return f"Good question, {author}; I am flagging it so someone who knows can answer."
    if "urgent" in choice.facts:
        return f"Thanks for the alert, {author}; noted, and flagged for follow-up."
    return f"Thanks for posting this, {author}; following up here."


# --- what a rule can be about ------------------------------------------------------------------


def about(rule: Rule, post: PostFacts, authors: set[str], heartbeat_md: str) -> bool:
    """Whether the rule can be about the post, whatever its votes and comments: its author is
    among the people the rule names, and its text meets the rule's topics (an upper bound of
    ``_matches``: the state conditions are left out)."""
    people = reader.people(rule, authors, heartbeat_md)
    if people is not None and post.author.lower() not in people:
        return False
    cond = rule.condition
    if reader.mentions_user(cond) and not mentions(post.text, ("user", "me", "you")):
        return False
    if _addressed(cond, post) is None:
        return False
    topics = _post_topics(cond, post, reader.keywords(cond, authors), reader.topics(cond))
    return topics is None or topics[0]
