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
from loops import timewords, wording
from loops.facts import PostFacts, contains_keyword, mentions, post_facts, words

__all__ = [
    "Choice",
    "Reading",
    "Rule",
    "Situation",
    "about",
    "choose",
    "parse_rule",
    "pick_strategy",
    "plain_comment",
    "post_text",
    "read_context",
    "reading",
    "reasoning",
    "rules_of",
]

Kind = Literal["post", "comment", "vote"]

RECENT_POST_SECONDS: Final = 12 * 3600  # a post of the agent's this recent: no other post yet
_ARROW: Final = re.compile(r"\s*(?:→|->|=>|⇒)\s*")
_COND_LEAD: Final = (
    r"(?:if|when|whenever|once|as soon as|in case|each time|every time|any time|anytime|should)"
)
_LEADING_COND: Final = re.compile(rf"^\s*{_COND_LEAD}\s+", re.I)
_X_IF_Y: Final = re.compile(
    r"^(.+?)\s+\b(?:if|when|whenever|once|as soon as|each time|every time)\b\s+(.+)$", re.I
)
_QUOTED: Final = re.compile(r"[\"“”']([^\"“”']{1,40})[\"“”']")
_PARENS: Final = re.compile(r"\(([^)]{1,120})\)")
_SENTENCE: Final = re.compile(r"(?<=[.!;])\s+(?=[\"“'A-Z])|;\s*")
_LIST_MARK: Final = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])\s+")
_NEGATED: Final = re.compile(
    r"^\s*(?:please\s+)?(?:don't|dont|do not|never|avoid|stop|refrain from|no)\s+(?:ever\s+)?",
    re.I,
)
_NOT: Final = re.compile(r"\b(?:not|isn't|aren't|doesn't|don't|never|non)\b")
_HELP_WHOM: Final = frozenset("her him them out people users the a an with by".split())
_STOP: Final = frozenset(
    "a an the and or of to in on at for from by with is are be it its this that these those "
    "any all each every some no not none nobody anyone has have had who whom if when then "
    "post posts posted posting user users core vip key team people person member members "
    "question questions comment comments reply vote up down their them her his him she he they "
    "yet answered answer help monitor check look watch keep new ledger i i'm me my "
    "january february march april may june july august september october november december".split()
)
_NOT_NAMES: Final = (
    _STOP
    | frozenset(wording.VERBS)
    | frozenset(timewords.WEEKDAYS)
    | frozenset(d + "s" for d in timewords.WEEKDAYS)
    | frozenset(w for words_ in wording.CONCEPTS.values() for w in words_)
    | wording.NEGATIONS
    | frozenset("never don't please always only also otherwise".split())
)
_GROUP_WORDS: Final = ("core", "vip", "key", "important", "trusted", "favorite", "favourite")
_NAME: Final = r"@?([^\W\d_][\w.-]*)"


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """One line of HEARTBEAT.md read as condition → action."""

    text: str
    section: str
    kind: Kind | None  # None: the line names no action (or "reply HEARTBEAT_OK")
    direction: Literal["up", "down"] | None
    condition: str  # the condition part
    negated: bool = False  # "Never upvote anything from Wei": what it names is not done
    quiet: bool = False  # "Between 22:00 and 07:00 do nothing"


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


def _separator(text: str) -> tuple[int, int] | None:
    """Where the first ',' / ':' / 'then' outside brackets and quotes ends a condition (a colon
    inside a clock time does not)."""
    depth = 0
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote or (quote == "“" and ch == "”") else quote
            continue
        if ch in '"“':
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif depth == 0 and ch == ",":
            return i, i + 1
        elif (
            depth == 0
            and ch == ":"
            and not (text[i - 1 : i].isdigit() and text[i + 1 : i + 2].isdigit())
        ):
            return i, i + 1
        elif depth == 0 and text[i : i + 6].lower() == " then ":
            return i, i + 6
    return None


