from __future__ import annotations

import asyncio
import logging
import random
import signal
import uuid
from datetime import UTC, datetime

from prometheus_client import Counter

from services.facturation_producer import CONSUL_NAME, service_id
from shopmesh.customer.v1 import customer_service_pb2 as customer_pb
from shopmesh.customer.v1 import customer_service_pb2_grpc as customer_grpc
from shopmesh.runtime import invoices, metrics
from shopmesh.runtime.auth import ServiceToken
from shopmesh.runtime.catalogue import part
from shopmesh.runtime.discovery import Registration
from shopmesh.runtime.errors import ServiceError
from shopmesh.runtime.settings import Settings, load
from shopmesh.runtime.upstream import Upstream

log = logging.getLogger("facturation-producer")

#: Used while the customer service cannot be reached.
BUILT_IN_CUSTOMERS = ("Mohamed", "Imane", "Yassine")
NAMES_REFRESH_SECONDS = 30
#: Names the producer picks from: the first this many customers, a bound on its memory and on each refresh.
MAX_NAMES = 20_000

PRODUCED = Counter("shopmesh_invoices_produced", "Invoice events handed to the Kafka producer.")
DELIVERED = Counter("shopmesh_invoices_delivered", "Invoice events Kafka acknowledged.")
UNDELIVERED = Counter("shopmesh_invoices_delivery_failures", "Invoice events the Kafka producer gave up on.")


def _undelivered(error: Exception) -> None:
    UNDELIVERED.inc()
    log.error("an invoice was not delivered: %s", error)


class CustomerNames:
    """Names of the customer service's customers, refreshed now and then; the built-in list when it is away."""

    def __init__(self, settings: Settings) -> None:
        self.customers = Upstream(
            settings, part("customer").consul_name, customer_grpc.CustomerServiceStub, ServiceToken(settings)
        )
        self.names: tuple[str, ...] = BUILT_IN_CUSTOMERS
        self._fetched = float("-inf")

    async def pick(self) -> str:
        now = asyncio.get_running_loop().time()
        if now - self._fetched > NAMES_REFRESH_SECONDS:
            self._fetched = now
            try:
                self.names = await self._fetch() or BUILT_IN_CUSTOMERS
            except ServiceError as error:
                log.warning("customer names unavailable (%s); using the built-in list", error.message)
                self.names = BUILT_IN_CUSTOMERS
        return random.choice(self.names)

    async def _fetch(self) -> tuple[str, ...]:
        """Every customer's name, page by page, up to MAX_NAMES."""
        names: list[str] = []
        token = ""
        while len(names) < MAX_NAMES:
            answer = await self.customers.call(
                "ListCustomers", customer_pb.ListCustomersRequest(page_size=1000, page_token=token)
            )
            names.extend(customer.name for customer in answer.customers)
            token = answer.next_page_token
            if not token:
                break
        return tuple(names)


def invoice(customer_name: str) -> invoices.Invoice:
    return invoices.Invoice(
        invoice_id=uuid.uuid4().hex,
        customer_name=customer_name,
        amount_cents=random.randint(1_000, 200_000),
        issued_at=datetime.now(UTC),
    )


async def run(settings: Settings) -> None:
    announced = metrics.serve(settings.host, settings.metrics_port)
    registration = Registration(
        settings, CONSUL_NAME, 0, tags=("kafka",), ttl="10s", service_id=service_id(settings), meta=announced
    )
    await registration.register()
    heartbeat = asyncio.create_task(registration.keep_passing(3))
    names = CustomerNames(settings)
    names.customers.start()
    producer = await asyncio.to_thread(invoices.producer, settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    period, sent = 1 / settings.facturation_rate, 0
    next_tick = loop.time()
    log.info("sending %.1f invoice(s) per second to %s", settings.facturation_rate, settings.facturation_topic)
    while not stopping.is_set():
        event = invoice(await names.pick())
        sending = producer.send(settings.facturation_topic, key=event.key(), value=event.value())
        sending.add_callback(lambda _metadata: DELIVERED.inc())
        sending.add_errback(_undelivered)
        PRODUCED.inc()
        sent += 1
        if sent % 60 == 0:
            log.info("%d invoices sent", sent)
        next_tick += period
        try:
            await asyncio.wait_for(stopping.wait(), max(0.0, next_tick - loop.time()))
        except TimeoutError:
            pass
    log.info("stopping after %d invoices", sent)
    heartbeat.cancel()
    await asyncio.to_thread(producer.close, 10)
    await names.customers.close()
    await registration.deregister()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(load()))
