"""The relay of billing's transactional outbox: publishes the invoice events of stored bills to FACTURATION
and marks them published. Kafka down: the events wait in the database and go out when it returns. A crash
between publishing and marking sends an event twice; consumers de-duplicate by invoice id."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from kafka.errors import KafkaError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.billing.models import OutboxRow
from shopmesh import invoices
from shopmesh.db import Database
from shopmesh.settings import Settings

log = logging.getLogger(__name__)

BATCH = 100


class OutboxRelay:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.wake = asyncio.Event()
        self._producer = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox relay")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._producer is not None:
            await asyncio.to_thread(self._producer.close, 5)

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                published = await self.relay_once()
                if failing:
                    log.info("Kafka is back: the waiting invoice events are published")
                failing = False
            except KafkaError as error:
                if not failing:
                    log.warning("cannot publish invoice events (%s); they wait in the outbox", error)
                failing, published = True, 0
                await self._reset_producer()
            if not published:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), 2 if failing else 1)
                except TimeoutError:
                    pass

    async def relay_once(self) -> int:
        """Publish one batch of waiting events; return how many."""
        def pending(session: Session) -> list[OutboxRow]:
            query = select(OutboxRow).where(OutboxRow.published_at.is_(None)).order_by(OutboxRow.created_at)
            return list(session.scalars(query.limit(BATCH)))

        rows = await self.db.run(pending)
        if not rows:
            return 0
        await asyncio.to_thread(self._publish, rows)

        def mark(session: Session) -> None:
            session.execute(update(OutboxRow).where(OutboxRow.invoice_id.in_([row.invoice_id for row in rows]))
                            .values(published_at=datetime.now(UTC).replace(tzinfo=None)))

        await self.db.run(mark)
        return len(rows)

    def _publish(self, rows: list[OutboxRow]) -> None:
        if self._producer is None:
            self._producer = invoices.producer(self.settings)
        futures = [self._producer.send(invoices.FACTURATION, key=row.key, value=row.value) for row in rows]
        for future in futures:
            future.get(timeout=15)

    async def _reset_producer(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await asyncio.to_thread(producer.close, 0)
