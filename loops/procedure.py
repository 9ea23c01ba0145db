"""The rule-by-rule decision procedure, for models too small to follow the whole prompt.

Pure: HEARTBEAT.md and the facts in, a choice out. Each rule and proactive behavior is read as
a condition and the action it names ("If a post is spam → vote it down", "Vote up questions
from core users", "if nobody answered Carol, help her"); the conditions are checked against the
facts the service computed (``loops.facts``), rules first, in the file's order, and the first
rule that applies to something the agent has not acted on yet is the choice. A rule whose
condition is not understood never applies: acting on a guess is worse than a quiet beat.
The model is then asked only for the text of a comment or post already chosen.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Final, Literal
from zoneinfo import ZoneInfo

import msgspec

from heartbeat_md import Instructions
from ledger.records import RunContext
from ledger.storage.interface import AGENT
from loops.facts import PostFacts, contains_keyword, mentions, post_facts, words

__all__ = [
    "Choice",
    "Rule",
    "Situation",
    "choose",
    "parse_rule",
    "pick_strategy",
    "plain_comment",
    "post_text",
    "read_context",
    "reasoning",
    "rules_of",
]

Kind = Literal["post", "comment", "vote"]

RECENT_POST_SECONDS: Final = 12 * 3600  # a post of the agent's this recent: no other post yet
_ARROW: Final = re.compile(r"\s*(?:→|->|=>|⇒)\s*")
_IF_THEN: Final = re.compile(
    r"^\s*(?:if|when|whenever)\s+(.+?)(?:,|\bthen\b|:(?!\d))\s*(.+)$", re.I
)
_X_IF_Y: Final = re.compile(r"^(.+?)\s+\b(?:if|when|whenever)\b\s+(.+)$", re.I)
_QUOTED: Final = re.compile(r"[\"“”']([^\"“”']{1,40})[\"“”']")
_PARENS: Final = re.compile(r"\(([^)]{1,120})\)")
_AT_LEAST: Final = re.compile(
    r"(?:(\d+)\s*(?:\+|or more\b)|(?:at least|min(?:imum)?)\s+(\d+)|(?:more than|over|>)\s*(\d+))"
)
_TIME_FIRST: Final = re.compile(
    r"^(?:at|every|each|on|daily|weekly|in the)\b.*?\b(?=(?:post|vote|upvote|downvote|comment|"
    r"reply|write|summarize|summarise|alert|publish)\b)",
    re.I,
)
_WEEKDAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_CLOCK: Final = re.compile(r"\b(\d{1,2})(?::(\d{2}))?\s*(am|pm|h|o'clock)?\b", re.I)

_NONE_WORDS: Final = ("heartbeat_ok", "do nothing", "stay quiet", "nothing else")
_VERBS: Final[dict[str, Kind]] = {
    "vote": "vote",
    "voting": "vote",
    "upvote": "vote",
    "downvote": "vote",
    "like": "vote",
    "comment": "comment",
    "reply": "comment",
    "respond": "comment",
    "answer": "comment",
    "help": "comment",
    "welcome": "comment",
    "thank": "comment",
    "ask": "comment",
    "post": "post",
    "alert": "post",
    "summarize": "post",
    "summarise": "post",
    "announce": "post",
    "publish": "post",
    "write": "post",
}
_LIGHT_VERBS: Final = frozenset("give leave add cast drop make say greet flag".split())
_HELP_WHOM: Final = frozenset("her him them out people users the a an with by".split())
_STOP: Final = frozenset(
    "a an the and or of to in on at for from by with is are be it its this that these those "
    "any all each every some no not none nobody anyone has have had who whom if when then "
    "post posts posted posting user users core vip key team people person member members "
    "question questions comment comments reply vote up down their them her his him she he they "
    "yet answered answer help monitor check look watch keep new ledger".split()
)
_GROUP_WORDS: Final = ("core", "vip", "key", "important", "trusted", "favorite", "favourite")
_DAYPARTS: Final[dict[str, tuple[int, int]]] = {
    "morning": (6, 12),
    "noon": (12, 13),
    "afternoon": (12, 18),
    "evening": (18, 23),
    "night": (21, 24),
}


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """One line of HEARTBEAT.md read as condition → action."""

    text: str
    section: str
    kind: Kind | None  # None: the line names no action (or "reply HEARTBEAT_OK")
    direction: Literal["up", "down"] | None
    condition: str  # the condition part, lower case


class Situation(msgspec.Struct, frozen=True, kw_only=True):
    """Everything outside the posts a condition may read."""

    hour: int
    minute: int
    weekday: int = -1  # Monday is 0; -1 when unknown
    contradictions: int
    posted_recently: bool  # the agent made a post among its recent actions
    heartbeat_md: str  # the whole file, to look up who "core users" are


class Choice(msgspec.Struct, frozen=True, kw_only=True):
    """The action a rule names and what it applies to, with the facts that made it apply."""

    rule: Rule
    kind: Kind
    direction: Literal["up", "down"] | None = None
    post: PostFacts | None = None
    facts: list[str] = msgspec.field(default_factory=list)


def _split(text: str) -> tuple[str, str]:
    """(condition, action) parts of a rule line."""
    parts = _ARROW.split(text, maxsplit=1)
    if len(parts) == 2:
        cond = re.sub(r"^\s*(?:if|when|whenever)\s+", "", parts[0], flags=re.I)
        return cond, parts[1]
    m = _IF_THEN.match(text)
    if m is not None:
        return m.group(1), m.group(2)
    m = _X_IF_Y.match(text)
    if m is not None:
        return m.group(2), m.group(1)
    m = _TIME_FIRST.match(text)
    if m is not None:  # "At 8am post a digest": the time is the condition
        return text, text[m.end() :]
    head, comma, tail = text.partition(",")
    if comma and _leading_kind(tail) is not None:  # "Every morning, post a summary"
        return head, tail
    return text, text  # "Vote up questions from core users": the verb leads, the rest is who


def _leading_kind(text: str) -> Kind | None:
    """The action a line's leading verb names ("Vote up …", "Give an upvote to …", "Say hello
    under …"); None when it does not lead with one ("Monitor posts …", "Help build …")."""
    tokens = words(text)
    if not tokens:
        return None
    if tokens[0] in _LIGHT_VERBS:
        if tokens[0] in ("say", "greet"):
            return "comment"
        verbs = ("upvote", "downvote", "vote", "voting", "comment", "reply")
        tokens = [t for t in tokens[1:5] if t in verbs]
        if not tokens:
            return None
    first = tokens[0]
    kind = _VERBS.get(first) or _VERBS.get(first.rstrip("s"))
    if first == "help" and len(tokens) > 1 and tokens[1] not in _HELP_WHOM:
        return None  # "help build consensus" names a goal, not an action
    return kind


