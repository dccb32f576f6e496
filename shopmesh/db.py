"""One database per service through SQLAlchemy 2.0: SQLite under var/ by default, any URL by setting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import logging

from sqlalchemy import Engine, Index, MetaData, create_engine, event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.schema import CreateIndex

T = TypeVar("T")
log = logging.getLogger(__name__)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record) -> None:
            # WAL lets several instances of a service share the file; foreign keys are off by default.
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class Database:
    """The schema created on first start, and sessions run off the event loop."""

    def __init__(self, url: str, metadata: MetaData, indexes: tuple[Index, ...] = ()) -> None:
        self.engine = make_engine(url)
        metadata.create_all(self.engine)
        # create_all makes the tables that are missing; an index added since reaches an existing table here.
        for index in indexes:
            try:
                with self.engine.begin() as connection:
                    connection.execute(CreateIndex(index, if_not_exists=True))
            except IntegrityError as error:
                log.error("cannot create the index %s: the stored rows break it (%s); fix them and restart",
                          index.name, error.orig)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> Session:
        return self._sessions()

    async def run(self, work: Callable[[Session], T]) -> T:
        """Run work in one transaction, in a worker thread: committed if it returns, rolled back if it raises."""

        def transaction() -> T:
            with self._sessions.begin() as session:
                return work(session)

        return await asyncio.to_thread(transaction)

    async def seed(self, work: Callable[[Session], None]) -> None:
        """Run a seeding transaction; another instance seeding at the same moment is not an error."""
        try:
            await self.run(work)
        except IntegrityError:
            pass
