"""Each limit is defined once: validation, the OpenAPI document and the schedule agree on it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from app.openapi import document
from ledger.config import ConfigError, HeartbeatConfig, merge_config
from ledger.limits import CONFIG_RANGES
from loops.schedule import Schedule

STATIC = Path(__file__).resolve().parents[2] / "static"
CONFIG_PATH = "/api/threads/{thread_id}/heartbeat/config"
# the active hours are given together; each probe changes one of them
HOURS = {"active_hours_start": 9, "active_hours_end": 17}


def config_properties() -> dict[str, Any]:
    body = document()["paths"][CONFIG_PATH]["post"]["requestBody"]
    properties: dict[str, Any] = body["content"]["application/json"]["schema"]["properties"]
    return properties


def ranged() -> list[tuple[str, Any, Any]]:
    return [
        (name, schema["minimum"], schema["maximum"])
        for name, schema in config_properties().items()
        if "minimum" in schema
    ]


def patch(name: str, value: object) -> dict[str, object]:
    return {**(HOURS if name.startswith("active_hours") else {}), name: value}


def test_the_document_describes_every_config_field() -> None:
    fields = {f.name for f in msgspec.structs.fields(HeartbeatConfig)}
    assert set(config_properties()) == fields | {"every"}
    assert {name for name, _, _ in ranged()} == set(CONFIG_RANGES)


@pytest.mark.parametrize(("name", "lo", "hi"), ranged(), ids=lambda v: str(v))
def test_the_documented_range_is_the_validated_range(name: str, lo: int, hi: int) -> None:
    step = 0.01 if name == "temperature" else 1
    for inside in (lo, hi):
        cfg = merge_config(HeartbeatConfig(), patch(name, inside))
        assert getattr(cfg, name) == inside
    for outside in (lo - step, hi + step):
        with pytest.raises(ConfigError) as info:
            merge_config(HeartbeatConfig(), patch(name, outside))
        assert info.value.field == name
        assert info.value.message.startswith(f"{name} must be {lo}..{hi}, got ")


@pytest.mark.parametrize(("name", "size"), [("target", 200), ("model", 200), ("timezone", 64)])
def test_the_documented_lengths_of_config_text_are_the_validated_ones(name: str, size: int) -> None:
    assert config_properties()[name]["maxLength"] == size
    with pytest.raises(ConfigError, match=f"at most {size} characters, got {size + 1}"):
        merge_config(HeartbeatConfig(), {name: "x" * (size + 1)})


def test_the_every_alias_and_the_schedule_share_the_range() -> None:
    (lo, hi) = next((lo, hi) for name, lo, hi in ranged() if name == "every_seconds")
    assert merge_config(HeartbeatConfig(), {"every": hi}).every_seconds == hi
    with pytest.raises(ConfigError, match=f"every must be {lo}..{hi} seconds"):
        merge_config(HeartbeatConfig(), {"every": hi + 1})
    assert Schedule(every=lo).every == lo and Schedule(every=hi).every == hi
    for outside in (lo - 1, hi + 1):
        with pytest.raises(ValueError, match=f"every must be {lo}..{hi} seconds"):
            Schedule(every=outside)


def test_the_schedule_takes_the_documented_active_hours() -> None:
    hours = {name: (lo, hi) for name, lo, hi in ranged() if name.startswith("active_hours")}
    (start_lo, start_hi), (end_lo, end_hi) = (
        hours["active_hours_start"],
        hours["active_hours_end"],
    )
    Schedule(every=60, start_hour=start_lo, end_hour=end_hi)
    Schedule(every=60, start_hour=start_hi, end_hour=end_lo)
    with pytest.raises(ValueError, match=f"start_hour must be {start_lo}..{start_hi}"):
        Schedule(every=60, start_hour=start_hi + 1, end_hour=end_lo)
    with pytest.raises(ValueError, match=f"end_hour must be {end_lo}..{end_hi}"):
        Schedule(every=60, start_hour=start_lo, end_hour=end_hi + 1)


def test_the_dashboard_holds_no_copy_of_a_limit() -> None:
    """Its inputs' bounds and hints come from the OpenAPI document (see the browser tests)."""
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    assert re.findall(r"\b(?:maxlength|minlength|min|max)=", page, re.IGNORECASE) == []
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    assert "/openapi.json" in script
