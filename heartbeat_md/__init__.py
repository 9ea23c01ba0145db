"""HEARTBEAT.md parsing (pure)."""

from heartbeat_md.parser import (
    ChecklistItem,
    Instructions,
    is_effectively_empty,
    parse,
    render_for_prompt,
)

__all__ = [
    "ChecklistItem",
    "Instructions",
    "is_effectively_empty",
    "parse",
    "render_for_prompt",
]