def _split(text: str) -> tuple[str, str]:
    """(condition, action) parts of a rule line."""
    parts = _ARROW.split(text, maxsplit=1)
    if len(parts) == 2:
        return _LEADING_COND.sub("", parts[0]), parts[1]
    lead = _LEADING_COND.match(text)
    if lead is not None:
        rest = text[lead.end() :]
        sep = _separator(rest)
        if sep is not None:
            return rest[: sep[0]], rest[sep[1] :]
    m = _X_IF_Y.match(text)
    if m is not None and _leading_kind(m.group(1)) is not None:
        return m.group(2), m.group(1)
    sep = _separator(text)
    if sep is not None and (_leading_kind(text[sep[1] :]) or _quiet_lead(text[sep[1] :])):
        return text[: sep[0]], text[sep[1] :]  # "Every morning, post a summary"; "Mornings: …"
    if _leading_kind(text) is None and timewords.read_time(text) is not None:
        tokens = list(re.finditer(r"\S+", text))  # "At 8am post a digest": the time leads
        for tok in tokens[1:]:
            tail = text[tok.start() :]
            if _leading_kind(tail) is not None or _quiet_lead(tail):
                return text[: tok.start()], tail
    m = _X_IF_Y.match(text)
    if m is not None:
        return m.group(2), m.group(1)
    return text, text  # "Vote up questions from core users": the verb leads, the rest is who


def _is_quiet(text: str) -> bool:
    return wording.has_any(text, wording.QUIET_PHRASES) is not None


def _quiet_lead(text: str) -> bool:
    low = text.lower().lstrip()
    return any(low.startswith(p) for p in wording.QUIET_PHRASES)


def _verb(token: str) -> Kind | None:
    """The action a verb names in any of its forms ("replies", "posting", "voting")."""
    for form in (token, token.rstrip("s"), token[:-3], token[:-3] + "e", token[:-2], token[:-1]):
        kind = wording.VERBS.get(form)
        if kind is not None and len(form) >= 3:
            return kind
    return None


def _leading_kind(text: str) -> Kind | None:
    """The action a line's leading verb names ("Vote up …", "Give an upvote to …", "Say hello
    under …", "Post an answer …"); None when it does not lead with one ("Monitor posts …",
    "Help build …")."""
    tokens = words(wording.normalize(text))
    if not tokens:
        return None
    first = tokens[0]
    if first in wording.LIGHT_VERBS or first in ("post", "write"):
        for tok in tokens[1:5]:
            noun = wording.ACTION_NOUNS.get(tok) or wording.ACTION_NOUNS.get(tok.rstrip("s"))
            if noun is not None:
                return noun
        if first in wording.LIGHT_VERBS:
            return None
    if first == "help" and len(tokens) > 1 and tokens[1] not in _HELP_WHOM:
        return None  # "help build consensus" names a goal, not an action
    return _verb(first)


def _action(text: str) -> tuple[Kind | None, Literal["up", "down"] | None]:
    low = wording.normalize(text).lower()
    if _is_quiet(low):
        return None, None
    tokens = words(low)
    # the action part's leading verb; a separated action part may name it anywhere
    for i, tok in enumerate(tokens):
        kind = _leading_kind(" ".join(tokens[i:])) if i == 0 else _verb(tok)
        if kind is None and tok in wording.ACTION_NOUNS and i > 0:
            kind = wording.ACTION_NOUNS[tok]
        if kind is None:
            continue
        if tok in ("like", "ask", "share") and i > 0:
            continue
        if kind == "vote":
            down = any(t in wording.DOWN_WORDS for t in tokens[i : i + 5])
            return "vote", "down" if down else "up"
        return kind, None
    return None, None