def _action(text: str) -> tuple[Kind | None, Literal["up", "down"] | None]:
    low = text.lower()
    if any(w in low for w in _NONE_WORDS):
        return None, None
    tokens = words(low)
    # the action part's leading verb; a separated action part may name it anywhere
    for i, tok in enumerate(tokens):
        kind = _VERBS.get(tok) or _VERBS.get(tok.rstrip("s"))
        if kind is None:
            continue
        if tok in ("like", "ask") and i > 0:
            continue
        if kind == "vote":
            down = tok == "downvote" or "down" in tokens[i : i + 4]
            return "vote", "down" if down else "up"
        return kind, None
    return None, None


def parse_rule(text: str, section: str) -> Rule:
    cond, act = _split(text.strip())
    kind: Kind | None = None
    direction: Literal["up", "down"] | None = None
    lead = _leading_kind(act)
    if lead == "comment" and words(act)[0] in ("say", "greet"):
        kind = "comment"
    elif cond != act or lead is not None:  # no separator: only a leading verb names an action
        kind, direction = _action(act)
    cond = re.split(r"\bwith\s*:", cond, maxsplit=1)[0]
    return Rule(text=text.strip(), section=section, kind=kind, direction=direction, condition=cond)


def rules_of(instructions: Instructions) -> list[Rule]:
    """Rules, then proactive behaviors, in the file's order."""
    return [parse_rule(t, "rules") for t in instructions.rules] + [
        parse_rule(t, "proactive behaviors") for t in instructions.proactive_behaviors
    ]


# --- conditions ------------------------------------------------------------------------------


def _has(cond: str, *keys: str) -> bool:
    return any(contains_keyword(cond, k) for k in keys)


def _mentions_user(cond: str) -> bool:
    """ "The user is mentioned", "mentions me"; not "mentions an outage" (a topic)."""
    if _has(cond, "@user"):
        return True
    return _has(cond, "mention", "mentions", "mentioned") and _has(cond, "user", "me", "you")


