"""The rule reader: HEARTBEAT.md's rules read as condition → action, and what each reads (pure).

A rule line is split into the condition and the action it names ("If a post is spam → vote it
down", "Vote up questions from core users", "At 8am post a digest"); ``rules_of`` reads a whole
file, rules first, in the file's order. The condition is then read for what it names: the
people whose posts it is about, quoted keywords, topics, the facts it asks for (``loops.wording``
holds every word the reader knows). ``reading`` tells which of the world's inputs a rule reads
and which of its words the reader cannot account for, so that the fingerprint's scope
(``loops.scope``) never leaves out what a rule not understood might act on. Applying a rule to
the facts of posts and of the moment is ``loops.procedure``'s.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec
from msgspec.structs import replace

from heartbeat_md import Instructions
from loops import timewords, wording
from loops.conditions import (
    KNOWN_STEMS,
    NOT_NAMES,
    POSSESSIVE,
    POST_NOUNS,
    bare,
    concept,
    has,
    keywords,
    mentions_user,
    negation_unread,
    people,
    per_post,
    reminder,
    thanks_user,
    thread_tag,
    topics,
)
from loops.facts import words

__all__ = [
    "POST_NOUNS",
    "Kind",
    "Reading",
    "Rule",
    "concept",
    "has",
    "keywords",
    "mentions_user",
    "negation_unread",
    "parse_rule",
    "parse_rules",
    "people",
    "per_post",
    "reading",
    "reminder",
    "rules_of",
    "thanks_user",
    "thread_tag",
    "topics",
]

Kind = Literal["post", "comment", "vote"]

_ARROW: Final = re.compile(r"\s*(?:→|->|=>|⇒)\s*")
_COND_LEAD: Final = (
    r"(?:if|when|whenever|once|as soon as|in case|each time|every time|any time|anytime|should)"
)
_LEADING_COND: Final = re.compile(rf"^\s*{_COND_LEAD}\s+", re.I)
_X_IF_Y: Final = re.compile(
    r"^(.+?)\s+\b(?:if|when|whenever|once|as soon as|each time|every time)\b\s+(.+)$", re.I
)
_ASKED: Final = re.compile(r"^(.+?)\?\s+(\S.*)$")  # a question that sets the condition
_SENTENCE: Final = re.compile(r"(?<=[.!;])\s+(?=[\"“'A-Z])|;\s*")
_JOINED: Final = re.compile(r",\s*(?:and|&)\s+(?:then\s+|also\s+)?", re.I)  # ", and reply …"
_LIST_MARK: Final = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])\s+")
_NEGATED: Final = re.compile(
    r"^\s*(?:please\s+)?(?:don't|dont|do not|never|avoid|stop|refrain from|no)\s+(?:ever\s+)?",
    re.I,
)
_HELP_WHOM: Final = frozenset(
    "her him them out people users the a an with by anyone anybody everyone everybody whoever "
    "someone somebody those folks newcomers members".split()
)


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """One line of HEARTBEAT.md read as condition → action."""

    text: str
    section: str
    kind: Kind | None  # None: the line names no action (or "reply HEARTBEAT_OK")
    direction: Literal["up", "down"] | None
    condition: str  # the condition part
    negated: bool = False  # "Never upvote anything from Wei": what it names is not done
    quiet: bool = False  # "Between 22:00 and 07:00 do nothing"


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
    asked = _ASKED.match(text)  # "Got a question from Nadia? Answer it."
    if asked is not None and _leading_kind(asked.group(2)) is not None:
        return _LEADING_COND.sub("", asked.group(1)), asked.group(2)
    lead = _LEADING_COND.match(text)
    if lead is not None:
        rest = text[lead.end() :]
        sep = _separator(rest)
        if sep is not None:
            return rest[: sep[0]], rest[sep[1] :]
    m = _X_IF_Y.match(text)
    if m is not None and _leading_kind(m.group(1)) is not None:
        # "Vote up posts from Oskar when they ask a question": whose posts is condition too
        return f"{m.group(2)} {wording.VERB_LEAD.sub('', m.group(1))}".strip(), m.group(1)
    sep = _separator(text)
    if sep is not None and (_leading_kind(text[sep[1] :]) or _quiet_lead(text[sep[1] :])):
        return text[: sep[0]], text[sep[1] :]  # "Every morning, post a summary"; "Mornings: …"
    m = wording.RECEIVES.match(text)
    if m is not None and _leading_kind(text) is None:  # "Spam gets a downvote from me"
        cond = wording.MODAL_END.sub("", m.group("cond"))
        none = wording.NO_SUBJECT.match(cond)  # "Nothing from Brad gets an upvote"
        if none is not None:
            return cond[none.end() :], f"never give {m.group('act')}"
        return cond, m.group("act")
    m = wording.PASSIVE.match(text)
    done = None if m is None else _base_verb(m.group("done"))
    if m is not None and done is not None and _leading_kind(text) is None:
        rest = m.group("rest")  # "Spam should be voted down": down; "… at 9am": the time
        never = "never " if m.group("neg") else ""  # "Spam should never be upvoted"
        return f"{m.group('cond')} {rest}".strip(), f"{never}{done} {rest}".strip()
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


def _base_verb(done: str) -> str | None:
    """The verb a past participle is of ("answered", "downvoted", "replied"), if it names an
    action."""
    low = done.lower()
    for form in (low[:-1], low[:-2], low[:-3] + "y"):
        if form in wording.VERBS:
            return form
    return None


def _is_quiet(text: str) -> bool:
    return wording.has_any(text, wording.QUIET_PHRASES) is not None


def _quiet_lead(text: str) -> bool:
    low = text.lower().lstrip()
    return any(re.match(rf"{re.escape(p)}\b", low) for p in wording.QUIET_PHRASES)


def _quiet_start(text: str) -> bool:
    """The line opens with a word that keeps quiet ("Nothing between midnight and 7")."""
    low = text.lower().lstrip()
    return any(re.match(rf"{p}\b(?!\s+(?:from|by|of)\b)", low) for p in wording.QUIET_LEADS)


def _leading_kind(text: str) -> Kind | None:
    """The action a line's leading verb names ("Vote up …", "Give an upvote to …", "Say hello
    under …", "Post an answer …"); None when it does not lead with one ("Monitor posts …",
    "Help build …")."""
    tokens = words(wording.COURTESY.sub("", wording.normalize(text)))  # "…, could you post …"
    if not tokens:
        return None
    first = tokens[0]
    singular = first[:-3] + "y" if first.endswith("ies") else first[:-1]
    if first not in wording.VERBS and first.endswith("s") and singular in wording.VERBS:
        return None  # "Posts get busy on Mondays": a plural noun, not an order
    if first in wording.LIGHT_VERBS or first in ("post", "write"):
        for i, tok in enumerate(tokens[1:5], 1):
            noun = wording.ACTION_NOUNS.get(tok) or wording.ACTION_NOUNS.get(tok.rstrip("s"))
            if tok == "by" and i + 1 < len(tokens):  # "Flag spam by downvoting it"
                noun = wording.verb_kind(tokens[i + 1])
            if first in ("post", "write") and tok not in wording.REPLY_NOUNS and tok != "by":
                noun = None  # "post a good-morning note" is a post; "post an answer" is not
            if noun is not None:
                return noun
        if wording.SAYING.match(" ".join(tokens)):  # "say you're on it", "tell them thanks"
            return "comment"
        if first in wording.LIGHT_VERBS:
            return None
    if first == "help" and len(tokens) > 1 and tokens[1] not in _HELP_WHOM:
        return None  # "help build consensus" names a goal, not an action
    return wording.verb_kind(first)


def _action(text: str) -> tuple[Kind | None, Literal["up", "down"] | None]:
    low = wording.normalize(text).lower()
    if _is_quiet(low):
        return None, None
    tokens = words(low)
    # the action part's leading verb; a separated action part may name it anywhere
    for i, tok in enumerate(tokens):
        kind = _leading_kind(" ".join(tokens[i:])) if i == 0 else wording.verb_kind(tok)
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


def parse_rule(text: str, section: str, *, whole: str | None = None) -> Rule:
    """The line read as one rule (``parse_rules`` reads its exceptions too); ``whole``: the
    text it came from, when it is a part of one."""
    raw = text.strip() if whole is None else whole.strip()
    text = text.strip()
    norm = wording.COURTESY.sub("", wording.normalize(text))  # "Please upvote polls"
    lead = _NEGATED.match(norm)  # "No posting or commenting after 10pm"
    negated = lead is not None and _leading_kind(norm[lead.end() :]) is not None
    if lead is not None and negated:
        norm = norm[lead.end() :]
    elif lead is not None and (verb := _forbidden_noun(norm[lead.end() :])) is not None:
        negated, norm = True, verb  # "No replies after 9pm": no replying after 9pm
    cond, act = _split(norm)
    neg = None if negated else _NEGATED.match(act)
    if neg is not None and (_leading_kind(act[neg.end() :]) is not None):
        negated, act = True, act[neg.end() :]
        if cond.strip() == norm.strip():
            cond = act
    kind: Kind | None = None
    direction: Literal["up", "down"] | None = None
    quiet = (_is_quiet(act) or _quiet_start(norm)) and not negated
    if not quiet and (cond != act or _leading_kind(act) is not None):
        kind, direction = _action(act)  # no separator: only a leading verb names an action
    cond = re.split(r"\bwith\s*:", cond, maxsplit=1)[0]
    cond = wording.ASIDE.sub("", cond)  # "… so more people see them": why, not when
    return Rule(
        text=raw,
        section=section,
        kind=kind,
        direction=direction,
        condition=cond,
        negated=negated,
        quiet=quiet,
    )


def _forbidden_noun(rest: str) -> str | None:
    """After "no", the action named by its noun ("replies after 9pm", "votes on Wei's posts"),
    rewritten to lead with the verb; None when the line goes on to name a condition and an
    action of its own ("No replies yet? Answer it", "No comments → reply")."""
    m = re.match(r"([\w-]+)\b(.*)$", rest.strip())
    if m is None or _ARROW.search(rest) or "?" in rest or wording.RECEIVES.match(rest):
        return None
    noun = m.group(1).lower()
    for form in (noun, noun[:-1], noun[:-3] + "y"):
        if form in wording.VERBS and (form in wording.ACTION_NOUNS or form == "post"):
            return f"{form}{m.group(2)}"
    return None


def parse_rules(text: str, section: str) -> list[Rule]:
    """A line's rules: the rule; for a "don't" rule naming several actions ("No posting or
    commenting after 10pm") one for each; for an exception ("Downvote spam unless it's from
    Dealz", "except on Sundays") a "don't" rule of its own, and when the exception's words are
    not understood the rule names no action (so it never applies); an "ignore" rule
    ("Ignore anything from Rob") a "don't" rule of each action."""
    norm = wording.normalize(text.strip())
    kept = _kept_away(norm)
    if kept is not None:
        return [
            Rule(
                text=text.strip(),
                section=section,
                kind=k,
                direction=None,
                condition=kept,
                negated=True,
            )
            for k in ("vote", "comment", "post")
        ]
    exc = wording.EXCEPTION.search(norm)
    rule = parse_rule(norm if exc is None else norm[: exc.start()], section, whole=text)
    out = [rule]
    if rule.negated and rule.kind is not None:
        out += [replace(rule, kind=k, direction=None) for k in _also_named(norm, rule.kind)]
    if exc is None or rule.kind is None:
        return out
    unless = Rule(
        text=text.strip(),
        section=section,
        kind=rule.kind,
        direction=rule.direction,
        condition=f"except {exc.group('exc')}",
        negated=True,
    )
    if not reading(replace(unless, text=unless.condition), set(), "").understood:
        return [replace(rule, kind=None, direction=None)]
    return [*out, unless]


def _kept_away(text: str) -> str | None:
    """What an "ignore" rule keeps away from ("Ignore anything from Rob": anything from Rob;
    "If Rob posts about crypto, ignore it": Rob posts about crypto), which is then a "don't"
    rule of every action; None for any other line."""
    plain = wording.COURTESY.sub("", text)
    m = wording.IGNORE.match(plain)
    if m is not None:
        return next(g for g in m.groups() if g is not None)
    cond, act = _split(plain)
    if cond != act and wording.IGNORE.match(wording.COURTESY.sub("", act)) is not None:
        return cond
    return None


def _also_named(text: str, first: Kind) -> list[Kind]:
    """The other actions a "don't" rule names with its first ("posting or commenting")."""
    tokens = words(text)
    neg = next((i for i, t in enumerate(tokens) if t in wording.NEGATIONS), None)
    out: list[Kind] = []
    i = (neg if neg is not None else -1) + 2
    while i + 1 < len(tokens) and tokens[i] in ("or", "and", "nor", "on", "to", "under", "for"):
        if tokens[i] not in ("or", "and", "nor"):
            i += 1
            continue
        kind = wording.verb_kind(tokens[i + 1])
        if kind is None:
            break
        if kind != first and kind not in out:
            out.append(kind)
        i += 2
    return out


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
            for clause in _clauses(sentence):
                if clause.strip():
                    out += parse_rules(clause, section)
    return out


_BACK: Final = re.compile(r"\b(?:it|them)\b", re.I)  # a pronoun naming the first's object
_ON: Final = re.compile(r"^\s*(?:on|to|under|at|for)\s+", re.I)


def _object_of(rule: str) -> str | None:
    """What a rule that leads with its verb acts on ("Never comment on spam": spam;
    "Upvote Marta's posts": Marta's posts); None when it leads with none."""
    neg = _NEGATED.match(rule)
    text = rule[neg.end() :] if neg is not None else rule
    if _leading_kind(text) is None:
        return None
    named = _ON.sub("", wording.VERB_LEAD.sub("", text, count=1)).strip(" .")
    return named or None


def _clauses(text: str) -> list[str]:
    """A sentence's rules: two joined by ", and" when the second leads with an action of its
    own ("Downvote ads, and reply to anyone asking for notes"; "Never …, and don't …"); a
    second after a leading condition shares it ("If Ana posts, upvote it, and reply" is also
    "If Ana posts, reply"), and its "it" or "them" names the first's object ("Never comment
    on spam, and don't vote on it"). A list of names or of things ("from Ana, Ben, and
    Carl") is one."""
    for m in _JOINED.finditer(text):
        first, rest = text[: m.start()], text[m.end() :]
        neg = _NEGATED.match(rest)
        leads = _leading_kind(rest) is not None or (
            neg is not None and _leading_kind(rest[neg.end() :]) is not None
        )
        if not leads or parse_rule(first, "").kind is None:
            continue
        plain = wording.COURTESY.sub("", wording.normalize(first))
        lead = _LEADING_COND.match(plain)
        sep = None if lead is None else _separator(plain[lead.end() :])
        if lead is not None and sep is not None:
            rest = f"{plain[: lead.end() + sep[0]]}, {rest}"
        elif (named := _object_of(plain)) is not None:  # "…, and don't vote on it"
            rest = _BACK.sub(named, rest, count=1)
        return [first, *_clauses(rest)]
    return [text]


# --- what a rule reads ------------------------------------------------------------------------

_KNOWN_WORDS: Final = (
    NOT_NAMES
    | wording.READ_WORDS
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
    messages: bool = False  # it reads the thread's messages (a request to be reminded)
    tagged: bool = False  # it acts only on posts that carry the thread's tag
    per_post: bool = False  # it holds of each post on its own (``per_post``)

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
    whose = people(rule, authors, heartbeat_md)
    named = set(whose or ())
    named |= {w for k in keywords(cond, authors) for w in words(k)}
    on_topic = {w for t in wording.topic_phrases(cond) for w in t}
    text = wording.ASIDE.sub("", wording.COURTESY.sub("", wording.normalize(rule.text)))
    receives = wording.RECEIVES.match(text)
    if receives is not None:  # "… deserve an answer": the verb only joins the two parts
        text = f"{receives.group('cond')} {receives.group('act')}"
    text = bare(text)
    if reminder(cond):
        text = re.sub(r"\breminders?\b", " ", text, flags=re.I)  # "post the reminder once"
    unknown: list[str] = []
    for tok in words(text):
        tok = POSSESSIVE.sub("", tok.lstrip("@"))
        if (
            not tok
            or any(c.isdigit() for c in tok)
            or tok in _KNOWN_WORDS
            or tok in named
            or wording.verb_kind(tok) is not None
            or wording.stem(tok) in KNOWN_STEMS
            or wording.stem(tok) in on_topic
        ):
            continue
        unknown.append(tok)
    if negation_unread(cond):
        unknown.append("not")
    engaged = concept(cond, "engaged") or concept(cond, "controversial")
    votes = wording.count_condition(cond, r"votes?|upvotes?|points?|likes?")
    replies = wording.count_condition(cond, r"comments?|replies|answers?|responses?")
    return Reading(
        unknown=tuple(dict.fromkeys(unknown)),
        people=None if whose is None else frozenset(whose),
        counts_posts=wording.count_condition(cond, POST_NOUNS) is not None,
        scores=engaged or concept(cond, "no_votes") or votes is not None,
        comments=engaged or concept(cond, "no_comments") or replies is not None,
        contradictions=concept(cond, "contradiction"),
        messages=reminder(cond),
        tagged=thread_tag(cond),
        per_post=per_post(cond),
    )
