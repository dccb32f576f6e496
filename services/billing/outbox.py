"""The relay of billing's transactional outbox: publishes the invoice events of stored bills to FACTURATION and
marks them published.

It is a supervised loop that runs as long as billing does: any failure (Kafka stopped, paused, unreachable, or
anything unexpected) is logged, waited out with a growing back-off, and retried; the events wait in the
database meanwhile. It never resends an event whose send is still under way: one long-lived idempotent producer
(kafka-python) keeps retrying it itself, and the broker drops the producer's own repeats, so a stall of Kafka
publishes each event once. Only a send that failed for good (the producer's delivery timeout, minutes) is made
again; a crash between publishing and marking also sends an event twice, and consumers de-duplicate by invoice
id. Every call into kafka-python runs in a worker thread: the event loop never blocks on Kafka.

Several billing instances share one database: each runs a relay, but only the one holding the lease (a row of
relay_lease, renewed while it runs) publishes; if it dies, another takes over within LEASE_SECONDS. A holder
stalled longer than that while sends were under way may see them sent again by its successor: the same
duplicate as a crash, which consumers absorb."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import cast

from prometheus_client import Counter, Gauge
from sqlalchemy import Connection, CursorResult, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from kafka import KafkaProducer
from services.billing.models import OutboxRow, RelayLeaseRow
from shopmesh.runtime import invoices
from shopmesh.runtime.db import Database
from shopmesh.runtime.settings import Settings

log = logging.getLogger(__name__)

BATCH = 100

# Every billing instance reports the outbox it shares with the others: take max() across instances.
WAITING = Gauge("shopmesh_outbox_events_waiting", "Invoice events stored with a bill and not yet on Kafka.")
OLDEST_AGE = Gauge(
    "shopmesh_outbox_oldest_event_age_seconds", "Age of the oldest invoice event waiting in the outbox (0: none)."
)
PUBLISHED = Counter("shopmesh_outbox_events_published", "Invoice events acknowledged by Kafka and marked published.")
PUBLISH_FAILURES = Counter(
    "shopmesh_outbox_publish_failures", "Invoice events the Kafka producer gave up on (they are sent again)."
)
RELAY_FAILURES = Counter("shopmesh_outbox_relay_failures", "Failures of the relay loop, each retried with back-off.")
LEASE_HELD = Gauge("shopmesh_outbox_lease_held", "1 while this billing instance is the one publishing the outbox.")
#: How long a relay's lease on publishing lasts unless renewed (it renews at half of it).
LEASE_SECONDS = 5.0


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class OutboxRelay:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.wake = asyncio.Event()
        self._producer: KafkaProducer | None = None
        self._task: asyncio.Task | None = None
        #: invoice id -> None while its send is under way; never sent again meanwhile.
        self._in_flight: dict[str, None] = {}
        self._acked: list[str] = []
        self.published = 0
        self.failures = 0
        self.holder = f"{settings.advertise_address}-{uuid.uuid4().hex[:8]}"
        self._lease_until = 0.0  # loop time until which this relay holds the lease
        self._next_try = 0.0  # loop time of the next try while another relay holds it

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="outbox relay")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._lease_until:  # hand the lease on now rather than when it runs out
            try:
                await self.db.run(
                    lambda session: session.execute(
                        delete(RelayLeaseRow).where(RelayLeaseRow.name == "outbox", RelayLeaseRow.holder == self.holder)
                    )
                )
            except Exception as error:
                log.warning("giving up the outbox lease: %s", error)
        if self._producer is not None:
            # What is acknowledged meanwhile stays unmarked, and is published again by the next start.
            try:
                await asyncio.to_thread(self._producer.close, 5)
            except Exception as error:
                log.warning("closing the Kafka producer: %s", error)

    async def _supervise(self) -> None:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=0.5, max=15),
            before_sleep=_report_retry,
        ):
            with attempt:
                await self._relay()

    async def _relay(self) -> None:
        """Publish waiting events as they come, until cancelled; raises on a failure, for _supervise to retry."""
        while True:
            await self._mark_acknowledged()
            sent = await self._send_waiting() if await self._hold_lease() else 0
            if not sent:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), 1)
                except TimeoutError:
                    pass

    async def _hold_lease(self) -> bool:
        """Take or renew the publishing lease when it is free, expired, ours, or half run out; True if held."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._lease_until - LEASE_SECONDS / 2:
            return True
        if loop.time() < self._next_try:
            return False  # another holds it: asked again once a second, not on every bill made here
        started = loop.time()

        def take(session: Session) -> bool:
            now = _now()
            lease = {"holder": self.holder, "expires_at": now + timedelta(seconds=LEASE_SECONDS)}
            renewed = session.execute(
                update(RelayLeaseRow)
                .where(
                    RelayLeaseRow.name == "outbox",
                    or_(RelayLeaseRow.holder == self.holder, RelayLeaseRow.expires_at < now),
                )
                .values(**lease)
            )
            if cast(CursorResult, renewed).rowcount:  # an UPDATE's result is a cursor result
                return True
            if session.get(RelayLeaseRow, "outbox") is not None:
                return False  # another relay holds it
            session.execute(insert(RelayLeaseRow).values(name="outbox", **lease))
            return True

        try:
            held = await self.db.run(take)
        except IntegrityError:
            held = False  # another relay inserted the first lease at the same moment
        if held and self._lease_until <= started:
            log.info("this billing instance (%s) now publishes the outbox", self.holder)
        self._lease_until = started + LEASE_SECONDS if held else 0.0
        LEASE_HELD.set(1 if held else 0)
        self._next_try = 0.0 if held else started + 1
        return held

    async def _send_waiting(self) -> int:
        in_flight = list(self._in_flight)

        def waiting(connection: Connection) -> list[tuple[str, bytes, bytes]]:
            query = select(OutboxRow.invoice_id, OutboxRow.key, OutboxRow.value).where(OutboxRow.published_at.is_(None))
            if in_flight:
                query = query.where(OutboxRow.invoice_id.not_in(in_flight))
            return [tuple(row) for row in connection.execute(query.order_by(OutboxRow.created_at).limit(BATCH))]

        rows = await self.db.read(waiting)
        if rows:
            await asyncio.to_thread(self._send, rows, asyncio.get_running_loop())
        return len(rows)

    def _send(self, rows: list[tuple[str, bytes, bytes]], loop: asyncio.AbstractEventLoop) -> None:
        """In a worker thread: hand the events to the producer. send() blocks while the producer has no metadata
        (Kafka away) and raises after max_block_ms, with that event not handed over: it is sent again later."""
        if self._producer is None:
            self._producer = invoices.producer(self.settings)
        for invoice_id, key, value in rows:
            future = self._producer.send(self.settings.facturation_topic, key=key, value=value)
            self._in_flight[invoice_id] = None
            future.add_both(
                lambda outcome, invoice_id=invoice_id: loop.call_soon_threadsafe(self._done, invoice_id, outcome)
            )

    def _done(self, invoice_id: str, outcome) -> None:
        """On the event loop, when Kafka acknowledged an event or the producer gave up on it."""
        if isinstance(outcome, Exception):
            self.failures += 1
            PUBLISH_FAILURES.inc()
            log.warning("invoice event %s not published (%s); it is sent again", invoice_id, outcome)
            self._in_flight.pop(invoice_id, None)
        else:
            self._acked.append(invoice_id)
        self.wake.set()

    async def _mark_acknowledged(self) -> None:
        if not self._acked:
            return
        acked, self._acked = self._acked, []
        try:
            await self.db.write(
                lambda connection: connection.execute(
                    update(OutboxRow).where(OutboxRow.invoice_id.in_(acked)).values(published_at=_now())
                )
            )
        except BaseException:
            self._acked[:0] = acked
            raise
        for invoice_id in acked:
            self._in_flight.pop(invoice_id, None)
        self.published += len(acked)
        PUBLISHED.inc(len(acked))

    async def waiting(self) -> tuple[int, float]:
        """How many events wait, and the age in seconds of the oldest (0 when none wait)."""

        def count(connection: Connection) -> tuple[int, datetime | None]:
            query = select(func.count(), func.min(OutboxRow.created_at)).where(OutboxRow.published_at.is_(None))
            return tuple(connection.execute(query).one())

        number, oldest = await self.db.read(count)
        age = (_now() - oldest).total_seconds() if oldest else 0.0
        WAITING.set(number)
        OLDEST_AGE.set(age)
        return number, age

    async def health(self) -> tuple[str, str]:
        """Consul's view of the relay: a warning while an event has waited longer than outbox_warning_seconds."""
        number, age = await self.waiting()
        if age > self.settings.outbox_warning_seconds:
            return "warning", f"{number} invoice events wait to be published to Kafka, the oldest for {age:.0f} s"
        return "passing", f"{number} invoice events waiting; {self.published} published since start"


def _report_retry(state: RetryCallState) -> None:
    RELAY_FAILURES.inc()
    failure = state.outcome.exception() if state.outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    log.warning("the outbox relay failed (%s); the events wait in the outbox, retrying in %.1f s", failure, wait)
