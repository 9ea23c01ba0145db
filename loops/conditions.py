"""What a rule's condition names (pure): the people whose posts it is about, quoted keywords,
topics, a mention of the user, the two whole-phrase cases (posts tagged for this thread, requests
to be reminded), the facts it asks for by name, and whether it holds of each post on its own.
The rule reader (``loops.reader``) splits a rule into condition and action; these read the
condition, by the tables of ``loops.wording``.
"""

from __future__ import annotations

import re
from typing import Final, Protocol

from loops import timewords, wording
from loops.facts import words

__all__ = [
    "KNOWN_STEMS",
    "NOT_NAMES",
    "POSSESSIVE",
    "POST_NOUNS",
    "HasCondition",
    "bare",
    "concept",
    "has",
    "keywords",
    "mentions_user",
    "negation_unread",
    "people",
    "per_post",
    "reminder",
    "thanks_user",
    "thread_tag",
    "topics",
]


class HasCondition(Protocol):
    """A rule, as far as its condition goes."""

    @property
    def condition(self) -> str: ...


# a quote between two letters is an apostrophe ("Ravi's", "don't"), not a keyword's
_QUOTED: Final = re.compile(r"(?<!\w)[\"“”']([^\"“”']{1,40})[\"“”'](?!\w)")
_PARENS: Final = re.compile(r"\(([^)]{1,120})\)")
_NOT: Final = re.compile(r"\b(?:not|isn't|aren't|doesn't|don't|never|non)\b")
NOT_NAMES: Final = (
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
POSSESSIVE: Final = re.compile(r"'s?$")


def bare(cond: str) -> str:
    """The condition without the phrases of the two cases read as a whole ("tagged for this
    thread", "asks to be reminded of something"), so that their words ("tagged", "asks",
    "don't") are not read as a mention, a question or a negation."""
    return wording.REMINDER_ASKED.sub(" ", wording.THREAD_TAGGED.sub(" ", cond))


def has(cond: str, *keys: str) -> bool:
    return wording.has_any(bare(cond), keys) is not None


def concept(cond: str, name: str) -> bool:
    """The condition names the fact by one of its words; the verb that leads a rule naming the
    action is not one ("Never vote on anything Kasia posts" does not ask for a vote), nor is
    "asks for" a question."""
    text = bare(cond)
    if wording.verb_kind(next(iter(words(text)), "")) is not None:
        text = wording.VERB_LEAD.sub("", text)
    if name == "question":  # "anyone asking for lecture notes" asks for a topic
        text = wording.ASKS_FOR.sub(" ", text)
    return wording.has_any(text, wording.CONCEPTS[name]) is not None


def thanks_user(cond: str) -> bool:
    """The condition asks for a post that thanks the user ("when somebody thanks me")."""
    return wording.THANKS_USER.search(cond) is not None


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
    r"being)\s+)?@?(?:mentioned|tagged|pinged|named|addressed)\b",
    re.I,
)


def mentions_user(cond: str) -> bool:
    """ "The user is mentioned", "mentions me", "when I'm tagged"; not "mentions an outage",
    nor "tagged for this thread" or "a question from the user that is tagged …" (the verb
    must name the user)."""
    if has(cond, "@user", "@me"):
        return True
    return _MENTIONED.search(bare(cond)) is not None


def people(rule: HasCondition, authors: set[str], heartbeat_md: str) -> set[str] | None:
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
        if name not in NOT_NAMES and wording.verb_kind(name) is None:  # "by downvoting it": a means
            names.add(name)
            named = True
    # a capitalised name inside the condition ("if nobody answered Carol", "whatever Björn")
    tokens = re.findall(r"[^\W\d_][\w'-]*", _PARENS.sub(" ", _QUOTED.sub(" ", cond)))
    tokens = [POSSESSIVE.sub("", t) for t in tokens]  # "Ravi's posts": Ravi
    for tok in tokens[1:]:
        if tok[0].isupper() and not tok.isupper() and tok.lower() not in NOT_NAMES:
            names.add(tok.lower())
            named = True
    for tok in (POSSESSIVE.sub("", t) for t in words(low)):
        if tok in authors and tok not in NOT_NAMES:
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


KNOWN_STEMS: Final = frozenset(
    wording.stem(w)
    for w in [*(x for v in wording.CONCEPTS.values() for x in v), *wording.FILLER, *wording.VERBS]
)


def topics(cond: str) -> list[list[str]]:
    """The topics a condition names beyond the facts the service knows by name."""
    return [t for t in wording.topic_phrases(bare(cond)) if not set(t) <= KNOWN_STEMS]


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
