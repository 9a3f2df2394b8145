"""A :class:`Message` as a NATS message, and back, exactly.

The body travels as it is. ``Message.id`` is the ``Nats-Msg-Id`` header (JetStream drops a
second message with the same id within the stream's duplicate window), ``Message.key`` the
``Tidings-Key`` header and every entry of ``Message.headers`` a header of its own name. The
event type is the last token of the subject.

NATS trims header values and turns line breaks into spaces; a value that would change
(leading or trailing white space, control characters) is sent percent-encoded and its header
name is listed in ``Tidings-Quoted``, so that every value comes back as it was sent. Header
names must be NATS tokens and must not start with ``Nats-`` or ``Tidings-``.

A message larger than the server's ``max_payload`` is sent zlib-compressed (header
``Tidings-Encoding: zlib``) when that makes it fit; otherwise publishing it raises
:class:`~tidings.errors.EventTooLarge`.
"""

from __future__ import annotations

import contextlib
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

from tidings.brokers.base import Message
from tidings.errors import EventTooLarge

__all__ = [
    "H_ATTEMPTS",
    "H_EVENT_TYPE",
    "H_FIRST_FAILED",
    "H_KEY",
    "H_LAST_FAILED",
    "H_MESSAGE_ID",
    "H_PRIOR",
    "H_REASON",
    "H_TOPIC",
    "MSG_ID",
    "AckMeta",
    "Encoded",
    "decode",
    "encode",
    "original_headers",
    "parse_ack_subject",
    "parse_headers",
]

MSG_ID = "Nats-Msg-Id"
H_KEY = "Tidings-Key"
H_QUOTED = "Tidings-Quoted"
H_ENCODING = "Tidings-Encoding"
H_MESSAGE_ID = "Tidings-Message-Id"
H_TOPIC = "Tidings-Topic"
H_EVENT_TYPE = "Tidings-Event-Type"
H_REASON = "Tidings-Reason"
H_ATTEMPTS = "Tidings-Attempts"
H_FIRST_FAILED = "Tidings-First-Failed-At"
H_LAST_FAILED = "Tidings-Last-Failed-At"
H_PRIOR = "Tidings-Prior-Attempts"

_RESERVED = ("nats-", "tidings-")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]|^\s|\s$")
_FRAME = len(b"NATS/1.0\r\n\r\n")


@dataclass(frozen=True, slots=True)
class Encoded:
    """What goes on the wire for one message."""

    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class AckMeta:
    """What JetStream says about a delivery in its ack subject."""

    stream: str
    consumer: str
    delivered: int
    """``num_delivered``: deliveries of this message to this consumer, this one included."""
    stream_seq: int
    timestamp_ns: int


def encode(
    message: Message,
    max_payload: int,
    extra: Mapping[str, str] | None = None,
    *,
    msg_id: str | None = None,
) -> Encoded:
    """Headers and body for ``message``, plus ``extra`` tidings headers; ``msg_id`` replaces
    ``message.id`` as the deduplication id (for copies of a message in other streams). Raises
    :class:`ValueError` for a header name NATS cannot carry or that tidings reserves, and
    :class:`EventTooLarge` when even the compressed message exceeds ``max_payload``."""
    headers: dict[str, str] = {}
    quoted: list[str] = []

    def put(name: str, value: str) -> None:
        if _UNSAFE.search(value):
            headers[name] = quote(value, safe="")
            quoted.append(name)
        else:
            headers[name] = value

    for name, value in message.headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"message {message.id!r}: header name {name!r} is not a NATS token")
        if name.lower().startswith(_RESERVED):
            raise ValueError(
                f"message {message.id!r}: header names starting with Nats- or Tidings- "
                f"are reserved ({name!r})"
            )
        put(name, value)
    put(MSG_ID, message.id if msg_id is None else msg_id)
    if message.key:
        put(H_KEY, message.key)
    for name, value in (extra or {}).items():
        put(name, value)
    if quoted:
        headers[H_QUOTED] = ",".join(quoted)
    body = message.body
    size = _size(headers, body)
    if size > max_payload:
        packed = zlib.compress(body, 6)
        headers[H_ENCODING] = "zlib"
        if _size(headers, packed) > max_payload:
            raise EventTooLarge(size, max_payload)
        body = packed
    return Encoded(body, headers)


def decode(
    headers: Mapping[str, str] | None, body: bytes, event_type: str, fallback_id: str
) -> tuple[Message, dict[str, str]]:
    """The message in a NATS message, and its tidings headers (``Tidings-*``, unquoted).
    ``fallback_id`` is the id of a message published without ``Nats-Msg-Id``."""
    fields = dict(headers or {})
    quoted = set(fields.pop(H_QUOTED, "").split(","))
    user: dict[str, str] = {}
    meta: dict[str, str] = {}
    for name, value in fields.items():
        plain = unquote(value) if name in quoted else value
        lowered = name.lower()
        if lowered.startswith("tidings-"):
            meta[name] = plain
        elif not lowered.startswith("nats-"):
            user[name] = plain
        elif name == MSG_ID:
            meta[MSG_ID] = plain
    if meta.pop(H_ENCODING, "") == "zlib":
        with contextlib.suppress(zlib.error):
            body = zlib.decompress(body)
    message = Message(
        id=meta.pop(H_MESSAGE_ID, "") or meta.pop(MSG_ID, "") or fallback_id,
        event_type=meta.pop(H_EVENT_TYPE, "") or event_type,
        key=meta.pop(H_KEY, ""),
        body=body,
        headers=user,
    )
    meta.pop(MSG_ID, None)
    return message, meta


def original_headers(message: Message, topic: str) -> dict[str, str]:
    """The tidings headers that carry a message away from its topic stream (to the redrive
    or dead-letter stream) and let :func:`decode` restore it there."""
    return {H_MESSAGE_ID: message.id, H_TOPIC: topic, H_EVENT_TYPE: message.event_type}


def parse_ack_subject(reply: str) -> AckMeta | None:
    """Read ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` (and
    the longer form with domain and account that newer servers send)."""
    tokens = reply.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        return None
    at = 2 if len(tokens) == 9 else 4
    try:
        return AckMeta(
            stream=tokens[at],
            consumer=tokens[at + 1],
            delivered=int(tokens[at + 2]),
            stream_seq=int(tokens[at + 3]),
            timestamp_ns=int(tokens[at + 5]),
        )
    except (ValueError, IndexError):
        return None


def parse_headers(raw: bytes) -> dict[str, str]:
    """Headers of a stored message as the JetStream API returns them (``NATS/1.0`` block)."""
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().decode("ascii", "replace")] = value.strip().decode("utf-8", "replace")
    return out


def _size(headers: Mapping[str, str], body: bytes) -> int:
    return _FRAME + sum(len(k) + len(v.encode()) + 4 for k, v in headers.items()) + len(body)