def parse_rule(text: str, section: str) -> Rule:
    raw = text.strip()
    norm = wording.normalize(raw)
    cond, act = _split(norm)
    negated = False
    neg = _NEGATED.match(act)
    if neg is not None and (_leading_kind(act[neg.end() :]) is not None):
        negated, act = True, act[neg.end() :]
        if cond.strip() == norm.strip():
            cond = act
    kind: Kind | None = None
    direction: Literal["up", "down"] | None = None
    quiet = _is_quiet(act) and not negated
    if not quiet and (cond != act or _leading_kind(act) is not None):
        kind, direction = _action(act)  # no separator: only a leading verb names an action
    cond = re.split(r"\bwith\s*:", cond, maxsplit=1)[0]
    return Rule(
        text=raw,
        section=section,
        kind=kind,
        direction=direction,
        condition=cond,
        negated=negated,
        quiet=quiet,
    )


def _items(body: str) -> list[str]:
    """The lines of a section that is neither rules nor behaviors, list marks taken off."""
    out: list[str] = []
    for line in body.splitlines():
        if not line.strip() or line.lstrip().startswith(("```", "~~~", "#", ">", "|")):
            continue
        if line.startswith(("  ", "\t")) and out and not _LIST_MARK.match(line):
            out[-1] += " " + line.strip()
            continue
        out.append(_LIST_MARK.sub("", line).strip())
    return out


def rules_of(instructions: Instructions) -> list[Rule]:
    """Rules, then proactive behaviors, then the lines of any other section (a user's own
    heading: "## What to do"), in the file's order; an item of several sentences is read
    sentence by sentence."""
    found: list[tuple[str, str]] = [(t, "rules") for t in instructions.rules]
    found += [(t, "proactive behaviors") for t in instructions.proactive_behaviors]
    for name, body in instructions.sections.items():
        found += [(t, name or "preamble") for t in _items(body)]
    out: list[Rule] = []
    for text, section in found:
        for sentence in _SENTENCE.split(text):
            if sentence.strip():
                out.append(parse_rule(sentence, section))
    return out


# --- conditions ------------------------------------------------------------------------------


def _has(cond: str, *keys: str) -> bool:
    return wording.has_any(cond, keys) is not None


def _concept(cond: str, name: str) -> bool:
    return wording.has_any(cond, wording.CONCEPTS[name]) is not None


def _mentions_user(cond: str) -> bool:
    """ "The user is mentioned", "mentions me", "when I'm tagged"; not "mentions an outage"."""
    if _has(cond, "@user", "@me"):
        return True
    return _concept(cond, "mention_verb") and _concept(cond, "self")


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
    for m in re.finditer(rf"\b(?:from|by)\s+{_NAME}", low):
        name = m.group(1).rstrip(".")
        if name not in _NOT_NAMES:
            names.add(name)
            named = True
    # a capitalised name inside the condition ("if nobody answered Carol", "whatever Björn")
    tokens = re.findall(r"[^\W\d_][\w'-]*", _PARENS.sub(" ", _QUOTED.sub(" ", cond)))
    for tok in tokens[1:]:
        if tok[0].isupper() and not tok.isupper() and tok.lower() not in _NOT_NAMES:
            names.add(tok.lower())
            named = True
    for tok in words(low):
        if tok in authors and tok not in _NOT_NAMES:
            names.add(tok)
            named = True
    return names if named else None


def _keywords(cond: str, authors: set[str]) -> list[str]:
    found = [m.group(1) for m in _QUOTED.finditer(cond)]
    for m in _PARENS.finditer(cond):
        items = [i.strip() for i in re.split(r",|\bor\b", m.group(1))]
        if not {w for i in items for w in words(i)} & authors:
            found += [i for i in items if i and timewords.read_time(i) is None]
    return found


_KNOWN_STEMS: Final = frozenset(
    wording.stem(w)
    for w in [*(x for v in wording.CONCEPTS.values() for x in v), *_STOP, *wording.VERBS]
)


def _topics(cond: str) -> list[list[str]]:
    """The topics a condition names beyond the facts the service knows by name."""
    return [t for t in wording.topic_phrases(cond) if not set(t) <= _KNOWN_STEMS]


