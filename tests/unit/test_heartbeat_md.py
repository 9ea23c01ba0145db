"""HEARTBEAT.md parsing: sections, items, checkboxes, fences, emptiness, prompt rendering."""

from __future__ import annotations

import pytest

from heartbeat_md import ChecklistItem, Instructions, is_effectively_empty, parse, render_for_prompt

SEED = """## Checklist
- Check for urgent emails
- Scan Ledger for questions

## Rules
If no urgent items → reply HEARTBEAT_OK only.
If 5+ posts in Ledger → post daily summary.

## Proactive Behaviors
- Monitor for posts from core users (Alice, Bob)
- If spam-like post → vote down
"""


def item(text: str, checked: bool | None = None) -> ChecklistItem:
    return ChecklistItem(text=text, checked=checked)


# (text, checklist, rules, proactive_behaviors, sections)
PARSE_CASES = [
    pytest.param(
        SEED,
        [item("Check for urgent emails"), item("Scan Ledger for questions")],
        [
            "If no urgent items → reply HEARTBEAT_OK only.",
            "If 5+ posts in Ledger → post daily summary.",
        ],
        ["Monitor for posts from core users (Alice, Bob)", "If spam-like post → vote down"],
        {},
        id="seed-example",
    ),
    pytest.param(
        "## Checklist\n- [ ] open\n- [x] done\n- [X] DONE\n- plain\n",
        [item("open", False), item("done", True), item("DONE", True), item("plain")],
        [],
        [],
        {},
        id="checkbox-states",
    ),
    pytest.param(
        "## Checklist\n* star\n+ plus\n1. one\n2) two\n",
        [item("star"), item("plus"), item("one"), item("two")],
        [],
        [],
        {},
        id="list-markers",
    ),
    pytest.param(
        "## Checklist\n- [ ] parent\n  - [x] child\n    - grandchild\n\t- tabbed\n",
        [item("parent", False), item("child", True), item("grandchild"), item("tabbed")],
        [],
        [],
        {},
        id="nested-items-flattened",
    ),
    pytest.param(
        "## Rules\n- first rule\n  continued on the next line\nsecond rule\n",
        [],
        ["first rule continued on the next line", "second rule"],
        [],
        {},
        id="indented-continuation-joins-item",
    ),
    pytest.param(
        "## Checklist\n- [ ]\n-\n- [x]   \n- real\n",
        [item("real")],
        [],
        [],
        {},
        id="empty-items-dropped",
    ),
    pytest.param(
        "## Checklist\nPlain prose line\n- [x] listed\n",
        [item("Plain prose line"), item("listed", True)],
        [],
        [],
        {},
        id="checklist-prose-line-is-unchecked-none",
    ),
    pytest.param(
        "## Rules\n- [x] keep box text\n",
        [],
        ["[x] keep box text"],
        [],
        {},
        id="rules-keep-checkbox-text",
    ),
    pytest.param(
        "# CHECKLIST\n- a\n### rules\n- b\n###### Proactive   Behaviours\n- c\n",
        [item("a")],
        ["b"],
        ["c"],
        {},
        id="any-level-case-insensitive",
    ),
    pytest.param(
        "## proactive_behaviors\n- a\n## Proactive-Behaviors:\n- b\n## ✅ Check-list ##\n- c\n",
        [item("c")],
        [],
        ["a", "b"],
        {},
        id="name-punctuation-and-closing-hashes",
    ),
    pytest.param(
        "\ufeff## Checklist\r\n- [ ] crlf\r\n\r\n## Rules\r\nrule one\r\n",
        [item("crlf", False)],
        ["rule one"],
        [],
        {},
        id="bom-and-crlf",
    ),
    pytest.param(
        "## Rules\r- cr only\r",
        [],
        ["cr only"],
        [],
        {},
        id="bare-cr",
    ),
    pytest.param(
        "Intro text\n\n## Notes\nsome notes\n\n## Checklist\n- a\n",
        [item("a")],
        [],
        [],
        {"": "Intro text", "Notes": "some notes"},
        id="preamble-and-other-section",
    ),
    pytest.param(
        "\n\n  \n## Notes\n\n  body  \n\n",
        [],
        [],
        [],
        {"Notes": "body"},
        id="blank-preamble-omitted-body-stripped",
    ),
    pytest.param(
        "# My Heartbeat\n## Checklist\n- a\n",
        [item("a")],
        [],
        [],
        {"My Heartbeat": ""},
        id="title-heading-kept-with-empty-body",
    ),
    pytest.param(
        "## Notes\ntext\n```md\n## not a heading\n- not an item\n```\nafter\n",
        [],
        [],
        [],
        {"Notes": "text\n```md\n## not a heading\n- not an item\n```\nafter"},
        id="fence-in-other-section-kept-in-body",
    ),
    pytest.param(
        '## Rules\nreply like this:\n```json\n{"action": "none"}\n# comment\n```\n- last\n',
        [],
        ["reply like this:", '```json\n{"action": "none"}\n# comment\n```', "last"],
        [],
        {},
        id="fence-in-known-section-is-one-item",
    ),
    pytest.param(
        "## Rules\n~~~\n## Checklist\n- x\n~~~\n",
        [],
        ["~~~\n## Checklist\n- x\n~~~"],
        [],
        {},
        id="tilde-fence",
    ),
    pytest.param(
        "## Rules\n````\n```\n## still fenced\n````\n- after\n",
        [],
        ["````\n```\n## still fenced\n````", "after"],
        [],
        {},
        id="longer-fence-needs-longer-close",
    ),
    pytest.param(
        "## Rules\n```\n## unclosed\n- x",
        [],
        ["```\n## unclosed\n- x"],
        [],
        {},
        id="unclosed-fence-runs-to-end",
    ),
    pytest.param(
        "## Checklist\n### Morning\n- [ ] coffee\n## Evening\n- [ ] tea\n",
        [item("coffee", False)],
        [],
        [],
        {"Evening": "- [ ] tea"},
        id="deeper-subheading-stays-in-known-section",
    ),
    pytest.param(
        "## Rules\n- a\n---\n***\n- b\n",
        [],
        ["a", "b"],
        [],
        {},
        id="thematic-breaks-are-not-items",
    ),
    pytest.param(
        "#hashtag\n####### seven\n## Rules\n- a\n",
        [],
        ["a"],
        [],
        {"": "#hashtag\n####### seven"},
        id="not-headings",
    ),
    pytest.param(
        "## Rules\n- one\n## Rules\n- two\n## Notes\nA\n## Notes\nB\n",
        [],
        ["one", "two"],
        [],
        {"Notes": "A\nB"},
        id="repeated-sections-merge",
    ),
    pytest.param(
        "## Rules\n1.5 hours is the limit\n",
        [],
        ["1.5 hours is the limit"],
        [],
        {},
        id="decimal-is-not-a-list-marker",
    ),
    pytest.param("", [], [], [], {}, id="empty"),
]


