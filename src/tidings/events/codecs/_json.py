"""What both codecs share: JSON loading within limits, time formatting and parsing, and
:class:`_JsonCodec`, the base of a codec whose envelope is one JSON object."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, NoReturn

from pydantic import ValidationError

from tidings.errors import DecodeError, EventError
from tidings.events.model import MAX_ENTITY_VERSION, Event

__all__ = ["MAX_DEPTH", "MAX_EVENT_BYTES"]

MAX_EVENT_BYTES = 256 * 1024
"""Default limit on the size of a body to decode."""

MAX_DEPTH = 64
"""Deepest nesting of JSON objects and arrays in a body, the envelope counting as 1. Deeper
bodies are refused on decode (and on encode, so that every encoded event decodes): nothing
downstream of a codec has to survive a payload nested thousands of levels deep."""


class _JsonCodec:
    """A codec whose envelope is one JSON object; subclasses map it to and from an Event."""

    name = ""
    content_type = "application/json"
    _names: Mapping[str, str] = MappingProxyType({})

    def to_dict(self, event: Event) -> dict[str, Any]:
        """The envelope of ``event`` as a JSON-ready dict."""
        raise NotImplementedError

    def from_dict(self, obj: dict[str, Any]) -> Event:
        """The event in an envelope already parsed from JSON; raises DecodeError."""
        raise NotImplementedError

    def encode(self, event: Event) -> bytes:
        """``event`` as compact UTF-8 JSON; raises EventError for non-JSON payloads."""
        if event.entity_version is not None and event.entity_version > MAX_ENTITY_VERSION:
            raise EventError(f"{self.name}: entityVersion is over {MAX_ENTITY_VERSION}")
        wire = self.to_dict(event)
        if _depth(wire) > MAX_DEPTH:
            raise EventError(f"{self.name}: eventData is nested deeper than {MAX_DEPTH} levels")
        try:
            text = json.dumps(wire, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise EventError(f"{self.name}: eventData is not JSON-native: {exc}") from None
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates have no UTF-8 form; JSON escapes carry them losslessly.
            return json.dumps(wire, separators=(",", ":")).encode("ascii")

    def decode(self, body: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> Event:
        """The event in ``body``; raises DecodeError."""
        return self.from_dict(_load(body, max_bytes))

    def _fail(self, field: str, problem: str) -> NoReturn:
        raise DecodeError(f"{self.name}: {field}: {problem}")

    def _require(self, obj: dict[str, Any], *keys: str) -> None:
        for key in keys:
            if key not in obj:
                self._fail(key, "missing")

    def _object(self, obj: dict[str, Any], key: str, keep: tuple[str, ...]) -> dict[str, Any]:
        """``obj[key]`` (absent or null as ``{}``) with only the keys in ``keep``."""
        value = obj.get(key)
        if value is not None and not isinstance(value, dict):
            self._fail(key, _expected("an object", value))
        return {k: value[k] for k in keep if k in value} if value else {}

    def _time(self, obj: dict[str, Any], key: str) -> datetime:
        text = obj[key]
        parsed = _parse_time(text) if isinstance(text, str) else None
        if parsed is None:
            self._fail(key, _expected("an RFC 3339 date-time with offset", text))
        return parsed

    def _version_number(self, key: str, value: object) -> int | None:
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self._fail(key, _expected("an integer", value))
        if not 0 <= value <= MAX_ENTITY_VERSION:
            self._fail(key, f"expected 0 to {MAX_ENTITY_VERSION}, got {_short(value)}")
        return value

    def _event(self, fields: dict[str, Any]) -> Event:
        """The event of ``fields`` (keyed by the model's camelCase names); raises DecodeError."""
        try:
            return Event.model_validate(fields)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            path = ".".join(str(part) for part in error["loc"])
            head, _, rest = path.partition(".")
            field = self._names.get(path) or ".".join(
                filter(None, [self._names.get(head, head), rest])
            )
            self._fail(field or "body", error["msg"])


_JSON_CONTENT = re.compile(r"(application|text)/([a-z0-9.+-]+\+)?json\s*(;.*)?", re.I | re.A)
_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)


def _load(body: bytes, max_bytes: int) -> dict[str, Any]:
    if not isinstance(body, bytes | bytearray | memoryview):
        raise DecodeError(f"body: expected bytes, got {type(body).__name__}")
    body = bytes(body)
    if len(body) > max_bytes:
        raise DecodeError(f"body: {len(body)} bytes is over the limit of {max_bytes}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"body: not UTF-8 (invalid byte at offset {exc.start})") from None
    try:
        if text.startswith("\ufeff"):  # as json.loads refuses it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        obj = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"body: not JSON ({exc.msg} at offset {exc.pos})") from None
    except _BadNumber as exc:
        raise DecodeError(f"body: {exc}") from None
    except ValueError:
        raise DecodeError("body: number out of range (too many digits)") from None
    except RecursionError:
        raise DecodeError("body: JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"body: expected a JSON object, got {type(obj).__name__}")
    # Each level of nesting opens with a bracket of its own: with few brackets, no need to look.
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(obj) > MAX_DEPTH:
        raise DecodeError(f"body: JSON nested deeper than {MAX_DEPTH} levels")
    return obj


def _depth(value: object) -> int:
    """How deeply ``value`` nests dicts and lists (a scalar is 0), without recursion; stops
    counting one past :data:`MAX_DEPTH`."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, level) for child in children if isinstance(child, _NESTING))
    return deepest


_NESTING = (dict, list, tuple)


def _is_json_media_type(value: object) -> bool:
    return isinstance(value, str) and _JSON_CONTENT.fullmatch(value) is not None


class _BadNumber(ValueError):
    pass


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(f"number out of range: {_short(text)}")
    return value


def _no_constant(text: str) -> NoReturn:
    raise _BadNumber(f"not JSON ({text} is not a JSON number)")


_DECODER = json.JSONDecoder(parse_float=_finite, parse_constant=_no_constant)


def _event_data(event: Event) -> dict[str, Any]:
    return {"oldData": event.event_data.old_data, "newData": event.event_data.new_data}


def _format_time(value: datetime, digits: int = 6) -> str:
    text = value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    return text + "0" * (digits - 6) + "Z"


def _parse_time(text: str) -> datetime | None:
    match = _TIME.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    micro = int(fraction[:6].ljust(6, "0")) if fraction else 0
    y, mo, d, h, mi, s = map(int, (year, month, day, hour, minute, second))
    try:
        if sign is None:  # Z: already UTC
            return datetime(y, mo, d, h, mi, s, micro, tzinfo=UTC)
        offset = timedelta(hours=int(off_h), minutes=int(off_m)) * (-1 if sign == "-" else 1)
        return datetime(y, mo, d, h, mi, s, micro, tzinfo=timezone(offset)).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _expected(what: str, value: object) -> str:
    return f"expected {what}, got {_short(value)}"


def _short(value: object) -> str:
    text = "null" if value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
