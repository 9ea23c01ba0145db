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
# a quote between two letters is an apostrophe ("Ravi's", "don't"), not a keyword's
_QUOTED: Final = re.compile(r"(?<!\w)[\"“”']([^\"“”']{1,40})[\"“”'](?!\w)")
_PARENS: Final = re.compile(r"\(([^)]{1,120})\)")
_SENTENCE: Final = re.compile(r"(?<=[.!;])\s+(?=[\"“'A-Z])|;\s*")
_LIST_MARK: Final = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])\s+")
_NEGATED: Final = re.compile(
    r"^\s*(?:please\s+)?(?:don't|dont|do not|never|avoid|stop|refrain from|no)\s+(?:ever\s+)?",
    re.I,
)
_NOT: Final = re.compile(r"\b(?:not|isn't|aren't|doesn't|don't|never|non)\b")
_HELP_WHOM: Final = frozenset("her him them out people users the a an with by".split())
_NOT_NAMES: Final = (
    wording.FILLER
    | frozenset(wording.VERBS)
    | frozenset(timewords.WEEKDAYS)
    | frozenset(d + "s" for d in timewords.WEEKDAYS)
    | frozenset(w for words_ in wording.CONCEPTS.values() for w in words_)
    | wording.NEGATIONS
    | frozenset("never don't please always only also otherwise".split())
)
_GROUP_WORDS: Final = ("core", "vip", "key", "important", "trusted", "favorite", "favourite")
_NAME: Final = r"@?([^\W\d_][\w.-]*)"
_POSSESSIVE: Final = re.compile(r"'s?$")


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


def _verb(token: str) -> Kind | None:
    """The action a verb names in any of its forms ("replies", "posting", "voting")."""
    forms = (token, token.rstrip("s"), token[:-3], token[:-3] + "e", token[:-3] + "y")
    for form in (*forms, token[:-2], token[:-1]):  # "replied", "replies": reply
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
    singular = first[:-3] + "y" if first.endswith("ies") else first[:-1]
    if first not in wording.VERBS and first.endswith("s") and singular in wording.VERBS:
        return None  # "Posts get busy on Mondays": a plural noun, not an order
    if first in wording.LIGHT_VERBS or first in ("post", "write"):
        for i, tok in enumerate(tokens[1:5], 1):
            noun = wording.ACTION_NOUNS.get(tok) or wording.ACTION_NOUNS.get(tok.rstrip("s"))
            if tok == "by" and i + 1 < len(tokens):  # "Flag spam by downvoting it"
                noun = _verb(tokens[i + 1])
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


def parse_rules(text: str, section: str) -> list[Rule]:
    """A line's rules: the rule; for a "don't" rule naming several actions ("No posting or
    commenting after 10pm") one for each; for an exception ("Downvote spam unless it's from
    Dealz", "except on Sundays") a "don't" rule of its own, and when the exception's words are
    not understood the rule names no action (so it never applies)."""
    norm = wording.normalize(text.strip())
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
        kind = _verb(tokens[i + 1])
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
            if sentence.strip():
                out += parse_rules(sentence, section)
    return out


# --- conditions ------------------------------------------------------------------------------


def bare(cond: str) -> str:
    """The condition without the phrases of the two cases read as a whole ("tagged for this
    thread", "asks to be reminded of something"), so that their words ("tagged", "asks",
    "don't") are not read as a mention, a question or a negation."""
    return wording.REMINDER_ASKED.sub(" ", wording.THREAD_TAGGED.sub(" ", cond))


def has(cond: str, *keys: str) -> bool:
    return wording.has_any(bare(cond), keys) is not None


def concept(cond: str, name: str) -> bool:
    return wording.has_any(bare(cond), wording.CONCEPTS[name]) is not None


def thread_tag(cond: str) -> bool:
    """The condition asks for posts addressed to this thread ("questions tagged for this
    thread"): posts that carry the thread's tag."""
    return wording.THREAD_TAGGED.search(cond) is not None


def reminder(cond: str) -> bool:
    """The condition names a request to be reminded ("when the user asks to be reminded",
    "if someone says remind me")."""
    return wording.REMINDER_ASKED.search(cond) is not None


_SELF: Final = r"(?:the\s+user|user|me|myself|my\s+(?:name|handle|username)|you|i'm|i\s+am|i)"
_NAMED: Final = _SELF + r"(?:'s\s+(?:name|handle|username))?"  # "the user's name"
_MENTIONED: Final = re.compile(
    # the verb names the user ("mentions me", "tags the user", "addressed to me") ...
    r"\b(?:mentions?|mentioning|mentioned|tags?|tagging|tagged|pings?|pinging|pinged|names|"
    r"naming|addresses|addressing|addressed)\s+(?:(?:to|for|at|of)\s+)?" + _NAMED + r"(?![\w'])"
    # ... or the user is named ("the user is mentioned", "when I'm tagged", "I get pinged")
    r"|(?<![\w'])" + _NAMED + r"\s+(?:(?:is|are|am|was|were|gets?|got|has\s+been|have\s+been|"
    r"being)\s+)?(?:mentioned|tagged|pinged|named|addressed)\b",
    re.I,
)