def _time_ok(cond: str, now: Situation) -> bool | None:
    """None when the condition names no time of day or day of the week."""
    when = timewords.read_time(cond)
    return None if when is None else when.holds(now.hour, now.minute, now.weekday)


def _compare(have: int, want: wording.Compare) -> bool:
    return have >= want[1] if want[0] == ">=" else have <= want[1]


_POST_NOUNS: Final = r"posts?|messages|entries|updates|threads"


def _count_ok(cond: str, posts: Sequence[PostFacts]) -> bool | None:
    want = wording.count_condition(cond, _POST_NOUNS)
    if want is None:
        return None
    fresh = ("new", "since", "last day", "today", "recent", "fresh", "unread", "arrive")
    pool = [p for p in posts if p.new] if _has(cond, *fresh) else list(posts)
    return _compare(len(pool), want)


def _contradictions_ok(cond: str, now: Situation) -> bool | None:
    if not _concept(cond, "contradiction"):
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
    if _concept(cond, "spam"):
        checks.append((bool(post.spam), f"looks like spam ({', '.join(post.spam)})"))
    votes = _concept(cond, "votes")
    if votes:
        checks.append((post.asks_votes, "asks for votes"))
    if _concept(cond, "urgent"):
        checks.append((post.urgent, "urgent"))
    if _concept(cond, "controversial"):
        checks.append((post.controversial, "controversial"))
    # "a consensus question" is about the votes; "questions from core users" about a question
    if not votes and _concept(cond, "question"):
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
    if _concept(cond, "no_comments"):
        if post.comments:
            return False, []
        why.append("no comments")
    if _concept(cond, "no_votes"):
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
    if _concept(cond, "engaged"):
        if not post.engaged:
            return False, []
        why.append(f"high engagement ({post.comments} comments, score {post.score})")
    return True, why


def _acted(kind: Kind, post: PostFacts) -> bool:
    return post.voted if kind == "vote" else post.commented


def _negation_unread(cond: str) -> bool:
    """A condition that negates something other than the comments ("if a post is not spam"):
    not understood, so the rule never applies."""
    stripped = cond.lower()
    for phrase in wording.CONCEPTS["no_comments"] + wording.CONCEPTS["no_votes"]:
        stripped = stripped.replace(phrase, " ")
    return _NOT.search(stripped) is not None


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
    people = _people(rule, authors, now.heartbeat_md)
    why: list[str] = []
    if people is not None:
        if post.author.lower() not in people:
            return None
        why.append(f"posted by {post.author}")
    mention = _mentions_user(cond)
    if mention:
        if not mentions(post.text, ("user", "me", "you")):
            return None
        why.append("mentions the user")
    topics = _post_topics(cond, post, _keywords(cond, authors), _topics(cond))
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
    if rule.kind is None or rule.negated or rule.quiet or _negation_unread(rule.condition):
        return None
    ok, facts = _moment(rule, ctx.posts, ctx.now)
    if not ok:
        return None
    if rule.kind == "post":
        if ctx.now.posted_recently or _blocked("post", None, rules, ctx):
            return None
        if facts:
            return Choice(rule=rule, kind="post", facts=facts)
        for post in ctx.posts:  # "When an outage is reported, post an alert"
            if post.new and (why := _matches(rule, post, ctx.authors, ctx.now)):
                return Choice(rule=rule, kind="post", facts=why)
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
    if _concept(choice.rule.condition, "contradiction"):
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


# --- what a rule reads ------------------------------------------------------------------------

