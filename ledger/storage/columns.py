"""JSON text columns: encoding, and decoding that reads a damaged value as an absent one."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

_encode = msgspec.json.encode
_as_list = msgspec.json.Decoder(list[dict[str, Any]])
_as_dict = msgspec.json.Decoder(dict[str, Any])
_as_strs = msgspec.json.Decoder(list[str])


def dumps(value: Any) -> str | None:
    return None if value is None else _encode(value).decode()


def _decode(decoder: msgspec.json.Decoder[T], raw: str) -> T | None:
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError:
        return None


# An empty column is read without a call (most rows have one: the mappers run on every row).
def loads_list(raw: str | None) -> list[dict[str, Any]] | None:
    return _decode(_as_list, raw) if raw else None


def loads_dict(raw: str | None) -> dict[str, Any] | None:
    return _decode(_as_dict, raw) if raw else None


def loads_strs(raw: str | None) -> list[str]:
    return (_decode(_as_strs, raw) if raw else None) or []
