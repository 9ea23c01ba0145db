"""HeartbeatConfig: durations, merging patches, limits, cross-field rules, stored form."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from ledger.config import (
    ConfigError,
    HeartbeatConfig,
    decode_stored,
    encode,
    merge_config,
    parse_duration,
    to_dict,
    validate_config,
)

DEFAULTS = HeartbeatConfig()
CHANNELS = ("ops", "family")
WINDOW = msgspec.structs.replace(DEFAULTS, active_hours_start=9, active_hours_end=17)

DEFAULT_DICT = {
    "enabled": True,
    "every_seconds": 1800,
    "target": "none",
    "model": None,
    "max_tokens": 500,
    "temperature": 0.7,
    "dry_run": False,
    "active_hours_start": None,
    "active_hours_end": None,
    "timezone": "UTC",
    "wake_on": [],
    "skip_unchanged": True,
    "daily_token_budget": None,
    "quiet_after_user_seconds": None,
    "strategy": "auto",
}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param(1800, 1800, id="int"),
        pytest.param(0, 0, id="zero"),
        pytest.param(1800.0, 1800, id="integral-float"),
        pytest.param("1800", 1800, id="digits"),
        pytest.param("90s", 90, id="seconds"),
        pytest.param("30m", 1800, id="minutes"),
        pytest.param("1h", 3600, id="hour"),
        pytest.param("2h30m", 9000, id="hours-minutes"),
        pytest.param("2h 30m", 9000, id="spaced-parts"),
        pytest.param("1d", 86400, id="day"),
        pytest.param("1d2h3m4s", 93784, id="all-units"),
        pytest.param(" 15m ", 900, id="surrounding-space"),
        pytest.param("1H", 3600, id="upper-case-unit"),
    ],
)
def test_parse_duration_accepts(value: object, seconds: int) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(True, "got true", id="bool-true"),
        pytest.param(False, "got false", id="bool-false"),
        pytest.param(1.5, "got 1.5", id="fractional-float"),
        pytest.param(float("inf"), "got inf", id="infinite-float"),
        pytest.param(-5, "every must not be negative, got -5", id="negative-int"),
        pytest.param("-5", 'got "-5"', id="negative-string"),
        pytest.param("abc", 'got "abc"', id="garbage"),
        pytest.param("", 'got ""', id="empty"),
        pytest.param("   ", 'got "   "', id="blank"),
        pytest.param("1.5h", 'got "1.5h"', id="decimal-unit"),
        pytest.param("30m1h", 'got "30m1h"', id="units-out-of-order"),
        pytest.param("h", 'got "h"', id="unit-without-number"),
        pytest.param("30 minutes", 'got "30 minutes"', id="long-unit-name"),
        pytest.param("\u0663\u0660m", 'got "\u0663\u0660m"', id="non-ascii-digits"),
        pytest.param(None, "got null", id="null"),
        pytest.param([30], "got [30]", id="list"),
    ],
)
def test_parse_duration_rejects(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(value)
    assert info.value.field == "every"
    assert info.value.message.endswith(message)
    assert str(info.value) == info.value.message


MERGE_OK = [
    pytest.param({}, {}, id="empty-patch"),
    pytest.param({"enabled": False}, {"enabled": False}, id="enabled"),
    pytest.param({"every_seconds": 60}, {"every_seconds": 60}, id="every_seconds-min"),
    pytest.param({"every_seconds": 86400}, {"every_seconds": 86400}, id="every_seconds-max"),
    pytest.param({"every_seconds": 900.0}, {"every_seconds": 900}, id="every_seconds-float"),
    pytest.param({"every": "30m"}, {"every_seconds": 1800}, id="every-30m"),
    pytest.param({"every": "1h"}, {"every_seconds": 3600}, id="every-1h"),
    pytest.param({"every": "90s"}, {"every_seconds": 90}, id="every-90s"),
    pytest.param({"every": 600}, {"every_seconds": 600}, id="every-int"),
    pytest.param(
        {"every": "1h", "every_seconds": 3600}, {"every_seconds": 3600}, id="every-and-same-seconds"
    ),
    pytest.param({"target": "last"}, {"target": "last"}, id="target-last"),
    pytest.param({"target": "ops"}, {"target": "ops"}, id="target-channel"),
    pytest.param({"target": " ops "}, {"target": "ops"}, id="target-trimmed"),
    pytest.param({"model": "llama3.2:latest"}, {"model": "llama3.2:latest"}, id="model"),
    pytest.param({"model": " qwen2.5 "}, {"model": "qwen2.5"}, id="model-trimmed"),
    pytest.param({"model": "m" * 200}, {"model": "m" * 200}, id="model-200-chars"),
    pytest.param({"max_tokens": 10}, {"max_tokens": 10}, id="max_tokens-10"),
    pytest.param({"max_tokens": 4000}, {"max_tokens": 4000}, id="max_tokens-4000"),
    pytest.param({"temperature": 0}, {"temperature": 0.0}, id="temperature-int-0"),
    pytest.param({"temperature": 1}, {"temperature": 1.0}, id="temperature-int-1"),
    pytest.param({"temperature": 0.25}, {"temperature": 0.25}, id="temperature-float"),
    pytest.param({"dry_run": True}, {"dry_run": True}, id="dry_run"),
    pytest.param(
        {"active_hours_start": 0, "active_hours_end": 24},
        {"active_hours_start": 0, "active_hours_end": 24},
        id="hours-0-24",
    ),
    pytest.param(
        {"active_hours_start": 23, "active_hours_end": 1},
        {"active_hours_start": 23, "active_hours_end": 1},
        id="hours-overnight",
    ),
    pytest.param({"timezone": "Europe/Paris"}, {"timezone": "Europe/Paris"}, id="timezone"),
    pytest.param(
        {"timezone": "America/Argentina/Buenos_Aires"},
        {"timezone": "America/Argentina/Buenos_Aires"},
        id="timezone-three-parts",
    ),
    pytest.param({"timezone": "Etc/GMT+5"}, {"timezone": "Etc/GMT+5"}, id="timezone-etc"),
    pytest.param({"wake_on": ["post"]}, {"wake_on": ["post"]}, id="wake-on"),
    pytest.param(
        {"wake_on": ["mention", "post", "mention"]},
        {"wake_on": ["post", "mention"]},
        id="wake-on-each-once-in-order",
    ),
    pytest.param({"wake_on": []}, {"wake_on": []}, id="wake-on-nothing"),
    pytest.param({"skip_unchanged": False}, {"skip_unchanged": False}, id="skip-off"),
    pytest.param({"daily_token_budget": 100}, {"daily_token_budget": 100}, id="budget-100"),
    pytest.param({"daily_token_budget": 5e4}, {"daily_token_budget": 50000}, id="budget-float"),
    pytest.param({"daily_token_budget": None}, {}, id="budget-null"),
    pytest.param({"quiet_after_user_seconds": 10}, {"quiet_after_user_seconds": 10}, id="quiet"),
    pytest.param({"quiet_after_user_seconds": None}, {}, id="quiet-null"),
]


@pytest.mark.parametrize(("patch", "changed"), MERGE_OK)
def test_merge_from_defaults(patch: dict[str, Any], changed: dict[str, Any]) -> None:
    merged = merge_config(DEFAULTS, patch, channels=CHANNELS)
    assert to_dict(merged) == {**DEFAULT_DICT, **changed}
    assert DEFAULTS == HeartbeatConfig()  # the input is never mutated


@pytest.mark.parametrize(
    ("current", "patch", "changed"),
    [
        pytest.param(
            WINDOW,
            {"active_hours_start": None, "active_hours_end": None},
            {},
            id="null-resets-hours",
        ),
        pytest.param(
            msgspec.structs.replace(DEFAULTS, model="llama3"), {"model": None}, {}, id="null-model"
        ),
        pytest.param(
            WINDOW,
            {"active_hours_end": 20},
            {"active_hours_start": 9, "active_hours_end": 20},
            id="change-one-hour-keeps-other",
        ),
        pytest.param(
            msgspec.structs.replace(DEFAULTS, every_seconds=60, dry_run=True),
            {"enabled": False},
            {"every_seconds": 60, "dry_run": True, "enabled": False},
            id="untouched-fields-kept",
        ),
    ],
)
def test_merge_onto_current(
    current: HeartbeatConfig, patch: dict[str, Any], changed: dict[str, Any]
) -> None:
    assert to_dict(merge_config(current, patch)) == {**DEFAULT_DICT, **changed}


MERGE_ERRORS = [
    pytest.param([], "body", "config must be a JSON object, got []", id="body-list"),
    pytest.param("x", "body", 'config must be a JSON object, got "x"', id="body-string"),
    pytest.param(None, "body", "config must be a JSON object, got null", id="body-null"),
    pytest.param(
        {"colour": "red"},
        "colour",
        'unknown field "colour"; allowed: every, active_hours_end, active_hours_start,'
        " daily_token_budget, dry_run, enabled, every_seconds, max_tokens, model,"
        " quiet_after_user_seconds, skip_unchanged, strategy, target, temperature, timezone,"
        " wake_on",
        id="unknown-field",
    ),
    pytest.param(
        {"enabled": "yes"}, "enabled", 'enabled must be a boolean, got "yes"', id="enabled-str"
    ),
    pytest.param({"enabled": 1}, "enabled", "enabled must be a boolean, got 1", id="enabled-int"),
    pytest.param(
        {"enabled": None}, "enabled", "enabled must be a boolean, got null", id="enabled-null"
    ),
    pytest.param({"dry_run": 0}, "dry_run", "dry_run must be a boolean, got 0", id="dry_run-int"),
    pytest.param(
        {"every_seconds": 59},
        "every_seconds",
        "every_seconds must be 60..86400, got 59",
        id="every_seconds-59",
    ),
    pytest.param(
        {"every_seconds": 86401},
        "every_seconds",
        "every_seconds must be 60..86400, got 86401",
        id="every_seconds-86401",
    ),
    pytest.param(
        {"every_seconds": True},
        "every_seconds",
        "every_seconds must be an integer, got true",
        id="every_seconds-bool",
    ),
    pytest.param(
        {"every_seconds": "30m"},
        "every_seconds",
        'every_seconds must be an integer, got "30m"',
        id="every_seconds-string",
    ),
    pytest.param(
        {"every_seconds": 90.5},
        "every_seconds",
        "every_seconds must be an integer, got 90.5",
        id="every_seconds-fraction",
    ),
    pytest.param(
        {"every": "abc"},
        "every",
        'every must be a number of seconds or a duration like "90s", "30m", "1h", "2h30m", "1d",'
        ' got "abc"',
        id="every-garbage",
    ),
    pytest.param({"every": -5}, "every", "every must not be negative, got -5", id="every-negative"),
    pytest.param(
        {"every": "30s"},
        "every",
        'every must be 60..86400 seconds, got "30s"',
        id="every-too-small",
    ),
    pytest.param(
        {"every": "2d"}, "every", 'every must be 60..86400 seconds, got "2d"', id="every-too-large"
    ),
    pytest.param({"every": True}, "every", "every must be a number of seconds", id="every-bool"),
    pytest.param(
        {"every": "1h", "every_seconds": 1800},
        "every",
        'every ("1h") and every_seconds (1800) disagree; give one of them',
        id="every-conflicts-with-every_seconds",
    ),
    pytest.param(
        {"every_seconds": 3600, "every": "30m"},
        "every",
        'every ("30m") and every_seconds (3600) disagree; give one of them',
        id="every_seconds-first-conflict",
    ),
    pytest.param(
        {"target": "slack"},
        "target",
        'target must be one of "none", "last", "family", "ops", got "slack"',
        id="target-unknown",
    ),
    pytest.param(
        {"target": "NONE"},
        "target",
        'target must be one of "none", "last", "family", "ops", got "NONE"',
        id="target-case-sensitive",
    ),
    pytest.param({"target": ""}, "target", "target must not be empty", id="target-empty"),
    pytest.param({"target": None}, "target", "target must be a string, got null", id="target-null"),
    pytest.param({"model": ""}, "model", "model must not be empty", id="model-empty"),
    pytest.param({"model": "   "}, "model", "model must not be empty", id="model-blank"),
    pytest.param(
        {"model": "m" * 201},
        "model",
        "model must be at most 200 characters, got 201",
        id="model-201-chars",
    ),
    pytest.param({"model": 3}, "model", "model must be a string, got 3", id="model-int"),
    pytest.param(
        {"max_tokens": 9}, "max_tokens", "max_tokens must be 10..4000, got 9", id="max_tokens-9"
    ),
    pytest.param(
        {"max_tokens": 4001},
        "max_tokens",
        "max_tokens must be 10..4000, got 4001",
        id="max_tokens-4001",
    ),
    pytest.param(
        {"max_tokens": False},
        "max_tokens",
        "max_tokens must be an integer, got false",
        id="max_tokens-bool",
    ),
    pytest.param(
        {"temperature": -0.1},
        "temperature",
        "temperature must be 0..1, got -0.1",
        id="temperature-negative",
    ),
    pytest.param(
        {"temperature": 1.01},
        "temperature",
        "temperature must be 0..1, got 1.01",
        id="temperature-1.01",
    ),
    pytest.param(
        {"temperature": True},
        "temperature",
        "temperature must be a number, got true",
        id="temperature-bool",
    ),
    pytest.param(
        {"temperature": "0.5"},
        "temperature",
        'temperature must be a number, got "0.5"',
        id="temperature-string",
    ),
    pytest.param(
        {"temperature": float("nan")},
        "temperature",
        "temperature must be 0..1, got nan",
        id="temperature-nan",
    ),
    pytest.param(
        {"active_hours_start": 24, "active_hours_end": 5},
        "active_hours_start",
        "active_hours_start must be 0..23, got 24",
        id="start-24",
    ),
    pytest.param(
        {"active_hours_start": -1, "active_hours_end": 5},
        "active_hours_start",
        "active_hours_start must be 0..23, got -1",
        id="start-negative",
    ),
    pytest.param(
        {"active_hours_start": 5, "active_hours_end": 0},
        "active_hours_end",
        "active_hours_end must be 1..24, got 0",
        id="end-0",
    ),
    pytest.param(
        {"active_hours_start": 5, "active_hours_end": 25},
        "active_hours_end",
        "active_hours_end must be 1..24, got 25",
        id="end-25",
    ),
    pytest.param(
        {"active_hours_start": True, "active_hours_end": 5},
        "active_hours_start",
        "active_hours_start must be an integer, got true",
        id="start-bool",
    ),
    pytest.param(
        {"active_hours_start": 9},
        "active_hours_end",
        "active_hours_end is required when active_hours_start is set (give both or neither)",
        id="only-start",
    ),
    pytest.param(
        {"active_hours_end": 17},
        "active_hours_start",
        "active_hours_start is required when active_hours_end is set (give both or neither)",
        id="only-end",
    ),
    pytest.param(
        {"active_hours_start": 9, "active_hours_end": 9},
        "active_hours_end",
        "active_hours_end must differ from active_hours_start, both are 9",
        id="start-equals-end",
    ),
    pytest.param(
        {"timezone": "Mars/Olympus"},
        "timezone",
        'timezone must be an IANA time zone name like "Europe/Paris", got "Mars/Olympus"',
        id="timezone-unknown",
    ),
    pytest.param({"timezone": ""}, "timezone", "timezone must not be empty", id="timezone-empty"),
    pytest.param(
        {"timezone": "../x"},
        "timezone",
        'timezone must be an IANA time zone name like "Europe/Paris", got "../x"',
        id="timezone-path-traversal",
    ),
    pytest.param(
        {"timezone": "/etc/localtime"},
        "timezone",
        'timezone must be an IANA time zone name like "Europe/Paris", got "/etc/localtime"',
        id="timezone-absolute-path",
    ),
    pytest.param(
        {"timezone": "America"},
        "timezone",
        'timezone must be an IANA time zone name like "Europe/Paris", got "America"',
        id="timezone-directory",
    ),
    pytest.param(
        {"timezone": "utc"},
        "timezone",
        'timezone must be an IANA time zone name like "Europe/Paris", got "utc"',
        id="timezone-wrong-case",
    ),
    pytest.param(
        {"timezone": 0}, "timezone", "timezone must be a string, got 0", id="timezone-int"
    ),
    pytest.param(
        {"skip_unchanged": "yes"},
        "skip_unchanged",
        'skip_unchanged must be a boolean, got "yes"',
        id="skip-string",
    ),
    pytest.param(
        {"skip_unchanged": None},
        "skip_unchanged",
        "skip_unchanged must be a boolean, got null",
        id="skip-null",
    ),
    pytest.param(
        {"daily_token_budget": 99},
        "daily_token_budget",
        "daily_token_budget must be 100..100000000, got 99",
        id="budget-too-small",
    ),
    pytest.param(
        {"daily_token_budget": 100_000_001},
        "daily_token_budget",
        "daily_token_budget must be 100..100000000, got 100000001",
        id="budget-too-large",
    ),
    pytest.param(
        {"daily_token_budget": "1000"},
        "daily_token_budget",
        'daily_token_budget must be an integer, got "1000"',
        id="budget-string",
    ),
    pytest.param(
        {"daily_token_budget": 1.5},
        "daily_token_budget",
        "daily_token_budget must be an integer, got 1.5",
        id="budget-fraction",
    ),
    pytest.param(
        {"quiet_after_user_seconds": 9},
        "quiet_after_user_seconds",
        "quiet_after_user_seconds must be 10..86400, got 9",
        id="quiet-too-small",
    ),
    pytest.param(
        {"quiet_after_user_seconds": True},
        "quiet_after_user_seconds",
        "quiet_after_user_seconds must be an integer, got true",
        id="quiet-bool",
    ),
]


@pytest.mark.parametrize(("patch", "field", "message"), MERGE_ERRORS)
def test_merge_rejects(patch: object, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        merge_config(DEFAULTS, patch, channels=CHANNELS)
    assert info.value.field == field
    assert info.value.message.startswith(message)
    assert str(info.value) == info.value.message


def test_merge_is_all_or_nothing() -> None:
    current = msgspec.structs.replace(DEFAULTS, max_tokens=300)
    with pytest.raises(ConfigError) as info:
        merge_config(current, {"enabled": False, "max_tokens": 200, "temperature": 2})
    assert info.value.field == "temperature"
    assert current.enabled is True
    assert current.max_tokens == 300


def test_merge_no_channels_allows_only_none_and_last() -> None:
    with pytest.raises(ConfigError) as info:
        merge_config(DEFAULTS, {"target": "ops"})
    assert info.value.message == 'target must be one of "none", "last", got "ops"'


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        pytest.param(HeartbeatConfig(every_seconds=5), "every_seconds", id="range"),
        pytest.param(HeartbeatConfig(enabled=1), "enabled", id="type"),  # type: ignore[arg-type]
        pytest.param(HeartbeatConfig(active_hours_start=3), "active_hours_end", id="cross-field"),
        pytest.param(HeartbeatConfig(target="ghost"), "target", id="target"),
        pytest.param(HeartbeatConfig(timezone="Nowhere/Land"), "timezone", id="timezone"),
    ],
)
def test_validate_config_rejects(cfg: HeartbeatConfig, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, channels=CHANNELS)
    assert info.value.field == field


@pytest.mark.parametrize(
    "cfg",
    [
        pytest.param(HeartbeatConfig(), id="defaults"),
        pytest.param(HeartbeatConfig(target="family"), id="channel"),
        pytest.param(
            HeartbeatConfig(active_hours_start=22, active_hours_end=6, timezone="Asia/Tokyo"),
            id="overnight",
        ),
    ],
)
def test_validate_config_accepts(cfg: HeartbeatConfig) -> None:
    validate_config(cfg, channels=CHANNELS)


@pytest.mark.parametrize(
    ("raw", "expected", "reason"),
    [
        pytest.param(None, DEFAULTS, None, id="none"),
        pytest.param("", DEFAULTS, None, id="empty-str"),
        pytest.param(b"", DEFAULTS, None, id="empty-bytes"),
        pytest.param("  \n", DEFAULTS, None, id="blank"),
        pytest.param(
            '{"every_seconds": 600, "dry_run": true}',
            HeartbeatConfig(every_seconds=600, dry_run=True),
            None,
            id="partial-json",
        ),
        pytest.param(
            b'{"every": "1h", "target": "removed-channel"}',
            HeartbeatConfig(every_seconds=3600, target="removed-channel"),
            None,
            id="alias-and-unchecked-target",
        ),
        pytest.param(
            "{not json",
            DEFAULTS,
            "stored config is not valid JSON: JSON is malformed: ",
            id="bad-json",
        ),
        pytest.param(
            "[1, 2]",
            DEFAULTS,
            "stored config is invalid: config must be a JSON object, got [1,2]",
            id="not-object",
        ),
        pytest.param(
            '{"every_seconds": 5}',
            DEFAULTS,
            "stored config is invalid: every_seconds must be 60..86400, got 5",
            id="out-of-range",
        ),
        pytest.param(
            '{"enabled": true, "legacy": 1}',
            DEFAULTS,
            'stored config is invalid: unknown field "legacy"; allowed: every, active_hours_end,'
            " active_hours_start, daily_token_budget, dry_run, enabled, every_seconds, max_tokens,"
            " model, quiet_after_user_seconds, skip_unchanged, strategy, target, temperature,"
            " timezone, wake_on",
            id="unknown-field",
        ),
    ],
)
def test_decode_stored(
    raw: str | bytes | None, expected: HeartbeatConfig, reason: str | None
) -> None:
    cfg, got_reason = decode_stored(raw)
    assert cfg == expected
    if reason is None:
        assert got_reason is None
    else:  # exact, except the tail of msgspec's own JSON syntax message
        assert got_reason is not None
        assert got_reason.startswith(reason)
        assert len(got_reason) - len(reason) < 60


def test_encode_round_trip() -> None:
    cfg = HeartbeatConfig(
        enabled=False,
        every_seconds=900,
        target="last",
        model="llama3.2:latest",
        max_tokens=250,
        temperature=0.3,
        dry_run=True,
        active_hours_start=22,
        active_hours_end=6,
        timezone="Europe/Berlin",
    )
    text = encode(cfg)
    assert json.loads(text) == to_dict(cfg)
    assert decode_stored(text) == (cfg, None)
    assert json.loads(encode(DEFAULTS)) == DEFAULT_DICT
    assert to_dict(DEFAULTS) == DEFAULT_DICT


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("post", "wake_on must be a list of post, comment, mention"),
        ([1], "wake_on must be a list of post, comment, mention"),
        (["vote"], 'wake_on may hold only post, comment, mention; got "vote"'),
        (None, "wake_on must be a list"),
    ],
)
def test_wake_on_refusals_name_the_field(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        merge_config(DEFAULTS, {"wake_on": value})
    assert caught.value.field == "wake_on" and caught.value.message.startswith(message)


def test_wake_on_survives_the_stored_form() -> None:
    cfg = merge_config(DEFAULTS, {"wake_on": ["comment", "post"]})
    assert decode_stored(encode(cfg)) == (cfg, None)
