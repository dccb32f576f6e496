"""The database layer on a real SQLite file: reads on the event loop see every commit, writes are serialised in
one thread, and billing's outbox lease lets one relay publish at a time."""

from __future__ import annotations

import asyncio

from sqlalchemy import insert, select, update

from services.billing import outbox
from services.billing.models import Base as BillingBase
from services.billing.models import RelayLeaseRow
from services.customer.models import Base, CustomerRow
from shopmesh.runtime.db import Database
from shopmesh.runtime.settings import Settings

CUSTOMERS = CustomerRow.__table__


def _database(tmp_path, metadata=Base.metadata) -> Database:
    return Database(f"sqlite:///{tmp_path / 'test.db'}", metadata)


def test_a_read_sees_what_was_committed_just_before_it(tmp_path):
    db = _database(tmp_path)

    async def scenario() -> list[str]:
        names = []
        await db.write(lambda c: c.execute(insert(CUSTOMERS), {"id": "a", "name": "Ada", "email": "a@example.com"}))
        for name in ("Grace", "Edsger"):
            names.append(await db.read(lambda c: c.execute(select(CUSTOMERS.c.name)).scalar_one()))
            await db.write(lambda c, name=name: c.execute(update(CUSTOMERS).values(name=name)))
        names.append(await db.read(lambda c: c.execute(select(CUSTOMERS.c.name)).scalar_one()))
        return names

    assert asyncio.run(scenario()) == ["Ada", "Grace", "Edsger"]


def test_reads_cannot_write(tmp_path):
    db = _database(tmp_path)

    async def scenario() -> str:
        try:
            await db.read(lambda c: c.execute(insert(CUSTOMERS), {"id": "b", "name": "B", "email": "b@example.com"}))
        except Exception as error:
            return str(error)
        return "written"

    assert "readonly" in asyncio.run(scenario())
    # The failed read left no broken connection behind: the next read works.
    assert asyncio.run(db.read(lambda c: c.execute(select(CUSTOMERS.c.id)).all())) == []


def test_a_failed_write_leaves_nothing_half_written(tmp_path):
    db = _database(tmp_path)

    def two_rows_then_fail(connection) -> None:
        connection.execute(insert(CUSTOMERS), {"id": "c", "name": "C", "email": "c@example.com"})
        connection.execute(insert(CUSTOMERS), {"id": "c", "name": "again", "email": "d@example.com"})

    async def scenario() -> list:
        try:
            await db.write(two_rows_then_fail)
        except Exception:
            pass
        return await db.read(lambda c: c.execute(select(CUSTOMERS.c.id)).all())

    assert asyncio.run(scenario()) == []


def test_concurrent_writes_of_one_process_are_all_committed(tmp_path):
    db = _database(tmp_path)

    async def scenario() -> int:
        await asyncio.gather(
            *(
                db.write(
                    lambda c, n=n: c.execute(
                        insert(CUSTOMERS), {"id": f"id{n}", "name": "N", "email": f"{n}@example.com"}
                    )
                )
                for n in range(200)
            )
        )
        return len(await db.read(lambda c: c.execute(select(CUSTOMERS.c.id)).all()))

    assert asyncio.run(scenario()) == 200


def _relays(tmp_path, count: int) -> list[outbox.OutboxRelay]:
    db = _database(tmp_path, BillingBase.metadata)
    return [outbox.OutboxRelay(Settings(var_dir=tmp_path), db) for _ in range(count)]


def test_one_relay_at_a_time_holds_the_outbox_lease_and_hands_it_on_when_stopped(tmp_path):
    first, second = _relays(tmp_path, 2)

    async def scenario() -> list[bool]:
        held = [await first._hold_lease(), await second._hold_lease()]
        await first.stop()  # gives the lease up
        second._next_try = 0.0
        held.append(await second._hold_lease())
        return held

    assert asyncio.run(scenario()) == [True, False, True]


def test_a_lease_that_ran_out_is_taken_over(tmp_path, monkeypatch):
    first, second = _relays(tmp_path, 2)

    async def scenario() -> tuple[bool, bool, str]:
        assert await first._hold_lease()
        # The holder stops renewing (killed, or stalled): once its lease runs out, another relay takes it.
        await first.db.write(
            lambda c: c.execute(
                update(RelayLeaseRow.__table__).values(expires_at=outbox._now() - outbox.timedelta(seconds=1))
            )
        )
        taken = await second._hold_lease()
        first._lease_until = 0.0  # as if its own lease ran out too
        renewed = await first._hold_lease()
        holder = await first.db.read(lambda c: c.execute(select(RelayLeaseRow.holder)).scalar_one())
        return taken, renewed, holder

    taken, renewed, holder = asyncio.run(scenario())
    assert (taken, renewed, holder) == (True, False, second.holder)
