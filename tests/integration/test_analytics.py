"""The Bytewax dataflows on the real Kafka: exact window and customer totals over deterministic invoices, dead
letters, recovery after kill -9, and the mesh's own dataflows on the live FACTURATION stream."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from dataflows import CONSUL_NAMES
from dataflows.totals import EPOCH, WINDOW
from kafka import KafkaProducer
from shopmesh.runtime import invoices
from shopmesh.runtime.settings import Settings
from shopmesh.tooling.dataflow_runs import RunningDataflow, Topics, own_topics, stopped_at_the_end
from tests.conftest import shopmesh, wait_for
from tests.kafka_topics import read_topic

#: Aligned to a window: the invoices below fall in the windows starting at BASE, BASE + 5 s and BASE + 10 s.
BASE = datetime(2026, 1, 1, tzinfo=UTC)
CUSTOMERS = ("Imane", "Mohamed", "Yassine")


@pytest.fixture
def topics(mesh) -> Iterator[Topics]:
    with own_topics(mesh) as made:
        yield made


@pytest.fixture
def dataflows() -> Iterator[list[RunningDataflow]]:
    with stopped_at_the_end() as started:
        yield started


def _invoice(customer: str, cents: int, at: datetime, invoice_id: str | None = None) -> invoices.Invoice:
    return invoices.Invoice(invoice_id or uuid.uuid4().hex, customer, cents, at)


def deterministic_invoices() -> list[invoices.Invoice]:
    """Three windows, three customers, two invoices each, one exactly on a window's start, one just before its
    end; amounts with cents that binary floating point would not sum exactly."""
    made = []
    for window in range(3):
        for number, customer in enumerate(CUSTOMERS):
            start = BASE + timedelta(seconds=5 * window)
            made.append(_invoice(customer, 10 * (window + 1) + number + 1, start + timedelta(seconds=number)))
            made.append(_invoice(customer, 1_000_00 * (number + 1) + 1, start + timedelta(seconds=4.999)))
    return made


#: The bad messages of each kind, with (a part of) the reason the dataflow gives.
BAD_MESSAGES = [
    (b"this is not JSON", "not JSON"),
    (b'{"invoice_id": "x", "customer_name": "Imane", "issued_at": "2026-01-01T00:00:01Z"}', "missing field amount"),
    (
        b'{"invoice_id": "x", "customer_name": "Imane", "amount": -3.50, "issued_at": "2026-01-01T00:00:01Z"}',
        "amount is negative",
    ),
    (
        b'{"invoice_id": "x", "customer_name": "Imane", "amount": "ten", "issued_at": "2026-01-01T00:00:01Z"}',
        "amount is not numeric",
    ),
    (
        b'{"invoice_id": "x", "customer_name": "Imane", "amount": 1.00, "issued_at": "tomorrow"}',
        "issued_at is not an ISO 8601 timestamp",
    ),
]


def _send(settings: Settings, topic: str, messages: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
    """Send (key, value) pairs in order, each acknowledged; return their (partition, offset)."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        return [
            (meta.partition, meta.offset)
            for meta in (producer.send(topic, key=key, value=value).get(30) for key, value in messages)
        ]
    finally:
        producer.close()


def _latest_by_key(settings: Settings, topic: str) -> dict[str, dict]:
    return {message.key.decode(): json.loads(message.value) for message in read_topic(settings, topic)}


def _expected_customers(made: list[invoices.Invoice]) -> dict[str, tuple[str, int]]:
    sums: dict[str, list] = defaultdict(lambda: [Decimal("0.00"), 0])
    for invoice in made:
        sums[invoice.customer_name][0] += Decimal(invoice.amount_cents) / 100
        sums[invoice.customer_name][1] += 1
    return {name: (f"{total:.2f}", count) for name, (total, count) in sums.items()}


