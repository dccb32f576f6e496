"""The fast tier of the dataflows: each whole flow, as `python -m dataflows` builds it, run by Bytewax's run_main
over a TestingSource of Kafka messages into TestingSinks, one per output topic. tests/integration runs them on the
real Kafka, with recovery after kill -9."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, run_main
from prometheus_client import REGISTRY

from dataflows import totals_5s, totals_by_customer
from dataflows.kafka import Edges
from shopmesh.runtime.invoices import Invoice
from shopmesh.runtime.settings import Settings

SETTINGS = Settings()
BASE = datetime(2026, 11, 28, 23, 0, 0, tzinfo=UTC)  # a window's start, in the past (not `future`)


class Topics:
    """Bytewax's testing source and sinks as the dataflow's edges: messages in, records out by topic."""

    def __init__(self, messages: list[KafkaSourceMessage]) -> None:
        self.messages = messages
        self.written: dict[str, list] = {}

    def edges(self) -> Edges:
        return Edges(
            read=lambda flow: op.input("read invoices", flow, TestingSource(self.messages)),
            write=lambda step_id, up, topic: op.output(step_id, up, TestingSink(self.written.setdefault(topic, []))),
            partitions=lambda topic: 3,
        )

    def records(self, topic: str) -> list[tuple[str, dict]]:
        return [(record.key.decode(), json.loads(record.value)) for record in self.written.get(topic, [])]


def _message(raw: bytes, offset: int, partition: int = 0, key: bytes | None = None) -> KafkaSourceMessage:
    return KafkaSourceMessage(key, raw, topic=SETTINGS.facturation_topic, partition=partition, offset=offset)


def _invoices(*made: tuple[str, str, int, float]) -> list[KafkaSourceMessage]:
    """(invoice id, customer, cents, seconds after BASE) each, spread over the three partitions."""
    return [
        _message(
            Invoice(invoice_id, customer, cents, BASE + timedelta(seconds=at)).value(),
            offset,
            partition=offset % 3,
            key=customer.encode(),
        )
        for offset, (invoice_id, customer, cents, at) in enumerate(made)
    ]


def test_totals_5s_sums_each_window_exactly_and_counts_a_repeated_event_once():
    topics = Topics(
        _invoices(
            ("a", "Imane", 1001, 0),
            ("b", "Yassine", 2099, 4.999),
            ("a", "Imane", 1001, 0),
            ("c", "Imane", 5, 5),
            ("d", "Mohamed", 10**12, 12),
        )
    )
    run_main(totals_5s.flow(SETTINGS, topics.edges()))
    windows = dict(topics.records(SETTINGS.total_5s_topic))
    assert windows == {
        "2026-11-28T23:00:00.000Z": {
            "window_start": "2026-11-28T23:00:00.000Z",
            "window_end": "2026-11-28T23:00:05.000Z",
            "total": "31.00",
            "count": 2,
        },
        "2026-11-28T23:00:05.000Z": {
            "window_start": "2026-11-28T23:00:05.000Z",
            "window_end": "2026-11-28T23:00:10.000Z",
            "total": "0.05",
            "count": 1,
        },
        "2026-11-28T23:00:10.000Z": {
            "window_start": "2026-11-28T23:00:10.000Z",
            "window_end": "2026-11-28T23:00:15.000Z",
            "total": "10000000000.00",
            "count": 1,
        },
    }
    assert topics.written[SETTINGS.dlq_topic] == []  # nothing late; totals_by_customer reports the unreadable


def test_totals_by_customer_publishes_each_running_total_and_dead_letters_what_it_cannot_count():
    topics = Topics(
        [
            *_invoices(
                ("a", "Imane", 1250, 0), ("b", "Imane", 1, 1), ("a", "Imane", 1250, 0), ("c", "Yassine", 300, 2)
            ),
            _message(b"not json", 10, key=b"k"),
            _message(
                b'{"invoice_id": "x", "customer_name": "Imane", "amount": -1, "issued_at": "2026-11-28T23:00:00Z"}', 11
            ),
        ]
    )
    run_main(totals_by_customer.flow(SETTINGS, topics.edges()))
    latest = dict(topics.records(SETTINGS.total_by_customer_topic))
    assert latest == {
        "Imane": {"customer_name": "Imane", "total": "12.51", "count": 2, "updated_at": "2026-11-28T23:00:01.000Z"},
        "Yassine": {"customer_name": "Yassine", "total": "3.00", "count": 1, "updated_at": "2026-11-28T23:00:02.000Z"},
    }
    assert len(topics.records(SETTINGS.total_by_customer_topic)) == 3  # the repeat published nothing
    letters = {
        record["offset"]: record
        for _, record in [(None, json.loads(r.value)) for r in topics.written[SETTINGS.dlq_topic]]
    }
    assert letters[10]["error"].startswith("not JSON") and letters[10]["raw"] == "not json"
    assert letters[11]["error"].startswith("amount is negative")
    assert [r.key for r in topics.written[SETTINGS.dlq_topic]] == [b"k", None]


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_dataflows_count_what_they_read_emit_and_dead_letter():
    by_customer = {"dataflow": "totals_by_customer"}
    before = {
        "read": _metric("shopmesh_dataflow_events_read_total", **by_customer),
        "emitted": _metric("shopmesh_dataflow_customer_totals_emitted_total", **by_customer),
        "not_json": _metric("shopmesh_dataflow_dead_letters_total", **by_customer, reason="not_json"),
        "amount": _metric("shopmesh_dataflow_dead_letters_total", **by_customer, reason="amount"),
        "windows": _metric("shopmesh_dataflow_windows_emitted_total", dataflow="totals_5s"),
    }
    bad_amount = (
        b'{"invoice_id": "x", "customer_name": "Imane", "amount": "1.234", "issued_at": "2026-11-28T23:00:00Z"}'
    )
    messages = [
        *_invoices(("a", "Imane", 1001, 0), ("b", "Yassine", 2099, 1), ("c", "Imane", 5, 7)),
        _message(b"\xff not json", 3),
        _message(bad_amount, 4),
    ]
    run_main(totals_by_customer.flow(SETTINGS, Topics(messages).edges()))
    assert _metric("shopmesh_dataflow_events_read_total", **by_customer) - before["read"] == 5
    assert _metric("shopmesh_dataflow_customer_totals_emitted_total", **by_customer) - before["emitted"] == 3
    assert _metric("shopmesh_dataflow_dead_letters_total", **by_customer, reason="not_json") - before["not_json"] == 1
    assert _metric("shopmesh_dataflow_dead_letters_total", **by_customer, reason="amount") - before["amount"] == 1
    # The latest issued_at counted is BASE + 7 s: the lag is now minus that.
    lag = _metric("shopmesh_dataflow_event_time_lag_seconds", **by_customer)
    expected = (datetime.now(UTC) - (BASE + timedelta(seconds=7))).total_seconds()
    assert abs(lag - expected) < 60

    run_main(totals_5s.flow(SETTINGS, Topics(messages).edges()))
    # Two windows close: [0, 5) and [5, 10); the 5-second flow reports no unreadable message (the other one does).
    assert _metric("shopmesh_dataflow_windows_emitted_total", dataflow="totals_5s") - before["windows"] == 2
    assert _metric("shopmesh_dataflow_dead_letters_total", **by_customer, reason="not_json") - before["not_json"] == 1
