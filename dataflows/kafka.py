"""The dataflows' edges on Kafka: invoices in, records and dead letters out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeGuard, cast

import bytewax.connectors.kafka.operators as kop
import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSourceMessage
from bytewax.dataflow import Dataflow, Stream
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client import Counter, Gauge

from dataflows.totals import dead_letter, dead_letter_key
from shopmesh.runtime.invoices import BadInvoice, Invoice, parse, reason_kind
from shopmesh.runtime.settings import Settings

log = logging.getLogger(__name__)

Message = KafkaSourceMessage[bytes | None, bytes | None]

# "dataflow" is the dataflow's name (totals_5s, totals_by_customer); Bytewax itself reports the consumer lag of
# each input partition as bytewax_kafka_consumer_lag.
EVENTS_READ = Counter("shopmesh_dataflow_events_read", "Messages read from the invoice topic.", ("dataflow",))
DEAD_LETTERS = Counter(
    "shopmesh_dataflow_dead_letters",
    "Messages sent to the dead-letter topic, by kind of reason.",
    ("dataflow", "reason"),
)
EVENT_TIME_LAG = Gauge(
    "shopmesh_dataflow_event_time_lag_seconds",
    "Now minus the latest issued_at of the invoices counted (0 before the first).",
    ("dataflow",),
)
#: dataflow -> the latest issued_at counted, in seconds since the epoch.
_latest: dict[str, float] = {}
#: How often librdkafka reports its statistics, from which Bytewax tells the consumer lag.
STATISTICS_MS = "5000"


def dead_lettered(dataflow: str, reason: str) -> None:
    DEAD_LETTERS.labels(dataflow, reason_kind(reason)).inc()


def counted(dataflow: str, invoice: Invoice) -> None:
    """An invoice counted: its issued_at moves the dataflow's event time forward."""
    moment = invoice.issued_at.timestamp()
    if moment > _latest.get(dataflow, 0.0):
        _latest[dataflow] = moment


def _lag(dataflow: str) -> float:
    latest = _latest.get(dataflow)
    return time.time() - latest if latest is not None else 0.0


@dataclass(frozen=True)
class Received:
    """A valid invoice and the message it came in, so that it can still be dead-lettered if it turns out late."""

    invoice: Invoice
    message: Message


@dataclass(frozen=True)
class Edges:
    """Where a dataflow reads its messages and writes its records: Kafka in the mesh (kafka_edges), Bytewax's
    testing source and sinks in the fast tier."""

    #: The input step: the messages of the input topic.
    read: Callable[[Dataflow], Stream[Message]]
    #: An output step: write(step_id, records, topic).
    write: Callable[[str, Stream[KafkaSinkMessage], str], None]
    #: How many partitions a topic has (0 when it cannot be told).
    partitions: Callable[[str], int]


def kafka_edges(settings: Settings) -> Edges:
    def read(flow: Dataflow) -> Stream[Message]:
        consumed = kop.input(
            "read invoices",
            flow,
            brokers=[settings.kafka_bootstrap],
            topics=[settings.facturation_topic],
            add_config={"statistics.interval.ms": STATISTICS_MS},
        )
        # A consumer error (a broker away, say) is no message: it is logged; librdkafka reconnects by itself.
        op.inspect("consumer errors", consumed.errs, lambda _step, error: log.warning("kafka: %s", error.err.str()))
        return consumed.oks

    def write(step_id: str, up: Stream[KafkaSinkMessage], topic: str) -> None:
        # acks=all and idempotence: a record the dataflow wrote is not lost on a broker hiccup, nor written twice
        # by the producer's own retries.
        kop.output(
            step_id,
            up,
            brokers=[settings.kafka_bootstrap],
            topic=topic,
            add_config={"acks": "all", "enable.idempotence": "true", "linger.ms": "5"},
        )

    return Edges(read, write, lambda topic: partition_count(settings, topic))


def invoices(flow: Dataflow, settings: Settings, edges: Edges, report_unreadable: bool) -> Stream[Received]:
    """The valid invoices of the input topic. The others go to the dead-letter topic with their reason when
    report_unreadable: both dataflows read every message, and one of them reporting it is enough."""
    max_skew = timedelta(seconds=settings.analytics_future_seconds)
    name = flow.flow_id
    EVENT_TIME_LAG.labels(name).set_function(lambda: _lag(name))
    checked = op.map("parse", edges.read(flow), lambda message: _check(name, message, max_skew, report_unreadable))
    valid = op.branch("valid?", checked, _is_received)
    if report_unreadable:
        # What is not a Received is the dead letter _check made of it.
        edges.write("write dead letters", cast(Stream[KafkaSinkMessage], valid.falses), settings.dlq_topic)
    return valid.trues


def _is_received(item: Received | KafkaSinkMessage) -> TypeGuard[Received]:
    return isinstance(item, Received)


def _check(dataflow: str, message: Message, max_skew: timedelta, reported: bool) -> Received | KafkaSinkMessage:
    EVENTS_READ.labels(dataflow).inc()
    try:
        return Received(parse(message.value or b"", max_skew=max_skew), message)
    except BadInvoice as reason:
        if reported:
            dead_lettered(dataflow, str(reason))
        return to_dead_letter(str(reason), message)


def to_dead_letter(reason: str, message: Message) -> KafkaSinkMessage:
    """The dead letter of a message: keyed as it was, naming where it was read."""
    return KafkaSinkMessage(
        dead_letter_key(message.key),
        dead_letter(reason, message.value or b"", message.topic or "", message.partition or 0, message.offset or 0),
    )


def partition_count(settings: Settings, topic: str) -> int:
    """How many partitions the topic has; 0 (and a warning) when Kafka cannot say within 10 s."""
    try:
        metadata = AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(topic, timeout=10)
        return len(metadata.topics[topic].partitions)
    except (KafkaException, KeyError) as error:
        log.warning("cannot tell how many partitions %s has (%s): windows go by the partitions seen", topic, error)
        return 0
