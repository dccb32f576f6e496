"""Invoice events on Kafka, as shared/CONTRACT.md gives them: the topics, and the FACTURATION message shape.

The amount is written as a JSON number with two decimals straight from integer cents, so it never passes
through binary floating point on the way out."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from shopmesh.runtime.money import format_cents
from shopmesh.runtime.settings import Settings

log = logging.getLogger(__name__)

FACTURATION = "FACTURATION"
TOTAL_5S = "FACTURATION_TOTAL_5S"
TOTAL_BY_CUSTOMER = "FACTURATION_TOTAL_BY_CUSTOMER"
DLQ = "FACTURATION_DLQ"
#: topic -> partitions
TOPICS = {FACTURATION: 3, TOTAL_5S: 1, TOTAL_BY_CUSTOMER: 1, DLQ: 1}


@dataclass(frozen=True)
class Invoice:
    invoice_id: str
    customer_name: str
    amount_cents: int
    issued_at: datetime

    def key(self) -> bytes:
        return self.customer_name.encode()

    def value(self) -> bytes:
        return (
            f'{{"invoice_id": {json.dumps(self.invoice_id)}, "customer_name": {json.dumps(self.customer_name)}, '
            f'"amount": {format_cents(self.amount_cents)}, "issued_at": {json.dumps(iso_millis(self.issued_at))}}}'
        ).encode()


def iso_millis(moment: datetime) -> str:
    """2026-11-28T23:00:00.123Z"""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def producer(settings: Settings) -> KafkaProducer:
    """An idempotent producer that waits for every in-sync replica and retries until its delivery timeout: no
    invoice is lost on a broker outage shorter than that, and the broker drops the producer's own repeats, so none
    is written twice either. max_block_ms bounds how long send() waits for Kafka's metadata."""
    return KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True,
                         linger_ms=5, request_timeout_ms=10000, delivery_timeout_ms=600_000, max_block_ms=10000)


def ensure_topics(settings: Settings) -> list[str]:
    """Create the contract's topics that are missing; return the ones created."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000)
    try:
        missing = [name for name in TOPICS if name not in set(admin.list_topics())]
        created = []
        for name in missing:
            try:
                admin.create_topics([NewTopic(name, num_partitions=TOPICS[name], replication_factor=1)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another process created it meanwhile
        if created:
            log.info("created topics %s", ", ".join(created))
        return created
    finally:
        admin.close()
