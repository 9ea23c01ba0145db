"""Facts the service computes itself about the Ledger, for the rule-by-rule decision procedure.

Pure: posts in, facts out. A small model is near chance when asked whether a post "is spam" or
"asks a question"; these few surface signals are checked by code instead, and every fact carries
the words that made it true so a person can see why a rule was taken to apply.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

import msgspec

__all__ = [
    "NEW_SECONDS",
    "PostFacts",
    "asks_for_votes",
    "asks_question",
    "contains_keyword",
    "is_controversial",
    "is_engaged",
    "is_new",
    "is_urgent",
    "mentions",
    "names_thread",
    "post_facts",
    "reminder_request",
    "spam_signals",
    "thanks",
    "words",
]

NEW_SECONDS: Final = 24 * 3600  # a post younger than a day counts as new
REMINDER_CHARS: Final = 100  # what a request asks to be reminded of, at most
ENGAGED_COMMENTS: Final = 5
ENGAGED_SCORE: Final = 5
CONTROVERSIAL_COMMENTS: Final = 3

_WORD: Final = re.compile(r"(?:[^\W_]|[@'])+")
_QUESTION_START: Final = frozenset(
    "how what why when where who which whom whose can could should would is are does do did "
    "will anyone anybody any".split()
)
_SPAM_WORDS: Final = frozenset(
    "free win winner click offer deal deals discount cheap buy sale promo coupon limited "
    "followers subscribe prize casino crypto bitcoin earn cash money bonus guaranteed giveaway "
    "exclusive sponsored unlimited loan loans replica replicas lookalikes wholesale shipping "
    "order password suspended verify refund jackpot lottery viagra pills mlm dm unsubscribe "
    "profit profits income investment trading forex signals".split()
)
_SPAM_PHRASES: Final = (
    "% off",
    "act fast",
    "act now",
    "click here",
    "click the link",
    "only today",
    "order now",
    "order today",
    "buy now",
    "shop now",
    "sign up now",
    "join now",
    "visit our",
    "our store",
    "our shop",
    "dm me",
    "message me",
    "from home",
    "one trick",
    "no experience",
    "make money",
    "earn money",
    "per day",
    "a day from",
    "risk free",
    "risk-free",
    "100% free",
    "best price",
    "lowest price",
    "verify your",
    "confirm your",
    "your account",
    "lose access",
    "$$$",
)
_VOTE_PHRASES: Final = (
    "agree?",
    "consensus",
    "please vote",
    "vote on",
    "votes?",
    "+1",
    "thumbs up",
    "do we agree",
    "do you agree",
    "who is in",
    "show of hands",
    "vote:",
    "let's vote",
    "cast your vote",
    "quick survey",
    "vote for",
    "let's decide",
    "help us decide",
    "help decide",
    "decide together",
)
# words that name a vote being held, matched as whole words ("Poll: …", not "pollen")
_VOTE_WORDS: Final = frozenset(("poll", "polls"))
_URGENT_WORDS: Final = frozenset("urgent emergency outage asap critical broken fire".split())
_URGENT_PHRASES: Final = ("is down", "server down", "site down", "went down", "not working")
_CONTROVERSY_WORDS: Final = frozenset("controversial controversy debate divisive heated".split())
# words that thank someone ("thanks @user", "grateful to @user")
_THANKS_WORDS: Final = frozenset(
    "thanks thank thanked thx ty grateful kudos merci danke gracias".split()
)
# a request to be reminded, and what of: "remind me to …", "don't let me forget …"
_REMINDER: Final = re.compile(
    r"\b(?:remind\s+me|(?:do\s+not|don't|dont)\s+let\s+me\s+forget|"
    r"(?:i\s+want|i'd\s+like|i\s+would\s+like|i\s+need)\s+(?:to\s+be\s+reminded|a\s+reminder)|"
    r"set\s+(?:me\s+)?a\s+reminder)"
    r"(?:\s+(?:to|about|of|that|for))?\s+(?P<what>[^.!?\n]*[^\s.!?])",
    re.I,
)
# words before a request that take it back: "no need to remind me", "don't remind me"
_NOT_ASKED: Final = re.compile(
    r"(?:\bnot|n't|\bnever|\bno\s+need\s+to|\bstop|\bwithout)\s+(?!forget\b)(?:\w+\s+){0,2}$",
    re.I,
)


class PostFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the procedure knows about one Ledger post, each true fact with its evidence."""

    post_id: str
    author: str
    title: str
    age_seconds: float
    score: int
    comments: int
    new: bool
    question: bool
    asks_votes: bool
    spam: list[str]  # the spam signals found; empty when it does not look like spam
    urgent: bool
    controversial: bool
    engaged: bool
    voted: bool  # the agent already voted on it
    commented: bool  # the agent already commented on it
    text: str  # title and content, lower case, for keyword rules
    tagged: bool = False  # it carries the thread's tag ([t7], #t7 or @t7)
    reminder: str | None = None  # what it asks to be reminded of ("remind me to …")
    thanks_user: bool = False  # it thanks the user by name ("thanks @user for the drill")

    def describe(self) -> list[str]:
        """The true facts in words."""
        out = []
        if self.new:
            out.append("new")
        if self.question:
            out.append("asks a question")
        if self.comments == 0:
            out.append("no comments")
        if self.asks_votes:
            out.append("asks for votes")
        if self.spam:
            out.append(f"looks like spam ({', '.join(self.spam)})")
        if self.urgent:
            out.append("urgent")
        if self.controversial:
            out.append("controversial")
        if self.engaged:
            out.append("high engagement")
        if self.tagged:
            out.append("tagged for this thread")
        if self.reminder is not None:
            out.append(f"asks to be reminded of {self.reminder!r}")
        if self.thanks_user:
            out.append("thanks the user")
        if self.voted:
            out.append("you already voted")
        if self.commented:
            out.append("you already commented")
        return out


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def asks_question(title: str, content: str) -> bool:
    """A question mark in the title or text, or a title that opens like a question."""
    if "?" in title or "?" in content:
        return True
    first = words(title)[:1]
    return bool(first) and first[0] in _QUESTION_START


