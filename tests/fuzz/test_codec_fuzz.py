"""Hostile input to the codecs: huge, deeply nested, wrong types, invalid UTF-8, huge
numbers, NaN. Every body is either an event or refused with :class:`DecodeError` (nothing
else escapes), quickly, and without memory growing past a small multiple of the size limit.
(tests/unit/test_codecs.py checks the messages field by field; this file throws worse.)"""

from __future__ import annotations

import contextlib
import json
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.errors import DecodeError, EventError
from tidings.events import Event, EventData, User
from tidings.events.codecs import CODECS, MAX_EVENT_BYTES, decode, detect, encode
from tidings.events.codecs._json import MAX_DEPTH

EVENT = Event(
    event_type="PersonUpdatedEvent",
    source_domain="Person",
    source_system="PersonAPI",
    version="v1",
    correlation_id="c-1",
    user=User(name="u", email="u@x"),
    entity_id="p-1",
    entity_version=3,
    event_data=EventData(old_data={"firstName": "A"}, new_data={"firstName": "B"}),
)


def envelope(codec: str) -> dict[str, Any]:
    return dict(json.loads(encode(EVENT, codec)))


def with_payload(codec: str, payload: str) -> bytes:
    """A valid envelope whose ``newData`` is the raw JSON text ``payload``."""
    text = encode(EVENT, codec).decode()
    return text.replace('"newData":{"firstName":"B"}', f'"newData":{{"x":{payload}}}').encode()


