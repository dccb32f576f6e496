"""What the dataflows should have computed from FACTURATION as it stands, to compare with their output topics."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shopmesh.runtime import invoices
from shopmesh.runtime.money import format_cents
from shopmesh.runtime.settings import Settings
from tests.kafka_topics import read_topic

WINDOW_SECONDS = 5
#: A window this far behind the latest invoice has surely closed (5 s long, then 5 s for late invoices).
WINDOW_GRACE = timedelta(seconds=30)


@dataclass
class Expected:
    """Every invoice on FACTURATION once (a repeated id counts once, as the dataflows count it)."""

    by_customer: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (cents, count)
    windows: dict[str, tuple[int, int]] = field(default_factory=dict)  # window start -> (cents, count)
    latest: datetime = field(default_factory=lambda: datetime.min.replace(tzinfo=UTC))
    ids: list[str] = field(default_factory=list)  # as read, repeats included


def expected(settings: Settings) -> Expected:
    """From FACTURATION, and from the dead letters: an invoice too late for its window counts in its customer's
    total, not in a window."""
    late = {
        (letter["partition"], letter["offset"])
        for letter in (json.loads(message.value) for message in read_topic(settings, settings.dlq_topic))
        if letter["error"] == "late" and letter["topic"] == settings.facturation_topic
    }
    customers: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    windows: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    found = Expected()
    seen: set[str] = set()
    for message in read_topic(settings, settings.facturation_topic):
        invoice = invoices.parse(message.value)
        found.ids.append(invoice.invoice_id)
        if invoice.invoice_id in seen:
            continue
        seen.add(invoice.invoice_id)
        customers[invoice.customer_name][0] += invoice.amount_cents
        customers[invoice.customer_name][1] += 1
        found.latest = max(found.latest, invoice.issued_at)
        if (message.partition, message.offset) not in late:
            start = int(invoice.issued_at.timestamp()) // WINDOW_SECONDS * WINDOW_SECONDS
            window = windows[invoices.iso_millis(datetime.fromtimestamp(start, UTC))]
            window[0] += invoice.amount_cents
            window[1] += 1
    found.by_customer = {name: (cents, count) for name, (cents, count) in customers.items()}
    found.windows = {start: (cents, count) for start, (cents, count) in windows.items()}
    return found


def latest(settings: Settings, topic: str) -> dict[str, dict]:
    """The latest record of each key of an output topic."""
    return {message.key.decode(): json.loads(message.value) for message in read_topic(settings, topic)}


def customer_counts(settings: Settings) -> dict[str, int]:
    return {name: record["count"] for name, record in latest(settings, settings.total_by_customer_topic).items()}


def as_records(wanted: dict[str, tuple[int, int]]) -> dict[str, tuple[str, int]]:
    return {key: (format_cents(cents), count) for key, (cents, count) in wanted.items()}
