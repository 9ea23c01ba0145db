"""HEARTBEAT.md parsing (pure). The names of ``heartbeat_md.parser`` are exported here."""

from heartbeat_md.parser import ChecklistItem as ChecklistItem
from heartbeat_md.parser import Instructions as Instructions
from heartbeat_md.parser import is_effectively_empty as is_effectively_empty
from heartbeat_md.parser import parse as parse
from heartbeat_md.parser import render_for_prompt as render_for_prompt