def nested(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + "1" + close * depth


def nested_objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


HOSTILE: dict[str, Callable[[str], bytes]] = {
    "100k-nested-arrays": lambda c: nested(100_000).encode(),
    "100k-nested-objects": lambda c: nested_objects(100_000).encode(),
    "100k-nested-in-payload": lambda c: with_payload(c, nested(100_000)),
    "deep-just-past-the-limit-in-payload": lambda c: with_payload(c, nested(MAX_DEPTH)),
    "deep-below-recursion-in-payload": lambda c: with_payload(c, nested(900)),
    "unclosed-nesting": lambda c: b"[" * 200_000,
    "over-the-size-limit": lambda c: with_payload(c, '"' + "x" * MAX_EVENT_BYTES + '"'),
    "far-over-the-size-limit": lambda c: b" " * (8 * MAX_EVENT_BYTES),
    "invalid-utf8": lambda c: with_payload(c, '"ok"').replace(b"ok", b"\xff\xfe\xc0\x80"),
    "overlong-utf8": lambda c: with_payload(c, '"ok"').replace(b"ok", b"\xc0\xaf"),
    "utf16": lambda c: encode(EVENT, c).decode().encode("utf-16"),
    "nul-bytes": lambda c: b"\x00" * 1000,
    "huge-integer": lambda c: with_payload(c, "9" * 100_000),
    "huge-negative-exponent": lambda c: with_payload(c, "1e-99999999999"),
    "huge-exponent": lambda c: with_payload(c, "1e99999999999"),
    "nan": lambda c: with_payload(c, "NaN"),
    "infinity": lambda c: with_payload(c, "-Infinity"),
    "entity-version-huge": lambda c: json.dumps(
        {**envelope(c), ("entityVersion" if c == "entity-event" else "entityversion"): 10**300}
    ).encode(),
    "array-envelope": lambda c: b"[" + encode(EVENT, c) + b"]",
    "string-envelope": lambda c: json.dumps(encode(EVENT, c).decode()).encode(),
    "many-keys": lambda c: with_payload(
        c, "{" + ",".join(f'"k{i}":{i}' for i in range(15_000)) + "}"
    ),
    "duplicate-envelope-keys": lambda c: encode(EVENT, c)[:-1] + b',"id":"x"}',
    "trailing-garbage": lambda c: encode(EVENT, c) + b"garbage",
    "bom": lambda c: b"\xef\xbb\xbf" + encode(EVENT, c),
    "lone-surrogate-escape": lambda c: with_payload(c, '"\\ud800"'),
    "every-field-null": lambda c: json.dumps(dict.fromkeys(envelope(c))).encode(),
    "every-field-a-list": lambda c: json.dumps({k: [] for k in envelope(c)}).encode(),
    "every-field-an-object": lambda c: json.dumps({k: {} for k in envelope(c)}).encode(),
    "every-field-a-number": lambda c: json.dumps({k: 1.5 for k in envelope(c)}).encode(),
    "every-field-true": lambda c: json.dumps(dict.fromkeys(envelope(c), True)).encode(),
}

MAY_DECODE = {"many-keys", "lone-surrogate-escape", "huge-negative-exponent"}
"""Bodies that are valid events after all; the rest must be refused."""


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_body_is_refused_with_a_typed_error_quickly_and_in_bounded_memory(
    codec: str, case: str
) -> None:
    body = HOSTILE[case](codec)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        try:
            event = decode(body)
        except DecodeError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 300
            event = None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    if case in MAY_DECODE:
        assert event is not None
        assert decode(encode(event, codec)) == event
    else:
        assert event is None, f"{case} was accepted"
    assert elapsed < 2.0, f"{case} took {elapsed:.2f}s"
    assert peak < max(64 * MAX_EVENT_BYTES, 40 * len(body)), f"{case} peaked at {peak} bytes"


def test_nesting_at_the_limit_decodes_and_one_more_level_is_refused() -> None:
    # envelope (1) > data or eventData (2) > newData (3) > the payload's own levels
    payload_limit = MAX_DEPTH - 3
    event = decode(with_payload("cloudevents", nested(payload_limit)))
    assert decode(encode(event)) == event
    with pytest.raises(DecodeError, match=f"nested deeper than {MAX_DEPTH}"):
        decode(with_payload("cloudevents", nested(payload_limit + 1)))


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_an_event_nested_past_the_limit_is_refused_on_encode_too(codec: str) -> None:
    deep: Any = 1
    for _ in range(MAX_DEPTH):
        deep = [deep]
    event = EVENT.model_copy(update={"event_data": EventData(new_data={"x": deep})})
    with pytest.raises(EventError, match="nested deeper"):
        encode(event, codec)


@pytest.mark.parametrize("bad", [None, "text", 12, 1.5, ["a"], {"a": 1}, bytearray(b"{")])
def test_wrong_python_types_are_decode_errors(bad: Any) -> None:
    with pytest.raises(DecodeError):
        decode(bad)
    with pytest.raises(DecodeError):
        detect(bad)


hostile_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from(["NaN", "Infinity", "9" * 5000, "\ud800", ""]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    codec=st.sampled_from(sorted(CODECS)),
    drops=st.sets(st.text(max_size=20)),
    changes=st.dictionaries(st.text(max_size=20), hostile_json, max_size=4),
    nest=st.integers(0, 3 * MAX_DEPTH),
)
def test_any_mangled_envelope_decodes_or_is_a_decode_error(
    codec: str, drops: set[str], changes: dict[str, Any], nest: int
) -> None:
    wire = envelope(codec)
    keys = sorted(wire)
    for key in drops:
        wire.pop(keys[hash(key) % len(keys)], None)
    for key, value in changes.items():
        target = keys[hash(key) % len(keys)] if key else key
        for _ in range(nest if key.startswith("n") else 0):
            value = [value]
        wire[target] = value
    body = json.dumps(wire, allow_nan=True).encode("utf-8", "surrogatepass")
    try:
        event = decode(body)
    except DecodeError:
        return
    assert decode(encode(event, codec)) == event


@settings(max_examples=300, deadline=None)
@given(body=st.binary(min_size=1, max_size=400), at=st.integers(0, 10_000))
def test_any_bytes_spliced_into_a_valid_body_decode_or_are_a_decode_error(
    body: bytes, at: int
) -> None:
    valid = encode(EVENT)
    at %= len(valid)
    with contextlib.suppress(DecodeError):
        decode(valid[:at] + body + valid[at:])
