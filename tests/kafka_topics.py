"""Reading a topic as it stands, for tests: every message up to the end offsets seen when reading starts."""

from __future__ import annotations

import json
import time

from kafka import KafkaConsumer, TopicPartition
from shopmesh.runtime.settings import Settings


def read_topic(settings: Settings, topic: str, timeout: float = 30) -> list:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        messages, deadline = [], time.monotonic() + timeout
        while any(consumer.position(p) < ends[p] for p in partitions):
            assert time.monotonic() < deadline, f"could not read {topic} to its end in {timeout} s"
            for batch in consumer.poll(timeout_ms=500).values():
                messages.extend(batch)
        return messages
    finally:
        consumer.close()


def invoice_events(messages) -> list[tuple[object, dict]]:
    """The (message, event) of each message that is an invoice event; the others on a shared topic (a poison
    message someone sent, say) are not the reader's, and skipped."""
    events = []
    for message in messages:
        try:
            event = json.loads(message.value)
        except (TypeError, ValueError):
            continue
        if isinstance(event, dict) and isinstance(event.get("invoice_id"), str):
            events.append((message, event))
    return events


def invoice_ids(messages) -> list[str]:
    return [event["invoice_id"] for _, event in invoice_events(messages)]
