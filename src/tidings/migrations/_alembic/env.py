"""Alembic's environment for :mod:`tidings.migrations`: works on the connection, metadata and
version table that the caller put in ``config.attributes``, inside the caller's transaction,
and never opens a connection of its own.

Autogenerate compares only the tables of the metadata at hand: other trees' tables share the
database (tidings' outbox beside a domain's records) and must not look like tables to drop.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import MetaData

config = context.config
target: MetaData = config.attributes["metadata"]


def _in_this_tree(name: str | None, type_: str, _parents: Any) -> bool:
    return type_ != "table" or name in target.tables


context.configure(
    connection=config.attributes["connection"],
    target_metadata=target,
    version_table=config.attributes["version_table"],
    render_as_batch=True,
    include_name=_in_this_tree,
)
with context.begin_transaction():
    context.run_migrations()
