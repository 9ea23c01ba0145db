"""What of a beat's inputs can change its decision, given the thread's rules (pure).

The threads share one Ledger, so a post or vote anywhere changes every thread's feed, although
most such changes cannot matter to a thread's rules. ``scope_of`` reads the rules with the rule
reader (``loops.reader.reading``) and returns a ``Scope``: whose posts, which of their
numbers and which other inputs a decision can depend on; ``loops.fingerprint`` hashes only
those. The scope is an upper bound of what the decider reads, never a guess below it:

- any rule the reader does not understand (a word none of its tables accounts for) makes the
  scope ``full``: the whole fingerprint, as if nothing were scoped;
- a post is in when some rule can be about it: its author among the people every such rule
  names, the thread's tag on it when the rule asks for posts tagged for this thread, and, when
  the procedure decides, its text on the rule's topics. When the model decides, topics do not
  narrow the posts (a model reads meaning, the reader reads words), only authors and the tag do
  (the thread's id anywhere in the post, in any dress), and the agent's own posts stay in when
  a rule posts (it reads what it posted): those this thread made (the run that made a post names
  its thread), since every thread posts as the one agent;
- a post's score and comment count are in only when a rule that reads votes or comments can
  be about that post; a rule that counts posts takes every post in;
- the thread's messages, personality and open contradictions are in whenever the model
  decides (it reads them all); the procedure reads none of them but the contradictions a rule
  names and the messages when a rule reads a request to be reminded;
- the rules, the thread's title, the agent's recent actions, a wake's events and the local
  time the rules name are always in;
- when every rule holds of each post on its own (no ranking, comparing, counting or absence
  across posts: ``loops.reader.per_post``), a post of someone else's that leaves the feed
  cannot make a rule apply (``per_post``; ``loops.fingerprint.unchanged`` uses it).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal, NamedTuple

import msgspec

from heartbeat_md import parse
from ledger.records import Post, RunContext
from ledger.storage.interface import AGENT
from loops import procedure, reader
from loops.facts import names_thread, post_facts

__all__ = ["Counted", "Decider", "Scope", "in_scope", "scope_of"]

Decider = Literal["prompt", "procedure"]


class Scope(msgspec.Struct, frozen=True, kw_only=True):
    """The inputs a decision can depend on (see the module's docstring)."""

    full: bool = False
    decider: Decider = "prompt"
    thread: str = ""  # the deciding thread, whose tag a post may carry
    why: str = ""  # why the scope is full, for a person reading the logs
    people: frozenset[str] | None = None  # authors whose posts count (lower case); None: all
    own_posts: bool = False  # the agent's posts this thread made count whatever ``people`` says
    scores: bool = True
    comments: bool = True
    messages: bool = True
    profile: bool = True
    contradictions: bool = True
    # every rule holds of each post on its own (``loops.reader.per_post``): a counted post of
    # someone else's leaving the feed cannot make a rule apply that applied to none before
    per_post: bool = False


FULL = Scope(full=True)


@functools.lru_cache(maxsize=64)
def _rules(heartbeat_md: str) -> tuple[reader.Rule, ...]:
    return tuple(reader.rules_of(parse(heartbeat_md)))


def _authors(ctx: RunContext) -> set[str]:
    return {p.author.lower() for p in ctx.posts}


def scope_of(heartbeat_md: str, ctx: RunContext, decider: Decider, thread_id: str) -> Scope:
    """The scope of a beat's inputs for these rules (HEARTBEAT.md's text), this decider and
    this thread; ``FULL`` when any rule is not understood, or when there is no rule to read."""
    rules = _considered(heartbeat_md, decider)
    if not rules:
        return msgspec.structs.replace(FULL, why="no rule the reader can read")
    authors = _authors(ctx)
    readings = [(r, reader.reading(r, authors, heartbeat_md)) for r in rules]
    for rule, read in readings:
        if not read.understood:
            return msgspec.structs.replace(
                FULL, why=f"rule {rule.text!r} not understood: {', '.join(read.unknown)}"
            )
    acting = [(r, read) for r, read in readings if r.kind is not None and not r.quiet]
    people: set[str] | None = set()
    for _, read in acting:
        if read.people is None or read.counts_posts:
            people = None
            break
        people |= read.people  # type: ignore[operator]
    by_model = decider == "prompt"
    return Scope(
        decider=decider,
        thread=thread_id,
        people=None if people is None else frozenset(people),
        own_posts=by_model and any(r.kind == "post" for r, _ in acting),
        scores=any(read.scores for _, read in readings),
        comments=any(read.comments for _, read in readings),
        messages=by_model or any(read.messages for _, read in readings),
        profile=by_model,
        contradictions=by_model or any(read.contradictions for _, read in readings),
        per_post=all(read.per_post for _, read in readings),
    )


class Counted(NamedTuple):
    """A post a decision can depend on, and whether its score and comment count can matter."""

    post: Post
    score: bool
    comments: bool


def _considered(heartbeat_md: str, decider: Decider) -> list[reader.Rule]:
    """The rules the decider reads: every one for the model, those that act or keep quiet for
    the procedure."""
    return [r for r in _rules(heartbeat_md) if decider == "prompt" or r.kind or r.quiet]


def in_scope(scope: Scope, heartbeat_md: str, posts: Sequence[Post]) -> list[Counted]:
    """The posts of ``posts`` a decision can depend on under ``scope``: those some rule that
    acts can be about. A post's score counts when a rule that reads votes can be about it, its
    comment count when one that reads comments can ("no votes yet" on this thread's tagged
    questions: another thread's vote on its own question changes nothing here)."""
    if scope.full:
        return [Counted(p, True, True) for p in posts]
    authors = {p.author.lower() for p in posts}
    rules = _considered(heartbeat_md, scope.decider)
    read = {r: reader.reading(r, authors, heartbeat_md) for r in rules}
    acting = {r for r in rules if r.kind is not None and not r.quiet}
    every = any(read[r].counts_posts for r in acting)  # "when 3 new posts arrive"
    out = []
    for p in posts:
        if p.author == AGENT:
            if scope.decider == "prompt" and scope.people is None:
                out.append(Counted(p, scope.scores, scope.comments))  # anyone's post
            elif scope.own_posts and p.thread_id == scope.thread:  # what this thread posted
                out.append(Counted(p, scope.scores, scope.comments))
            continue
        if scope.people is not None and p.author.lower() not in scope.people:
            continue
        if every:
            out.append(Counted(p, scope.scores, scope.comments))
            continue
        about = [r for r in rules if _can_be_about(r, read[r], p, authors, heartbeat_md, scope)]
        if acting.isdisjoint(about):
            continue
        out.append(
            Counted(p, any(read[r].scores for r in about), any(read[r].comments for r in about))
        )
    return out


def _can_be_about(
    rule: reader.Rule,
    read: reader.Reading,
    post: Post,
    authors: set[str],
    heartbeat_md: str,
    scope: Scope,
) -> bool:
    """The rule can be about the post: by everything the procedure reads of a post
    (``procedure.about``) when it decides; when the model does, by the names the rule reads
    alone: the post's author among the people it names, and the thread's id in the post, in
    any dress, when it asks for posts tagged for this thread."""
    if scope.decider == "procedure":
        facts = post_facts(
            post_id=post.id,
            author=post.author,
            title=post.title,
            content=post.content,
            age_seconds=0.0,
            score=post.score,
            comments=post.comment_count,
            voted=False,
            commented=False,
            thread_id=scope.thread,
        )
        return procedure.about(rule, facts, authors, heartbeat_md)
    if read.people is not None and post.author.lower() not in read.people:
        return False
    return not read.tagged or names_thread(
        f"{post.title}\n{post.content}", scope.thread, loosely=True
    )
