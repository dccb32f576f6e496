"""One database per service through SQLAlchemy 2.0: SQLite under var/ by default, any URL by setting.

Writes run in a worker thread, as ORM sessions (run) or, on the hot paths, Core statements (write); on SQLite
in one thread per process, as SQLite has one writer at a time and threads that race for its lock wait in its
busy handler's sleeps. Reads run as Core statements on a connection of their own: on SQLite (a local file in
WAL mode, where a reader never waits for a writer) right on the event loop, over one long-lived read-only
connection, which saves the thread hop, the pool checkout and the ORM's unit of work, most of a primary-key
read's cost (about 600 µs down to 35 µs); on a server database in a worker thread, as the network round trip
must not block the loop. (pysqlite begins no transaction for a SELECT, so each read on the long-lived
connection sees what was committed before it.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar, cast

from sqlalchemy import Connection, Engine, Index, MetaData, Table, create_engine, event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.schema import CreateIndex

from shopmesh.runtime.metrics import database_time

T = TypeVar("T")
log = logging.getLogger(__name__)


#: How long a read on the event loop waits for a lock on SQLite before it fails (WAL readers take none, short
#: of recovering the file after a crash).
READ_BUSY_SECONDS = 1.0


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:///")


def make_engine(url: str, read_only: bool = False) -> Engine:
    if is_sqlite(url):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": READ_BUSY_SECONDS if read_only else 30, "check_same_thread": False}
        )

        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record) -> None:
            # WAL lets several instances of a service share the file; foreign keys are off by default.
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            if read_only:
                # pysqlite's own mode, which begins no transaction for a SELECT: each read sees the latest commit.
                cursor.execute("PRAGMA query_only=ON")
            else:
                # SQLAlchemy, not pysqlite, begins a writer's transactions, with BEGIN IMMEDIATE: it takes the write
                # lock at once and waits there for another process's writer, rather than failing to upgrade a read
                # lock halfway through.
                connection.isolation_level = None
            cursor.close()

        if not read_only:

            @event.listens_for(engine, "begin")
            def _begin(connection) -> None:
                connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


class Database:
    """The schema created on first start; writes off the event loop, reads as this module says."""

    def __init__(self, url: str, metadata: MetaData, indexes: tuple[Index, ...] = ()) -> None:
        self.engine = make_engine(url)
        metadata.create_all(self.engine)
        # create_all makes the tables that are missing; an index added since reaches an existing table here.
        for index in indexes:
            try:
                with self.engine.begin() as connection:
                    connection.execute(CreateIndex(index, if_not_exists=True))
            except IntegrityError as error:
                log.error(
                    "cannot create the index %s: the stored rows break it (%s); fix them and restart",
                    index.name,
                    error.orig,
                )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer") if is_sqlite(url) else None
        self._inline_reads = is_sqlite(url)
        self._reader = make_engine(url, read_only=True) if self._inline_reads else self.engine
        self._read_connection: Connection | None = None

    def session(self) -> Session:
        return self._sessions()

    async def run(self, work: Callable[[Session], T]) -> T:
        """Run work in one transaction, in a worker thread: committed if it returns, rolled back if it raises."""

        def transaction() -> T:
            with self._sessions.begin() as session:
                return work(session)

        return await self._in_writer(transaction)

    async def write(self, work: Callable[[Connection], T]) -> T:
        """Run work's Core statements in one transaction, as run() does: the hot write paths skip the ORM's unit
        of work, which costs more than the statements."""

        def transaction() -> T:
            with self.engine.begin() as connection:
                return work(connection)

        return await self._in_writer(transaction)

    async def _in_writer(self, transaction: Callable[[], T]) -> T:
        with database_time():
            if self._writer is None:
                return await asyncio.to_thread(transaction)
            return await asyncio.get_running_loop().run_in_executor(self._writer, transaction)

    async def read(self, work: Callable[[Connection], T]) -> T:
        """Run work's Core statements on a connection of its own: on the event loop for SQLite, in a worker
        thread for a server database. It sees committed data only and must not write."""

        with database_time():
            return await self._read(work)

    async def _read(self, work: Callable[[Connection], T]) -> T:
        if not self._inline_reads:

            def reading() -> T:
                with self._reader.connect() as connection:
                    return work(connection)

            return await asyncio.to_thread(reading)
        if self._read_connection is None:
            self._read_connection = self._reader.connect()
        try:
            return work(self._read_connection)
        except BaseException:
            # A failed read may leave the connection in any state: the next read starts on a fresh one.
            self._read_connection.close()
            self._read_connection = None
            raise

    async def seed(self, work: Callable[[Session], None]) -> None:
        """Run a seeding transaction; another instance seeding at the same moment is not an error."""
        try:
            await self.run(work)
        except IntegrityError:
            pass


def table(model: type) -> Table:
    """The Core table of a declarative model, for statements built once (the ORM types it as any FromClause)."""
    return cast(Table, model.__table__)  # type: ignore[attr-defined]
