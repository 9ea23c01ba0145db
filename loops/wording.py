"""The words a HEARTBEAT.md rule may use, each table defined once (pure).

The rule reader (``loops.reader``) reads a rule by these tables: which verbs name
which action, which words name which fact about a post, which phrases say "do nothing" or
"don't", how numbers and topics are written. A word missing here leaves a rule not understood,
and a rule not understood never applies.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from loops.factwords import CONCEPTS

__all__ = [
    "AGGREGATE",
    "ASIDE",
    "ASKS_FOR",
    "CONCEPTS",
    "COURTESY",
    "EXCEPTION",
    "FILLER",
    "IGNORE",
    "LIGHT_VERBS",
    "MODAL_END",
    "NEGATIONS",
    "NO_SUBJECT",
    "PASSIVE",
    "QUIET_LEADS",
    "QUIET_PHRASES",
    "READ_WORDS",
    "RECEIVES",
    "RECEIVING",
    "REMINDER_ASKED",
    "REPLY_NOUNS",
    "SAYING",
    "THANKS_USER",
    "THREAD_TAGGED",
    "VERBS",
    "VERB_LEAD",
    "Compare",
    "count_condition",
    "has_any",
    "normalize",
    "number",
    "stem",
    "stems",
    "topic_phrases",
    "verb_kind",
]

Kind = Literal["post", "comment", "vote"]
Compare = tuple[Literal[">=", "<="], int]

# Phrases rewritten to one verb before a rule is read ("give a thumbs-up" is "give an upvote").
_PHRASES: Final[tuple[tuple[str, str], ...]] = (
    (r"thumbs?[\s-]*up", "upvote"),
    (r"thumbs?[\s-]*down", "downvote"),
    (r"up[\s-]vote", "upvote"),
    (r"down[\s-]vote", "downvote"),
    (r"\s*👍[\U0001F3FB-\U0001F3FF]?\s*", " upvote "),
    (r"\s*👎[\U0001F3FB-\U0001F3FF]?\s*", " downvote "),
    (r"\s*💬\s*", " comment "),
    (r"(?<![\w])\+1(?![\w])", "upvote"),
    (r"(?<![\w])-1(?![\w])", "downvote"),
    (r"weigh\s+in", "comment"),
    (r"chime\s+in", "comment"),
    (r"jump\s+in", "comment"),
    (r"speak\s+up", "comment"),
    (r"write\s+back", "reply"),
    (r"get\s+back\s+to", "reply to"),
    (r"reach\s+out\s+to", "reply to"),
    (r"follow\s+up\s+(?=on|with|under)", "comment "),
    (r"(?:raise|sound|send|issue)\s+(?:a|an|the)\s+(?:flag|alarm|alert|warning)", "alert"),
    (
        r"(?:start|open|create|make|write|put up)\s+(?:a|an)\s+(?:new\s+)?(?:post|thread|topic)",
        "post",
    ),
    (r"(?:pop|put|throw)\s+up\s+(?=(?:a|an|the|some|my|our)\b)", "post "),
    (r"put\s+together", "write"),
    (r"round\s+up", "summarize"),
    (r"sum\s+up", "summarize"),
)

VERBS: Final[dict[str, Kind]] = {
    "vote": "vote",
    "upvote": "vote",
    "downvote": "vote",
    "like": "vote",
    "endorse": "vote",
    "boost": "vote",
    "comment": "comment",
    "reply": "comment",
    "respond": "comment",
    "answer": "comment",
    "help": "comment",
    "welcome": "comment",
    "thank": "comment",
    "ask": "comment",
    "greet": "comment",
    "congratulate": "comment",
    "encourage": "comment",
    "advise": "comment",
    "explain": "comment",
    "suggest": "comment",
    "post": "post",
    "alert": "post",
    "warn": "post",
    "summarize": "post",
    "summarise": "post",
    "recap": "post",
    "announce": "post",
    "publish": "post",
    "broadcast": "post",
    "write": "post",
    "compile": "post",
    "share": "post",
}
# verbs that name no action of their own: "give an upvote", "leave a comment", "say hello"
LIGHT_VERBS: Final = frozenset(
    "give leave add cast drop make say flag send put offer provide support show hit press tap "
    "click smash".split()
)
# nouns that make the action of a light verb (or of "post", "write": "post an answer")
ACTION_NOUNS: Final[dict[str, Kind]] = {
    "comment": "comment",
    "reply": "comment",
    "answer": "comment",
    "response": "comment",
    "note": "comment",
    "hello": "comment",
    "hi": "comment",
    "welcome": "comment",
    "upvote": "vote",
    "downvote": "vote",
    "vote": "vote",
    "like": "vote",
}
# the nouns that make "post" or "write" a reply or a vote ("post an answer", "write a comment")
REPLY_NOUNS: Final = frozenset("comment reply answer response upvote downvote vote".split())
# a light verb of saying, its object the words to say: a comment ("say you're on it", "tell
# them thanks"); "tell me …" asks for the user, not for a comment
SAYING: Final = re.compile(
    r"^(?:say|tell\s+(?:them|him|her|everyone|everybody|people|folks|the\s+author))\s+\S", re.I
)
# words that lead a rule without being part of it: "Please upvote polls", "Also, reply to Ana"
# ("I'd like you to reply …", "Make sure to upvote …", "Could you answer …")
COURTESY: Final = re.compile(
    r"^\s*(?:(?:please|kindly|always|also|and|just|only|then|so|oh|ok|okay|btw|plus|anyway|i'd\s+like\s+you\s+to|"
    r"i\s+would\s+like\s+you\s+to|i\s+want\s+you\s+to|i\s+need\s+you\s+to|"
    r"(?:make|be)\s+sure\s+(?:to|you)|remember\s+to|try\s+to|feel\s+free\s+to|"
    r"go\s+ahead\s+and|you\s+(?:should|can|may|must)|(?:can|could|would)\s+you)\b[\s,]*)+",
    re.I,
)
# a rule whose subject is the condition and whose verb says it receives the action: "Questions
# nobody answered deserve an answer", "Anything from Ana gets my upvote", "Spam earns a
# downvote"; the action is the noun after the verb (``ACTION_NOUNS``)
RECEIVING: Final = (
    "gets",
    "get",
    "should get",
    "deserves",
    "deserve",
    "should receive",
    "receives",
    "receive",
    "earns",
    "earn",
    "merits",
    "merit",
    "warrants",
    "warrant",
)
RECEIVES: Final = re.compile(
    r"^(?P<cond>.+)\s+(?:"
    + "|".join(sorted(map(re.escape, RECEIVING), key=len, reverse=True))
    + r")\s+(?P<act>(?:(?:a|an|my|our|your|the|one|some)\s+)?(?:(?!of\b)[\w-]+\s+){0,2}?(?:"
    + "|".join(sorted(ACTION_NOUNS, key=len, reverse=True))
    + r")s?\b.*)$",
    re.I,
)
# a line's leading verb ("Vote up posts from Oskar when …": what is left names whose posts)
VERB_LEAD: Final = re.compile(r"^\s*\S+(?:\s+(?:up|down)\b)?\s*", re.I)
# a modal left at the end of a condition ("Urgent posts should | get a reply")
MODAL_END: Final = re.compile(r"\s+(?:should|must|will|shall|always)$", re.I)
# the same in the passive: "Spam should be downvoted", "Questions from Ana must be answered"
PASSIVE: Final = re.compile(
    r"^(?P<cond>.+?)\s+(?:should|must|shall|will|wo|is\s+to|are\s+to|ought\s+to|needs?\s+to)"
    r"(?P<neg>n't|\s+not|\s+never)?\s+(?:always\s+|each\s+|ever\s+)?be\s+(?P<done>[a-z]+ed)\b"
    r"(?P<rest>.*)$",
    re.I,
)
# a rule that keeps away from what it names, whatever the action: "Ignore anything from Rob",
# "Leave Rob's posts alone", "Don't engage with Rob", "Stay away from politics"
IGNORE: Final = re.compile(
    r"^\s*(?:(?:ignore|disregard)\s+(?P<a>.+)|leave\s+(?P<b>.+?)\s+alone\b.*"
    r"|(?:don't|dont|do\s+not|never)\s+(?:engage|interact)\s+with\s+(?P<c>.+)"
    r"|(?:stay\s+away|steer\s+clear|keep\s+away)\s+(?:from|of)\s+(?P<d>.+))$",
    re.I,
)
# a subject that says none: "Nothing from Brad gets an upvote", "No spam deserves a reply"
NO_SUBJECT: Final = re.compile(r"^\s*(?:nothing|no|none(?:\s+of)?|never\s+anything)\b\s*", re.I)
# an exception to a rule: "Downvote spam unless it's from Dealz", "Answer questions, except
# Nadia's", "Post a recap every evening but not on Sundays"
EXCEPTION: Final = re.compile(
    r"\s*[,;(]?\s*\b(?:unless|except(?:\s+for|\s+when|\s+if|\s+on)?|but\s+not|other\s+than|"
    r"apart\s+from|excluding|save\s+for)\b\s*(?P<exc>.*?)[\s).]*$",
    re.I,
)
# a clause that says why, not when: "… so more people see them", "… so that nobody feels
# ignored", "…, because he runs the shop"; cut off a rule's condition, it can only narrow it
ASIDE: Final = re.compile(
    r"(?:\s+so\s+(?:that\s+)?(?=(?:more|people|everyone|everybody|others?|they|it|the|he|"
    r"she|we|nobody|no\s+one|someone|somebody|folks|i|you)\b)|,?\s+because\b|,?\s+in\s+order\s+to\b)"
    r".*$",
    re.I,
)
# words within a few of a vote that turn it down
DOWN_WORDS: Final = frozenset("downvote downvotes downvoting down against negative".split())
NEGATIONS: Final = frozenset("don't dont never not no avoid stop skip refrain".split())
# words a condition uses that name no one and no topic: filler, the service's nouns and verbs
FILLER: Final = frozenset(
    "a an the and or of to in on at for from by with is are be it its this that these those "
    "any all each every some no not none nobody anyone has have had who whom if when then "
    "post posts posted posting user users core vip key team people person member members "
    "question questions comment comments reply vote up down their them her his him she he they "
    "yet answered answer help monitor check look watch keep new ledger i i'm me my "
    "january february march april may june july august september october november december".split()
)
# further words the reader accounts for in a rule (comparisons, times, topic markers, requests)
READ_WORDS: Final = frozenset(
    "please always only also otherwise ever than least most more fewer less under below over "
    "above min minimum or once whenever case time times anytime as soon should ago since "
    "between after before until till around noon midday midnight am pm o'clock hour hours "
    "minute minutes day days week weeks weekly daily today tonight weekday weekdays workday "
    "workdays weekend weekends lunch lunchtime overnight nightly regarding concerning related "
    "topic subject share shares discuss discusses talk talks where someone somebody sharing "
    "mentioning discussing containing contains word words titled about arrive arrives unread fresh "
    "recent last summary must shall ought i'd would want need sure remember try feel ahead go "
    "except unless excluding apart it's they're he's she's you're we're got see spot notice "
    "past within older old report reports reporting announces announcing requests requesting "
    "whoever puts drops announcement announcements review reviews looking searching needs "
    "needing selling offering ignore disregard alone engage interact stay away steer clear "
    "could can".split()
)
QUIET_PHRASES: Final = (
    "heartbeat_ok",
    "do nothing",
    "say nothing",
    "nothing else",
    "stay quiet",
    "stay silent",
    "keep quiet",
    "keep silent",
    "be quiet",
    "be silent",
    "remain quiet",
    "remain silent",
    "silent",
    "no action",
    "no actions",
    "take no action",
    "don't act",
    "do not act",
    "don't do anything",
    "do not do anything",
    "sleep",
    "quiet hours",
    "quiet time",
    "quiet period",
    "do not disturb",
    "no activity",
    "radio silence",
)
# words that, leading a line, keep quiet: "Nothing between midnight and 7", "Quiet after 10pm"
QUIET_LEADS: Final = ("nothing", "quiet", "silence", "pause")

# a post addressed to this thread: it carries the thread's tag ([t7], #t7, @t7)
THREAD_TAGGED: Final = re.compile(
    r"\b(?:(?:tagged|tag|marked|labell?ed|addressed|meant|intended|directed)\s+(?:for|to|with|at)"
    r"\s+(?:this|the\s+current|our)\s+(?:thread|conversation|chat)(?:'s\s+(?:tag|id))?"
    r"|(?:carry|carries|carrying|with|has|have|bears?)\s+(?:this|the)\s+thread's\s+(?:tag|id)"
    r"|this\s+thread's\s+tag)\b",
    re.I,
)
# someone asking to be reminded of something (in a post or in the thread): "asks to be
# reminded", "wants a reminder", "says remind me", "don't let me forget"
REMINDER_ASKED: Final = re.compile(
    r"(?:\b(?:asks?|asking|asked|wants?|wanting|requests?|requesting)\s+(?:(?:me|you|us)\s+)?"
    r"(?:to\s+be\s+reminded|for\s+(?:a\s+)?reminders?|a\s+reminder|"
    r"to\s+remind\s+(?:them|him|her|me|us))"
    r"(?:\s+(?:of|about|to)\s+(?:something|anything|it|that|things))?"
    r"|\b(?:says?|writes?|types?)\s+[\"“']?remind\s+me[\"”']?"
    r"|\b(?:says?|writes?)\s+[\"“']?(?:do\s+not|don't)\s+let\s+me\s+forget[\"”']?"
    r"|\b(?:needs?|needing)\s+(?:a\s+)?reminding"
    r"|\breminder\s+requests?"
    r"|\b(?:asks?|asking|asked)\s+(?:you\s+)?for\s+(?:them|one|it)\b(?=.*\breminders?\b)"
    r"|\breminders?\b(?=.*\b(?:asks?|asking|asked)\s+(?:you\s+)?for\s+(?:them|one|it)\b))\b",
    re.I,
)

# a post thanking the user ("when somebody thanks me", "if someone says thank you to me")
THANKS_USER: Final = re.compile(
    r"\b(?:thanks|thank|thanked|thanking)\s+(?:the\s+user|me)\b"
    r"|\bsays?\s+(?:thanks|thank\s+you)\s+to\s+(?:the\s+user|me)\b"
    r"|\bgrateful\s+to\s+(?:the\s+user|me)\b",
    re.I,
)

NUMBER_WORDS: Final[dict[str, int]] = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"a dozen": 12, "dozen": 12, "a couple of": 2, "a couple": 2}
_NUMBER: Final = r"(\d+|" + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True)) + r")"

# words that make a condition about the posts in sight together, not about each on its own: it
# ranks them ("the most popular post", "the latest question", "the only one"), compares them
# ("more votes than"), quantifies over them ("all questions", "every post") or asks for an
# absence ("nobody posted", "no new posts", "nothing", "when all is quiet"); whether a post is
# in sight can then change whether a rule applies to another
AGGREGATE: Final = re.compile(
    r"\b(?:most|least|top|best|worst|highest|lowest|biggest|largest|smallest|fewest|first|last|"
    r"latest|newest|oldest|earliest|only|sole|none|nobody|no\s+one|noone|nothing|empty|quiet|"
    r"total|overall|average|majority|rest|other|others|else)\b"
    r"|\b(?:all|every|each)\s+(?:[\w'-]+\s+)?(?:posts?|questions?|comments?|replies|messages?|"
    r"entries|entry|updates?|threads?|ones?)\b"
    r"|\bno\s+(?:new\s+|other\s+|more\s+|fresh\s+|unread\s+)?(?:posts?|questions?|"
    r"messages?|entries|updates?|activity)\b"
    r"|\bthan\s+(?!\d|(?:" + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True)) + r")\b)",
    re.I,
)

# what a rule names as a post's topic follows one of these ("posts about the garden project")
_TOPIC_MARKERS: Final = (
    r"about",
    r"regarding",
    r"concerning",
    r"related to",
    r"on the (?:topic|subject) of",
    r"(?:that|who|which) (?:share|shares|mention|mentions|discuss|discusses|talk about|"
    r"talks about|write about|writes about|ask about|asks about|post about|posts about)",
    r"where (?:someone|somebody|people|a user|anyone) (?:shares?|mentions?|talks? about)",
    r"sharing",
    r"shares",
    # a person's telling verb, its object the topic ("when someone reports a power cut",
    # "whoever posts the exam dates", "anyone asking for lecture notes")
    r"(?:someone|somebody|anyone|anybody|whoever|people|a user|a member|a customer|a neighbou?r)"
    r" (?:posts|puts up|drops)",
    r"reports?",
    r"reporting",
    r"announces",
    r"announcing",
    r"asks? for",
    r"asking for",
    r"(?:is |are )?(?:looking|searching) for",
    r"needs",
    r"needing",
    r"(?:is |are )?(?:selling|offering)",
    r"requests",
    r"requesting",
    r"warns? (?:of|about)",
    r"mentioning",
    r"mentions",
    r"discussing",
    r"containing",
    r"contains",
    r"with the words?",
    r"titled",
)
_TOPIC: Final = re.compile(r"\b(?:" + "|".join(_TOPIC_MARKERS) + r")\s+(.+)", re.I)
_TOPIC_END: Final = re.compile(
    r"\s*(?:[,.;:!?()→]|->|=>|\b(?:from|by|with|that|which|who|if|when|whenever|then|and|but|"
    r"posted|written|shared|sent|today|within|"
    r"unless|in the|on the ledger|on the forum|in the feed)\b)",
    re.I,
)
_DETERMINERS: Final = frozenset(
    "a an the any some this that these those their his her its my our your new".split()
)
# a request for something, whose object is a topic, not a question ("asking for lecture notes",
# "whoever asks for advice"): the question fact is not read in it
ASKS_FOR: Final = re.compile(r"\b(?:asks?|asking|asked)\s+for\b", re.I)
# words a topic is matched without ("requests for help": help; "advice on gardening")
_TOPIC_SKIP: Final = _DETERMINERS | frozenset("for of on to at".split())
# words that name no topic as the whole of one ("when I ask for them", "posts something")
_NO_TOPIC: Final = frozenset(
    "it them him her me us you this that something anything stuff one ones".split()
)
# a noun before one naming a kind of post says what it is about ("bug reports", "feature
# requests", "release announcements"); not a person, a quality or a word of the rule's own
_KIND_OF_POST: Final = re.compile(
    r"(?<![\w'-])([^\W\d_][\w-]*)\s+(?:reports?|announcements?|requests?|reviews?)\b", re.I
)
_NOT_A_KIND: Final = (
    _DETERMINERS
    | _NO_TOPIC
    | FILLER
    | frozenset(
        "someone somebody anyone anybody whoever everyone everybody customer customers "
        "neighbour neighbor student students good great bad short long quick detailed "
        "helpful useful nice interesting latest first last recent old older open any "
        "such other new".split()
    )
)
_WORD: Final = re.compile(r"(?:[^\W_]|[@'])+")
_UNSTEMMED: Final = frozenset("news series species always perhaps".split())


def normalize(text: str) -> str:
    """The rule with its multi-word verbs rewritten to one ("chime in" to "comment")."""
    out = text.replace("\u2019", "'").replace("\u2018", "'")  # curly apostrophes and quotes
    for pattern, verb in _PHRASES:
        out = re.sub(pattern, verb, out, flags=re.I)
    return out


def verb_kind(token: str) -> Kind | None:
    """The action a verb names in any of its forms ("replies", "posting", "voting")."""
    forms = (token, token.rstrip("s"), token[:-3], token[:-3] + "e", token[:-3] + "y")
    for form in (*forms, token[:-2], token[:-1]):  # "replied", "replies": reply
        kind = VERBS.get(form)
        if kind is not None and len(form) >= 3:
            return kind
    return None


def stem(word: str) -> str:
    """A crude English stem, enough to match "recipes" with "recipe", "shares" with "share"."""
    w = word.lower().strip("'")
    if w.endswith("'s"):
        w = w[:-2]
    if w in _UNSTEMMED or w.endswith(("ss", "us", "is")):
        return w
    for suffix, repl in (("ies", "y"), ("es", "e"), ("s", "")):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            return w[: -len(suffix)] + repl
    return w


def stems(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(text.lower())]


def has_any(text: str, phrases: tuple[str, ...] | frozenset[str]) -> str | None:
    """The first of ``phrases`` found in ``text`` at word bounds (case-insensitively)."""
    low = text.lower()
    for phrase in phrases:
        p = phrase.lower()
        tail = r"(?![\w])" if p[-1].isalnum() else ""
        if re.search(rf"(?<![\w@]){re.escape(p)}{tail}", low):
            return phrase
    return None


def number(text: str) -> int | None:
    t = text.lower().strip()
    return int(t) if t.isdigit() else NUMBER_WORDS.get(t)


def count_condition(text: str, nouns: str) -> Compare | None:
    """How many of ``nouns`` (a regex: "posts?", "comments?|replies") a condition asks for:
    ("5+ new posts", "more than four posts", "at least 3 comments", "fewer than 2 votes")."""
    low = text.lower()
    tail = rf"\s*(?:new\s+|more\s+|or more\s+|unread\s+|fresh\s+)?(?:{nouns})\b"
    m = re.search(rf"{_NUMBER}\s*(?:\+|or more\b){tail}", low) or re.search(
        rf"{_NUMBER}\s*\+?\s*(?:or more\s+)?(?:new\s+|unread\s+|fresh\s+)?(?:{nouns})\s+or more\b",
        low,
    )
    if m is not None:
        n = number(m.group(1))
        return None if n is None else (">=", n)
    m = re.search(
        rf"(at least|min(?:imum)?|more than|over|above|>=|>|fewer than|less than|under|below|"
        rf"at most|no more than|<=|<)\s*(?:of\s+)?{_NUMBER}{tail}",
        low,
    )
    if m is not None:
        n = number(m.group(2))
        if n is None:
            return None
        op = m.group(1)
        if op in ("at least", "min", "minimum", ">="):
            return (">=", n)
        if op in ("more than", "over", "above", ">"):
            return (">=", n + 1)
        if op in ("at most", "no more than", "<="):
            return ("<=", n)
        return ("<=", n - 1)
    m = re.search(rf"(?<![\w.]){_NUMBER}{tail}", low)
    if m is not None and m.group(1) not in ("zero", "0"):  # "3 new posts": at least three
        n = number(m.group(1))
        return None if n is None else (">=", n)
    return None


def topic_phrases(text: str) -> list[list[str]]:
    """The topics a condition names ("posts about the garden project" → [["garden",
    "project"]]); each as its word stems without determiners; alternatives ("cats or dogs")
    apart."""
    out: list[list[str]] = []
    for m in _TOPIC.finditer(text):
        rest = m.group(1)
        end = _TOPIC_END.search(rest)
        phrase = rest[: end.start()] if end is not None else rest
        for alt in re.split(r"\bor\b|/", phrase):
            words = [w for w in _WORD.findall(alt.lower()) if w not in _TOPIC_SKIP]
            if words and not set(words) <= _NO_TOPIC:
                out.append([stem(w) for w in words])
    for m in _KIND_OF_POST.finditer(text):  # "bug reports": posts about a bug
        word = m.group(1).lower()
        if not ({word, stem(word)} & _NOT_A_KIND) and verb_kind(word) is None:
            out.append([stem(word)])
    return out