_READ_WORDS: Final = frozenset(
    "please always only also otherwise ever than least most more fewer less under below over "
    "above min minimum or once whenever case time times anytime as soon should ago since "
    "between after before until till around noon midday midnight am pm o'clock hour hours "
    "minute minutes day days week weeks weekly daily today tonight weekday weekdays workday "
    "workdays weekend weekends lunch lunchtime overnight nightly regarding concerning related "
    "topic subject share shares discuss discusses talk talks where someone somebody sharing "
    "mentioning discussing containing contains word words titled about arrive arrives unread fresh "
    "recent last summary".split()
)
_KNOWN_WORDS: Final = (
    _NOT_NAMES
    | _READ_WORDS
    | frozenset(wording.LIGHT_VERBS)
    | frozenset(wording.ACTION_NOUNS)
    | wording.DOWN_WORDS
    | frozenset(w for p in wording.QUIET_PHRASES for w in words(p))
    | frozenset(w for p in wording.NUMBER_WORDS for w in words(p))
    | frozenset(w for p in (*wording.CONCEPTS.values(),) for x in p for w in words(x))
    | frozenset(timewords.DAYPARTS)
)


class Reading(msgspec.Struct, frozen=True, kw_only=True):
    """What the procedure reads of the world for one rule (``reading``): whose posts, which of
    their numbers, whether it counts posts or contradictions; ``unknown`` holds the words of
    the rule it cannot account for (a rule with any is not understood)."""

    unknown: tuple[str, ...]
    people: frozenset[str] | None  # the authors whose posts it can act on; None: anyone's
    counts_posts: bool  # "when 3 new posts arrive": every post counts
    scores: bool  # it reads a post's votes ("no votes yet", "5+ upvotes", engagement)
    comments: bool  # it reads a post's comments ("unanswered", "no replies", engagement)
    contradictions: bool

    @property
    def understood(self) -> bool:
        return not self.unknown


def reading(rule: Rule, authors: set[str], heartbeat_md: str) -> Reading:
    """Which facts the rule's condition reads, and the words of the rule it cannot read.

    A word is accounted for when one of the reader's tables knows it (verbs, the words for each
    fact, times, numbers, topic markers, filler words), or when the reader took it as a name, a
    quoted keyword or a topic of the condition. A condition that negates something the reader
    does not read ("if a post is not spam") leaves the rule not understood as a whole.
    """
    cond = rule.condition
    people = _people(rule, authors, heartbeat_md)
    named = set(people or ())
    named |= {w for k in _keywords(cond, authors) for w in words(k)}
    topics = {w for t in wording.topic_phrases(cond) for w in t}
    unknown: list[str] = []
    for tok in words(wording.normalize(rule.text)):
        tok = tok.lstrip("@")
        if (
            not tok
            or any(c.isdigit() for c in tok)
            or tok in _KNOWN_WORDS
            or tok in named
            or _verb(tok) is not None
            or wording.stem(tok) in _KNOWN_STEMS
            or wording.stem(tok) in topics
        ):
            continue
        unknown.append(tok)
    if _negation_unread(cond):
        unknown.append("not")
    engaged = _concept(cond, "engaged") or _concept(cond, "controversial")
    votes = wording.count_condition(cond, r"votes?|upvotes?|points?|likes?")
    replies = wording.count_condition(cond, r"comments?|replies|answers?|responses?")
    return Reading(
        unknown=tuple(dict.fromkeys(unknown)),
        people=None if people is None else frozenset(people),
        counts_posts=wording.count_condition(cond, _POST_NOUNS) is not None,
        scores=engaged or _concept(cond, "no_votes") or votes is not None,
        comments=engaged or _concept(cond, "no_comments") or replies is not None,
        contradictions=_concept(cond, "contradiction"),
    )


def about(rule: Rule, post: PostFacts, authors: set[str], heartbeat_md: str) -> bool:
    """Whether the rule can be about the post, whatever its votes and comments: its author is
    among the people the rule names, and its text meets the rule's topics (an upper bound of
    ``_matches``: the state conditions are left out)."""
    people = _people(rule, authors, heartbeat_md)
    if people is not None and post.author.lower() not in people:
        return False
    cond = rule.condition
    if _mentions_user(cond) and not mentions(post.text, ("user", "me", "you")):
        return False
    topics = _post_topics(cond, post, _keywords(cond, authors), _topics(cond))
    return topics is None or topics[0]
