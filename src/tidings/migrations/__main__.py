"""``python -m tidings.migrations``: write a revision, or upgrade a database ahead of a
deployment (see :mod:`tidings.migrations`)."""

from __future__ import annotations

import argparse
import asyncio

from sqlalchemy import MetaData

from tidings.db import create_engine, create_tables
from tidings.migrations import load_metadata, revision


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tidings.migrations")
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("revision", help="write the next revision of a tree")
    write.add_argument("metadata", help="module:attribute, e.g. person_service.tables:metadata")
    write.add_argument("-m", "--message", required=True)
    write.add_argument("--url", default="sqlite://", help="a scratch database to compare on")
    run = commands.add_parser("upgrade", help="bring a database's tables to their heads")
    run.add_argument("url", help="the domain's database, e.g. postgresql://host/db?schema=person")
    run.add_argument("metadata", nargs="*", help="module:attribute of the domain's tables")
    args = parser.parse_args(argv)
    if args.command == "revision":
        path = asyncio.run(revision(load_metadata(args.metadata), args.message, url=args.url))
        print(path)
    else:
        asyncio.run(_upgrade(args.url, [load_metadata(m) for m in args.metadata]))


async def _upgrade(url: str, extra: list[MetaData]) -> None:
    engine = create_engine(url)
    try:
        await create_tables(engine, *extra)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    main()