@dataclass(frozen=True)
class DeterministicRun:
    topics: Topics
    #: every valid invoice sent, the late one included
    invoices: list[invoices.Invoice]
    late: invoices.Invoice
    #: (key, value) -> (partition, offset)
    sent: dict[tuple[bytes, bytes], tuple[int, int]]


def _window_totals(settings: Settings, topics: Topics) -> dict[str, dict]:
    return _latest_by_key(settings, topics.total_5s)


@pytest.fixture(scope="module")
def deterministic_run(mesh, tmp_path_factory) -> Iterator[DeterministicRun]:
    """Both dataflows over the deterministic invoices, one of them repeated, with the bad messages between them;
    then, once the three windows have closed, an invoice for the first."""
    with own_topics(mesh) as topics, stopped_at_the_end() as dataflows:
        var_dir = tmp_path_factory.mktemp("deterministic")
        # Longer than the 15 s the invoices span: however the three partitions interleave, none is late.
        for name in CONSUL_NAMES:
            dataflows.append(RunningDataflow(name, topics, var_dir, late_seconds="20", snapshot_seconds="1").start())
        made = deterministic_invoices()
        messages = [(invoice.key(), invoice.value()) for invoice in made]
        messages.insert(4, messages[2])  # published twice, as billing's outbox may after a crash
        for index, (raw, _) in enumerate(BAD_MESSAGES):
            messages.insert(3 * index + 1, (b"bad-%d" % index, raw))
        sent = dict(zip(messages, _send(mesh, topics.input, messages), strict=True))
        wait_for(lambda: len(_window_totals(mesh, topics)) >= 3, 90, "three closed windows")
        late = _invoice("Imane", 999, BASE + timedelta(seconds=1))
        sent.update(
            zip([(late.key(), late.value())], _send(mesh, topics.input, [(late.key(), late.value())]), strict=False)
        )
        yield DeterministicRun(topics, [*made, late], late, sent)


def test_5_second_windows_have_exact_totals_and_counts(mesh, deterministic_run):
    on_time, topics = deterministic_run.invoices[:-1], deterministic_run.topics
    expected = {}
    for window in range(3):
        start = BASE + timedelta(seconds=5 * window)
        inside = [invoice for invoice in on_time if start <= invoice.issued_at < start + timedelta(seconds=5)]
        expected[invoices.iso_millis(start)] = {
            "window_start": invoices.iso_millis(start),
            "window_end": invoices.iso_millis(start + timedelta(seconds=5)),
            "total": f"{sum(Decimal(invoice.amount_cents) / 100 for invoice in inside):.2f}",
            "count": len(inside),
        }
    assert _window_totals(mesh, topics) == expected
    # By hand: 0.21 + 0.22 + 0.23 + 1000.01 + 2000.01 + 3000.01
    assert expected["2026-01-01T00:00:05.000Z"] == {
        "window_start": "2026-01-01T00:00:05.000Z",
        "window_end": "2026-01-01T00:00:10.000Z",
        "total": "6000.69",
        "count": 6,
    }


def test_an_invoice_for_a_closed_window_is_dead_lettered_as_late(mesh, deterministic_run):
    topics, late = deterministic_run.topics, deterministic_run.late
    partition, offset = deterministic_run.sent[(late.key(), late.value())]
    letters = wait_for(
        lambda: [json.loads(m.value) for m in read_topic(mesh, topics.dlq) if json.loads(m.value)["error"] == "late"],
        60,
        "the late invoice's dead letter",
    )
    assert letters == [
        {"error": "late", "raw": late.value().decode(), "topic": topics.input, "partition": partition, "offset": offset}
    ]
    first = _window_totals(mesh, topics)["2026-01-01T00:00:00.000Z"]
    assert first["count"] == 6  # the window was not opened again for it