@pytest.mark.parametrize(("text", "checklist", "rules", "behaviors", "sections"), PARSE_CASES)
def test_parse(
    text: str,
    checklist: list[ChecklistItem],
    rules: list[str],
    behaviors: list[str],
    sections: dict[str, str],
) -> None:
    instr = parse(text)
    assert instr.checklist == checklist
    assert instr.rules == rules
    assert instr.proactive_behaviors == behaviors
    assert instr.sections == sections
    assert instr.raw == text


@pytest.mark.parametrize(
    ("text", "empty"),
    [
        pytest.param("", True, id="empty-string"),
        pytest.param("\n \n\t\n", True, id="blank-lines"),
        pytest.param("# Heartbeat\n\n## Checklist\n## Rules\n", True, id="headings-only"),
        pytest.param("\ufeff## Checklist\r\n\r\n", True, id="bom-crlf-heading"),
        pytest.param("## Checklist ##\n###\n", True, id="closed-and-empty-headings"),
        pytest.param("## Checklist\n- [ ]\n", False, id="empty-checkbox-is-content"),
        pytest.param("## Rules\nbe kind\n", False, id="prose"),
        pytest.param("#hashtag\n", False, id="hashtag-not-heading"),
        pytest.param("    # indented code\n", False, id="four-space-indent-not-heading"),
        pytest.param("```\n```\n", False, id="fence-is-content"),
        pytest.param("<!-- comment -->\n", False, id="html-comment-is-content"),
    ],
)
def test_is_effectively_empty(text: str, empty: bool) -> None:
    assert is_effectively_empty(text) is empty
    assert parse(text).is_empty is empty


RENDER_CASES = [
    pytest.param(
        SEED,
        "Checklist:\n"
        "- Check for urgent emails\n"
        "- Scan Ledger for questions\n"
        "Rules:\n"
        "- If no urgent items → reply HEARTBEAT_OK only.\n"
        "- If 5+ posts in Ledger → post daily summary.\n"
        "Proactive behaviors:\n"
        "- Monitor for posts from core users (Alice, Bob)\n"
        "- If spam-like post → vote down",
        id="seed",
    ),
    pytest.param(
        "Preface\n## Checklist\n- [ ] a\n- [x] b\n- c\n## Notes\nline 1\nline 2\n## Empty\n",
        "Preface\nChecklist:\n- [ ] a\n- [x] b\n- c\nNotes:\nline 1\nline 2",
        id="checkboxes-preamble-other-sections-empty-omitted",
    ),
    pytest.param(
        "## Rules\n```\nx\ny\n```\n",
        "Rules:\n- ```\n  x\n  y\n  ```",
        id="multiline-item-indented",
    ),
    pytest.param("## Checklist\n## Rules\n", "", id="all-empty"),
]


@pytest.mark.parametrize(("text", "expected"), RENDER_CASES)
def test_render_for_prompt(text: str, expected: str) -> None:
    assert render_for_prompt(parse(text)) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("\x00\x01\x02", id="control-chars"),
        pytest.param("\ud800 lone surrogate", id="lone-surrogate"),
        pytest.param("```" * 1000, id="many-backticks"),
        pytest.param("#" * 10000, id="many-hashes"),
        pytest.param("- [" * 5000, id="many-brackets"),
        pytest.param("\r\n" * 1000 + "\ufeff", id="crlf-and-late-bom"),
        pytest.param("## Checklist\n  continuation without item\n", id="continuation-no-item"),
    ],
)
def test_parse_never_raises(text: str) -> None:
    instr = parse(text)
    assert isinstance(instr, Instructions)
    assert isinstance(render_for_prompt(instr), str)
