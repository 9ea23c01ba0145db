"""Parse HEARTBEAT.md into checklist, rules, proactive behaviors and other sections.

Pure: no I/O. ``parse`` never raises on any string.

Rules, in order of precedence for each line:

- Inside a fenced code block (```` ``` ```` or ``~~~``) a line is neither a heading nor an item.
  In an other section it stays in the body; in a known section the whole block becomes one item.
- An ATX heading (``#`` .. ``######``, up to three spaces of indent) starts a section. Names match
  case-insensitively, ignoring spacing and punctuation. A deeper, unrecognised heading inside a
  known section keeps that section (it reads as a sub-group of its items).
- In a known section, list lines (``-``, ``*``, ``+``, ``1.``, ``1)``) are items at any nesting
  depth; other non-blank lines are items too, except an indented line right after an item, which
  continues it. Checkbox state is kept in the checklist only.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec

__all__ = [
    "ChecklistItem",
    "Instructions",
    "is_effectively_empty",
    "parse",
    "render_for_prompt",
]

_Kind = Literal["checklist", "rules", "behaviors", "other"]

_FENCE: Final = re.compile(r"^[ \t]*(`{3,}|~{3,})(.*)$")
_LIST_ITEM: Final = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]+(.*))?$")
_CHECKBOX: Final = re.compile(r"^\[([ xX])\](?:[ \t]+(.*))?$")
_THEMATIC_BREAK: Final = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_NAME_JUNK: Final = re.compile(r"[\W_]+")

_SECTION_NAMES: Final[dict[str, _Kind]] = {
    "checklist": "checklist",
    "rules": "rules",
    "proactivebehaviors": "behaviors",
    "proactivebehaviours": "behaviors",
}


class ChecklistItem(msgspec.Struct, frozen=True):
    """One checklist entry; ``checked`` is None for a plain item without a checkbox."""

    text: str
    checked: bool | None


class Instructions(msgspec.Struct, frozen=True):
    """HEARTBEAT.md, parsed."""

    checklist: list[ChecklistItem]
    rules: list[str]
    proactive_behaviors: list[str]
    sections: dict[str, str]
    raw: str

    @property
    def is_empty(self) -> bool:
        """True when the file holds only blank lines and headings."""
        return is_effectively_empty(self.raw)


def _lines(text: str) -> list[str]:
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _heading_text(line: str) -> tuple[int, str] | None:
    """Return (level, text) if the line is an ATX heading (written without regex: linear time)."""
    unindented = line.lstrip(" ")
    if len(line) - len(unindented) > 3:
        return None
    rest = unindented.lstrip("#")
    level = len(unindented) - len(rest)
    if not 1 <= level <= 6 or (rest and rest[0] not in " \t"):
        return None
    text = rest.strip(" \t")
    without_closing = text.rstrip("#")
    if without_closing != text and (not without_closing or without_closing[-1] in " \t"):
        text = without_closing.rstrip(" \t")
    return level, text


def _section_kind(name: str) -> _Kind:
    return _SECTION_NAMES.get(_NAME_JUNK.sub("", name).casefold(), "other")


def _is_indented(line: str) -> bool:
    return line.startswith(("  ", "\t"))


class _Builder:
    """Accumulates lines section by section."""

    def __init__(self) -> None:
        self.checklist: list[ChecklistItem] = []
        self.rules: list[str] = []
        self.behaviors: list[str] = []
        self.sections: dict[str, list[str]] = {}
        self.kind: _Kind = "other"
        self.level = 0
        self.key = ""
        # True while the previous line belonged to an item that an indented line may continue.
        self.open_item = False

    def start_section(self, level: int, name: str) -> None:
        kind = _section_kind(name)
        if kind == "other" and self.kind != "other" and level > self.level:
            self.open_item = False  # sub-heading inside a known section
            return
        self.kind, self.level, self.key, self.open_item = kind, level, name, False
        if kind == "other":
            self.sections.setdefault(name, [])

    def add_item(self, text: str, *, list_line: bool) -> None:
        if self.kind == "checklist":
            checked: bool | None = None
            m = _CHECKBOX.match(text) if list_line else None
            if m is not None:
                checked = m.group(1) != " "
                text = (m.group(2) or "").strip()
            if text:
                self.checklist.append(ChecklistItem(text=text, checked=checked))
        elif text:
            (self.rules if self.kind == "rules" else self.behaviors).append(text)
        self.open_item = bool(text)

    def continue_item(self, text: str) -> None:
        if self.kind == "checklist":
            last = self.checklist[-1]
            self.checklist[-1] = ChecklistItem(text=f"{last.text} {text}", checked=last.checked)
        else:
            items = self.rules if self.kind == "rules" else self.behaviors
            items[-1] = f"{items[-1]} {text}"

    def add_line(self, line: str) -> None:
        if self.kind == "other":
            self.sections.setdefault(self.key, []).append(line)
            return
        stripped = line.strip()
        if not stripped:
            self.open_item = False
        elif _THEMATIC_BREAK.match(line):
            self.open_item = False
        elif (m := _LIST_ITEM.match(line)) is not None:
            self.add_item((m.group(1) or "").strip(), list_line=True)
        elif self.open_item and _is_indented(line):
            self.continue_item(stripped)
        else:
            self.add_item(stripped, list_line=False)

    def add_block(self, block: list[str]) -> None:
        """A fenced code block: body lines of an other section, or one item of a known one."""
        if self.kind == "other":
            self.sections.setdefault(self.key, []).extend(block)
            return
        self.add_item("\n".join(block).strip("\n"), list_line=False)
        self.open_item = False

    def sections_text(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, body in self.sections.items():
            text = "\n".join(body).strip()
            if key == "" and not text:
                continue
            out[key] = text
        return out


def parse(text: str) -> Instructions:
    """Parse HEARTBEAT.md text. Never raises."""
    b = _Builder()
    fence: list[str] | None = None
    fence_marker = ""
    for line in _lines(text):
        if fence is not None:
            fence.append(line)
            m = _FENCE.match(line)
            if (
                m is not None
                and m.group(1)[0] == fence_marker[0]
                and len(m.group(1)) >= len(fence_marker)
                and not m.group(2).strip()
            ):
                b.add_block(fence)
                fence = None
            continue
        m = _FENCE.match(line)
        if m is not None and not (m.group(1)[0] == "`" and "`" in m.group(2)):
            fence, fence_marker = [line], m.group(1)
            continue
        heading = _heading_text(line)
        if heading is not None:
            b.start_section(*heading)
        else:
            b.add_line(line)
    if fence is not None:  # an unclosed fence runs to the end of the file
        b.add_block(fence)
    return Instructions(
        checklist=b.checklist,
        rules=b.rules,
        proactive_behaviors=b.behaviors,
        sections=b.sections_text(),
        raw=text,
    )


def is_effectively_empty(text: str) -> bool:
    """True when the text holds only blank lines and headings."""
    return all(not line.strip() or _heading_text(line) is not None for line in _lines(text))


def _indent_continuation(text: str) -> str:
    return text.replace("\n", "\n  ")


def render_for_prompt(instr: Instructions) -> str:
    """Render the instructions as a compact text block for the LLM; empty parts are omitted."""
    parts: list[str] = []
    preamble = instr.sections.get("", "")
    if preamble:
        parts.append(preamble)
    if instr.checklist:
        lines = ["Checklist:"]
        for item in instr.checklist:
            box = {True: "[x] ", False: "[ ] ", None: ""}[item.checked]
            lines.append(f"- {box}{_indent_continuation(item.text)}")
        parts.append("\n".join(lines))
    for title, items in (
        ("Rules", instr.rules),
        ("Proactive behaviors", instr.proactive_behaviors),
    ):
        if items:
            parts.append("\n".join([f"{title}:", *(f"- {_indent_continuation(i)}" for i in items)]))
    for name, body in instr.sections.items():
        if name and body:
            parts.append(f"{name}:\n{body}")
    return "\n".join(parts)