def test_per_customer_totals_are_exact_and_a_repeated_invoice_counts_once(mesh, deterministic_run):
    topics = deterministic_run.topics
    expected = _expected_customers(deterministic_run.invoices)
    latest = wait_for(
        lambda: (
            (found := _latest_by_key(mesh, topics.by_customer))
            and all(found.get(name, {}).get("count") == count for name, (_, count) in expected.items())
            and found
        ),
        60,
        "every customer's final count",
    )
    assert {name: (record["total"], record["count"]) for name, record in latest.items()} == expected
    assert latest["Yassine"]["updated_at"] == "2026-01-01T00:00:14.999Z"


def test_each_kind_of_bad_message_is_dead_lettered_with_its_reason_and_origin(mesh, deterministic_run):
    topics, sent = deterministic_run.topics, deterministic_run.sent

    def unreadable() -> list:
        return [m for m in read_topic(mesh, topics.dlq) if json.loads(m.value)["error"] != "late"]

    letters = wait_for(
        lambda: (found := unreadable()) and len(found) >= len(BAD_MESSAGES) and found, 60, "the dead letters"
    )
    time.sleep(2)  # the other dataflow would have reported them by now too
    assert len(unreadable()) == len(BAD_MESSAGES)  # each reported once, by one dataflow
    by_key = {message.key: json.loads(message.value) for message in letters}
    for index, (raw, reason) in enumerate(BAD_MESSAGES):
        key = b"bad-%d" % index
        letter = by_key[key]
        partition, offset = sent[(key, raw)]
        assert reason in letter["error"]
        assert (letter["raw"], letter["topic"], letter["partition"], letter["offset"]) == (
            raw.decode(),
            topics.input,
            partition,
            offset,
        )


def _committed_epoch(store) -> int:
    """The latest epoch Bytewax has committed to the recovery store: a restart resumes from it."""
    epochs = []
    for part in store.glob("part-*.sqlite3"):
        with sqlite3.connect(f"file:{part}?mode=ro", uri=True) as connection:
            epochs.append(connection.execute("SELECT COALESCE(MAX(commit_epoch), 0) FROM commits").fetchone()[0])
    return max(epochs, default=0)


def test_a_killed_dataflow_resumes_from_its_snapshot_and_counts_each_invoice_once(mesh, topics, dataflows, tmp_path):
    dataflow = RunningDataflow("totals_by_customer", topics, tmp_path, snapshot_seconds="1").start()
    dataflows.append(dataflow)
    now = datetime.now(UTC)
    made = [
        _invoice(CUSTOMERS[number % 3], 1 + number * 37 % 10_000, now + timedelta(milliseconds=number))
        for number in range(600)
    ]
    sender = threading.Thread(
        target=lambda: [
            (
                _send(mesh, topics.input, [(invoice.key(), invoice.value()) for invoice in made[start : start + 30]]),
                time.sleep(0.2),
            )
            for start in range(0, len(made), 30)
        ]
    )
    sender.start()
    wait_for(lambda: len(read_topic(mesh, topics.by_customer)) >= 150, 60, "the dataflow to be well under way")
    store = tmp_path / "recovery" / "totals_by_customer"
    committed = _committed_epoch(store)
    wait_for(lambda: _committed_epoch(store) > committed, 30, "a snapshot committed after that")
    dataflow.kill()
    resumed_from = len(read_topic(mesh, topics.by_customer))
    dataflow.start()
    sender.join()
    expected = _expected_customers(made)
    wait_for(
        lambda: all(
            _latest_by_key(mesh, topics.by_customer).get(name, {}).get("count") == count
            for name, (_, count) in expected.items()
        ),
        90,
        "every customer's final count",
    )
    after_restart = [json.loads(message.value) for message in read_topic(mesh, topics.by_customer)[resumed_from:]]
    latest = _latest_by_key(mesh, topics.by_customer)
    assert {name: (record["total"], record["count"]) for name, record in latest.items()} == expected
    # Started afresh it would count from 1 again; resumed, it goes on from the counts of its last snapshot.
    assert min(record["count"] for record in after_restart) > 1, dataflow.log()


