"""The stock of bills being made. A bill's stock is reserved at inventory under the bill's id before the bill is
stored, so whatever stops a bill between the two (the caller's cancel or deadline, billing killed, inventory
away) must not keep the stock. Billing writes a pending row before reserving and deletes it in the transaction
that stores the bill; a pending row that outlives `billing_stale_bill_seconds` names stock with no bill, and the
reconciler gives it back. Inventory remembers released ids, so a reservation still on the wire when its release
ran takes nothing."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from services.billing.clients import Inventory
from services.billing.models import PendingBillRow
from shopmesh.runtime.db import Database
from shopmesh.runtime.errors import ServiceError, Unavailable

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


#: Built once: the statement costs more to build than to run.
TAKE_PENDING = delete(PendingBillRow).where(PendingBillRow.id == bindparam("id"), PendingBillRow.releasing.is_(False))


def store_pending(connection: Connection, bill_id: str) -> None:
    """In the transaction that stores the bill: take its pending row, or refuse when the reconciler has claimed
    it (its stock is being given back, so the bill must not be stored)."""
    taken = connection.execute(TAKE_PENDING, {"id": bill_id}).rowcount
    if not taken:
        raise Unavailable("the bill took too long to make and its stock was given back; make it again")


class Reservations:
    def __init__(self, db: Database, inventory: Inventory, stale_after: float) -> None:
        self.db = db
        self.inventory = inventory
        self.stale_after = timedelta(seconds=stale_after)
        self._task: asyncio.Task | None = None

    async def begin(self, bill_id: str) -> None:
        await self.db.write(
            lambda connection: connection.execute(
                insert(PendingBillRow), {"id": bill_id, "created_at": _now(), "releasing": False}
            )
        )

    async def give_back(self, bill_id: str) -> bool:
        """Release the bill's stock and forget it; False (and it stays pending, for the reconciler) when inventory
        cannot be reached."""
        await self.db.run(
            lambda session: session.execute(
                update(PendingBillRow).where(PendingBillRow.id == bill_id).values(releasing=True)
            )
        )
        try:
            await self.inventory.release(bill_id)
        except ServiceError as error:
            log.warning("stock of bill %s not given back yet (%s); the reconciler retries", bill_id, error.message)
            return False
        await self.db.run(lambda session: session.execute(delete(PendingBillRow).where(PendingBillRow.id == bill_id)))
        return True

    async def reconcile_once(self) -> int:
        """Give back the stock of every stale pending bill; return how many were given back."""
        cutoff = _now() - self.stale_after
        stale = await self.db.run(
            lambda session: list(
                session.scalars(select(PendingBillRow.id).where(PendingBillRow.created_at < cutoff).limit(100))
            )
        )
        given = 0
        for bill_id in stale:
            if await self.give_back(bill_id):
                log.info("gave back the stock of bill %s, which was never stored", bill_id)
                given += 1
        return given

    def start(self, every: float = 5.0) -> None:
        async def loop() -> None:
            while True:
                try:
                    await self.reconcile_once()
                except Exception:
                    log.exception("reconciling pending bills failed; retrying")
                await asyncio.sleep(every)

        self._task = asyncio.create_task(loop(), name="pending bills")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
