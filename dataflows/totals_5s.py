"""FACTURATION_TOTAL_5S: the total and count of the invoices issued in each 5-second window.

Windows are tumbling, aligned to the epoch, on event time (`issued_at`). A window closes once the watermark, the
`issued_at` that every input partition has reached less `analytics_late_seconds`, has passed its end; an invoice
that arrives for a closed window goes to the dead-letter topic with the reason `late`."""

from __future__ import annotations

from datetime import datetime, timedelta

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import fold_window
from prometheus_client import Counter

from dataflows import kafka
from dataflows.totals import EPOCH, WINDOW, WindowSum, window_start, window_total
from dataflows.windowing import KeptTumblingWindower, PartitionedEventClock
from shopmesh.runtime.invoices import iso_millis
from shopmesh.runtime.settings import Settings, load

NAME = "totals_5s"


def flow(settings: Settings | None = None, edges: kafka.Edges | None = None) -> Dataflow:
    settings = settings or load()
    edges = edges or kafka.kafka_edges(settings)
    late_after = timedelta(seconds=settings.analytics_late_seconds)
    flow = Dataflow(NAME)
    received = kafka.invoices(flow, settings, edges, report_unreadable=False)  # totals_by_customer reports them
    # One key: every window totals all customers.
    everything = op.key_on("all customers", received, lambda _: "all")
    clock = PartitionedEventClock(
        _issued_at,
        _partition,
        edges.partitions(settings.facturation_topic),
        wait_for_system_duration=late_after,
        # Wake up when a window can close, not at its end, which would poll until then.
        to_system_utc=lambda close: close + late_after,
    )
    windows = fold_window(
        "5 s windows",
        everything,
        clock,
        KeptTumblingWindower(WINDOW, align_to=EPOCH),
        WindowSum,
        _add,
        WindowSum.merge,
        ordered=False,
    )
    closed = op.map("window totals", windows.down, _record)
    edges.write("write totals", closed, settings.total_5s_topic)
    late = op.map("late invoices", windows.late, _late)
    edges.write("write late invoices", late, settings.dlq_topic)
    return flow


WINDOWS = Counter("shopmesh_dataflow_windows_emitted", "5-second windows closed and written.", ("dataflow",))


def _add(window: WindowSum, item: kafka.Received) -> WindowSum:
    kafka.counted(NAME, item.invoice)
    return window.add(item.invoice)


def _late(keyed: tuple[str, tuple[int, kafka.Received]]) -> KafkaSinkMessage:
    kafka.dead_lettered(NAME, "late")
    return kafka.to_dead_letter("late", keyed[1][1].message)


def _issued_at(item: kafka.Received) -> datetime:
    return item.invoice.issued_at


def _partition(item: kafka.Received) -> int:
    return item.message.partition or 0


def _record(keyed: tuple[str, tuple[int, WindowSum]]) -> KafkaSinkMessage:
    window_id, window = keyed[1]
    start = window_start(window_id)
    WINDOWS.labels(NAME).inc()
    return KafkaSinkMessage(iso_millis(start).encode(), window_total(start, window.total_cents, window.count))