def _people(rule: Rule, authors: set[str], heartbeat_md: str) -> set[str] | None:
    """The people a condition names (lower case), or None when it names nobody."""
    cond = rule.condition
    low = cond.lower()
    if _mentions_user(low):
        return None  # a mention rule names whom the post mentions, not its author
    names: set[str] = set()
    named = False
    for m in _PARENS.finditer(cond):
        items = {w for w in words(m.group(1)) if w not in _STOP}
        if items & authors:
            names |= items
            named = True
    for group in _GROUP_WORDS:
        if re.search(rf"\b{group}\s+(?:users?|members?|people|team)\b", low):
            named = True
            for line in heartbeat_md.lower().splitlines():
                if group in words(line):
                    names |= {w for w in words(line) if w not in _STOP}
    if re.search(r"\b(?:from|by)\s+(?:the\s+)?user\b", low) or re.search(
        r"\bthe user('s)?\s+(?:post|posts|posted|asks|asked|writes|wrote)", low
    ):
        names.add("user")
        named = True
    for m in re.finditer(r"\b(?:from|by)\s+@?([a-z][a-z0-9_]*)", low):
        if m.group(1) not in _STOP:
            names.add(m.group(1))
            named = True
    # a capitalised name inside the condition ("if nobody answered Carol")
    tokens = re.findall(r"[A-Za-z][A-Za-z0-9_]*", _PARENS.sub(" ", cond))
    for tok in tokens[1:]:
        if tok[0].isupper() and not tok.isupper() and tok.lower() not in _STOP:
            names.add(tok.lower())
            named = True
    for tok in words(low):
        if tok in authors and tok not in _STOP:
            names.add(tok)
            named = True
    return names if named else None


def _keywords(cond: str, authors: set[str]) -> list[str]:
    found = [m.group(1) for m in _QUOTED.finditer(cond)]
    for m in _PARENS.finditer(cond):
        items = [i.strip() for i in re.split(r",|\bor\b", m.group(1))]
        if not {w for i in items for w in words(i)} & authors:
            found += [i for i in items if i]
    return found


def _time_ok(cond: str, now: Situation) -> bool | None:
    """None when the condition names no time of day."""
    low = cond.lower()
    days = [i for i, day in enumerate(_WEEKDAYS) if contains_keyword(low, day)]
    if days and now.weekday not in days:
        return False
    for m in _CLOCK.finditer(low):
        suffix = m.group(3)
        clock_face = m.group(2) is not None  # "9:00" is a time by itself
        if (
            suffix is None
            and not clock_face
            and not re.search(rf"\b(?:at|time is)\s+{m.group(0)}", low)
        ):
            continue
        hour = int(m.group(1)) % 12 if suffix in ("am", "pm") else int(m.group(1))
        if suffix == "pm":
            hour += 12
        return now.hour == hour
    for part, (lo, hi) in _DAYPARTS.items():
        if contains_keyword(low, part):
            return lo <= now.hour < hi
    return True if days else None


def _count_ok(cond: str, posts: Sequence[PostFacts]) -> bool | None:
    low = cond.lower()
    m = re.search(rf"{_AT_LEAST.pattern}\s*(?:new\s+)?posts?\b", low)
    if m is None:
        return None
    if m.group(1) or m.group(2):
        need = int(m.group(1) or m.group(2))
    else:
        need = int(m.group(3)) + 1
    pool = [p for p in posts if p.new] if _has(low, "new", "since", "last day", "today") else posts
    return len(pool) >= need


def _contradictions_ok(cond: str, now: Situation) -> bool | None:
    low = cond.lower()
    if not _has(low, "contradiction", "contradictions", "contradicts", "conflicting"):
        return None
    m = _AT_LEAST.search(low)
    if m is None:
        return now.contradictions >= 1
    if m.group(3):
        return now.contradictions > int(m.group(3))
    return now.contradictions >= int(m.group(1) or m.group(2))


def _post_topics(cond: str, post: PostFacts, keywords: list[str]) -> tuple[bool, list[str]] | None:
    """Does the post have the topic the condition names? None when it names none."""
    low = cond.lower()
    checks: list[tuple[bool, str]] = []
    if _has(
        low, "spam", "spam-like", "ad", "ads", "advert", "advertisement", "advertising"
    ) or _has(low, "promo", "promotion", "promotional", "scam", "selling"):
        checks.append((bool(post.spam), f"looks like spam ({', '.join(post.spam)})"))
    votes = _has(low, "consensus", "agree", "agreement", "agree?", "asks for votes", "poll")
    if votes:
        checks.append((post.asks_votes, "asks for votes"))
    if _has(low, "urgent", "emergency", "outage"):
        checks.append((post.urgent, "urgent"))
    if _has(low, "controversial", "divisive", "debate", "heated"):
        checks.append((post.controversial, "controversial"))
    # "a consensus question" is about the votes; "questions from core users" about a question
    if not votes and _has(low, "question", "questions", "asks", "asking"):
        checks.append((post.question, "asks a question"))
    for key in keywords:
        checks.append((contains_keyword(post.text, key), f"contains {key!r}"))
    if not checks:
        return None
    hits = [why for ok, why in checks if ok]
    return bool(hits), hits


