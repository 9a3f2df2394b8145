"""The JetStream API calls the broker makes, as plain JSON requests.

nats-py's JetStream manager covers these too, but its dataclasses lag behind server fields
and hide the error codes; the broker needs exact control over what it sends to a 2.9
server and over which failures mean "not there" and which mean "try again later".
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from typing import Any, cast

import nats.errors
from nats.aio.client import Client

from tidings.brokers.nats.codec import parse_headers
from tidings.errors import BrokerError, BrokerUnavailable

__all__ = ["TRANSIENT", "ApiError", "JetStreamApi", "NotFound", "StoredMsg", "unavailable"]

JSON = dict[str, Any]

log = logging.getLogger("tidings.brokers.nats")

_FIXED = ("retention", "storage")
"""Stream settings a server refuses to change: an existing stream keeps its own."""

TRANSIENT: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.FlushTimeoutError,
    TimeoutError,
    ConnectionError,
)
"""Failures of the connection rather than of the request: worth trying again later."""


class ApiError(BrokerError):
    """JetStream refused a request; ``code`` is the HTTP-like status, ``err_code`` the
    server's own error number."""

    def __init__(self, subject: str, error: Mapping[str, Any]) -> None:
        self.code = int(error.get("code", 0))
        self.err_code = int(error.get("err_code", 0))
        self.description = str(error.get("description", ""))
        super().__init__(f"JetStream {subject}: {self.description} ({self.err_code})")


class NotFound(ApiError):
    """The stream, consumer or message does not exist."""


StoredMsg = tuple[int, str, dict[str, str], bytes, str]
"""A stored message: sequence, subject, raw headers block, body, time (RFC 3339)."""


def unavailable(exc: BaseException, doing: str) -> BrokerUnavailable:
    return BrokerUnavailable(f"NATS: {doing}: {type(exc).__name__}: {exc}".rstrip(": "))


class JetStreamApi:
    """Requests to ``$JS.API`` over one connection. Every method raises
    :class:`BrokerUnavailable` when the server cannot be reached or JetStream does not
    answer in time, :class:`NotFound` for a missing object and :class:`ApiError` for any
    other refusal."""

    def __init__(self, nc: Client, timeout: float = 10.0) -> None:
        self.nc = nc
        self.timeout = timeout

    async def call(self, subject: str, request: Mapping[str, Any] | None = None) -> JSON:
        payload = b"" if request is None else json.dumps(request).encode()
        try:
            msg = await self.nc.request(f"$JS.API.{subject}", payload, timeout=self.timeout)
        except nats.errors.NoRespondersError:
            raise BrokerUnavailable(
                "NATS: JetStream does not answer (not enabled, or no meta leader yet)"
            ) from None
        except TRANSIENT as exc:
            raise unavailable(exc, subject) from None
        response = cast(JSON, json.loads(msg.data))
        error = response.get("error")
        if error:
            if error.get("code") == 404:
                raise NotFound(subject, error)
            if error.get("code") == 503:
                raise BrokerUnavailable(f"NATS: {subject}: {error.get('description')}")
            raise ApiError(subject, error)
        return response

    async def stream_info(self, stream: str, subjects_filter: str | None = None) -> JSON:
        request = None if subjects_filter is None else {"subjects_filter": subjects_filter}
        return await self.call(f"STREAM.INFO.{stream}", request)

    async def ensure_stream(self, config: Mapping[str, Any]) -> JSON:
        """Create the stream, or update it when it exists with another configuration."""
        name = config["name"]
        try:
            return await self.call(f"STREAM.CREATE.{name}", config)
        except ApiError as exc:
            if exc.err_code != 10058:  # stream name already in use with another config
                raise
        current = (await self.stream_info(name))["config"]
        wanted = {**current, **config}
        for fixed in _FIXED:
            if fixed in current and wanted[fixed] != current[fixed]:
                log.warning(
                    "NATS: stream %s keeps %s=%s (a stream cannot change it; %s=%s applies to "
                    "streams created from now on)",
                    name,
                    fixed,
                    current[fixed],
                    fixed,
                    wanted[fixed],
                )
                wanted[fixed] = current[fixed]
        if wanted == current:
            return {"config": current}
        return await self.call(f"STREAM.UPDATE.{name}", wanted)

    async def stream_names(self) -> list[str]:
        names: list[str] = []
        while True:
            page = await self.call("STREAM.NAMES", {"offset": len(names)})
            batch = page.get("streams") or []
            names.extend(batch)
            if not batch or len(names) >= int(page.get("total", 0)):
                return names

    async def delete_stream(self, stream: str) -> None:
        await self.call(f"STREAM.DELETE.{stream}")

    async def ensure_consumer(self, stream: str, config: Mapping[str, Any]) -> JSON:
        """Create a durable consumer, or update the fields a 2.9 server lets change."""
        durable = config["durable_name"]
        request = {"stream_name": stream, "config": config}
        return await self.call(f"CONSUMER.DURABLE.CREATE.{stream}.{durable}", request)

    async def consumer_info(self, stream: str, consumer: str) -> JSON:
        return await self.call(f"CONSUMER.INFO.{stream}.{consumer}")

    async def delete_consumer(self, stream: str, consumer: str) -> None:
        await self.call(f"CONSUMER.DELETE.{stream}.{consumer}")

    async def get_msg(
        self, stream: str, seq: int, *, next_by_subject: str | None = None
    ) -> StoredMsg | None:
        """The message at ``seq`` (or the first at or after it on ``next_by_subject``);
        None if there is none."""
        request: JSON = {"seq": seq}
        if next_by_subject is not None:
            request["next_by_subj"] = next_by_subject
        try:
            found = (await self.call(f"STREAM.MSG.GET.{stream}", request))["message"]
        except NotFound:
            return None
        raw_headers = base64.b64decode(found.get("hdrs") or "")
        return (
            int(found["seq"]),
            str(found["subject"]),
            parse_headers(raw_headers) if raw_headers else {},
            base64.b64decode(found.get("data") or ""),
            str(found.get("time", "")),
        )

    async def last_msg(self, stream: str, subject: str) -> StoredMsg | None:
        """The last message stored on ``subject``; None if there is none."""
        try:
            found = (await self.call(f"STREAM.MSG.GET.{stream}", {"last_by_subj": subject}))[
                "message"
            ]
        except NotFound:
            return None
        return (
            int(found["seq"]),
            str(found["subject"]),
            {},
            base64.b64decode(found.get("data") or ""),
            str(found.get("time", "")),
        )

    async def delete_msg(self, stream: str, seq: int) -> bool:
        try:
            await self.call(f"STREAM.MSG.DELETE.{stream}", {"seq": seq, "no_erase": True})
        except NotFound:
            return False
        return True

    async def purge_subject(self, stream: str, subject: str) -> int:
        response = await self.call(f"STREAM.PURGE.{stream}", {"filter": subject})
        return int(response.get("purged", 0))
