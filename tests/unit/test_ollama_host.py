"""OLLAMA_HOST resolution: every case of docs/llm-protocols.md, Server address (OLLAMA_HOST)."""

import pytest

from loops.llm import DEFAULT_OLLAMA_HOST, normalize_model_name, parse_ollama_host


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # unset / empty → the default
        (None, "http://127.0.0.1:11434"),
        ("", "http://127.0.0.1:11434"),
        ("   ", "http://127.0.0.1:11434"),
        # bare host → http and port 11434
        ("1.2.3.4", "http://1.2.3.4:11434"),
        ("example.com", "http://example.com:11434"),
        ("localhost", "http://localhost:11434"),
        ("Example.COM", "http://example.com:11434"),
        # port only → loopback
        (":56789", "http://127.0.0.1:56789"),
        # host and port, no scheme
        ("1.2.3.4:56789", "http://1.2.3.4:56789"),
        ("example.com:56789", "http://example.com:56789"),
        # scheme without port → 80 / 443 (the trap)
        ("http://example.com", "http://example.com:80"),
        ("https://example.com", "https://example.com:443"),
        ("http://1.2.3.4", "http://1.2.3.4:80"),
        ("https://1.2.3.4", "https://1.2.3.4:443"),
        ("HTTP://example.com", "http://example.com:80"),
        # scheme with port
        ("http://127.0.0.1:11434", "http://127.0.0.1:11434"),
        ("https://example.com:56789", "https://example.com:56789"),
        ("http://:56789", "http://127.0.0.1:56789"),
        # path kept, trailing slash removed
        ("example.com/", "http://example.com:11434"),
        ("example.com:56789/", "http://example.com:56789"),
        ("example.com/path", "http://example.com:11434/path"),
        ("example.com:56789/path/", "http://example.com:56789/path"),
        ("https://example.com:56789/path/", "https://example.com:56789/path"),
        ("https://example.com/a/b/", "https://example.com:443/a/b"),
        # IPv6 in brackets
        ("[::1]", "http://[::1]:11434"),
        ("[::1]:56789", "http://[::1]:56789"),
        ("http://[::1]", "http://[::1]:80"),
        ("https://[::1]:56789/path/", "https://[::1]:56789/path"),
        ("[0001:002:003:0004::1]", "http://[0001:002:003:0004::1]:11434"),
        # the server bind address is not rewritten (unlike the Ollama CLI)
        ("0.0.0.0", "http://0.0.0.0:11434"),
        ("0.0.0.0:11434", "http://0.0.0.0:11434"),
    ],
)
def test_parse_ollama_host(value: str | None, expected: str) -> None:
    assert parse_ollama_host(value) == expected


def test_default_constant_matches_unset() -> None:
    assert parse_ollama_host(None) == DEFAULT_OLLAMA_HOST == "http://127.0.0.1:11434"


def test_parse_is_idempotent_on_its_output() -> None:
    for value in ("example.com:56789/path/", "https://example.com", "[::1]", ":1"):
        once = parse_ollama_host(value)
        assert parse_ollama_host(once) == once


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("::1", "brackets"),
        ("fe80::1:11434", "brackets"),
        ("http://::1", "brackets"),
        ("ftp://example.com", "http:// or https://"),
        ("example.com:notaport", "port must be 1..65535"),
        ("example.com:70000", "port must be 1..65535"),
        ("example.com:0", "port must be 1..65535"),
        ("[not-ipv6]", "IPv6"),
        ("[::1", "unclosed"),
        ("user:secret@example.com", "credentials"),
    ],
)
def test_parse_ollama_host_rejects(value: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="OLLAMA_HOST") as info:
        parse_ollama_host(value)
    assert fragment in str(info.value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("llama3.2:latest", "llama3.2:latest"),
        ("llama3.2:3b-instruct-q4_K_M", "llama3.2:3b-instruct-q4_K_M"),
        ("library/llama3.2", "library/llama3.2:latest"),
        ("registry.local:5000/team/model", "registry.local:5000/team/model:latest"),
    ],
)
def test_normalize_model_name(name: str, expected: str) -> None:
    assert normalize_model_name(name) == expected