def test_a_stopped_dataflow_leaves_consul_and_exits_cleanly(mesh, topics, dataflows, tmp_path):
    dataflow = RunningDataflow("totals_5s", topics, tmp_path).start()
    service_id = f"analytics-totals-5s-{mesh.host}-{topics.input}"
    wait_for(
        lambda: service_id in httpx.get(f"{mesh.consul_url}/v1/agent/services").json(),
        30,
        "the dataflow's registration",
    )
    assert dataflow.stop() == 0, dataflow.log()
    assert service_id not in httpx.get(f"{mesh.consul_url}/v1/agent/services").json()


def test_the_mesh_runs_both_dataflows_registered_in_consul_with_ttl_checks(mesh):
    for name in CONSUL_NAMES.values():
        entries = httpx.get(f"{mesh.consul_url}/v1/health/service/{name}").json()
        checks = [
            (check["Type"], check["Status"])
            for entry in entries
            for check in entry["Checks"]
            if check["ServiceName"] and entry["Service"]["ID"].endswith("-facturation")
        ]
        assert checks == [("ttl", "passing")], name


def test_the_mesh_publishes_live_5_second_totals_of_the_producers_invoices(mesh):
    def recent_window():
        windows = [json.loads(m.value) for m in read_topic(mesh, mesh.total_5s_topic)]
        recent = [
            w for w in windows if datetime.fromisoformat(w["window_end"]) > datetime.now(UTC) - timedelta(seconds=20)
        ]
        return recent and recent[-1]

    window = wait_for(recent_window, 30, "a window closed in the last 20 s")
    assert window["count"] >= 1 and Decimal(window["total"]) > 0


def test_every_bill_counts_in_its_customers_running_total(mesh, billing, tokens):
    bill = billing(quantity=2)
    customer = bill["customer"]
    bills, page = [], ""
    while True:  # the session's other tests bill the same customer
        answer = httpx.get(
            f"{mesh.gateway_url}/v1/bills", params={"pageSize": 100, "pageToken": page}, headers=tokens.header()
        ).json()
        bills += [b for b in answer.get("bills", []) if b["customerId"] == customer["id"]]
        if not (page := answer.get("nextPageToken")):
            break
    expected = (f"{sum(Decimal(b['total']) for b in bills):.2f}", len(bills))
    record = wait_for(
        lambda: (
            (found := _latest_by_key(mesh, mesh.total_by_customer_topic).get(customer["name"]))
            and found["count"] == len(bills)
            and found
        ),
        60,
        "the customer's running total",
    )
    assert (record["total"], record["count"]) == expected


