"""Which time zone names a heartbeat config accepts: IANA zones that mean the same on any host."""

from __future__ import annotations

import pytest

from ledger.config import ConfigError, HeartbeatConfig, merge_config, portable_zone_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("UTC", True),
        ("Europe/Paris", True),
        ("America/Argentina/Buenos_Aires", True),
        ("Etc/GMT+5", True),
        ("Etc/GMT-14", True),
        ("US/Eastern", True),  # a backward-compatible IANA link, same everywhere
        ("EST5EDT", True),
        ("localtime", False),  # the host's own zone
        ("LocalTime", False),
        ("posixrules", False),  # a copy of some zone the host picked
        ("Factory", False),  # IANA's "no zone set" placeholder
        ("posix/Europe/Paris", False),  # folders some hosts' zone databases have
        ("right/UTC", False),
        ("/etc/localtime", False),
        ("/usr/share/zoneinfo/UTC", False),
        ("../zoneinfo/UTC", False),
        ("Europe/../UTC", False),
        ("Europe//Paris", False),
        ("zone.tab", False),
        ("tzdata.zi", False),
        ("Mars/Olympus", False),
        ("europe/paris", False),
        ("", False),
        ("UTC\n", False),
    ],
)
def test_portable_zone_name(name: str, expected: bool) -> None:
    assert portable_zone_name(name) is expected


@pytest.mark.parametrize("name", ["localtime", "posixrules", "Factory", "right/UTC"])
def test_a_host_dependent_zone_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        merge_config(HeartbeatConfig(), {"timezone": name})
    assert info.value.field == "timezone"
    assert info.value.message.startswith("timezone must be an IANA time zone name")