def spam_signals(title: str, content: str) -> list[str]:
    """The advertising signals in a post: selling words, shouting, a link to click."""
    text = f"{title} {content}"
    low = text.lower()
    found = sorted({w for w in words(low) if w in _SPAM_WORDS})
    found += [p for p in _SPAM_PHRASES if p in low]
    if text.count("!") >= 3:
        found.append("!!!")
    letters = [c for c in title if c.isalpha()]
    if len(letters) >= 8 and sum(c.isupper() for c in letters) / len(letters) > 0.7:
        found.append("all caps")
    if "http://" in low or "https://" in low or "www." in low:
        found.append("link")
    # One selling word alone ("free time", "a good deal") is not advertising.
    return found if len(found) >= 2 else []


def asks_for_votes(title: str, content: str) -> bool:
    low = f"{title} {content}".lower()
    return any(p in low for p in _VOTE_PHRASES) or any(w in _VOTE_WORDS for w in words(low))


def is_urgent(title: str, content: str) -> bool:
    text = f"{title} {content}"
    low = text.lower()
    return any(w in _URGENT_WORDS for w in words(text)) or any(p in low for p in _URGENT_PHRASES)


def is_controversial(title: str, content: str, score: int, comments: int) -> bool:
    """Named controversial, or much discussed while the votes cancel out."""
    if any(w in _CONTROVERSY_WORDS for w in words(f"{title} {content}")):
        return True
    return comments >= CONTROVERSIAL_COMMENTS and abs(score) <= 1


def is_engaged(score: int, comments: int) -> bool:
    return comments >= ENGAGED_COMMENTS or score >= ENGAGED_SCORE


def mentions(text: str, names: Iterable[str]) -> bool:
    """``@name`` for any of ``names`` in the text."""
    tokens = set(words(text))
    return any(f"@{n.lower()}" in tokens for n in names)


def thanks(text: str, names: Iterable[str]) -> bool:
    """A word of thanks and ``@name`` for one of ``names`` in the text: it thanks them."""
    return bool(_THANKS_WORDS & set(words(text))) and mentions(text, names)


def names_thread(text: str, thread_id: str, *, loosely: bool = False) -> bool:
    """The thread's tag in the text: its id written ``[id]``, ``#id`` or ``@id``
    (case-insensitively); ``loosely``: the id as a word in any dress ("for t7", "(t7)")."""
    tid = thread_id.strip().lower()
    if not tid:
        return False
    low = text.lower()
    tail = r"(?![\w-])"
    if loosely:
        return re.search(rf"(?<![\w-]){re.escape(tid)}{tail}", low) is not None
    return (
        re.search(rf"(?:\[{re.escape(tid)}\]|(?<![\w#@])[#@]{re.escape(tid)}{tail})", low)
        is not None
    )


def reminder_request(text: str) -> str | None:
    """What the text asks to be reminded of ("remind me to call Ana" → "call Ana"); None when
    it asks for no reminder ("this reminds me of …", "no need to remind me")."""
    for m in _REMINDER.finditer(text):
        if _NOT_ASKED.search(text[: m.start()]) is None:
            what = m.group("what").strip()
            if len(what) > REMINDER_CHARS:  # the reminder's title must hold it whole
                what = what[:REMINDER_CHARS].rsplit(" ", 1)[0].rstrip(" ,;:")
            return what
    return None


def contains_keyword(text: str, keyword: str) -> bool:
    """The keyword (a word or a phrase) in the text, case-insensitively, at word bounds."""
    key = keyword.strip().lower()
    if not key:
        return False
    if not key[-1].isalnum():  # "agree?" keeps its punctuation
        return key in text.lower()
    return re.search(rf"(?<![a-z0-9]){re.escape(key)}(?![a-z0-9])", text.lower()) is not None


def is_new(age_seconds: float) -> bool:
    """Whether a post this old counts as new."""
    return age_seconds < NEW_SECONDS


def post_facts(
    *,
    post_id: str,
    author: str,
    title: str,
    content: str,
    age_seconds: float,
    score: int,
    comments: int,
    voted: bool,
    commented: bool,
    thread_id: str = "",
) -> PostFacts:
    """The facts of one post; ``thread_id``: the thread deciding, whose tag the post may carry."""
    return PostFacts(
        post_id=post_id,
        author=author,
        title=title,
        age_seconds=age_seconds,
        score=score,
        comments=comments,
        new=is_new(age_seconds),
        question=asks_question(title, content),
        asks_votes=asks_for_votes(title, content),
        spam=spam_signals(title, content),
        urgent=is_urgent(title, content),
        controversial=is_controversial(title, content, score, comments),
        engaged=is_engaged(score, comments),
        voted=voted,
        commented=commented,
        text=f"{title}\n{content}".lower(),
        tagged=names_thread(f"{title}\n{content}", thread_id),
        reminder=reminder_request(f"{title}\n{content}"),
        thanks_user=thanks(f"{title}\n{content}", ("user", "me", "you")),
    )