def test_watch_shows_the_latest_windows_and_the_customers_totals(mesh):
    latest = _latest_by_key(mesh, mesh.total_by_customer_topic)
    shown = shopmesh("watch", "--once", "--windows", "3", env={**os.environ, "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert "5-second windows (latest 3)" in shown.stdout and f"Customers ({len(latest)})" in shown.stdout
    some_customer = next(iter(latest.values()))
    assert some_customer["customer_name"] in shown.stdout


#: Messages that stopped a dataflow before (each made it exit 1, and crash again on restart), and one from the
#: far future that moved the windows' clock so that every current invoice was late; each with its DLQ reason.
POISON = [
    (
        b'{"invoice_id": "p1", "customer_name": "Imane", "amount": '
        + b"9" * 5000
        + b', "issued_at": "2026-01-01T00:00:01Z"}',
        "not JSON",
    ),
    (
        b'{"invoice_id": "p2", "customer_name": "Imane", "amount": 1, "issued_at": "9999-12-31T23:00:00-23:59"}',
        "issued_at is out of range",
    ),
    (b'{"invoice_id": "p3", "customer_name": "Imane", "amount": 1, "issued_at": "2999-01-01T00:00:00Z"}', "future"),
    (b"\xff\xfe" + b"x" * 500_000, "not JSON"),
]


def test_poison_messages_go_to_the_dlq_and_the_dataflows_keep_exact_totals(mesh, topics, dataflows, tmp_path):
    for name in CONSUL_NAMES:
        dataflows.append(RunningDataflow(name, topics, tmp_path, late_seconds="3", snapshot_seconds="1").start())
    now = datetime.now(UTC).replace(microsecond=0)
    before = [_invoice(CUSTOMERS[n % 3], 100 + n, now + timedelta(milliseconds=10 * n)) for n in range(30)]
    after = [_invoice(CUSTOMERS[n % 3], 7 + n, now + timedelta(seconds=1, milliseconds=10 * n)) for n in range(30)]
    _send(mesh, topics.input, [(invoice.key(), invoice.value()) for invoice in before])
    poison = _send(mesh, topics.input, [(b"poison", raw) for raw, _ in POISON])
    _send(mesh, topics.input, [(invoice.key(), invoice.value()) for invoice in after])

    expected = _expected_customers(before + after)
    wait_for(
        lambda: (
            {
                name: (record["total"], record["count"])
                for name, record in _latest_by_key(mesh, topics.by_customer).items()
            }
            == expected
        ),
        90,
        "every customer's total over the valid invoices",
    )
    # The future invoice did not move the windows' clock: the current invoices are all counted in their windows.
    total = sum(invoice.amount_cents for invoice in before + after)
    wait_for(
        lambda: sum(round(Decimal(record["total"]) * 100) for record in _window_totals(mesh, topics).values()) == total,
        90,
        "the windows to total every invoice",
    )
    assert sum(record["count"] for record in _window_totals(mesh, topics).values()) == len(before + after)
    letters = [json.loads(message.value) for message in read_topic(mesh, topics.dlq)]
    for (_, reason), (partition, offset) in zip(POISON, poison, strict=True):
        found = [letter for letter in letters if (letter["partition"], letter["offset"]) == (partition, offset)]
        assert len(found) == 1 and found[0]["error"].startswith(reason), (reason, found)
    assert not [letter for letter in letters if letter["error"] == "late"], "no current invoice may be late"
    assert all(dataflow.process.poll() is None for dataflow in dataflows), [d.log()[-2000:] for d in dataflows]


def test_catching_up_a_backlog_gives_exact_windows_with_the_default_wait(mesh, topics, dataflows, tmp_path):
    """Kafka's partitions are read a batch (1,000 messages) at a time: over a backlog, one partition runs tens of
    seconds of event time ahead of the others. The windows close on the event time every partition has reached,
    so none of the others' invoices is late, with the default 5 s wait."""
    start = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    start -= timedelta(seconds=start.second % 5)
    made = [_invoice(f"Backlog {n % 12}", 1 + n % 997, start + timedelta(milliseconds=10 * n)) for n in range(18_000)]
    producer = KafkaProducer(bootstrap_servers=mesh.kafka_bootstrap, acks="all", linger_ms=20)
    for invoice in made:
        producer.send(topics.input, key=invoice.key(), value=invoice.value())
    producer.flush(120)
    producer.close()
    dataflows.append(RunningDataflow("totals_5s", topics, tmp_path).start())  # the default wait, 5 s

    expected: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
    for invoice in made:
        key = invoices.iso_millis(window_of(invoice.issued_at))
        total, count = expected[key]
        expected[key] = (total + invoice.amount_cents, count + 1)
    last_window = max(expected)

    def windows() -> dict[str, tuple[int, int]]:
        return {
            key: (round(Decimal(record["total"]) * 100), record["count"])
            for key, record in _window_totals(mesh, topics).items()
        }

    # The last window closes once the watermark passes it: the flow's clock moves on with system time.
    wait_for(lambda: last_window in windows(), 180, "the backlog's last window")
    assert read_topic(mesh, topics.dlq) == [], "no invoice of the backlog may be late"
    assert windows() == dict(expected)


def window_of(moment: datetime) -> datetime:
    return EPOCH + (moment - EPOCH) // WINDOW * WINDOW