def mentions_user(cond: str) -> bool:
    """ "The user is mentioned", "mentions me", "when I'm tagged"; not "mentions an outage",
    nor "tagged for this thread" or "a question from the user that is tagged …" (the verb
    must name the user)."""
    if has(cond, "@user", "@me"):
        return True
    return _MENTIONED.search(bare(cond)) is not None


def people(rule: Rule, authors: set[str], heartbeat_md: str) -> set[str] | None:
    """The people a condition names (lower case), or None when it names nobody."""
    whole = rule.condition.lower()
    cond = bare(rule.condition)
    low = cond.lower()
    if mentions_user(low):
        return None  # a mention rule names whom the post mentions, not its author
    names: set[str] = set()
    named = False
    for m in _PARENS.finditer(cond):
        items = {w for w in words(m.group(1)) if w not in wording.FILLER}
        if items & authors:
            names |= items
            named = True
    for group in _GROUP_WORDS:
        if re.search(rf"\b{group}\s+(?:users?|members?|people|team)\b", low):
            named = True
            for line in heartbeat_md.lower().splitlines():
                if group in words(line):
                    names |= {w for w in words(line) if w not in wording.FILLER}
    if re.search(r"\b(?:from|by)\s+(?:the\s+)?user\b", low) or re.search(
        r"\bthe user('s)?\s+(?:post|posts|posted|asks|asked|writes|wrote|says|wants)", whole
    ):
        names.add("user")
        named = True
    for m in re.finditer(rf"\b(?:from|by)\s+{_NAME}", low):
        name = m.group(1).rstrip(".")
        if name not in _NOT_NAMES and _verb(name) is None:  # "by downvoting it": a means
            names.add(name)
            named = True
    # a capitalised name inside the condition ("if nobody answered Carol", "whatever Björn")
    tokens = re.findall(r"[^\W\d_][\w'-]*", _PARENS.sub(" ", _QUOTED.sub(" ", cond)))
    tokens = [_POSSESSIVE.sub("", t) for t in tokens]  # "Ravi's posts": Ravi
    for tok in tokens[1:]:
        if tok[0].isupper() and not tok.isupper() and tok.lower() not in _NOT_NAMES:
            names.add(tok.lower())
            named = True
    for tok in (_POSSESSIVE.sub("", t) for t in words(low)):
        if tok in authors and tok not in _NOT_NAMES:
            names.add(tok)
            named = True
    return names if named else None


def keywords(cond: str, authors: set[str]) -> list[str]:
    cond = bare(cond)
    found = [m.group(1) for m in _QUOTED.finditer(cond)]
    for m in _PARENS.finditer(cond):
        items = [i.strip() for i in re.split(r",|\bor\b", m.group(1))]
        if any(len(words(i)) > 3 for i in items):
            continue  # "(he runs the co-op shop)": an aside, not a list of words to find
        if not {w for i in items for w in words(i)} & authors:
            found += [i for i in items if i and timewords.read_time(i) is None]
    return found


_KNOWN_STEMS: Final = frozenset(
    wording.stem(w)
    for w in [*(x for v in wording.CONCEPTS.values() for x in v), *wording.FILLER, *wording.VERBS]
)


def topics(cond: str) -> list[list[str]]:
    """The topics a condition names beyond the facts the service knows by name."""
    return [t for t in wording.topic_phrases(bare(cond)) if not set(t) <= _KNOWN_STEMS]


POST_NOUNS: Final = r"posts?|messages|entries|updates|threads"


def negation_unread(cond: str) -> bool:
    """A condition that negates something other than the comments ("if a post is not spam"):
    not understood, so the rule never applies."""
    stripped = bare(cond).lower()
    for phrase in wording.CONCEPTS["no_comments"] + wording.CONCEPTS["no_votes"]:
        stripped = stripped.replace(phrase, " ")
    return _NOT.search(stripped) is not None


def per_post(cond: str) -> bool:
    """Whether the condition holds of each post on its own, whatever else is in sight: it
    neither counts the posts, ranks or compares them, quantifies over all of them nor asks for
    an absence (``wording.AGGREGATE``: "the most popular post", "every question answered",
    "nobody posted"). Then a post leaving the feed cannot make the rule apply to another."""
    text = bare(cond)
    for phrase in wording.QUIET_PHRASES:  # "do nothing", "stay quiet": the action, not a count
        text = re.sub(rf"\b{re.escape(phrase)}\b", " ", text, flags=re.I)
    if wording.count_condition(text, POST_NOUNS) is not None:
        return False
    return wording.AGGREGATE.search(text) is None


# --- what a rule reads ------------------------------------------------------------------------

_KNOWN_WORDS: Final = (
    _NOT_NAMES
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
        tok = _POSSESSIVE.sub("", tok.lstrip("@"))
        if (
            not tok
            or any(c.isdigit() for c in tok)
            or tok in _KNOWN_WORDS
            or tok in named
            or _verb(tok) is not None
            or wording.stem(tok) in _KNOWN_STEMS
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
