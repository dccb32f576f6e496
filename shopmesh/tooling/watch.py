"""`shopmesh watch`: the dataflows' output topics as a live table: the latest 5-second windows, and every
customer with their running total."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from rich.console import Group
from rich.live import Live
from rich.table import Table

from kafka import KafkaConsumer, TopicPartition
from shopmesh.runtime.settings import Settings

#: How rich aligns a column.
LEFT: Literal["left"] = "left"
RIGHT: Literal["right"] = "right"


@dataclass
class View:
    """The latest record of every window and of every customer. Both topics are keyed changelogs, so a record
    read again after a dataflow's restart replaces itself."""

    windows_shown: int = 12
    windows: dict[str, dict] = field(default_factory=dict)
    customers: dict[str, dict] = field(default_factory=dict)
    records: int = 0

    def take(self, topic: str, value: bytes, settings: Settings) -> None:
        try:
            record = json.loads(value)
            if topic == settings.total_5s_topic:
                self.windows[record["window_start"]] = record
            else:
                self.customers[record["customer_name"]] = record
        except (ValueError, KeyError, TypeError):
            return  # not a dataflow's record: nothing to show
        self.records += 1

    def render(self) -> Group:
        windows = Table(title=f"5-second windows (latest {self.windows_shown})", title_justify="left")
        for column, justify in (("window start", LEFT), ("end", LEFT), ("invoices", RIGHT), ("total", RIGHT)):
            windows.add_column(column, justify=justify)
        for start in sorted(self.windows)[-self.windows_shown :]:
            window = self.windows[start]
            windows.add_row(start, window["window_end"], str(window["count"]), window["total"])
        customers = Table(title=f"Customers ({len(self.customers)})", title_justify="left")
        for column, justify in (("customer", LEFT), ("invoices", RIGHT), ("total", RIGHT), ("updated at", LEFT)):
            customers.add_column(column, justify=justify)
        # Biggest spenders first; Decimal, since the totals are decimal strings.
        for name, record in sorted(self.customers.items(), key=lambda item: -Decimal(item[1]["total"])):
            customers.add_row(name, str(record["count"]), record["total"], record["updated_at"])
        return Group(windows, customers)


def _consumer(settings: Settings, topics: Iterable[str]) -> KafkaConsumer:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, request_timeout_ms=10000
    )
    partitions = [
        TopicPartition(topic, partition)
        for topic in topics
        for partition in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    return consumer


def _poll(settings: Settings, view: View, consumer: KafkaConsumer, seconds: float) -> None:
    for partition, messages in consumer.poll(timeout_ms=int(seconds * 1000)).items():
        for message in messages:
            view.take(partition.topic, message.value, settings)


def read_all(settings: Settings, view: View, consumer: KafkaConsumer) -> None:
    """Take every record up to the current end of the topics."""
    end = consumer.end_offsets(list(consumer.assignment()))
    while any(consumer.position(partition) < offset for partition, offset in end.items()):
        _poll(settings, view, consumer, 0.5)


def watch(settings: Settings, view: View, once: bool, refresh_seconds: float = 1.0) -> View:
    topics = (settings.total_5s_topic, settings.total_by_customer_topic)
    consumer = _consumer(settings, topics)
    try:
        read_all(settings, view, consumer)
        if once:
            return view
        with Live(view.render(), auto_refresh=False) as live:
            while True:
                deadline = time.monotonic() + refresh_seconds
                while (left := deadline - time.monotonic()) > 0:
                    _poll(settings, view, consumer, left)
                live.update(view.render(), refresh=True)
    finally:
        consumer.close()
