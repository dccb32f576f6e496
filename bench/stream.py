"""Throughput of each dataflow over a pre-loaded topic, and end-to-end latency at a steady rate.

Run against a running mesh (`make up`):  .venv/bin/python -m bench.stream [--events 1000000] [--rate 1000]

1. Loads --events invoices (100 customers, 1,000 per second of event time) into a topic of the bench's own
   with FACTURATION's 3 partitions, then runs each dataflow (`python -m dataflows NAME`, one worker, recovery
   on, as the mesh runs it) over it and prints events/s from its start to its last output. Each run's output is
   then checked against totals computed from the bench's own input (every 5-second window, every customer's
   total, nothing dead-lettered): a run whose output is wrong prints no figure, but what was wrong.
2. Runs totals_by_customer on fresh topics, sends --rate invoices/s for --seconds, and prints p50/p99 of the
   time from an invoice's `issued_at` (its production) to the moment its customer's new total is read.
The bench's topics are deleted at the end; the mesh's own topics are not touched.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from dataflows.totals import EPOCH, WINDOW, window_start
from shopmesh.runtime.invoices import Invoice, iso_millis
from shopmesh.runtime.settings import Settings, load
from shopmesh.tooling.dataflow_runs import RunningDataflow, Topics, own_topics

CUSTOMERS = [f"customer-{number:03d}" for number in range(100)]
#: The mesh's default: windows close on the event time every partition has reached, so a backlog needs no more.
LATE_SECONDS = 5


class WrongOutput(SystemExit):
    """The dataflow's output differs from the totals of the input: no figure is printed for such a run."""


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def window_start_of(moment: datetime) -> datetime:
    return window_start((moment - EPOCH) // WINDOW)


def _producer(settings: Settings, linger_ms: int = 20) -> Producer:
    return Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "linger.ms": linger_ms,
            "acks": "all",
            "queue.buffering.max.messages": 1_000_000,
        }
    )


class Expected:
    """What the dataflows must write for the invoices sent: each window's and each customer's total and count."""

    def __init__(self) -> None:
        self.windows: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
        self.customers: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
        self.last = EPOCH

    def add(self, invoice: Invoice) -> None:
        for table, key in (
            (self.windows, iso_millis(window_start_of(invoice.issued_at))),
            (self.customers, invoice.customer_name),
        ):
            total, count = table[key]
            table[key] = (total + invoice.amount_cents, count + 1)
        self.last = max(self.last, invoice.issued_at)


def preload(settings: Settings, topic: str, events: int, start: datetime) -> Expected:
    """Send `events` invoices, 1,000 per second of event time from `start`; return what they must total."""
    producer = _producer(settings)
    expected = Expected()
    began = time.perf_counter()
    for number in range(events):
        invoice = Invoice(
            uuid.uuid4().hex,
            CUSTOMERS[number % len(CUSTOMERS)],
            100 + number % 10_000,
            start + timedelta(milliseconds=number),
        )
        expected.add(invoice)
        while True:
            try:
                producer.produce(topic, key=invoice.key(), value=invoice.value())
                break
            except BufferError:
                producer.poll(0.05)
        if number % 100_000 == 99_999:
            say(f"  {number + 1:,} sent")
    producer.flush(120)
    say(f"loaded {events:,} invoices in {time.perf_counter() - began:.1f} s")
    return expected


