"""The request-reading helpers' pure parts: JSON nesting depth and whole numbers in parameters."""

from __future__ import annotations

import pytest

from app.http import control_character, json_too_deep, whole_number


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        (b"[]", 1, False),
        (b"[[]]", 1, True),
        (b"[[]]", 2, False),
        (b'{"a": {"b": [1]}}', 3, False),
        (b'{"a": {"b": [1]}}', 2, True),
        (b"[" * 65 + b"]" * 65, 64, True),
        (b"[" * 64 + b"]" * 64, 64, False),
        (b"[[], [], [], []]", 2, False),  # many siblings, shallow
        (b'["[[[[[[", "{{{{{{"]', 1, False),  # brackets inside strings do not count
        (b'["\\"[[[[", "\\\\", [[]]]', 1, True),  # an escaped quote does not end the string
        (b'["\\"[[[[", "\\\\", [[]]]', 3, False),
        (b"[" * 5000, 64, True),  # unbalanced: still refused, the decoder never sees it
    ],
)
def test_json_too_deep(text: bytes, limit: int, expected: bool) -> None:
    assert json_too_deep(text, limit) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("9" * 18, int("9" * 18)),
        ("9" * 19, None),
        ("", None),
        ("\u00b2", None),  # SUPERSCRIPT TWO: str.isdigit() says yes, int() refuses
        ("\u0663", None),  # ARABIC-INDIC DIGIT THREE: int() would accept it, the API does not
        ("1\u00b2", None),
        ("-1", None),
        ("+1", None),
        (" 1", None),
        ("1_000", None),
    ],
)
def test_whole_number(raw: str, expected: int | None) -> None:
    assert whole_number(raw) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", None),
        ("tab\tnewline\ncarriage\r", None),
        ("caf\u00e9 \u2603 \U0001f600", None),
        ("\x7f\x85", None),  # DEL and C1 controls are not C0
        ("nul\x00", "\x00"),
        ("\x01start", "\x01"),
        ("bell\x07", "\x07"),
        ("vertical\x0btab", "\x0b"),
        ("form\x0cfeed", "\x0c"),
        ("escape\x1b[31m", "\x1b"),
        ("unit\x1fsep", "\x1f"),
    ],
)
def test_control_character(text: str, expected: str | None) -> None:
    assert control_character(text) == expected
