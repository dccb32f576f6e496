"""The dataflows' edges on Kafka: invoices in, records and dead letters out."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import bytewax.connectors.kafka.operators as kop
import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSourceMessage
from bytewax.dataflow import Dataflow, Stream
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from dataflows.totals import dead_letter, dead_letter_key
from shopmesh.runtime.invoices import BadInvoice, Invoice, parse
from shopmesh.runtime.settings import Settings

log = logging.getLogger(__name__)

Message = KafkaSourceMessage[bytes | None, bytes | None]


@dataclass(frozen=True)
class Received:
    """A valid invoice and the message it came in, so that it can still be dead-lettered if it turns out late."""

    invoice: Invoice
    message: Message


def invoices(flow: Dataflow, settings: Settings, report_unreadable: bool) -> Stream[Received]:
    """The valid invoices of the input topic. The others go to the dead-letter topic with their reason when
    report_unreadable: both dataflows read every message, and one of them reporting it is enough."""
    consumed = kop.input("read invoices", flow, brokers=[settings.kafka_bootstrap],
                         topics=[settings.facturation_topic])
    max_skew = timedelta(seconds=settings.analytics_future_seconds)
    checked = op.map("parse", consumed.oks, lambda message: _check(message, max_skew))
    valid = op.branch("valid?", checked, lambda item: isinstance(item, Received))
    if report_unreadable:
        write("write dead letters", valid.falses, settings.dlq_topic, settings)
    # A consumer error (a broker away, say) is no message: it is logged; librdkafka reconnects by itself.
    op.inspect("consumer errors", consumed.errs, lambda _step, error: log.warning("kafka: %s", error.err.str()))
    return valid.trues


def _check(message: Message, max_skew: timedelta) -> Received | KafkaSinkMessage:
    try:
        return Received(parse(message.value or b"", max_skew=max_skew), message)
    except BadInvoice as reason:
        return to_dead_letter(str(reason), message)


def to_dead_letter(reason: str, message: Message) -> KafkaSinkMessage:
    """The dead letter of a message: keyed as it was, naming where it was read."""
    return KafkaSinkMessage(dead_letter_key(message.key), dead_letter(reason, message.value or b"", message.topic or "",
                                                     message.partition or 0, message.offset or 0))


def write(step_id: str, up: Stream[KafkaSinkMessage], topic: str, settings: Settings) -> None:
    # acks=all and idempotence: a record the dataflow wrote is not lost on a broker hiccup, nor written twice by
    # the producer's own retries.
    kop.output(step_id, up, brokers=[settings.kafka_bootstrap], topic=topic,
               add_config={"acks": "all", "enable.idempotence": "true", "linger.ms": "5"})


def partition_count(settings: Settings, topic: str) -> int:
    """How many partitions the topic has; 0 (and a warning) when Kafka cannot say within 10 s."""
    try:
        metadata = AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(topic, timeout=10)
        return len(metadata.topics[topic].partitions)
    except (KafkaException, KeyError) as error:
        log.warning("cannot tell how many partitions %s has (%s): windows go by the partitions seen", topic, error)
        return 0
