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
  a rule posts (it reads what it posted): those this thread made, as its recent actions record
  them, since every thread posts as the one agent;
- a post's score and comment count are in only when a rule reads votes or comments; a rule
  that counts posts takes every post in;
- the thread's messages, personality and open contradictions are in whenever the model
  decides (it reads them all); the procedure reads none of them but the contradictions a rule
  names and the messages when a rule reads a request to be reminded;
- the rules, the thread's title, the agent's recent actions, a wake's events and the local
  time the rules name are always in.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import msgspec

from heartbeat_md import parse
from ledger.records import Post, RunContext
from ledger.storage.interface import AGENT
from loops import procedure, reader
from loops.facts import names_thread, post_facts

__all__ = ["Decider", "Scope", "in_scope", "scope_of"]

Decider = Literal["prompt", "procedure"]


class Scope(msgspec.Struct, frozen=True, kw_only=True):
    """The inputs a decision can depend on (see the module's docstring)."""

    full: bool = False
    decider: Decider = "prompt"
    thread: str = ""  # the deciding thread, whose tag a post may carry
    why: str = ""  # why the scope is full, for a person reading the logs
    people: frozenset[str] | None = None  # authors whose posts count (lower case); None: all
    topics: bool = False  # posts also narrowed by the rules' topics (the procedure decides)
    own_posts: bool = False  # the agent's own posts count whatever ``people`` says ...
    mine: frozenset[str] = frozenset()  # ... those this thread made, by id (its recent actions)
    scores: bool = True
    comments: bool = True
    messages: bool = True
    profile: bool = True
    contradictions: bool = True


FULL = Scope(full=True)


@functools.lru_cache(maxsize=64)
def _rules(heartbeat_md: str) -> tuple[reader.Rule, ...]:
    return tuple(reader.rules_of(parse(heartbeat_md)))


def _authors(ctx: RunContext) -> set[str]:
    return {p.author.lower() for p in ctx.posts}


def scope_of(heartbeat_md: str, ctx: RunContext, decider: Decider, thread_id: str) -> Scope:
    """The scope of a beat's inputs for these rules (HEARTBEAT.md's text), this decider and
    this thread; ``FULL`` when any rule is not understood, or when there is no rule to read."""
    rules = [r for r in _rules(heartbeat_md) if decider == "prompt" or r.kind or r.quiet]
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
    counts = any(read.counts_posts for _, read in acting)
    return Scope(
        decider=decider,
        thread=thread_id,
        people=None if people is None else frozenset(people),
        topics=not by_model and not counts,
        own_posts=by_model and any(r.kind == "post" for r, _ in acting),
        mine=_mine(ctx),
        scores=any(read.scores for _, read in readings),
        comments=any(read.comments for _, read in readings),
        messages=by_model or any(read.messages for _, read in readings),
        profile=by_model,
        contradictions=by_model or any(read.contradictions for _, read in readings),
    )


def _mine(ctx: RunContext) -> frozenset[str]:
    """The agent's posts this thread made, as its recent actions record them: every thread
    posts as the one agent, and another thread's post is no post of this thread's."""
    return frozenset(
        str(done.get("post_id"))
        for run in ctx.recent
        for done in run.executed or []
        if done.get("type") == "post"
    )


def in_scope(scope: Scope, heartbeat_md: str, posts: Sequence[Post]) -> list[Post]:
    """The posts of ``posts`` a decision can depend on under ``scope``."""
    if scope.full:
        return list(posts)
    authors = {p.author.lower() for p in posts}
    rules = [r for r in _rules(heartbeat_md) if r.kind is not None and not r.quiet]
    tagged = any(reader.thread_tag(r.condition) for r in rules)
    out = []
    for p in posts:
        if p.author == AGENT:
            if scope.decider == "prompt" and scope.people is None:
                out.append(p)  # a post by the agent is anyone's post a rule may act on
            elif scope.own_posts and p.id in scope.mine:
                out.append(p)  # what this thread posted (the procedure reads none of them)
            continue
        if scope.people is not None and p.author.lower() not in scope.people:
            continue
        if scope.topics and not _about_any(rules, p, authors, heartbeat_md, scope.thread):
            continue
        if not scope.topics and tagged and not _named_any(rules, p, authors, heartbeat_md, scope):
            continue
        out.append(p)
    return out


def _named_any(
    rules: Sequence[reader.Rule], post: Post, authors: set[str], heartbeat_md: str, scope: Scope
) -> bool:
    """Some rule can be about the post by the names it reads (when the model decides): the
    post's author among the people it names, and the thread's id in the post, in any dress,
    when it asks for posts tagged for this thread. A rule counting posts takes every post."""
    text = f"{post.title}\n{post.content}"
    for rule in rules:
        read = reader.reading(rule, authors, heartbeat_md)
        if read.counts_posts:
            return True
        if read.people is not None and post.author.lower() not in read.people:
            continue
        if read.tagged and not names_thread(text, scope.thread, loosely=True):
            continue
        return True
    return False


def _about_any(
    rules: Sequence[reader.Rule], post: Post, authors: set[str], heartbeat_md: str, thread: str
) -> bool:
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
        thread_id=thread,
    )
    return any(procedure.about(r, facts, authors, heartbeat_md) for r in rules)