def _post_state(cond: str, post: PostFacts) -> tuple[bool, list[str]]:
    """The state conditions (no comments, no votes, engagement, new), all of them."""
    low = cond.lower()
    why: list[str] = []
    if _has(low, "no comments", "no comment", "no replies", "no answers", "unanswered") or _has(
        low, "nobody", "no one", "not answered", "without comments", "without replies"
    ):
        if post.comments:
            return False, []
        why.append("no comments")
    if _has(low, "0 votes", "no votes", "zero votes"):
        if post.score != 0:
            return False, []
        why.append("no votes")
    for what, have in (("comments", post.comments), ("votes", post.score)):
        m = re.search(rf"{_AT_LEAST.pattern}\s*(?:{what}|{what[:-1]})\b", low)
        if m is not None:
            need = (
                int(m.group(1) or m.group(2)) if m.group(1) or m.group(2) else int(m.group(3)) + 1
            )
            if have < need:
                return False, []
            why.append(f"{have} {what}")
    if _has(low, "high-engagement", "engagement", "popular", "trending", "many comments"):
        if not post.engaged:
            return False, []
        why.append(f"high engagement ({post.comments} comments, score {post.score})")
    return True, why


def _acted(kind: Kind, post: PostFacts) -> bool:
    return post.voted if kind == "vote" else post.commented


def _applies(rule: Rule, posts: Sequence[PostFacts], now: Situation) -> Choice | None:
    if rule.kind is None:
        return None
    cond = rule.condition
    facts: list[str] = []
    understood = False
    for check, label in (
        (_time_ok(cond, now), f"local time {now.hour:02d}:{now.minute:02d}"),
        (_contradictions_ok(cond, now), f"{now.contradictions} open contradiction(s)"),
        (_count_ok(cond, posts), f"{len(posts)} posts, {sum(p.new for p in posts)} new"),
    ):
        if check is None:
            continue
        if not check:
            return None
        understood = True
        facts.append(label)
    if rule.kind == "post":
        if not understood or now.posted_recently:
            return None
        return Choice(rule=rule, kind="post", facts=facts)
    authors = {p.author.lower() for p in posts}
    people = _people(rule, authors, now.heartbeat_md)
    keywords = _keywords(cond, authors)
    low = cond.lower()
    mention = _mentions_user(low)
    for post in posts:  # newest first
        if _acted(rule.kind, post):
            continue
        why = list(facts)
        if people is not None:
            if post.author.lower() not in people:
                continue
            why.append(f"posted by {post.author}")
        if mention:
            if not mentions(post.text, ("user", "me", "you")):
                continue
            why.append("mentions the user")
        topics = _post_topics(cond, post, keywords)
        if topics is not None:
            if not topics[0]:
                continue
            why += topics[1]
        ok, state = _post_state(cond, post)
        if not ok:
            continue
        why += state
        if len(why) == len(facts) and not (people or mention):
            continue  # nothing about the post was understood
        return Choice(rule=rule, kind=rule.kind, direction=rule.direction, post=post, facts=why)
    return None


def choose(rules: Sequence[Rule], posts: Sequence[PostFacts], now: Situation) -> Choice | None:
    """The first rule that applies, with what it applies to; None when none does."""
    for rule in rules:
        choice = _applies(rule, posts, now)
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
    found: RunContext, now: float, tz: str, heartbeat_md: str
) -> tuple[list[PostFacts], Situation]:
    """The facts of the posts others wrote (newest first) and of the moment."""
    voted: set[str] = set()
    commented: set[str] = set()
    posted_recently = False
    for run in found.recent:
        d = run.decision or {}
        pid = str(d.get("post_id", "")).strip()
        if d.get("action") == "vote":
            voted.add(pid)
        elif d.get("action") == "comment":
            commented.add(pid)
        elif d.get("action") == "post" and now - run.started_at < RECENT_POST_SECONDS:
            posted_recently = True
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
        posted_recently=posted_recently,
        heartbeat_md=heartbeat_md,
    )
    return posts, situation


def post_text(choice: Choice, posts: Sequence[PostFacts], now: Situation) -> tuple[str, str]:
    """Title and content of a post the procedure chose, written from the facts."""
    if _has(choice.rule.condition, "contradiction", "contradictions", "conflicting"):
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