def read_all(settings: Settings, topic: str) -> list:
    """Every record of a one-partition topic, up to its end when reading starts."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"bench-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    try:
        end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
        consumer.assign([TopicPartition(topic, 0, 0)])
        records: list = []
        while len(records) < end:
            records += [message for message in consumer.consume(10_000, 1.0) if message.error() is None]
        return records
    finally:
        consumer.close()


def _latest(settings: Settings, topic: str, key_field: str) -> dict[str, tuple[int, int]]:
    latest = {}
    for record in read_all(settings, topic):
        value = json.loads(record.value())
        latest[value[key_field]] = (int(Decimal(value["total"]) * 100), value["count"])
    return latest


def check(settings: Settings, name: str, topics: Topics, expected: Expected) -> None:
    """Raise WrongOutput unless the dataflow's records are exactly the input's totals, with no dead letter."""
    if name == "totals_5s":
        got, wanted, what = _latest(settings, topics.total_5s, "window_start"), expected.windows, "windows"
    else:
        got, wanted, what = _latest(settings, topics.by_customer, "customer_name"), expected.customers, "customers"
    wrong = sorted(key for key in set(got) | set(wanted) if got.get(key) != wanted.get(key))
    letters = read_all(settings, topics.dlq)
    if wrong or letters:
        raise WrongOutput(
            f"{name}: the output is wrong, so no figure: {len(wrong)} of {len(wanted)} {what} differ "
            f"(first: {wrong[:3]}, e.g. {[(got.get(k), wanted.get(k)) for k in wrong[:3]]}), "
            f"{len(letters)} dead letters"
        )


def throughput(
    settings: Settings, name: str, topics: Topics, events: int, records_when_done: int, expected: Expected
) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-") as var_dir:
        dataflow = RunningDataflow(name, topics, Path(var_dir), late_seconds=str(LATE_SECONDS)).start()
        output = topics.total_5s if name == "totals_5s" else topics.by_customer
        # One client for the whole run: the loop below only asks it for the output's end offset.
        offsets = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "bench-offsets"})
        began = time.perf_counter()
        first = None
        try:
            while (
                records := offsets.get_watermark_offsets(TopicPartition(output, 0), timeout=10)[1]
            ) < records_when_done:
                if records and first is None:
                    first = time.perf_counter() - began
                if dataflow.running.poll() is not None:
                    raise SystemExit(f"{name} exited:\n{dataflow.log()[-3000:]}")
                time.sleep(0.2)
            elapsed = time.perf_counter() - began
            # The windows after the last closed one close as the clock moves on: all of them are checked.
            everything = len(expected.windows) if name == "totals_5s" else records_when_done
            deadline = time.monotonic() + 60
            while offsets.get_watermark_offsets(TopicPartition(output, 0), timeout=10)[1] < everything:
                if time.monotonic() > deadline:
                    break  # check() names what is missing
                time.sleep(0.5)
        finally:
            offsets.close()
            dataflow.stop()
    check(settings, name, topics, expected)
    say(
        f"{name:<20} {events:,} invoices in {elapsed:.1f} s: {events / elapsed:,.0f} events/s "
        f"(first output after {first or 0:.1f} s, start-up included)"
    )


def latency(settings: Settings, rate: int, seconds: float) -> None:
    with own_topics(settings) as topics, tempfile.TemporaryDirectory(prefix="bench-") as var_dir:
        dataflow = RunningDataflow("totals_by_customer", topics, Path(var_dir)).start()
        consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"bench-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topics.by_customer])
        latencies: list[float] = []
        done = threading.Event()

        def read() -> None:
            # One message at a time, as it arrives: consume(1000, 0.1) would hold a record back until a thousand
            # were there or 100 ms had passed, and measure its own wait.
            while not done.is_set():
                message = consumer.poll(0.1)
                if message is not None and message.error() is None:
                    received = datetime.now(UTC)
                    issued = datetime.fromisoformat(json.loads(message.value())["updated_at"])
                    latencies.append((received - issued).total_seconds() * 1000)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            time.sleep(3)  # the dataflow's start-up is not what is measured
            # Sent as the mesh's producer sends (linger 5 ms), not batched as the pre-load is.
            producer, sent, began = _producer(settings, linger_ms=5), 0, time.perf_counter()
            while (elapsed := time.perf_counter() - began) < seconds:
                for _ in range(int(elapsed * rate) - sent):
                    invoice = Invoice(uuid.uuid4().hex, CUSTOMERS[sent % len(CUSTOMERS)], 1234, datetime.now(UTC))
                    producer.produce(topics.input, key=invoice.key(), value=invoice.value())
                    sent += 1
                producer.poll(0)
                time.sleep(0.001)
            producer.flush(30)
            deadline = time.monotonic() + 30
            while len(latencies) < sent and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            done.set()
            reader.join()
            consumer.close()
            dataflow.stop()
    # The first records include the dataflow catching up with what was sent before it was ready.
    steady = latencies[len(latencies) // 10 :]
    cut = statistics.quantiles(steady, n=100)
    say(
        f"totals_by_customer at {rate:,} invoices/s for {seconds:g} s: {len(latencies):,} of {sent:,} totals read; "
        f"produce -> new total p50 {cut[49]:.1f} ms, p99 {cut[98]:.1f} ms (first 10% left out)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    settings = load()
    with own_topics(settings) as topics:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        expected = preload(settings, topics.input, args.events, start)
        # totals_5s is done when every window the watermark has passed (the last issued_at less the wait) is out.
        closed = (window_start_of(expected.last - timedelta(seconds=LATE_SECONDS)) - start) // WINDOW
        throughput(settings, "totals_5s", topics, args.events, closed, expected)
        throughput(settings, "totals_by_customer", topics, args.events, args.events, expected)
    latency(settings, args.rate, args.seconds)


if __name__ == "__main__":
    main()
