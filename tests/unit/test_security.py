"""The middleware's pure parts: what counts as an origin and which one a request reached."""

from __future__ import annotations

from typing import Any

import pytest

from app.security import Origin, own_origin, parse_origin


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://127.0.0.1:8000", ("http", "127.0.0.1", 8000)),
        ("HTTP://LocalHost:8000", ("http", "localhost", 8000)),
        ("http://127.0.0.1", ("http", "127.0.0.1", 80)),
        ("https://box.lan", ("https", "box.lan", 443)),
        ("http://[::1]:8000", ("http", "::1", 8000)),
        (" http://box.lan:81 ", ("http", "box.lan", 81)),
        ("null", None),
        ("", None),
        ("127.0.0.1:8000", None),
        ("file://", None),
        ("ftp://box.lan", None),
        ("http://box.lan/path", None),
        ("http://user@box.lan", None),
        ("http://box.lan:99999", None),
        ("http://box.lan:port", None),
        ("http://", None),
    ],
)
def test_parse_origin(value: str, expected: Origin | None) -> None:
    assert parse_origin(value) == expected


@pytest.mark.parametrize(
    ("scope", "host", "expected"),
    [
        ({"scheme": "http"}, "127.0.0.1:8000", ("http", "127.0.0.1", 8000)),
        ({"scheme": "https"}, "Box.lan", ("https", "box.lan", 443)),
        ({"scheme": "http", "server": ("127.0.0.1", 8000)}, None, ("http", "127.0.0.1", 8000)),
        ({"scheme": "http", "server": ("::1", 8000)}, None, ("http", "::1", 8000)),
        ({"scheme": "http"}, None, None),
        ({"scheme": "http"}, "a b", None),
    ],
)
def test_own_origin(scope: dict[str, Any], host: str | None, expected: Origin | None) -> None:
    assert own_origin(scope, host) == expected
