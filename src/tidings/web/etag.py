"""Optimistic concurrency: ``ETag`` is the entity version, ``If-Match`` must name it.

As in the council APIs, the tag of version 3 is ``"3"``. :func:`check_if_match` accepts
``"3"``, ``3``, ``W/"3"`` (a weak tag counts: proxies weaken tags of compressed bodies), ``*``
and lists such as ``"2", "3"``; the comparison is of the text between the quotes, so ``"03"``
does not match version 3.
"""

from __future__ import annotations

import re

from tidings.web.problems import Problem, status_phrase

__all__ = ["check_if_match", "etag"]

_TAG = re.compile(r'(?:W/)?(?:"([\x21\x23-\x7e\x80-\xff]*)"|([\x21\x23-\x2b\x2d-\x7e]+))')


def etag(version: int) -> str:
    """The ``ETag`` header value of ``version``: the number in double quotes."""
    return f'"{version}"'


def _tags(header: str) -> list[str] | None:
    """The opaque tags of an ``If-Match`` value, ``None`` for ``*``; ``ValueError`` if
    malformed. Empty list elements are skipped, as RFC 9110 section 5.6.1 requires."""
    items = [item.strip() for item in header.split(",")]
    items = [item for item in items if item]
    if items == ["*"]:
        return None
    if "*" in items:
        raise ValueError(header)
    tags: list[str] = []
    for item in items:
        match = _TAG.fullmatch(item)
        if match is None:
            raise ValueError(item)
        tags.append(match.group(1) if match.group(1) is not None else match.group(2))
    if not tags:
        raise ValueError(header)
    return tags


def check_if_match(header: str | None, current_version: int, *, required: bool = False) -> None:
    """Pass if ``header`` names ``current_version`` (or is ``*``, or is absent and not
    ``required``).

    Raises :class:`Problem`: 412 with the current ``ETag`` when it names other versions only,
    400 naming ``If-Match`` when it is malformed, 428 when it is absent and ``required``.
    """
    if header is None:
        if required:
            raise Problem(428, status_phrase(428), "send If-Match with the ETag you last read")
        return
    try:
        tags = _tags(header)
    except ValueError:
        message = 'must be "*" or a list of entity tags such as "3"'
        raise Problem(
            400,
            status_phrase(400),
            f"If-Match {message}",
            errors=[{"field": "If-Match", "message": message}],
        ) from None
    if tags is None or str(current_version) in tags:
        return
    raise Problem(
        412,
        status_phrase(412),
        f"If-Match does not match the current version {etag(current_version)}",
        headers={"ETag": etag(current_version)},
    )
