"""An event as an HTTP request, in either CloudEvents HTTP mode.

*structured*: the body is the whole CloudEvent as JSON (``application/cloudevents+json``),
byte for byte what the ``cloudevents`` codec writes. *binary*: the attributes are ``ce-*``
headers (percent-encoded where the HTTP binding says) and the body is the event's data as
JSON (``application/json``). Both carry ``x-correlation-id``.
"""

from __future__ import annotations

import json
from typing import Literal
from urllib.parse import quote

from tidings.events import Event
from tidings.events.codecs import CloudEventsCodec

__all__ = ["Mode", "build_request"]

Mode = Literal["structured", "binary"]

CORRELATION_HEADER = "x-correlation-id"

_CODEC = CloudEventsCodec()
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
"""Characters a ``ce-*`` header value carries as they are; every other is percent-encoded."""


def build_request(event: Event, mode: Mode) -> tuple[bytes, dict[str, str]]:
    """The body and the content headers that carry ``event`` in ``mode``."""
    headers = {CORRELATION_HEADER: event.correlation_id}
    if mode == "structured":
        headers["content-type"] = _CODEC.content_type
        return _CODEC.encode(event), headers
    attributes = _CODEC.to_dict(event)
    data = attributes.pop("data")
    attributes.pop("datacontenttype", None)
    for name, value in attributes.items():
        headers[f"ce-{name}"] = quote(str(value), safe=_HEADER_SAFE)
    headers["content-type"] = "application/json"
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return body, headers
