"""Who may do what on the dashboard: any valid token reads; actions (pause, resume, redrive,
purge) need a token in one of the operator groups."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from tidings.web import Principal, Problem, Reader

__all__ = ["OPERATOR_GROUP", "Operator", "operator"]

OPERATOR_GROUP = "tidings-operators"
"""The ``groups`` claim value that allows actions on the dashboard (by default)."""


async def operator(request: Request, principal: Reader) -> Principal:
    """FastAPI dependency: an authenticated caller in one of the app's operator groups
    (``app.state.operator_groups``), or a 403 problem."""
    groups: frozenset[str] = request.app.state.operator_groups
    if principal.groups.isdisjoint(groups):
        raise Problem(403, "Forbidden", "the token has none of the operator groups")
    return principal


Operator = Annotated[Principal, Depends(operator)]
"""Parameter annotation for endpoints that change what the system does."""
